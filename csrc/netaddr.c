/* netaddr.c: both ends of a socket for a NET record. The hook asks about the application's own fd;
 * the tracer about its copy of the tracee's (pidfd_getfd). Addresses the program passed are used
 * as given; the other end is asked from the kernel. */
#define _GNU_SOURCE
#include "common.h"

#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

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

void pl_net_fill(struct preload_net *n, struct pl_ends *e, int sock, const void *given,
                 unsigned glen, int local_is_given)
{
    struct sockaddr_storage ss;
    socklen_t len;
    uint16_t fam = 0;
    int ok = n->res >= 0;

    len = sizeof n->socktype;
    if (sock < 0 || getsockopt(sock, SOL_SOCKET, SO_TYPE, &n->socktype, &len) != 0) n->socktype = 0;
    len = sizeof n->protocol;
    if (sock < 0 || getsockopt(sock, SOL_SOCKET, SO_PROTOCOL, &n->protocol, &len) != 0) n->protocol = 0;

    if (local_is_given && given) { /* bind: the given address is the local one */
        len = glen < sizeof ss ? glen : sizeof ss;
        memcpy(&ss, given, len);
        take(&ss, len, &fam, n->laddr, &n->lport, e->lpath);
        given = NULL;
    }
    len = sizeof ss;
    if (sock >= 0 && (!local_is_given || ok) && getsockname(sock, (struct sockaddr *)&ss, &len) == 0)
        take(&ss, len, &fam, n->laddr, &n->lport, e->lpath);
    if (!local_is_given && n->api != PRELOAD_API_LISTEN) {
        if (given && glen > 0) {
            len = glen < sizeof ss ? glen : sizeof ss;
            memcpy(&ss, given, len);
        } else {
            len = sizeof ss;
            if (sock < 0 || getpeername(sock, (struct sockaddr *)&ss, &len) != 0) len = 0;
        }
        take(&ss, len, &fam, n->raddr, &n->rport, e->rpath);
    }
    n->family = fam;
}
