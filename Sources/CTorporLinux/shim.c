#define _GNU_SOURCE
#include "CTorporLinux.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/types.h>

int CTorporLinux_startWriteback(int fd, int64_t offset, int64_t count) {
    return sync_file_range(fd, offset, count, SYNC_FILE_RANGE_WRITE);
}

int CTorporLinux_allocate(int fd, int64_t size) {
    return fallocate(fd, 0, 0, size);
}

int CTorporLinux_spawnInNewSession(
    int *pid, const char *path, char *const argv[], char *const envp[], const char *logPath) {
    posix_spawnattr_t attributes;
    posix_spawn_file_actions_t actions;
    int result = posix_spawnattr_init(&attributes);
    if (result != 0) return result;
    result = posix_spawn_file_actions_init(&actions);
    if (result != 0) {
        posix_spawnattr_destroy(&attributes);
        return result;
    }
    // The child starts with default handlers and nothing blocked, whatever this process set up.
    sigset_t defaults;
    sigfillset(&defaults);
    posix_spawnattr_setsigdefault(&attributes, &defaults);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&attributes, &none);
    posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSID);
    // Nothing but stdin, stdout and stderr is inherited: without this, a pipe or socket another thread of this
    // process has open (without O_CLOEXEC) would stay open in the engine for its whole life.
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    posix_spawn_file_actions_addclosefrom_np(&actions, 3);
#endif
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    pid_t child = 0;
    result = posix_spawn(&child, path, &actions, &attributes, argv, envp);
    *pid = (int)child;
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attributes);
    return result;
}

int CTorporLinux_openForReading(const char *path, int direct) {
    return open(path, O_RDONLY | O_CLOEXEC | (direct ? O_DIRECT : 0));
}
