/* trace.h: the tracer, for programs that bypass libc (static, Go).
 *
 * One executable, two roles:
 *   preload-trace serve ...   the tracer: seizes processes that ask for it, follows their whole tree
 *                             and sends the same records as the hook, with source PTRACE.
 *   preload-trace exec ...    the launcher: runs in place of a static program, asks the tracer to
 *                             seize it, installs the seccomp filter and execs the program (same pid).
 * A seccomp filter returns SECCOMP_RET_TRACE only for the watched calls: everything else runs at
 * full speed, and each watched call costs one stop at entry and, where its result matters, one at
 * exit. */
#ifndef PRELOAD_TRACE_H
#define PRELOAD_TRACE_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <limits.h>
#include <stdint.h>
#include <sys/types.h>

#include "../common.h"

/* what a watched call is */
enum call_kind { K_EXEC = 1, K_OPEN, K_NET, K_CALL };

struct call {
    int nr;
    uint16_t api;
    uint8_t kind;
    int8_t flags_arg; /* opens: which argument holds the flags (the filter looks at it), else -1 */
};

extern const struct call pl_calls[];
extern const unsigned pl_ncalls;

/* seccomp return data: index+1 into pl_calls, or this for a call of another ABI */
#define DATA_FOREIGN 0xffff

enum profile { PROFILE_DEFAULT = 0, PROFILE_FULL = 1 };

/* The filter for a profile, in a static buffer; *len instructions. */
struct sock_fprog;
int pl_filter(enum profile p, struct sock_fprog *prog);

/* request on the tracer's socket: "seize me (this thread) before I exec" */
#define TRACE_MAGIC 0x50525431u /* "1TRP" */
struct trace_req {
    uint32_t magic;
    int32_t tid;
    uint32_t flags; /* REQ_HANDOFF: the launcher's exec is recorded by the hook already */
};
#define REQ_HANDOFF 1
struct trace_reply {
    int32_t err;     /* 0, or errno: the seize failed */
    uint32_t profile; /* the filter to install */
};

/* one process image being traced */
struct proc {
    pid_t tgid, ppid;
    uint32_t uid, euid, gid, egid; /* kept up to date: read at attach, inherited, re-read after set*id */
    uint64_t stream;
    uint32_t seq;
    int pidfd;
    struct seen *seen; /* repeated opens, counted instead of stopped for (lazily allocated) */
    uint64_t unsent;   /* repeats not yet sent as COUNTS */
    int image;         /* IMAGE_*: whether its program is of another word size (found at exec,
                        * reported blind then, and inherited by its forks) */
};

/* an open's arguments, as read at its entry stop */
struct open_args {
    int dirfd, flags;
    unsigned mode;
    uint64_t path;
};

enum { IMAGE_UNKNOWN, IMAGE_NATIVE, IMAGE_FOREIGN };

/* one thread */
struct task {
    pid_t tid;
    struct proc *proc;
    int await;           /* index into pl_calls of the call whose exit we wait for, or -1 */
    int handoff;         /* the next execve is the launcher's: the hook recorded it */
    uint64_t args[6];
    uint64_t key;        /* opens: the entry's repeat key */
    struct open_args open; /* opens: read at entry, used at exit */
    int open_ok;
    char *argv;          /* execve: the new image's argv, NUL-separated, for its start record */
    size_t argv_len;
    uint32_t argc;
    char path[PATH_MAX]; /* opens: the path as the program gave it */
    struct task *next;
};

/* tracee.c: reading the tracee */
ssize_t pl_peek(pid_t pid, uint64_t addr, void *out, size_t len);
/* A NUL-terminated string (cut to cap-1); returns its length or -1. */
ssize_t pl_peek_str(pid_t pid, uint64_t addr, char *out, size_t cap);
/* Resolves path (relative to dirfd of the tracee, or its cwd) into out, normalised. */
void pl_tracee_abspath(pid_t pid, int dirfd, const char *path, char *out, size_t cap);
/* readlink of /proc/PID/WHAT (exe, cwd, fd/N) into out; -1 when there is none. */
int pl_tracee_link(pid_t pid, const char *what, char *out, size_t cap);
/* The file behind the tracee's fd; -1 when it has none. */
int pl_tracee_fdpath(pid_t pid, int fd, char *out, size_t cap);
/* Tgid, PPid and credentials of a task, from /proc; 0 on success. */
int pl_task_status(pid_t tid, pid_t *tgid, struct proc *creds_and_ppid);
/* A copy of the tracee's fd in this process (pidfd_getfd), or -1. */
int pl_tracee_fd(struct proc *p, int fd);

/* out.c: the channel to the daemon */
void out_init(const char *socket_path);
void out_send(struct proc *p, struct pl_rec *r);
void out_flush(void);
int out_pending(void);
int out_due(void);
void out_end(struct proc *p); /* COUNTS still due, then END: the stream is closed */

/* calls.c: what a stop means */
void calls_entry(struct task *t, const void *info);   /* at a seccomp stop; resumes the task */
void calls_exit(struct task *t, const void *info);    /* at the exit stop of a watched call */
void calls_exec(struct task *t);                      /* the task's process has a new image */
int pl_foreign_program(pid_t pid);                    /* see calls.c */
void calls_flush_counts(struct proc *p);
uint64_t pl_stream_id(pid_t pid);

/* launch.c, serve.c */
int pl_launch(int argc, char **argv);
int pl_serve(int argc, char **argv);

#endif
