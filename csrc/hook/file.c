/* file.c: opens. glibc's fopen does not call open through the PLT, and _FORTIFY_SOURCE programs
 * call __open_2: every public entry point has its own hook. */
#include "hook.h"

#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int wants_mode(int flags) { return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE; }

static int is_write(int flags)
{
    return (flags & O_ACCMODE) != O_RDONLY || (flags & (O_CREAT | O_TRUNC | O_APPEND)) ||
           (flags & O_TMPFILE) == O_TMPFILE;
}

static void record_open(unsigned api, int dirfd, const char *path, int flags, unsigned mode, int res)
{
    int err = errno;
    if (!pl_enter()) return;
    char buf[PL_BUF];
    const size_t at = sizeof(struct preload_hdr) + sizeof(struct preload_open), room = sizeof buf - at;
    char *abs = buf + at;
    struct preload_open o = {.api = (uint16_t)api, .flags = flags, .mode = mode,
                             .res = res < 0 ? -err : res};
    /* every write is recorded (but to /dev/null), and every path we had to cut: two long paths
     * could share the cut; and every open of a vfork child, which must not fill its parent's table */
    int whole = pl_abspath(dirfd, path, abs, room) == 0;
    int always = !whole || (is_write(flags) && !pl_quiet_sink(abs)) || pl_in_vfork_child();
    if (!pl_repeat(abs, o.res, flags & O_ACCMODE, always, &o.path_hash)) {
        if (res >= 0) pl_fdpath(res, abs, room); /* a symlink or ../ cannot hide the real file */
        o.repeatable = o.path_hash && !pl_sensitive(abs) && pl_remember(o.path_hash);
        struct pl_rec r;
        pl_rec_begin(&r, buf, sizeof buf, PRELOAD_REC_OPEN, PRELOAD_SRC_HOOK, &o, sizeof o);
        pl_rec_adopt(&r); /* the path is already in place */
        pl_rec_send(&r);
    }
    pl_leave();
    errno = err;
}

static int fopen_flags(const char *m)
{
    int f = 0;
    if (!m) return 0;
    switch (m[0]) {
    case 'r': f = O_RDONLY; break;
    case 'w': f = O_WRONLY | O_CREAT | O_TRUNC; break;
    case 'a': f = O_WRONLY | O_CREAT | O_APPEND; break;
    }
    for (const char *c = m + 1; *c && *c != ','; c++) {
        if (*c == '+') f = (f & ~O_ACCMODE) | O_RDWR;
        else if (*c == 'e') f |= O_CLOEXEC;
        else if (*c == 'x') f |= O_EXCL;
    }
    return f;
}

#define VA_MODE(flags)                         \
    unsigned mode = 0;                         \
    if (wants_mode(flags)) {                   \
        va_list ap;                            \
        va_start(ap, flags);                   \
        mode = va_arg(ap, unsigned);           \
        va_end(ap);                            \
    }

PL_EXPORT int open(const char *path, int flags, ...)
{
    VA_MODE(flags);
    int fd = REAL(open)(path, flags, mode);
    record_open(PRELOAD_API_OPEN, AT_FDCWD, path, flags, mode, fd);
    return fd;
}

PL_EXPORT int openat(int dirfd, const char *path, int flags, ...)
{
    VA_MODE(flags);
    int fd = REAL(openat)(dirfd, path, flags, mode);
    record_open(PRELOAD_API_OPENAT, dirfd, path, flags, mode, fd);
    return fd;
}

PL_EXPORT int creat(const char *path, mode_t mode)
{
    int fd = REAL(creat)(path, mode);
    record_open(PRELOAD_API_CREAT, AT_FDCWD, path, O_WRONLY | O_CREAT | O_TRUNC, mode, fd);
    return fd;
}

static void record_fopen(unsigned api, const char *path, const char *m, FILE *f)
{
    /* fileno is safe on a FILE we just got; a failed fopen left errno for record_open */
    record_open(api, AT_FDCWD, path, fopen_flags(m), 0666, f ? fileno(f) : -1);
}

PL_EXPORT FILE *fopen(const char *path, const char *m)
{
    FILE *f = REAL(fopen)(path, m);
    record_fopen(PRELOAD_API_FOPEN, path, m, f);
    return f;
}

PL_EXPORT FILE *freopen(const char *path, const char *m, FILE *stream)
{
    FILE *f = REAL(freopen)(path, m, stream);
    if (path) record_fopen(PRELOAD_API_FREOPEN, path, m, f);
    return f;
}

/* glibc's alone: musl has no _FORTIFY_SOURCE entry points, and its headers map the LFS64 names
 * to the plain functions above with macros, so its programs never call them. A hook for a
 * function the libc lacks would only be found by programs probing for it. */
#ifdef __GLIBC__
int __open_2(const char *path, int flags);
int __open64_2(const char *path, int flags);
int __openat_2(int dirfd, const char *path, int flags);
int __openat64_2(int dirfd, const char *path, int flags);

PL_EXPORT int __open_2(const char *path, int flags)
{
    int fd = REAL(__open_2)(path, flags);
    record_open(PRELOAD_API_OPEN_2, AT_FDCWD, path, flags, 0, fd);
    return fd;
}

PL_EXPORT int __open64_2(const char *path, int flags)
{
    int fd = REAL(__open64_2)(path, flags);
    record_open(PRELOAD_API_OPEN64_2, AT_FDCWD, path, flags, 0, fd);
    return fd;
}

PL_EXPORT int __openat_2(int dirfd, const char *path, int flags)
{
    int fd = REAL(__openat_2)(dirfd, path, flags);
    record_open(PRELOAD_API_OPENAT_2, dirfd, path, flags, 0, fd);
    return fd;
}

PL_EXPORT int __openat64_2(int dirfd, const char *path, int flags)
{
    int fd = REAL(__openat64_2)(dirfd, path, flags);
    record_open(PRELOAD_API_OPENAT64_2, dirfd, path, flags, 0, fd);
    return fd;
}

PL_EXPORT int open64(const char *path, int flags, ...)
{
    VA_MODE(flags);
    int fd = REAL(open64)(path, flags, mode);
    record_open(PRELOAD_API_OPEN64, AT_FDCWD, path, flags, mode, fd);
    return fd;
}

PL_EXPORT int openat64(int dirfd, const char *path, int flags, ...)
{
    VA_MODE(flags);
    int fd = REAL(openat64)(dirfd, path, flags, mode);
    record_open(PRELOAD_API_OPENAT64, dirfd, path, flags, mode, fd);
    return fd;
}

PL_EXPORT int creat64(const char *path, mode_t mode)
{
    int fd = REAL(creat64)(path, mode);
    record_open(PRELOAD_API_CREAT64, AT_FDCWD, path, O_WRONLY | O_CREAT | O_TRUNC, mode, fd);
    return fd;
}

PL_EXPORT FILE *fopen64(const char *path, const char *m)
{
    FILE *f = REAL(fopen64)(path, m);
    record_fopen(PRELOAD_API_FOPEN64, path, m, f);
    return f;
}

PL_EXPORT FILE *freopen64(const char *path, const char *m, FILE *stream)
{
    FILE *f = REAL(freopen64)(path, m, stream);
    if (path) record_fopen(PRELOAD_API_FREOPEN64, path, m, f);
    return f;
}
#endif
