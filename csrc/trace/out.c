/* out.c: the tracer's channel to the daemon. Records are gathered while tracees wait for us and
 * sent when the tracer has nothing else to do, many in one sendmmsg: a stopped program is resumed
 * first, and the daemon is woken once per round instead of once per record. The tracer must never
 * stall its tracees on the daemon: what the socket will not take now waits in a bounded queue, in
 * order; beyond the bound it is dropped, and its stream shows the gap (seq) and counts it (END). */
#include "trace.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define BATCH_BYTES (256u << 10)
#define BATCH_RECORDS 256
#define QUEUE_MAX (16u << 20)
#define OUT_DELAY_NS 10000000ULL /* a record waits at most this long (plus a wakeup) for company */

struct queued {
    struct queued *next;
    size_t len;
    char data[];
};

static struct sockaddr_un addr;
static int fd = -1;
static char batch[BATCH_BYTES];
static size_t batch_len;
static struct mmsghdr msgs[BATCH_RECORDS];
static struct iovec iov[BATCH_RECORDS];
static unsigned nbatch;
static struct queued *head, *tail; /* what the socket refused, oldest first */
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

/* Sends up to n messages; returns how many went. A dead daemon: reconnect (a restarted one
 * listens on the socket the supervisor keeps) and try once more. */
static unsigned send_some(struct mmsghdr *m, unsigned n)
{
    for (int attempt = 0; attempt < 2 && n; attempt++) {
        if (!connected()) return 0;
        int sent = sendmmsg(fd, m, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (sent >= 0) return (unsigned)sent;
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) return 0;
        close(fd);
        fd = -1;
    }
    return 0;
}

static void enqueue(const char *data, size_t len)
{
    struct queued *q;
    if (queued_bytes + len > QUEUE_MAX || !(q = malloc(sizeof *q + len)))
        return; /* dropped: its stream's seq has a gap, which the report counts as lost */
    q->next = NULL;
    q->len = len;
    memcpy(q->data, data, len);
    if (tail) tail->next = q;
    else head = q;
    tail = q;
    queued_bytes += len;
}

static void flush_queue(void)
{
    while (head) {
        struct mmsghdr m = {0};
        struct iovec v = {head->data, head->len};
        m.msg_hdr.msg_iov = &v;
        m.msg_hdr.msg_iovlen = 1;
        if (send_some(&m, 1) != 1) return;
        struct queued *q = head;
        head = q->next;
        if (!head) tail = NULL;
        queued_bytes -= q->len;
        free(q);
    }
}

void out_flush(void)
{
    flush_queue();
    unsigned sent = head ? 0 : send_some(msgs, nbatch); /* never ahead of older records */
    for (unsigned i = sent; i < nbatch; i++) enqueue(iov[i].iov_base, iov[i].iov_len);
    nbatch = 0;
    batch_len = 0;
}

int out_pending(void) { return head != NULL || nbatch != 0; }

/* Worth a send now: enough records to fill a daemon's round, or the oldest has waited long enough.
 * Each send wakes the daemon, whose CPU time a busy program on a small machine would miss. */
int out_due(void)
{
    if (head) return 1;
    if (!nbatch) return 0;
    if (nbatch >= 64) return 1;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    const struct preload_hdr *h = (const struct preload_hdr *)batch;
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec - h->time_ns > OUT_DELAY_NS;
}

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
    if (nbatch == BATCH_RECORDS || batch_len + r->len > sizeof batch) out_flush();
    memcpy(batch + batch_len, r->buf, r->len);
    iov[nbatch] = (struct iovec){batch + batch_len, r->len};
    memset(&msgs[nbatch], 0, sizeof msgs[nbatch]);
    msgs[nbatch].msg_hdr.msg_iov = &iov[nbatch];
    msgs[nbatch].msg_hdr.msg_iovlen = 1;
    nbatch++;
    batch_len += r->len;
}

void out_end(struct proc *p)
{
    calls_flush_counts(p);
    if (!p->seq) return; /* nothing was said on this stream: nothing to close */
    /* failed_sends stays 0: a record dropped here may belong to a stream that has ended already;
     * every drop is a gap in its stream's seq, counted as lost all the same */
    struct preload_end e = {PRELOAD_END_EXIT, 0};
    char buf[sizeof(struct preload_hdr) + sizeof e];
    struct pl_rec r;
    pl_rec_begin(&r, buf, sizeof buf, PRELOAD_REC_END, PRELOAD_SRC_PTRACE, &e, sizeof e);
    out_send(p, &r);
}
