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
 * scalars: K+0 a, K+1 e_in, K+2 e_out.  state: 0 acc.
 */
#ifndef FO_T
#define FO_KERNEL_FILE "kernels/adagrad.c"
#define FO_KERNEL_NAME adagrad
#define FO_KERNEL_NSTATE 1
#include "instantiate.h"
#else

static void FO_FN(adagrad)(const fo_tensor *t, int64_t begin, int64_t end, const double *s)
{
    FO_KERNEL_BEGIN;
    const FO_T a = (FO_T)s[FO_S_K + 0];
    const FO_T e_in = (FO_T)s[FO_S_K + 1];
    const FO_T e_out = (FO_T)s[FO_S_K + 2];
    FO_T *restrict acc = FO_STATE(0);

    FO_LOOP(
        FO_T ai = acc[i] + gi * gi;
        acc[i] = ai;
        w[i] = wi - a * gi / (FO_SQRT(ai + e_in) + e_out);)
}

#endif
