/* hook.h: what the hook families share. Include first in every hook file.
 *
 * Each family file has the same shape: resolve the real function, call it, record what happened
 * (the caller's errno restored), return the real result. Only the hooks are exported
 * (-fvisibility=hidden for the rest). */
#ifndef PRELOAD_HOOK_H
#define PRELOAD_HOOK_H

/* The hooks define open() and friends; fortified inline wrappers would clash with them. */
#undef _FORTIFY_SOURCE
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <spawn.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "../common.h"

#define PL_EXPORT __attribute__((visibility("default")))

/* Hooks run on the application's stack: a small thread's, or a signal handler's alternate stack of
 * SIGSTKSZ bytes, much of which the kernel's signal frame already takes. Records are built in
 * stack buffers of this size at most; longer paths and command lines are cut and flagged. */
#define PL_BUF 2048
#define PL_UNLIKELY(x) __builtin_expect(!!(x), 0)

void *pl_dlsym(const char *name);

/* The real function behind a hook, resolved on first use: hooks can run before our constructor. */
#define REAL(fn)                                                                 \
    ({                                                                           \
        static __typeof__(fn) *real_;                                            \
        __typeof__(fn) *r_ = __atomic_load_n(&real_, __ATOMIC_RELAXED);          \
        if (PL_UNLIKELY(!r_)) {                                                  \
            r_ = (__typeof__(fn) *)pl_dlsym(#fn);                                \
            __atomic_store_n(&real_, r_, __ATOMIC_RELAXED);                      \
        }                                                                        \
        r_;                                                                      \
    })

/* Re-entrancy: libc may call a hooked function from inside another; record only the outer call. */
extern __thread int pl_depth __attribute__((tls_model("initial-exec")));
extern int pl_enabled;

static inline int pl_enter(void)
{
    if (!pl_enabled || pl_depth) return 0;
    pl_depth++;
    return 1;
}

static inline void pl_leave(void) { pl_depth--; }

/* Stamps the header (pid, seq, time) and sends; never blocks; a refused record is counted. */
void pl_rec_send(struct pl_rec *r);

/* Resolves path against dirfd (AT_FDCWD: the cwd) into out, lexically normalised.
 * Returns 0, or -1 when it could not or had to cut it (out then holds what it could). */
int pl_abspath(int dirfd, const char *path, char *out, size_t cap);

/* The calling process, from the kernel (the cached pid is stale only in a vfork child). */
pid_t pl_self(void);
/* Whether this runs in a vfork child: a system call only after this thread called vfork. */
int pl_in_vfork_child(void);

/* Sends aggregated counts (before exec and at exit). */
void pl_flush_counts(void);
/* After fork: the child starts with an empty table (cleared lazily). */
void pl_table_forget(void);
/* After fork: the child records its own first executable mappings (code.c). */
void pl_exec_memory_forget(void);

/* Called by the fd hooks: the application is closing or replacing fd. */
void pl_fd_lost(int fd);
void pl_fd_range_lost(unsigned first, unsigned last);
/* The channel's fd while it is still ours, else -1 (an exec into a program without the hook sets it
 * close-on-exec). */
int pl_chan_fd(void);
/* fd is the channel, still ours (the fd hooks hide it from the application). */
int pl_is_channel(int fd);

/* The file behind fd, from the kernel (symlinks and .. resolved); -1, and out untouched, when it
 * has no path. */
int pl_fdpath(int fd, char *out, size_t cap);
/* What /proc/self/fd/FD links to: a path, or "pipe:[…]", "net:[…]"…; -1 without it. */
int pl_fdname(int fd, char *out, size_t cap);

/* The mapping that holds addr, from /proc/self/maps: its path into out, cut to cap ("" or a
 * "[name]" for anonymous memory; out also holds the lines read, so cap must exceed a line's first
 * 80 bytes). 0, or -1 when no mapping holds addr. */
int pl_mapping_at(uintptr_t addr, char *out, size_t cap);

/* Mixed trees (route.c): programs the hook cannot enter are started through the tracer's launcher.
 * pl_exec_traced returns only on failure; fd >= 0 means the program is that fd (fexecve).
 * pl_route_kind: preload_elf_kind of what an exec runs (a script's interpreter), errno kept.
 * pl_hook_for: "LD_PRELOAD=<the hook's build for a program of that kind>", NULL when not built.
 * pl_env_socket, pl_env_trace: "NAME=value" of the hook's variables at start ("" when unset);
 * pl_injected: LD_PRELOAD named this library at start (not only /etc/ld.so.preload). */
extern char pl_env_socket[], pl_env_trace[];
extern int pl_injected;
void pl_route_init(void);
int pl_route_kind(int dirfd, const char *path);
int pl_elf_kind(int dirfd, const char *path, char *interp, size_t cap, int find_go); /* elfkind.c */
int pl_route_traced(int kind);
const char *pl_hook_for(int kind);
int pl_names(const char *list, const char *lib);
int pl_is_hook(const char *name, size_t n);
int pl_in_ld_so_preload(void);
int pl_exec_traced(int fd, const char *path, char *const argv[], char *const envp[]);
int pl_spawn_traced(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                    const posix_spawnattr_t *attr, char *const argv[], char *const envp[]);

/* CALL records (call.c): a call that has returned, res its result (negative: failed with errno),
 * args its raw arguments (PL_ARGS; NULL for none). spec names the strings, each taking arguments:
 * 'p' a path (int dirfd, const char *path) made absolute, 'f' the file behind an fd (int), 's' a
 * string as given (const char *). errno is kept. */
#define PL_ARGS(...) ((const int64_t[6]){__VA_ARGS__})
void pl_call(unsigned api, long res, const int64_t *args, const char *spec, ...);
/* Calls that are also made through syscall(): capset (priv.c); dup onto fd 0, 1 or 2 (net.c). */
void pl_capset_record(long res, const void *header, const void *data);
void pl_dup_record(unsigned api, int oldfd, int newfd);
/* After a dup2 or dup3 (api) that returned r, through libc or syscall() (fd.c): the channel forgets
 * a replaced fd, and a socket put on fd 0, 1 or 2 is recorded. */
void pl_dup_done(unsigned api, int oldfd, int newfd, long r);

/* Aggregation. pl_repeat: 1 when this open (path, result, access mode) repeats one already
 * recorded, and was counted; else 0 with *hash set (0 when the open is always recorded).
 * pl_remember: after recording, 1 when later repeats of hash will be counted. */
int pl_repeat(const char *abspath, int res, int mode, int always, uint64_t *hash);
int pl_remember(uint64_t hash);

#endif
