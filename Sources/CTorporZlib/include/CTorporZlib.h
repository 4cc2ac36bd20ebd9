#ifndef C_TORPOR_ZLIB_H
#define C_TORPOR_ZLIB_H

#include <stddef.h>
#include <stdint.h>
#include <zlib.h>

/// CRC-32 (IEEE 802.3, reflected, as zlib, PKZIP and nvCOMP's default CRC32) continued from `crc` over `size` bytes.
static inline uint32_t CTorporZlib_crc32(uint32_t crc, const void *bytes, size_t size) {
    return (uint32_t)crc32_z(crc, (const unsigned char *)bytes, size);
}

/// Combines the CRC-32 of two adjacent byte ranges: crc(A ++ B) from crc(A), crc(B) and |B|.
static inline uint32_t CTorporZlib_crc32Combine(uint32_t crcA, uint32_t crcB, int64_t sizeB) {
    return (uint32_t)crc32_combine(crcA, crcB, (z_off_t)sizeB);
}

#endif
