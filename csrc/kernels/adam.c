/*
 * Adam, AMSGrad (and AdamW: the decoupled decay is the shared DECAY slot).
 *
 *   m <- m + (1-b1)*(g - m)
 *   v <- b2*v + (1-b2)*g^2
 *   vv = max(vhat, v) -> vhat   with amsgrad (max over the raw v), else v
 *   w <- w - a * m / (sqrt(vv)*c + eps)
 *
 * Keras:  a = lr*sqrt(1-b2^t)/(1-b1^t), c = 1            (eps not bias-corrected)
 * torch:  a = lr/(1-b1^t),             c = 1/sqrt(1-b2^t)
 * Both are the same loop with one sqrt and one divide per element; the host
 * computes a and c in double.
 *
 * scalars: K+0 a, K+1 c, K+2 eps, K+3 1-b1, K+4 b2, K+5 1-b2, K+6 amsgrad.
 * state: 0 m, 1 v, 2 vhat (amsgrad only).
 */
#ifndef FO_T
#define FO_KERNEL_FILE "kernels/adam.c"
#define FO_KERNEL_NAME adam
#define FO_KERNEL_NSTATE 3
#define FO_KERNEL_NSTATE_USED(s) (s[FO_S_K + 6] != 0.0 ? 3 : 2)
#include "instantiate.h"
#else

static void FO_FN(adam)(const fo_tensor *t, int64_t begin, int64_t end, const double *s)
{
    FO_KERNEL_BEGIN;
    const FO_T a = (FO_T)s[FO_S_K + 0];
    const FO_T c = (FO_T)s[FO_S_K + 1];
    const FO_T eps = (FO_T)s[FO_S_K + 2];
    const FO_T omb1 = (FO_T)s[FO_S_K + 3];
    const FO_T b2 = (FO_T)s[FO_S_K + 4];
    const FO_T omb2 = (FO_T)s[FO_S_K + 5];
    const int amsgrad = s[FO_S_K + 6] != 0.0;
    FO_T *restrict m = FO_STATE(0);
    FO_T *restrict v = FO_STATE(1);

    if (amsgrad) {
        FO_T *restrict vh = FO_STATE(2);
        FO_LOOP(
            FO_T mi = m[i] + omb1 * (gi - m[i]);
            FO_T vi = b2 * v[i] + omb2 * (gi * gi);
            FO_T hi = vh[i] > vi ? vh[i] : vi;
            m[i] = mi; v[i] = vi; vh[i] = hi;
            w[i] = wi - a * mi / (FO_SQRT(hi) * c + eps);)
    } else {
        FO_LOOP(
            FO_T mi = m[i] + omb1 * (gi - m[i]);
            FO_T vi = b2 * v[i] + omb2 * (gi * gi);
            m[i] = mi; v[i] = vi;
            w[i] = wi - a * mi / (FO_SQRT(vi) * c + eps);)
    }
}

#endif
