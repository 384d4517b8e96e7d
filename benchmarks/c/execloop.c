/* execloop PROG N: N times fork, execv(PROG) in the child, wait for it in the parent. Built
 * -static (figure 6), as is PROG (c/true.c): a tree of static processes, which `preload run`
 * traces with ptrace and a seccomp filter; every iteration is one fork, one execve and one exit. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: execloop PROG N\n");
        return 2;
    }
    char *const args[] = {argv[1], NULL};
    long n = atol(argv[2]);
    for (long i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 1;
        }
        if (pid == 0) {
            execv(argv[1], args);
            perror(argv[1]);
            _exit(127);
        }
        int st;
        if (waitpid(pid, &st, 0) != pid) {
            perror("waitpid");
            return 1;
        }
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "execloop: %s ended with status 0x%x at iteration %ld\n", argv[1], st, i);
            return 1;
        }
    }
    return 0;
}
