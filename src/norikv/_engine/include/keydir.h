/* The key directory of values="disk": key bytes -> (64-bit location, value
 * size), in memory close to the keys' own length.  Pure C; the caller
 * supplies each key's 64-bit hash (KvStore: Python's hash of the bytes).
 *
 * Layout
 * - The arena: 8-byte-aligned entries appended in insertion order,
 *     uint64 loc; uint32 vsize; uint32 klen (top bit: dead); key bytes,
 *   padded to 8.  16 bytes of header per key.  A removed key's entry is
 *   marked dead and counted as garbage; when the garbage exceeds both the
 *   live bytes and a floor, the arena is compacted in place (order kept) and
 *   the slots repointed, without allocating.
 * - The slots: open addressing with linear probing and backward-shift
 *   deletion (no tombstones), an array of 16-byte slots: a uint64 with the
 *   high 32 bits of the caller's hash (the "tag") above the entry's offset
 *   in the arena in 8-byte units plus one (0: empty), and a copy of the
 *   entry's loc.  A slot's home is tag * cap >> 32, so the tag alone places
 *   an entry: growing the table never needs the key or its hash again, and
 *   a probe reads a key only when the tags match.  The loc's copy lets a
 *   reader that can check the key elsewhere (KvStore's get: the record at
 *   loc holds the key) skip the entry, one cache miss of three
 *   (nk_kd_locate).  The capacity is any number up to 2^32, grown by half
 *   when the load would pass 4/5 (so the load stays within 0.53..0.8).
 * - Growth in steps: a table of steps_from slots or more is not rebuilt at
 *   once (42 ms at 1.6M keys, 80-270 ms at 2.4M, all in one put).  The new
 *   slots take every insert, and each put of a new key also moves the next
 *   NK_KD_STEP_SLOTS old slots or more, whole clusters at a time, from an
 *   empty slot of the old table ("start") round to it again.  A cluster of
 *   the old table is either moved whole or untouched, and a key sits in the
 *   cluster of its home; so a key whose old home has been swept is in the
 *   new slots, and any other is in one of the two (lookups try the new
 *   slots first).  Deletions in the old table shift within their cluster,
 *   which stays unswept; nothing is ever placed in the old table.  The
 *   sweep ends (and the old slots are freed) long before the new table
 *   would grow again: a growth needs 0.4x the old capacity in new keys, the
 *   sweep at most 1/16 of it.  What must see one table (compaction, a
 *   reserve, fit) finishes the sweep first.
 * - The new slots are allocated, and their pages touched, ahead ("next"):
 *   a few pages at a time by the puts of new keys from a load of 15/16 of
 *   the limit (0.75) on, so that neither the growth nor the sweep faults
 *   them in.  Touched by a write: a page first touched by a read (a probe)
 *   maps the zero page and faults again, with a TLB shootdown, at its
 *   first write.  A table that stops growing keeps them until fit() or
 *   free.  Not while a loader fills what it reserved room for (up to the
 *   count reserve() was given, until fit()).
 * - Value sizes saturate at NK_KD_VSIZE_SAT: a value of 4 GiB - 1 bytes or
 *   more reads back as NK_KD_VSIZE_SAT, meaning "ask the record".
 * - The arena holds at most NK_KD_ARENA_MAX bytes (32 GiB - 8, offsets are
 *   32-bit in 8-byte units); a key is at most NK_KD_MAX_KLEN bytes.
 *
 * Iteration follows the arena: the live entries in insertion order (an
 * update keeps the key's place; a key removed and put again goes to the
 * end).  Every function returns an error code or a count and never aborts;
 * find and relocate never allocate, remove never allocates (its compaction
 * works in place), put allocates only to grow.
 *
 * Not thread-safe: the caller serialises writers and readers (KvStore holds
 * the GIL); find alone may run concurrently with other finds.
 */
#ifndef NORIKV_KEYDIR_H
#define NORIKV_KEYDIR_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum {
    NK_KD_OK = 0,
    NK_KD_NOMEM = -1,   /* malloc failed */
    NK_KD_FULL = -2,    /* the arena would pass NK_KD_ARENA_MAX */
    NK_KD_TOOBIG = -3,  /* a key longer than NK_KD_MAX_KLEN */
};

#define NK_KD_VSIZE_SAT 0xFFFFFFFFu
#define NK_KD_DEAD 0x80000000u
#define NK_KD_MAX_KLEN 0x7FFFFFFFu
#define NK_KD_MAX_UNITS 0xFFFFFFFFull              /* offset + 1 fits 32 bits */
#define NK_KD_ARENA_MAX (NK_KD_MAX_UNITS * 8)
#define NK_KD_MAX_SLOTS 0x100000000ull             /* tag * cap >> 32 < cap */
#define NK_KD_DEFAULT_FLOOR (64 * 1024)            /* bytes of garbage before compacting */
#define NK_KD_STEPS_FROM (1u << 16)                /* tables this large grow in steps */
#define NK_KD_STEP_SLOTS 16                         /* old slots moved per new key, at least */
/* The slots grow by half when the load would pass NUM/DEN (overridable for
   scripts/keydir_measure.py, which compares loads). */
#ifndef NK_KD_LOAD_NUM
#define NK_KD_LOAD_NUM 4
#define NK_KD_LOAD_DEN 5
#endif

typedef struct {
    uint64_t loc;
    uint32_t vsize;
    uint32_t klen;      /* | NK_KD_DEAD once removed */
    /* key bytes follow, padded to 8 */
} nk_kd_entry;

typedef struct {
    uint64_t s;         /* tag << 32 | (arena offset + 1); 0: empty */
    uint64_t loc;       /* the entry's loc, copied */
} nk_kd_slot;

typedef struct {
    nk_kd_slot *slots;
    uint64_t cap;           /* number of slots, 0 before the first put */
    nk_kd_slot *old;        /* growing in steps: the slots before, else NULL */
    uint64_t old_cap;
    uint64_t start;         /* an empty slot of old: the sweep's start and end */
    uint64_t swept;         /* old slots swept, from start + 1 on */
    uint64_t steps_from;    /* a table of this many slots grows in steps */
    nk_kd_slot *next;       /* the slots of the next growth, being touched, or NULL */
    uint64_t next_cap;
    uint64_t next_touched;  /* bytes of next whose pages were touched */
    uint64_t reserved;      /* keys the last reserve() made room for: no next before */
    uint64_t *arena;        /* 8-byte units */
    uint64_t units;         /* used */
    uint64_t arena_cap;     /* allocated */
    uint64_t garbage;       /* units held by dead entries */
    uint64_t floor_units;   /* compaction waits for this much garbage */
    uint64_t count;         /* live keys */
    uint64_t key_bytes;     /* their total length */
    uint64_t compactions;
    uint64_t resizes;       /* rebuilds of the slots (a test's figure) */
} nk_keydir;

static inline uint64_t nk_kd__entry_units(uint64_t klen) {
    return 2 + ((klen + 7) >> 3);
}

static inline nk_kd_entry *nk_kd__entry(const nk_keydir *kd, uint64_t off) {
    return (nk_kd_entry *)(kd->arena + off);
}

static inline uint64_t nk_kd__home(uint32_t tag, uint64_t cap) {
    return ((uint64_t)tag * cap) >> 32;
}

static inline uint32_t nk_kd__tag(uint64_t h) { return (uint32_t)(h >> 32); }

static inline uint32_t nk_kd__vsat(uint64_t vsize) {
    return vsize >= NK_KD_VSIZE_SAT ? NK_KD_VSIZE_SAT : (uint32_t)vsize;
}

static inline void nk_kd_init(nk_keydir *kd, uint64_t floor_bytes) {
    memset(kd, 0, sizeof *kd);
    kd->floor_units = floor_bytes >> 3;
    kd->steps_from = NK_KD_STEPS_FROM;
}

static inline void nk_kd_free(nk_keydir *kd) {
    free(kd->slots);
    free(kd->old);
    free(kd->next);
    free(kd->arena);
    uint64_t floor_units = kd->floor_units, steps_from = kd->steps_from;
    memset(kd, 0, sizeof *kd);
    kd->floor_units = floor_units;
    kd->steps_from = steps_from;
}

/* Whether a key of this tag may be in the old slots: a growth in steps is
 * under way and the sweep has not passed the key's old home. */
static inline int nk_kd__in_old(const nk_keydir *kd, uint32_t tag) {
    if (kd->old == NULL) return 0;
    uint64_t home = nk_kd__home(tag, kd->old_cap);
    return (home + kd->old_cap - kd->start - 1) % kd->old_cap >= kd->swept;
}

/* The slot of slots[cap] holding key, or -1. */
static inline int64_t nk_kd__probe(const nk_keydir *kd, const nk_kd_slot *slots, uint64_t cap,
                                   const uint8_t *key, size_t klen, uint32_t tag) {
    uint64_t i = nk_kd__home(tag, cap);
    for (;;) {
        uint64_t s = slots[i].s;
        if (s == 0) return -1;
        if ((uint32_t)(s >> 32) == tag) {
            const nk_kd_entry *e = nk_kd__entry(kd, (uint32_t)s - 1);
            if (e->klen == klen && memcmp(e + 1, key, klen) == 0) return (int64_t)i;
        }
        if (++i == cap) i = 0;
    }
}

/* The slot holding key (*table: the slots it is in, the new or the old),
 * or -1. */
static inline int64_t nk_kd__lookup(const nk_keydir *kd, const uint8_t *key, size_t klen,
                                    uint64_t h, nk_kd_slot **table) {
    uint64_t cap = kd->cap;
    *table = kd->slots;
    if (cap == 0) return -1;
    uint32_t tag = nk_kd__tag(h);
    int64_t i = nk_kd__probe(kd, kd->slots, cap, key, klen, tag);
    if (i >= 0 || !nk_kd__in_old(kd, tag)) return i;
    *table = kd->old;
    return nk_kd__probe(kd, kd->old, kd->old_cap, key, klen, tag);
}

static inline nk_kd_entry *nk_kd__slot_entry(const nk_keydir *kd, const nk_kd_slot *table, int64_t i) {
    return nk_kd__entry(kd, (uint32_t)table[i].s - 1);
}

/* Asks for the cache line of h's home slot ahead of a put or find of a key
 * of hash h (a loader that knows its next keys overlaps their misses). */
static inline void nk_kd_prefetch(const nk_keydir *kd, uint64_t h) {
    if (kd->cap) __builtin_prefetch(&kd->slots[nk_kd__home(nk_kd__tag(h), kd->cap)], 1, 1);
}

/* nk_kd_locate in slots[cap]. */
static inline int nk_kd__locate_in(const nk_kd_slot *slots, uint64_t cap, uint32_t tag, uint64_t *loc) {
    uint64_t i = nk_kd__home(tag, cap);
    for (;;) {
        uint64_t s = slots[i].s;
        if (s == 0) return 0;
        if ((uint32_t)(s >> 32) == tag) {
            *loc = slots[i].loc;
            return 1;
        }
        if (++i == cap) i = 0;
    }
}

/* The loc of the first slot, from the home of h's tag, whose tag is h's
 * (in the new slots, then in the old ones while growing in steps): 1 and
 * *loc set, or 0 when there is none, and then no key of hash h is
 * present.  The slot found holds the key only if no other key shares its
 * tag (about 1 in 2^32 per slot probed): the caller checks the key where
 * loc points and otherwise asks nk_kd_find.  Reads no entry. */
static inline int nk_kd_locate(const nk_keydir *kd, uint64_t h, uint64_t *loc) {
    if (kd->cap == 0) return 0;
    uint32_t tag = nk_kd__tag(h);
    if (nk_kd__locate_in(kd->slots, kd->cap, tag, loc)) return 1;
    return nk_kd__in_old(kd, tag) && nk_kd__locate_in(kd->old, kd->old_cap, tag, loc);
}

/* 1 and the outputs set if key is present, else 0. */
static inline int nk_kd_find(const nk_keydir *kd, const uint8_t *key, size_t klen, uint64_t h,
                             uint64_t *loc, uint64_t *vsize) {
    nk_kd_slot *table;
    int64_t i = nk_kd__lookup(kd, key, klen, h, &table);
    if (i < 0) return 0;
    const nk_kd_entry *e = nk_kd__slot_entry(kd, table, i);
    *loc = e->loc;
    *vsize = e->vsize;
    return 1;
}

static inline void nk_kd__place(nk_kd_slot *slots, uint64_t cap, nk_kd_slot s) {
    uint64_t i = nk_kd__home((uint32_t)(s.s >> 32), cap);
    while (slots[i].s != 0)
        if (++i == cap) i = 0;
    slots[i] = s;
}

/* Moves old slots to the new ones, whole clusters, until at least `budget`
 * slots were swept or the sweep is done (then the old slots are freed). */
static inline void nk_kd__step(nk_keydir *kd, uint64_t budget) {
    nk_kd_slot *old = kd->old;
    uint64_t old_cap = kd->old_cap, p = (kd->start + 1 + kd->swept) % old_cap;
    uint64_t swept = kd->swept, end = swept + budget;
    while (swept < end && swept < old_cap) {
        while (old[p].s != 0) {             /* a cluster: all of it */
            nk_kd__place(kd->slots, kd->cap, old[p]);
            old[p].s = 0;
            old[p].loc = 0;
            swept++;
            if (++p == old_cap) p = 0;
        }
        swept++;                            /* the empty slot after it */
        if (++p == old_cap) p = 0;
    }
    kd->swept = swept;
    if (swept >= old_cap) {
        free(old);
        kd->old = NULL;
        kd->old_cap = kd->start = kd->swept = 0;
    }
}

/* Ends a growth in steps at once (before what must see one table). */
static inline void nk_kd__finish(nk_keydir *kd) {
    if (kd->old != NULL) nk_kd__step(kd, kd->old_cap);
}

static inline void nk_kd__drop_next(nk_keydir *kd) {
    free(kd->next);
    kd->next = NULL;
    kd->next_cap = kd->next_touched = 0;
}

/* The capacity the slots grow to from cap. */
static inline uint64_t nk_kd__grown(uint64_t cap) {
    uint64_t new_cap = cap < 16 ? 16 : cap + cap / 2;
    return new_cap > NK_KD_MAX_SLOTS ? NK_KD_MAX_SLOTS : new_cap;
}

/* A put of a new key at a load past 15/16 of the limit, in a table that will
 * grow in steps: allocates the next slots, then touches as many of their
 * pages as spreads them over the puts left before the growth. */
static inline void nk_kd__prepare(nk_keydir *kd) {
    if (kd->next == NULL) {
        kd->next_cap = nk_kd__grown(kd->cap);
        kd->next = (nk_kd_slot *)calloc(kd->next_cap, sizeof(nk_kd_slot));
        if (kd->next == NULL) {     /* the growth will try again */
            kd->next_cap = 0;
            return;
        }
    }
    uint64_t bytes = kd->next_cap * sizeof(nk_kd_slot), left = bytes - kd->next_touched;
    if (left == 0) return;
    uint64_t puts = kd->cap * NK_KD_LOAD_NUM / NK_KD_LOAD_DEN - kd->count;
    uint64_t pages = (left + 4095) / 4096, n = puts > 1 ? (pages + puts - 2) / (puts - 1) : pages;
    volatile uint8_t *p = (volatile uint8_t *)kd->next;
    for (; n > 0 && kd->next_touched < bytes; n--) {
        p[kd->next_touched] = 0;
        kd->next_touched += 4096;
    }
    if (kd->next_touched >= bytes) {
        p[bytes - 1] = 0;
        kd->next_touched = bytes;
    }
}

/* Rebuilds the slots with new_cap slots (from the tags alone): at once, or,
 * for a table of steps_from slots or more growing (`in_steps`), by starting
 * a growth in steps (into the prepared slots when they have this size). */
static inline int nk_kd__resize(nk_keydir *kd, uint64_t new_cap, int in_steps) {
    nk_kd__finish(kd);
    nk_kd_slot *slots;
    if (kd->next != NULL && kd->next_cap == new_cap && in_steps) {
        slots = kd->next;               /* still all zeros */
        kd->next = NULL;
        kd->next_cap = kd->next_touched = 0;
    } else {
        nk_kd__drop_next(kd);
        slots = (nk_kd_slot *)calloc(new_cap, sizeof(nk_kd_slot));
    }
    if (slots == NULL) return NK_KD_NOMEM;
    kd->resizes++;
    if (in_steps && kd->cap >= kd->steps_from && kd->cap >= 2 && new_cap > kd->cap) {
        uint64_t start = 0;
        while (kd->slots[start].s != 0) start++;    /* the load is under 1 */
        kd->old = kd->slots;
        kd->old_cap = kd->cap;
        kd->start = start;
        kd->swept = 0;
        kd->slots = slots;
        kd->cap = new_cap;
        return NK_KD_OK;
    }
    for (uint64_t i = 0; i < kd->cap; i++)
        if (kd->slots[i].s) nk_kd__place(slots, new_cap, kd->slots[i]);
    free(kd->slots);
    kd->slots = slots;
    kd->cap = new_cap;
    return NK_KD_OK;
}

/* Room for one more key in the slots (load <= NUM/DEN), and a step of a
 * growth under way. */
static inline int nk_kd__reserve_slot(nk_keydir *kd) {
    uint64_t need = kd->count + 1;
    if (need * NK_KD_LOAD_DEN <= kd->cap * NK_KD_LOAD_NUM) {
        if (kd->old != NULL)
            nk_kd__step(kd, NK_KD_STEP_SLOTS);
        else if (kd->cap >= kd->steps_from && need * NK_KD_LOAD_DEN * 16 > kd->cap * NK_KD_LOAD_NUM * 15
                 && kd->cap < NK_KD_MAX_SLOTS && need > kd->reserved)
            nk_kd__prepare(kd);
        return NK_KD_OK;
    }
    uint64_t new_cap = nk_kd__grown(kd->cap);
    if (need * NK_KD_LOAD_DEN > new_cap * NK_KD_LOAD_NUM) return NK_KD_FULL;
    int rc = nk_kd__resize(kd, new_cap, 1);
    if (rc == NK_KD_OK && kd->old != NULL) nk_kd__step(kd, NK_KD_STEP_SLOTS);
    return rc;
}

/* Gives back most of the arena's capacity past its entries when it holds
 * over twice what they use (realloc may keep it). */
static inline void nk_kd__trim_arena(nk_keydir *kd) {
    uint64_t w = kd->units;
    if (kd->arena_cap > 2 * w + 512) {
        uint64_t new_cap = w + w / 4 + 512;
        uint64_t *a = (uint64_t *)realloc(kd->arena, new_cap * 8);
        if (a != NULL) {
            kd->arena = a;
            kd->arena_cap = new_cap;
        }
    }
}

/* Compacts the arena in place: the live entries slide down in order and
 * their slots are repointed.  No allocation: each live entry's vsize field
 * briefly holds its slot's index while the slot's offset bits hold the
 * vsize. */
static inline void nk_kd__compact(nk_keydir *kd) {
    nk_kd__finish(kd);
    nk_kd_slot *slots = kd->slots;
    for (uint64_t i = 0; i < kd->cap; i++) {
        uint64_t s = slots[i].s;
        if (s == 0) continue;
        nk_kd_entry *e = nk_kd__entry(kd, (uint32_t)s - 1);
        uint32_t vsize = e->vsize;
        e->vsize = (uint32_t)i;  /* cap <= 2^32 */
        slots[i].s = (s & 0xFFFFFFFF00000000ull) | vsize;
    }
    uint64_t w = 0;
    for (uint64_t u = 0; u < kd->units;) {
        nk_kd_entry *e = nk_kd__entry(kd, u);
        uint32_t klen = e->klen;
        uint64_t n = nk_kd__entry_units(klen & ~NK_KD_DEAD);
        if (!(klen & NK_KD_DEAD)) {
            uint64_t i = e->vsize;
            if (w != u) memmove(kd->arena + w, kd->arena + u, n * 8);
            nk_kd__entry(kd, w)->vsize = (uint32_t)slots[i].s;
            slots[i].s = (slots[i].s & 0xFFFFFFFF00000000ull) | (w + 1);
            w += n;
        }
        u += n;
    }
    kd->units = w;
    kd->garbage = 0;
    kd->compactions++;
    nk_kd__trim_arena(kd);
}

static inline void nk_kd__maybe_compact(nk_keydir *kd) {
    if (kd->garbage > kd->units - kd->garbage && kd->garbage >= kd->floor_units)
        nk_kd__compact(kd);
}

/* Room for n more units in the arena. */
static inline int nk_kd__reserve_arena(nk_keydir *kd, uint64_t n) {
    if (kd->units + n <= kd->arena_cap) return NK_KD_OK;
    if (kd->units + n > NK_KD_MAX_UNITS && kd->garbage) nk_kd__compact(kd);
    if (kd->units + n > NK_KD_MAX_UNITS) return NK_KD_FULL;
    if (kd->units + n <= kd->arena_cap) return NK_KD_OK;
    /* Grow by a quarter: realloc of a large block remaps rather than copies
       (glibc), and an untouched tail costs no resident memory. */
    uint64_t new_cap = kd->arena_cap + kd->arena_cap / 4;
    if (new_cap < 512) new_cap = 512;
    if (new_cap < kd->units + n) new_cap = kd->units + n;
    if (new_cap > NK_KD_MAX_UNITS) new_cap = NK_KD_MAX_UNITS;
    uint64_t *a = (uint64_t *)realloc(kd->arena, new_cap * 8);
    if (a == NULL) return NK_KD_NOMEM;
    kd->arena = a;
    kd->arena_cap = new_cap;
    return NK_KD_OK;
}

/* Room for `keys` keys in all without growing the slots, and for `more`
 * new keys of `more_bytes` bytes in all without growing the arena (a loader
 * that knows its counts).  NK_KD_OK or a negative NK_KD_* error. */
static inline int nk_kd_reserve(nk_keydir *kd, uint64_t keys, uint64_t more, uint64_t more_bytes) {
    if (keys > NK_KD_MAX_SLOTS || more > NK_KD_MAX_UNITS || more_bytes > NK_KD_ARENA_MAX)
        return NK_KD_FULL;
    uint64_t cap = kd->cap;
    while (keys * NK_KD_LOAD_DEN > cap * NK_KD_LOAD_NUM && cap < NK_KD_MAX_SLOTS)
        cap = nk_kd__grown(cap);
    if (keys * NK_KD_LOAD_DEN > cap * NK_KD_LOAD_NUM) return NK_KD_FULL;
    nk_kd__finish(kd);
    nk_kd__drop_next(kd);
    if (cap != kd->cap) {
        int rc = nk_kd__resize(kd, cap, 0);
        if (rc != NK_KD_OK) return rc;
    }
    kd->reserved = keys;
    uint64_t units = 2 * more + (more_bytes + 7 * more) / 8;  /* at most, padding included */
    if (units > NK_KD_MAX_UNITS - kd->units) return NK_KD_FULL;
    if (kd->units + units <= kd->arena_cap) return NK_KD_OK;
    uint64_t *a = (uint64_t *)realloc(kd->arena, (kd->units + units) * 8);
    if (a == NULL) return NK_KD_NOMEM;
    kd->arena = a;
    kd->arena_cap = kd->units + units;
    return NK_KD_OK;
}

/* Gives back what a reserve() for more keys than came left unused: slots
 * under a load of 1/2 are rebuilt for a load of 2/3, and the arena trimmed
 * as after a compaction.  Best effort (without memory for new slots it
 * keeps the old ones). */
static inline void nk_kd_fit(nk_keydir *kd) {
    nk_kd__finish(kd);
    nk_kd__drop_next(kd);
    kd->reserved = 0;
    nk_kd__trim_arena(kd);
    if (kd->cap <= 16 || kd->count * 2 >= kd->cap) return;
    uint64_t cap = kd->count + kd->count / 2;
    if (cap < 16) cap = 16;
    (void)nk_kd__resize(kd, cap, 0);
}

/* Sets key -> (loc, vsize).  Returns 1 if the key was present (its place in
 * the order kept, *old_loc / *old_vsize set), 0 if new, or a negative
 * NK_KD_* error (nothing changed). */
static inline int nk_kd_put(nk_keydir *kd, const uint8_t *key, size_t klen, uint64_t h, uint64_t loc,
                     uint64_t vsize, uint64_t *old_loc, uint64_t *old_vsize) {
    nk_kd_slot *table;
    int64_t i = nk_kd__lookup(kd, key, klen, h, &table);
    if (i >= 0) {
        nk_kd_entry *e = nk_kd__slot_entry(kd, table, i);
        *old_loc = e->loc;
        *old_vsize = e->vsize;
        e->loc = loc;
        e->vsize = nk_kd__vsat(vsize);
        table[i].loc = loc;
        return 1;
    }
    if (klen > NK_KD_MAX_KLEN) return NK_KD_TOOBIG;
    uint64_t n = nk_kd__entry_units(klen);
    int rc = nk_kd__reserve_arena(kd, n);
    if (rc != NK_KD_OK) return rc;
    rc = nk_kd__reserve_slot(kd);
    if (rc != NK_KD_OK) return rc;
    uint64_t off = kd->units;
    nk_kd_entry *e = nk_kd__entry(kd, off);
    kd->arena[off + n - 1] = 0;  /* the padding: deterministic bytes */
    e->loc = loc;
    e->vsize = nk_kd__vsat(vsize);
    e->klen = (uint32_t)klen;
    if (klen) memcpy(e + 1, key, klen);
    kd->units = off + n;
    nk_kd_slot s = {((uint64_t)nk_kd__tag(h) << 32) | (off + 1), loc};
    nk_kd__place(kd->slots, kd->cap, s);
    kd->count++;
    kd->key_bytes += klen;
    return 0;
}

/* Empties slot i of slots[cap], shifting back the entries of its cluster
 * that may move. */
static inline void nk_kd__delete_slot(nk_kd_slot *slots, uint64_t cap, uint64_t i) {
    uint64_t j = i;
    for (;;) {
        if (++j == cap) j = 0;
        nk_kd_slot s = slots[j];
        if (s.s == 0) break;
        uint64_t k = nk_kd__home((uint32_t)(s.s >> 32), cap);
        /* s may fill the hole at i unless its home lies cyclically in (i, j] */
        int stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (!stays) {
            slots[i] = s;
            i = j;
        }
    }
    slots[i].s = 0;
    slots[i].loc = 0;
}

/* Removes key.  Returns 1 (*old_loc / *old_vsize set) or 0 if absent. */
static inline int nk_kd_remove(nk_keydir *kd, const uint8_t *key, size_t klen, uint64_t h,
                        uint64_t *old_loc, uint64_t *old_vsize) {
    nk_kd_slot *table;
    int64_t i = nk_kd__lookup(kd, key, klen, h, &table);
    if (i < 0) return 0;
    nk_kd_entry *e = nk_kd__slot_entry(kd, table, i);
    *old_loc = e->loc;
    *old_vsize = e->vsize;
    e->klen |= NK_KD_DEAD;
    kd->garbage += nk_kd__entry_units(klen);
    kd->count--;
    kd->key_bytes -= klen;
    nk_kd__delete_slot(table, table == kd->slots ? kd->cap : kd->old_cap, (uint64_t)i);
    nk_kd__maybe_compact(kd);
    return 1;
}

/* Sets key's loc to new_loc if it is still expected.  1 done, 0 not (the
 * key is absent or was written again). */
static inline int nk_kd_relocate(nk_keydir *kd, const uint8_t *key, size_t klen, uint64_t h,
                          uint64_t expected, uint64_t new_loc) {
    nk_kd_slot *table;
    int64_t i = nk_kd__lookup(kd, key, klen, h, &table);
    if (i < 0) return 0;
    nk_kd_entry *e = nk_kd__slot_entry(kd, table, i);
    if (e->loc != expected) return 0;
    e->loc = new_loc;
    table[i].loc = new_loc;
    return 1;
}

/* The next live entry from *cursor (0 to start): 1 and the outputs set, or 0
 * at the end.  The cursor stays valid across finds, relocates and puts, not
 * across a remove (it may compact) nor a put at the arena's limit (which
 * compacts before giving up); the key pointer until the next put or remove. */
static inline int nk_kd_next(const nk_keydir *kd, size_t *cursor, const uint8_t **key,
                             size_t *klen, uint64_t *loc, uint64_t *vsize) {
    uint64_t u = *cursor;
    while (u < kd->units) {
        const nk_kd_entry *e = nk_kd__entry(kd, u);
        uint32_t kl = e->klen;
        u += nk_kd__entry_units(kl & ~NK_KD_DEAD);
        if (!(kl & NK_KD_DEAD)) {
            *cursor = u;
            *key = (const uint8_t *)(e + 1);
            *klen = kl;
            *loc = e->loc;
            *vsize = e->vsize;
            return 1;
        }
    }
    *cursor = u;
    return 0;
}

/* Bytes allocated: the slots (the old ones while growing in steps, the next
 * ones while they are prepared) and the arena's capacity. */
static inline size_t nk_kd_nbytes(const nk_keydir *kd) {
    return (size_t)(kd->cap + kd->old_cap + kd->next_cap) * sizeof(nk_kd_slot) + (size_t)kd->arena_cap * 8;
}

#endif
