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
 * state: 0 m, 1 v.
 */
#ifndef FO_T
#define FO_KERNEL_NAME radam
#define FO_KERNEL_NSTATE 2
#define FO_KERNEL_HP(X) X(learning_rate) X(beta_1) X(beta_2) X(epsilon)
#define FO_KERNEL_SCALARS(X) X(a) X(eps) X(omb1) X(b2) X(omb2) X(rectified)
#include "declare.h"

static double radam_scalars(const fo_ctx *c, double *s)
{
    const double *h = c->hp;
    const double lr = h[HP_learning_rate], b1 = h[HP_beta_1], b2 = h[HP_beta_2];
    const double t = (double)c->t;
    const double bc1 = 1.0 - pow(b1, t), bc2 = 1.0 - pow(b2, t);
    const double rho_inf = 2.0 / (1.0 - b2) - 1.0;
    const double rho_t = rho_inf - 2.0 * t * pow(b2, t) / bc2;
    if (rho_t > 5.0) {
        const double rect = sqrt((rho_t - 4) * (rho_t - 2) * rho_inf /
                                 ((rho_inf - 4) * (rho_inf - 2) * rho_t));
        s[S_a] = lr * rect * sqrt(bc2) / bc1;
        s[S_rectified] = 1.0;
    } else {
        s[S_a] = lr / bc1;
        s[S_rectified] = 0.0;
    }
    s[S_eps] = h[HP_epsilon];
    s[S_omb1] = 1.0 - b1;
    s[S_b2] = b2;
    s[S_omb2] = 1.0 - b2;
    return c->aux;
}
#define FO_KERNEL_SCALARS_FN radam_scalars
#include "instantiate.h"
#else

static void FO_FN(radam)(const fo_tensor *t, int64_t begin, int64_t end, const double *s)
{
    FO_KERNEL_BEGIN;
    const FO_T a = (FO_T)s[S_a];
    const FO_T eps = (FO_T)s[S_eps];
    const FO_T omb1 = (FO_T)s[S_omb1];
    const FO_T b2 = (FO_T)s[S_b2];
    const FO_T omb2 = (FO_T)s[S_omb2];
    const int rectified = s[S_rectified] != 0.0;
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
