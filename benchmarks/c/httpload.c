/* httpload PORT CONNS WARMUP SECONDS MODE: figure 8's HTTP load generator, on 127.0.0.1:PORT.
 *
 * CONNS connections in one thread (epoll), each in a closed loop: send "GET / HTTP/1.1", read the
 * whole response (headers, then Content-Length bytes), check it (status 200, body "hello\n"),
 * send the next one. MODE keepalive: the connection is kept for every request (HTTP/1.1
 * keep-alive). MODE close: "Connection: close", a new TCP connection per request (the server's
 * accept is then on the path of every request). WARMUP seconds run uncounted first, then
 * SECONDS counted.
 * Prints "REQUESTS ERRORS SECONDS" on stdout (SECONDS: the counted time as measured); an error
 * (bad response, reset, refused connection) is counted and its connection replaced. Exits 1 if
 * no request completed or more than 1% failed. */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXCONN 256
#define BODY "hello\n"

struct conn {
    int fd;
    size_t sent, got;
    char buf[4096];
};

static struct sockaddr_in addr;
static int ep, keepalive;
static const char *req;
static size_t reqlen;
static long done_count, errors;
static int counting;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void open_conn(struct conn *c)
{
    c->sent = c->got = 0;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        perror("socket");
        exit(1);
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) != 0 && errno != EINPROGRESS) {
        perror("connect");
        exit(1);
    }
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

static void close_conn(struct conn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
}

static void fail(struct conn *c)
{
    if (counting) errors++;
    close_conn(c);
    open_conn(c);
}

/* 1: a whole, correct response is in the buffer; 0: not yet; -1: wrong */
static int response_done(struct conn *c)
{
    c->buf[c->got] = 0;
    char *end = strstr(c->buf, "\r\n\r\n");
    if (!end) return c->got >= sizeof c->buf - 1 ? -1 : 0;
    if (strncmp(c->buf, "HTTP/1.1 200 ", 13) != 0) return -1;
    char *cl = strcasestr(c->buf, "\r\nContent-Length:");
    if (!cl || cl > end) return -1;
    size_t len = strtoul(cl + 17, NULL, 10), head = (size_t)(end + 4 - c->buf);
    if (c->got < head + len) return 0;
    if (c->got > head + len || len != strlen(BODY) || memcmp(end + 4, BODY, len) != 0) return -1;
    return 1;
}

static void step(struct conn *c, unsigned events)
{
    if (events & (EPOLLERR | EPOLLHUP) && !(events & EPOLLIN)) {
        fail(c);
        return;
    }
    if (c->sent < reqlen) {
        ssize_t n = send(c->fd, req + c->sent, reqlen - c->sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno != EAGAIN) fail(c);
            return;
        }
        c->sent += (size_t)n;
        if (c->sent == reqlen) {
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
            epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        }
        return;
    }
    ssize_t n = recv(c->fd, c->buf + c->got, sizeof c->buf - 1 - c->got, 0);
    if (n <= 0) {
        if (n < 0 && errno == EAGAIN) return;
        fail(c); /* closed or reset before the whole response */
        return;
    }
    c->got += (size_t)n;
    int r = response_done(c);
    if (r == 0) return;
    if (r < 0) {
        fail(c);
        return;
    }
    if (counting) done_count++;
    if (keepalive) {
        c->sent = c->got = 0;
        struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        step(c, EPOLLOUT);
    } else {
        close_conn(c);
        open_conn(c);
    }
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: httpload PORT CONNS WARMUP SECONDS keepalive|close\n");
        return 2;
    }
    int port = atoi(argv[1]), nconn = atoi(argv[2]);
    double warmup = atof(argv[3]), seconds = atof(argv[4]);
    keepalive = strcmp(argv[5], "keepalive") == 0;
    if (!keepalive && strcmp(argv[5], "close") != 0) {
        fprintf(stderr, "httpload: MODE is keepalive or close\n");
        return 2;
    }
    if (nconn < 1) nconn = 1;
    if (nconn > MAXCONN) nconn = MAXCONN;
    req = keepalive ? "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
                    : "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    reqlen = strlen(req);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ep = epoll_create1(EPOLL_CLOEXEC);
    static struct conn conns[MAXCONN];
    for (int i = 0; i < nconn; i++) open_conn(&conns[i]);
    double start = now(), t0 = 0, t1;
    struct epoll_event evs[MAXCONN];
    for (;;) {
        t1 = now();
        if (!counting && t1 - start >= warmup) {
            counting = 1;
            t0 = t1;
        }
        if (counting && t1 - t0 >= seconds) break;
        int n = epoll_wait(ep, evs, MAXCONN, 10);
        for (int i = 0; i < n; i++) step(evs[i].data.ptr, evs[i].events);
    }
    printf("%ld %ld %.6f\n", done_count, errors, t1 - t0);
    return done_count == 0 || errors * 100 > done_count ? 1 : 0;
}
