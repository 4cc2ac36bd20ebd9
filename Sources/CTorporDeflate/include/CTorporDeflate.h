#ifndef C_TORPOR_DEFLATE_H
#define C_TORPOR_DEFLATE_H

#include <stddef.h>
#include <stdint.h>
#include <libdeflate.h>

/// CRC-32 (IEEE 802.3, reflected, as zlib, PKZIP and nvCOMP's default CRC32) continued from `crc` over `size` bytes.
/// libdeflate picks its carry-less multiply (PCLMULQDQ) implementation at run time where the CPU has one, and a
/// table-driven one elsewhere.
static inline uint32_t CTorporDeflate_crc32(uint32_t crc, const void *bytes, size_t size) {
    return (uint32_t)libdeflate_crc32(crc, bytes, size);
}

#endif
