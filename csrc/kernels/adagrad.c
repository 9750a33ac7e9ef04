/*
 * Adagrad.
 *
 *   acc <- acc + g^2
 *   w   <- w - a * g / (sqrt(acc + e_in) + e_out)
 *
 * Keras:  a = lr,                          e_in = eps, e_out = 0   (eps inside the sqrt)
 * torch:  a = lr / (1 + (t-1)*lr_decay),   e_in = 0,   e_out = eps (eps outside)
 * Adding an exact 0 leaves a value unchanged, so one loop serves both.  The
 * accumulator starts at initial_accumulator_value (Keras 0.1, torch 0).
 *
 */
#ifndef FO_T
#define FO_KERNEL_NAME adagrad
#define FO_KERNEL_NSTATE 1
#define FO_KERNEL_HP(X) X(learning_rate) X(epsilon) X(lr_decay)
#define FO_KERNEL_SCALARS(X) X(a) X(e_in) X(e_out)
#include "declare.h"

static double adagrad_scalars(const fo_ctx *c, double *s)
{
    const double *h = c->hp;
    if (c->convention == FO_KERAS) {
        s[S_a] = h[HP_learning_rate];
        s[S_e_in] = h[HP_epsilon];
        s[S_e_out] = 0.0;
    } else {
        s[S_a] = h[HP_learning_rate] / (1.0 + (double)(c->t - 1) * h[HP_lr_decay]);
        s[S_e_in] = 0.0;
        s[S_e_out] = h[HP_epsilon];
    }
    return c->aux;
}
#define FO_KERNEL_SCALARS_FN adagrad_scalars
#include "instantiate.h"
#else

static void FO_FN(adagrad)(const fo_tensor *t, int64_t begin, int64_t end, const double *s)
{
    FO_KERNEL_BEGIN;
    const FO_T a = (FO_T)s[S_a];
    const FO_T e_in = (FO_T)s[S_e_in];
    const FO_T e_out = (FO_T)s[S_e_out];
    FO_T *restrict acc = FO_STATE(0);

    FO_LOOP(
        FO_T ai = acc[i] + gi * gi;
        acc[i] = ai;
        w[i] = wi - a * gi / (FO_SQRT(ai + e_in) + e_out);)
}

#endif
