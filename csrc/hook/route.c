/* route.c: the hook's side of mixed trees. Before an exec, the target's ELF headers say whether
 * the hook will be inside it, and which build of it: a program linked against musl loads the musl
 * build, one linked against glibc the glibc build (both sit in one directory), whichever this one
 * is. A program it cannot enter (static, Go) is started through the launcher instead, which has the
 * tracer seize it and then execs it in place: same pid, same parent, same arguments and
 * environment. Only when `preload run` offers a tracer (PRELOAD_TRACE); without one such an exec
 * goes ahead as asked and is reported as a blind spot. */
#include "hook.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define LD "LD_PRELOAD="
/* set once by the constructor, read-only afterwards */
static char launcher[PATH_MAX];
static char ld_own[sizeof LD + PATH_MAX], ld_other[sizeof LD + PATH_MAX]; /* "LD_PRELOAD=<build>" */
#ifdef __GLIBC__
#define OTHER_BUILD "libpreload-musl.so"
#define ld_glibc ld_own
#define ld_musl ld_other
#else
#define OTHER_BUILD "libpreload.so"
#define ld_glibc ld_other
#define ld_musl ld_own
#endif
char pl_env_socket[sizeof "PRELOAD_SOCKET=" + 108];
char pl_env_trace[sizeof "PRELOAD_TRACE=" + PATH_MAX];
int pl_injected;

/* "NAME=value" of our own environment, when it fits; never in a set-id program, whose caller must
 * not choose its daemon or its tracer */
static void keep_var(char *out, size_t cap, const char *name)
{
    const char *v = secure_getenv(name);
    if (v && *v && (size_t)snprintf(out, cap, "%s=%s", name, v) >= cap) out[0] = 0;
}

void pl_route_init(void)
{
    Dl_info info;
    keep_var(pl_env_socket, sizeof pl_env_socket, "PRELOAD_SOCKET");
    keep_var(pl_env_trace, sizeof pl_env_trace, "PRELOAD_TRACE");
    if (!dladdr((void *)pl_route_init, &info) || !info.dli_fname) return;
    const char *slash = strrchr(info.dli_fname, '/');
    if (!slash) return;
    int dir = (int)(slash - info.dli_fname);
    if ((size_t)snprintf(ld_own, sizeof ld_own, LD "%s", info.dli_fname) >= sizeof ld_own ||
        (size_t)snprintf(ld_other, sizeof ld_other, LD "%.*s/" OTHER_BUILD, dir, info.dli_fname) >= sizeof ld_other) {
        ld_own[0] = ld_other[0] = 0;
        return;
    }
    /* put here by LD_PRELOAD (not only by /etc/ld.so.preload): the environment must keep us */
    const char *ld = getenv("LD_PRELOAD");
    pl_injected = ld && pl_names(ld, info.dli_fname);
    if (pl_env_trace[0] && (size_t)dir + sizeof "/preload-trace" <= sizeof launcher)
        snprintf(launcher, sizeof launcher, "%.*s/preload-trace", dir, info.dli_fname);
}

/* Whether a LD_PRELOAD list (space or colon separated, as both loaders read it) names lib; with
 * lib NULL, either build of the hook. */
int pl_names(const char *list, const char *lib)
{
    size_t n = lib ? strlen(lib) : 0;
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, " :\t\n");
        if (lib ? len == n && memcmp(p, lib, n) == 0 : len && pl_is_hook(p, len)) return 1;
        p += len;
        p += *p != 0;
    }
    return 0;
}

int pl_is_hook(const char *name, size_t n)
{
    const size_t at = sizeof LD - 1;
    return (ld_own[0] && strlen(ld_own + at) == n && memcmp(ld_own + at, name, n) == 0) ||
           (ld_other[0] && strlen(ld_other + at) == n && memcmp(ld_other + at, name, n) == 0);
}

const char *pl_hook_for(int kind)
{
    if (!ld_own[0]) return NULL;
    kind &= ~PRELOAD_ELF_SECURE;
    if (kind == PRELOAD_ELF_FOREIGN) return NULL;
    /* a program of unknown make keeps this build (a static one passes it on to its children) */
    const char *want = kind == PRELOAD_ELF_MUSL ? ld_musl : kind == PRELOAD_ELF_DYNAMIC ? ld_glibc : ld_own;
    if (want == ld_own) return want;
    return syscall(SYS_faccessat, AT_FDCWD, want + sizeof LD - 1, R_OK) == 0 ? want : NULL;
}

int pl_route_kind(int dirfd, const char *path)
{
    int err = errno;
    char interp[256]; /* a longer interpreter path is left to the kernel (which allows 255) */
    /* Go matters only to a tracer; without one, a Go program linked against musl needs the musl build */
    int kind = pl_elf_kind(dirfd, path, interp, sizeof interp, launcher[0]);
    if (kind == PRELOAD_ELF_SCRIPT) kind = pl_elf_kind(AT_FDCWD, interp, NULL, 0, launcher[0]);
    errno = err;
    return kind;
}

int pl_route_traced(int kind)
{
    /* a 32-bit program's own calls cannot be read, but the tracer lets them through and follows
     * the programs it starts */
    return launcher[0] && (kind == PRELOAD_ELF_STATIC || kind == PRELOAD_ELF_GO || kind == PRELOAD_ELF_FOREIGN);
}

/* Whether /etc/ld.so.preload loads the glibc build into every glibc program, set-id ones too. */
int pl_in_ld_so_preload(void)
{
    char buf[1024];
    int fd = (int)syscall(SYS_openat, AT_FDCWD, "/etc/ld.so.preload", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = syscall(SYS_read, fd, buf, sizeof buf - 1);
    syscall(SYS_close, fd);
    if (n <= 0 || !ld_glibc[0]) return 0;
    buf[n] = 0;
    return pl_names(buf, ld_glibc + sizeof LD - 1);
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
