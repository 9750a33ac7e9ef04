/*
 * Adadelta (same formulas in Keras and torch; only the defaults differ).
 *
 *   Eg  <- rho*Eg + (1-rho)*g^2
 *   d   <- sqrt(Edx + eps) / sqrt(Eg + eps) * g
 *   Edx <- rho*Edx + (1-rho)*d^2          (the delta before the learning rate)
 *   w   <- w - lr*d
 *
 * scalars: K+0 lr, K+1 rho, K+2 1-rho, K+3 eps.  state: 0 Eg, 1 Edx.
 */
#ifndef FO_T
#define FO_KERNEL_FILE "kernels/adadelta.c"
#define FO_KERNEL_NAME adadelta
#define FO_KERNEL_NSTATE 2
#include "instantiate.h"
#else

static void FO_FN(adadelta)(const fo_tensor *t, int64_t begin, int64_t end, const double *s)
{
    FO_KERNEL_BEGIN;
    const FO_T lr = (FO_T)s[FO_S_K + 0];
    const FO_T rho = (FO_T)s[FO_S_K + 1];
    const FO_T omr = (FO_T)s[FO_S_K + 2];
    const FO_T eps = (FO_T)s[FO_S_K + 3];
    FO_T *restrict eg = FO_STATE(0);
    FO_T *restrict edx = FO_STATE(1);

    FO_LOOP(
        FO_T ei = rho * eg[i] + omr * (gi * gi);
        FO_T di = FO_SQRT(edx[i] + eps) / FO_SQRT(ei + eps) * gi;
        eg[i] = ei;
        edx[i] = rho * edx[i] + omr * (di * di);
        w[i] = wi - lr * di;)
}

#endif
