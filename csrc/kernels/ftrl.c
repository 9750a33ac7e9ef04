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
 */
#ifndef FO_T
#define FO_KERNEL_NAME ftrl
#define FO_KERNEL_NSTATE 2
#define FO_KERNEL_HP(X) X(learning_rate) X(learning_rate_power) X(l1_regularization_strength) X(l2_regularization_strength) X(l2_shrinkage_regularization_strength) X(beta)
#define FO_KERNEL_SCALARS(X) X(ilr) X(p) X(l1) X(l2x) X(l2s2) X(mode)
#include "declare.h"

static double ftrl_scalars(const fo_ctx *c, double *s)
{
    const double *h = c->hp;
    const double lr = h[HP_learning_rate], p = -h[HP_learning_rate_power];
    s[S_ilr] = 1.0 / lr;
    s[S_p] = p;
    s[S_l1] = h[HP_l1_regularization_strength];
    s[S_l2x] = 2.0 * h[HP_l2_regularization_strength] + h[HP_beta] / lr;
    s[S_l2s2] = 2.0 * h[HP_l2_shrinkage_regularization_strength];
    s[S_mode] = p == 0.5 ? 1.0 : (p == 0.0 ? 2.0 : 0.0);
    return c->aux;
}
#define FO_KERNEL_SCALARS_FN ftrl_scalars
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
    const FO_T ilr = (FO_T)s[S_ilr];
    const FO_T p = (FO_T)s[S_p];
    const FO_T l1 = (FO_T)s[S_l1];
    const FO_T l2x = (FO_T)s[S_l2x];
    const FO_T l2s2 = (FO_T)s[S_l2s2];
    const int mode = (int)s[S_mode];
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
