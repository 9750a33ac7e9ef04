/*
 * SparseAdam (torch.optim.SparseAdam): Adam on the elements a gradient
 * names, in torch's order of operations.
 *
 *   dm = (g - m)*(1-b1);      m <- m + dm
 *   dv = (g*g - v)*(1-b2);    v <- v + dv
 *   w <- w + (m / (sqrt(v) + eps)) * ns,   ns = -lr*sqrt(1-b2^t)/(1-b1^t)
 *
 * torch forms the new moments as dm + m and dv + v (the same sums) and
 * divides before scaling; epsilon is added outside the bias correction, as
 * in Keras's Adam.  With a row list only the given rows (and their m, v)
 * move; t is the param's step count.
 *
 * state: 0 m, 1 v.
 */
#ifndef FO_T
#define FO_KERNEL_NAME sparse_adam
#define FO_KERNEL_NSTATE 2
#define FO_KERNEL_HP(X) X(learning_rate) X(beta_1) X(beta_2) X(epsilon)
#define FO_KERNEL_SCALARS(X) X(ns) X(eps) X(omb1) X(omb2)
#include "declare.h"

static double sparse_adam_scalars(const fo_ctx *c, double *s)
{
    const double *h = c->hp;
    const double bc1 = 1.0 - pow(h[HP_beta_1], (double)c->t);
    const double bc2 = 1.0 - pow(h[HP_beta_2], (double)c->t);
    s[S_ns] = -(h[HP_learning_rate] * sqrt(bc2) / bc1);
    s[S_eps] = h[HP_epsilon];
    s[S_omb1] = 1.0 - h[HP_beta_1];
    s[S_omb2] = 1.0 - h[HP_beta_2];
    return c->aux;
}
#define FO_KERNEL_SCALARS_FN sparse_adam_scalars
#include "instantiate.h"
#else

static void FO_FN(sparse_adam)(const fo_tensor *t, int64_t begin, int64_t end, const double *s)
{
    FO_KERNEL_BEGIN;
    const FO_T ns = (FO_T)s[S_ns];
    const FO_T eps = (FO_T)s[S_eps];
    const FO_T omb1 = (FO_T)s[S_omb1];
    const FO_T omb2 = (FO_T)s[S_omb2];
    FO_T *restrict m = FO_STATE(0);
    FO_T *restrict v = FO_STATE(1);

    FO_LOOP(
        FO_T mi = m[i] + (gi - m[i]) * omb1;
        FO_T vi = v[i] + (gi * gi - v[i]) * omb2;
        m[i] = mi; v[i] = vi;
        w[i] = wi + mi / (FO_SQRT(vi) + eps) * ns;)
}

#endif
