/*
 * Kernel template machinery.
 *
 * A kernel file (csrc/kernels/NAME.c) holds its scalar function and ONE
 * loop body:
 *
 *     #ifndef FO_T
 *     #define FO_KERNEL_NAME NAME
 *     #define FO_KERNEL_NSTATE 2
 *     #define FO_KERNEL_HP(X) X(learning_rate) X(beta_1) ...
 *     #define FO_KERNEL_SCALARS(X) X(a) X(omb1) ...
 *     #include "declare.h"
 *     static double NAME_scalars(const fo_ctx *c, double *s) { ... }
 *     #define FO_KERNEL_SCALARS_FN NAME_scalars
 *     #include "instantiate.h"
 *     #else
 *     ... body using FO_T, FO_FN(NAME), s[S_a] ...
 *     #endif
 *
 * FO_KERNEL_HP names the hyper-parameters the scalar function reads, in the
 * order the host passes them (c->hp[HP_beta_1]); the Python class declaring
 * the kernel is checked against it at import.  FO_KERNEL_SCALARS names the
 * slots of the scalar row from FO_S_K on (s[S_a]); the scalar function fills
 * them in double from the hyper-parameters and the step, once per group and
 * step.  declare.h turns both lists into enums.
 *
 * instantiate.h then includes the same file again once per dtype (float,
 * double) and SIMD variant (baseline, AVX2+FMA, AVX-512), each time with
 * FO_T and FO_FN bound, so float32 and float64 can never drift apart.
 * Optional: FO_KERNEL_NSTATE_USED(s), the number of state arrays the kernel
 * reads with the scalar row s (Adam reads vhat only with amsgrad; the host
 * checks a tensor has them before each step); FO_KERNEL_REDUCE with a
 * reduction pass FO_RFN(NAME) and FO_KERNEL_FINISH, the function that turns
 * its sums into the row of the elementwise pass (Lamb); FO_KERNEL_ROWCOL with
 * a row/column pass FO_CFN(NAME) and a fold FO_FFN(NAME), for a kernel
 * whose state of a param with two or more axes is factored: one value per
 * row and one per column of each matrix over the last two axes
 * (Adafactor; see fo_step_rowcol); FO_KERNEL_AUX, the number of host values
 * (1 or 2) the scalar function keeps per tensor, or per group with one clock
 * (Nadam's momentum product).
 * Variants differ only in the instruction set gcc may use to vectorise the
 * plain C loop; with -ffp-contract=off they give bit-identical results.
 */
#ifndef FO_KERNEL_H
#define FO_KERNEL_H

#include <float.h>
#include <math.h>
#include "fastopt.h"

#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__) && !defined(__clang__)
#define FO_X86_VARIANTS 1
#else
#define FO_X86_VARIANTS 0
#endif

#define FO_STR_(x) #x
#define FO_STR(x) FO_STR_(x)
#define FO_CAT_(a, b) a##b
#define FO_CAT(a, b) FO_CAT_(a, b)
#define FO_CAT4_(a, b, c, d) fo_##a##_##b##_##c##_##d
#define FO_CAT4(a, b, c, d) FO_CAT4_(a, b, c, d)

/* fo_<name>_<dtype>_<variant> */
#define FO_FN(name) FO_CAT4(k, name, FO_DT, FO_VAR)
/* the reduction pass of a kernel that has one (FO_KERNEL_REDUCE defined) */
#define FO_RFN(name) FO_CAT4(kr, name, FO_DT, FO_VAR)
/* the row/column pass and the fold of a kernel with factored state
 * (FO_KERNEL_ROWCOL defined); the fold is serial, so only its baseline
 * instance is used */
#define FO_CFN(name) FO_CAT4(kc, name, FO_DT, FO_VAR)
#define FO_FFN(name) FO_CAT4(kf, name, FO_DT, FO_VAR)

/* Common start of every kernel: typed pointers to [begin, end) and the
 * shared scalars converted once to the element type. */
#define FO_KERNEL_BEGIN                                                      \
    FO_T *restrict w = (FO_T *)t->param + begin;                            \
    const FO_T *restrict g = (const FO_T *)t->grad + begin;                 \
    const int64_t n = end - begin;                                          \
    const int flags = (int)s[FO_S_FLAGS];                                   \
    const FO_T gscale = (FO_T)s[FO_S_GSCALE];                               \
    const FO_T clip = (FO_T)s[FO_S_CLIP];                                   \
    const FO_T l2 = (FO_T)s[FO_S_L2];                                       \
    const FO_T decay = (FO_T)s[FO_S_DECAY];                                 \
    (void)gscale; (void)clip; (void)l2; (void)decay

#define FO_STATE(k) ((FO_T *restrict)t->state[k] + begin)

/* The gradient and parameter a kernel works with, after the shared
 * preprocessing.  Used inside the general (flags != 0) loop only; the plain
 * loop reads g[i] and w[i] directly. */
#define FO_PREP(gi, wi, i)                                                   \
    FO_T wi = w[i];                                                          \
    FO_T gi = g[i];                                                          \
    if (flags & FO_F_GSCALE) gi = gi * gscale;                               \
    if (flags & FO_F_CLIP) gi = gi < -clip ? -clip : (gi > clip ? clip : gi); \
    if (flags & FO_F_L2) gi = gi + l2 * wi;                                  \
    if (flags & FO_F_DECAY) wi = wi * decay

/* Runs the body (which reads gi, wi and writes w[i] and state) in a loop with
 * no preprocessing when flags == 0, else in a loop with it. */
#define FO_LOOP(...)                                                         \
    if (flags == 0) {                                                        \
        for (int64_t i = 0; i < n; i++) {                                    \
            const FO_T gi = g[i];                                            \
            const FO_T wi = w[i];                                            \
            __VA_ARGS__                                                      \
        }                                                                    \
    } else {                                                                 \
        for (int64_t i = 0; i < n; i++) {                                    \
            FO_PREP(gi, wi, i);                                              \
            __VA_ARGS__                                                      \
        }                                                                    \
    }

#endif /* FO_KERNEL_H */
