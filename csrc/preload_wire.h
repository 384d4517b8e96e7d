/* preload_wire.h: the records that the hook and the tracer send to the daemon.
 *
 * One header serves the C compile and the cffi cdef, so it holds only integer #defines, plain
 * structs and prototypes (no includes, no expressions in #defines, no macros with arguments).
 *
 * A record is one SOCK_SEQPACKET message:
 *   struct preload_hdr | kind-specific body | nstr NUL-terminated strings (or, for COUNTS, entries)
 * Every record is untrusted input for the daemon: preload_check() validates before anything is read.
 */

#define PRELOAD_WIRE_MAGIC 826559568 /* 0x31444c50: "PLD1" in memory */
#define PRELOAD_WIRE_VERSION 1
#define PRELOAD_MAX_RECORD 16384

/* kinds */
#define PRELOAD_REC_START 1  /* a process image starts (library constructor) */
#define PRELOAD_REC_EXEC 2   /* the caller's side of exec, posix_spawn, system, popen */
#define PRELOAD_REC_OPEN 3   /* open, openat, creat, fopen, freopen and their variants */
#define PRELOAD_REC_NET 4    /* connect, bind, listen, accept, accept4 */
#define PRELOAD_REC_COUNTS 5 /* repeats that were aggregated in-process, by path hash */
#define PRELOAD_REC_END 6    /* a process image ends: the header's seq is the stream's last */
#define PRELOAD_REC_CALL 7   /* any other watched call: files changed, privileges, namespaces... */
#define PRELOAD_REC_BLIND 8  /* a program that runs unobserved, and why */
#define PRELOAD_REC_KIND_MAX 8

/* header flags */
#define PRELOAD_F_TRUNCATED 1 /* strings were cut to fit PRELOAD_MAX_RECORD */
#define PRELOAD_F_HANDOFF 2   /* EXEC: the program is started under the tracer */

/* sources */
#define PRELOAD_SRC_HOOK 1
#define PRELOAD_SRC_PTRACE 2

/* api: which entry point the application called */
#define PRELOAD_API_EXECVE 1
#define PRELOAD_API_EXECV 2
#define PRELOAD_API_EXECVP 3
#define PRELOAD_API_EXECVPE 4
#define PRELOAD_API_EXECL 5
#define PRELOAD_API_EXECLP 6
#define PRELOAD_API_EXECLE 7
#define PRELOAD_API_EXECVEAT 8
#define PRELOAD_API_FEXECVE 9
#define PRELOAD_API_POSIX_SPAWN 10
#define PRELOAD_API_POSIX_SPAWNP 11
#define PRELOAD_API_SYSTEM 12
#define PRELOAD_API_POPEN 13
#define PRELOAD_API_OPEN 20
#define PRELOAD_API_OPEN64 21
#define PRELOAD_API_OPENAT 22
#define PRELOAD_API_OPENAT64 23
#define PRELOAD_API_OPEN_2 24
#define PRELOAD_API_OPENAT_2 25
#define PRELOAD_API_CREAT 26
#define PRELOAD_API_CREAT64 27
#define PRELOAD_API_FOPEN 28
#define PRELOAD_API_FOPEN64 29
#define PRELOAD_API_FREOPEN 30
#define PRELOAD_API_FREOPEN64 31
#define PRELOAD_API_OPEN64_2 32
#define PRELOAD_API_OPENAT64_2 33
#define PRELOAD_API_CONNECT 40
#define PRELOAD_API_BIND 41
#define PRELOAD_API_LISTEN 42
#define PRELOAD_API_ACCEPT 43
#define PRELOAD_API_ACCEPT4 44
#define PRELOAD_API_SOCKET 45
/* NET records of a socket put on fd 0, 1 or 2: fd the socket, res the new fd */
#define PRELOAD_API_DUP 46
#define PRELOAD_API_DUP2 47
#define PRELOAD_API_DUP3 48
#define PRELOAD_API_OPENAT2 34
/* CALL records: the api names the call; args are its raw arguments, strings as listed */
#define PRELOAD_API_SETUID 60
#define PRELOAD_API_SETGID 61
#define PRELOAD_API_SETREUID 62
#define PRELOAD_API_SETREGID 63
#define PRELOAD_API_SETRESUID 64
#define PRELOAD_API_SETRESGID 65
#define PRELOAD_API_SETGROUPS 66
#define PRELOAD_API_SETFSUID 67
#define PRELOAD_API_SETFSGID 68
#define PRELOAD_API_CAPSET 69       /* args: pid, effective, permitted, inheritable (64-bit sets) */
#define PRELOAD_API_PTRACE 70
#define PRELOAD_API_MEMFD_CREATE 71 /* strings: name */
#define PRELOAD_API_MOUNT 72        /* strings: source, target, fstype */
#define PRELOAD_API_UMOUNT2 73      /* strings: target */
#define PRELOAD_API_UNSHARE 74
#define PRELOAD_API_SETNS 75        /* strings: the namespace file */
#define PRELOAD_API_INIT_MODULE 76  /* strings: parameters */
#define PRELOAD_API_FINIT_MODULE 77 /* strings: module file, parameters */
#define PRELOAD_API_IO_URING_SETUP 78
#define PRELOAD_API_CHROOT 79       /* strings: path */
#define PRELOAD_API_UNLINK 80       /* strings: path */
#define PRELOAD_API_UNLINKAT 81     /* strings: path */
#define PRELOAD_API_RENAME 82       /* strings: old path, new path */
#define PRELOAD_API_RENAMEAT 83     /* strings: old path, new path */
#define PRELOAD_API_RENAMEAT2 84    /* strings: old path, new path */
#define PRELOAD_API_CHMOD 85        /* strings: path */
#define PRELOAD_API_FCHMOD 86       /* strings: path */
#define PRELOAD_API_FCHMODAT 87     /* strings: path */
#define PRELOAD_API_LINK 88         /* strings: existing path, new link */
#define PRELOAD_API_LINKAT 89       /* strings: existing path, new link */
#define PRELOAD_API_SYMLINK 90      /* strings: target as written, new link */
#define PRELOAD_API_SYMLINKAT 91    /* strings: target as written, new link */
#define PRELOAD_API_CHOWN 92        /* strings: path */
#define PRELOAD_API_LCHOWN 93       /* strings: path */
#define PRELOAD_API_FCHOWN 94       /* strings: path */
#define PRELOAD_API_FCHOWNAT 95     /* strings: path */
#define PRELOAD_API_TRUNCATE 96     /* strings: path */
#define PRELOAD_API_MKDIR 97        /* strings: path */
#define PRELOAD_API_HOOK_REMOVED 98 /* an exec whose environment lost the hook; strings: program, argv[...] */
#define PRELOAD_API_FOREIGN_ABI 99  /* a 32-bit or x32 system call, refused; args[0] its number */
#define PRELOAD_API_MKDIRAT 100     /* strings: path */
#define PRELOAD_API_MKNOD 101       /* strings: path */
#define PRELOAD_API_MKNODAT 102     /* strings: path */
#define PRELOAD_API_PIVOT_ROOT 103  /* strings: new root, where the old one goes */
#define PRELOAD_API_RMDIR 104       /* strings: path */
#define PRELOAD_API_DLOPEN 110      /* a library loaded; strings: the name as given, the file */
/* anonymous memory made executable, or writable and executable (first few of a process) */
#define PRELOAD_API_MMAP 111        /* args as mmap's */
#define PRELOAD_API_MPROTECT 112    /* args as mprotect's */

/* exec phases */
#define PRELOAD_EXEC_ATTEMPT 1 /* sent before the call: an exec that succeeds never returns */
#define PRELOAD_EXEC_FAILED 2  /* the call returned an error; res is -errno */

/* end reasons */
#define PRELOAD_END_EXIT 1
#define PRELOAD_END_SPOOL 2 /* recovered by the daemon from a spool file */

struct preload_hdr {
    uint32_t magic;
    uint16_t version;
    uint16_t kind;
    uint32_t size;   /* whole record: header, body and strings */
    uint16_t source; /* PRELOAD_SRC_* */
    uint16_t nstr;   /* strings after the body (entries, for COUNTS) */
    uint32_t flags;  /* PRELOAD_F_* */
    int32_t pid;
    int32_t ppid;
    uint32_t seq;    /* 1, 2, ... within the stream; a gap is a lost record */
    uint64_t stream; /* one process image: random per exec, renewed at fork */
    uint64_t time_ns; /* CLOCK_REALTIME */
};

/* strings: exe, cwd, argv[0..argc-1] */
struct preload_start {
    uint32_t uid;
    uint32_t euid;
    uint32_t gid;
    uint32_t egid;
    uint32_t argc;
    uint32_t attach; /* PRELOAD_SRC_* that covers this process */
};

/* strings: path (as resolved by the caller for the p-variants), argv[...] */
struct preload_exec {
    uint16_t api;
    uint16_t phase; /* PRELOAD_EXEC_* */
    int32_t res;    /* 0 for an attempt, -errno for a failure */
    int32_t fd;     /* execveat dirfd or fexecve fd, else -1 */
    uint32_t argc;
};

/* strings: path, absolute where it could be resolved */
struct preload_open {
    uint16_t api;
    uint16_t repeatable; /* 1 when later identical opens are aggregated under path_hash */
    int32_t flags;
    uint32_t mode;
    int32_t res; /* fd, or -errno */
    uint64_t path_hash;
};

/* strings: local unix path, remote unix path (empty when not AF_UNIX) */
struct preload_net {
    uint16_t api;
    uint16_t family;
    int32_t fd;
    int32_t res; /* 0, accepted fd, or -errno */
    int32_t socktype;
    int32_t protocol;
    uint16_t lport;
    uint16_t rport;
    uint8_t laddr[16];
    uint8_t raddr[16];
};

/* strings: as listed for the api; paths absolute where they could be resolved */
struct preload_call {
    uint16_t api;
    uint16_t pad;
    int32_t res; /* the call's result, or -errno */
    int64_t args[6];
};

/* blind reasons */
#define PRELOAD_BLIND_NO_TRACER 1 /* the tracer could not be reached */
#define PRELOAD_BLIND_REFUSED 2   /* the tracer could not attach; err says why */
#define PRELOAD_BLIND_FILTER 3    /* the seccomp filter could not be installed; err says why */
#define PRELOAD_BLIND_NO_VARIANT 4 /* no build of the hook for the program's libc (musl, glibc) */
#define PRELOAD_BLIND_SECURE 5     /* set-id or file capabilities: the loader ignores LD_PRELOAD */
#define PRELOAD_BLIND_FOREIGN 6    /* built for another machine or word size (PRELOAD_ELF_FOREIGN) */

/* strings: the program that runs unobserved */
struct preload_blind {
    uint32_t reason; /* PRELOAD_BLIND_* */
    int32_t err;     /* errno */
};

struct preload_count {
    uint64_t path_hash;
    uint64_t count;
};

struct preload_counts {
    uint32_t n; /* entries after the body; equals hdr.nstr */
    uint32_t pad;
};

struct preload_end {
    uint32_t reason;      /* PRELOAD_END_* */
    uint32_t failed_sends; /* records of this stream the channel refused */
};

/* Validation shared by the daemon and the tests. Returns PRELOAD_OK or one of the errors. */
#define PRELOAD_OK 0
#define PRELOAD_ERR_SHORT 1
#define PRELOAD_ERR_MAGIC 2
#define PRELOAD_ERR_VERSION 3
#define PRELOAD_ERR_SIZE 4
#define PRELOAD_ERR_KIND 5
#define PRELOAD_ERR_BODY 6
#define PRELOAD_ERR_STRINGS 7

int preload_check(const void *buf, size_t len);

/* What a program needs (csrc/elfkind.c): the hook, or the tracer. dirfd/path as for openat; an
 * empty path means dirfd itself. For a script, interp receives its interpreter's path. */
#define PRELOAD_ELF_UNKNOWN 0 /* unreadable, or not ELF: left to the loader */
#define PRELOAD_ELF_DYNAMIC 1
#define PRELOAD_ELF_STATIC 2
#define PRELOAD_ELF_GO 3
#define PRELOAD_ELF_SCRIPT 4
#define PRELOAD_ELF_MUSL 5    /* dynamic, loaded by musl's ld-musl: the hook's musl build */
#define PRELOAD_ELF_FOREIGN 6 /* ELF of another class, byte order or machine than the agent's own
                               * (a 32-bit program): the hook cannot enter it, the tracer cannot read
                               * its calls (it lets them through and follows what it starts) */
#define PRELOAD_ELF_SECURE 16 /* or'd into DYNAMIC or MUSL: set-id bits or file capabilities that raise
                               * the caller's privileges, so the loader ignores LD_PRELOAD (AT_SECURE) */
int preload_elf_kind(int dirfd, const char *path, char *interp, size_t cap);
