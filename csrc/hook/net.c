/* net.c: connections and listeners, with both ends' addresses (AF_INET, AF_INET6, AF_UNIX); raw
 * and packet sockets; a socket made the standard input or output (a reverse shell). */
#include "hook.h"

#include <sys/socket.h>

/* A non-blocking server polls accept until EAGAIN: that is not an event. */
static int idle_accept(int r) { return r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK); }

/* remote: the address the application gave (connect) or got (accept); NULL to ask the kernel. */
static void record_net(unsigned api, int fd, int res, const struct sockaddr *remote,
                       socklen_t rlen, int local_is_given)
{
    int err = errno;
    if (!pl_enter()) return;
    struct preload_net n = {.api = (uint16_t)api, .fd = fd, .res = res < 0 ? -err : res};
    struct pl_ends e = {{0}, {0}};
    int sock = (api == PRELOAD_API_ACCEPT || api == PRELOAD_API_ACCEPT4) && res >= 0 ? res : fd;
    pl_net_fill(&n, &e, sock, remote, remote ? rlen : 0, local_is_given);

    char buf[sizeof(struct preload_hdr) + sizeof n + sizeof e];
    struct pl_rec r;
    pl_rec_begin(&r, buf, sizeof buf, PRELOAD_REC_NET, PRELOAD_SRC_HOOK, &n, sizeof n);
    pl_rec_str(&r, e.lpath);
    pl_rec_str(&r, e.rpath);
    pl_rec_send(&r);
    pl_leave();
    errno = err;
}

/* Only the sockets that see or forge whole packets: every other socket is a connect or a bind
 * later. */
PL_EXPORT int socket(int domain, int type, int protocol)
{
    int s = REAL(socket)(domain, type, protocol);
    if (PL_UNLIKELY(domain == AF_PACKET || (type & 0xf) == SOCK_RAW))
        pl_call(PRELOAD_API_SOCKET, s, PL_ARGS(domain, type, protocol), "");
    return s;
}

/* fd 0, 1 or 2 has just become a copy of oldfd: recorded when that is a socket, with its ends. */
void pl_dup_record(unsigned api, int oldfd, int newfd)
{
    int err = errno, type;
    socklen_t len = sizeof type;
    int sock = getsockopt(newfd, SOL_SOCKET, SO_TYPE, &type, &len) == 0;
    errno = err;
    if (sock) record_net(api, oldfd, newfd, NULL, 0, 0);
}

PL_EXPORT int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    int r = REAL(connect)(fd, addr, len);
    record_net(PRELOAD_API_CONNECT, fd, r, addr, len, 0);
    return r;
}

PL_EXPORT int bind(int fd, const struct sockaddr *addr, socklen_t len)
{
    int r = REAL(bind)(fd, addr, len);
    record_net(PRELOAD_API_BIND, fd, r, addr, len, 1);
    return r;
}

PL_EXPORT int listen(int fd, int backlog)
{
    int r = REAL(listen)(fd, backlog);
    record_net(PRELOAD_API_LISTEN, fd, r, NULL, 0, 0);
    return r;
}

PL_EXPORT int accept(int fd, struct sockaddr *addr, socklen_t *len)
{
    int r = REAL(accept)(fd, addr, len);
    if (!idle_accept(r))
        record_net(PRELOAD_API_ACCEPT, fd, r, r >= 0 && addr && len ? addr : NULL,
               r >= 0 && addr && len ? *len : 0, 0);
    return r;
}

PL_EXPORT int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    int r = REAL(accept4)(fd, addr, len, flags);
    if (!idle_accept(r))
        record_net(PRELOAD_API_ACCEPT4, fd, r, r >= 0 && addr && len ? addr : NULL,
               r >= 0 && addr && len ? *len : 0, 0);
    return r;
}
