/* exec.c: the caller's side of starting a program. An exec that succeeds never returns, so the
 * attempt is recorded before the call and a failure after it. The new program reports its own start
 * from the library constructor; this record is what remains when the target does not load the hook
 * (static, Go), and such a target is started through the tracer's launcher (route.c) when there is
 * a tracer. glibc's execvp, system and popen reach execve/posix_spawn without the PLT, so each
 * public entry point is hooked, and all of them go through start().
 *
 * The new program gets the hook back when its environment lost it (env -i, unsetenv, a changed
 * LD_PRELOAD or PRELOAD_* variable; not the shell of system() and popen(): see there): the exec is
 * reported as hook_removed and goes ahead with the hook put back, first in LD_PRELOAD, the
 * program's other preloads kept. LD_PRELOAD names the build of the hook for the target's libc;
 * without one, the hook is left out and the program reported blind. A program that will not load
 * the hook does not inherit the channel either. In a vfork child only async-signal-safe work
 * happens here: no malloc, bounded stack. */
#include "hook.h"

#include <fcntl.h>
#include <limits.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

extern char **environ;

#define LD "LD_PRELOAD="
#define LDLEN (sizeof LD - 1)
/* The program's path as the records give it, in a buffer that stays on the caller's stack during
 * the whole exec: a longer one is cut, and the records flagged. */
#define PL_PATH 1024

/* What execvp will run: the first executable match on PATH (for the record only); *cut when a
 * candidate did not fit. */
static const char *on_path(const char *file, char *out, size_t cap, int *cut)
{
    if (!file || !*file || strchr(file, '/')) return file;
    const char *path = getenv("PATH");
    if (!path) path = "/bin:/usr/bin";
    for (const char *p = path;; p++) {
        const char *end = strchrnul(p, ':');
        int n = snprintf(out, cap, "%.*s/%s", (int)(end - p), p, file);
        if (n > 0 && (size_t)n < cap && access(out, X_OK) == 0) return out;
        *cut |= n > 0 && (size_t)n >= cap;
        if (!*end) return file;
        p = end;
    }
}

/* ---- records ---- */

/* Apart from the hooks so that a record's buffer and the exec's are never on the stack together:
 * these hooks run on small thread stacks and on signal stacks too. */
__attribute__((noinline)) static void send_exec(unsigned api, unsigned phase, int res, int fd,
                                                const char *path, int cut, char *const argv[], int traced)
{
    struct preload_exec e = {.api = (uint16_t)api, .phase = (uint16_t)phase, .res = res, .fd = fd};
    char buf[PL_BUF]; /* the new process reports its whole command line itself */
    struct pl_rec r;
    pl_rec_begin(&r, buf, sizeof buf, PRELOAD_REC_EXEC, PRELOAD_SRC_HOOK, &e, sizeof e);
    if (traced) ((struct preload_hdr *)buf)->flags = PRELOAD_F_HANDOFF;
    pl_rec_str(&r, path);
    if (cut) r.truncated = 1;
    uint32_t kept = 0;
    for (; argv && argv[kept] && r.len < r.cap - 1; kept++) pl_rec_str(&r, argv[kept]);
    if (argv && argv[kept]) r.truncated = 1;
    ((struct preload_exec *)(buf + sizeof(struct preload_hdr)))->argc = kept;
    pl_rec_send(&r);
}

/* strings: the program, its command line as one string (a CALL record carries three at most) */
__attribute__((noinline)) static void send_removed(const char *path, char *const argv[])
{
    struct preload_call c = {.api = PRELOAD_API_HOOK_REMOVED};
    char buf[PL_BUF];
    struct pl_rec r;
    pl_rec_begin(&r, buf, sizeof buf, PRELOAD_REC_CALL, PRELOAD_SRC_HOOK, &c, sizeof c);
    pl_rec_str(&r, path);
    size_t at = r.len, end = r.cap - 1;
    for (size_t i = 0; argv && argv[i]; i++) {
        size_t n = strlen(argv[i]) + (i > 0);
        if (n > end - at) {
            n = end - at;
            r.truncated = 1;
        }
        if (i && n) r.buf[at++] = ' ', n--;
        memcpy(r.buf + at, argv[i], n);
        at += n;
    }
    r.buf[at] = 0;
    pl_rec_adopt(&r);
    pl_rec_send(&r);
}

__attribute__((noinline)) static void send_blind(unsigned reason, const char *path)
{
    struct preload_blind b = {.reason = reason};
    char buf[PL_BUF];
    struct pl_rec r;
    pl_rec_begin(&r, buf, sizeof buf, PRELOAD_REC_BLIND, PRELOAD_SRC_HOOK, &b, sizeof b);
    pl_rec_str(&r, path);
    pl_rec_send(&r);
}

/* ---- the new program's environment ---- */

struct fix {
    const char *ld; /* "LD_PRELOAD=<the hook's build for the target>", NULL when there is none */
    int rewrite;    /* the environment must change */
    int removed;    /* ... because it lost the hook: tampering */
};

static int agent_var(const char *e)
{
    return e[0] == 'P' && (strncmp(e, "PRELOAD_SOCKET=", 15) == 0 || strncmp(e, "PRELOAD_TRACE=", 14) == 0);
}

/* The cheap part, at every exec: one pass over envp for LD_PRELOAD and the PRELOAD_* variables. */
static void check_env(char *const *envp, int kind, struct fix *f)
{
    f->ld = NULL;
    f->rewrite = f->removed = 0;
    if (!pl_injected) return; /* loaded by /etc/ld.so.preload: the environment does not carry us */
    f->ld = pl_hook_for(kind);
    int ld_seen = 0, sock_seen = 0, trace_seen = 0;
    int sock_ok = !pl_env_socket[0], trace_ok = !pl_env_trace[0];
    for (; envp && *envp; envp++) {
        const char *e = *envp;
        if (e[0] == 'L' && strncmp(e, LD, LDLEN) == 0) {
            ld_seen = 1; /* every one counts: the loader takes the last, getenv the first */
            if (f->ld ? !pl_names(e + LDLEN, f->ld + LDLEN) : 1) {
                int ours = pl_names(e + LDLEN, NULL);
                f->removed |= !ours;
                f->rewrite |= ours || f->ld; /* the other build of ours, or ours where none fits */
            }
        } else if (e[0] == 'P' && !sock_seen && strncmp(e, "PRELOAD_SOCKET=", 15) == 0) {
            sock_seen = 1;
            sock_ok = strcmp(e, pl_env_socket) == 0;
        } else if (e[0] == 'P' && !trace_seen && strncmp(e, "PRELOAD_TRACE=", 14) == 0) {
            trace_seen = 1;
            trace_ok = strcmp(e, pl_env_trace) == 0;
        }
    }
    f->removed |= !ld_seen || !sock_ok || !trace_ok;
    f->rewrite |= f->removed;
}

/* Their entries in their order, LD_PRELOAD and ours last: the hook's build first in LD_PRELOAD, then
 * their other preloads. In space when it fits, else in pages of its own (*map): in a vfork child
 * those stay in the parent's address space after the exec, a rare case (a huge environment that
 * lost the hook) that costs the parent a few pages. NULL when there is no memory for it. */
static char **rebuilt(char *const *envp, const struct fix *f, char *space, size_t cap, void **map,
                      size_t *maplen)
{
    size_t n = 0, theirs = 0;
    for (; envp && envp[n]; n++)
        if (strncmp(envp[n], LD, LDLEN) == 0) theirs += strlen(envp[n] + LDLEN) + 1;
    size_t ptrs = (n + 4) * sizeof(char *);
    size_t need = ptrs + sizeof LD + (f->ld ? strlen(f->ld) : 0) + theirs + 1;
    char *mem = space;
    if (need > cap) {
        mem = (char *)syscall(SYS_mmap, NULL, need, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mem == MAP_FAILED) return NULL;
        *map = mem;
        *maplen = need;
    }
    char **out = (char **)mem, *ld = mem + ptrs, *at = ld;
    size_t k = 0;
    at = stpcpy(at, f->ld ? f->ld : LD);
    for (size_t i = 0; i < n; i++) {
        const char *e = envp[i];
        if (strncmp(e, LD, LDLEN) == 0) {
            for (const char *p = e + LDLEN; *p;) {
                size_t len = strcspn(p, " :\t\n");
                if (len && !pl_is_hook(p, len)) {
                    if (at > ld + LDLEN) *at++ = ' ';
                    memcpy(at, p, len);
                    at += len;
                }
                p += len;
                p += *p != 0;
            }
        } else if (!agent_var(e)) {
            out[k++] = (char *)e;
        }
    }
    *at = 0;
    if (at > ld + LDLEN) out[k++] = ld;
    if (pl_env_socket[0]) out[k++] = pl_env_socket;
    if (pl_env_trace[0]) out[k++] = pl_env_trace;
    out[k] = NULL;
    return out;
}

/* ---- one exec, whatever the entry point ---- */

enum how { BY_PATH, BY_SEARCH, BY_AT, BY_FD, SPAWN, SPAWNP };

struct start {
    unsigned api;
    enum how how;
    int fd;           /* execveat's dirfd, fexecve's fd, else -1 */
    int by_fd;        /* the program is fd itself */
    const char *file; /* as the caller gave it */
    const char *path; /* what runs, for the records: resolved where it could be */
    int cut;          /* ... and cut */
    char *const *argv, *const *envp;
    int flags; /* execveat's */
    pid_t *pid;
    const posix_spawn_file_actions_t *fa;
    const posix_spawnattr_t *attr;
};

static int is_spawn(const struct start *s) { return s->how == SPAWN || s->how == SPAWNP; }

/* The call itself, with the environment settled; apart so that its buffer is not on the stack
 * with a record's. Returns as the real call does. */
__attribute__((noinline)) static int launch(const struct start *s, int traced, const struct fix *f)
{
    char space[1536] __attribute__((aligned(16)));
    void *map = NULL;
    size_t maplen = 0;
    char *const *envp = s->envp;
    if (f->rewrite) {
        char **env = rebuilt(s->envp, f, space, sizeof space, &map, &maplen);
        if (env) envp = env;
    }
    int r;
    if (traced && !is_spawn(s)) pl_exec_traced(s->by_fd ? s->fd : -1, s->path, s->argv, envp);
    /* returns only when the launcher could not be started: the exec then goes ahead as asked */
    switch (s->how) {
    case BY_PATH: r = REAL(execve)(s->file, s->argv, envp); break;
    case BY_SEARCH: r = REAL(execvpe)(s->file, s->argv, envp); break;
    case BY_AT: r = (int)syscall(SYS_execveat, s->fd, s->file, s->argv, envp, s->flags); break;
    case BY_FD: r = REAL(fexecve)(s->fd, s->argv, envp); break;
    default:
        r = traced ? pl_spawn_traced(s->pid, s->path, s->fa, s->attr, s->argv, envp)
            : s->how == SPAWN ? REAL(posix_spawn)(s->pid, s->file, s->fa, s->attr, s->argv, envp)
                              : REAL(posix_spawnp)(s->pid, s->file, s->fa, s->attr, s->argv, envp);
    }
    if (map) {
        int err = errno;
        syscall(SYS_munmap, map, maplen);
        errno = err;
    }
    return r;
}

/* The channel's fd close-on-exec (on 1) or inherited again (on 0). */
static void chan_cloexec(int fd, int on)
{
    if (fd >= 0) syscall(SYS_fcntl, fd, F_SETFD, on ? FD_CLOEXEC : 0);
}

/* Why the program will run unseen by us (PRELOAD_BLIND_*), or 0. A traced one is the tracer's to
 * report. A set-id one still loads the hook when /etc/ld.so.preload names the glibc build. */
static unsigned blind_reason(int kind, int traced, const struct fix *f)
{
    if (kind == PRELOAD_ELF_FOREIGN) return traced ? 0 : PRELOAD_BLIND_FOREIGN;
    int preloaded = kind == (PRELOAD_ELF_DYNAMIC | PRELOAD_ELF_SECURE) && pl_in_ld_so_preload();
    if ((kind & PRELOAD_ELF_SECURE) && !preloaded) return PRELOAD_BLIND_SECURE;
    return f->rewrite && !f->ld ? PRELOAD_BLIND_NO_VARIANT : 0;
}

/* The decisions (tracer, the hook's build, environment) are made whatever the re-entrancy depth:
 * they call no hook. Records are sent only from the outermost hook. */
static int start(const struct start *s, int dirfd, const char *what)
{
    int err = errno;
    int kind = pl_enabled && what ? pl_route_kind(dirfd, what) : PRELOAD_ELF_UNKNOWN;
    int traced = pl_route_traced(kind);
    struct fix f = {0};
    if (pl_enabled) check_env(s->envp, kind, &f);
    unsigned blind = blind_reason(kind, traced, &f);
    int hookless = blind || (!traced && (kind == PRELOAD_ELF_STATIC || kind == PRELOAD_ELF_GO));
    int fd = s->how == BY_AT || s->how == BY_FD ? s->fd : -1;
    if (pl_enter()) {
        if (!pl_in_vfork_child()) pl_flush_counts();
        send_exec(s->api, PRELOAD_EXEC_ATTEMPT, 0, fd, s->path, s->cut, s->argv, traced);
        if (f.removed) send_removed(s->path, s->argv);
        if (blind) send_blind(blind, s->path);
        pl_leave();
    }
    int chan = hookless ? pl_chan_fd() : -1; /* a program without the hook would keep it open */
    chan_cloexec(chan, 1);
    errno = err;
    int r = launch(s, traced, &f);
    err = errno;
    int failed = is_spawn(s) ? r : r < 0 ? err : 0;
    chan_cloexec(chan, 0);
    if (failed && pl_enter()) {
        send_exec(s->api, PRELOAD_EXEC_FAILED, -failed, fd, s->path, s->cut, s->argv, 0);
        pl_leave();
    }
    errno = err;
    return r;
}

#define START(dirfd, what, ...)                         \
    do {                                                \
        struct start s_ = {__VA_ARGS__};                \
        return start(&s_, dirfd, what);                 \
    } while (0)

/* What execvp would run: classified only when it was found (or has a slash). */
#define SEARCHED(file, full, cut) on_path(file, full, sizeof full, &cut)
#define FOUND(path) ((path) && strchr(path, '/') ? (path) : NULL)

PL_EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
    START(AT_FDCWD, path, .api = PRELOAD_API_EXECVE, .how = BY_PATH, .fd = -1, .file = path, .path = path,
          .argv = argv, .envp = envp);
}

PL_EXPORT int execv(const char *path, char *const argv[])
{
    START(AT_FDCWD, path, .api = PRELOAD_API_EXECV, .how = BY_PATH, .fd = -1, .file = path, .path = path,
          .argv = argv, .envp = environ);
}

PL_EXPORT int execvp(const char *file, char *const argv[])
{
    char full[PL_PATH];
    int cut = 0;
    const char *path = SEARCHED(file, full, cut);
    START(AT_FDCWD, FOUND(path), .api = PRELOAD_API_EXECVP, .how = BY_SEARCH, .fd = -1, .file = file,
          .path = path, .cut = cut, .argv = argv, .envp = environ);
}

PL_EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
    char full[PL_PATH];
    int cut = 0;
    const char *path = SEARCHED(file, full, cut);
    START(AT_FDCWD, FOUND(path), .api = PRELOAD_API_EXECVPE, .how = BY_SEARCH, .fd = -1, .file = file,
          .path = path, .cut = cut, .argv = argv, .envp = envp);
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
    START(AT_FDCWD, path, .api = PRELOAD_API_EXECL, .how = BY_PATH, .fd = -1, .file = path, .path = path,
          .argv = argv, .envp = environ);
}

PL_EXPORT int execlp(const char *file, const char *arg, ...)
{
    COLLECT_ARGV(arg, argv, (void)0);
    char full[PL_PATH];
    int cut = 0;
    const char *path = SEARCHED(file, full, cut);
    START(AT_FDCWD, FOUND(path), .api = PRELOAD_API_EXECLP, .how = BY_SEARCH, .fd = -1, .file = file,
          .path = path, .cut = cut, .argv = argv, .envp = environ);
}

PL_EXPORT int execle(const char *path, const char *arg, ...)
{
    char *const *envp;
    COLLECT_ARGV(arg, argv, envp = va_arg(ap_, char *const *));
    START(AT_FDCWD, path, .api = PRELOAD_API_EXECLE, .how = BY_PATH, .fd = -1, .file = path, .path = path,
          .argv = argv, .envp = envp);
}

PL_EXPORT int execveat(int dirfd, const char *path, char *const argv[], char *const envp[], int flags)
{
    char full[PL_PATH];
    const char *p = path;
    if ((flags & AT_EMPTY_PATH) && p && !*p) p = "."; /* the file is dirfd itself */
    int cut = pl_abspath(dirfd, p, full, sizeof full) != 0;
    int by_fd = p != path;
    START(dirfd, by_fd ? "" : path, .api = PRELOAD_API_EXECVEAT, .how = BY_AT, .fd = dirfd, .by_fd = by_fd,
          .file = path, .path = full, .cut = cut, .argv = argv, .envp = envp, .flags = flags);
}

PL_EXPORT int fexecve(int fd, char *const argv[], char *const envp[])
{
    char full[PL_PATH];
    int cut = pl_abspath(fd, ".", full, sizeof full) != 0;
    START(fd, "", .api = PRELOAD_API_FEXECVE, .how = BY_FD, .fd = fd, .by_fd = 1, .path = full, .cut = cut,
          .argv = argv, .envp = envp);
}

PL_EXPORT int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                          const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    START(AT_FDCWD, path, .api = PRELOAD_API_POSIX_SPAWN, .how = SPAWN, .fd = -1, .file = path, .path = path,
          .argv = argv, .envp = envp, .pid = pid, .fa = fa, .attr = attr);
}

PL_EXPORT int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
                           const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    char full[PL_PATH];
    int cut = 0;
    const char *path = SEARCHED(file, full, cut);
    START(AT_FDCWD, FOUND(path), .api = PRELOAD_API_POSIX_SPAWNP, .how = SPAWNP, .fd = -1, .file = file,
          .path = path, .cut = cut, .argv = argv, .envp = envp, .pid = pid, .fa = fa, .attr = attr);
}

/* system() and popen() start sh with the process's own environment, through libc's own spawn that
 * no hook sees. When that environment lost the hook, the shell runs without it: putting it back
 * would undo the program's own choice for good and reallocate environ under threads reading it.
 * The attempt's record is followed by one that says the hook was removed. */
static void shell(unsigned api, unsigned phase, char *const argv[])
{
    int err = errno;
    if (pl_enter()) {
        send_exec(api, phase, phase == PRELOAD_EXEC_FAILED ? -err : 0, -1, "/bin/sh", 0, argv, 0);
        struct fix f = {0};
        if (phase == PRELOAD_EXEC_ATTEMPT) check_env(environ, PRELOAD_ELF_UNKNOWN, &f);
        if (f.removed) send_removed("/bin/sh", argv);
        pl_leave();
    }
    errno = err;
}

PL_EXPORT int system(const char *cmd)
{
    char *argv[] = {"sh", "-c", (char *)cmd, NULL};
    if (cmd) shell(PRELOAD_API_SYSTEM, PRELOAD_EXEC_ATTEMPT, argv);
    int r = REAL(system)(cmd);
    if (cmd && r == -1) shell(PRELOAD_API_SYSTEM, PRELOAD_EXEC_FAILED, argv);
    return r;
}

PL_EXPORT FILE *popen(const char *cmd, const char *type)
{
    char *argv[] = {"sh", "-c", (char *)cmd, NULL};
    shell(PRELOAD_API_POPEN, PRELOAD_EXEC_ATTEMPT, argv);
    FILE *f = REAL(popen)(cmd, type);
    if (!f) shell(PRELOAD_API_POPEN, PRELOAD_EXEC_FAILED, argv);
    return f;
}
