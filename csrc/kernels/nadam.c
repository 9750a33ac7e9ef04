/*
 * Nadam (Adam with Nesterov momentum and a momentum schedule).
 *
 *   m <- m + (1-b1)*(g - m)
 *   v <- b2*v + (1-b2)*g^2
 *   w <- w - (cm*m + cg*g) / (sqrt(v)*c + eps)
 *
 * with, computed on the host in double from the momentum schedule
 * mu_t = b1*(1 - 0.5*0.96^(t*psi)) and its running product P_t:
 *   cm = lr*mu_{t+1}/(1 - P_t*mu_{t+1}),  cg = lr*(1 - mu_t)/(1 - P_t),
 *   c = 1/sqrt(1 - b2^t).
 * Keras 3: psi = 1 and one product per optimizer; torch: psi = 0.004 and one
 * product per parameter.  Both put eps on the bias-corrected scale.
 *
 * scalars: K+0 cm, K+1 cg, K+2 c, K+3 eps, K+4 1-b1, K+5 b2, K+6 1-b2.
 * state: 0 m, 1 v.
 */
#ifndef FO_T
#define FO_KERNEL_FILE "kernels/nadam.c"
#define FO_KERNEL_NAME nadam
#define FO_KERNEL_NSTATE 2
#include "instantiate.h"
#else

static void FO_FN(nadam)(const fo_tensor *t, int64_t begin, int64_t end, const double *s)
{
    FO_KERNEL_BEGIN;
    const FO_T cm = (FO_T)s[FO_S_K + 0];
    const FO_T cg = (FO_T)s[FO_S_K + 1];
    const FO_T c = (FO_T)s[FO_S_K + 2];
    const FO_T eps = (FO_T)s[FO_S_K + 3];
    const FO_T omb1 = (FO_T)s[FO_S_K + 4];
    const FO_T b2 = (FO_T)s[FO_S_K + 5];
    const FO_T omb2 = (FO_T)s[FO_S_K + 6];
    FO_T *restrict m = FO_STATE(0);
    FO_T *restrict v = FO_STATE(1);

    FO_LOOP(
        FO_T mi = m[i] + omb1 * (gi - m[i]);
        FO_T vi = b2 * v[i] + omb2 * (gi * gi);
        m[i] = mi; v[i] = vi;
        w[i] = wi - (cm * mi + cg * gi) / (FO_SQRT(vi) * c + eps);)
}

#endif
