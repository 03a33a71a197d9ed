/* nori-wal record encoding and decoding (see FORMAT.md).  Pure C, no Python:
 * every function here is safe on arbitrary bytes and never reads outside
 * [buf, buf + avail).  Lengths claimed by a record are checked against the
 * bytes that remain before anything trusts them. */
#ifndef NORIKV_RECORD_H
#define NORIKV_RECORD_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "crc32c.h"

#define NK_FLAG_TOMBSTONE 0x01
#define NK_FLAG_TTL       0x02
#define NK_COMP_SHIFT     2
#define NK_COMP_MASK      0x0c
#define NK_FLAG_VERSION   0x10
/* Reserved bits 5-7: nori-wal writes 0 and ignores them; norikv uses them as
   documented in docs/FORMAT.md. */
#define NK_FLAG_BATCH_CONT 0x20   /* another record of the same atomic batch follows */
#define NK_FLAG_TTL_ABS    0x40   /* ttl_ms is an absolute Unix time in ms */
#define NK_FLAG_BATCH_END  0x80   /* the last record of an atomic batch */
#define NK_FLAGS_BATCH     (NK_FLAG_BATCH_CONT | NK_FLAG_BATCH_END)
#define NK_FLAGS_RESERVED  0xe0

enum {
    NK_OK = 0,
    NK_INCOMPLETE = 1,       /* more bytes are needed than were given */
    NK_BAD_VARINT = 2,       /* varint longer than 10 bytes or past 64 bits */
    NK_BAD_COMPRESSION = 3,  /* compression bits are 3 */
    NK_BAD_CRC = 4
};

typedef struct {
    const uint8_t *key;
    const uint8_t *value;
    uint64_t klen, vlen;
    uint64_t ttl_ms, term, index;
    uint64_t size;        /* bytes of the whole record, CRC included (saturates) */
    uint32_t flags;
} nk_rec;

static inline int nk_get_varint(const uint8_t **pp, const uint8_t *end, uint64_t *out) {
    const uint8_t *p = *pp;
    uint64_t v = 0;
    unsigned shift = 0;
    for (;;) {
        if (p >= end) return NK_INCOMPLETE;
        uint8_t b = *p++;
        if (shift == 63 && (b & 0x7e)) return NK_BAD_VARINT;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) break;
        shift += 7;
        if (shift >= 64) return NK_BAD_VARINT;
    }
    *pp = p;
    *out = v;
    return NK_OK;
}

static inline size_t nk_varint_len(uint64_t v) {
    size_t n = 1;
    while (v >= 0x80) { v >>= 7; n++; }
    return n;
}

static inline uint8_t *nk_put_varint(uint8_t *p, uint64_t v) {
    while (v >= 0x80) { *p++ = (uint8_t)(v | 0x80); v >>= 7; }
    *p++ = (uint8_t)v;
    return p;
}

static inline uint64_t nk_sat_add(uint64_t a, uint64_t b) {
    return (a + b < a) ? UINT64_MAX : a + b;
}

/* Decodes the record at buf.  On NK_OK every field is set.  On NK_INCOMPLETE
   r->size is the number of bytes the record claims to need (UINT64_MAX when
   even the header is cut short), so a caller can tell a short buffer from a
   claim larger than the file.  The CRC is checked when check_crc is true. */
/* Whether the CRC32C stored after the first `body` bytes of a record at buf
   is theirs (nk_decode with check_crc, and readers that check it later). */
static inline int nk_crc_ok(const uint8_t *buf, size_t body) {
    uint32_t stored = (uint32_t)buf[body] | ((uint32_t)buf[body + 1] << 8) |
                      ((uint32_t)buf[body + 2] << 16) | ((uint32_t)buf[body + 3] << 24);
    return nk_crc32c(0, buf, body) == stored;
}

static inline int nk_decode(const uint8_t *buf, size_t avail, int check_crc, nk_rec *r) {
    const uint8_t *p = buf, *end = buf + avail;
    int st;
    r->size = UINT64_MAX;
    r->ttl_ms = r->term = r->index = 0;
    if ((st = nk_get_varint(&p, end, &r->klen))) return st;
    if ((st = nk_get_varint(&p, end, &r->vlen))) return st;
    if (p >= end) return NK_INCOMPLETE;
    r->flags = *p++;
    if ((r->flags & NK_COMP_MASK) == NK_COMP_MASK) return NK_BAD_COMPRESSION;
    if (r->flags & NK_FLAG_TTL)
        if ((st = nk_get_varint(&p, end, &r->ttl_ms))) return st;
    if (r->flags & NK_FLAG_VERSION) {
        if ((st = nk_get_varint(&p, end, &r->term))) return st;
        if ((st = nk_get_varint(&p, end, &r->index))) return st;
    }
    uint64_t head = (uint64_t)(p - buf);
    r->size = nk_sat_add(nk_sat_add(nk_sat_add(head, r->klen), r->vlen), 4);
    if (r->size > avail) return NK_INCOMPLETE;
    r->key = p;
    r->value = p + r->klen;
    if (check_crc && !nk_crc_ok(buf, (size_t)r->size - 4)) return NK_BAD_CRC;
    return NK_OK;
}

static inline size_t nk_header_len(uint64_t klen, uint64_t vlen, uint32_t flags,
                                   uint64_t ttl_ms, uint64_t term, uint64_t index) {
    size_t n = nk_varint_len(klen) + nk_varint_len(vlen) + 1;
    if (flags & NK_FLAG_TTL) n += nk_varint_len(ttl_ms);
    if (flags & NK_FLAG_VERSION) n += nk_varint_len(term) + nk_varint_len(index);
    return n;
}

static inline size_t nk_encoded_len(uint64_t klen, uint64_t vlen, uint32_t flags,
                                    uint64_t ttl_ms, uint64_t term, uint64_t index) {
    return nk_header_len(klen, vlen, flags, ttl_ms, term, index) + klen + vlen + 4;
}

/* Writes one record at out (which has room for nk_encoded_len bytes) and
   returns the number of bytes written. */
static inline size_t nk_encode(uint8_t *out, const uint8_t *key, size_t klen,
                               const uint8_t *value, size_t vlen, uint32_t flags,
                               uint64_t ttl_ms, uint64_t term, uint64_t index) {
    uint8_t *p = nk_put_varint(out, klen);
    p = nk_put_varint(p, vlen);
    *p++ = (uint8_t)flags;
    if (flags & NK_FLAG_TTL) p = nk_put_varint(p, ttl_ms);
    if (flags & NK_FLAG_VERSION) { p = nk_put_varint(p, term); p = nk_put_varint(p, index); }
    memcpy(p, key, klen); p += klen;
    memcpy(p, value, vlen); p += vlen;
    uint32_t crc = nk_crc32c(0, out, (size_t)(p - out));
    p[0] = (uint8_t)crc; p[1] = (uint8_t)(crc >> 8); p[2] = (uint8_t)(crc >> 16); p[3] = (uint8_t)(crc >> 24);
    return (size_t)(p - out) + 4;
}

/* ---- Atomic batches: the one statement of the rule (docs/FORMAT.md), used
   by every writer (nk_batch_flags) and every reader (nk_batch_step). ----

   A batch of n >= 2 records is n - 1 records carrying BATCH_CONT followed by
   one carrying BATCH_END; a batch of one record is a plain record.  Reading in
   log order, a run of BATCH_CONT records is applied only when the record that
   follows it carries BATCH_END.  A run followed by a record without BATCH_END
   (for example one appended by nori-wal after a crash tore the batch) is
   discarded whole, and that record is applied on its own; a run still open
   at the end of a segment is never applied (batches never span segments).
   A BATCH_END record with no run before it is a plain record, and a record
   with both bits counts as BATCH_CONT. */

/* The flags of record i of an atomic batch of n records: `flags` with its
   batch bits set by the rule above. */
static inline uint32_t nk_batch_flags(uint32_t flags, size_t i, size_t n) {
    flags &= ~(uint32_t)NK_FLAGS_BATCH;
    if (n < 2) return flags;
    return flags | (i + 1 < n ? NK_FLAG_BATCH_CONT : NK_FLAG_BATCH_END);
}

typedef struct {
    uint64_t start;    /* offset of the first record of the open run */
    uint64_t count;    /* records in the open run (0: none is open) */
    uint64_t closed;   /* after NK_BATCH_COMMIT / NK_BATCH_BREAK: records of the run it closed */
} nk_batch;

enum {
    NK_BATCH_PLAIN = 0,   /* apply the record on its own */
    NK_BATCH_STAGE = 1,   /* the record joins the open run: hold it */
    NK_BATCH_COMMIT = 2,  /* the record ends the run: apply the held records, then it */
    NK_BATCH_BREAK = 3    /* the run is broken: discard the held records, apply the record on its own */
};

/* Feeds the next record (its flags and offset) to the batch state b, which
   starts zeroed; returns what to do with it (NK_BATCH_*). */
static inline int nk_batch_step(nk_batch *b, uint32_t flags, uint64_t offset) {
    if (flags & NK_FLAG_BATCH_CONT) {
        if (b->count == 0) b->start = offset;
        b->count++;
        return NK_BATCH_STAGE;
    }
    if (b->count == 0) return NK_BATCH_PLAIN;
    b->closed = b->count;
    b->count = 0;
    return (flags & NK_FLAG_BATCH_END) ? NK_BATCH_COMMIT : NK_BATCH_BREAK;
}

/* Drops the open run (damage, or the end of a segment); returns its size. */
static inline uint64_t nk_batch_drop(nk_batch *b) {
    uint64_t n = b->count;
    b->count = 0;
    return n;
}

/* ---- TTL deadlines ----
   base_ms + ttl_ms, saturated at INT64_MAX: a TTL too large for the clock
   means "practically never", never "already expired" and never "no TTL".
   An absolute deadline d (TTL_ABS) is nk_deadline(0, d). */
static inline int64_t nk_deadline(int64_t base_ms, uint64_t ttl_ms) {
    uint64_t room = (uint64_t)INT64_MAX - (uint64_t)base_ms;   /* exact, also for base_ms < 0 */
    if (ttl_ms > room) return INT64_MAX;
    return (int64_t)((uint64_t)base_ms + ttl_ms);
}

/* True when every byte of [p, p + n) is zero. */
static inline int nk_all_zero(const uint8_t *p, size_t n) {
    while (n && ((uintptr_t)p & 7)) { if (*p++) return 0; n--; }
    while (n >= 32) {
        uint64_t a, b, c, d;
        memcpy(&a, p, 8); memcpy(&b, p + 8, 8); memcpy(&c, p + 16, 8); memcpy(&d, p + 24, 8);
        if (a | b | c | d) return 0;
        p += 32; n -= 32;
    }
    while (n--) if (*p++) return 0;
    return 1;
}

#endif /* NORIKV_RECORD_H */
