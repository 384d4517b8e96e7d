/* record.c: building a record in a caller's buffer. Strings that do not fit are cut and the record
 * flagged, so that it always stays well-formed. */
#include "common.h"

#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

void pl_rec_begin(struct pl_rec *r, char *buf, size_t cap, unsigned kind, unsigned source,
                  const void *body, size_t body_len)
{
    struct preload_hdr h = {0};
    h.magic = PRELOAD_WIRE_MAGIC;
    h.version = PRELOAD_WIRE_VERSION;
    h.kind = (uint16_t)kind;
    h.source = (uint16_t)source;
    memcpy(buf, &h, sizeof h);
    memcpy(buf + sizeof h, body, body_len);
    r->buf = buf;
    r->cap = cap;
    r->len = sizeof h + body_len;
    r->nstr = 0;
    r->truncated = 0;
}

void pl_rec_str(struct pl_rec *r, const char *s)
{
    if (!s) s = "";
    if (r->cap <= r->len) return; /* cannot happen with sane buffers; keep the record valid */
    size_t n = strlen(s), room = r->cap - r->len - 1;
    if (n > room) {
        n = room;
        r->truncated = 1;
    }
    memcpy(r->buf + r->len, s, n);
    r->buf[r->len + n] = 0;
    r->len += n + 1;
    r->nstr++;
}

void pl_rec_adopt(struct pl_rec *r)
{
    r->len += strlen(r->buf + r->len) + 1;
    r->nstr++;
}

int pl_rec_read_strings(struct pl_rec *r, int fd)
{
    if (r->len + 1 >= r->cap) return 0;
    size_t got = 0, room = r->cap - r->len - 1;
    for (long n; got < room && (n = syscall(SYS_read, fd, r->buf + r->len + got, room - got)) > 0;)
        got += (size_t)n;
    if (!got) return 0;
    if (got == room) r->truncated = 1;
    if (r->buf[r->len + got - 1]) r->buf[r->len + got++] = 0; /* cut: end the last string */
    int n = 0;
    for (size_t i = 0; i < got; i++) n += !r->buf[r->len + i];
    r->len += got;
    r->nstr += n;
    return n;
}

void pl_rec_counts(struct pl_rec *r, char *buf, size_t cap, unsigned source, uint32_t n)
{
    struct preload_counts body = {n, 0};
    pl_rec_begin(r, buf, cap, PRELOAD_REC_COUNTS, source, &body, sizeof body);
    r->len += n * sizeof(struct preload_count); /* the entries are in place already */
    r->nstr = (int)n;
}

void pl_rec_close(struct pl_rec *r)
{
    struct preload_hdr *h = (struct preload_hdr *)r->buf;
    h->size = (uint32_t)r->len;
    h->nstr = (uint16_t)r->nstr;
    h->flags |= r->truncated ? PRELOAD_F_TRUNCATED : 0;
}
