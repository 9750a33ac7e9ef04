/*
 * RMSprop, with momentum and the centered variant.
 *
 *   v  <- rho*v + (1-rho)*g^2
 *   mg <- mg + (1-rho)*(g - mg)                     (centered only)
 *   s  <- max(v - mg^2, 0)  (centered)  or  v
 *   q  <- g / (sqrt(s + e_in) + e_out)
 *   momentum:  m <- mu*m + a_in*q;  w <- w - a_out*m
 *   otherwise: w <- w - lr*q
 *
 * Keras:  e_in = eps, e_out = 0, a_in = lr, a_out = 1   (lr inside the momentum buffer)
 * torch:  e_in = 0, e_out = eps, a_in = 1, a_out = lr   (lr outside; torch's `alpha` is rho)
 * v - mg^2 is >= 0 in exact arithmetic but can round below 0; it is clamped
 * at 0 so the square root never sees a negative number.
 *
 * scalars: K+0 lr, K+1 rho, K+2 1-rho, K+3 e_in, K+4 e_out, K+5 mu, K+6 a_in,
 *          K+7 a_out, K+8 centered, K+9 momentum.
 * state: 0 v, then mg (centered), then m (momentum).
 */
#ifndef FO_T
#define FO_KERNEL_FILE "kernels/rmsprop.c"
#define FO_KERNEL_NAME rmsprop
#define FO_KERNEL_NSTATE 3
#define FO_KERNEL_NSTATE_USED(s) (1 + (s[FO_S_K + 8] != 0.0) + (s[FO_S_K + 9] != 0.0))
#include "instantiate.h"
#else

static void FO_FN(rmsprop)(const fo_tensor *t, int64_t begin, int64_t end, const double *s)
{
    FO_KERNEL_BEGIN;
    const FO_T lr = (FO_T)s[FO_S_K + 0];
    const FO_T rho = (FO_T)s[FO_S_K + 1];
    const FO_T omr = (FO_T)s[FO_S_K + 2];
    const FO_T e_in = (FO_T)s[FO_S_K + 3];
    const FO_T e_out = (FO_T)s[FO_S_K + 4];
    const FO_T mu = (FO_T)s[FO_S_K + 5];
    const FO_T a_in = (FO_T)s[FO_S_K + 6];
    const FO_T a_out = (FO_T)s[FO_S_K + 7];
    const int centered = s[FO_S_K + 8] != 0.0;
    const int momentum = s[FO_S_K + 9] != 0.0;
    const FO_T zero = 0;
    FO_T *restrict v = FO_STATE(0);
    int k = 1;
    FO_T *restrict mg = centered ? FO_STATE(k++) : NULL;
    FO_T *restrict m = momentum ? FO_STATE(k) : NULL;

    if (centered && momentum) {
        FO_LOOP(
            FO_T vi = rho * v[i] + omr * (gi * gi);
            FO_T ci = mg[i] + omr * (gi - mg[i]);
            FO_T si = vi - ci * ci;
            si = si > zero ? si : zero;
            FO_T q = gi / (FO_SQRT(si + e_in) + e_out);
            FO_T mi = mu * m[i] + a_in * q;
            v[i] = vi; mg[i] = ci; m[i] = mi;
            w[i] = wi - a_out * mi;)
    } else if (centered) {
        FO_LOOP(
            FO_T vi = rho * v[i] + omr * (gi * gi);
            FO_T ci = mg[i] + omr * (gi - mg[i]);
            FO_T si = vi - ci * ci;
            si = si > zero ? si : zero;
            v[i] = vi; mg[i] = ci;
            w[i] = wi - lr * (gi / (FO_SQRT(si + e_in) + e_out));)
    } else if (momentum) {
        FO_LOOP(
            FO_T vi = rho * v[i] + omr * (gi * gi);
            FO_T q = gi / (FO_SQRT(vi + e_in) + e_out);
            FO_T mi = mu * m[i] + a_in * q;
            v[i] = vi; m[i] = mi;
            w[i] = wi - a_out * mi;)
    } else {
        FO_LOOP(
            FO_T vi = rho * v[i] + omr * (gi * gi);
            v[i] = vi;
            w[i] = wi - lr * (gi / (FO_SQRT(vi + e_in) + e_out));)
    }
}

#endif
