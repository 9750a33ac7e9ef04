/*
 * Compact storage: params, grads and optimizer state held in fewer bytes than
 * float32, with the arithmetic in float32.
 *
 * Every kernel keeps its one float32 body.  A compact tensor is stepped a
 * block of FO_QBLOCK elements at a time: the block's param, grad and state are
 * decoded into float32 arrays on the stack (a few KiB, in L1), the body runs
 * on them, and what it wrote is encoded back.  Memory is read and written once
 * per step, as for float32 storage; only the bytes differ.
 *
 * Formats (fo_tensor.pfmt / gfmt / fmt[k]):
 *   FO_FMT_BF16  bfloat16: the top 16 bits of the float32.
 *   FO_FMT_F16   IEEE binary16 (subnormals, inf and NaN kept).
 *   FO_FMT_Q8S   int8 blocks for values of either sign: per block of
 *                FO_QBLOCK elements the float32 absmax A, then one byte per
 *                element: a sign bit and a 7-bit float code (4 exponent bits,
 *                3 mantissa bits, bias 15, no subnormals), value
 *                +-code_value * A / 1.875, so the block's largest magnitude
 *                has the largest code.  Codes reach 2^-14 of A; below that a
 *                value is 0.
 *   FO_FMT_Q8U   the same for values >= 0 (second moments): 8-bit codes with
 *                5 exponent bits and 3 mantissa bits (bias 31), reaching
 *                2^-30 of A; a positive value below that is stored as 2^-30
 *                of A, never 0 (a zero second moment under a nonzero first
 *                one would make a huge step).
 * A block whose values are not all finite stores absmax NaN: the whole block
 * reads back NaN, as a float32 block would have spread it at the next step.
 *
 * Rounding.  State is rounded stochastically (unbiased: a bfloat16 or int8
 * second moment under beta_2 = 0.999 moves less than half a unit per step,
 * and round-to-nearest would freeze it); a low-precision param as its
 * tensor's `rounding` says.  A stochastic rounding adds 16 uniform random bits
 * below the kept ones and truncates.  The bits come from a counter-based
 * generator: element e of the whole param (t->base + index) at step t->step
 * draws fo_draw(e_lo ^ K), K = fo_block_key(t->key, t->step, pair, e_hi),
 * 32 bits for two roundings: pair 0 rounds the param (its low half), pair
 * 1 + k / 2 state array k (the low half for even k, the high half for odd
 * k), so the two moments of Adam share one draw.  The bits do not depend on
 * threads, SIMD variant, shard layout, or a resume in another process.
 */
#ifndef FO_VAR
#include <string.h>
#include "kernel.h"

static inline uint64_t fo_mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

uint64_t fo_rng_key(uint64_t seed, uint64_t param_index)
{
    return fo_mix(fo_mix(seed) ^ param_index);
}

static inline uint32_t fo_block_key(uint64_t key, int64_t step, int pair, int64_t e_hi)
{
    return (uint32_t)fo_mix(key ^ fo_mix((uint64_t)step ^
                                         fo_mix(((uint64_t)e_hi << 8) | (uint64_t)pair)));
}

/* 32 uniform bits from a 32-bit counter (a bijection with good avalanche). */
static inline __attribute__((always_inline)) uint32_t fo_draw(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

static inline __attribute__((always_inline)) uint32_t fo_bits(float x)
{
    uint32_t b;
    memcpy(&b, &x, 4);
    return b;
}

static inline __attribute__((always_inline)) float fo_float(uint32_t b)
{
    float x;
    memcpy(&x, &b, 4);
    return x;
}

/* All ones when c (0 or 1) is 1: the selects below are written with masks,
 * which gcc vectorises where it leaves a ?: on floats as a branch. */
static inline __attribute__((always_inline)) uint32_t fo_mask(uint32_t c) { return 0u - c; }

static inline __attribute__((always_inline)) uint32_t fo_min(uint32_t a, uint32_t b)
{
    return a < b ? a : b;
}

/* The magnitude code of the float32 with bits `bits` (>= 0, finite) in a
 * float format with M mantissa bits and exponent bias B (subnormal below
 * 2^(1-B), in units of 2^(1-B-M)), clamped to kmax; rounded up with
 * probability equal to the dropped fraction (stoch: r's top 16 bits against
 * the dropped bits) or to nearest, ties to even.  Comparisons of
 * non-negative floats are made on their bits, whose order is theirs. */
static inline __attribute__((always_inline)) uint32_t
fo_mini_encode(uint32_t bits, int M, int B, uint32_t kmax, int stoch, uint32_t r)
{
    const int drop = 23 - M;
    const uint32_t add = !stoch ? (1u << (drop - 1)) - 1 + ((bits >> drop) & 1u)
                         : drop >= 16 ? (r >> 16) << (drop - 16) : r >> (32 - drop);
    const uint32_t kn = ((bits + add) >> drop) - ((uint32_t)(127 - B) << M);
    /* below the normal range: z = y / 2^(1-B-M) < 2^M, exact; its fraction decides */
    const uint32_t thr = (uint32_t)(128 - B) << 23;
    const uint32_t sub = fo_mask(bits < thr);
    const float z = fo_float((bits & sub) | (thr & ~sub)) *
                    fo_float((uint32_t)(127 + B - 1 + M) << 23);
    const int32_t zi = (int32_t)z;
    const float fr = z - (float)zi;
    const uint32_t up = stoch ? (uint32_t)(fr > (float)(int32_t)(r >> 16) * 0x1p-16f)
                              : (uint32_t)(fr > 0.5f) | ((uint32_t)(fr == 0.5f) & (uint32_t)zi);
    const uint32_t k = (((uint32_t)zi + (up & 1u)) & sub) | (kn & ~sub);
    return fo_min(k, kmax);
}

/* The same without subnormals (the int8 codes): below 2^(1-B), `low`. */
static inline __attribute__((always_inline)) uint32_t
fo_mini_encode_normal(uint32_t bits, int M, int B, uint32_t kmax, uint32_t low, uint32_t r)
{
    const int drop = 23 - M;
    const uint32_t kn = ((bits + ((r >> 16) << (drop - 16))) >> drop) -
                        ((uint32_t)(127 - B) << M);
    const uint32_t sub = fo_mask(bits < (uint32_t)(128 - B) << 23);
    return fo_min((low & sub) | (kn & ~sub), kmax);
}

static inline __attribute__((always_inline)) float fo_mini_decode_normal(uint32_t k, int M, int B)
{
    return fo_float(((k + ((uint32_t)(127 - B) << M)) << (23 - M)) & fo_mask(k >= (1u << M)));
}

static inline __attribute__((always_inline)) float fo_mini_decode(uint32_t k, int M, int B)
{
    const uint32_t normal = (k + ((uint32_t)(127 - B) << M)) << (23 - M);
    const uint32_t sub = fo_bits((float)(int32_t)k * fo_float((uint32_t)(127 + 1 - B - M) << 23));
    const uint32_t m = fo_mask(k >= (1u << M));
    return fo_float((normal & m) | (sub & ~m));
}

#define FO_Q8_FMAX 1.875f     /* the largest code's value, in both int8 formats */

#define FO_KERNEL_FILE "compact.c"
#include "variants.h"

typedef void (*fo_compact_fn)(const fo_tensor *, fo_kernel_fn, int64_t, int64_t, const double *);

void fo_compact_run(int simd, const fo_tensor *t, fo_kernel_fn f, int64_t begin, int64_t end,
                    const double *s)
{
#if FO_X86_VARIANTS
    static const fo_compact_fn run[FO_SIMD_COUNT] = {
        fo_compact_run_baseline, fo_compact_run_avx2, fo_compact_run_avx512};
    run[simd](t, f, begin, end, s);
#else
    (void)simd;
    fo_compact_run_baseline(t, f, begin, end, s);
#endif
}

void fo_compact_encode(int fmt, int rounding, const float *x, void *out, int64_t first, int64_t n,
                       uint64_t key, int64_t step, int stream)
{
    uint32_t r[FO_QBLOCK];
    const int pair = stream == 0 ? 0 : 1 + (stream - 1) / 2;
    const int sh = stream > 0 && (stream - 1) % 2 ? 0 : 16;
    for (int64_t b = 0; b < n; b += FO_QBLOCK) {
        const int64_t m = n - b < FO_QBLOCK ? n - b : FO_QBLOCK;
        const int64_t e = first + b;
        fo_draws_baseline(r, m, (uint32_t)e, fo_block_key(key, step, pair, e >> 32));
        if (fmt == FO_FMT_Q8S || fmt == FO_FMT_Q8U)
            fo_q8_encode_baseline(x + b, (unsigned char *)out + (b / FO_QBLOCK) * FO_QBLOCK_BYTES,
                                  m, fmt == FO_FMT_Q8S, r, sh);
        else
            fo_h_encode_baseline(fmt, rounding, x + b, (uint16_t *)out + b, m, r, sh);
    }
}

void fo_compact_decode(int fmt, const void *in, float *x, int64_t first, int64_t n)
{
    (void)first;
    for (int64_t b = 0; b < n; b += FO_QBLOCK) {
        const int64_t m = n - b < FO_QBLOCK ? n - b : FO_QBLOCK;
        if (fmt == FO_FMT_Q8S || fmt == FO_FMT_Q8U)
            fo_q8_decode_baseline((const unsigned char *)in + (b / FO_QBLOCK) * FO_QBLOCK_BYTES,
                                  x + b, m, fmt == FO_FMT_Q8S);
        else
            fo_h_decode_baseline(fmt, (const uint16_t *)in + b, x + b, m);
    }
}

#else /* one SIMD variant (FO_VAR) */

#define FO_CV(name) FO_CAT(FO_CAT(name, _), FO_VAR)

/* 16-bit floats: n values; a stochastic rounding of value i reads 16 bits
 * of r[i] (the high half, or the low one when sh is 16).  The encoders are
 * kept out of line: inlined into fo_compact_run, gcc unrolls them fully (n is
 * at most FO_QBLOCK there) and spills their vectors to the stack, which made
 * a bfloat16-state Adam step about 6% slower in cache. */
static __attribute__((noinline)) void
FO_CV(fo_h_encode)(int fmt, int rounding, const float *restrict x, uint16_t *restrict out,
                   int64_t n, const uint32_t *restrict r, int sh)
{
    if (fmt == FO_FMT_BF16 && rounding == FO_ROUND_STOCHASTIC) {
        for (int64_t i = 0; i < n; i++) {
            const uint32_t b = fo_bits(x[i]);
            const uint32_t nan = fo_mask((b & 0x7fffffffu) > 0x7f800000u);
            const uint32_t add = ((r[i] << sh) & 0xffff0000u) >> 16;
            out[i] = (uint16_t)((((b >> 16) | 0x40u) & nan) | (((b + add) >> 16) & ~nan));
        }
    } else if (fmt == FO_FMT_BF16) {
        for (int64_t i = 0; i < n; i++) {
            const uint32_t b = fo_bits(x[i]);
            const uint32_t nan = fo_mask((b & 0x7fffffffu) > 0x7f800000u);
            const uint32_t add = 0x7fffu + ((b >> 16) & 1u);
            out[i] = (uint16_t)((((b >> 16) | 0x40u) & nan) | (((b + add) >> 16) & ~nan));
        }
    } else if (rounding == FO_ROUND_STOCHASTIC) {
        for (int64_t i = 0; i < n; i++) {
            const uint32_t b = fo_bits(x[i]), a = b & 0x7fffffffu;
            const uint32_t nan = fo_mask(a > 0x7f800000u);
            /* beyond 65536 (inf and NaN included) the code is inf's */
            const uint32_t k = fo_mini_encode(fo_min(a, 0x47800000u), 10, 15, 0x7c00u, 1,
                                              (r[i] << sh) & 0xffff0000u);
            out[i] = (uint16_t)(((b >> 16) & 0x8000u) | (0x7e00u & nan) | (k & ~nan));
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            const uint32_t b = fo_bits(x[i]), a = b & 0x7fffffffu;
            const uint32_t nan = fo_mask(a > 0x7f800000u);
            const uint32_t k = fo_mini_encode(fo_min(a, 0x47800000u), 10, 15, 0x7c00u, 0, 0u);
            out[i] = (uint16_t)(((b >> 16) & 0x8000u) | (0x7e00u & nan) | (k & ~nan));
        }
    }
}

static void FO_CV(fo_h_decode)(int fmt, const uint16_t *restrict in, float *restrict x, int64_t n)
{
    if (fmt == FO_FMT_BF16) {
        for (int64_t i = 0; i < n; i++)
            x[i] = fo_float((uint32_t)in[i] << 16);
    } else {
        for (int64_t i = 0; i < n; i++) {
            const uint32_t h = in[i], k = h & 0x7fffu;
            const uint32_t special = fo_mask(k >= 0x7c00u);     /* inf, NaN */
            const uint32_t mag = ((0x7f800000u | ((k & 0x3ffu) << 13)) & special) |
                                 (fo_bits(fo_mini_decode(k, 10, 15)) & ~special);
            x[i] = fo_float(mag | ((h & 0x8000u) << 16));
        }
    }
}

/* One int8 block: absmax, then n codes (the rest of the block's codes 0),
 * rounded stochastically with 16 bits of r[i] (the high half, or the low
 * one when sh is 16). */
static __attribute__((noinline)) void
FO_CV(fo_q8_encode)(const float *restrict x, unsigned char *restrict blk, int64_t n, int sign,
                    const uint32_t *restrict r, int sh)
{
    uint32_t top = 0;          /* the largest |x| as bits: inf and NaN above any finite */
    for (int64_t i = 0; i < n; i++) {
        const uint32_t a = fo_bits(x[i]) & 0x7fffffffu;
        top = a > top ? a : top;
    }
    const int bad = top >= 0x7f800000u;
    const float amax = fo_float(top);
    const float stored = bad ? NAN : amax;
    memcpy(blk, &stored, 4);
    unsigned char *restrict code = blk + 4;
    const float inv = amax > 0.0f && !bad ? FO_Q8_FMAX / amax : 0.0f;
    if (sign) {
        for (int64_t i = 0; i < n; i++) {
            const uint32_t b = fo_bits(x[i]);
            const uint32_t y = fo_bits(fo_float(b & 0x7fffffffu) * inv);
            code[i] = (unsigned char)(fo_mini_encode_normal(y, 3, 15, 127u, 0u,
                                                            (r[i] << sh) & 0xffff0000u) |
                                      ((b >> 24) & 0x80u));
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            const uint32_t y = fo_bits(fabsf(x[i]) * inv);
            /* a positive value below the range is the smallest code, 0 stays 0 */
            const uint32_t low = 8u & fo_mask(y != 0u);
            code[i] = (unsigned char)fo_mini_encode_normal(y, 3, 31, 255u, low,
                                                           (r[i] << sh) & 0xffff0000u);
        }
    }
    for (int64_t i = n; i < FO_QBLOCK; i++)
        code[i] = 0;
}

static void FO_CV(fo_q8_decode)(const unsigned char *restrict blk, float *restrict x, int64_t n,
                                int sign)
{
    float amax;
    memcpy(&amax, blk, 4);
    const float d = amax / FO_Q8_FMAX;
    const unsigned char *restrict code = blk + 4;
    if (sign) {
        for (int64_t i = 0; i < n; i++) {
            const uint32_t c = code[i];
            x[i] = fo_float(fo_bits(fo_mini_decode_normal(c & 0x7fu, 3, 15) * d) |
                            ((c & 0x80u) << 24));
        }
    } else {
        for (int64_t i = 0; i < n; i++)
            x[i] = fo_mini_decode_normal(code[i], 3, 31) * d;
    }
}

/* The draws of n elements from e0: r[i] = fo_draw((e0 + i) ^ kb). */
static void FO_CV(fo_draws)(uint32_t *restrict r, int64_t n, uint32_t e0, uint32_t kb)
{
    for (int64_t i = 0; i < n; i++)
        r[i] = fo_draw((e0 + (uint32_t)i) ^ kb);
}

static void FO_CV(fo_compact_run)(const fo_tensor *t, fo_kernel_fn f, int64_t begin,
                                  int64_t end, const double *s)
{
    float pw[FO_QBLOCK], pg[FO_QBLOCK], ps[FO_MAX_STATE][FO_QBLOCK];
    uint32_t rd[1 + (FO_MAX_STATE + 1) / 2][FO_QBLOCK];     /* the draws of each pair */
    fo_tensor u = *t;
    u.compact = 0;
    for (int64_t b0 = begin; b0 < end; b0 += FO_QBLOCK) {
        const int64_t n = end - b0 < FO_QBLOCK ? end - b0 : FO_QBLOCK;
        const int64_t e = t->base + b0;
        const uint32_t e0 = (uint32_t)e;
        if (t->master != NULL)
            u.param = t->master + b0;
        else if (t->pfmt == FO_FMT_NATIVE)
            u.param = (float *)t->param + b0;
        else {
            FO_CV(fo_h_decode)(t->pfmt, (const uint16_t *)t->param + b0, pw, n);
            u.param = pw;
        }
        if (t->gfmt == FO_FMT_NATIVE)
            u.grad = (const float *)t->grad + b0;
        else {
            FO_CV(fo_h_decode)(t->gfmt, (const uint16_t *)t->grad + b0, pg, n);
            u.grad = pg;
        }
        for (int k = 0; k < FO_MAX_STATE; k++) {
            if (t->state[k] == NULL)
                continue;
            switch (t->fmt[k]) {
            case FO_FMT_NATIVE:
                u.state[k] = (float *)t->state[k] + b0;
                break;
            case FO_FMT_Q8S:
            case FO_FMT_Q8U:
                FO_CV(fo_q8_decode)((const unsigned char *)t->state[k] +
                                        (b0 / FO_QBLOCK) * FO_QBLOCK_BYTES,
                                    ps[k], n, t->fmt[k] == FO_FMT_Q8S);
                u.state[k] = ps[k];
                break;
            default:
                FO_CV(fo_h_decode)(t->fmt[k], (const uint16_t *)t->state[k] + b0, ps[k], n);
                u.state[k] = ps[k];
            }
        }
        f(&u, 0, n, s);
        int drawn = 0;      /* bit p: the draws of pair p are in rd[p] */
        for (int stream = 0; stream <= FO_MAX_STATE; stream++) {
            const int k = stream - 1;
            const int fmt = stream == 0 ? t->pfmt : t->fmt[k];
            if (fmt == FO_FMT_NATIVE || (stream > 0 && t->state[k] == NULL))
                continue;
            const int pair = stream == 0 ? 0 : 1 + k / 2;
            const int sh = stream > 0 && k % 2 ? 0 : 16;
            if (!(drawn & (1 << pair)))
                FO_CV(fo_draws)(rd[pair], n, e0, fo_block_key(t->key, t->step, pair, e >> 32));
            drawn |= 1 << pair;
            if (stream == 0)
                FO_CV(fo_h_encode)(fmt, t->rounding, (const float *)u.param,
                                   (uint16_t *)t->param + b0, n, rd[pair], sh);
            else if (fmt == FO_FMT_Q8S || fmt == FO_FMT_Q8U)
                FO_CV(fo_q8_encode)(ps[k], (unsigned char *)t->state[k] +
                                               (b0 / FO_QBLOCK) * FO_QBLOCK_BYTES,
                                    n, fmt == FO_FMT_Q8S, rd[pair], sh);
            else
                FO_CV(fo_h_encode)(fmt, FO_ROUND_STOCHASTIC, ps[k],
                                   (uint16_t *)t->state[k] + b0, n, rd[pair], sh);
        }
    }
}

#undef FO_CV
#endif
