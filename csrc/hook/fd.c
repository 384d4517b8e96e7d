/* fd.c: the application closing or replacing descriptors. Programs close every fd at start
 * (closefrom loops, close_range) or dup2 onto numbers they want: they get exactly that, and the
 * channel notices that its fd is gone and reconnects on the next record. */
#include "hook.h"

#include <linux/close_range.h>
#include <unistd.h>

int close_range(unsigned first, unsigned last, int flags);
void closefrom(int lowfd);

PL_EXPORT int close(int fd)
{
    pl_fd_lost(fd);
    return REAL(close)(fd);
}

PL_EXPORT int close_range(unsigned first, unsigned last, int flags)
{
    if (!(flags & CLOSE_RANGE_CLOEXEC)) pl_fd_range_lost(first, last); /* cloexec closes nothing now */
    return REAL(close_range)(first, last, flags);
}

PL_EXPORT void closefrom(int lowfd)
{
    pl_fd_range_lost(lowfd < 0 ? 0 : (unsigned)lowfd, ~0U);
    REAL(closefrom)(lowfd);
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

PL_EXPORT int dup2(int oldfd, int newfd)
{
    int r = REAL(dup2)(oldfd, newfd);
    if (r >= 0 && oldfd != newfd) {
        pl_fd_lost(newfd);
        if ((unsigned)r <= 2) pl_dup_record(PRELOAD_API_DUP2, oldfd, r);
    }
    return r;
}

PL_EXPORT int dup3(int oldfd, int newfd, int flags)
{
    int r = REAL(dup3)(oldfd, newfd, flags);
    if (r >= 0) {
        pl_fd_lost(newfd);
        if ((unsigned)r <= 2) pl_dup_record(PRELOAD_API_DUP3, oldfd, r);
    }
    return r;
}
