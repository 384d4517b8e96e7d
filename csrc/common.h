/* common.h: what the hook and the tracer share: building records, and which paths matter.
 * Plain C over libc; no state. */
#ifndef PRELOAD_COMMON_H
#define PRELOAD_COMMON_H

#include <elf.h>
#include <stddef.h>
#include <stdint.h>

#include "preload_wire.h"

/* A record under construction, in a caller-provided buffer (hooks run on the application's stack,
 * which may be small: size buffers for the record kind). */
struct pl_rec {
    char *buf;
    size_t cap;
    size_t len;
    int nstr;
    int truncated;
};

void pl_rec_begin(struct pl_rec *r, char *buf, size_t cap, unsigned kind, unsigned source,
                  const void *body, size_t body_len);
void pl_rec_str(struct pl_rec *r, const char *s);
/* Counts the NUL-terminated string already written at the end of the record. */
void pl_rec_adopt(struct pl_rec *r);
/* Appends the NUL-separated strings read from fd (a /proc/PID/cmdline) until its end or the
 * record's, the last one cut and ended if need be; returns how many. */
int pl_rec_read_strings(struct pl_rec *r, int fd);
/* A COUNTS record whose n entries the caller has written after the body, in buf. */
void pl_rec_counts(struct pl_rec *r, char *buf, size_t cap, unsigned source, uint32_t n);
/* Fills in size, string count and the truncation flag; the sender stamps the rest. */
void pl_rec_close(struct pl_rec *r);

/* Both ends of a socket, for a NET record whose api, fd and res are set. sock: an fd of this
 * process for the socket, or -1; given: the address the program passed (connect, bind) or got
 * (accept), or NULL; local_is_given: it is the local end (bind). */
struct pl_ends {
    char lpath[110], rpath[110];
};
void pl_net_fill(struct preload_net *n, struct pl_ends *e, int sock, const void *given,
                 unsigned glen, int local_is_given);

#if defined(__x86_64__)
#define PL_OWN_MACHINE EM_X86_64
#elif defined(__aarch64__)
#define PL_OWN_MACHINE EM_AARCH64
#endif

/* Whether an ELF file's first EI_NIDENT + 4 bytes say it is for what this build runs on: 64-bit,
 * little-endian, this machine (the hook enters no other program, the tracer reads no other's calls). */
static inline int pl_own_kind_of_elf(const unsigned char *head)
{
    if (head[EI_CLASS] != ELFCLASS64 || head[EI_DATA] != ELFDATA2LSB) return 0;
#ifdef PL_OWN_MACHINE
    return (head[18] | head[19] << 8) == PL_OWN_MACHINE; /* e_machine, where every class keeps it */
#else
    return 1;
#endif
}

/* Lexical normalisation of an absolute path in place: //, /./ and /x/../ collapse. */
void pl_normalize(char *p);
/* out holds a directory (base bytes; 0 for none); appends "/" and path, normalised. 0, or -1 when
 * a relative path had no directory or the result had to be cut (out then holds what fits). */
int pl_join(char *out, size_t base, const char *path, size_t cap);
/* Credentials, keys, the loader's configuration: never aggregated, always recorded. */
int pl_sensitive(const char *abspath);
/* Devices that swallow or produce bytes: writing to them is not worth a record each time. */
int pl_quiet_sink(const char *abspath);

#endif
