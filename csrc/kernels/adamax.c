/*
 * Adamax (Adam with the infinity norm).
 *
 *   m <- m + (1-b1)*(g - m)
 *   u <- max(b2*u, |g| + e_in)
 *   w <- w - a * m / (u + e_out)          a = lr / (1 - b1^t)
 *
 * Keras:  e_in = 0,   e_out = eps   (eps added after the max)
 * torch:  e_in = eps, e_out = 0     (eps inside the max)
 * Only m is bias-corrected; u needs no correction.
 *
 * scalars: K+0 a, K+1 1-b1, K+2 b2, K+3 e_in, K+4 e_out.  state: 0 m, 1 u.
 */
#ifndef FO_T
#define FO_KERNEL_FILE "kernels/adamax.c"
#define FO_KERNEL_NAME adamax
#define FO_KERNEL_NSTATE 2
#include "instantiate.h"
#else

static void FO_FN(adamax)(const fo_tensor *t, int64_t begin, int64_t end, const double *s)
{
    FO_KERNEL_BEGIN;
    const FO_T a = (FO_T)s[FO_S_K + 0];
    const FO_T omb1 = (FO_T)s[FO_S_K + 1];
    const FO_T b2 = (FO_T)s[FO_S_K + 2];
    const FO_T e_in = (FO_T)s[FO_S_K + 3];
    const FO_T e_out = (FO_T)s[FO_S_K + 4];
    FO_T *restrict m = FO_STATE(0);
    FO_T *restrict u = FO_STATE(1);

    FO_LOOP(
        FO_T mi = m[i] + omb1 * (gi - m[i]);
        FO_T ui = b2 * u[i];
        FO_T ai = FO_FABS(gi) + e_in;
        ui = ui > ai ? ui : ai;
        m[i] = mi; u[i] = ui;
        w[i] = wi - a * mi / (ui + e_out);)
}

#endif
