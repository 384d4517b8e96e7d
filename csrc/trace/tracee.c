/* tracee.c: reading a tracee's memory and its /proc entries. Everything read here is the traced
 * program's to choose: lengths are bounded, strings cut, failures return what was read. */
#include "trace.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#define PAGE 4096u

ssize_t pl_peek(pid_t pid, uint64_t addr, void *out, size_t len)
{
    struct iovec local = {out, len}, remote = {(void *)(uintptr_t)addr, len};
    return process_vm_readv(pid, &local, 1, &remote, 1, 0);
}

/* Page by page: a string may end just before an unmapped page, and a read across it would fail. */
ssize_t pl_peek_str(pid_t pid, uint64_t addr, char *out, size_t cap)
{
    size_t got = 0;
    if (!addr || cap == 0) return -1;
    while (got < cap - 1) {
        size_t chunk = PAGE - (size_t)((addr + got) % PAGE);
        if (chunk > cap - 1 - got) chunk = cap - 1 - got;
        ssize_t n = pl_peek(pid, addr + got, out + got, chunk);
        if (n <= 0) break;
        char *nul = memchr(out + got, 0, (size_t)n);
        if (nul) return nul - out;
        got += (size_t)n;
    }
    out[got] = 0;
    return got ? (ssize_t)got : -1;
}

int pl_tracee_link(pid_t pid, const char *what, char *out, size_t cap)
{
    char link[64];
    snprintf(link, sizeof link, "/proc/%d/%s", pid, what);
    ssize_t n = readlink(link, out, cap - 1);
    if (n <= 0) return -1;
    out[n] = 0;
    return 0;
}

int pl_tracee_fdpath(pid_t pid, int fd, char *out, size_t cap)
{
    char what[32];
    snprintf(what, sizeof what, "fd/%d", fd);
    return pl_tracee_link(pid, what, out, cap);
}

void pl_tracee_abspath(pid_t pid, int dirfd, const char *path, char *out, size_t cap)
{
    size_t base = 0;
    if (path[0] != '/' &&
        (dirfd == AT_FDCWD ? pl_tracee_link(pid, "cwd", out, cap) : pl_tracee_fdpath(pid, dirfd, out, cap)) == 0 &&
        out[0] == '/')
        base = strlen(out);
    pl_join(out, base, path, cap);
}

int pl_task_status(pid_t tid, pid_t *tgid, struct proc *p)
{
    char path[64], line[128];
    snprintf(path, sizeof path, "/proc/%d/status", tid);
    FILE *f = fopen(path, "re");
    if (!f) return -1;
    int found = 0;
    while (found != 15 && fgets(line, sizeof line, f)) {
        if (!strncmp(line, "Tgid:", 5) && sscanf(line + 5, "%d", tgid) == 1) found |= 1;
        else if (!strncmp(line, "PPid:", 5) && sscanf(line + 5, "%d", &p->ppid) == 1) found |= 2;
        else if (!strncmp(line, "Uid:", 4) && sscanf(line + 4, "%u %u", &p->uid, &p->euid) == 2) found |= 4;
        else if (!strncmp(line, "Gid:", 4) && sscanf(line + 4, "%u %u", &p->gid, &p->egid) == 2) found |= 8;
    }
    fclose(f);
    return found == 15 ? 0 : -1;
}

int pl_tracee_fd(struct proc *p, int fd)
{
    if (p->pidfd < 0) p->pidfd = (int)syscall(SYS_pidfd_open, p->tgid, 0);
    if (p->pidfd < 0) return -1;
    return (int)syscall(SYS_pidfd_getfd, p->pidfd, fd, 0);
}
