#ifndef C_TORPOR_ZSTD_H
#define C_TORPOR_ZSTD_H

#include <stddef.h>
#include <zstd.h>

/// ZSTD_isError as a function Swift can call (it is a macro-free function, re-exported for one import point).
static inline unsigned CTorporZstd_isError(size_t code) { return ZSTD_isError(code); }

/// The content size a frame declares, or ZSTD_CONTENTSIZE_UNKNOWN / ZSTD_CONTENTSIZE_ERROR.
static inline unsigned long long CTorporZstd_frameContentSize(const void *src, size_t size) {
    return ZSTD_getFrameContentSize(src, size);
}

static inline unsigned long long CTorporZstd_contentSizeUnknown(void) { return ZSTD_CONTENTSIZE_UNKNOWN; }
static inline unsigned long long CTorporZstd_contentSizeError(void) { return ZSTD_CONTENTSIZE_ERROR; }

#endif
