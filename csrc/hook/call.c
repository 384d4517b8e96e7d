/* call.c: the CALL record every family of watched calls (change.c, priv.c, code.c, ns.c) sends. */
#include "hook.h"

#include <stdarg.h>
#include <string.h>
#include <sys/uio.h>

/* A failed call may have failed before the kernel read its arguments (a capability check comes
 * first in init_module, pivot_root, umount2...), so its pointers may be anything: they are read
 * through the kernel, page by page, and a bad one gives an empty string instead of a crash. */
static int copy_untrusted(const char *src, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = 0;
    while (src && n + 1 < cap) {
        size_t want = 4096 - ((uintptr_t)(src + n) & 4095);
        if (want > cap - 1 - n) want = cap - 1 - n;
        struct iovec l = {out + n, want}, rm = {(void *)(src + n), want};
        ssize_t got = process_vm_readv(pl_self(), &l, 1, &rm, 1, 0);
        if (got <= 0) {
            out[0] = 0;
            return -1;
        }
        if (memchr(out + n, 0, (size_t)got)) return 0;
        n += (size_t)got;
    }
    out[n] = 0;
    return 0;
}

/* The copy goes into the second half of out and is resolved into the first: no buffer on the stack.
 * 1 when the path had to be cut. */
static int abspath_untrusted(int dirfd, const char *path, char *out, size_t cap)
{
    char *copy = out + cap / 2;
    size_t room = cap - cap / 2;
    if (copy_untrusted(path, copy, room) != 0) return 0;
    int cut = strlen(copy) + 1 >= room;
    return pl_abspath(dirfd, copy, out, cap / 2) != 0 || cut;
}

void pl_call(unsigned api, long res, const int64_t *args, const char *spec, ...)
{
    int err = errno;
    if (!pl_enter()) return;
    struct preload_call c = {.api = (uint16_t)api, .res = res < 0 ? -err : (int32_t)res};
    if (args) memcpy(c.args, args, sizeof c.args);
    char buf[PL_BUF];
    struct pl_rec r;
    pl_rec_begin(&r, buf, sizeof buf, PRELOAD_REC_CALL, PRELOAD_SRC_HOOK, &c, sizeof c);
    int failed = res < 0;
    va_list ap;
    va_start(ap, spec);
    for (const char *s = spec; *s; s++) {
        char *out = r.buf + r.len;
        size_t room = (r.cap - r.len) / strlen(s); /* shared with the strings still to come */
        out[0] = 0;
        if (*s == 'p') {
            int dirfd = va_arg(ap, int);
            const char *path = va_arg(ap, const char *);
            if (!failed) pl_abspath(dirfd, path, out, room);
            else if (abspath_untrusted(dirfd, path, out, room)) r.truncated = 1;
        } else if (*s == 'f') {
            if (pl_fdname(va_arg(ap, int), out, room) != 0) out[0] = 0; /* a path, or "uts:[…]"… */
        } else {
            const char *str = va_arg(ap, const char *);
            if (failed) {
                copy_untrusted(str, out, room);
            } else if (str) {
                size_t n = strnlen(str, room - 1);
                memcpy(out, str, n);
                out[n] = 0;
            }
        }
        if (strlen(out) + 1 >= room) r.truncated = 1;
        pl_rec_adopt(&r);
    }
    va_end(ap);
    pl_rec_send(&r);
    pl_leave();
    errno = err;
}
