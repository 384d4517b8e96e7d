/* loadgen DIR N RATE K: the daemon-throughput load.
 *
 * Before the clock starts, K files DIR/f0 .. DIR/f<K-1> are created with raw system calls (the
 * hook does not see them: no records). Then N times: open DIR/f<i mod K> for writing (O_WRONLY, an
 * existing file) and close it. Under the hook every open for write is exactly one record (writes
 * are never aggregated), so the run sends N records plus the process's start and end.
 * RATE: opens per second, paced on a 1 ms tick; 0 = flat out. A tick that comes late (the
 * generator was kept off its CPU) catches up by at most 2 ticks' worth and forgives the rest, so
 * that the generator's own hiccups do not turn into bursts the daemon is blamed for; the rate
 * actually offered is then a little lower, and the caller measures it.
 * Prints "N SECONDS" (the generator's own time) on stdout. The files are left for the caller. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: loadgen DIR N RATE K\n");
        return 2;
    }
    const char *dir = argv[1];
    long n = atol(argv[2]);
    double rate = atof(argv[3]);
    long k = atol(argv[4]);
    char path[4096];
    if (k < 1) k = 1;
    for (long j = 0; j < k; j++) {
        snprintf(path, sizeof path, "%s/f%ld", dir, j);
        long fd = syscall(SYS_openat, AT_FDCWD, path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0) {
            perror(path);
            return 1;
        }
        syscall(SYS_close, fd);
    }
    struct timespec tick;
    clock_gettime(CLOCK_MONOTONIC, &tick);
    double start = now(), t0 = start; /* t0: the pacing schedule's origin */
    for (long i = 0; i < n;) {
        long due = n;
        if (rate > 0) {
            long burst = (long)(rate / 500) + 1; /* 2 ticks */
            due = (long)((now() - t0) * rate) + 1;
            if (due - i > burst) { /* late: forgive the debt beyond the burst */
                t0 += (double)(due - i - burst) / rate;
                due = i + burst;
            }
            if (due > n) due = n;
        }
        for (; i < due; i++) {
            snprintf(path, sizeof path, "%s/f%ld", dir, i % k);
            int fd = open(path, O_WRONLY | O_CLOEXEC);
            if (fd < 0) {
                perror(path);
                return 1;
            }
            close(fd);
        }
        if (rate > 0 && i < n) {
            struct timespec cur;
            clock_gettime(CLOCK_MONOTONIC, &cur);
            if (cur.tv_sec > tick.tv_sec + 1) tick = cur; /* far behind: no run of past ticks */
            tick.tv_nsec += 1000000;
            if (tick.tv_nsec >= 1000000000) {
                tick.tv_sec++;
                tick.tv_nsec -= 1000000000;
            }
            while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &tick, NULL) == EINTR) {}
        }
    }
    printf("%ld %.6f\n", n, now() - start);
    return 0;
}
