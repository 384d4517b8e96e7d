/* serve.c: `preload-trace serve`, the tracer. It seizes the processes that ask (the launcher, on
 * their own behalf only), follows their descendants (fork, vfork, clone, exec) and turns stops
 * into records. Requests arrive on a thread of their own; every ptrace call is made by the main
 * thread, which blocks in waitpid and is woken by a signal when a request waits.
 *
 * Supervisor duties under ptrace: a signal for a tracee is delivered as it was sent; a group-stop
 * is left in place with PTRACE_LISTEN (no phantom stop, no hang); exec from a non-leader thread
 * takes over the leader's pid. PTRACE_O_EXITKILL: should the tracer die, its tracees die with it
 * instead of running on with a filter whose RET_TRACE would then mean ENOSYS. */
#include "trace.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define OPTIONS (PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACESECCOMP | PTRACE_O_TRACEFORK | \
                 PTRACE_O_TRACEVFORK | PTRACE_O_TRACECLONE | PTRACE_O_TRACEEXEC | PTRACE_O_EXITKILL)
#define BUCKETS 4096
#define PENDING_MAX 64

static struct task *tasks[BUCKETS];
static unsigned ntasks;
static unsigned profile = PROFILE_DEFAULT;

/* ---- tasks ---- */

struct refproc {
    struct proc p;
    int refs;
};

static struct task *find(pid_t tid)
{
    for (struct task *t = tasks[(unsigned)tid % BUCKETS]; t; t = t->next)
        if (t->tid == tid) return t;
    return NULL;
}

static struct proc *proc_new(pid_t tgid, pid_t ppid)
{
    struct refproc *rp = calloc(1, sizeof *rp);
    if (!rp) return NULL;
    rp->p.tgid = tgid;
    rp->p.ppid = ppid;
    rp->p.stream = pl_stream_id(tgid);
    rp->p.pidfd = -1;
    return &rp->p;
}

static void proc_unref(struct proc *p)
{
    struct refproc *rp = (struct refproc *)p;
    if (--rp->refs > 0) return;
    if (p->pidfd >= 0) close(p->pidfd);
    free(p->seen);
    free(rp);
}

static struct task *task_new(pid_t tid, struct proc *p)
{
    struct task *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->tid = tid;
    t->proc = p;
    t->await = -1;
    ((struct refproc *)p)->refs++;
    unsigned b = (unsigned)tid % BUCKETS;
    t->next = tasks[b];
    tasks[b] = t;
    ntasks++;
    return t;
}

static void task_remove(struct task *t)
{
    for (struct task **pp = &tasks[(unsigned)t->tid % BUCKETS]; *pp; pp = &(*pp)->next) {
        if (*pp == t) {
            *pp = t->next;
            break;
        }
    }
    ntasks--;
    proc_unref(t->proc);
    free(t->argv);
    free(t);
}

/* Children announced by their parent's fork event before their first stop: who their parent is,
 * so that the first stop needs no look at /proc. A bounded ring: a stale hint is only overwritten. */
#define HINTS 64
static struct {
    pid_t tid;
    struct proc from; /* the parent's process: ppid and credentials to inherit */
} hints[HINTS];
static unsigned next_hint;

/* A task at its first stop (or one we lost track of): a new process, or a thread of a known one. */
static struct task *adopt(pid_t tid)
{
    for (unsigned i = 0; i < HINTS; i++) {
        if (hints[i].tid != tid) continue;
        hints[i].tid = 0;
        struct proc *p = proc_new(tid, hints[i].from.tgid);
        if (!p) return NULL;
        p->uid = hints[i].from.uid, p->euid = hints[i].from.euid;
        p->gid = hints[i].from.gid, p->egid = hints[i].from.egid;
        p->image = hints[i].from.image;
        return task_new(tid, p);
    }
    struct proc st = {0};
    pid_t tgid = tid;
    pl_task_status(tid, &tgid, &st);
    struct task *leader = tgid != tid ? find(tgid) : NULL;
    struct proc *p = leader ? leader->proc : proc_new(tgid, st.ppid);
    if (!p) return NULL;
    if (!leader) {
        p->uid = st.uid, p->euid = st.euid, p->gid = st.gid, p->egid = st.egid;
        /* a fork whose first stop came before its creator's event (or one made by clone, which
         * leaves no hint): not yet run, it runs its creator's program; unreadable, it stays unknown
         * and its calls of another ABI are refused */
        int foreign = pl_foreign_program(tgid);
        p->image = foreign > 0 ? IMAGE_FOREIGN : foreign == 0 ? IMAGE_NATIVE : IMAGE_UNKNOWN;
    }
    return task_new(tid, p);
}

/* The parent's side of fork and vfork. Only a hint: the child is registered at its own first
 * stop, which may come before this event or after, or never (killed at once). */
static void child_born(struct task *parent, pid_t child, int event)
{
    if (!parent || event == PTRACE_EVENT_CLONE || find(child)) return; /* threads: /proc says */
    hints[next_hint].tid = child;
    hints[next_hint].from = *parent->proc;
    next_hint = (next_hint + 1) % HINTS;
}

static void task_gone(struct task *t)
{
    if (t->tid == t->proc->tgid) out_end(t->proc); /* the leader goes last: the process is gone */
    task_remove(t);
}

static void forget_all(void)
{
    for (unsigned b = 0; b < BUCKETS; b++)
        while (tasks[b]) task_gone(tasks[b]);
}

/* ---- requests ---- */

struct pending {
    int fd;
    pid_t pid;
    struct trace_req req;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct pending pending[PENDING_MAX];
static int npending;
static volatile sig_atomic_t done;
static pid_t main_tid;
static int listen_fd = -1, control_fd = -1;

static void wake(void) { syscall(SYS_tgkill, getpid(), main_tid, SIGUSR1); }

static void on_wake(int sig) { (void)sig; }
static void on_term(int sig) { (void)sig; done = 1; }

static void *acceptor(void *arg)
{
    (void)arg;
    struct pollfd p[2] = {{listen_fd, POLLIN, 0}, {control_fd, POLLIN, 0}};
    for (;;) {
        int n = poll(p, 2, 20);
        if (n > 0 && p[1].revents) { /* end of file: the supervisor is finishing */
            done = 1;
            p[1].fd = -1;
        }
        if (n > 0 && (p[0].revents & POLLIN)) {
            int c = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
            struct ucred cred;
            socklen_t len = sizeof cred;
            struct timeval tv = {1, 0};
            struct pending q = {.fd = c};
            if (c >= 0 && setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0 &&
                getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && cred.pid > 0 &&
                recv(c, &q.req, sizeof q.req, 0) == (ssize_t)sizeof q.req && q.req.magic == TRACE_MAGIC) {
                q.pid = cred.pid;
                pthread_mutex_lock(&mu);
                if (npending < PENDING_MAX) {
                    pending[npending++] = q;
                    c = -1;
                }
                pthread_mutex_unlock(&mu);
            }
            if (c >= 0) close(c); /* malformed, or too many at once: the launcher reports itself blind */
        }
        pthread_mutex_lock(&mu);
        int waiting = npending;
        pthread_mutex_unlock(&mu);
        /* again and again while work waits: a wakeup that came just before waitpid was lost */
        if (waiting || done || out_pending()) wake();
    }
    return NULL;
}

/* The thread asking must be the caller's own: nobody gets another process traced. */
static int serve_one(struct pending *q)
{
    char path[64];
    pid_t tid = q->req.tid;
    snprintf(path, sizeof path, "/proc/%d/task/%d", q->pid, tid);
    if (tid <= 0 || access(path, F_OK) != 0) return EPERM;
    struct task *t = find(tid);
    if (!t) {
        if (ptrace(PTRACE_SEIZE, tid, 0, OPTIONS) != 0) return errno;
        struct proc st = {0};
        pid_t tgid = q->pid;
        pl_task_status(q->pid, &tgid, &st);
        struct proc *p = proc_new(q->pid, st.ppid);
        if (!p || !(t = task_new(tid, p))) return ENOMEM;
        p->uid = st.uid, p->euid = st.euid, p->gid = st.gid, p->egid = st.egid;
    }
    t->handoff = (q->req.flags & REQ_HANDOFF) != 0;
    return 0;
}

static void serve_requests(void)
{
    struct pending batch[PENDING_MAX];
    pthread_mutex_lock(&mu);
    int n = npending;
    memcpy(batch, pending, sizeof batch[0] * (size_t)n);
    npending = 0;
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < n; i++) {
        struct trace_reply rep = {serve_one(&batch[i]), profile};
        send(batch[i].fd, &rep, sizeof rep, MSG_NOSIGNAL);
        close(batch[i].fd);
    }
}

/* ---- stops ---- */

static void resume(pid_t pid, int sig) { ptrace(PTRACE_CONT, pid, 0, (long)sig); }

static void handle(pid_t pid, int st)
{
    struct task *t = find(pid);
    if (WIFEXITED(st) || WIFSIGNALED(st)) {
        if (t) task_gone(t);
        return;
    }
    if (!WIFSTOPPED(st)) return;
    if (!t) t = adopt(pid);
    int sig = WSTOPSIG(st), event = (unsigned)st >> 16;
    struct __ptrace_syscall_info info;
    unsigned long msg = 0;
    switch (event) {
    case PTRACE_EVENT_SECCOMP:
        if (t && ptrace(PTRACE_GET_SYSCALL_INFO, pid, sizeof info, &info) > 0) calls_entry(t, &info);
        else resume(pid, 0);
        return;
    case PTRACE_EVENT_EXEC:
        ptrace(PTRACE_GETEVENTMSG, pid, 0, &msg);
        if ((pid_t)msg != pid) { /* a non-leader thread exec'd: it has taken the leader's pid */
            struct task *former = find((pid_t)msg);
            if (former && t) { /* what it kept for the start record */
                free(t->argv);
                t->argv = former->argv, t->argv_len = former->argv_len, t->argc = former->argc;
                former->argv = NULL;
            }
            if (former) task_remove(former);
        }
        if (t) calls_exec(t);
        resume(pid, 0);
        return;
    case PTRACE_EVENT_FORK:
    case PTRACE_EVENT_VFORK:
    case PTRACE_EVENT_CLONE:
        if (ptrace(PTRACE_GETEVENTMSG, pid, 0, &msg) == 0) child_born(t, (pid_t)msg, event);
        resume(pid, 0);
        return;
    case PTRACE_EVENT_STOP:
        if (sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU)
            ptrace(PTRACE_LISTEN, pid, 0, 0); /* a group-stop: stay stopped until SIGCONT */
        else
            resume(pid, 0); /* a new task's first stop, or the end of a group-stop */
        return;
    case 0:
        if (sig == (SIGTRAP | 0x80)) {
            if (t && ptrace(PTRACE_GET_SYSCALL_INFO, pid, sizeof info, &info) > 0) calls_exit(t, &info);
            resume(pid, 0);
        } else {
            resume(pid, sig); /* the signal goes on to the program, as sent */
        }
        return;
    default:
        resume(pid, 0);
    }
}

static int arg_int(int argc, char **argv, const char *name, int dflt)
{
    for (int i = 2; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0) return atoi(argv[i + 1]);
    return dflt;
}

static const char *arg_str(int argc, char **argv, const char *name)
{
    for (int i = 2; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0) return argv[i + 1];
    return NULL;
}

int pl_serve(int argc, char **argv)
{
    listen_fd = arg_int(argc, argv, "--listen-fd", -1);
    control_fd = arg_int(argc, argv, "--control-fd", -1);
    const char *sock = arg_str(argc, argv, "--socket"), *prof = arg_str(argc, argv, "--profile");
    if (listen_fd < 0 || !sock) {
        fprintf(stderr, "usage: preload-trace serve --listen-fd N --socket DAEMON_SOCKET "
                        "[--control-fd N] [--profile default|full]\n");
        return 2;
    }
    profile = prof && strcmp(prof, "full") == 0 ? PROFILE_FULL : PROFILE_DEFAULT;
    out_init(sock);
    main_tid = (pid_t)syscall(SYS_gettid);

    struct sigaction sa = {0};
    sa.sa_handler = on_wake; /* no SA_RESTART: it is what interrupts waitpid */
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, SIG_IGN); /* a terminal's ^C is for the application */
    signal(SIGQUIT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &block, &old); /* the acceptor thread never takes the wakeups */
    pthread_t th;
    if (pthread_create(&th, NULL, acceptor, NULL) != 0) return 1;
    pthread_sigmask(SIG_SETMASK, &old, NULL);

    for (;;) {
        serve_requests();
        int st;
        pid_t pid = waitpid(-1, &st, __WALL | WNOHANG);
        if (pid <= 0) { /* nothing to do right now: the records of this round go, in one call */
            int none = pid < 0 && errno == ECHILD;
            if (none) forget_all(); /* the kernel has no tracee for us: the table's are gone */
            if (none || done || out_due()) out_flush();
            if (none && done) break;
            if (none) {
                pause(); /* nothing traced: until a request, or the end */
                continue;
            }
            pid = waitpid(-1, &st, __WALL);
        }
        if (pid > 0) handle(pid, st);
    }
    for (int i = 0; i < 100 && out_pending(); i++) { /* the last records: give the daemon 1 s */
        usleep(10000);
        out_flush();
    }
    return 0;
}
