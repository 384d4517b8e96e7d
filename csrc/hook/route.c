/* route.c: the hook's side of mixed trees. Before an exec, the target's ELF headers say whether
 * the hook will be inside it. A program it cannot enter (static, Go) is started through the
 * launcher instead, which has the tracer seize it and then execs it in place: same pid, same
 * parent, same arguments and environment. Only when `preload run` offers a tracer
 * (PRELOAD_TRACE); without one such an exec goes ahead as asked and is reported as a blind spot. */
#include "hook.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static char launcher[PATH_MAX]; /* set once by the constructor, read-only afterwards */

void pl_route_init(void)
{
    Dl_info info;
    const char *trace = getenv("PRELOAD_TRACE");
    if (!trace || !*trace || !dladdr((void *)pl_route_init, &info) || !info.dli_fname) return;
    const char *slash = strrchr(info.dli_fname, '/');
    if (!slash || (size_t)(slash - info.dli_fname) + sizeof "/preload-trace" > sizeof launcher) return;
    memcpy(launcher, info.dli_fname, (size_t)(slash - info.dli_fname));
    strcpy(launcher + (slash - info.dli_fname), "/preload-trace");
}

int pl_route_wanted(int dirfd, const char *path)
{
    if (!launcher[0] || !pl_enabled) return 0;
    char interp[256]; /* a longer interpreter path is left to the kernel (which allows 255) */
    int kind = preload_elf_kind(dirfd, path, interp, sizeof interp);
    if (kind == PRELOAD_ELF_SCRIPT) kind = preload_elf_kind(AT_FDCWD, interp, NULL, 0);
    return kind == PRELOAD_ELF_STATIC || kind == PRELOAD_ELF_GO;
}

/* argv for the launcher: preload-trace exec --handoff TARGET ARGV... */
#define LAUNCH_ARGV(nargv, target, argv)                                  \
    size_t n_ = 0;                                                        \
    while (argv && argv[n_]) n_++;                                        \
    char *nargv[n_ + 5];                                                  \
    nargv[0] = launcher;                                                  \
    nargv[1] = "exec";                                                    \
    nargv[2] = "--handoff";                                               \
    nargv[3] = (char *)(target);                                          \
    for (size_t i_ = 0; i_ < n_; i_++) nargv[4 + i_] = argv[i_];          \
    if (!n_) nargv[4 + n_++] = (char *)(target); /* an empty argv: the launcher needs ARGV0 */ \
    nargv[4 + n_] = NULL

int pl_exec_traced(int fd, const char *path, char *const argv[], char *const envp[])
{
    char target[32];
    int copy = -1;
    if (fd >= 0) { /* fexecve, execveat(AT_EMPTY_PATH): a copy that survives into the launcher */
        if ((copy = (int)syscall(SYS_fcntl, fd, F_DUPFD, 0)) < 0) return -1;
        snprintf(target, sizeof target, "fd:%d", copy);
        path = target;
    }
    LAUNCH_ARGV(nargv, path, argv);
    int r = REAL(execve)(launcher, nargv, envp);
    int err = errno;
    if (copy >= 0) syscall(SYS_close, copy);
    errno = err;
    return r;
}

int pl_spawn_traced(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                    const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    LAUNCH_ARGV(nargv, path, argv);
    return REAL(posix_spawn)(pid, launcher, fa, attr, nargv, envp);
}
