/*
 * libtorpor: Torpor's checkpoint manager for C, Python (ctypes) and other languages.
 *
 * Open a .torpor container, list its tensors, decode them into host memory or load them into GPU memory, and save
 * tensors from host or GPU memory into a new container. Nothing here exposes Swift types; every call is safe to
 * make from any thread, and calls on one container may run concurrently.
 *
 * Errors: every call that can fail returns a torpor_status; on failure, torpor_last_error() returns the message of
 * the calling thread's last failed call (valid until that thread's next libtorpor call). Messages name what failed
 * (the file, the tensor, the chunk) and what to do.
 *
 * Build: `swift build -c release --product torpor-c` (libtorpor-c.so; scripts/build-libtorpor.sh names it
 * libtorpor.so and links the Swift runtime statically). GPU calls find the CUDA driver (libcuda.so.1) and nvCOMP
 * (libnvcomp.so.6: TORPOR_NVCOMP_PATH, Python's nvidia/libnvcomp, the loader path) at run time; without them
 * they fail with TORPOR_ERROR_NO_GPU and everything else works.
 */
#ifndef TORPOR_H
#define TORPOR_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TORPOR_ABI_VERSION 2
#define TORPOR_MAX_DIMS 16

typedef enum {
    TORPOR_OK = 0,
    TORPOR_ERROR_INVALID_ARGUMENT = 1, /* a bad argument: unknown tensor, wrong size, bad option */
    TORPOR_ERROR_IO = 2,               /* a system call failed: open, read, write, rename, mmap */
    TORPOR_ERROR_CORRUPT = 3,          /* a chunk or file fails its checksum or does not decode */
    TORPOR_ERROR_INVALID_CONTAINER = 4,/* not a .torpor container, or malformed/truncated */
    TORPOR_ERROR_UNSUPPORTED = 5,      /* valid input this build cannot handle (GPU codecs on the CPU, newer format) */
    TORPOR_ERROR_NO_GPU = 6,           /* no CUDA driver, no such device, or no nvCOMP */
    TORPOR_ERROR_OUT_OF_MEMORY = 7,    /* GPU or host memory exhausted */
    TORPOR_ERROR_GPU = 8,              /* a CUDA or nvCOMP call failed */
    TORPOR_ERROR_INTERNAL = 9
} torpor_status;

/* The library's version ("0.1.0") and ABI version (TORPOR_ABI_VERSION of the header it was built with). */
const char *torpor_version(void);
int32_t torpor_abi_version(void);

/* The message of this thread's last failed call, or "" when none failed. */
const char *torpor_last_error(void);

/* ---- Reading containers ---- */

typedef struct torpor_container torpor_container;

/* Opens and validates a container (preamble, index, chunk table, stored header: checksums and structure). */
torpor_status torpor_open(const char *path, torpor_container **out);
void torpor_close(torpor_container *container);

/* What one tensor is. Strings live as long as the container. */
typedef struct {
    const char *name;
    const char *dtype;   /* as safetensors spells it: "BF16", "F32", "I64", "F8_E4M3", ... */
    const char *codec;   /* "byteplane", "zstd", "raw", "ans16", ... */
    int32_t ndim;        /* at most TORPOR_MAX_DIMS */
    int64_t shape[TORPOR_MAX_DIMS];
    int64_t nbytes;
    int32_t gpu_only;    /* 1 when some chunk uses a GPU codec: only torpor_load_device decodes it */
} torpor_tensor_info;

int64_t torpor_tensor_count(const torpor_container *container);
/* Tensors in the source file's data order, index 0 ..< torpor_tensor_count. */
torpor_status torpor_tensor_info_at(const torpor_container *container, int64_t index, torpor_tensor_info *out);
/* The source safetensors file's __metadata__ as a JSON object ("{}" when none); lives as long as the container. */
const char *torpor_metadata_json(const torpor_container *container);

/* Decodes `count` tensors into host memory on `threads` cores (0: all). sizes[i] must equal the tensor's nbytes.
 * Every chunk is checked (CRC-32 of its stored and decoded bytes). On failure the destinations hold unspecified
 * bytes. */
torpor_status torpor_read(torpor_container *container, const char *const *names, void *const *destinations,
                          const int64_t *sizes, int64_t count, int32_t threads);

/* ---- Loading into GPU memory ---- */

typedef enum { TORPOR_SOURCE_FILE = 0, TORPOR_SOURCE_HOST_CACHE = 1 } torpor_source;

typedef struct {
    int32_t device;          /* CUDA device ordinal */
    void *stream;            /* a CUstream the destinations are used on (NULL: the legacy default stream): the load
                                waits for the work queued on it first; when the call returns the data is in place */
    int32_t source;          /* torpor_source; the host cache is created under cache_dir when missing or stale */
    int32_t direct;          /* 1: O_DIRECT reads (TORPOR_SOURCE_FILE) */
    const char *cache_dir;   /* NULL: /dev/shm */
    const char *nvcomp_path; /* NULL: the default search */
    const char *nvrtc_path;  /* NULL: the default search (byte-plane chunks) */
} torpor_device_options;

/* Fills `options` with the defaults: device 0, the default stream, from the file, buffered reads. */
void torpor_device_options_init(torpor_device_options *options);

/* Loads `count` tensors into device memory at pointers[i] (sizes[i] must equal the tensor's nbytes) through the
 * pipelined loader: every chunk checked on the GPU. A failed load leaves the destinations unspecified. */
torpor_status torpor_load_device(torpor_container *container, const char *const *names, const uint64_t *pointers,
                                 const int64_t *sizes, int64_t count, const torpor_device_options *options);

/* Makes the container's host cache ready for loads from TORPOR_SOURCE_HOST_CACHE in this process: created under
 * options->cache_dir when missing or stale, mapped and registered with the driver as pinned memory for
 * options->device, and kept. Later loads from the cache start at once; a process that calls it on a thread of its
 * own while it does other work (the vLLM plugin, after a cold start from the file) pays neither cost later. */
torpor_status torpor_host_cache_open(torpor_container *container, const torpor_device_options *options);

/* Makes sure the container's host cache (a file under cache_dir, NULL: /dev/shm) exists and is current, copying
 * the container there when not; needs no GPU. Writes the cache file's path (NUL-terminated) into path_out. */
torpor_status torpor_host_cache_prepare(const char *container_path, const char *cache_dir, char *path_out,
                                        size_t path_capacity);

/* ---- Saving ---- */

/* One tensor to save. device -1: `data` is host memory; otherwise `data` is a device pointer on that CUDA
 * device, read after the work queued on `stream` (torpor_save_options) has run. */
typedef struct {
    const char *name;
    const char *dtype;       /* "BF16", "F32", ... */
    int32_t ndim;
    const int64_t *shape;
    const void *data;
    int64_t nbytes;          /* must equal the size that dtype and shape give */
    int32_t device;
} torpor_tensor;

typedef struct {
    const char *codec;       /* "auto" (NULL too), or a codec name: "byteplane", "zstd", "raw", "ans16", ... */
    int32_t gpu_encode;      /* -1: on the GPU when some tensor is on one and nvCOMP loads; 0: never; 1: required */
    int64_t chunk_size;      /* 0: 1 MiB */
    int32_t threads;         /* CPU encoding threads, 0: all cores */
    void *stream;            /* see torpor_tensor.device */
    const char *metadata_json; /* a JSON object of string values for __metadata__, or NULL */
    const char *nvcomp_path;
    int32_t keep_memory;     /* 1 (the default): the host memory the file is assembled in (pinned once device
                              * tensors were copied into it) and the GPU encoder are kept for the next save;
                              * 0: freed when this save ends. See torpor_save_release_memory. */
} torpor_save_options;

void torpor_save_options_init(torpor_save_options *options);

typedef struct torpor_save torpor_save;

/* Starts saving `count` tensors into a new container at `path`. Returns once every tensor's bytes are copied (so
 * the caller may change them); encoding and writing go on in the background. The container is written under a
 * temporary name beside `path` and renamed into place only when complete. */
torpor_status torpor_save_start(const char *path, const torpor_tensor *tensors, int64_t count,
                                const torpor_save_options *options, torpor_save **out);
/* 1 when the save has finished (successfully or not), 0 while it runs. */
int32_t torpor_save_done(torpor_save *save);
/* Waits for the save; its status (and, on failure, torpor_last_error). Waiting again returns the same. */
torpor_status torpor_save_wait(torpor_save *save);
/* Sizes of the finished save: source bytes (the safetensors layout) and container bytes. */
torpor_status torpor_save_sizes(torpor_save *save, int64_t *source_bytes, int64_t *container_bytes);
/* Waits for the save if it still runs, then frees it. */
void torpor_save_free(torpor_save *save);

/* How torpor_save_start captured the bytes, known once it returned. */
typedef struct {
    int32_t device_capture;  /* 0: no device tensors; 1: a snapshot in device memory (copied to the host in the
                              * background); 2: copied to host memory during the call (the device had no room
                              * for a snapshot beside 1 GiB of headroom) */
    int32_t memory_reused;   /* 1: the host memory of an earlier save was reused (already pinned where needed) */
    double memory_seconds;   /* getting that host memory */
    double wait_seconds;     /* waiting for the work queued on the stream */
    double copy_seconds;     /* copying the bytes (host tensors, the device snapshot or the device-to-host copy) */
} torpor_save_info;

torpor_status torpor_save_get_info(torpor_save *save, torpor_save_info *info);

/* Frees the host memory and GPU encoders that finished saves kept (keep_memory); returns the host bytes freed.
 * Saves still running keep theirs until they end. */
int64_t torpor_save_release_memory(void);

#ifdef __cplusplus
}
#endif
#endif
