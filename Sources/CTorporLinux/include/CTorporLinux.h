#ifndef C_TORPOR_LINUX_H
#define C_TORPOR_LINUX_H

// Only declarations here: the implementations in shim.c need _GNU_SOURCE, which must not leak into the Clang
// module that Swift imports (it would change system types shared with other modules).
#include <stdint.h>

/// Starts writeback of a file range without waiting for it (sync_file_range with SYNC_FILE_RANGE_WRITE).
/// Returns 0, or -1 with errno set.
int CTorporLinux_startWriteback(int fd, int64_t offset, int64_t count);

/// fallocate(fd, 0, 0, size): allocates the file's blocks up to `size` (no emulation by writing zeros, unlike
/// posix_fallocate). Returns 0, or -1 with errno set (EOPNOTSUPP where the filesystem cannot).
int CTorporLinux_allocate(int fd, int64_t size);

/// posix_spawn of `path` with `argv`/`envp` in a new session (so the child leads its own process group and the
/// whole group can be signalled), stdin from /dev/null and stdout+stderr appended to `logPath`.
/// Returns 0 and sets *pid, or an errno value.
int CTorporLinux_spawnInNewSession(
    int *pid, const char *path, char *const argv[], char *const envp[], const char *logPath);

/// open(path, O_RDONLY | O_CLOEXEC, plus O_DIRECT when `direct`): reads that bypass the page cache.
/// Returns the descriptor, or -1 with errno set.
int CTorporLinux_openForReading(const char *path, int direct);

#endif
