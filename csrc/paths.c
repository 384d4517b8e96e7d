/* paths.c: which paths matter. Shared by the hook and the tracer so that both aggregate, and
 * refuse to aggregate, the same files. */
#include "common.h"

#include <stdio.h>
#include <string.h>

static const char *const sensitive_prefix[] = {
    "/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/etc/pam.d/", "/etc/pam.conf",
    "/etc/ld.so.preload", "/etc/security/", "/var/run/secrets/", "/run/secrets/",
    "/proc/self/environ", "/proc/self/mem",
};
static const char *const sensitive_part[] = {"/.ssh/", "/.aws/", "/.kube/", "/.docker/config"};
static const char *const sensitive_proc_file[] = {"/environ", "/mem"}; /* of any /proc/<pid>/ */

int pl_quiet_sink(const char *p)
{
    static const char *const sinks[] = {"/dev/null", "/dev/zero", "/dev/full", "/dev/random",
                                        "/dev/urandom", "/dev/tty"};
    for (size_t i = 0; i < sizeof sinks / sizeof *sinks; i++)
        if (strcmp(p, sinks[i]) == 0) return 1;
    return 0;
}

int pl_sensitive(const char *p)
{
    for (size_t i = 0; i < sizeof sensitive_prefix / sizeof *sensitive_prefix; i++)
        if (strncmp(p, sensitive_prefix[i], strlen(sensitive_prefix[i])) == 0) return 1;
    for (size_t i = 0; i < sizeof sensitive_part / sizeof *sensitive_part; i++)
        if (strstr(p, sensitive_part[i])) return 1;
    if (strncmp(p, "/proc/", 6) == 0) {
        size_t n = strlen(p);
        for (size_t i = 0; i < sizeof sensitive_proc_file / sizeof *sensitive_proc_file; i++) {
            size_t m = strlen(sensitive_proc_file[i]);
            if (n > m && strcmp(p + n - m, sensitive_proc_file[i]) == 0) return 1;
        }
    }
    return 0;
}

void pl_normalize(char *p)
{
    char *w = p, *r = p;
    while (*r) {
        while (*r == '/') r++;
        char *seg = r;
        while (*r && *r != '/') r++;
        size_t n = (size_t)(r - seg);
        if (n == 0 || (n == 1 && seg[0] == '.')) continue;
        if (n == 2 && seg[0] == '.' && seg[1] == '.') {
            while (w > p && *--w != '/') {}
            continue;
        }
        *w++ = '/';
        memmove(w, seg, n);
        w += n;
    }
    if (w == p) *w++ = '/';
    *w = 0;
}

int pl_join(char *out, size_t base, const char *path, size_t cap)
{
    size_t n = strlen(path);
    if ((base || path[0] == '/') && base + 1 + n + 1 <= cap) {
        out[base] = '/';
        memcpy(out + base + 1, path, n + 1);
        pl_normalize(out);
        return 0;
    }
    snprintf(out + base, cap - base, "%s%s", base ? "/" : "", path); /* what fits, as given */
    return -1;
}
