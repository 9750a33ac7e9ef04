/*
 * Exponential moving average of the parameters (the optimizer-wide use_ema
 * option, run after the update over every parameter, with or without a grad).
 *
 *   avg <- mu*avg + (1-mu)*w            (mu = 0 on the first update: a copy)
 *   w   <- avg                          (on overwrite steps)
 *
 * Reads only the parameter and its average; the driver binds every tensor.
 *
 * scalars: K+0 mu, K+1 1-mu, K+2 overwrite.  state: 0 avg.
 */
#ifndef FO_T
#define FO_KERNEL_FILE "kernels/ema.c"
#define FO_KERNEL_NAME ema
#define FO_KERNEL_NSTATE 1
#include "instantiate.h"
#else

static void FO_FN(ema)(const fo_tensor *t, int64_t begin, int64_t end, const double *s)
{
    FO_T *restrict w = (FO_T *)t->param + begin;
    FO_T *restrict avg = FO_STATE(0);
    const int64_t n = end - begin;
    const FO_T mu = (FO_T)s[FO_S_K + 0];
    const FO_T omm = (FO_T)s[FO_S_K + 1];
    if (s[FO_S_K + 2] != 0.0) {
        for (int64_t i = 0; i < n; i++) {
            FO_T ai = mu * avg[i] + omm * w[i];
            avg[i] = ai;
            w[i] = ai;
        }
    } else {
        for (int64_t i = 0; i < n; i++)
            avg[i] = mu * avg[i] + omm * w[i];
    }
}

#endif
