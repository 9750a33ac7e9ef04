/*
 * Nadam (Adam with Nesterov momentum and a momentum schedule).
 *
 *   m <- m + (1-b1)*(g - m)
 *   v <- v + (1-b2)*(g^2 - v)     (Keras's form; torch's: b2*v + (1-b2)*g^2)
 *   w <- w - (cm*m + cg*g) / (sqrt(v)*c + eps)
 *
 * with, computed on the host in double from the momentum schedule
 * mu_t = b1*(1 - 0.5*0.96^(t*psi)) and its running product P_t:
 *   cm = lr*mu_{t+1}/(1 - P_t*mu_{t+1}),  cg = lr*(1 - mu_t)/(1 - P_t),
 *   c = 1/sqrt(1 - b2^t).
 * Keras 3: psi = 1 and one product per optimizer; torch: psi = 0.004 and one
 * product per parameter.  Both put eps on the bias-corrected scale.
 *
 * state: 0 m, 1 v.
 */
#ifndef FO_T
#define FO_KERNEL_NAME nadam
#define FO_KERNEL_NSTATE 2
#define FO_KERNEL_HP(X) X(learning_rate) X(beta_1) X(beta_2) X(epsilon) X(momentum_decay)
#define FO_KERNEL_SCALARS(X) X(cm) X(cg) X(c) X(eps) X(omb1) X(b2) X(omb2) X(lerp)
#define FO_KERNEL_AUX 1
#include "declare.h"

/* The momentum schedule mu_t = beta_1*(1 - 0.5*0.96^(t*psi)). */
static double nadam_mu(const double *h, int64_t t)
{
    return h[HP_beta_1] * (1.0 - 0.5 * pow(0.96, (double)t * h[HP_momentum_decay]));
}

static double nadam_scalars(const fo_ctx *c, double *s)
{
    const double *h = c->hp;
    const double lr = h[HP_learning_rate], b1 = h[HP_beta_1], b2 = h[HP_beta_2];
    const double u_t = nadam_mu(h, c->t), u_t1 = nadam_mu(h, c->t + 1);
    const double prod = c->aux * u_t;
    s[S_cm] = lr * u_t1 / (1.0 - prod * u_t1);
    s[S_cg] = lr * (1.0 - u_t) / (1.0 - prod);
    s[S_c] = 1.0 / sqrt(1.0 - pow(b2, (double)c->t));
    s[S_eps] = h[HP_epsilon];
    s[S_omb1] = 1.0 - b1;
    s[S_b2] = b2;
    s[S_omb2] = 1.0 - b2;
    s[S_lerp] = c->convention == FO_KERAS ? 1.0 : 0.0;
    return prod;
}
#define FO_KERNEL_SCALARS_FN nadam_scalars
#include "instantiate.h"
#else

static void FO_FN(nadam)(const fo_tensor *t, int64_t begin, int64_t end, const double *s)
{
    FO_KERNEL_BEGIN;
    const FO_T cm = (FO_T)s[S_cm];
    const FO_T cg = (FO_T)s[S_cg];
    const FO_T c = (FO_T)s[S_c];
    const FO_T eps = (FO_T)s[S_eps];
    const FO_T omb1 = (FO_T)s[S_omb1];
    const FO_T b2 = (FO_T)s[S_b2];
    const FO_T omb2 = (FO_T)s[S_omb2];
    const int lerp = s[S_lerp] != 0.0;     /* Keras's form of v */
    FO_T *restrict m = FO_STATE(0);
    FO_T *restrict v = FO_STATE(1);

    FO_LOOP(
        FO_T mi = m[i] + omb1 * (gi - m[i]);
        FO_T vi = lerp ? v[i] + omb2 * (gi * gi - v[i]) : b2 * v[i] + omb2 * (gi * gi);
        m[i] = mi; v[i] = vi;
        w[i] = wi - (cm * mi + cg * gi) / (FO_SQRT(vi) * c + eps);)
}

#endif
