// Vector rANS encoding of whole 32-symbol groups, AVX-512 (16 lanes a vector) and AVX2 (8). The encoder's state
// machine is the portable one in Sources/TorporCheckpoint/Codecs/RANS.swift, which encodes the partial group at
// the end of a stream first and is the reference the tests compare these against, byte for byte.
#include "CTorporSIMD.h"

#if defined(__x86_64__)
#include <immintrin.h>

int CTorporSIMD_hasAVX512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
}

// Division without a divide: q ~ x * (1/f) in single precision is within 1 of x / f (x < 2^32, x / f < 2^20, each
// of the three roundings <= 2^-24 relative), and the remainder r = x - q f (mod 2^32, |r| < 2f) says which way.
// Flushed words: the lanes whose state reaches f << (32 - scaleBits) store their low 16 bits at their own
// stream's next slot, going down; the few such lanes of a vector are stored one by one.

__attribute__((target("avx512f"))) static inline __m512i encode16(
    __m512i x, __m512i symbols, const uint32_t *entries, const float *reciprocals, uint32_t scaleBits,
    int32_t *cursors, uint16_t *words) {
    const __m512i low16 = _mm512_set1_epi32(0xFFFF);
    __m512i entry = _mm512_i32gather_epi32(symbols, (const int *)entries, 4);
    __m512i frequency = _mm512_and_si512(entry, low16);
    __m512i start = _mm512_srli_epi32(entry, 16);
    __mmask16 flush = _mm512_cmpge_epu32_mask(_mm512_srl_epi32(x, _mm_cvtsi32_si128((int)(32 - scaleBits))), frequency);
    if (flush) {
        uint32_t lanes[16];
        _mm512_storeu_si512(lanes, x);
        for (unsigned m = flush; m; m &= m - 1) {
            int lane = __builtin_ctz(m);
            words[--cursors[lane]] = (uint16_t)lanes[lane];
        }
        x = _mm512_mask_srli_epi32(x, flush, x, 16);
    }
    __m512 reciprocal = _mm512_i32gather_ps(symbols, reciprocals, 4);
    __m512i q = _mm512_cvttps_epu32(_mm512_mul_ps(_mm512_cvtepu32_ps(x), reciprocal));
    __m512i r = _mm512_sub_epi32(x, _mm512_mullo_epi32(q, frequency));
    __mmask16 under = _mm512_cmplt_epi32_mask(r, _mm512_setzero_si512());
    q = _mm512_mask_sub_epi32(q, under, q, _mm512_set1_epi32(1));
    r = _mm512_mask_add_epi32(r, under, r, frequency);
    __mmask16 over = _mm512_cmpge_epi32_mask(r, frequency);
    q = _mm512_mask_add_epi32(q, over, q, _mm512_set1_epi32(1));
    r = _mm512_mask_sub_epi32(r, over, r, frequency);
    return _mm512_add_epi32(_mm512_add_epi32(_mm512_sll_epi32(q, _mm_cvtsi32_si128((int)scaleBits)), r), start);
}

__attribute__((target("avx512f"))) void CTorporSIMD_ransEncode32AVX512(
    size_t groups, const uint8_t *input, const uint32_t *entries, const float *reciprocals, uint32_t scaleBits,
    uint32_t *states, int32_t *cursors, uint16_t *words) {
    __m512i low = _mm512_loadu_si512(states), high = _mm512_loadu_si512(states + 16);
    for (size_t g = groups; g-- > 0;) {
        const uint8_t *symbols = input + 32 * g;
        high = encode16(high, _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(symbols + 16))), entries,
                        reciprocals, scaleBits, cursors + 16, words);
        low = encode16(low, _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)symbols)), entries, reciprocals,
                       scaleBits, cursors, words);
    }
    _mm512_storeu_si512(states, low);
    _mm512_storeu_si512(states + 16, high);
}

__attribute__((target("avx2,fma"))) static inline __m256i encode8(
    __m256i x, __m256i symbols, const uint32_t *entries, const float *reciprocals, uint32_t scaleBits,
    int32_t *cursors, uint16_t *words) {
    const __m256i low16 = _mm256_set1_epi32(0xFFFF);
    __m256i entry = _mm256_i32gather_epi32((const int *)entries, symbols, 4);
    __m256i frequency = _mm256_and_si256(entry, low16);
    __m256i start = _mm256_srli_epi32(entry, 16);
    // x >> (32 - scaleBits) < 2^15 and frequency < 2^16: a signed compare is an unsigned one here.
    __m256i top = _mm256_srl_epi32(x, _mm_cvtsi32_si128((int)(32 - scaleBits)));
    __m256i flushVector = _mm256_xor_si256(_mm256_cmpgt_epi32(frequency, top), _mm256_set1_epi32(-1));
    unsigned flush = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(flushVector));
    if (flush) {
        uint32_t lanes[8];
        _mm256_storeu_si256((__m256i *)lanes, x);
        for (unsigned m = flush; m; m &= m - 1) {
            int lane = __builtin_ctz(m);
            words[--cursors[lane]] = (uint16_t)lanes[lane];
        }
        x = _mm256_blendv_epi8(x, _mm256_srli_epi32(x, 16), flushVector);
    }
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
    __m256i x[4];
    for (int k = 0; k < 4; k++) x[k] = _mm256_loadu_si256((const __m256i *)(states + 8 * k));
    for (size_t g = groups; g-- > 0;) {
        const uint8_t *symbols = input + 32 * g;
        for (int k = 3; k >= 0; k--) {
            __m256i lane = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(symbols + 8 * k)));
            x[k] = encode8(x[k], lane, entries, reciprocals, scaleBits, cursors + 8 * k, words);
        }
    }
    for (int k = 0; k < 4; k++) _mm256_storeu_si256((__m256i *)(states + 8 * k), x[k]);
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
