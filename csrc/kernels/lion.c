/*
 * Lion (Keras 3).
 *
 *   c <- b1*m + (1-b1)*g
 *   w <- w - lr*sign(c)           sign(0) = 0: no step where c is zero
 *   m <- b2*m + (1-b2)*g          (momentum updated after the step, with b2)
 *
 * sign(0) = 0 as in Keras, optax and bitsandbytes (DeepSpeed's CPU Lion takes
 * a full step there); a NaN c propagates into w.
 *
 * scalars: K+0 lr, K+1 b1, K+2 1-b1, K+3 b2, K+4 1-b2.  state: 0 m.
 */
#ifndef FO_T
#define FO_KERNEL_FILE "kernels/lion.c"
#define FO_KERNEL_NAME lion
#define FO_KERNEL_NSTATE 1
#include "instantiate.h"
#else

static void FO_FN(lion)(const fo_tensor *t, int64_t begin, int64_t end, const double *s)
{
    FO_KERNEL_BEGIN;
    const FO_T lr = (FO_T)s[FO_S_K + 0];
    const FO_T b1 = (FO_T)s[FO_S_K + 1];
    const FO_T omb1 = (FO_T)s[FO_S_K + 2];
    const FO_T b2 = (FO_T)s[FO_S_K + 3];
    const FO_T omb2 = (FO_T)s[FO_S_K + 4];
    const FO_T one = 1, zero = 0;
    FO_T *restrict m = FO_STATE(0);

    FO_LOOP(
        FO_T ci = b1 * m[i] + omb1 * gi;
        /* +-1, or c itself when c is +-0 or NaN */
        FO_T sg = ci > zero ? one : (ci < zero ? -one : ci);
        m[i] = b2 * m[i] + omb2 * gi;
        w[i] = wi - lr * sg;)
}

#endif
