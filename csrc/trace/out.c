/* out.c: the tracer's channel to the daemon. The tracer must never stall its tracees on the
 * daemon: a record the socket will not take now waits in a bounded queue, in order; beyond the
 * bound it is dropped, and its stream shows the gap (seq) and counts it (END). */
#include "trace.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define QUEUE_MAX (16u << 20)

struct queued {
    struct queued *next;
    size_t len;
    char data[];
};

static struct sockaddr_un addr;
static int fd = -1;
static struct queued *head, *tail;
static size_t queued_bytes;

void out_init(const char *socket_path)
{
    addr.sun_family = AF_UNIX;
    strncpy(addr.sun_path, socket_path, sizeof addr.sun_path - 1);
}

static int connected(void)
{
    if (fd >= 0) return 1;
    if (!addr.sun_path[0]) return 0;
    fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    int sndbuf = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        close(fd);
        fd = -1;
        return 0;
    }
    return 1;
}

/* 1 sent, 0 try later, -1 never (the daemon went away: the next call reconnects) */
static int try_send(const void *buf, size_t len)
{
    if (!connected()) return 0;
    if (send(fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL) == (ssize_t)len) return 1;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) return 0;
    close(fd);
    fd = -1;
    return connected() && send(fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL) == (ssize_t)len;
}

void out_flush(void)
{
    while (head && try_send(head->data, head->len) == 1) {
        struct queued *q = head;
        head = q->next;
        if (!head) tail = NULL;
        queued_bytes -= q->len;
        free(q);
    }
}

int out_pending(void) { return head != NULL; }

void out_send(struct proc *p, struct pl_rec *r)
{
    struct preload_hdr *h = (struct preload_hdr *)r->buf;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    pl_rec_close(r);
    h->pid = p->tgid;
    h->ppid = p->ppid;
    h->stream = p->stream;
    h->seq = ++p->seq;
    h->time_ns = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
    if (head) out_flush();
    if (!head && try_send(r->buf, r->len) == 1) return;
    struct queued *q;
    if (queued_bytes + r->len > QUEUE_MAX || !(q = malloc(sizeof *q + r->len))) {
        p->failed++;
        return;
    }
    q->next = NULL;
    q->len = r->len;
    memcpy(q->data, r->buf, r->len);
    if (tail) tail->next = q;
    else head = q;
    tail = q;
    queued_bytes += r->len;
}

void out_end(struct proc *p)
{
    calls_flush_counts(p);
    if (!p->seq) return; /* nothing was said on this stream: nothing to close */
    struct preload_end e = {PRELOAD_END_EXIT, p->failed};
    char buf[sizeof(struct preload_hdr) + sizeof e];
    struct pl_rec r;
    pl_rec_begin(&r, buf, sizeof buf, PRELOAD_REC_END, PRELOAD_SRC_PTRACE, &e, sizeof e);
    out_send(p, &r);
}
