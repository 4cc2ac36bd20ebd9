#ifndef C_TORPOR_SIMD_H
#define C_TORPOR_SIMD_H

#include <stddef.h>
#include <stdint.h>

/// True when this CPU runs AVX2 code (checked once per process by the caller).
int CTorporSIMD_hasAVX2(void);

/// Decodes `count` symbols of a 32-lane rANS stream with 12-bit frequencies (docs/FORMAT.md), AVX2 gathers
/// decoding 8 lanes at once.
///
/// - entries: 4096 packed entries, `(frequency - 1) << 20 | (slot - start) << 8 | symbol`.
/// - words: the lanes' 16-bit words; any `cursor + 4` reached by one read per symbol must be readable.
/// - states, cursors: 32 lane states and byte offsets into `words`, updated in place.
/// Symbol i is lane i mod 32. The caller checks afterwards that every lane ended where it should.
void CTorporSIMD_ransDecode32(
    size_t count, const uint32_t *entries, const uint8_t *words, uint32_t *states, int32_t *cursors,
    uint8_t *output);

/// True when this CPU runs AVX-512F and AVX-512BW code.
int CTorporSIMD_hasAVX512(void);

/// Encodes the whole 32-symbol groups `[0, groups)` of a 32-lane rANS stream, last group first, continuing from
/// `states` (the caller has already encoded the partial group after them, if any). Symbol i is lane i mod 32.
///
/// - entries: 256 packed entries, `start << 16 | frequency` (frequencies of at most 2^15).
/// - reciprocals: 256 floats, `1.0f / frequency` (any value for absent symbols).
/// - cursors: per lane, the index in `words` of its last word stored; a flushed word goes to `--cursor`.
/// - words: every lane may also write the slot below its last word (`cursor - 1`) without keeping it: each lane's
///   region must have one spare slot below the most words it can flush.
/// The result is bit for bit the portable encoder's (RANS.swift).
void CTorporSIMD_ransEncode32AVX512(
    size_t groups, const uint8_t *input, const uint32_t *entries, const float *reciprocals, uint32_t scaleBits,
    uint32_t *states, int32_t *cursors, uint16_t *words);

/// The same with AVX2 (8 lanes a vector).
void CTorporSIMD_ransEncode32AVX2(
    size_t groups, const uint8_t *input, const uint32_t *entries, const float *reciprocals, uint32_t scaleBits,
    uint32_t *states, int32_t *cursors, uint16_t *words);

/// True when this CPU runs AVX-512F, AVX-512VL and VPCLMULQDQ code.
int CTorporSIMD_hasVPCLMUL512(void);

/// Folds the longest whole number of 256-byte blocks of `data` for zlib's CRC-32 continuing from `crc` (0 to
/// start), and stores the 256 folded bytes in `state`. Returns the bytes folded: 0 when `length < 256`, else a
/// multiple of 256. The CRC-32 of all of `data` is then the CRC-32, continuing from 0xFFFFFFFF, of `state`
/// followed by the `length - result` bytes not folded. Needs `CTorporSIMD_hasVPCLMUL512()`.
size_t CTorporSIMD_crc32Fold256(uint32_t crc, const uint8_t *data, size_t length, uint8_t state[256]);

#endif
