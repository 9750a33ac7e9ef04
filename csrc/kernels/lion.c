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
 */
#ifndef FO_T
#define FO_KERNEL_NAME lion
#define FO_KERNEL_NSTATE 1
#define FO_KERNEL_HP(X) X(learning_rate) X(beta_1) X(beta_2)
#define FO_KERNEL_SCALARS(X) X(lr) X(b1) X(omb1) X(b2) X(omb2)
#include "declare.h"

static double lion_scalars(const fo_ctx *c, double *s)
{
    const double *h = c->hp;
    s[S_lr] = h[HP_learning_rate];
    s[S_b1] = h[HP_beta_1];
    s[S_omb1] = 1.0 - h[HP_beta_1];
    s[S_b2] = h[HP_beta_2];
    s[S_omb2] = 1.0 - h[HP_beta_2];
    return c->aux;
}
#define FO_KERNEL_SCALARS_FN lion_scalars
#include "instantiate.h"
#else

static void FO_FN(lion)(const fo_tensor *t, int64_t begin, int64_t end, const double *s)
{
    FO_KERNEL_BEGIN;
    const FO_T lr = (FO_T)s[S_lr];
    const FO_T b1 = (FO_T)s[S_b1];
    const FO_T omb1 = (FO_T)s[S_omb1];
    const FO_T b2 = (FO_T)s[S_b2];
    const FO_T omb2 = (FO_T)s[S_omb2];
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
