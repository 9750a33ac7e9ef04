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
 */
#ifndef FO_T
#define FO_KERNEL_NAME adamax
#define FO_KERNEL_NSTATE 2
#define FO_KERNEL_HP(X) X(learning_rate) X(beta_1) X(beta_2) X(epsilon)
#define FO_KERNEL_SCALARS(X) X(a) X(omb1) X(b2) X(e_in) X(e_out)
#include "declare.h"

static double adamax_scalars(const fo_ctx *c, double *s)
{
    const double *h = c->hp;
    const double b1 = h[HP_beta_1], eps = h[HP_epsilon];
    s[S_a] = h[HP_learning_rate] / (1.0 - pow(b1, (double)c->t));
    s[S_omb1] = 1.0 - b1;
    s[S_b2] = h[HP_beta_2];
    s[S_e_in] = c->convention == FO_KERAS ? 0.0 : eps;
    s[S_e_out] = c->convention == FO_KERAS ? eps : 0.0;
    return c->aux;
}
#define FO_KERNEL_SCALARS_FN adamax_scalars
#include "instantiate.h"
#else

static void FO_FN(adamax)(const fo_tensor *t, int64_t begin, int64_t end, const double *s)
{
    FO_KERNEL_BEGIN;
    const FO_T a = (FO_T)s[S_a];
    const FO_T omb1 = (FO_T)s[S_omb1];
    const FO_T b2 = (FO_T)s[S_b2];
    const FO_T e_in = (FO_T)s[S_e_in];
    const FO_T e_out = (FO_T)s[S_e_out];
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
