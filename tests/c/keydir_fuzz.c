/* include/keydir.h against a reference array over random operations, built
 * with AddressSanitizer and UBSan by tests/test_keydir.py: the out-of-bounds
 * accesses and overflows that a Python-level test cannot see.  Each mode
 * files the keys under different hashes: spread, 7 tags, one tag (0), and
 * the last tag (homes at the table's end, clusters wrapping around); each
 * with the slots rebuilt at once and grown in steps from 16 slots on. */
#include <assert.h>
#include <stdio.h>

#include "keydir.h"

#define N 3000
static uint8_t kb[N][64];
static size_t kl[N];
static int present[N];
static uint64_t rloc[N], rvs[N], order[N];

static uint64_t rs = 88172645463325252ull;
static uint64_t rnd(void) {
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return rs;
}

static uint64_t hash_of(int i, int mode) {
    uint64_t h = 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1);
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ull;
    switch (mode) {
    case 1: return (uint64_t)(i % 7) << 32;
    case 2: return h & 0xFFFFFFFFull;
    case 3: return h | 0xFFFFFFFF00000000ull;
    default: return h;
    }
}

/* nk_kd_locate gives, for each present key's hash, the loc of a present key
 * with the same tag (its own when no other shares the tag). */
static void check_locate(const nk_keydir *kd, int nk, int mode) {
    for (int i = 0; i < nk; i++) {
        if (!present[i]) continue;
        uint64_t h = hash_of(i, mode), loc = 0;
        int shared = 0, own = 0;
        assert(nk_kd_locate(kd, h, &loc) == 1);
        for (int j = 0; j < nk; j++)
            if (present[j] && hash_of(j, mode) >> 32 == h >> 32) {
                shared += j != i;
                own |= rloc[j] == loc;
            }
        assert(own);
        if (!shared) assert(loc == rloc[i]);
    }
}

static void check_order(const nk_keydir *kd, int nk) {
    size_t cursor = 0, klen, n = 0, live = 0;
    const uint8_t *key;
    uint64_t loc, vsize, last = 0;
    while (nk_kd_next(kd, &cursor, &key, &klen, &loc, &vsize)) {
        int j;
        for (j = 0; j < nk; j++)
            if (present[j] && kl[j] == klen && memcmp(kb[j], key, klen) == 0) break;
        assert(j < nk);
        assert(n == 0 || order[j] > last);
        assert(loc == rloc[j] && vsize == rvs[j]);
        last = order[j];
        n++;
    }
    for (int j = 0; j < nk; j++) live += present[j];
    assert(n == live && kd->count == live);
}

int main(void) {
    /* distinct keys of 0..51 bytes: key 0 is empty */
    for (int i = 1; i < N; i++) {
        kl[i] = (size_t)(i % 50) + 2;
        for (size_t j = 0; j + 2 < kl[i]; j++) kb[i][j] = (uint8_t)(i % 3 + j);  /* shared prefixes */
        kb[i][kl[i] - 2] = (uint8_t)i;
        kb[i][kl[i] - 1] = (uint8_t)(i >> 8);
    }
    for (int mode = 0; mode < 4; mode++) {
        for (int floor = 0; floor < 4; floor++) {
            nk_keydir kd;
            nk_kd_init(&kd, floor & 1 ? 65536 : 0);
            if (floor & 2) kd.steps_from = 16;
            if (mode) assert(nk_kd_reserve(&kd, 100, 50, 1000) == NK_KD_OK);
            memset(present, 0, sizeof present);
            uint64_t seq = 0, compactions = 0;
            long steps = mode == 0 ? 1000000 : 150000;
            int nk = mode == 0 ? N : 400;
            for (long s = 0; s < steps; s++) {
                if (s % (steps / 5) == steps / 10) {    /* empty again: the growths again */
                    check_order(&kd, nk);
                    compactions += kd.compactions;
                    nk_kd_free(&kd);
                    memset(present, 0, sizeof present);
                }
                int i = (int)(rnd() % (uint64_t)nk), op = (int)(rnd() % 10), rc;
                uint64_t h = hash_of(i, mode), ol, ov;
                if (op < 5) {
                    uint64_t l = rnd(), v = rnd() >> (rnd() % 64);
                    rc = nk_kd_put(&kd, kb[i], kl[i], h, l, v, &ol, &ov);
                    assert(rc == present[i]);
                    if (rc) assert(ol == rloc[i] && ov == rvs[i]);
                    else order[i] = seq++;
                    present[i] = 1;
                    rloc[i] = l;
                    rvs[i] = v >= NK_KD_VSIZE_SAT ? NK_KD_VSIZE_SAT : v;
                } else if (op < 8) {
                    rc = nk_kd_remove(&kd, kb[i], kl[i], h, &ol, &ov);
                    assert(rc == present[i]);
                    if (rc) assert(ol == rloc[i] && ov == rvs[i]);
                    present[i] = 0;
                } else if (op < 9) {
                    rc = nk_kd_find(&kd, kb[i], kl[i], h, &ol, &ov);
                    assert(rc == present[i]);
                    if (rc) assert(ol == rloc[i] && ov == rvs[i]);
                } else {
                    rc = nk_kd_relocate(&kd, kb[i], kl[i], h, rloc[i], (uint64_t)s);
                    assert(rc == present[i]);
                    if (rc) rloc[i] = (uint64_t)s;
                }
                if (s % 25000 == 0) {
                    check_order(&kd, nk);
                    check_locate(&kd, nk, mode);
                }
            }
            check_order(&kd, nk);
            check_locate(&kd, nk, mode);
            compactions += kd.compactions;
            assert(compactions > 0);
            printf("mode %d floor %d steps %d: %llu keys, %llu slots, %llu compactions\n", mode, floor & 1, floor >> 1,
                   (unsigned long long)kd.count, (unsigned long long)kd.cap,
                   (unsigned long long)compactions);
            nk_kd_free(&kd);
        }
    }
    return 0;
}
