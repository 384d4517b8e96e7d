/* priv.c: changes of user, group and capabilities. seteuid and setegid are recorded as the
 * setresuid and setresgid calls they are for the kernel (-1: unchanged), as the tracer sees them. */
#include "hook.h"

#include <grp.h>
#include <linux/capability.h>
#include <sys/fsuid.h>
#include <unistd.h>

int capset(cap_user_header_t header, const cap_user_data_t data); /* libc has no header for it */

#define KEEP ((int64_t)(uid_t)-1)

PL_EXPORT int setuid(uid_t uid)
{
    int r = REAL(setuid)(uid);
    pl_call(PRELOAD_API_SETUID, r, PL_ARGS(uid), "");
    return r;
}

PL_EXPORT int setgid(gid_t gid)
{
    int r = REAL(setgid)(gid);
    pl_call(PRELOAD_API_SETGID, r, PL_ARGS(gid), "");
    return r;
}

PL_EXPORT int seteuid(uid_t euid)
{
    int r = REAL(seteuid)(euid);
    pl_call(PRELOAD_API_SETRESUID, r, PL_ARGS(KEEP, euid, KEEP), "");
    return r;
}

PL_EXPORT int setegid(gid_t egid)
{
    int r = REAL(setegid)(egid);
    pl_call(PRELOAD_API_SETRESGID, r, PL_ARGS(KEEP, egid, KEEP), "");
    return r;
}

PL_EXPORT int setreuid(uid_t ruid, uid_t euid)
{
    int r = REAL(setreuid)(ruid, euid);
    pl_call(PRELOAD_API_SETREUID, r, PL_ARGS(ruid, euid), "");
    return r;
}

PL_EXPORT int setregid(gid_t rgid, gid_t egid)
{
    int r = REAL(setregid)(rgid, egid);
    pl_call(PRELOAD_API_SETREGID, r, PL_ARGS(rgid, egid), "");
    return r;
}

PL_EXPORT int setresuid(uid_t ruid, uid_t euid, uid_t suid)
{
    int r = REAL(setresuid)(ruid, euid, suid);
    pl_call(PRELOAD_API_SETRESUID, r, PL_ARGS(ruid, euid, suid), "");
    return r;
}

PL_EXPORT int setresgid(gid_t rgid, gid_t egid, gid_t sgid)
{
    int r = REAL(setresgid)(rgid, egid, sgid);
    pl_call(PRELOAD_API_SETRESGID, r, PL_ARGS(rgid, egid, sgid), "");
    return r;
}

PL_EXPORT int setgroups(size_t size, const gid_t *list)
{
    int r = REAL(setgroups)(size, list);
    pl_call(PRELOAD_API_SETGROUPS, r, PL_ARGS((int64_t)size), "");
    return r;
}

PL_EXPORT int setfsuid(uid_t uid)
{
    int r = REAL(setfsuid)(uid); /* the previous fsuid: no error to keep */
    pl_call(PRELOAD_API_SETFSUID, r, PL_ARGS(uid), "");
    return r;
}

PL_EXPORT int setfsgid(gid_t gid)
{
    int r = REAL(setfsgid)(gid);
    pl_call(PRELOAD_API_SETFSGID, r, PL_ARGS(gid), "");
    return r;
}

/* The sets as 64-bit masks: versions 2 and 3 pass two 32-bit halves, version 1 one. Read only
 * after a success: the kernel read them, so the memory is there. */
void pl_capset_record(long res, const void *header, const void *data)
{
    const struct __user_cap_header_struct *h = header;
    const struct __user_cap_data_struct *d = data;
    uint64_t eff = 0, perm = 0, inh = 0;
    if (res == 0 && d) {
        int n = h->version == _LINUX_CAPABILITY_VERSION_1 ? 1 : 2;
        for (int i = 0; i < n; i++) {
            eff |= (uint64_t)d[i].effective << (32 * i);
            perm |= (uint64_t)d[i].permitted << (32 * i);
            inh |= (uint64_t)d[i].inheritable << (32 * i);
        }
    }
    pl_call(PRELOAD_API_CAPSET, res, PL_ARGS(res == 0 ? h->pid : 0, (int64_t)eff, (int64_t)perm,
                                             (int64_t)inh), "");
}

PL_EXPORT int capset(cap_user_header_t header, const cap_user_data_t data)
{
    int r = REAL(capset)(header, data);
    pl_capset_record(r, header, data);
    return r;
}
