// Vector rANS encoding of whole 32-symbol groups, AVX-512 (16 lanes a vector) and AVX2 (8). The encoder's state
// machine is the portable one in Sources/TorporCheckpoint/Codecs/RANS.swift, which encodes the partial group at
// the end of a stream first and is the reference the tests compare these against, byte for byte.
#include "CTorporSIMD.h"

#if defined(__x86_64__)
#include <immintrin.h>

int CTorporSIMD_hasAVX512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
}

// Division without a divide: q ~ x * (1/f) in single precision is within 1 of x / f (x < 2^32, x / f < 2^20, each
// of the three roundings <= 2^-24 relative), and the remainder r = x - q f (mod 2^32, |r| < 2f) says which way.
//
// Flushing without a branch: every lane stores its low 16 bits at its stream's next slot, `cursor - 1`, and only the
// lanes whose state reaches f << (32 - scaleBits) keep it, by moving their cursor. The others' word is overwritten
// by their next flush, or lies below their stream's start; each lane's region has a spare slot for it (RANS.swift
// lays the regions out, an odd number of cache lines apart: regions a multiple of 4 KiB apart share one L1 set, and
// these stores then miss it).

#define TARGET_AVX512 __attribute__((target("avx512f,avx512bw")))

// A 256-entry table of 16-bit values looked up by 32 16-bit indices below 256: four two-register permutes of 64
// entries each, then bits 6 and 7 of the index choose among them. Gathers are slow on Zen 4; these are not.
TARGET_AVX512 static inline __m512i lookup256(
    const __m512i table[8], __m512i index, __mmask32 bit6, __mmask32 bit7) {
    __m512i q0 = _mm512_permutex2var_epi16(table[0], index, table[1]);
    __m512i q1 = _mm512_permutex2var_epi16(table[2], index, table[3]);
    __m512i q2 = _mm512_permutex2var_epi16(table[4], index, table[5]);
    __m512i q3 = _mm512_permutex2var_epi16(table[6], index, table[7]);
    return _mm512_mask_blend_epi16(bit7, _mm512_mask_blend_epi16(bit6, q0, q1), _mm512_mask_blend_epi16(bit6, q2, q3));
}

// Stores lane k's low word at words[slots[k]], for the 4 lanes of `values` and `slots`.
__attribute__((target("sse4.1"), always_inline)) static inline void store4(__m128i values, __m128i slots, uint16_t *words) {
    words[_mm_extract_epi32(slots, 0)] = (uint16_t)_mm_extract_epi32(values, 0);
    words[_mm_extract_epi32(slots, 1)] = (uint16_t)_mm_extract_epi32(values, 1);
    words[_mm_extract_epi32(slots, 2)] = (uint16_t)_mm_extract_epi32(values, 2);
    words[_mm_extract_epi32(slots, 3)] = (uint16_t)_mm_extract_epi32(values, 3);
}

TARGET_AVX512 static inline __m512i encode16(
    __m512i x, __m512i frequency, __m512i start, uint32_t scaleBits, __m512i *cursor, uint16_t *words) {
    const __m512i one = _mm512_set1_epi32(1);
    __mmask16 flush = _mm512_cmpge_epu32_mask(_mm512_srl_epi32(x, _mm_cvtsi32_si128((int)(32 - scaleBits))), frequency);
    __m512i slot = _mm512_sub_epi32(*cursor, one);
    store4(_mm512_extracti32x4_epi32(x, 0), _mm512_extracti32x4_epi32(slot, 0), words);
    store4(_mm512_extracti32x4_epi32(x, 1), _mm512_extracti32x4_epi32(slot, 1), words);
    store4(_mm512_extracti32x4_epi32(x, 2), _mm512_extracti32x4_epi32(slot, 2), words);
    store4(_mm512_extracti32x4_epi32(x, 3), _mm512_extracti32x4_epi32(slot, 3), words);
    *cursor = _mm512_mask_mov_epi32(*cursor, flush, slot);
    x = _mm512_mask_srli_epi32(x, flush, x, 16);
    // 1/f off the state's dependency chain, correctly rounded: the reciprocal table's value.
    __m512 reciprocal = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_cvtepu32_ps(frequency));
    __m512i q = _mm512_cvttps_epu32(_mm512_mul_ps(_mm512_cvtepu32_ps(x), reciprocal));
    __m512i r = _mm512_sub_epi32(x, _mm512_mullo_epi32(q, frequency));
    __mmask16 under = _mm512_cmplt_epi32_mask(r, _mm512_setzero_si512());
    q = _mm512_mask_sub_epi32(q, under, q, one);
    r = _mm512_mask_add_epi32(r, under, r, frequency);
    __mmask16 over = _mm512_cmpge_epi32_mask(r, frequency);
    q = _mm512_mask_add_epi32(q, over, q, one);
    r = _mm512_mask_sub_epi32(r, over, r, frequency);
    return _mm512_add_epi32(_mm512_add_epi32(_mm512_sll_epi32(q, _mm_cvtsi32_si128((int)scaleBits)), r), start);
}

TARGET_AVX512 void CTorporSIMD_ransEncode32AVX512(
    size_t groups, const uint8_t *input, const uint32_t *entries, const float *reciprocals, uint32_t scaleBits,
    uint32_t *states, int32_t *cursors, uint16_t *words) {
    (void)reciprocals;
    uint16_t frequencyTable[256], startTable[256];
    for (int symbol = 0; symbol < 256; symbol++) {
        frequencyTable[symbol] = (uint16_t)entries[symbol];
        startTable[symbol] = (uint16_t)(entries[symbol] >> 16);
    }
    __m512i frequencies[8], starts[8];
    for (int k = 0; k < 8; k++) {
        frequencies[k] = _mm512_loadu_si512(frequencyTable + 32 * k);
        starts[k] = _mm512_loadu_si512(startTable + 32 * k);
    }
    const __m512i bit6 = _mm512_set1_epi16(64), bit7 = _mm512_set1_epi16(128);
    __m512i low = _mm512_loadu_si512(states), high = _mm512_loadu_si512(states + 16);
    __m512i lowCursor = _mm512_loadu_si512(cursors), highCursor = _mm512_loadu_si512(cursors + 16);
    for (size_t g = groups; g-- > 0;) {
        __m512i symbols = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(input + 32 * g)));
        __mmask32 has6 = _mm512_test_epi16_mask(symbols, bit6), has7 = _mm512_test_epi16_mask(symbols, bit7);
        __m512i frequency = lookup256(frequencies, symbols, has6, has7);
        __m512i start = lookup256(starts, symbols, has6, has7);
        high = encode16(high, _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(frequency, 1)),
                        _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(start, 1)), scaleBits, &highCursor, words);
        low = encode16(low, _mm512_cvtepu16_epi32(_mm512_castsi512_si256(frequency)),
                       _mm512_cvtepu16_epi32(_mm512_castsi512_si256(start)), scaleBits, &lowCursor, words);
    }
    _mm512_storeu_si512(states, low);
    _mm512_storeu_si512(states + 16, high);
    _mm512_storeu_si512(cursors, lowCursor);
    _mm512_storeu_si512(cursors + 16, highCursor);
}

__attribute__((target("avx2,fma"))) static inline __m256i encode8(
    __m256i x, __m256i symbols, const uint32_t *entries, const float *reciprocals, uint32_t scaleBits,
    __m256i *cursor, uint16_t *words) {
    const __m256i low16 = _mm256_set1_epi32(0xFFFF);
    __m256i entry = _mm256_i32gather_epi32((const int *)entries, symbols, 4);
    __m256i frequency = _mm256_and_si256(entry, low16);
    __m256i start = _mm256_srli_epi32(entry, 16);
    // x >> (32 - scaleBits) < 2^15 and frequency < 2^16: a signed compare is an unsigned one here.
    __m256i top = _mm256_srl_epi32(x, _mm_cvtsi32_si128((int)(32 - scaleBits)));
    __m256i flush = _mm256_xor_si256(_mm256_cmpgt_epi32(frequency, top), _mm256_set1_epi32(-1));
    __m256i slot = _mm256_add_epi32(*cursor, _mm256_set1_epi32(-1));
    __m128i v0 = _mm256_castsi256_si128(x), v1 = _mm256_extracti128_si256(x, 1);
    __m128i i0 = _mm256_castsi256_si128(slot), i1 = _mm256_extracti128_si256(slot, 1);
    store4(v0, i0, words);
    store4(v1, i1, words);
    *cursor = _mm256_blendv_epi8(*cursor, slot, flush);
    x = _mm256_blendv_epi8(x, _mm256_srli_epi32(x, 16), flush);
    // Unsigned 32-bit to float, which AVX2 lacks: the two 16-bit halves are exact, their sum rounds once.
    __m256 xf = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(x, 16)), _mm256_set1_ps(65536.0f),
                                _mm256_cvtepi32_ps(_mm256_and_si256(x, low16)));
    __m256 reciprocal = _mm256_i32gather_ps(reciprocals, symbols, 4);
    __m256i q = _mm256_cvttps_epi32(_mm256_mul_ps(xf, reciprocal));
    __m256i r = _mm256_sub_epi32(x, _mm256_mullo_epi32(q, frequency));
    __m256i under = _mm256_cmpgt_epi32(_mm256_setzero_si256(), r);
    q = _mm256_add_epi32(q, under);
    r = _mm256_add_epi32(r, _mm256_and_si256(under, frequency));
    __m256i over = _mm256_xor_si256(_mm256_cmpgt_epi32(frequency, r), _mm256_set1_epi32(-1));
    q = _mm256_sub_epi32(q, over);
    r = _mm256_sub_epi32(r, _mm256_and_si256(over, frequency));
    return _mm256_add_epi32(_mm256_add_epi32(_mm256_sll_epi32(q, _mm_cvtsi32_si128((int)scaleBits)), r), start);
}

__attribute__((target("avx2,fma"))) void CTorporSIMD_ransEncode32AVX2(
    size_t groups, const uint8_t *input, const uint32_t *entries, const float *reciprocals, uint32_t scaleBits,
    uint32_t *states, int32_t *cursors, uint16_t *words) {
    __m256i x[4], c[4];
    for (int k = 0; k < 4; k++) {
        x[k] = _mm256_loadu_si256((const __m256i *)(states + 8 * k));
        c[k] = _mm256_loadu_si256((const __m256i *)(cursors + 8 * k));
    }
    for (size_t g = groups; g-- > 0;) {
        const uint8_t *symbols = input + 32 * g;
        for (int k = 3; k >= 0; k--) {
            __m256i lane = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(symbols + 8 * k)));
            x[k] = encode8(x[k], lane, entries, reciprocals, scaleBits, &c[k], words);
        }
    }
    for (int k = 0; k < 4; k++) {
        _mm256_storeu_si256((__m256i *)(states + 8 * k), x[k]);
        _mm256_storeu_si256((__m256i *)(cursors + 8 * k), c[k]);
    }
}

#else

int CTorporSIMD_hasAVX512(void) { return 0; }

void CTorporSIMD_ransEncode32AVX512(
    size_t groups, const uint8_t *input, const uint32_t *entries, const float *reciprocals, uint32_t scaleBits,
    uint32_t *states, int32_t *cursors, uint16_t *words) {
    (void)groups; (void)input; (void)entries; (void)reciprocals; (void)scaleBits; (void)states; (void)cursors;
    (void)words;
}

void CTorporSIMD_ransEncode32AVX2(
    size_t groups, const uint8_t *input, const uint32_t *entries, const float *reciprocals, uint32_t scaleBits,
    uint32_t *states, int32_t *cursors, uint16_t *words) {
    (void)groups; (void)input; (void)entries; (void)reciprocals; (void)scaleBits; (void)states; (void)cursors;
    (void)words;
}

#endif
