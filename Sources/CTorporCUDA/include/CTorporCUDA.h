// The parts of the CUDA driver API (libcuda.so.1) Torpor uses, declared as function-pointer types.
// Nothing links libcuda: TorporGPU loads it with dlopen and fills a table with dlsym, so the binary starts on
// machines without a GPU. Types follow cuda.h of CUDA 12/13 (the _v2 entry points for 64-bit sizes).
#ifndef CTORPOR_CUDA_H
#define CTORPOR_CUDA_H

#include <stddef.h>
#include <stdint.h>

typedef int CTorporCUDA_Result;            // CUresult; 0 is CUDA_SUCCESS
typedef int CTorporCUDA_Device;            // CUdevice
typedef struct CTorporCUDA_Context_st *CTorporCUDA_Context;  // CUcontext
typedef struct CTorporCUDA_Stream_st *CTorporCUDA_Stream;    // CUstream
typedef struct CTorporCUDA_Event_st *CTorporCUDA_Event;      // CUevent
typedef uint64_t CTorporCUDA_DevicePointer;                  // CUdeviceptr
typedef struct CTorporCUDA_Module_st *CTorporCUDA_Module;    // CUmodule
typedef struct CTorporCUDA_Function_st *CTorporCUDA_Function;  // CUfunction

static const int CTorporCUDA_Success = 0;
static const int CTorporCUDA_ErrorOutOfMemory = 2;
static const int CTorporCUDA_ErrorNoDevice = 100;
static const int CTorporCUDA_ErrorInvalidDevice = 101;
static const int CTorporCUDA_ErrorHostMemoryAlreadyRegistered = 712;

static const int CTorporCUDA_DeviceAttributePCIBusID = 33;
static const int CTorporCUDA_DeviceAttributeComputeCapabilityMajor = 75;
static const int CTorporCUDA_DeviceAttributeComputeCapabilityMinor = 76;

static const int CTorporCUDA_StreamNonBlocking = 1;             // CU_STREAM_NON_BLOCKING
static const int CTorporCUDA_EventDefault = 0;                  // CU_EVENT_DEFAULT
static const int CTorporCUDA_EventDisableTiming = 2;            // CU_EVENT_DISABLE_TIMING
static const int CTorporCUDA_MemHostAllocPortable = 1;          // CU_MEMHOSTALLOC_PORTABLE
static const int CTorporCUDA_MemHostRegisterPortable = 1;       // CU_MEMHOSTREGISTER_PORTABLE
static const int CTorporCUDA_MemHostRegisterReadOnly = 8;       // CU_MEMHOSTREGISTER_READ_ONLY

typedef CTorporCUDA_Result (*CTorporCUDA_cuInit)(unsigned int flags);
typedef CTorporCUDA_Result (*CTorporCUDA_cuDriverGetVersion)(int *version);
typedef CTorporCUDA_Result (*CTorporCUDA_cuDeviceGetCount)(int *count);
typedef CTorporCUDA_Result (*CTorporCUDA_cuDeviceGet)(CTorporCUDA_Device *device, int ordinal);
typedef CTorporCUDA_Result (*CTorporCUDA_cuDeviceGetName)(char *name, int length, CTorporCUDA_Device device);
typedef CTorporCUDA_Result (*CTorporCUDA_cuDeviceTotalMem)(size_t *bytes, CTorporCUDA_Device device);
typedef CTorporCUDA_Result (*CTorporCUDA_cuDeviceGetAttribute)(int *value, int attribute, CTorporCUDA_Device device);
typedef CTorporCUDA_Result (*CTorporCUDA_cuDevicePrimaryCtxRetain)(CTorporCUDA_Context *context, CTorporCUDA_Device device);
typedef CTorporCUDA_Result (*CTorporCUDA_cuDevicePrimaryCtxRelease)(CTorporCUDA_Device device);
typedef CTorporCUDA_Result (*CTorporCUDA_cuCtxSetCurrent)(CTorporCUDA_Context context);
typedef CTorporCUDA_Result (*CTorporCUDA_cuCtxSynchronize)(void);
typedef CTorporCUDA_Result (*CTorporCUDA_cuMemGetInfo)(size_t *free, size_t *total);
typedef CTorporCUDA_Result (*CTorporCUDA_cuMemAlloc)(CTorporCUDA_DevicePointer *pointer, size_t bytes);
typedef CTorporCUDA_Result (*CTorporCUDA_cuMemFree)(CTorporCUDA_DevicePointer pointer);
typedef CTorporCUDA_Result (*CTorporCUDA_cuMemHostAlloc)(void **pointer, size_t bytes, unsigned int flags);
typedef CTorporCUDA_Result (*CTorporCUDA_cuMemFreeHost)(void *pointer);
typedef CTorporCUDA_Result (*CTorporCUDA_cuMemHostRegister)(void *pointer, size_t bytes, unsigned int flags);
typedef CTorporCUDA_Result (*CTorporCUDA_cuMemHostUnregister)(void *pointer);
typedef CTorporCUDA_Result (*CTorporCUDA_cuMemcpyHtoDAsync)(
    CTorporCUDA_DevicePointer destination, const void *source, size_t bytes, CTorporCUDA_Stream stream);
typedef CTorporCUDA_Result (*CTorporCUDA_cuMemcpyDtoHAsync)(
    void *destination, CTorporCUDA_DevicePointer source, size_t bytes, CTorporCUDA_Stream stream);
typedef CTorporCUDA_Result (*CTorporCUDA_cuMemcpyDtoDAsync)(
    CTorporCUDA_DevicePointer destination, CTorporCUDA_DevicePointer source, size_t bytes, CTorporCUDA_Stream stream);
typedef CTorporCUDA_Result (*CTorporCUDA_cuMemsetD8Async)(
    CTorporCUDA_DevicePointer destination, unsigned char value, size_t count, CTorporCUDA_Stream stream);
typedef CTorporCUDA_Result (*CTorporCUDA_cuStreamCreate)(CTorporCUDA_Stream *stream, unsigned int flags);
typedef CTorporCUDA_Result (*CTorporCUDA_cuStreamDestroy)(CTorporCUDA_Stream stream);
typedef CTorporCUDA_Result (*CTorporCUDA_cuStreamSynchronize)(CTorporCUDA_Stream stream);
typedef CTorporCUDA_Result (*CTorporCUDA_cuStreamWaitEvent)(CTorporCUDA_Stream stream, CTorporCUDA_Event event, unsigned int flags);
typedef CTorporCUDA_Result (*CTorporCUDA_cuEventCreate)(CTorporCUDA_Event *event, unsigned int flags);
typedef CTorporCUDA_Result (*CTorporCUDA_cuEventDestroy)(CTorporCUDA_Event event);
typedef CTorporCUDA_Result (*CTorporCUDA_cuEventRecord)(CTorporCUDA_Event event, CTorporCUDA_Stream stream);
typedef CTorporCUDA_Result (*CTorporCUDA_cuEventSynchronize)(CTorporCUDA_Event event);
typedef CTorporCUDA_Result (*CTorporCUDA_cuEventQuery)(CTorporCUDA_Event event);
typedef CTorporCUDA_Result (*CTorporCUDA_cuEventElapsedTime)(float *milliseconds, CTorporCUDA_Event start, CTorporCUDA_Event end);
typedef CTorporCUDA_Result (*CTorporCUDA_cuModuleLoadData)(CTorporCUDA_Module *module, const void *image);
typedef CTorporCUDA_Result (*CTorporCUDA_cuModuleUnload)(CTorporCUDA_Module module);
typedef CTorporCUDA_Result (*CTorporCUDA_cuModuleGetFunction)(
    CTorporCUDA_Function *function, CTorporCUDA_Module module, const char *name);
typedef CTorporCUDA_Result (*CTorporCUDA_cuLaunchKernel)(
    CTorporCUDA_Function function, unsigned int gridX, unsigned int gridY, unsigned int gridZ, unsigned int blockX,
    unsigned int blockY, unsigned int blockZ, unsigned int sharedBytes, CTorporCUDA_Stream stream, void **parameters,
    void **extra);
typedef CTorporCUDA_Result (*CTorporCUDA_cuGetErrorName)(CTorporCUDA_Result error, const char **name);
typedef CTorporCUDA_Result (*CTorporCUDA_cuGetErrorString)(CTorporCUDA_Result error, const char **message);

// NVRTC (libnvrtc.so.13 or .12), the run-time CUDA C++ compiler: also loaded with dlopen. It needs no GPU.
typedef int CTorporNVRTC_Result;           // nvrtcResult; 0 is NVRTC_SUCCESS
typedef struct CTorporNVRTC_Program_st *CTorporNVRTC_Program;  // nvrtcProgram

typedef CTorporNVRTC_Result (*CTorporNVRTC_Version)(int *major, int *minor);
typedef const char *(*CTorporNVRTC_GetErrorString)(CTorporNVRTC_Result result);
typedef CTorporNVRTC_Result (*CTorporNVRTC_CreateProgram)(
    CTorporNVRTC_Program *program, const char *source, const char *name, int headerCount,
    const char *const *headers, const char *const *includeNames);
typedef CTorporNVRTC_Result (*CTorporNVRTC_CompileProgram)(
    CTorporNVRTC_Program program, int optionCount, const char *const *options);
typedef CTorporNVRTC_Result (*CTorporNVRTC_GetSize)(CTorporNVRTC_Program program, size_t *size);
typedef CTorporNVRTC_Result (*CTorporNVRTC_GetBytes)(CTorporNVRTC_Program program, char *bytes);
typedef CTorporNVRTC_Result (*CTorporNVRTC_DestroyProgram)(CTorporNVRTC_Program *program);

#endif
