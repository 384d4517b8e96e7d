/* ns.c: debugging other processes, namespaces, mounts, root changes, kernel modules, and the same
 * calls made through syscall(), the only libc door to the calls without a wrapper (init_module,
 * finit_module, pivot_root, io_uring_setup). syscall() is hot in some programs (futex, gettid):
 * one switch on the number and it returns, with the real result and errno untouched. */
#include "hook.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <sched.h>
#include <stdarg.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifdef __GLIBC__
typedef enum __ptrace_request ptrace_request;
#else
typedef int ptrace_request;
#endif

/* Requests that start tracing or write into the tracee. The rest (peeks, continues, register
 * reads) are what a debugger or strace does thousands of times once attached. */
static int ptrace_worth(long request)
{
    switch (request) {
    case PTRACE_TRACEME: case PTRACE_ATTACH: case PTRACE_SEIZE: case PTRACE_DETACH:
    case PTRACE_POKETEXT: case PTRACE_POKEDATA: case PTRACE_POKEUSER:
    case PTRACE_SETREGS: case PTRACE_SETFPREGS: case PTRACE_SETREGSET:
        return 1;
    }
    return 0;
}

PL_EXPORT long ptrace(ptrace_request request, ...)
{
    va_list ap;
    va_start(ap, request);
    pid_t pid = va_arg(ap, pid_t);
    void *addr = va_arg(ap, void *), *data = va_arg(ap, void *);
    va_end(ap);
    long r = REAL(ptrace)(request, pid, addr, data);
    if (PL_UNLIKELY(ptrace_worth(request)))
        pl_call(PRELOAD_API_PTRACE, r,
                PL_ARGS(request, pid, (int64_t)(uintptr_t)addr, (int64_t)(uintptr_t)data), "");
    return r;
}

PL_EXPORT int unshare(int flags)
{
    int r = REAL(unshare)(flags);
    pl_call(PRELOAD_API_UNSHARE, r, PL_ARGS(flags), "");
    return r;
}

PL_EXPORT int setns(int fd, int nstype)
{
    int r = REAL(setns)(fd, nstype);
    pl_call(PRELOAD_API_SETNS, r, PL_ARGS(fd, nstype), "f", fd);
    return r;
}

PL_EXPORT int mount(const char *source, const char *target, const char *fstype,
                    unsigned long flags, const void *data)
{
    int r = REAL(mount)(source, target, fstype, flags, data);
    pl_call(PRELOAD_API_MOUNT, r, PL_ARGS(0, 0, 0, (int64_t)flags), "sps", source, AT_FDCWD, target,
            fstype);
    return r;
}

PL_EXPORT int umount2(const char *target, int flags)
{
    int r = REAL(umount2)(target, flags);
    pl_call(PRELOAD_API_UMOUNT2, r, PL_ARGS(0, flags), "p", AT_FDCWD, target);
    return r;
}

PL_EXPORT int umount(const char *target)
{
    int r = REAL(umount)(target);
    pl_call(PRELOAD_API_UMOUNT2, r, NULL, "p", AT_FDCWD, target);
    return r;
}

PL_EXPORT int chroot(const char *path)
{
    int r = REAL(chroot)(path);
    pl_call(PRELOAD_API_CHROOT, r, NULL, "p", AT_FDCWD, path);
    return r;
}

/* A watched call made through syscall(), recorded as its wrapper records it; any other number
 * falls through the switch. */
static void record_syscall(long nr, long r, const long *a)
{
    const int64_t args[6] = {a[0], a[1], a[2], a[3], a[4], a[5]};
    const char *s0 = (const char *)a[0], *s1 = (const char *)a[1];
    switch (nr) {
    case SYS_init_module: pl_call(PRELOAD_API_INIT_MODULE, r, args, "s", (const char *)a[2]); break;
    case SYS_finit_module: pl_call(PRELOAD_API_FINIT_MODULE, r, args, "fs", (int)a[0], s1); break;
    case SYS_pivot_root:
        pl_call(PRELOAD_API_PIVOT_ROOT, r, args, "pp", AT_FDCWD, s0, AT_FDCWD, s1);
        break;
    case SYS_io_uring_setup: pl_call(PRELOAD_API_IO_URING_SETUP, r, args, ""); break;
    case SYS_memfd_create: pl_call(PRELOAD_API_MEMFD_CREATE, r, args, "s", s0); break;
    case SYS_ptrace: if (ptrace_worth(a[0])) pl_call(PRELOAD_API_PTRACE, r, args, ""); break;
    case SYS_unshare: pl_call(PRELOAD_API_UNSHARE, r, args, ""); break;
    case SYS_setns: pl_call(PRELOAD_API_SETNS, r, args, "f", (int)a[0]); break;
    case SYS_mount:
        pl_call(PRELOAD_API_MOUNT, r, args, "sps", s0, AT_FDCWD, s1, (const char *)a[2]);
        break;
    case SYS_umount2: pl_call(PRELOAD_API_UMOUNT2, r, args, "p", AT_FDCWD, s0); break;
    case SYS_chroot: pl_call(PRELOAD_API_CHROOT, r, args, "p", AT_FDCWD, s0); break;
#ifdef SYS_rmdir
    case SYS_rmdir: pl_call(PRELOAD_API_RMDIR, r, args, "p", AT_FDCWD, s0); break;
#endif
    case SYS_setuid: pl_call(PRELOAD_API_SETUID, r, args, ""); break;
    case SYS_setgid: pl_call(PRELOAD_API_SETGID, r, args, ""); break;
    case SYS_setreuid: pl_call(PRELOAD_API_SETREUID, r, args, ""); break;
    case SYS_setregid: pl_call(PRELOAD_API_SETREGID, r, args, ""); break;
    case SYS_setresuid: pl_call(PRELOAD_API_SETRESUID, r, args, ""); break;
    case SYS_setresgid: pl_call(PRELOAD_API_SETRESGID, r, args, ""); break;
    case SYS_setgroups: pl_call(PRELOAD_API_SETGROUPS, r, args, ""); break;
    case SYS_setfsuid: pl_call(PRELOAD_API_SETFSUID, r, args, ""); break;
    case SYS_setfsgid: pl_call(PRELOAD_API_SETFSGID, r, args, ""); break;
    case SYS_capset: pl_capset_record(r, (const void *)a[0], (const void *)a[1]); break;
#ifdef SYS_dup2
    case SYS_dup2: pl_dup_done(PRELOAD_API_DUP2, (int)a[0], (int)a[1], r); break;
#endif
    case SYS_dup3: pl_dup_done(PRELOAD_API_DUP3, (int)a[0], (int)a[1], r); break;
    }
}

PL_EXPORT long syscall(long nr, ...)
{
    long a[6];
    va_list ap;
    va_start(ap, nr);
    for (int i = 0; i < 6; i++) a[i] = va_arg(ap, long); /* as many as any call takes */
    va_end(ap);
    /* the channel forgets an fd closed behind libc's back, as fd.c's close and close_range */
    if (nr == SYS_close) pl_fd_lost((int)a[0]);
    else if (nr == SYS_close_range && !(a[2] & CLOSE_RANGE_CLOEXEC))
        pl_fd_range_lost((unsigned)a[0], (unsigned)a[1]);
    long r = REAL(syscall)(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
    record_syscall(nr, r, a);
    return r;
}
