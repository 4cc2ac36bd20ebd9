// CRC-32 (zlib's) folded 256 bytes a step with 512-bit carry-less multiplies (VPCLMULQDQ), four times the width of
// the 128-bit PCLMULQDQ loop in Debian's libdeflate 1.14. The caller finishes with that library: folding keeps the
// message's remainder, so the CRC of the data equals the CRC of the 256 folded bytes followed by the rest
// (Checksums.swift).
//
// Each 128-bit lane x (halves lo, hi) moves 2048 bits ahead as clmul(lo, k1) ^ clmul(hi, k2), with
// k1 = reflect32(x^(2048+32) mod P) << 1 and k2 = reflect32(x^(2048-32) mod P) << 1 for the reflected polynomial
// P = 0x104C11DB7 (the constants zlib-ng and Intel's crc32_gzip_refl use for this distance).
#include "CTorporSIMD.h"

#if defined(__x86_64__)
#include <immintrin.h>

int CTorporSIMD_hasVPCLMUL512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("vpclmulqdq");
}

#define TARGET_VPCLMUL __attribute__((target("avx512f,avx512vl,vpclmulqdq")))

TARGET_VPCLMUL static inline __m512i fold(__m512i x, __m512i k, __m512i next) {
    __m512i lo = _mm512_clmulepi64_epi128(x, k, 0x00);
    __m512i hi = _mm512_clmulepi64_epi128(x, k, 0x11);
    return _mm512_ternarylogic_epi64(lo, hi, next, 0x96);
}

TARGET_VPCLMUL size_t CTorporSIMD_crc32Fold256(uint32_t crc, const uint8_t *data, size_t length, uint8_t state[256]) {
    if (length < 256) return 0;
    const __m512i k = _mm512_broadcast_i32x4(_mm_set_epi64x(0x1322d1430, 0x11542778a));
    __m512i x0 = _mm512_loadu_si512(data);
    __m512i x1 = _mm512_loadu_si512(data + 64);
    __m512i x2 = _mm512_loadu_si512(data + 128);
    __m512i x3 = _mm512_loadu_si512(data + 192);
    // The CRC register enters as the complement of `crc` xored into the first four bytes.
    x0 = _mm512_xor_si512(x0, _mm512_zextsi128_si512(_mm_cvtsi32_si128((int)~crc)));
    size_t done = 256;
    for (; length - done >= 256; done += 256) {
        const uint8_t *next = data + done;
        x0 = fold(x0, k, _mm512_loadu_si512(next));
        x1 = fold(x1, k, _mm512_loadu_si512(next + 64));
        x2 = fold(x2, k, _mm512_loadu_si512(next + 128));
        x3 = fold(x3, k, _mm512_loadu_si512(next + 192));
    }
    _mm512_storeu_si512(state, x0);
    _mm512_storeu_si512(state + 64, x1);
    _mm512_storeu_si512(state + 128, x2);
    _mm512_storeu_si512(state + 192, x3);
    return done;
}

#else
int CTorporSIMD_hasVPCLMUL512(void) { return 0; }
size_t CTorporSIMD_crc32Fold256(uint32_t crc, const uint8_t *data, size_t length, uint8_t state[256]) {
    (void)crc, (void)data, (void)length, (void)state;
    return 0;
}
#endif
