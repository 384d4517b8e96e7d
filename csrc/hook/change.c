/* change.c: files removed, renamed, linked, created and changed in mode, owner or size. Paths are
 * recorded absolute; a symlink's target as the program wrote it (that is what the link holds). */
#include "hook.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

PL_EXPORT int unlink(const char *path)
{
    int r = REAL(unlink)(path);
    pl_call(PRELOAD_API_UNLINK, r, NULL, "p", AT_FDCWD, path);
    return r;
}

static int recorded_rmdir(const char *path)
{
    int r = REAL(rmdir)(path);
    pl_call(PRELOAD_API_RMDIR, r, NULL, "p", AT_FDCWD, path);
    return r;
}

PL_EXPORT int rmdir(const char *path) { return recorded_rmdir(path); }

/* libc's remove() makes its own unlink (then rmdir, for a directory) that no hook sees: done here as
 * libc does it, so that both are recorded. */
PL_EXPORT int remove(const char *path)
{
    int r = REAL(unlink)(path);
    int failed = r != 0 && errno == EISDIR;
    pl_call(PRELOAD_API_UNLINK, r, NULL, "p", AT_FDCWD, path);
    return failed ? recorded_rmdir(path) : r;
}

PL_EXPORT int unlinkat(int dirfd, const char *path, int flags)
{
    int r = REAL(unlinkat)(dirfd, path, flags);
    pl_call(PRELOAD_API_UNLINKAT, r, PL_ARGS(dirfd, 0, flags), "p", dirfd, path);
    return r;
}

PL_EXPORT int rename(const char *old, const char *new)
{
    int r = REAL(rename)(old, new);
    pl_call(PRELOAD_API_RENAME, r, NULL, "pp", AT_FDCWD, old, AT_FDCWD, new);
    return r;
}

PL_EXPORT int renameat(int olddir, const char *old, int newdir, const char *new)
{
    int r = REAL(renameat)(olddir, old, newdir, new);
    pl_call(PRELOAD_API_RENAMEAT, r, PL_ARGS(olddir, 0, newdir), "pp", olddir, old, newdir, new);
    return r;
}

PL_EXPORT int renameat2(int olddir, const char *old, int newdir, const char *new, unsigned flags)
{
    int r = REAL(renameat2)(olddir, old, newdir, new, flags);
    pl_call(PRELOAD_API_RENAMEAT2, r, PL_ARGS(olddir, 0, newdir, 0, flags), "pp", olddir, old,
            newdir, new);
    return r;
}

PL_EXPORT int link(const char *old, const char *new)
{
    int r = REAL(link)(old, new);
    pl_call(PRELOAD_API_LINK, r, NULL, "pp", AT_FDCWD, old, AT_FDCWD, new);
    return r;
}

PL_EXPORT int linkat(int olddir, const char *old, int newdir, const char *new, int flags)
{
    int r = REAL(linkat)(olddir, old, newdir, new, flags);
    pl_call(PRELOAD_API_LINKAT, r, PL_ARGS(olddir, 0, newdir, 0, flags), "pp", olddir, old, newdir,
            new);
    return r;
}

PL_EXPORT int symlink(const char *target, const char *linkpath)
{
    int r = REAL(symlink)(target, linkpath);
    pl_call(PRELOAD_API_SYMLINK, r, NULL, "sp", target, AT_FDCWD, linkpath);
    return r;
}

PL_EXPORT int symlinkat(const char *target, int newdir, const char *linkpath)
{
    int r = REAL(symlinkat)(target, newdir, linkpath);
    pl_call(PRELOAD_API_SYMLINKAT, r, PL_ARGS(0, newdir), "sp", target, newdir, linkpath);
    return r;
}

PL_EXPORT int chmod(const char *path, mode_t mode)
{
    int r = REAL(chmod)(path, mode);
    pl_call(PRELOAD_API_CHMOD, r, PL_ARGS(0, mode), "p", AT_FDCWD, path);
    return r;
}

PL_EXPORT int fchmod(int fd, mode_t mode)
{
    int r = REAL(fchmod)(fd, mode);
    pl_call(PRELOAD_API_FCHMOD, r, PL_ARGS(fd, mode), "f", fd);
    return r;
}

PL_EXPORT int fchmodat(int dirfd, const char *path, mode_t mode, int flags)
{
    int r = REAL(fchmodat)(dirfd, path, mode, flags);
    pl_call(PRELOAD_API_FCHMODAT, r, PL_ARGS(dirfd, 0, mode, flags), "p", dirfd, path);
    return r;
}

PL_EXPORT int chown(const char *path, uid_t uid, gid_t gid)
{
    int r = REAL(chown)(path, uid, gid);
    pl_call(PRELOAD_API_CHOWN, r, PL_ARGS(0, uid, gid), "p", AT_FDCWD, path);
    return r;
}

PL_EXPORT int lchown(const char *path, uid_t uid, gid_t gid)
{
    int r = REAL(lchown)(path, uid, gid);
    pl_call(PRELOAD_API_LCHOWN, r, PL_ARGS(0, uid, gid), "p", AT_FDCWD, path);
    return r;
}

PL_EXPORT int fchown(int fd, uid_t uid, gid_t gid)
{
    int r = REAL(fchown)(fd, uid, gid);
    pl_call(PRELOAD_API_FCHOWN, r, PL_ARGS(fd, uid, gid), "f", fd);
    return r;
}

PL_EXPORT int fchownat(int dirfd, const char *path, uid_t uid, gid_t gid, int flags)
{
    int r = REAL(fchownat)(dirfd, path, uid, gid, flags);
    pl_call(PRELOAD_API_FCHOWNAT, r, PL_ARGS(dirfd, 0, uid, gid, flags), "p", dirfd, path);
    return r;
}

PL_EXPORT int truncate(const char *path, off_t length)
{
    int r = REAL(truncate)(path, length);
    pl_call(PRELOAD_API_TRUNCATE, r, PL_ARGS(0, length), "p", AT_FDCWD, path);
    return r;
}

PL_EXPORT int mkdir(const char *path, mode_t mode)
{
    int r = REAL(mkdir)(path, mode);
    pl_call(PRELOAD_API_MKDIR, r, PL_ARGS(0, mode), "p", AT_FDCWD, path);
    return r;
}

PL_EXPORT int mkdirat(int dirfd, const char *path, mode_t mode)
{
    int r = REAL(mkdirat)(dirfd, path, mode);
    pl_call(PRELOAD_API_MKDIRAT, r, PL_ARGS(dirfd, 0, mode), "p", dirfd, path);
    return r;
}

PL_EXPORT int mknod(const char *path, mode_t mode, dev_t dev)
{
    int r = REAL(mknod)(path, mode, dev);
    pl_call(PRELOAD_API_MKNOD, r, PL_ARGS(0, mode, (int64_t)dev), "p", AT_FDCWD, path);
    return r;
}

PL_EXPORT int mknodat(int dirfd, const char *path, mode_t mode, dev_t dev)
{
    int r = REAL(mknodat)(dirfd, path, mode, dev);
    pl_call(PRELOAD_API_MKNODAT, r, PL_ARGS(dirfd, 0, mode, (int64_t)dev), "p", dirfd, path);
    return r;
}
