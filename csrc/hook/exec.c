/* exec.c: the caller's side of starting a program. An exec that succeeds never returns, so the
 * attempt is recorded before the call and a failure after it. The new program reports its own start
 * from the library constructor; this record is what remains when the target does not load the hook
 * (static, Go), and such a target is started through the tracer's launcher (route.c) when there is
 * a tracer. glibc's execvp, system and popen reach execve/posix_spawn without the PLT, so each
 * public entry point is hooked. In a vfork child only async-signal-safe work happens here. */
#include "hook.h"

#include <fcntl.h>
#include <limits.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

/* What execvp will run: the first executable match on PATH (for the record only). */
static const char *on_path(const char *file, char *out, size_t cap)
{
    if (!file || !*file || strchr(file, '/')) return file;
    const char *path = getenv("PATH");
    if (!path) path = "/bin:/usr/bin";
    for (const char *p = path;; p++) {
        const char *end = strchrnul(p, ':');
        int n = snprintf(out, cap, "%.*s/%s", (int)(end - p), p, file);
        if (n > 0 && (size_t)n < cap && access(out, X_OK) == 0) return out;
        if (!*end) return file;
        p = end;
    }
}

/* Apart from record_exec so that its buffer and the flush's are never on the stack together:
 * these hooks run on small thread stacks and on signal stacks too. */
__attribute__((noinline)) static void send_exec(unsigned api, unsigned phase, int res, int fd,
                                                const char *path, char *const argv[], int traced)
{
    struct preload_exec e = {.api = (uint16_t)api, .phase = (uint16_t)phase, .res = res, .fd = fd};
    char buf[PL_BUF]; /* the new process reports its whole command line itself */
    struct pl_rec r;
    pl_rec_begin(&r, buf, sizeof buf, PRELOAD_REC_EXEC, PRELOAD_SRC_HOOK, &e, sizeof e);
    if (traced) ((struct preload_hdr *)buf)->flags = PRELOAD_F_HANDOFF;
    pl_rec_str(&r, path);
    uint32_t kept = 0;
    for (; argv && argv[kept] && r.len < r.cap - 1; kept++) pl_rec_str(&r, argv[kept]);
    if (argv && argv[kept]) r.truncated = 1;
    ((struct preload_exec *)(buf + sizeof(struct preload_hdr)))->argc = kept;
    pl_rec_send(&r);
}

static void record_exec(unsigned api, unsigned phase, int res, int fd, const char *path,
                        char *const argv[], int traced)
{
    int err = errno;
    if (!pl_enter()) return;
    if (phase == PRELOAD_EXEC_ATTEMPT && !pl_in_vfork_child()) pl_flush_counts();
    send_exec(api, phase, res, fd, path, argv, traced);
    pl_leave();
    errno = err;
}

/* Whether this exec goes to the tracer: decided before the attempt is recorded, which says so. */
static int routed(int dirfd, const char *path)
{
    int err = errno, r = pl_route_wanted(dirfd, path);
    errno = err;
    return r;
}

#define ATTEMPT(api, fd, path, argv) record_exec(api, PRELOAD_EXEC_ATTEMPT, 0, fd, path, argv, traced)
#define FAILED(api, err, fd, path, argv) record_exec(api, PRELOAD_EXEC_FAILED, -(err), fd, path, argv, 0)
/* returns only when the launcher could not be started: the exec then goes ahead as asked */
#define VIA_TRACER(fd, path, argv, envp) \
    if (traced) pl_exec_traced(fd, path, argv, envp)

PL_EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
    int traced = routed(AT_FDCWD, path);
    ATTEMPT(PRELOAD_API_EXECVE, -1, path, argv);
    VIA_TRACER(-1, path, argv, envp);
    int r = REAL(execve)(path, argv, envp);
    FAILED(PRELOAD_API_EXECVE, errno, -1, path, argv);
    return r;
}

PL_EXPORT int execv(const char *path, char *const argv[])
{
    int traced = routed(AT_FDCWD, path);
    ATTEMPT(PRELOAD_API_EXECV, -1, path, argv);
    VIA_TRACER(-1, path, argv, environ);
    int r = REAL(execv)(path, argv);
    FAILED(PRELOAD_API_EXECV, errno, -1, path, argv);
    return r;
}

PL_EXPORT int execvp(const char *file, char *const argv[])
{
    char full[PL_BUF];
    const char *path = on_path(file, full, sizeof full);
    int traced = path != file && routed(AT_FDCWD, path);
    ATTEMPT(PRELOAD_API_EXECVP, -1, path, argv);
    VIA_TRACER(-1, path, argv, environ);
    int r = REAL(execvp)(file, argv);
    FAILED(PRELOAD_API_EXECVP, errno, -1, path, argv);
    return r;
}

PL_EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
    char full[PL_BUF];
    const char *path = on_path(file, full, sizeof full);
    int traced = path != file && routed(AT_FDCWD, path);
    ATTEMPT(PRELOAD_API_EXECVPE, -1, path, argv);
    VIA_TRACER(-1, path, argv, envp);
    int r = REAL(execvpe)(file, argv, envp);
    FAILED(PRELOAD_API_EXECVPE, errno, -1, path, argv);
    return r;
}

/* The execl family: collect the variadic arguments into an argv on the stack. */
#define COLLECT_ARGV(arg, argv, after)                           \
    size_t argc_ = 1;                                            \
    va_list ap_;                                                 \
    va_start(ap_, arg);                                          \
    while (va_arg(ap_, char *)) argc_++;                         \
    va_end(ap_);                                                 \
    char *argv[argc_ + 1];                                       \
    argv[0] = (char *)(arg);                                     \
    va_start(ap_, arg);                                          \
    for (size_t i_ = 1; i_ <= argc_; i_++) argv[i_] = va_arg(ap_, char *); \
    after;                                                       \
    va_end(ap_)

PL_EXPORT int execl(const char *path, const char *arg, ...)
{
    COLLECT_ARGV(arg, argv, (void)0);
    int traced = routed(AT_FDCWD, path);
    ATTEMPT(PRELOAD_API_EXECL, -1, path, argv);
    VIA_TRACER(-1, path, argv, environ);
    int r = REAL(execv)(path, argv);
    FAILED(PRELOAD_API_EXECL, errno, -1, path, argv);
    return r;
}

PL_EXPORT int execlp(const char *file, const char *arg, ...)
{
    COLLECT_ARGV(arg, argv, (void)0);
    char full[PL_BUF];
    const char *path = on_path(file, full, sizeof full);
    int traced = path != file && routed(AT_FDCWD, path);
    ATTEMPT(PRELOAD_API_EXECLP, -1, path, argv);
    VIA_TRACER(-1, path, argv, environ);
    int r = REAL(execvp)(file, argv);
    FAILED(PRELOAD_API_EXECLP, errno, -1, path, argv);
    return r;
}

PL_EXPORT int execle(const char *path, const char *arg, ...)
{
    char *const *envp;
    COLLECT_ARGV(arg, argv, envp = va_arg(ap_, char *const *));
    int traced = routed(AT_FDCWD, path);
    ATTEMPT(PRELOAD_API_EXECLE, -1, path, argv);
    VIA_TRACER(-1, path, argv, envp);
    int r = REAL(execve)(path, argv, envp);
    FAILED(PRELOAD_API_EXECLE, errno, -1, path, argv);
    return r;
}

PL_EXPORT int execveat(int dirfd, const char *path, char *const argv[], char *const envp[],
                       int flags)
{
    char full[PL_BUF];
    const char *p = path;
    if ((flags & AT_EMPTY_PATH) && p && !*p) p = "."; /* the file is dirfd itself */
    pl_abspath(dirfd, p, full, sizeof full);
    int by_fd = p != path;
    int traced = routed(dirfd, by_fd ? "" : path);
    ATTEMPT(PRELOAD_API_EXECVEAT, dirfd, full, argv);
    VIA_TRACER(by_fd ? dirfd : -1, full, argv, envp);
    int r = REAL(execveat)(dirfd, path, argv, envp, flags);
    FAILED(PRELOAD_API_EXECVEAT, errno, dirfd, full, argv);
    return r;
}

PL_EXPORT int fexecve(int fd, char *const argv[], char *const envp[])
{
    char full[PL_BUF];
    pl_abspath(fd, ".", full, sizeof full);
    int traced = routed(fd, "");
    ATTEMPT(PRELOAD_API_FEXECVE, fd, full, argv);
    VIA_TRACER(fd, NULL, argv, envp);
    int r = REAL(fexecve)(fd, argv, envp);
    FAILED(PRELOAD_API_FEXECVE, errno, fd, full, argv);
    return r;
}

PL_EXPORT int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                          const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    int traced = routed(AT_FDCWD, path);
    ATTEMPT(PRELOAD_API_POSIX_SPAWN, -1, path, argv);
    int r = traced ? pl_spawn_traced(pid, path, fa, attr, argv, envp)
                   : REAL(posix_spawn)(pid, path, fa, attr, argv, envp);
    if (r) FAILED(PRELOAD_API_POSIX_SPAWN, r, -1, path, argv);
    return r;
}

PL_EXPORT int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
                           const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    char full[PL_BUF];
    const char *path = on_path(file, full, sizeof full);
    int traced = path != file && routed(AT_FDCWD, path);
    ATTEMPT(PRELOAD_API_POSIX_SPAWNP, -1, path, argv);
    int r = traced ? pl_spawn_traced(pid, path, fa, attr, argv, envp)
                   : REAL(posix_spawnp)(pid, file, fa, attr, argv, envp);
    if (r) FAILED(PRELOAD_API_POSIX_SPAWNP, r, -1, path, argv);
    return r;
}

PL_EXPORT int system(const char *cmd)
{
    char *argv[] = {"sh", "-c", (char *)cmd, NULL};
    int traced = 0; /* the shell is a program like any other: its exec decides */
    if (cmd) ATTEMPT(PRELOAD_API_SYSTEM, -1, "/bin/sh", argv);
    int r = REAL(system)(cmd);
    if (cmd && r == -1) FAILED(PRELOAD_API_SYSTEM, errno, -1, "/bin/sh", argv);
    return r;
}

PL_EXPORT FILE *popen(const char *cmd, const char *type)
{
    char *argv[] = {"sh", "-c", (char *)cmd, NULL};
    int traced = 0;
    ATTEMPT(PRELOAD_API_POPEN, -1, "/bin/sh", argv);
    FILE *f = REAL(popen)(cmd, type);
    if (!f) FAILED(PRELOAD_API_POPEN, errno, -1, "/bin/sh", argv);
    return f;
}
