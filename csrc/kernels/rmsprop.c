/*
 * RMSprop, with momentum and the centered variant.
 *
 *   v  <- rho*v + (1-rho)*g^2
 *   mg <- rho*mg + (1-rho)*g      (centered only; torch: mg + (1-rho)*(g - mg), its lerp)
 *   s  <- max(v - mg^2, 0)  (centered)  or  v
 *   q  <- (a_in*g) / (sqrt(s + e_in) + e_out)
 *   momentum:  m <- mu*m + q;  w <- w - a_out*m
 *   otherwise: w <- w - a_out*q
 *
 * Keras:  e_in = eps, e_out = 0, a_in = lr, a_out = 1   (lr inside the momentum buffer)
 * torch:  e_in = 0, e_out = eps, a_in = 1, a_out = lr   (lr outside; torch's `alpha` is rho)
 * Each convention's operations in its library's order: a multiplication by 1
 * is exact, so one loop serves both.
 * v - mg^2 is >= 0 in exact arithmetic but can round below 0; it is clamped
 * at 0 so the square root never sees a negative number.
 *
 * state: 0 v, then mg (centered), then m (momentum).
 */
#ifndef FO_T
#define FO_KERNEL_NAME rmsprop
#define FO_KERNEL_NSTATE 3
#define FO_KERNEL_HP(X) X(learning_rate) X(rho) X(momentum) X(epsilon) X(centered)
#define FO_KERNEL_SCALARS(X) X(rho) X(omr) X(e_in) X(e_out) X(mu) X(a_in) X(a_out) X(centered) X(momentum) X(lerp)
#define FO_KERNEL_NSTATE_USED(s) (1 + (s[S_centered] != 0.0) + (s[S_momentum] != 0.0))
#include "declare.h"

static double rmsprop_scalars(const fo_ctx *c, double *s)
{
    const double *h = c->hp;
    const double lr = h[HP_learning_rate], rho = h[HP_rho], eps = h[HP_epsilon];
    const int centered = h[HP_centered] != 0.0;
    const int keras = c->convention == FO_KERAS;
    s[S_rho] = rho;
    s[S_omr] = 1.0 - rho;
    s[S_e_in] = keras ? eps : 0.0;
    s[S_e_out] = keras ? 0.0 : eps;
    s[S_mu] = h[HP_momentum];
    s[S_a_in] = keras ? lr : 1.0;
    s[S_a_out] = keras ? 1.0 : lr;
    s[S_centered] = centered ? 1.0 : 0.0;
    s[S_lerp] = keras ? 0.0 : 1.0;
    /* the group keeps a momentum buffer after v (and mg) */
    s[S_momentum] = c->nstate > 1 + centered ? 1.0 : 0.0;
    return c->aux;
}
#define FO_KERNEL_SCALARS_FN rmsprop_scalars
#include "instantiate.h"
#else

static void FO_FN(rmsprop)(const fo_tensor *t, int64_t begin, int64_t end, const double *s)
{
    FO_KERNEL_BEGIN;
    const FO_T rho = (FO_T)s[S_rho];
    const FO_T omr = (FO_T)s[S_omr];
    const FO_T e_in = (FO_T)s[S_e_in];
    const FO_T e_out = (FO_T)s[S_e_out];
    const FO_T mu = (FO_T)s[S_mu];
    const FO_T a_in = (FO_T)s[S_a_in];
    const FO_T a_out = (FO_T)s[S_a_out];
    const int centered = s[S_centered] != 0.0;
    const int momentum = s[S_momentum] != 0.0;
    const int lerp = s[S_lerp] != 0.0;
    const FO_T zero = 0;
    FO_T *restrict v = FO_STATE(0);
    int k = 1;
    FO_T *restrict mg = centered ? FO_STATE(k++) : NULL;
    FO_T *restrict m = momentum ? FO_STATE(k) : NULL;

/* mg's update in the convention's form, and the clamped centered variance */
#define FO_RMS_CENTERED                                                      \
    FO_T ci = lerp ? mg[i] + omr * (gi - mg[i]) : rho * mg[i] + omr * gi;   \
    FO_T si = vi - ci * ci;                                                  \
    si = si > zero ? si : zero

    if (centered && momentum) {
        FO_LOOP(
            FO_T vi = rho * v[i] + omr * (gi * gi);
            FO_RMS_CENTERED;
            FO_T q = (a_in * gi) / (FO_SQRT(si + e_in) + e_out);
            FO_T mi = mu * m[i] + q;
            v[i] = vi; mg[i] = ci; m[i] = mi;
            w[i] = wi - a_out * mi;)
    } else if (centered) {
        FO_LOOP(
            FO_T vi = rho * v[i] + omr * (gi * gi);
            FO_RMS_CENTERED;
            v[i] = vi; mg[i] = ci;
            w[i] = wi - a_out * ((a_in * gi) / (FO_SQRT(si + e_in) + e_out));)
    } else if (momentum) {
        FO_LOOP(
            FO_T vi = rho * v[i] + omr * (gi * gi);
            FO_T q = (a_in * gi) / (FO_SQRT(vi + e_in) + e_out);
            FO_T mi = mu * m[i] + q;
            v[i] = vi; m[i] = mi;
            w[i] = wi - a_out * mi;)
    } else {
        FO_LOOP(
            FO_T vi = rho * v[i] + omr * (gi * gi);
            v[i] = vi;
            w[i] = wi - a_out * ((a_in * gi) / (FO_SQRT(vi + e_in) + e_out));)
    }
#undef FO_RMS_CENTERED
}

#endif
