#ifndef C_TORPOR_LINUX_H
#define C_TORPOR_LINUX_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fcntl.h>
#include <stdint.h>

/// Starts writeback of a file range without waiting for it (sync_file_range with SYNC_FILE_RANGE_WRITE).
/// Returns 0, or -1 with errno set; on systems without sync_file_range it does nothing.
static inline int CTorporLinux_startWriteback(int fd, int64_t offset, int64_t count) {
#ifdef SYNC_FILE_RANGE_WRITE
    return sync_file_range(fd, offset, count, SYNC_FILE_RANGE_WRITE);
#else
    (void)fd; (void)offset; (void)count;
    return 0;
#endif
}

#endif
