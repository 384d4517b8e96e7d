/* net.c: connections and listeners, with both ends' addresses (AF_INET, AF_INET6, AF_UNIX).
 * Addresses the application passed are used as given; the other end is asked from the kernel. */
#include "hook.h"

#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

struct ends {
    char lpath[110], rpath[110];
};

static void take(const struct sockaddr_storage *ss, socklen_t len, uint16_t *family, uint8_t *addr,
                 uint16_t *port, char *path)
{
    if (len < sizeof(sa_family_t)) return;
    switch (ss->ss_family) {
    case AF_INET: {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        memcpy(addr, &in->sin_addr, 4);
        *port = ntohs(in->sin_port);
        break;
    }
    case AF_INET6: {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        memcpy(addr, &in6->sin6_addr, 16);
        *port = ntohs(in6->sin6_port);
        break;
    }
    case AF_UNIX: {
        const struct sockaddr_un *un = (const struct sockaddr_un *)ss;
        size_t n = len > offsetof(struct sockaddr_un, sun_path)
                       ? len - offsetof(struct sockaddr_un, sun_path) : 0;
        if (n > sizeof un->sun_path) n = sizeof un->sun_path;
        if (n && un->sun_path[0] == 0) { /* abstract: shown as @name */
            path[0] = '@';
            memcpy(path + 1, un->sun_path + 1, n - 1);
            path[n] = 0;
        } else {
            memcpy(path, un->sun_path, n);
            path[n] = 0;
        }
        break;
    }
    default:
        return;
    }
    *family = ss->ss_family;
}

/* A non-blocking server polls accept until EAGAIN: that is not an event. */
static int idle_accept(int r) { return r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK); }

/* remote: the address the application gave (connect) or got (accept); NULL to ask the kernel. */
static void record_net(unsigned api, int fd, int res, const struct sockaddr *remote,
                       socklen_t rlen, int local_is_given)
{
    int err = errno;
    if (!pl_enter()) return;
    struct preload_net n = {.api = (uint16_t)api, .fd = fd, .res = res < 0 ? -err : res};
    struct ends e = {{0}, {0}};
    int sock = (api == PRELOAD_API_ACCEPT || api == PRELOAD_API_ACCEPT4) && res >= 0 ? res : fd;
    struct sockaddr_storage ss;
    socklen_t len;
    uint16_t fam = 0;

    len = sizeof n.socktype;
    if (getsockopt(sock, SOL_SOCKET, SO_TYPE, &n.socktype, &len) != 0) n.socktype = 0;
    len = sizeof n.protocol;
    if (getsockopt(sock, SOL_SOCKET, SO_PROTOCOL, &n.protocol, &len) != 0) n.protocol = 0;

    if (local_is_given && remote) { /* bind: the given address is the local one */
        len = rlen < sizeof ss ? rlen : sizeof ss;
        memcpy(&ss, remote, len);
        take(&ss, len, &fam, n.laddr, &n.lport, e.lpath);
        remote = NULL;
    }
    len = sizeof ss;
    if ((!local_is_given || res == 0) && getsockname(sock, (struct sockaddr *)&ss, &len) == 0)
        take(&ss, len, &fam, n.laddr, &n.lport, e.lpath);
    if (!local_is_given && api != PRELOAD_API_LISTEN) {
        if (remote && rlen > 0) {
            len = rlen < sizeof ss ? rlen : sizeof ss;
            memcpy(&ss, remote, len);
        } else {
            len = sizeof ss;
            if (getpeername(sock, (struct sockaddr *)&ss, &len) != 0) len = 0;
        }
        take(&ss, len, &fam, n.raddr, &n.rport, e.rpath);
    }
    n.family = fam;

    char buf[sizeof(struct preload_hdr) + sizeof n + sizeof e];
    struct pl_rec r;
    pl_rec_begin(&r, buf, sizeof buf, PRELOAD_REC_NET, &n, sizeof n);
    pl_rec_str(&r, e.lpath);
    pl_rec_str(&r, e.rpath);
    pl_rec_send(&r);
    pl_leave();
    errno = err;
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
