/* code.c: code that arrives without an exec: memory files (memfd_create), libraries (dlopen; one
 * from /proc/self/fd/N is the fileless load of a memfd), and memory made executable at run time.
 *
 * mmap and mprotect are hot (malloc maps memory): they return after one test of prot unless it
 * asks for PROT_EXEC. Anonymous memory made executable, or memory writable and executable at once,
 * is what JITs (node, java) do all the time and injected code does once: only the first few of a
 * process are recorded. */
#include "hook.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define EXEC_MEMORY_FIRST 8 /* recorded per process */

PL_EXPORT int memfd_create(const char *name, unsigned flags)
{
    int r = REAL(memfd_create)(name, flags);
    pl_call(PRELOAD_API_MEMFD_CREATE, r, PL_ARGS(0, flags), "s", name);
    return r;
}

/* The file a library is loaded from, as far as it can be told before the loader searches: the
 * one behind the fd for /proc/self/fd/N and /dev/fd/N (a memfd: "/memfd:NAME (deleted)"), the path
 * made absolute when it has a slash, else "" (a name the loader looks up). */
static void library_file(const char *name, char *out, size_t cap)
{
    static const char *const fd_dirs[] = {"/proc/self/fd/", "/dev/fd/"};
    out[0] = 0;
    for (size_t i = 0; i < sizeof fd_dirs / sizeof *fd_dirs; i++) {
        size_t n = strlen(fd_dirs[i]);
        if (strncmp(name, fd_dirs[i], n) == 0 && name[n] >= '0' && name[n] <= '9' &&
            pl_fdpath(atoi(name + n), out, cap) == 0)
            return;
    }
    if (strchr(name, '/')) pl_abspath(AT_FDCWD, name, out, cap);
}

static __attribute__((noinline)) void record_dlopen(const char *name, int flags)
{
    if (!name || !pl_enabled || pl_depth) return; /* dlopen(NULL): the program itself */
    char file[1024];
    int err = errno;
    library_file(name, file, sizeof file);
    errno = err;
    pl_call(PRELOAD_API_DLOPEN, 0, PL_ARGS(flags), "ss", name, file);
}

/* Recorded before the call, which ends the hook as a tail call: the loader searches the RUNPATH
 * of the library that called dlopen, and must find the program's caller there, not the hook. */
PL_EXPORT void *dlopen(const char *name, int flags)
{
    record_dlopen(name, flags);
    return REAL(dlopen)(name, flags);
}

/* ---- executable memory ---- */

/* At most EXEC_MEMORY_FIRST records per process; a forked child counts afresh. */
static int counted;

void pl_exec_memory_forget(void) { __atomic_store_n(&counted, 0, __ATOMIC_RELAXED); }

static int exec_memory_wanted(void)
{
    return pl_enabled && !pl_depth && __atomic_load_n(&counted, __ATOMIC_RELAXED) < EXEC_MEMORY_FIRST;
}

static void record_exec_memory(unsigned api, int ok, const int64_t *args)
{
    if (__atomic_add_fetch(&counted, 1, __ATOMIC_RELAXED) <= EXEC_MEMORY_FIRST)
        pl_call(api, ok ? 0 : -1, args, "");
}

static int is_memfd(int fd)
{
    char path[16];
    return fd >= 0 && pl_fdpath(fd, path, sizeof path) == 0 && strncmp(path, "/memfd:", 7) == 0;
}

/* The mapping that holds addr has no file behind it, or a memfd. */
static int anonymous_at(uintptr_t addr)
{
    char path[128]; /* a line's fields, and enough of its path to tell */
    return pl_mapping_at(addr, path, sizeof path) == 0 && (path[0] != '/' || strncmp(path, "/memfd:", 7) == 0);
}

static void exec_mmap(void *p, void *addr, size_t len, int prot, int flags, int fd, int64_t off)
{
    int err = errno;
    if (exec_memory_wanted() && ((prot & PROT_WRITE) || (flags & MAP_ANONYMOUS) || is_memfd(fd))) {
        errno = err;
        record_exec_memory(PRELOAD_API_MMAP, p != MAP_FAILED,
                           PL_ARGS((int64_t)(uintptr_t)(p != MAP_FAILED ? p : addr), (int64_t)len,
                                   prot, flags, fd, off));
    }
    errno = err;
}

PL_EXPORT void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    void *p = REAL(mmap)(addr, len, prot, flags, fd, off);
    if (PL_UNLIKELY(prot & PROT_EXEC)) exec_mmap(p, addr, len, prot, flags, fd, off);
    return p;
}

#ifdef __GLIBC__ /* musl's headers make mmap64 a macro for mmap */
PL_EXPORT void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off64_t off)
{
    void *p = REAL(mmap64)(addr, len, prot, flags, fd, off);
    if (PL_UNLIKELY(prot & PROT_EXEC)) exec_mmap(p, addr, len, prot, flags, fd, off);
    return p;
}
#endif

static void exec_mprotect(int r, void *addr, size_t len, int prot)
{
    int err = errno;
    if (!exec_memory_wanted()) return;
    int worth = (prot & PROT_WRITE) || anonymous_at((uintptr_t)addr);
    errno = err;
    if (worth) record_exec_memory(PRELOAD_API_MPROTECT, r == 0, PL_ARGS((int64_t)(uintptr_t)addr,
                                                                         (int64_t)len, prot));
    errno = err;
}

PL_EXPORT int mprotect(void *addr, size_t len, int prot)
{
    int r = REAL(mprotect)(addr, len, prot);
    if (PL_UNLIKELY(prot & PROT_EXEC)) exec_mprotect(r, addr, len, prot);
    return r;
}
