// A C program using libtorpor as C users do: only torpor.h and the library. Saves two tensors (synchronously and
// in the background), reads them back, checks the bytes, and checks errors. Prints "ok" and exits 0 on success;
// otherwise prints what failed and exits 1. Usage: roundtrip DIRECTORY
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "torpor.h"

#define CHECK(condition, ...)                                                                                        \
    do {                                                                                                             \
        if (!(condition)) {                                                                                          \
            printf(__VA_ARGS__);                                                                                     \
            printf(" (last error: %s)\n", torpor_last_error());                                                      \
            return 1;                                                                                                \
        }                                                                                                            \
    } while (0)

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    char path[4096];
    snprintf(path, sizeof path, "%s/model.torpor", argv[1]);
    CHECK(torpor_abi_version() == TORPOR_ABI_VERSION, "ABI %d", torpor_abi_version());

    enum { ROWS = 512, COLUMNS = 1024 };
    unsigned short *weights = malloc(sizeof(unsigned short) * ROWS * COLUMNS);
    for (int i = 0; i < ROWS * COLUMNS; ++i) weights[i] = (unsigned short)(0x3c00 + (i * 7919) % 509);  // BF16-ish
    float bias[COLUMNS];
    for (int i = 0; i < COLUMNS; ++i) bias[i] = (float)i * 0.5f;
    int64_t weight_shape[2] = {ROWS, COLUMNS}, bias_shape[1] = {COLUMNS};
    torpor_tensor tensors[2] = {
        {"layer.weight", "BF16", 2, weight_shape, weights, (int64_t)sizeof(unsigned short) * ROWS * COLUMNS, -1},
        {"layer.bias", "F32", 1, bias_shape, bias, (int64_t)sizeof bias, -1},
    };
    torpor_save_options options;
    torpor_save_options_init(&options);
    options.metadata_json = "{\"step\": \"3\"}";
    torpor_save *save = NULL;
    CHECK(torpor_save_start(path, tensors, 2, &options, &save) == TORPOR_OK, "save_start");
    memset(weights, 0, sizeof(unsigned short) * ROWS * COLUMNS);  // captured: changing it now changes nothing
    CHECK(torpor_save_wait(save) == TORPOR_OK, "save_wait");
    int64_t source = 0, stored = 0;
    CHECK(torpor_save_sizes(save, &source, &stored) == TORPOR_OK && stored > 0 && stored < source, "sizes");
    torpor_save_info capture;
    CHECK(torpor_save_get_info(save, &capture) == TORPOR_OK && capture.device_capture == 0 && capture.copy_seconds >= 0,
          "save info: capture %d", capture.device_capture);
    torpor_save_free(save);
    CHECK(options.keep_memory == 1, "keep_memory defaults to 1");
    CHECK(torpor_save_release_memory() >= source, "the save's memory was kept");
    CHECK(torpor_save_release_memory() == 0, "released once");

    torpor_container *container = NULL;
    CHECK(torpor_open(path, &container) == TORPOR_OK, "open");
    CHECK(torpor_tensor_count(container) == 2, "count %lld", (long long)torpor_tensor_count(container));
    torpor_tensor_info info;
    CHECK(torpor_tensor_info_at(container, 0, &info) == TORPOR_OK, "info");
    CHECK(strcmp(info.name, "layer.weight") == 0 && strcmp(info.dtype, "BF16") == 0 && info.ndim == 2 &&
              info.shape[0] == ROWS && info.shape[1] == COLUMNS && info.gpu_only == 0,
          "info fields: %s %s %d", info.name, info.dtype, info.ndim);
    CHECK(strcmp(torpor_metadata_json(container), "{\"step\":\"3\"}") == 0, "metadata %s",
          torpor_metadata_json(container));

    unsigned short *back = malloc(sizeof(unsigned short) * ROWS * COLUMNS);
    float bias_back[COLUMNS];
    const char *names[2] = {"layer.weight", "layer.bias"};
    void *destinations[2] = {back, bias_back};
    int64_t sizes[2] = {(int64_t)sizeof(unsigned short) * ROWS * COLUMNS, (int64_t)sizeof bias_back};
    CHECK(torpor_read(container, names, destinations, sizes, 2, 0) == TORPOR_OK, "read");
    for (int i = 0; i < ROWS * COLUMNS; ++i)
        CHECK(back[i] == (unsigned short)(0x3c00 + (i * 7919) % 509), "weight %d", i);
    CHECK(memcmp(bias_back, bias, sizeof bias) == 0, "bias");

    // Errors: a status and the calling thread's message, naming the problem.
    const char *unknown[1] = {"nope"};
    CHECK(torpor_read(container, unknown, destinations, sizes, 1, 0) == TORPOR_ERROR_INVALID_ARGUMENT, "unknown");
    CHECK(strstr(torpor_last_error(), "no tensor named \"nope\"") != NULL, "message: %s", torpor_last_error());
    int64_t wrong[1] = {3};
    CHECK(torpor_read(container, names, destinations, wrong, 1, 0) == TORPOR_ERROR_INVALID_ARGUMENT, "size");
    CHECK(strstr(torpor_last_error(), "its destination 3") != NULL, "message: %s", torpor_last_error());
    torpor_close(container);
    torpor_container *missing = NULL;
    CHECK(torpor_open("/nonexistent/x.torpor", &missing) == TORPOR_ERROR_IO && missing == NULL, "missing file");
    free(weights);
    free(back);
    printf("ok\n");
    return 0;
}
