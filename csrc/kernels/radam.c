/*
 * RAdam (rectified Adam, torch.optim).
 *
 *   m <- m + (1-b1)*(g - m)
 *   v <- b2*v + (1-b2)*g^2
 *   rho_inf = 2/(1-b2) - 1,  rho_t = rho_inf - 2*t*b2^t/(1 - b2^t)
 *   rho_t > 5:  w <- w - a * m / (sqrt(v) + eps),
 *               a = lr * r_t * sqrt(1 - b2^t)/(1 - b1^t),
 *               r_t = sqrt((rho_t-4)(rho_t-2)rho_inf / ((rho_inf-4)(rho_inf-2)rho_t))
 *   otherwise:  w <- w - a * m,  a = lr/(1 - b1^t)         (un-adapted momentum step)
 *
 * eps is added to sqrt(v) before the bias correction, as torch does.
 *
 * scalars: K+0 a, K+1 eps, K+2 1-b1, K+3 b2, K+4 1-b2, K+5 rectified.
 * state: 0 m, 1 v.
 */
#ifndef FO_T
#define FO_KERNEL_FILE "kernels/radam.c"
#define FO_KERNEL_NAME radam
#define FO_KERNEL_NSTATE 2
#include "instantiate.h"
#else

static void FO_FN(radam)(const fo_tensor *t, int64_t begin, int64_t end, const double *s)
{
    FO_KERNEL_BEGIN;
    const FO_T a = (FO_T)s[FO_S_K + 0];
    const FO_T eps = (FO_T)s[FO_S_K + 1];
    const FO_T omb1 = (FO_T)s[FO_S_K + 2];
    const FO_T b2 = (FO_T)s[FO_S_K + 3];
    const FO_T omb2 = (FO_T)s[FO_S_K + 4];
    const int rectified = s[FO_S_K + 5] != 0.0;
    FO_T *restrict m = FO_STATE(0);
    FO_T *restrict v = FO_STATE(1);

    if (rectified) {
        FO_LOOP(
            FO_T mi = m[i] + omb1 * (gi - m[i]);
            FO_T vi = b2 * v[i] + omb2 * (gi * gi);
            m[i] = mi; v[i] = vi;
            w[i] = wi - a * mi / (FO_SQRT(vi) + eps);)
    } else {
        FO_LOOP(
            FO_T mi = m[i] + omb1 * (gi - m[i]);
            FO_T vi = b2 * v[i] + omb2 * (gi * gi);
            m[i] = mi; v[i] = vi;
            w[i] = wi - a * mi;)
    }
}

#endif
