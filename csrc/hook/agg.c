/* agg.c: absolute paths and in-process aggregation of repeated opens.
 *
 * A busy process opens the same files thousands of times a second. The first successful read-only
 * open of a path (and the first failure with a given errno) is recorded; later identical ones are
 * only counted here and sent as COUNTS at exit, before exec, and every few seconds. Writes and
 * sensitive paths are never aggregated. The table is keyed by the path as the program named it
 * (cheap to compute on every call); what is recorded is the file the kernel opened. The table is
 * lock-free: threads race only on atomics. */
#include "hook.h"

#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PL_SLOTS 2048 /* power of two */
#define PL_PROBES 32
#define PL_FLUSH_EVERY 4096 /* repeats between looks at the clock */
#define PL_FLUSH_NS 2000000000ULL

struct slot {
    uint64_t key;
    uint64_t count;
};

static struct slot table[PL_SLOTS];
static int table_state; /* 0 live, 1 stale after fork, 2 being cleared */
static uint64_t repeats, unsent, last_flush_ns; /* unsent: repeats counted since the last flush */
static int flushing;

/* Built by hand: snprintf is not async-signal-safe, and its frame is large. */
int pl_fdname(int fd, char *out, size_t cap)
{
    static const char dir[] = "/proc/self/fd/";
    char link[sizeof dir + 11], digits[11];
    size_t nd = 0;
    if (fd < 0 || cap < 2) return -1;
    do digits[nd++] = (char)('0' + fd % 10); while (fd /= 10);
    memcpy(link, dir, sizeof dir - 1);
    for (size_t i = 0; i < nd; i++) link[sizeof dir - 1 + i] = digits[nd - 1 - i];
    link[sizeof dir - 1 + nd] = 0;
    ssize_t n = readlink(link, out, cap - 1);
    if (n <= 0) return -1;
    out[n] = 0;
    return 0;
}

int pl_fdpath(int fd, char *out, size_t cap)
{
    /* read aside first (128 bytes more of stack): pipes, sockets, namespaces and anonymous files
     * have no path, and what out held must then stay as it was. A path longer than cap is cut. */
    char head[128];
    if (cap < 2 || pl_fdname(fd, head, sizeof head) != 0 || head[0] != '/') return -1;
    size_t n = strlen(head);
    if (n == sizeof head - 1) return pl_fdname(fd, out, cap) == 0 && out[0] == '/' ? 0 : -1; /* longer */
    if (n >= cap) n = cap - 1;
    memcpy(out, head, n);
    out[n] = 0;
    return 0;
}

int pl_mapping_at(uintptr_t addr, char *out, size_t cap)
{
    int fd = (int)syscall(SYS_openat, AT_FDCWD, "/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    char chunk[256];
    size_t len = 0;
    int found = -1;
    ssize_t n;
    while (found < 0 && (n = syscall(SYS_read, fd, chunk, sizeof chunk)) > 0) {
        for (ssize_t i = 0; i < n && found < 0; i++) {
            if (chunk[i] != '\n') {
                if (len < cap - 1) out[len++] = chunk[i]; /* a longer line keeps its start */
                continue;
            }
            out[len] = 0;
            len = 0;
            char *p;
            uintptr_t lo = strtoul(out, &p, 16), hi = *p == '-' ? strtoul(p + 1, &p, 16) : 0;
            if (addr < lo || addr >= hi) continue;
            found = 0;
            /* "start-end perms offset dev inode   path": the path, when there is one */
            for (int field = 0; field < 4 && p; field++) p = strchr(p + 1, ' ');
            while (p && *p == ' ') p++;
            memmove(out, p ? p : "", p ? strlen(p) + 1 : 1);
        }
    }
    syscall(SYS_close, fd);
    if (found < 0) out[0] = 0;
    return found;
}

int pl_abspath(int dirfd, const char *path, char *out, size_t cap)
{
    size_t base = 0;
    if (!path) path = "";
    if (path[0] != '/' && (dirfd == AT_FDCWD ? getcwd(out, cap) != NULL : pl_fdpath(dirfd, out, cap) == 0))
        base = strlen(out);
    return pl_join(out, base, path, cap);
}

static uint64_t hash_path(const char *p, int res, int mode)
{
    static uint64_t seed;
    uint64_t h = __atomic_load_n(&seed, __ATOMIC_RELAXED);
    if (PL_UNLIKELY(!h)) { /* per process random: colliding paths cannot be crafted in advance */
        const unsigned char *rnd = (const unsigned char *)getauxval(AT_RANDOM);
        h = 1469598103934665603ULL;
        if (rnd) memcpy(&h, rnd + 8, sizeof h);
        h |= 1;
        __atomic_store_n(&seed, h, __ATOMIC_RELAXED);
    }
    for (; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    h ^= (uint64_t)(uint32_t)(res < 0 ? res : 0) * 0x9e3779b97f4a7c15ULL;
    h ^= (uint64_t)(uint32_t)mode * 0xc2b2ae3d27d4eb4fULL;
    return h ? h : 1;
}

void pl_table_forget(void) { __atomic_store_n(&table_state, 1, __ATOMIC_RELEASE); }

static int table_live(void)
{
    int st = __atomic_load_n(&table_state, __ATOMIC_ACQUIRE);
    if (PL_UNLIKELY(st != 0)) {
        int stale = 1;
        if (st != 1 || !__atomic_compare_exchange_n(&table_state, &stale, 2, 0, __ATOMIC_ACQ_REL,
                                                    __ATOMIC_ACQUIRE))
            return 0; /* another thread is clearing: do not aggregate meanwhile */
        memset(table, 0, sizeof table);
        repeats = unsent = 0;
        __atomic_store_n(&table_state, 0, __ATOMIC_RELEASE);
    }
    return 1;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void counted_repeat(struct slot *s)
{
    __atomic_add_fetch(&s->count, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&unsent, 1, __ATOMIC_RELAXED);
    if (__atomic_add_fetch(&repeats, 1, __ATOMIC_RELAXED) % PL_FLUSH_EVERY) return;
    uint64_t t = now_ns();
    if (t - __atomic_load_n(&last_flush_ns, __ATOMIC_RELAXED) >= PL_FLUSH_NS) pl_flush_counts();
}

int pl_repeat(const char *abspath, int res, int mode, int always, uint64_t *hash)
{
    *hash = 0;
    if (always || !table_live()) return 0;
    uint64_t h = *hash = hash_path(abspath, res, mode);
    for (unsigned i = 0; i < PL_PROBES; i++) {
        struct slot *s = &table[(h + i) & (PL_SLOTS - 1)];
        uint64_t k = __atomic_load_n(&s->key, __ATOMIC_ACQUIRE);
        if (k == h) {
            counted_repeat(s);
            return 1;
        }
        if (k == 0) return 0;
    }
    return 0;
}

int pl_remember(uint64_t hash)
{
    if (!hash || !table_live()) return 0;
    for (unsigned i = 0; i < PL_PROBES; i++) {
        struct slot *s = &table[(hash + i) & (PL_SLOTS - 1)];
        uint64_t k = 0;
        if (__atomic_compare_exchange_n(&s->key, &k, hash, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            return 1;
        if (k == hash) return 0; /* another thread remembered it a moment ago: ours is recorded */
    }
    return 0; /* table full around this hash: such opens are recorded in full */
}

void pl_flush_counts(void)
{
    int idle = 0;
    /* nothing counted: do not even look at the table (a short-lived process would fault in all
     * of its pages just to find them empty) */
    if (!__atomic_exchange_n(&unsent, 0, __ATOMIC_ACQ_REL) ||
        __atomic_load_n(&table_state, __ATOMIC_ACQUIRE) != 0 ||
        !__atomic_compare_exchange_n(&flushing, &idle, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        return;
    __atomic_store_n(&last_flush_ns, now_ns(), __ATOMIC_RELAXED);
    enum { PER_RECORD = 64 }; /* fits PL_BUF: this may run inside an open hook */
    char buf[sizeof(struct preload_hdr) + sizeof(struct preload_counts) +
             PER_RECORD * sizeof(struct preload_count)];
    struct preload_count *entries =
        (struct preload_count *)(buf + sizeof(struct preload_hdr) + sizeof(struct preload_counts));
    uint32_t n = 0;
    for (unsigned i = 0; i <= PL_SLOTS; i++) {
        if (i < PL_SLOTS) {
            uint64_t c = __atomic_exchange_n(&table[i].count, 0, __ATOMIC_RELAXED);
            if (!c) continue;
            entries[n].path_hash = __atomic_load_n(&table[i].key, __ATOMIC_RELAXED);
            entries[n].count = c;
            n++;
        }
        if (n && (n == PER_RECORD || i == PL_SLOTS)) {
            struct pl_rec r;
            pl_rec_counts(&r, buf, sizeof buf, PRELOAD_SRC_HOOK, n);
            pl_rec_send(&r);
            n = 0;
        }
    }
    __atomic_store_n(&flushing, 0, __ATOMIC_RELEASE);
}
