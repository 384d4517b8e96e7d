/* fd.c: the application closing, replacing or asking about descriptors. Programs close every fd
 * at start (closefrom loops, close_range) or dup2 onto numbers they want: they get exactly that, and
 * the channel notices that its fd is gone and reconnects on the next record. */
#include "hook.h"

#include <fcntl.h>
#include <limits.h>
#include <linux/close_range.h>
#include <stdarg.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

int close_range(unsigned first, unsigned last, int flags);
void closefrom(int lowfd);

PL_EXPORT int close(int fd)
{
    pl_fd_lost(fd);
    return REAL(close)(fd);
}

/* musl has neither close_range nor closefrom, yet a program that finds our names calls them: when
 * libc's is missing (ENOSYS), the kernel does the work, and closefrom without close_range in the
 * kernel closes each fd up to the limit, as glibc's own does then. */
PL_EXPORT int close_range(unsigned first, unsigned last, int flags)
{
    if (!(flags & CLOSE_RANGE_CLOEXEC)) pl_fd_range_lost(first, last); /* cloexec closes nothing now */
    int r = REAL(close_range)(first, last, flags);
    if (r < 0 && errno == ENOSYS) r = (int)syscall(SYS_close_range, first, last, flags);
    return r;
}

PL_EXPORT void closefrom(int lowfd)
{
    unsigned first = lowfd < 0 ? 0 : (unsigned)lowfd;
    pl_fd_range_lost(first, ~0U);
    int err = errno;
    errno = 0;
    REAL(closefrom)(lowfd);
    if (errno == ENOSYS && syscall(SYS_close_range, first, ~0U, 0) != 0) {
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
            for (rlim_t fd = first; fd < rl.rlim_cur && fd <= INT_MAX; fd++) syscall(SYS_close, (int)fd);
    }
    errno = err;
}

/* Replacing our fd: forget it once it is replaced (the channel checks the fd's identity before
 * each send, so the moment in between is safe). A copy that lands on fd 0, 1 or 2 may be a socket
 * made the program's input or output (a reverse shell): one getsockopt tells, and is asked of no
 * other copy. */
PL_EXPORT int dup(int oldfd)
{
    int r = REAL(dup)(oldfd);
    if (PL_UNLIKELY((unsigned)r <= 2)) pl_dup_record(PRELOAD_API_DUP, oldfd, r);
    return r;
}

void pl_dup_done(unsigned api, int oldfd, int newfd, long r)
{
    if (r < 0 || oldfd == newfd) return; /* dup2 onto itself replaces nothing (dup3 refuses it) */
    pl_fd_lost(newfd);
    if ((unsigned long)r <= 2) pl_dup_record(api, oldfd, (int)r);
}

PL_EXPORT int dup2(int oldfd, int newfd)
{
    int r = REAL(dup2)(oldfd, newfd);
    pl_dup_done(PRELOAD_API_DUP2, oldfd, newfd, r);
    return r;
}

PL_EXPORT int dup3(int oldfd, int newfd, int flags)
{
    int r = REAL(dup3)(oldfd, newfd, flags);
    pl_dup_done(PRELOAD_API_DUP3, oldfd, newfd, r);
    return r;
}

/* Programs that list or count their open fds ask each number with fstat or fcntl (CPython's tests
 * check that a child has exactly the fds it was given). Asked about the channel, they hear what they
 * would hear without us: no such fd. Only while the fd is still ours, so never about one of theirs. */
static int hidden(int fd)
{
    if (!pl_is_channel(fd)) return 0;
    errno = EBADF;
    return 1;
}

PL_EXPORT int fstat(int fd, struct stat *st)
{
    return hidden(fd) ? -1 : REAL(fstat)(fd, st);
}

/* fcntl's third argument is an int or a pointer, as cmd says: passed on as libc reads it */
#define FCNTL_ARG(cmd, arg)         \
    va_list ap;                     \
    va_start(ap, cmd);              \
    void *arg = va_arg(ap, void *); \
    va_end(ap)

PL_EXPORT int fcntl(int fd, int cmd, ...)
{
    FCNTL_ARG(cmd, arg);
    return hidden(fd) ? -1 : REAL(fcntl)(fd, cmd, arg);
}

#ifdef __GLIBC__ /* musl's headers make these names macros for the ones above */
PL_EXPORT int fstat64(int fd, struct stat64 *st)
{
    return hidden(fd) ? -1 : REAL(fstat64)(fd, st);
}

/* what programs built against glibc before 2.33 call for fstat (no longer declared) */
int __fxstat(int ver, int fd, struct stat *st);
int __fxstat64(int ver, int fd, struct stat64 *st);

PL_EXPORT int __fxstat(int ver, int fd, struct stat *st)
{
    return hidden(fd) ? -1 : REAL(__fxstat)(ver, fd, st);
}

PL_EXPORT int __fxstat64(int ver, int fd, struct stat64 *st)
{
    return hidden(fd) ? -1 : REAL(__fxstat64)(ver, fd, st);
}

PL_EXPORT int fcntl64(int fd, int cmd, ...)
{
    FCNTL_ARG(cmd, arg);
    return hidden(fd) ? -1 : REAL(fcntl64)(fd, cmd, arg);
}
#endif
