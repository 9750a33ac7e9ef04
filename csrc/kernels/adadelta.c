/*
 * Adadelta (same formulas in Keras and torch; only the defaults differ).
 *
 *   Eg  <- rho*Eg + (1-rho)*g^2
 *   d   <- sqrt(Edx + eps) / sqrt(Eg + eps) * g
 *   Edx <- rho*Edx + (1-rho)*d^2          (the delta before the learning rate)
 *   w   <- w - lr*d
 *
 */
#ifndef FO_T
#define FO_KERNEL_NAME adadelta
#define FO_KERNEL_NSTATE 2
#define FO_KERNEL_HP(X) X(learning_rate) X(rho) X(epsilon)
#define FO_KERNEL_SCALARS(X) X(lr) X(rho) X(omr) X(eps)
#include "declare.h"

static double adadelta_scalars(const fo_ctx *c, double *s)
{
    const double *h = c->hp;
    s[S_lr] = h[HP_learning_rate];
    s[S_rho] = h[HP_rho];
    s[S_omr] = 1.0 - h[HP_rho];
    s[S_eps] = h[HP_epsilon];
    return c->aux;
}
#define FO_KERNEL_SCALARS_FN adadelta_scalars
#include "instantiate.h"
#else

static void FO_FN(adadelta)(const fo_tensor *t, int64_t begin, int64_t end, const double *s)
{
    FO_KERNEL_BEGIN;
    const FO_T lr = (FO_T)s[S_lr];
    const FO_T rho = (FO_T)s[S_rho];
    const FO_T omr = (FO_T)s[S_omr];
    const FO_T eps = (FO_T)s[S_eps];
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
