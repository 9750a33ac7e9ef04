/*
 * FTRL-proximal (Keras 3).
 *
 *   n'  <- n + g^2
 *   z   <- z + (g + 2*l2s*w) - (n'^p - n^p)/lr * w          p = -learning_rate_power
 *   quad = n'^p/lr + 2*l2 + beta/lr
 *   w   <- (clip(z, -l1, l1) - z) / quad                    (exactly 0 when |z| <= l1)
 *   n   <- n'
 *
 * w is recomputed, not incremented.  p = 0.5 (the default) uses sqrt, p = 0
 * makes n'^p = 1; other powers call pow.
 *
 * scalars: K+0 1/lr, K+1 p, K+2 l1, K+3 2*l2 + beta/lr, K+4 2*l2s, K+5 mode
 * (0: general p, 1: p = 0.5, 2: p = 0).  state: 0 n, 1 z.
 */
#ifndef FO_T
#define FO_KERNEL_FILE "kernels/ftrl.c"
#define FO_KERNEL_NAME ftrl
#define FO_KERNEL_NSTATE 2
#include "instantiate.h"
#else

#define FTRL_BODY(POWN, POWNN)                                               \
    FO_T ni = acc[i];                                                        \
    FO_T nn = ni + gi * gi;                                                  \
    FO_T pn = POWNN;                                                         \
    FO_T po = POWN;                                                          \
    FO_T zi = z[i] + ((gi + l2s2 * wi) - (pn - po) * ilr * wi);              \
    FO_T quad = pn * ilr + l2x;                                              \
    FO_T zc = zi < -l1 ? -l1 : (zi > l1 ? l1 : zi);                          \
    z[i] = zi;                                                               \
    acc[i] = nn;                                                             \
    w[i] = (zc - zi) / quad;

static void FO_FN(ftrl)(const fo_tensor *t, int64_t begin, int64_t end, const double *s)
{
    FO_KERNEL_BEGIN;
    const FO_T ilr = (FO_T)s[FO_S_K + 0];
    const FO_T p = (FO_T)s[FO_S_K + 1];
    const FO_T l1 = (FO_T)s[FO_S_K + 2];
    const FO_T l2x = (FO_T)s[FO_S_K + 3];
    const FO_T l2s2 = (FO_T)s[FO_S_K + 4];
    const int mode = (int)s[FO_S_K + 5];
    const FO_T one = 1;
    FO_T *restrict acc = FO_STATE(0);
    FO_T *restrict z = FO_STATE(1);
    (void)one; (void)p;

    if (mode == 1) {
        FO_LOOP(FTRL_BODY(FO_SQRT(ni), FO_SQRT(nn)))
    } else if (mode == 2) {
        FO_LOOP(FTRL_BODY(one, one))
    } else {
        FO_LOOP(FTRL_BODY(FO_POW(ni, p), FO_POW(nn, p)))
    }
}

#undef FTRL_BODY
#endif
