/*
 * Exponential moving average of the parameters (the optimizer-wide use_ema
 * option, run after the update over every parameter, with or without a grad).
 *
 *   avg <- mu*avg + (1-mu)*w            (mu = 0 on the first update: a copy)
 *   w   <- avg                          (on overwrite steps)
 *
 * Reads only the parameter and its average; the driver binds every tensor.
 *
 */
#ifndef FO_T
#define FO_KERNEL_NAME ema
#define FO_KERNEL_NSTATE 1
#define FO_KERNEL_HP(X) X(momentum) X(overwrite)
#define FO_KERNEL_SCALARS(X) X(mu) X(omm) X(overwrite)
#include "declare.h"

static double ema_scalars(const fo_ctx *c, double *s)
{
    const double *h = c->hp;
    s[S_mu] = h[HP_momentum];
    s[S_omm] = 1.0 - h[HP_momentum];
    s[S_overwrite] = h[HP_overwrite];
    return c->aux;
}
#define FO_KERNEL_SCALARS_FN ema_scalars
#include "instantiate.h"
#else

static void FO_FN(ema)(const fo_tensor *t, int64_t begin, int64_t end, const double *s)
{
    FO_T *restrict w = (FO_T *)t->param + begin;
    FO_T *restrict avg = FO_STATE(0);
    const int64_t n = end - begin;
    const FO_T mu = (FO_T)s[S_mu];
    const FO_T omm = (FO_T)s[S_omm];
    if (s[S_overwrite] != 0.0) {
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
