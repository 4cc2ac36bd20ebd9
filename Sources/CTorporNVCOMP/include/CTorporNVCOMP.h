// The parts of nvCOMP 6's low-level batched C API (libnvcomp.so.6) Torpor uses, declared as function-pointer
// types with the struct layouts of the 6.0 headers. Nothing links nvCOMP: TorporGPU loads it with dlopen and
// fills a table with dlsym. `stream` is a CUstream (cudaStream_t), passed as an opaque pointer.
#ifndef CTORPOR_NVCOMP_H
#define CTORPOR_NVCOMP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef int CTorporNVCOMP_Status;   // nvcompStatus_t; 0 is nvcompSuccess
typedef int CTorporNVCOMP_DataType; // nvcompType_t

static const int CTorporNVCOMP_Success = 0;
static const int CTorporNVCOMP_TypeChar = 0;
static const int CTorporNVCOMP_TypeUChar = 1;
static const int CTorporNVCOMP_TypeUShort = 3;
static const int CTorporNVCOMP_TypeUInt = 5;
static const int CTorporNVCOMP_TypeFloat16 = 10;
static const int CTorporNVCOMP_TypeFloat32 = 11;
static const int CTorporNVCOMP_TypeBits = 0xff;
static const int CTorporNVCOMP_BackendDefault = 0;

typedef struct {
    uint32_t version;        // major * 1000 + minor * 100 + patch
    uint32_t cudartVersion;
} CTorporNVCOMP_Properties;

typedef struct {
    size_t input;
    size_t output;
    size_t temp;
} CTorporNVCOMP_AlignmentRequirements;

typedef struct {
    int type;                       // nvcompANSType_t: 0 = rANS
    CTorporNVCOMP_DataType dataType;
    uint8_t maxSubChunkCount;
    uint8_t statesPerLane;
    uint8_t histogramReductionLog2;
    char reserved[53];
} CTorporNVCOMP_ANSCompressOptions;

typedef struct {
    int backend;                    // nvcompDecompressBackend_t
    CTorporNVCOMP_DataType dataType;
    uint8_t maxSubChunkCount;
    uint8_t statesPerLane;
    uint8_t skipValidate;
    char reserved[53];
} CTorporNVCOMP_ANSDecompressOptions;

typedef struct {
    int backend;
    char reserved[60];
} CTorporNVCOMP_ZstdDecompressOptions;

typedef struct {
    int algorithm;                  // 0 default, 1 sparse
    CTorporNVCOMP_DataType dataType;
    double delta;                   // lossy modes only
    int mode;                       // bitcompMode_t: 0 = BITCOMP_LOSSLESS
    char reserved[44];
} CTorporNVCOMP_BitcompCompressOptions;

typedef struct {
    int backend;
    char reserved[60];
} CTorporNVCOMP_BitcompDecompressOptions;

typedef struct {
    uint32_t poly;
    uint32_t init;
    bool refIn;
    bool refOut;
    uint32_t xorOut;
    char reserved[16];
} CTorporNVCOMP_CRC32Spec;

typedef struct {
    int kernelKind;
    int32_t bytesPerRead;
    int32_t blocksPerMessage;
    char reserved[20];
} CTorporNVCOMP_CRC32KernelConfiguration;

typedef struct {
    CTorporNVCOMP_CRC32Spec spec;
    CTorporNVCOMP_CRC32KernelConfiguration kernel;
    char reserved[64];
} CTorporNVCOMP_CRC32Options;

typedef CTorporNVCOMP_Status (*CTorporNVCOMP_GetProperties)(CTorporNVCOMP_Properties *properties);

typedef CTorporNVCOMP_Status (*CTorporNVCOMP_ANSCompressGetRequiredAlignments)(
    CTorporNVCOMP_ANSCompressOptions options, CTorporNVCOMP_AlignmentRequirements *requirements);
typedef CTorporNVCOMP_Status (*CTorporNVCOMP_ANSCompressGetTempSize)(
    size_t chunkCount, size_t maxChunkBytes, CTorporNVCOMP_ANSCompressOptions options, size_t *tempBytes,
    size_t maxTotalBytes, void *stream);
typedef CTorporNVCOMP_Status (*CTorporNVCOMP_ANSCompressGetMaxOutputChunkSize)(
    size_t maxChunkBytes, CTorporNVCOMP_ANSCompressOptions options, size_t *maxCompressedChunkBytes);
typedef CTorporNVCOMP_Status (*CTorporNVCOMP_ANSCompressAsync)(
    const void *const *uncompressedPointers, const size_t *uncompressedBytes, size_t maxChunkBytes, size_t chunkCount,
    void *temp, size_t tempBytes, void *const *compressedPointers, size_t *compressedBytes,
    CTorporNVCOMP_ANSCompressOptions options, CTorporNVCOMP_Status *statuses, void *stream);
typedef CTorporNVCOMP_Status (*CTorporNVCOMP_ANSDecompressGetRequiredAlignments)(
    CTorporNVCOMP_ANSDecompressOptions options, CTorporNVCOMP_AlignmentRequirements *requirements);
typedef CTorporNVCOMP_Status (*CTorporNVCOMP_ANSDecompressGetTempSize)(
    size_t chunkCount, size_t maxChunkBytes, CTorporNVCOMP_ANSDecompressOptions options, size_t *tempBytes,
    size_t maxTotalBytes, void *stream);
typedef CTorporNVCOMP_Status (*CTorporNVCOMP_ANSDecompressAsync)(
    const void *const *compressedPointers, const size_t *compressedBytes, const size_t *bufferBytes,
    size_t *uncompressedBytes, size_t chunkCount, void *const temp, size_t tempBytes,
    void *const *uncompressedPointers, CTorporNVCOMP_ANSDecompressOptions options, CTorporNVCOMP_Status *statuses,
    void *stream);

typedef CTorporNVCOMP_Status (*CTorporNVCOMP_ZstdDecompressGetTempSize)(
    size_t chunkCount, size_t maxChunkBytes, CTorporNVCOMP_ZstdDecompressOptions options, size_t *tempBytes,
    size_t maxTotalBytes, void *stream);
typedef CTorporNVCOMP_Status (*CTorporNVCOMP_ZstdDecompressAsync)(
    const void *const *compressedPointers, const size_t *compressedBytes, const size_t *bufferBytes,
    size_t *uncompressedBytes, size_t chunkCount, void *const temp, size_t tempBytes,
    void *const *uncompressedPointers, CTorporNVCOMP_ZstdDecompressOptions options, CTorporNVCOMP_Status *statuses,
    void *stream);

typedef CTorporNVCOMP_Status (*CTorporNVCOMP_BitcompCompressGetTempSize)(
    size_t chunkCount, size_t maxChunkBytes, CTorporNVCOMP_BitcompCompressOptions options, size_t *tempBytes,
    size_t maxTotalBytes, void *stream);
typedef CTorporNVCOMP_Status (*CTorporNVCOMP_BitcompCompressGetMaxOutputChunkSize)(
    size_t maxChunkBytes, CTorporNVCOMP_BitcompCompressOptions options, size_t *maxCompressedChunkBytes);
typedef CTorporNVCOMP_Status (*CTorporNVCOMP_BitcompCompressAsync)(
    const void *const *uncompressedPointers, const size_t *uncompressedBytes, size_t maxChunkBytes, size_t chunkCount,
    void *temp, size_t tempBytes, void *const *compressedPointers, size_t *compressedBytes,
    CTorporNVCOMP_BitcompCompressOptions options, CTorporNVCOMP_Status *statuses, void *stream);
typedef CTorporNVCOMP_Status (*CTorporNVCOMP_BitcompDecompressGetTempSize)(
    size_t chunkCount, size_t maxChunkBytes, CTorporNVCOMP_BitcompDecompressOptions options, size_t *tempBytes,
    size_t maxTotalBytes, void *stream);
typedef CTorporNVCOMP_Status (*CTorporNVCOMP_BitcompDecompressAsync)(
    const void *const *compressedPointers, const size_t *compressedBytes, const size_t *bufferBytes,
    size_t *uncompressedBytes, size_t chunkCount, void *const temp, size_t tempBytes,
    void *const *uncompressedPointers, CTorporNVCOMP_BitcompDecompressOptions options,
    CTorporNVCOMP_Status *statuses, void *stream);

typedef CTorporNVCOMP_Status (*CTorporNVCOMP_CRC32GetHeuristicConfiguration)(
    const size_t *inputBytes, size_t chunkCount, CTorporNVCOMP_CRC32KernelConfiguration *configuration,
    size_t maxInputChunkBytes, void *stream);
typedef CTorporNVCOMP_Status (*CTorporNVCOMP_CRC32Async)(
    const void *const *inputPointers, const size_t *inputBytes, size_t chunkCount, uint32_t *crcs,
    CTorporNVCOMP_CRC32Options options, int segmentKind, CTorporNVCOMP_Status *statuses, void *stream);

#endif
