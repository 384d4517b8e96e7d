/* elfkind.c: which attachment a program needs, from its ELF headers, fast enough to ask at every
 * exec (one open, one or two reads). `preload inspect` tells the same story in more detail
 * (preload/elf.py, pyelftools); this is the decision alone.
 *
 * Dynamic programs load the hook. Static ones do not, and Go programs make their own system calls
 * even when dynamically linked (their ELF notes name the Go toolchain): both need the tracer. A
 * dynamic program whose loader is musl's needs the hook's musl build; one that the loader will run
 * with AT_SECURE ignores LD_PRELOAD altogether. One built for another machine or word size (a
 * 32-bit program) cannot take the hook (its loader would say so on the program's stderr), and its
 * calls cannot be read by the tracer, which only lets them through. A script is decided by its interpreter, which the caller classifies in turn. */
#define _GNU_SOURCE
#include "common.h"

#include <elf.h>
#include <fcntl.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Hooks run on small stacks (threads', signal handlers' of 8 KiB): one buffer of HEAD bytes holds
 * the file's start, then serves every later read (program headers past it are read one by one). */
#define HEAD 256

/* raw system calls: inside the hook, no other hook (ours or another preload's) must run. Opening a
 * FIFO would wait for a writer and opening a device may act (take a controlling tty, arm a
 * watchdog): O_NONBLOCK and O_NOCTTY, and only a regular file is read. */
static int sys_openat(int dirfd, const char *path)
{
    return (int)syscall(SYS_openat, dirfd, path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
}
static ssize_t sys_pread(int fd, void *buf, size_t n, off_t off) { return syscall(SYS_pread64, fd, buf, n, off); }
static void sys_close(int fd) { syscall(SYS_close, fd); }

/* The file's bytes [off, off + len), len <= HEAD: in head already when within its first *got bytes,
 * else read over it (head then no longer holds the file's start: *got becomes 0). NULL when short. */
static const unsigned char *bytes_at(int fd, unsigned char *head, size_t *got, uint64_t off, size_t len)
{
    if (off <= *got && len <= *got - off) return head + off;
    *got = 0;
    return sys_pread(fd, head, len, (off_t)off) == (ssize_t)len ? head : NULL;
}

static int go_note(int fd, unsigned char *head, size_t *got, const Elf64_Phdr *ph)
{
    size_t len = ph->p_filesz < HEAD ? ph->p_filesz : HEAD;
    const unsigned char *p = bytes_at(fd, head, got, ph->p_offset, len);
    if (!p) return 0;
    for (size_t at = 0; at + sizeof(Elf64_Nhdr) <= len;) {
        Elf64_Nhdr n;
        memcpy(&n, p + at, sizeof n);
        size_t name_at = at + sizeof n, desc_at = name_at + ((n.n_namesz + 3u) & ~3u);
        if (n.n_namesz == 3 && name_at + 3 <= len && memcmp(p + name_at, "Go", 3) == 0) return 1;
        at = desc_at + ((n.n_descsz + 3u) & ~3u);
    }
    return 0;
}

/* A dynamic program built by Go's external linker (cgo) has no Go note: its section names say Go,
 * or, when section headers were stripped, the build-info magic near the start of its first
 * writable segment does (where Go's debug/buildinfo looks). */
static int file_has(int fd, unsigned char *buf, uint64_t off, uint64_t len, const char *needle, size_t n)
{
    for (uint64_t at = 0; at < len; at += HEAD - n) {
        size_t want = len - at < HEAD ? (size_t)(len - at) : HEAD;
        ssize_t got = sys_pread(fd, buf, want, (off_t)(off + at));
        if (got <= 0) return 0;
        if (memmem(buf, (size_t)got, needle, n)) return 1;
        if ((size_t)got < want || want < HEAD) return 0;
    }
    return 0;
}

/* buf: HEAD bytes to read into */
static int go_sections(int fd, unsigned char *buf, const Elf64_Ehdr *eh, const Elf64_Phdr *rw)
{
    if (eh->e_shnum && eh->e_shentsize == sizeof(Elf64_Shdr) && eh->e_shstrndx < eh->e_shnum) {
        Elf64_Shdr names;
        off_t at = (off_t)(eh->e_shoff + (uint64_t)eh->e_shstrndx * sizeof names);
        if (sys_pread(fd, &names, sizeof names, at) != (ssize_t)sizeof names) return 0;
        uint64_t len = names.sh_size < 65536 ? names.sh_size : 65536;
        return file_has(fd, buf, names.sh_offset, len, ".go.buildinfo", sizeof ".go.buildinfo") ||
               file_has(fd, buf, names.sh_offset, len, ".note.go.buildid", sizeof ".note.go.buildid");
    }
    static const char magic[] = "\xff Go buildinf:";
    return rw && file_has(fd, buf, rw->p_offset, rw->p_filesz < 65536 ? rw->p_filesz : 65536, magic,
                          sizeof magic - 1);
}

static int musl_interp(int fd, unsigned char *head, size_t *got, const Elf64_Phdr *ph)
{
    size_t len = ph->p_filesz < HEAD ? ph->p_filesz : HEAD;
    const unsigned char *name = bytes_at(fd, head, got, ph->p_offset, len);
    static const char musl[] = "ld-musl";
    return name && memmem(name, len, musl, sizeof musl - 1) != NULL;
}

/* Whether exec'ing this file raises our privileges, so that the kernel sets AT_SECURE (the
 * kernel's test in cap_bprm_creds_from_file): set-uid/set-gid to other ids, or file capabilities
 * for a caller that is not root. Bits on a nosuid mount, or under no_new_privs, raise nothing. */
static int raises_privileges(int fd, const struct stat *st)
{
    int setid = (st->st_mode & (S_ISUID | S_ISGID)) != 0;
    if (!setid && syscall(SYS_fgetxattr, fd, "security.capability", NULL, 0) <= 0) return 0;
    struct statfs fs;
    if (syscall(SYS_fstatfs, fd, &fs) == 0 && (fs.f_flags & ST_NOSUID)) return 0;
    if (syscall(SYS_prctl, PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1) return 0;
    uid_t ruid, euid, suid;
    gid_t rgid, egid, sgid;
    syscall(SYS_getresuid, &ruid, &euid, &suid);
    syscall(SYS_getresgid, &rgid, &egid, &sgid);
    if (!setid) return euid != 0;
    uid_t nu = (st->st_mode & S_ISUID) ? st->st_uid : euid;
    gid_t ng = (st->st_mode & S_ISGID) ? st->st_gid : egid;
    return nu != ruid || nu != euid || ng != rgid || ng != egid;
}

/* find_go 0: Go programs are not told apart (their dynamic ones are DYNAMIC or MUSL, static ones
 * STATIC), which spares the search through section names when no tracer could take them. */
int pl_elf_kind(int dirfd, const char *path, char *interp, size_t cap, int find_go)
{
    unsigned char head[HEAD];
    int fd = path && *path ? sys_openat(dirfd, path) : (int)syscall(SYS_fcntl, dirfd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) return PRELOAD_ELF_UNKNOWN;
    struct stat st;
    ssize_t n = syscall(SYS_fstat, fd, &st) == 0 && S_ISREG(st.st_mode) ? sys_pread(fd, head, sizeof head, 0) : -1;
    size_t got = n > 0 ? (size_t)n : 0;
    int kind = PRELOAD_ELF_UNKNOWN;
    if (got >= 2 && head[0] == '#' && head[1] == '!') {
        /* "#!  /path/to/interp arg": the interpreter's path */
        size_t i = 2, j;
        while (i < got && (head[i] == ' ' || head[i] == '\t')) i++;
        for (j = i; j < got && head[j] != ' ' && head[j] != '\t' && head[j] != '\n'; j++) {}
        if (j > i && j - i < cap && interp) {
            memcpy(interp, head + i, j - i);
            interp[j - i] = 0;
            kind = PRELOAD_ELF_SCRIPT;
        }
    } else if (got >= EI_NIDENT + 4 && memcmp(head, ELFMAG, SELFMAG) == 0 && !pl_own_kind_of_elf(head)) {
        kind = PRELOAD_ELF_FOREIGN;
    } else if (got >= sizeof(Elf64_Ehdr) && memcmp(head, ELFMAG, SELFMAG) == 0) {
        Elf64_Ehdr eh;
        memcpy(&eh, head, sizeof eh);
        int dynamic = 0, musl = 0, go = 0, have_rw = 0;
        Elf64_Phdr rw;
        for (unsigned i = 0; i < eh.e_phnum && eh.e_phentsize == sizeof(Elf64_Phdr); i++) {
            Elf64_Phdr ph;
            uint64_t at = eh.e_phoff + (uint64_t)i * sizeof ph;
            if (at <= got && sizeof ph <= got - at) memcpy(&ph, head + at, sizeof ph);
            else if (sys_pread(fd, &ph, sizeof ph, (off_t)at) != (ssize_t)sizeof ph) break;
            if (ph.p_type == PT_INTERP) dynamic = 1, musl = musl_interp(fd, head, &got, &ph);
            else if (ph.p_type == PT_NOTE && !go && find_go) go = go_note(fd, head, &got, &ph);
            else if (ph.p_type == PT_LOAD && !have_rw && (ph.p_flags & (PF_W | PF_X)) == PF_W) {
                rw = ph;
                have_rw = 1;
            }
        }
        /* a static program is traced whatever its language: only a dynamic one needs a closer look */
        if (dynamic && !go && find_go) go = go_sections(fd, head, &eh, have_rw ? &rw : NULL);
        kind = go ? PRELOAD_ELF_GO : !dynamic ? PRELOAD_ELF_STATIC : musl ? PRELOAD_ELF_MUSL : PRELOAD_ELF_DYNAMIC;
        if ((kind == PRELOAD_ELF_DYNAMIC || kind == PRELOAD_ELF_MUSL) && raises_privileges(fd, &st))
            kind |= PRELOAD_ELF_SECURE;
    }
    sys_close(fd);
    return kind;
}

int preload_elf_kind(int dirfd, const char *path, char *interp, size_t cap)
{
    return pl_elf_kind(dirfd, path, interp, cap, 1);
}
