/* calls.c: the watched calls (one table for every architecture: the numbers come from the kernel
 * headers, and the calls an architecture does not have, like open on arm64, are left out), the
 * seccomp filter built from it, and what each stop turns into on the wire. */
#include "trace.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__)
#define NATIVE_ARCH AUDIT_ARCH_X86_64
#define X32_BIT 0x40000000u /* x32 calls arrive with the native arch and this bit in the number */
#elif defined(__aarch64__)
#define NATIVE_ARCH AUDIT_ARCH_AARCH64
#else
#error "add this architecture: NATIVE_ARCH, and how to skip a call in refuse()"
#endif

#define C(name, api, kind, fa) {__NR_##name, PRELOAD_API_##api, kind, fa}
const struct call pl_calls[] = {
    C(execve, EXECVE, K_EXEC, -1),
    C(execveat, EXECVEAT, K_EXEC, -1),
#ifdef __NR_open
    C(open, OPEN, K_OPEN, 1),
#endif
    C(openat, OPENAT, K_OPEN, 2),
    C(openat2, OPENAT2, K_OPEN, -1), /* flags live in a struct the filter cannot read */
#ifdef __NR_creat
    C(creat, CREAT, K_OPEN, -1),
#endif
    C(connect, CONNECT, K_NET, -1),
    C(bind, BIND, K_NET, -1),
    C(listen, LISTEN, K_NET, -1),
    C(accept, ACCEPT, K_NET, -1),
    C(accept4, ACCEPT4, K_NET, -1),
    C(socket, SOCKET, K_CALL, -1),
    C(setuid, SETUID, K_CALL, -1),
    C(setgid, SETGID, K_CALL, -1),
    C(setreuid, SETREUID, K_CALL, -1),
    C(setregid, SETREGID, K_CALL, -1),
    C(setresuid, SETRESUID, K_CALL, -1),
    C(setresgid, SETRESGID, K_CALL, -1),
    C(setgroups, SETGROUPS, K_CALL, -1),
    C(setfsuid, SETFSUID, K_CALL, -1),
    C(setfsgid, SETFSGID, K_CALL, -1),
    C(ptrace, PTRACE, K_CALL, -1),
    C(memfd_create, MEMFD_CREATE, K_CALL, -1),
    C(mount, MOUNT, K_CALL, -1),
    C(umount2, UMOUNT2, K_CALL, -1),
    C(unshare, UNSHARE, K_CALL, -1),
    C(setns, SETNS, K_CALL, -1),
    C(init_module, INIT_MODULE, K_CALL, -1),
    C(finit_module, FINIT_MODULE, K_CALL, -1),
    C(io_uring_setup, IO_URING_SETUP, K_CALL, -1),
#ifdef __NR_unlink
    C(unlink, UNLINK, K_CALL, -1),
    C(rmdir, RMDIR, K_CALL, -1),
    C(rename, RENAME, K_CALL, -1),
    C(chmod, CHMOD, K_CALL, -1),
    C(link, LINK, K_CALL, -1),
    C(symlink, SYMLINK, K_CALL, -1),
#endif
    C(unlinkat, UNLINKAT, K_CALL, -1),
    C(renameat, RENAMEAT, K_CALL, -1),
    C(renameat2, RENAMEAT2, K_CALL, -1),
    C(fchmod, FCHMOD, K_CALL, -1),
    C(fchmodat, FCHMODAT, K_CALL, -1),
    C(linkat, LINKAT, K_CALL, -1),
    C(symlinkat, SYMLINKAT, K_CALL, -1),
#ifdef __NR_chown
    C(chown, CHOWN, K_CALL, -1),
    C(lchown, LCHOWN, K_CALL, -1),
    C(mkdir, MKDIR, K_CALL, -1),
    C(mknod, MKNOD, K_CALL, -1),
#endif
    C(fchown, FCHOWN, K_CALL, -1),
    C(fchownat, FCHOWNAT, K_CALL, -1),
    C(truncate, TRUNCATE, K_CALL, -1),
    C(mkdirat, MKDIRAT, K_CALL, -1),
    C(mknodat, MKNODAT, K_CALL, -1),
    C(capset, CAPSET, K_CALL, -1),
    C(chroot, CHROOT, K_CALL, -1),
    C(pivot_root, PIVOT_ROOT, K_CALL, -1),
};
const unsigned pl_ncalls = sizeof pl_calls / sizeof *pl_calls;

/* ---- the filter ---- */

/* What makes an open worth a stop under the default profile: anything but a plain read. */
#define OPEN_WRITE_BITS (O_ACCMODE | O_CREAT | O_TRUNC | O_APPEND | __O_TMPFILE)

#define STMT(code, k) ((struct sock_filter)BPF_STMT(code, k))
#define JUMP(code, k, jt, jf) ((struct sock_filter)BPF_JUMP(code, k, jt, jf))
#define TRACE(i) (SECCOMP_RET_TRACE | (uint32_t)(i))

int pl_filter(enum profile p, struct sock_fprog *prog)
{
    static struct sock_filter f[8 + 5 * sizeof pl_calls / sizeof *pl_calls];
    unsigned n = 0;
    f[n++] = STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
    f[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_ARCH, 1, 0);
    f[n++] = STMT(BPF_RET | BPF_K, TRACE(DATA_FOREIGN)); /* int 0x80 and the like: refused */
    f[n++] = STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
#ifdef X32_BIT
    f[n++] = JUMP(BPF_JMP | BPF_JSET | BPF_K, X32_BIT, 0, 1);
    f[n++] = STMT(BPF_RET | BPF_K, TRACE(DATA_FOREIGN));
#endif
    for (unsigned i = 0; i < pl_ncalls; i++) {
        const struct call *c = &pl_calls[i];
        if (c->flags_arg >= 0 && p == PROFILE_DEFAULT) {
            /* a read-only open runs without a stop; the low half of the argument holds the flags */
            f[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)c->nr, 0, 4);
            f[n++] = STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[c->flags_arg]));
            f[n++] = JUMP(BPF_JMP | BPF_JSET | BPF_K, OPEN_WRITE_BITS, 1, 0);
            f[n++] = STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
            f[n++] = STMT(BPF_RET | BPF_K, TRACE(i + 1));
        } else {
            f[n++] = JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)c->nr, 0, 1);
            f[n++] = STMT(BPF_RET | BPF_K, TRACE(i + 1));
        }
    }
    f[n++] = STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    prog->len = (unsigned short)n;
    prog->filter = f;
    return 0;
}

/* ---- records ---- */

#define REC_CAP PRELOAD_MAX_RECORD
static char rec_buf[REC_CAP]; /* the tracer is one thread: one record at a time */

static int is_write(int flags)
{
    return (flags & OPEN_WRITE_BITS) != 0;
}

static void rec_begin(struct pl_rec *r, unsigned kind, const void *body, size_t len)
{
    pl_rec_begin(r, rec_buf, sizeof rec_buf, kind, PRELOAD_SRC_PTRACE, body, len);
}

/* argv from the tracee (an array of pointers ending with NULL), as record strings */
static uint32_t put_argv(struct pl_rec *r, pid_t pid, uint64_t argv)
{
    uint32_t n = 0;
    char s[PATH_MAX];
    for (; argv && r->len < r->cap - 1; n++) {
        uint64_t p = 0;
        if (pl_peek(pid, argv + 8 * (uint64_t)n, &p, sizeof p) != (ssize_t)sizeof p || !p) return n;
        if (pl_peek_str(pid, p, s, sizeof s) < 0) s[0] = 0;
        pl_rec_str(r, s);
    }
    if (argv) r->truncated = 1;
    return n;
}

/* The exec's argv, kept for the start record of the image it makes: read now, while the old
 * image's memory holds it, instead of from /proc while the new image waits. */
static void keep_argv(struct task *t, const char *strings, size_t len, uint32_t argc)
{
    free(t->argv);
    t->argv = malloc(len ? len : 1);
    t->argv_len = t->argv ? len : 0;
    t->argc = t->argv ? argc : 0;
    if (t->argv) memcpy(t->argv, strings, len);
}

static void send_exec(struct task *t, const struct call *c, unsigned phase, int res)
{
    pid_t pid = t->tid;
    int at = c->api == PRELOAD_API_EXECVEAT;
    struct preload_exec e = {.api = c->api, .phase = (uint16_t)phase, .res = res,
                             .fd = at ? (int32_t)t->args[0] : -1};
    char raw[PATH_MAX], path[PATH_MAX];
    if (pl_peek_str(pid, t->args[at], raw, sizeof raw) < 0) raw[0] = 0;
    if (at && !raw[0] && (t->args[4] & AT_EMPTY_PATH)) {
        if (pl_tracee_fdpath(pid, (int)t->args[0], path, sizeof path) != 0) strcpy(path, raw);
    } else if (at) {
        pl_tracee_abspath(pid, (int)t->args[0], raw, path, sizeof path);
    } else {
        strcpy(path, raw);
    }
    struct pl_rec r;
    rec_begin(&r, PRELOAD_REC_EXEC, &e, sizeof e);
    pl_rec_str(&r, path);
    size_t argv_at = r.len;
    uint32_t argc = put_argv(&r, pid, t->args[at + 1]);
    ((struct preload_exec *)(r.buf + sizeof(struct preload_hdr)))->argc = argc;
    if (phase == PRELOAD_EXEC_ATTEMPT) keep_argv(t, r.buf + argv_at, r.len - argv_at, argc);
    if (!t->handoff) out_send(t->proc, &r); /* a handoff: the hook recorded this exec already */
}

/* ---- repeated opens: counted per process, like the hook does ---- */

#define SEEN_SLOTS 1024 /* power of two */
#define SEEN_PROBES 16
struct seen {
    uint64_t key, count;
};

static uint64_t repeat_key(const char *path, int accmode)
{
    static uint64_t seed;
    if (!seed) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        seed = (((uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ULL) ^ (uint64_t)getpid()) | 1;
    }
    uint64_t h = seed;
    for (const char *p = path; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    h ^= (uint64_t)(unsigned)accmode * 0xc2b2ae3d27d4eb4fULL;
    return h ? h : 1;
}

static struct seen *seen_find(struct proc *p, uint64_t key, int add)
{
    if (!p->seen) {
        if (!add || !(p->seen = calloc(SEEN_SLOTS, sizeof *p->seen))) return NULL;
    }
    for (unsigned i = 0; i < SEEN_PROBES; i++) {
        struct seen *s = &p->seen[(key + i) & (SEEN_SLOTS - 1)];
        if (s->key == key) return add ? NULL : s; /* add: already there */
        if (!s->key) {
            if (!add) return NULL;
            s->key = key;
            return s;
        }
    }
    return NULL;
}

void calls_flush_counts(struct proc *p)
{
    enum { PER_RECORD = 256 };
    if (!p->unsent || !p->seen) return;
    char buf[sizeof(struct preload_hdr) + sizeof(struct preload_counts) + PER_RECORD * sizeof(struct preload_count)];
    struct preload_count *entries = (struct preload_count *)(buf + sizeof(struct preload_hdr) + sizeof(struct preload_counts));
    uint32_t n = 0;
    for (unsigned i = 0; i <= SEEN_SLOTS; i++) {
        if (i < SEEN_SLOTS && p->seen[i].count) {
            entries[n].path_hash = p->seen[i].key;
            entries[n].count = p->seen[i].count;
            p->seen[i].count = 0;
            n++;
        }
        if (n && (n == PER_RECORD || i == SEEN_SLOTS)) {
            struct pl_rec r;
            pl_rec_counts(&r, buf, sizeof buf, PRELOAD_SRC_PTRACE, n);
            out_send(p, &r);
            n = 0;
        }
    }
    p->unsent = 0;
}

static int open_args(struct task *t, const struct call *c, struct open_args *o)
{
    const uint64_t *a = t->args;
    o->dirfd = AT_FDCWD;
    o->mode = 0;
    switch (c->api) {
    case PRELOAD_API_OPEN: o->path = a[0]; o->flags = (int)a[1]; o->mode = (unsigned)a[2]; break;
    case PRELOAD_API_CREAT: o->path = a[0]; o->flags = O_CREAT | O_WRONLY | O_TRUNC; o->mode = (unsigned)a[1]; break;
    case PRELOAD_API_OPENAT: o->dirfd = (int)a[0]; o->path = a[1]; o->flags = (int)a[2]; o->mode = (unsigned)a[3]; break;
    case PRELOAD_API_OPENAT2: {
        uint64_t how[2] = {0, 0}; /* struct open_how: flags, mode, resolve */
        if (pl_peek(t->tid, a[2], how, sizeof how) != (ssize_t)sizeof how) return -1;
        o->dirfd = (int)a[0]; o->path = a[1]; o->flags = (int)how[0]; o->mode = (unsigned)how[1];
        break;
    }
    default: return -1;
    }
    return 0;
}

/* At entry: 1 when this open repeats one already recorded for the process and was counted (no
 * exit stop needed: the proot trick). Only absolute, non-sensitive reads (and writes to /dev/null
 * and the like) are aggregated; the result is taken to be the first one's. */
static int open_repeat(struct task *t, const struct call *c)
{
    struct open_args *o = &t->open;
    t->key = 0;
    t->path[0] = 0;
    t->open_ok = open_args(t, c, o) == 0; /* kept for the exit stop, which describes the open */
    if (!t->open_ok || pl_peek_str(t->tid, o->path, t->path, sizeof t->path) < 0) return 0;
    if (t->path[0] != '/') return 0;
    char norm[PATH_MAX];
    strcpy(norm, t->path);
    pl_normalize(norm);
    if (pl_sensitive(norm) || (is_write(o->flags) && !pl_quiet_sink(norm))) return 0;
    uint64_t key = repeat_key(norm, o->flags & O_ACCMODE);
    struct seen *s = seen_find(t->proc, key, 0);
    if (s) {
        s->count++;
        t->proc->unsent++;
        return 1;
    }
    t->key = key;
    return 0;
}

static void send_open(struct task *t, const struct call *c, int res)
{
    const struct open_args *o = &t->open;
    if (!t->open_ok) return;
    struct preload_open rec = {.api = c->api, .flags = o->flags, .res = res,
                               .mode = (o->flags & O_CREAT) || (o->flags & O_TMPFILE) == O_TMPFILE ? o->mode : 0};
    char path[PATH_MAX];
    if (res < 0 || pl_tracee_fdpath(t->tid, res, path, sizeof path) != 0)
        pl_tracee_abspath(t->tid, o->dirfd, t->path, path, sizeof path);
    if (t->key && !pl_sensitive(path) && seen_find(t->proc, t->key, 1)) {
        rec.repeatable = 1;
        rec.path_hash = t->key;
    }
    struct pl_rec r;
    rec_begin(&r, PRELOAD_REC_OPEN, &rec, sizeof rec);
    pl_rec_str(&r, path);
    out_send(t->proc, &r);
}

static void send_net(struct task *t, const struct call *c, int res)
{
    const uint64_t *a = t->args;
    pid_t pid = t->tid;
    int accept = c->api == PRELOAD_API_ACCEPT || c->api == PRELOAD_API_ACCEPT4;
    if (accept && (res == -EAGAIN || res == -EWOULDBLOCK)) return; /* a poll, not an event */
    struct preload_net n = {.api = c->api, .fd = (int32_t)a[0], .res = res};
    struct pl_ends e = {{0}, {0}};
    unsigned char given[128];
    uint32_t glen = 0;
    int have = 0;
    if (c->api == PRELOAD_API_CONNECT || c->api == PRELOAD_API_BIND) {
        glen = a[2] < sizeof given ? (uint32_t)a[2] : sizeof given;
        have = a[1] && pl_peek(pid, a[1], given, glen) == (ssize_t)glen;
    } else if (accept && res >= 0 && a[1] && a[2]) {
        have = pl_peek(pid, a[2], &glen, sizeof glen) == (ssize_t)sizeof glen;
        if (glen > sizeof given) glen = sizeof given;
        have = have && pl_peek(pid, a[1], given, glen) == (ssize_t)glen;
    }
    int sock = pl_tracee_fd(t->proc, accept && res >= 0 ? res : (int)a[0]);
    pl_net_fill(&n, &e, sock, have ? given : NULL, have ? glen : 0, c->api == PRELOAD_API_BIND);
    if (sock >= 0) close(sock);
    struct pl_rec r;
    rec_begin(&r, PRELOAD_REC_NET, &n, sizeof n);
    pl_rec_str(&r, e.lpath);
    pl_rec_str(&r, e.rpath);
    out_send(t->proc, &r);
}

static void put_path(struct pl_rec *r, pid_t pid, int dirfd, uint64_t addr)
{
    char raw[PATH_MAX], path[PATH_MAX];
    if (pl_peek_str(pid, addr, raw, sizeof raw) < 0) raw[0] = 0;
    pl_tracee_abspath(pid, dirfd, raw, path, sizeof path);
    pl_rec_str(r, path);
}

static void put_raw(struct pl_rec *r, pid_t pid, uint64_t addr)
{
    char raw[PATH_MAX];
    if (!addr || pl_peek_str(pid, addr, raw, sizeof raw) < 0) raw[0] = 0;
    pl_rec_str(r, raw);
}

static void put_fd(struct pl_rec *r, pid_t pid, int fd)
{
    char path[PATH_MAX];
    if (pl_tracee_fdpath(pid, fd, path, sizeof path) != 0) path[0] = 0;
    pl_rec_str(r, path);
}

/* capset's sets, as the hook records them: pid, effective, permitted, inheritable (64-bit) */
static void capset_args(pid_t pid, const uint64_t *a, int res, int64_t *out)
{
    struct __user_cap_header_struct h;
    struct __user_cap_data_struct d[2];
    memset(out, 0, 6 * sizeof *out);
    if (res != 0 || pl_peek(pid, a[0], &h, sizeof h) != (ssize_t)sizeof h) return;
    unsigned n = h.version == _LINUX_CAPABILITY_VERSION_1 ? 1 : 2; /* version 1: 32-bit sets */
    if (pl_peek(pid, a[1], d, n * sizeof *d) != (ssize_t)(n * sizeof *d)) return;
    out[0] = h.pid;
    for (unsigned i = 0; i < n; i++) {
        out[1] |= (int64_t)((uint64_t)d[i].effective << (32 * i));
        out[2] |= (int64_t)((uint64_t)d[i].permitted << (32 * i));
        out[3] |= (int64_t)((uint64_t)d[i].inheritable << (32 * i));
    }
}

static void send_call(struct task *t, unsigned api, int res)
{
    const uint64_t *a = t->args;
    pid_t pid = t->tid;
    struct preload_call body = {.api = (uint16_t)api, .res = res};
    memcpy(body.args, a, sizeof body.args);
    if (api == PRELOAD_API_CAPSET) capset_args(pid, a, res, body.args);
    struct pl_rec r;
    rec_begin(&r, PRELOAD_REC_CALL, &body, sizeof body);
    switch (api) {
    case PRELOAD_API_UNLINK: case PRELOAD_API_RMDIR: case PRELOAD_API_CHMOD: case PRELOAD_API_CHOWN:
    case PRELOAD_API_LCHOWN:
    case PRELOAD_API_TRUNCATE: case PRELOAD_API_MKDIR: case PRELOAD_API_MKNOD: case PRELOAD_API_CHROOT:
        put_path(&r, pid, AT_FDCWD, a[0]);
        break;
    case PRELOAD_API_UNLINKAT: case PRELOAD_API_FCHMODAT: case PRELOAD_API_FCHOWNAT:
    case PRELOAD_API_MKDIRAT: case PRELOAD_API_MKNODAT:
        put_path(&r, pid, (int)a[0], a[1]);
        break;
    case PRELOAD_API_RENAME: case PRELOAD_API_LINK: case PRELOAD_API_PIVOT_ROOT:
        put_path(&r, pid, AT_FDCWD, a[0]);
        put_path(&r, pid, AT_FDCWD, a[1]);
        break;
    case PRELOAD_API_RENAMEAT: case PRELOAD_API_RENAMEAT2: case PRELOAD_API_LINKAT:
        put_path(&r, pid, (int)a[0], a[1]);
        put_path(&r, pid, (int)a[2], a[3]);
        break;
    case PRELOAD_API_SYMLINK: put_raw(&r, pid, a[0]); put_path(&r, pid, AT_FDCWD, a[1]); break;
    case PRELOAD_API_SYMLINKAT: put_raw(&r, pid, a[0]); put_path(&r, pid, (int)a[1], a[2]); break;
    case PRELOAD_API_FCHMOD: case PRELOAD_API_FCHOWN: case PRELOAD_API_SETNS:
        put_fd(&r, pid, (int)a[0]);
        break;
    case PRELOAD_API_MEMFD_CREATE: case PRELOAD_API_UMOUNT2: put_raw(&r, pid, a[0]); break;
    case PRELOAD_API_MOUNT: put_raw(&r, pid, a[0]); put_raw(&r, pid, a[1]); put_raw(&r, pid, a[2]); break;
    case PRELOAD_API_INIT_MODULE: put_raw(&r, pid, a[2]); break;
    case PRELOAD_API_FINIT_MODULE: put_fd(&r, pid, (int)a[0]); put_raw(&r, pid, a[1]); break;
    }
    out_send(t->proc, &r);
}

/* A call of another ABI (int 0x80 in a 64-bit program, x32): recorded, then refused with ENOSYS
 * by turning it into no call at all. Its numbers mean other calls: letting it run would let it
 * pass unseen. */
static void refuse(struct task *t, const struct __ptrace_syscall_info *si)
{
    memset(t->args, 0, sizeof t->args);
    t->args[0] = si->seccomp.nr;
    t->args[1] = si->arch;
    send_call(t, PRELOAD_API_FOREIGN_ABI, -ENOSYS);
#if defined(__x86_64__)
    ptrace(PTRACE_POKEUSER, t->tid, offsetof(struct user_regs_struct, orig_rax), (long)-1);
#elif defined(__aarch64__)
    int nr = -1;
    struct iovec io = {&nr, sizeof nr};
    ptrace(PTRACE_SETREGSET, t->tid, NT_ARM_SYSTEM_CALL, &io);
#endif
}

/* ---- stops ---- */

void calls_entry(struct task *t, const void *info)
{
    const struct __ptrace_syscall_info *si = info;
    unsigned data = si->seccomp.ret_data, i = data - 1;
    t->await = -1;
    if (data == DATA_FOREIGN || si->arch != NATIVE_ARCH) {
        /* a 32-bit program's: they go through, unseen (it was reported blind at its exec); a
         * 64-bit program's, or one of a process whose image is not known: refused */
        if (t->proc->image != IMAGE_FOREIGN) refuse(t, si);
        ptrace(PTRACE_CONT, t->tid, 0, 0);
        return;
    }
    if (!data || i >= pl_ncalls || pl_calls[i].nr != (int)si->seccomp.nr) { /* not ours */
        ptrace(PTRACE_CONT, t->tid, 0, 0);
        return;
    }
    const struct call *c = &pl_calls[i];
    memcpy(t->args, si->seccomp.args, sizeof t->args);
    if (c->kind == K_EXEC) {
        send_exec(t, c, PRELOAD_EXEC_ATTEMPT, 0);
        t->handoff = 0;
    } else if (c->kind == K_OPEN && open_repeat(t, c)) {
        ptrace(PTRACE_CONT, t->tid, 0, 0);
        return;
    }
    t->await = (int)i;
    ptrace(PTRACE_SYSCALL, t->tid, 0, 0); /* one more stop, at exit, for the result */
}

void calls_exit(struct task *t, const void *info)
{
    const struct __ptrace_syscall_info *si = info;
    int i = t->await;
    t->await = -1;
    if (i < 0 || si->op != PTRACE_SYSCALL_INFO_EXIT) return;
    int64_t rv = si->exit.rval;
    if (rv <= -512 && rv >= -516) return; /* ERESTART*: interrupted, it runs again (and stops again) */
    int res = (int)rv;
    const struct call *c = &pl_calls[i];
    switch (c->kind) {
    case K_EXEC:
        if (res < 0) {
            send_exec(t, c, PRELOAD_EXEC_FAILED, res);
            free(t->argv); /* no start follows: none may take this argv */
            t->argv = NULL;
            t->argv_len = t->argc = 0;
        }
        break;
    case K_OPEN: send_open(t, c, res); break;
    case K_NET: send_net(t, c, res); break;
    case K_CALL:
        send_call(t, c->api, res);
        if (res == 0 && c->api >= PRELOAD_API_SETUID && c->api <= PRELOAD_API_SETFSGID) {
            pid_t tgid;
            struct proc st = *t->proc;
            if (pl_task_status(t->proc->tgid, &tgid, &st) == 0) /* the new credentials */
                t->proc->uid = st.uid, t->proc->euid = st.euid, t->proc->gid = st.gid, t->proc->egid = st.egid;
        }
        break;
    }
}

static void send_start(struct task *t)
{
    struct proc *p = t->proc;
    char buf[REC_CAP];
    struct preload_start s = {.uid = p->uid, .euid = p->euid, .gid = p->gid, .egid = p->egid,
                              .attach = PRELOAD_SRC_PTRACE};
    struct pl_rec r;
    pl_rec_begin(&r, buf, sizeof buf, PRELOAD_REC_START, PRELOAD_SRC_PTRACE, &s, sizeof s);
    static const char *const links[] = {"exe", "cwd"}; /* written in place: no second buffer */
    for (unsigned i = 0; i < 2; i++) {
        if (pl_tracee_link(p->tgid, links[i], r.buf + r.len, PATH_MAX) != 0) r.buf[r.len] = 0;
        pl_rec_adopt(&r);
    }
    uint32_t argc = 0;
    for (size_t at = 0; at < t->argv_len && argc < t->argc; argc++) {
        pl_rec_str(&r, t->argv + at);
        at += strlen(t->argv + at) + 1;
    }
    if (!t->argv) { /* its exec went by unread (a 32-bit program's): the new image's own */
        char path[32];
        snprintf(path, sizeof path, "/proc/%d/cmdline", (int)p->tgid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            argc = (uint32_t)pl_rec_read_strings(&r, fd);
            close(fd);
        }
    }
    ((struct preload_start *)(r.buf + sizeof(struct preload_hdr)))->argc = argc;
    free(t->argv);
    t->argv = NULL;
    t->argv_len = t->argc = 0;
    out_send(p, &r);
}

/* Whether the program that a process runs is 32-bit (or for another machine): 1, 0, or -1 when
 * its file cannot be read. Asked only before the process has run an instruction of its own (at its
 * exec, or at a fork's first stop, when it runs its creator's program): a process could later change
 * what its /proc/PID/exe names, or switch itself to 32-bit mode. Such a program's calls are all of
 * the other ABI: it cannot be watched here, but it must run, so they go through and it is reported
 * blind. */
int pl_foreign_program(pid_t pid)
{
    char exe[32];
    unsigned char head[EI_NIDENT + 4];
    snprintf(exe, sizeof exe, "/proc/%d/exe", (int)pid);
    int fd = open(exe, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = pread(fd, head, sizeof head, 0);
    close(fd);
    if (n != (ssize_t)sizeof head) return -1;
    return memcmp(head, ELFMAG, SELFMAG) == 0 && !pl_own_kind_of_elf(head);
}

/* For a file the tracer may not read (execute-only): a task stopped at its exec, whose registers
 * the kernel gives as the 32-bit set for a 32-bit program. */
static int compat_registers(struct task *t)
{
    struct user_regs_struct regs;
    struct iovec io = {&regs, sizeof regs};
    return ptrace(PTRACE_GETREGSET, t->tid, NT_PRSTATUS, &io) == 0 && io.iov_len < sizeof regs;
}

static void send_foreign(struct task *t)
{
    struct preload_blind b = {PRELOAD_BLIND_FOREIGN, 0};
    struct pl_rec r;
    rec_begin(&r, PRELOAD_REC_BLIND, &b, sizeof b);
    if (pl_tracee_link(t->proc->tgid, "exe", r.buf + r.len, PATH_MAX) != 0) r.buf[r.len] = 0;
    pl_rec_adopt(&r);
    out_send(t->proc, &r);
}

/* The process has a new image: the old one's counts are due, the new one starts a stream (the
 * old stream ends here without an END record, as a hooked image's does at exec). */
void calls_exec(struct task *t)
{
    struct proc *p = t->proc;
    t->handoff = 0;
    calls_flush_counts(p);
    free(p->seen);
    p->seen = NULL;
    p->stream = pl_stream_id(p->tgid);
    p->seq = 0;
    int foreign = pl_foreign_program(p->tgid);
    p->image = foreign > 0 || (foreign < 0 && compat_registers(t)) ? IMAGE_FOREIGN : IMAGE_NATIVE;
    t->await = -1;
    send_start(t);
    if (p->image == IMAGE_FOREIGN) send_foreign(t);
}

uint64_t pl_stream_id(pid_t pid)
{
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        r = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ULL;
    }
    return (r ^ ((uint64_t)pid << 32)) | 1;
}
