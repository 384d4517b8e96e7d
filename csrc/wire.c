/* wire.c: validation of records, for the daemon (through preload._native) and the tests.
 * Everything arriving here came from the application side: trust no length, no count. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "preload_wire.h"

static size_t body_size(unsigned kind)
{
    switch (kind) {
    case PRELOAD_REC_START: return sizeof(struct preload_start);
    case PRELOAD_REC_EXEC: return sizeof(struct preload_exec);
    case PRELOAD_REC_OPEN: return sizeof(struct preload_open);
    case PRELOAD_REC_NET: return sizeof(struct preload_net);
    case PRELOAD_REC_COUNTS: return sizeof(struct preload_counts);
    case PRELOAD_REC_END: return sizeof(struct preload_end);
    case PRELOAD_REC_CALL: return sizeof(struct preload_call);
    case PRELOAD_REC_BLIND: return sizeof(struct preload_blind);
    }
    return 0;
}

int preload_check(const void *buf, size_t len)
{
    struct preload_hdr h;
    if (len < sizeof h) return PRELOAD_ERR_SHORT;
    memcpy(&h, buf, sizeof h); /* the buffer may be unaligned */
    if (h.magic != PRELOAD_WIRE_MAGIC) return PRELOAD_ERR_MAGIC;
    if (h.version != PRELOAD_WIRE_VERSION) return PRELOAD_ERR_VERSION;
    if (h.size != len || len > PRELOAD_MAX_RECORD) return PRELOAD_ERR_SIZE;
    if (h.kind < 1 || h.kind > PRELOAD_REC_KIND_MAX) return PRELOAD_ERR_KIND;
    size_t off = sizeof h + body_size(h.kind);
    if (off > len) return PRELOAD_ERR_BODY;
    const char *p = (const char *)buf;
    if (h.kind == PRELOAD_REC_COUNTS) {
        struct preload_counts c;
        memcpy(&c, p + sizeof h, sizeof c);
        if (c.n != h.nstr || (len - off) != (size_t)c.n * sizeof(struct preload_count))
            return PRELOAD_ERR_BODY;
        return PRELOAD_OK;
    }
    for (unsigned i = 0; i < h.nstr; i++) {
        const char *nul = memchr(p + off, 0, len - off);
        if (!nul) return PRELOAD_ERR_STRINGS;
        off = (size_t)(nul - p) + 1;
    }
    if (off != len) return PRELOAD_ERR_STRINGS;
    switch (h.kind) { /* string counts each kind promises */
    case PRELOAD_REC_START: {
        struct preload_start s;
        memcpy(&s, p + sizeof h, sizeof s);
        if (h.nstr != 2 + (size_t)s.argc) return PRELOAD_ERR_STRINGS;
        break;
    }
    case PRELOAD_REC_EXEC: {
        struct preload_exec e;
        memcpy(&e, p + sizeof h, sizeof e);
        if (h.nstr != 1 + (size_t)e.argc) return PRELOAD_ERR_STRINGS;
        break;
    }
    case PRELOAD_REC_OPEN: if (h.nstr != 1) return PRELOAD_ERR_STRINGS; break;
    case PRELOAD_REC_NET: if (h.nstr != 2) return PRELOAD_ERR_STRINGS; break;
    case PRELOAD_REC_END: if (h.nstr != 0) return PRELOAD_ERR_STRINGS; break;
    case PRELOAD_REC_CALL: if (h.nstr > 3) return PRELOAD_ERR_STRINGS; break;
    case PRELOAD_REC_BLIND: if (h.nstr != 1) return PRELOAD_ERR_STRINGS; break;
    }
    return PRELOAD_OK;
}
