/* launch.c: `preload-trace exec [--handoff] TARGET ARGV0 ARGS...`, in place of a program that
 * the hook cannot enter. It asks the tracer to seize it, installs the filter, and execs TARGET
 * (a path, or fd:N for fexecve) in the same process: the parent still waits for the same pid.
 * When the tracer cannot be had, the program still runs, and a BLIND record says it is unwatched.
 * Once traced, always traced (a seccomp filter cannot be removed), so the hook is taken out of
 * LD_PRELOAD for the descendants: the tracer sees them, and no call is reported twice. */
#include "trace.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static int connect_to(const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (!path || !*path || strlen(path) >= sizeof a.sun_path) return -1;
    strcpy(a.sun_path, path);
    int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (s >= 0 && connect(s, (struct sockaddr *)&a, sizeof a) != 0) {
        close(s);
        s = -1;
    }
    return s;
}

static void blind(unsigned reason, int err, const char *target)
{
    int s = connect_to(getenv("PRELOAD_SOCKET"));
    if (s < 0) return;
    struct preload_blind b = {reason, err};
    char buf[sizeof(struct preload_hdr) + sizeof b + PATH_MAX];
    struct pl_rec r;
    pl_rec_begin(&r, buf, sizeof buf, PRELOAD_REC_BLIND, PRELOAD_SRC_PTRACE, &b, sizeof b);
    pl_rec_str(&r, target);
    pl_rec_close(&r);
    struct preload_hdr *h = (struct preload_hdr *)buf;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    h->pid = getpid();
    h->ppid = getppid();
    h->seq = 1;
    h->stream = pl_stream_id(h->pid);
    h->time_ns = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
    send(s, buf, r.len, MSG_DONTWAIT | MSG_NOSIGNAL);
    close(s);
}

/* 0 when the tracer has seized this thread; else errno, and *reason */
static int ask_tracer(unsigned flags, unsigned *profile, unsigned *reason)
{
    *reason = PRELOAD_BLIND_NO_TRACER;
    int s = connect_to(getenv("PRELOAD_TRACE"));
    if (s < 0) return errno ? errno : ENOENT;
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(s, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
        prctl(PR_SET_PTRACER, (unsigned long)cred.pid, 0, 0, 0); /* Yama: let the tracer in */
    struct timeval tv = {5, 0};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct trace_req req = {TRACE_MAGIC, (int32_t)syscall(SYS_gettid), flags};
    struct trace_reply rep;
    int err = 0;
    if (send(s, &req, sizeof req, MSG_NOSIGNAL) != (ssize_t)sizeof req ||
        recv(s, &rep, sizeof rep, 0) != (ssize_t)sizeof rep)
        err = errno ? errno : EPROTO;
    close(s);
    if (err) return err;
    *reason = PRELOAD_BLIND_REFUSED;
    *profile = rep.profile;
    return rep.err;
}

static int install_filter(unsigned profile)
{
    struct sock_fprog prog;
    pl_filter(profile == PROFILE_FULL ? PROFILE_FULL : PROFILE_DEFAULT, &prog);
    /* without CAP_SYS_ADMIN a filter needs no_new_privs, which stops set-uid programs from gaining
     * privileges: try without it first */
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == 0) return 0;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return errno;
    return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) == 0 ? 0 : errno;
}

/* LD_PRELOAD without our hook (the library beside this executable). */
static void drop_hook(void)
{
    char self[PATH_MAX], hook[PATH_MAX + 16];
    const char *cur = getenv("LD_PRELOAD");
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (!cur || n <= 0) return;
    self[n] = 0;
    char *slash = strrchr(self, '/');
    if (!slash) return;
    *slash = 0;
    snprintf(hook, sizeof hook, "%s/libpreload.so", self);
    char kept[4096] = "", copy[4096];
    snprintf(copy, sizeof copy, "%s", cur);
    for (char *save, *tok = strtok_r(copy, " :", &save); tok; tok = strtok_r(NULL, " :", &save)) {
        if (strcmp(tok, hook) == 0) continue;
        if (kept[0]) strncat(kept, " ", sizeof kept - strlen(kept) - 1);
        strncat(kept, tok, sizeof kept - strlen(kept) - 1);
    }
    if (kept[0]) setenv("LD_PRELOAD", kept, 1);
    else unsetenv("LD_PRELOAD");
}

int pl_launch(int argc, char **argv)
{
    int i = 2;
    unsigned flags = 0;
    if (i < argc && strcmp(argv[i], "--handoff") == 0) {
        flags |= REQ_HANDOFF;
        i++;
    }
    if (argc - i < 2) {
        fprintf(stderr, "usage: preload-trace exec [--handoff] TARGET ARGV0 [ARG...]\n");
        return 127;
    }
    const char *target = argv[i];
    char **args = argv + i + 1;
    int fd = -1;
    if (strncmp(target, "fd:", 3) == 0) {
        fd = atoi(target + 3);
        fcntl(fd, F_SETFD, FD_CLOEXEC); /* the program must not inherit the copy the hook made */
    }

    unsigned profile = PROFILE_DEFAULT, reason;
    int err = ask_tracer(flags, &profile, &reason);
    if (!err && (err = install_filter(profile)) != 0) reason = PRELOAD_BLIND_FILTER;
    if (err) blind(reason, err, target);
    else drop_hook();

    if (fd >= 0) syscall(SYS_execveat, fd, "", args, environ, AT_EMPTY_PATH);
    else execve(target, args, environ);
    return errno == ENOENT || errno == ENOTDIR ? 127 : 126;
}
