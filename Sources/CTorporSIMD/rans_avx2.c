// AVX2 rANS decoding. Swift has no gather instructions, so this one inner loop is written in C; the format, the
// table building and every check stay in Swift (Sources/TorporCheckpoint/Codecs/RANS.swift).
#include "CTorporSIMD.h"

#if defined(__x86_64__)
#include <immintrin.h>

int CTorporSIMD_hasAVX2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
}

static inline void scalarStep(
    uint32_t lane, size_t index, const uint32_t *entries, const uint8_t *words, uint32_t *states, int32_t *cursors,
    uint8_t *output) {
    uint32_t x = states[lane];
    uint32_t entry = entries[x & 0xFFF];
    output[index] = (uint8_t)entry;
    x = ((entry >> 20) + 1) * (x >> 12) + ((entry >> 8) & 0xFFF);
    if (x < (1u << 16)) {
        uint16_t word;
        __builtin_memcpy(&word, words + cursors[lane], 2);
        x = (x << 16) | word;
        cursors[lane] += 2;
    }
    states[lane] = x;
}

__attribute__((target("avx2"))) void CTorporSIMD_ransDecode32(
    size_t count, const uint32_t *entries, const uint8_t *words, uint32_t *states, int32_t *cursors,
    uint8_t *output) {
    const __m256i mask12 = _mm256_set1_epi32(0xFFF);
    const __m256i one = _mm256_set1_epi32(1);
    const __m256i two = _mm256_set1_epi32(2);
    const __m256i low16 = _mm256_set1_epi32(0xFFFF);
    const __m256i signBit = _mm256_set1_epi32((int)0x80000000u);
    const __m256i lowerBiased = _mm256_xor_si256(_mm256_set1_epi32(1 << 16), signBit);
    const __m256i firstBytes = _mm256_setr_epi8(
        0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
        0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    __m256i x[4], c[4];
    for (int k = 0; k < 4; k++) {
        x[k] = _mm256_loadu_si256((const __m256i *)(states + 8 * k));
        c[k] = _mm256_loadu_si256((const __m256i *)(cursors + 8 * k));
    }
    size_t groups = count / 32;
    for (size_t g = 0; g < groups; g++) {
        uint8_t *out = output + 32 * g;
        for (int k = 0; k < 4; k++) {
            __m256i slot = _mm256_and_si256(x[k], mask12);
            __m256i entry = _mm256_i32gather_epi32((const int *)entries, slot, 4);
            __m256i frequency = _mm256_add_epi32(_mm256_srli_epi32(entry, 20), one);
            __m256i bias = _mm256_and_si256(_mm256_srli_epi32(entry, 8), mask12);
            __m256i next = _mm256_add_epi32(_mm256_mullo_epi32(frequency, _mm256_srli_epi32(x[k], 12)), bias);
            __m256i symbols = _mm256_shuffle_epi8(entry, firstBytes);
            uint32_t low = (uint32_t)_mm_cvtsi128_si32(_mm256_castsi256_si128(symbols));
            uint32_t high = (uint32_t)_mm_cvtsi128_si32(_mm256_extracti128_si256(symbols, 1));
            __builtin_memcpy(out + 8 * k, &low, 4);
            __builtin_memcpy(out + 8 * k + 4, &high, 4);
            __m256i needed = _mm256_cmpgt_epi32(lowerBiased, _mm256_xor_si256(next, signBit));
            __m256i word = _mm256_and_si256(_mm256_i32gather_epi32((const int *)words, c[k], 1), low16);
            __m256i refilled = _mm256_or_si256(_mm256_slli_epi32(next, 16), word);
            x[k] = _mm256_blendv_epi8(next, refilled, needed);
            c[k] = _mm256_add_epi32(c[k], _mm256_and_si256(needed, two));
        }
    }
    for (int k = 0; k < 4; k++) {
        _mm256_storeu_si256((__m256i *)(states + 8 * k), x[k]);
        _mm256_storeu_si256((__m256i *)(cursors + 8 * k), c[k]);
    }
    for (size_t index = groups * 32; index < count; index++) {
        scalarStep((uint32_t)(index % 32), index, entries, words, states, cursors, output);
    }
}

#else

int CTorporSIMD_hasAVX2(void) { return 0; }

void CTorporSIMD_ransDecode32(
    size_t count, const uint32_t *entries, const uint8_t *words, uint32_t *states, int32_t *cursors,
    uint8_t *output) {
    (void)count; (void)entries; (void)words; (void)states; (void)cursors; (void)output;
}

#endif
