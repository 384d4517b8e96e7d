/* openclose PATH N: N times open(PATH, O_RDONLY) then close. The file-heavy workload.
 * Dynamically linked on purpose: the libc hook (and any LD_PRELOAD tool) sees every call. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: openclose PATH N\n");
        return 2;
    }
    const char *path = argv[1];
    long n = atol(argv[2]);
    for (long i = 0; i < n; i++) {
        int fd = open(path, O_RDONLY);
        if (fd < 0) {
            perror(path);
            return 1;
        }
        close(fd);
    }
    return 0;
}
