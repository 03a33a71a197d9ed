/* CRC-32C (Castagnoli) with run-time selection of a hardware path.
 *
 * x86-64: the SSE4.2 crc32 instruction; arm64: the ARMv8 CRC32C instructions;
 * everywhere else (or when forced): slicing-by-8 tables.  The selection is made
 * once by nk_crc32c_init() and can be changed for tests by nk_crc32c_select().
 * The running value follows the convention of the `crc32c` package: pass the
 * previous result (0 to start) and get the finished CRC back.
 */
#ifndef NORIKV_CRC32C_H
#define NORIKV_CRC32C_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) || defined(_M_X64)
#  define NK_CRC_X86 1
#  include <nmmintrin.h>
#elif defined(__aarch64__)
#  define NK_CRC_ARM 1
#  if defined(__linux__)
#    include <sys/auxv.h>
#    ifndef HWCAP_CRC32
#      define HWCAP_CRC32 (1 << 7)
#    endif
#  endif
#endif

static uint32_t nk_crc_table[8][256];
/* Operators that advance a raw CRC register over 32, 64, 256 and 512 zero
   bytes, one table per input byte, used to join three interleaved hardware
   streams (of 256 bytes each for long inputs, of 32 for record-sized ones). */
static uint32_t nk_crc_zeros32[4][256];
static uint32_t nk_crc_zeros64[4][256];
static uint32_t nk_crc_zeros256[4][256];
static uint32_t nk_crc_zeros512[4][256];

static void nk_crc32c_make_tables(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : (c >> 1);
        nk_crc_table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = nk_crc_table[0][n];
        for (int t = 1; t < 8; t++) {
            c = nk_crc_table[0][c & 0xff] ^ (c >> 8);
            nk_crc_table[t][n] = c;
        }
    }
}

static uint32_t nk_crc32c_sw(uint32_t crc, const uint8_t *p, size_t n) {
    crc = ~crc;
    while (n && ((uintptr_t)p & 7)) {
        crc = nk_crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
        n--;
    }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        w = __builtin_bswap64(w);
#endif
        w ^= crc;
        crc = nk_crc_table[7][w & 0xff] ^ nk_crc_table[6][(w >> 8) & 0xff] ^
              nk_crc_table[5][(w >> 16) & 0xff] ^ nk_crc_table[4][(w >> 24) & 0xff] ^
              nk_crc_table[3][(w >> 32) & 0xff] ^ nk_crc_table[2][(w >> 40) & 0xff] ^
              nk_crc_table[1][(w >> 48) & 0xff] ^ nk_crc_table[0][w >> 56];
        p += 8;
        n -= 8;
    }
    while (n--) crc = nk_crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}


static uint32_t nk_crc_feed_zeros(uint32_t c, size_t n) {
    while (n--) c = nk_crc_table[0][c & 0xff] ^ (c >> 8);
    return c;
}

static void nk_crc_make_zeros(uint32_t tab[4][256], size_t nbytes) {
    uint32_t basis[32];
    for (int i = 0; i < 32; i++) basis[i] = nk_crc_feed_zeros((uint32_t)1 << i, nbytes);
    for (int k = 0; k < 4; k++)
        for (int b = 0; b < 256; b++) {
            uint32_t v = 0;
            for (int i = 0; i < 8; i++)
                if (b & (1 << i)) v ^= basis[8 * k + i];
            tab[k][b] = v;
        }
}

static inline uint32_t nk_crc_shift(uint32_t tab[4][256], uint32_t c) {
    return tab[0][c & 0xff] ^ tab[1][(c >> 8) & 0xff] ^ tab[2][(c >> 16) & 0xff] ^ tab[3][c >> 24];
}

#if defined(NK_CRC_X86)
#  define NK_HW_TARGET __attribute__((target("sse4.2")))
#  define NK_CRC8(c, v) _mm_crc32_u8((uint32_t)(c), (v))
#  define NK_CRC16(c, v) _mm_crc32_u16((uint32_t)(c), (v))
#  define NK_CRC32(c, v) _mm_crc32_u32((uint32_t)(c), (v))
#  define NK_CRC64(c, v) _mm_crc32_u64((c), (v))
#  define NK_HAVE_HW 1
#elif defined(NK_CRC_ARM)
#  define NK_HW_TARGET __attribute__((target("+crc")))
#  include <arm_acle.h>
#  define NK_CRC8(c, v) __crc32cb((uint32_t)(c), (v))
#  define NK_CRC16(c, v) __crc32ch((uint32_t)(c), (v))
#  define NK_CRC32(c, v) __crc32cw((uint32_t)(c), (v))
#  define NK_CRC64(c, v) __crc32cd((uint32_t)(c), (v))
#  define NK_HAVE_HW 1
#endif

#ifdef NK_HAVE_HW
/* Three independent streams over the 3 x blk bytes at p hide the crc32
   instruction's latency (3 cycles, 1 per cycle throughput); the partial CRCs
   are joined with the operators that shift over 2 x blk and blk zero bytes. */
NK_HW_TARGET
static inline __attribute__((always_inline)) uint64_t
nk_crc_hw_3way(uint64_t c, const uint8_t *p, size_t blk,
               uint32_t shift2[4][256], uint32_t shift1[4][256]) {
    uint64_t c1 = 0, c2 = 0;
    for (size_t i = 0; i < blk; i += 8) {
        uint64_t a, b, d;
        memcpy(&a, p + i, 8); memcpy(&b, p + blk + i, 8); memcpy(&d, p + 2 * blk + i, 8);
        c = NK_CRC64(c, a); c1 = NK_CRC64(c1, b); c2 = NK_CRC64(c2, d);
    }
    return nk_crc_shift(shift2, (uint32_t)c) ^ nk_crc_shift(shift1, (uint32_t)c1) ^ (uint32_t)c2;
}

NK_HW_TARGET
static uint32_t nk_crc32c_hw(uint32_t crc, const uint8_t *p, size_t n) {
    uint64_t c = (uint32_t)~crc;
    /* No alignment prologue: unaligned 8-byte loads cost the same on both
       targets, and records start anywhere. */
    for (; n >= 768; p += 768, n -= 768)
        c = nk_crc_hw_3way(c, p, 256, nk_crc_zeros512, nk_crc_zeros256);
    for (; n >= 96; p += 96, n -= 96)       /* record-sized inputs */
        c = nk_crc_hw_3way(c, p, 32, nk_crc_zeros64, nk_crc_zeros32);
    while (n >= 8) { uint64_t w; memcpy(&w, p, 8); c = NK_CRC64(c, w); p += 8; n -= 8; }
    if (n & 4) { uint32_t w; memcpy(&w, p, 4); c = NK_CRC32(c, w); p += 4; }
    if (n & 2) { uint16_t w; memcpy(&w, p, 2); c = NK_CRC16(c, w); p += 2; }
    if (n & 1) c = NK_CRC8(c, *p);
    return ~(uint32_t)c;
}
#endif

static int nk_crc32c_hw_available(void) {
#if defined(NK_CRC_X86)
#  if defined(__GNUC__) || defined(__clang__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2");
#  else
    return 0;
#  endif
#elif defined(NK_CRC_ARM)
#  if defined(__APPLE__)
    return 1;
#  elif defined(__linux__)
    return (getauxval(AT_HWCAP) & HWCAP_CRC32) != 0;
#  else
    return 0;
#  endif
#else
    return 0;
#endif
}

typedef uint32_t (*nk_crc_fn)(uint32_t, const uint8_t *, size_t);
static nk_crc_fn nk_crc32c = nk_crc32c_sw;
static const char *nk_crc32c_name = "software";

/* Selects the implementation: want_hw=0 forces the portable path.
   Returns 1 when the hardware path is in use afterwards. */
static int nk_crc32c_select(int want_hw) {
#ifdef NK_HAVE_HW
    if (want_hw && nk_crc32c_hw_available()) {
        nk_crc32c = nk_crc32c_hw;
#  if defined(NK_CRC_X86)
        nk_crc32c_name = "sse4.2";
#  else
        nk_crc32c_name = "armv8-crc";
#  endif
        return 1;
    }
#endif
    (void)want_hw;
    nk_crc32c = nk_crc32c_sw;
    nk_crc32c_name = "software";
    return 0;
}

static void nk_crc32c_init(int want_hw) {
    nk_crc32c_make_tables();
    nk_crc_make_zeros(nk_crc_zeros32, 32);
    nk_crc_make_zeros(nk_crc_zeros64, 64);
    nk_crc_make_zeros(nk_crc_zeros256, 256);
    nk_crc_make_zeros(nk_crc_zeros512, 512);
    nk_crc32c_select(want_hw);
}

#endif /* NORIKV_CRC32C_H */
