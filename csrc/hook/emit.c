/* emit.c: the channel to the daemon and the life of a process image (start, fork, exit).
 *
 * One SOCK_SEQPACKET connection, non-blocking: a record the kernel will not take right now is
 * counted as failed, never waited for. The connection is inherited across fork and exec, so a new
 * process image reuses its parent's instead of paying for a connect (and the daemon for an
 * accept) each time a shell runs a command. Each record carries (stream, seq); a gap in seq
 * is a lost record, so loss stays visible even when the daemon dies with records queued to it.
 * Nothing here writes to the application's fds or changes its errno. */
#include "hook.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

__attribute__((used)) static const char pl_version_stamp[] = "preload-wire-version=1";
_Static_assert(PRELOAD_WIRE_VERSION == 1, "update pl_version_stamp");

#define PL_FD_BASE 63 /* above the fds programs expect, still inside the kernel's first fd table;
                       * also where a new image looks for the connection it inherited */

__thread int pl_depth __attribute__((tls_model("initial-exec")));
int pl_enabled;

static struct sockaddr_un pl_addr;
static socklen_t pl_addrlen;
static char pl_spooldir[sizeof pl_addr.sun_path + 8]; /* beside the socket */
static int pl_fd = -1;
static ino_t pl_ino;
static uid_t pl_daemon_uid = (uid_t)-1; /* the daemon's, when found through the link: checked */
static pid_t pl_pid, pl_ppid;
static uint64_t pl_stream;
static uint32_t pl_seq, pl_failed;
static int pl_argc;
static char **pl_argv;

/* A libc without the function (musl has no closefrom, close_range, execveat; an older glibc than
 * the build's may lack some): only a program probing for the name finds our hook, and its call
 * fails with ENOSYS instead of the hook calling itself forever. */
static long pl_enosys(void)
{
    errno = ENOSYS;
    return -1;
}

void *pl_dlsym(const char *name)
{
    void *p = dlsym(RTLD_NEXT, name);
    return p ? p : (void *)pl_enosys;
}

/* Our own fd work goes straight to the kernel: never through a hook, ours or another preload's. */
static long sys_close(int fd) { return syscall(SYS_close, fd); }
static long sys_fstat(int fd, struct stat *st) { return syscall(SYS_fstat, fd, st); }

pid_t pl_self(void) { return (pid_t)syscall(SYS_getpid); }

/* vfork's child shares our memory, this thread's TLS included, and runs until it execs or exits
 * while we wait. The kernel is asked who we are only after this thread called vfork (our vfork below
 * notes it), not at every hooked call: the parent, back, forgets the note at its next one. */
static __thread int vforked __attribute__((tls_model("initial-exec")));

int pl_in_vfork_child(void)
{
#if defined(__x86_64__) || defined(__aarch64__)
    if (!PL_UNLIKELY(vforked)) return 0;
#endif
    if (pl_self() != pl_pid) return 1;
    vforked = 0;
    return 0;
}

/* Our vfork notes the call, then jumps to libc's with the caller's frame as it found it: a C
 * function could not return twice through its own frame, once in the child and once in the parent. */
__attribute__((visibility("hidden"), used)) void *pl_vfork_prepare(void)
{
    int err = errno;
    void *real = REAL(vfork);
    vforked = 1;
    errno = err;
    return real;
}

#if defined(__x86_64__) || defined(__aarch64__)
PL_EXPORT pid_t vfork(void); /* defined below, in assembly */
#endif
#if defined(__x86_64__)
__asm__(".text\n"
        ".globl vfork\n"
        ".type vfork, @function\n"
        "vfork:\n"
        "    subq $8, %rsp\n" /* the call below needs the stack 16-aligned */
        "    call pl_vfork_prepare\n"
        "    addq $8, %rsp\n"
        "    jmp *%rax\n"
        ".size vfork, .-vfork\n");
#elif defined(__aarch64__)
__asm__(".text\n"
        ".globl vfork\n"
        ".type vfork, %function\n"
        ".p2align 2\n"
        "vfork:\n"
        "    stp x29, x30, [sp, #-16]!\n"
        "    mov x29, sp\n"
        "    bl pl_vfork_prepare\n"
        "    mov x16, x0\n"
        "    ldp x29, x30, [sp], #16\n"
        "    br x16\n"
        ".size vfork, .-vfork\n");
#endif

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 33);
}

static uint64_t new_stream(pid_t pid)
{
    uint64_t r = 0;
    const void *rnd = (const void *)getauxval(AT_RANDOM); /* fresh per exec, from the kernel */
    if (rnd) memcpy(&r, rnd, sizeof r);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return mix64(r ^ ((uint64_t)pid << 32) ^ (uint64_t)ts.tv_nsec) | 1;
}

/* ---- channel ---- */

/* A daemon found through the link must run as the link's owner (chan_peer_ok): another user could
 * have bound a socket of its own at the link's target. */
static int chan_peer_ok(int s)
{
    struct ucred cred;
    socklen_t len = sizeof cred;
    return pl_daemon_uid == (uid_t)-1 ||
           (getsockopt(s, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && cred.uid == pl_daemon_uid);
}

/* A new connection to the daemon, or -1. *high tells whether it could move above the fds programs
 * expect (PL_FD_BASE); when RLIMIT_NOFILE is lower it sits among them and must not be kept. */
static int chan_open(int *high)
{
    /* not close-on-exec: the images this process execs inherit the channel (chan_inherited) */
    int s = (int)syscall(SYS_socket, AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK, 0);
    if (s < 0) return -1;
    if (syscall(SYS_connect, s, (struct sockaddr *)&pl_addr, pl_addrlen) != 0 || !chan_peer_ok(s)) {
        sys_close(s);
        return -1;
    }
    /* room for a burst (a loop opening a thousand files for writing) while the daemon catches up;
     * the kernel caps it at net.core.wmem_max and charges only what is queued */
    int sndbuf = 4 << 20;
    syscall(SYS_setsockopt, s, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    int hi = (int)syscall(SYS_fcntl, s, F_DUPFD, PL_FD_BASE);
    *high = hi >= 0;
    if (hi >= 0) {
        sys_close(s);
        s = hi;
    }
    return s;
}

/* A channel for this process to keep, or to use once when the fd limit leaves no room above the
 * program's own fds; -1 when there is none now. One connector at a time, so that the fd and its
 * identity are published together: a thread (or a signal handler) arriving meanwhile does not
 * wait, its record is counted as refused. */
static int chan_connect(int *keep)
{
    static int connecting;
    int idle = 0;
    if (!__atomic_compare_exchange_n(&connecting, &idle, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        return -1;
    int fd = __atomic_load_n(&pl_fd, __ATOMIC_ACQUIRE);
    *keep = 1;
    if (fd < 0 && (fd = chan_open(keep)) >= 0 && *keep) {
        struct stat st;
        pl_ino = sys_fstat(fd, &st) == 0 ? st.st_ino : 0;
        __atomic_store_n(&pl_fd, fd, __ATOMIC_RELEASE);
    }
    __atomic_store_n(&connecting, 0, __ATOMIC_RELEASE);
    return fd;
}

/* Our fd is still ours: the application may have closed it behind libc's back and reused the
 * number; a record must never land in one of the application's own files or sockets. */
static int chan_valid(int fd)
{
    struct stat st;
    return sys_fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_ino == pl_ino;
}

int pl_chan_fd(void)
{
    int fd = __atomic_load_n(&pl_fd, __ATOMIC_ACQUIRE);
    return fd >= 0 && chan_valid(fd) ? fd : -1;
}

int pl_is_channel(int fd)
{
    return PL_UNLIKELY(fd >= 0 && fd == __atomic_load_n(&pl_fd, __ATOMIC_ACQUIRE)) && chan_valid(fd);
}

static int sent(int fd, const void *buf, size_t len)
{
    return send(fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL) == (ssize_t)len;
}

/* The connection this image inherited from the one that exec'd it: fd PL_FD_BASE when it is a
 * SEQPACKET socket connected to our daemon's path (never some other fd the program was given). */
static int chan_inherited(void)
{
    struct stat st;
    int type = 0;
    socklen_t len = sizeof type;
    struct sockaddr_un peer;
    socklen_t plen = sizeof peer;
    if (sys_fstat(PL_FD_BASE, &st) != 0 || !S_ISSOCK(st.st_mode) ||
        getsockopt(PL_FD_BASE, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_SEQPACKET ||
        getpeername(PL_FD_BASE, (struct sockaddr *)&peer, &plen) != 0 || plen != pl_addrlen ||
        memcmp(&peer, &pl_addr, plen) != 0 || !chan_peer_ok(PL_FD_BASE))
        return -1;
    pl_ino = st.st_ino;
    return PL_FD_BASE;
}

/* One record on connection fd, closed at once: for a vfork child, which must not touch our state,
 * and for a process whose fd limit leaves no room above its own fds. */
static int send_once(int fd, const void *buf, size_t len)
{
    if (fd < 0) return -1;
    int ok = sent(fd, buf, len);
    sys_close(fd);
    return ok ? 0 : -1;
}

static int chan_send(const void *buf, size_t len)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        int fd = __atomic_load_n(&pl_fd, __ATOMIC_ACQUIRE);
        if (fd < 0) {
            int keep;
            if ((fd = chan_connect(&keep)) < 0) return -1;
            if (!keep) return send_once(fd, buf, len);
        }
        if (!chan_valid(fd)) { /* the number is the application's now: forget it, never close it */
            __atomic_compare_exchange_n(&pl_fd, &fd, -1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
            continue;
        }
        if (sent(fd, buf, len)) return 0;
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) return -1; /* busy: never wait */
        /* errors only a socket gives: still ours, the daemon went away; reconnect once (a restarted
         * daemon listens). Any other (EBADF, ENOTSOCK): taken from us meanwhile, only forgotten. */
        int ours = errno == EPIPE || errno == ECONNRESET || errno == ECONNREFUSED || errno == ENOTCONN;
        if (__atomic_compare_exchange_n(&pl_fd, &fd, -1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE) && ours)
            sys_close(fd);
    }
    return -1;
}

/* A vfork child shares our memory but has its own fd table: it writes nothing shared and, when it
 * has closed our fd, sends on a connection of its own. */
static int chan_send_private(const void *buf, size_t len)
{
    int fd = __atomic_load_n(&pl_fd, __ATOMIC_ACQUIRE);
    if (fd >= 0 && chan_valid(fd) && sent(fd, buf, len)) return 0;
    int high;
    return send_once(chan_open(&high), buf, len);
}

void pl_fd_lost(int fd)
{
    if (fd >= 0 && fd == __atomic_load_n(&pl_fd, __ATOMIC_ACQUIRE) && !pl_in_vfork_child())
        __atomic_compare_exchange_n(&pl_fd, &fd, -1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

void pl_fd_range_lost(unsigned first, unsigned last)
{
    int fd = __atomic_load_n(&pl_fd, __ATOMIC_ACQUIRE);
    if (fd >= 0 && (unsigned)fd >= first && (unsigned)fd <= last) pl_fd_lost(fd);
}

/* ---- records ---- */

static void spool(pid_t pid, pid_t ppid, uint64_t stream, uint32_t seq, uint32_t failed);

static void rec_stamp(struct pl_rec *r, pid_t pid, pid_t ppid, uint64_t stream, uint32_t seq)
{
    struct preload_hdr *h = (struct preload_hdr *)r->buf;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    pl_rec_close(r);
    h->pid = pid;
    h->ppid = ppid;
    h->seq = seq;
    h->stream = stream;
    h->time_ns = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

void pl_rec_send(struct pl_rec *r)
{
    pid_t self = pl_pid;
    /* a vfork child (between vfork and exec or _exit) shares our memory but not our fds: any record
     * of its own, whatever the kind, must leave our channel and counters alone */
    if (PL_UNLIKELY(pl_in_vfork_child())) {
        pid_t pid = pl_self();
        uint64_t stream = new_stream(pid);
        rec_stamp(r, pid, self, stream, 1); /* a one-record stream of its own */
        if (chan_send_private(r->buf, r->len) != 0) spool(pid, self, stream, 1, 1);
        return;
    }
    rec_stamp(r, self, pl_ppid, pl_stream, __atomic_add_fetch(&pl_seq, 1, __ATOMIC_RELAXED));
    if (chan_send(r->buf, r->len) != 0) __atomic_add_fetch(&pl_failed, 1, __ATOMIC_RELAXED);
}

/* The stream's last word: its final seq, so that trailing losses show as a gap too. When even
 * this cannot be sent, a spool file tells the daemon later. */
static void send_end(void)
{
    struct preload_end e = {PRELOAD_END_EXIT, __atomic_load_n(&pl_failed, __ATOMIC_RELAXED)};
    char buf[sizeof(struct preload_hdr) + sizeof e];
    struct pl_rec r;
    pl_rec_begin(&r, buf, sizeof buf, PRELOAD_REC_END, PRELOAD_SRC_HOOK, &e, sizeof e);
    uint32_t seq = __atomic_add_fetch(&pl_seq, 1, __ATOMIC_RELAXED);
    rec_stamp(&r, pl_pid, pl_ppid, pl_stream, seq);
    if (chan_send(r.buf, r.len) != 0) spool(pl_pid, pl_ppid, pl_stream, seq, e.failed_sends + 1);
}

static void spool(pid_t pid, pid_t ppid, uint64_t stream, uint32_t seq, uint32_t failed)
{
    char path[sizeof pl_spooldir + 24], line[128];
    if (!pl_spooldir[0]) return;
    snprintf(path, sizeof path, "%s/%016llx", pl_spooldir, (unsigned long long)stream);
    int fd = (int)syscall(SYS_openat, AT_FDCWD, path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) return;
    int n = snprintf(line, sizeof line, "%d %d %016llx %u %u\n", (int)pid, (int)ppid,
                     (unsigned long long)stream, seq, failed);
    if (syscall(SYS_write, fd, line, (size_t)n) < 0) { /* nothing more we can do */ }
    sys_close(fd);
}

/* ---- life of the process image ---- */

/* The command line as the kernel keeps it (NUL-terminated strings), read in place after the record's
 * other strings: for a constructor that was given no argv (musl calls constructors without one).
 * Returns how many strings it added. */
static int cmdline(struct pl_rec *r)
{
    int fd = (int)syscall(SYS_openat, AT_FDCWD, "/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    int n = pl_rec_read_strings(r, fd);
    sys_close(fd);
    return n;
}

/* The program's file. /proc/self/exe names the loader when the loader was run as a program
 * (`ld-linux.so PROGRAM`, AT_BASE 0): the program is then the file its headers are mapped from. */
static void exe_path(char *out, size_t cap)
{
    if (PL_UNLIKELY(getauxval(AT_BASE) == 0) && getauxval(AT_PHDR) &&
        pl_mapping_at(getauxval(AT_PHDR), out, cap) == 0 && out[0] == '/')
        return;
    ssize_t n = readlink("/proc/self/exe", out, cap - 1);
    out[n > 0 ? n : 0] = 0;
}

static void send_start(void)
{
    /* the credentials the kernel gave this image, without a system call each */
    struct preload_start s = {
        .uid = (uint32_t)getauxval(AT_UID), .euid = (uint32_t)getauxval(AT_EUID),
        .gid = (uint32_t)getauxval(AT_GID), .egid = (uint32_t)getauxval(AT_EGID),
        .argc = 0, .attach = PRELOAD_SRC_HOOK,
    };
    char buf[8192];
    struct pl_rec r;
    int argc = pl_argv ? pl_argc : 0;
    pl_rec_begin(&r, buf, sizeof buf, PRELOAD_REC_START, PRELOAD_SRC_HOOK, &s, sizeof s);
    /* exe and cwd are written in place: no second buffer on the stack */
    exe_path(r.buf + r.len, PATH_MAX);
    pl_rec_adopt(&r);
    if (!getcwd(r.buf + r.len, PATH_MAX)) r.buf[r.len] = 0;
    pl_rec_adopt(&r);
    /* argc strings must follow; count only what fits so that the record stays well-formed */
    int kept = 0;
    for (; kept < argc && r.len < r.cap - 1; kept++) pl_rec_str(&r, pl_argv[kept]);
    if (kept < argc) r.truncated = 1;
    if (!pl_argv) kept = cmdline(&r);
    ((struct preload_start *)(buf + sizeof(struct preload_hdr)))->argc = (uint32_t)kept;
    pl_rec_send(&r);
}

static void after_fork_child(void)
{
    pl_pid = pl_self();
    pl_ppid = getppid();
    pl_stream = new_stream(pl_pid);
    pl_seq = 0;
    pl_failed = 0;
    pl_table_forget();
    pl_exec_memory_forget();
}

/* A process that `preload run` did not start (a `docker exec` session, loaded by /etc/ld.so.preload)
 * finds the daemon of its container through a link that the supervisor keeps in /dev/shm, named after
 * the pid namespace that they share: target the daemon's socket. Every user of the container can
 * write there, so the link counts only when root or our own euid made it (the sticky /dev/shm keeps
 * others from replacing it) and it names a socket of that same owner. Into out and *owner; 0, or -1
 * when there is none (no daemon: this process stays silent). */
static int well_known(char *out, size_t cap, uid_t *owner)
{
    struct stat ns, ln, target;
    char link[64];
    if (stat("/proc/self/ns/pid", &ns) != 0) return -1;
    snprintf(link, sizeof link, "/dev/shm/preload-%llu.sock", (unsigned long long)ns.st_ino);
    if (lstat(link, &ln) != 0 || !S_ISLNK(ln.st_mode) || (ln.st_uid != 0 && ln.st_uid != geteuid()))
        return -1;
    ssize_t n = readlink(link, out, cap - 1);
    if (n <= 0 || (size_t)n >= cap - 1 || out[0] != '/') return -1;
    out[n] = 0;
    if (stat(out, &target) != 0 || !S_ISSOCK(target.st_mode) || target.st_uid != ln.st_uid) return -1;
    *owner = ln.st_uid;
    return 0;
}

/* Whether a process that found the daemon through the link reports to it: not the daemon itself,
 * which holds its listening socket at PL_LISTEN_FD (something no other process can have), and only
 * when the daemon is there: else nothing more is tried (no delay, no spool file). */
#define PL_LISTEN_FD 62

static int reachable(void)
{
    struct sockaddr_un self;
    socklen_t len = sizeof self;
    int listening = 0;
    socklen_t olen = sizeof listening;
    if (getsockname(PL_LISTEN_FD, (struct sockaddr *)&self, &len) == 0 && len == pl_addrlen &&
        memcmp(&self, &pl_addr, len) == 0 &&
        getsockopt(PL_LISTEN_FD, SOL_SOCKET, SO_ACCEPTCONN, &listening, &olen) == 0 && listening)
        return 0;
    int keep, fd = chan_connect(&keep);
    if (fd >= 0 && !keep) sys_close(fd);
    return fd >= 0;
}

static int configure(int *by_link)
{
    char where[sizeof pl_addr.sun_path];
    /* NULL in a set-id program: its caller must not choose where its records (or spool notes) go */
    const char *sock = secure_getenv("PRELOAD_SOCKET");
    pl_route_init();
    if (!sock && !pl_injected && well_known(where, sizeof where, &pl_daemon_uid) == 0) {
        sock = where;
        *by_link = 1;
    }
    if (!sock || !*sock || strlen(sock) >= sizeof pl_addr.sun_path) return 0;
    pl_addr.sun_family = AF_UNIX;
    strcpy(pl_addr.sun_path, sock);
    pl_addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(sock) + 1);
    /* spool notes go only beside a socket we were given: a link's target is a place another chose */
    const char *slash = strrchr(sock, '/');
    if (!*by_link && slash && (size_t)(slash - sock) + sizeof "/spool" < sizeof pl_spooldir) {
        memcpy(pl_spooldir, sock, (size_t)(slash - sock));
        strcpy(pl_spooldir + (slash - sock), "/spool");
    }
    return 1;
}

/* glibc passes argc/argv/envp to ELF constructors; musl passes nothing (send_start reads the
 * command line from /proc then). */
__attribute__((constructor)) static void pl_init(int argc, char **argv, char **envp)
{
    (void)envp;
    int saved = errno;
    int by_link = 0;
    if (configure(&by_link)) {
#ifdef __GLIBC__
        pl_argc = argc;
        pl_argv = (argc > 0 && argv) ? argv : NULL;
#else
        (void)argc, (void)argv;
#endif
        pl_pid = pl_self();
        pl_ppid = getppid();
        pl_stream = new_stream(pl_pid);
        pl_fd = chan_inherited();
        if (pl_fd < 0 && by_link && !reachable()) {
            errno = saved;
            return;
        }
        pthread_atfork(NULL, NULL, after_fork_child);
        pl_depth++;
        send_start();
        pl_depth--;
        pl_enabled = 1;
    }
    errno = saved;
}

/* The stream's end, once: from exit()'s destructors or from _exit() (which dash, for one, always
 * uses). Not in a vfork child: its memory is its parent's. */
static void pl_finish(void)
{
    static int ended;
    if (!pl_enabled || pl_in_vfork_child() || __atomic_exchange_n(&ended, 1, __ATOMIC_ACQ_REL)) return;
    int saved = errno;
    pl_depth++;
    pl_flush_counts();
    send_end();
    pl_enabled = 0;
    pl_depth--;
    errno = saved;
}

__attribute__((destructor)) static void pl_fini(void) { pl_finish(); }

PL_EXPORT void _exit(int status)
{
    pl_finish();
    REAL(_exit)(status);
    __builtin_unreachable();
}

PL_EXPORT void _Exit(int status)
{
    pl_finish();
    REAL(_Exit)(status);
    __builtin_unreachable();
}
