/*
 * Weight averaging in torch's swa_utils arithmetic (the optimizer-wide
 * use_swa option, run after an update over every parameter) and the swap of
 * parameters and averages.
 *
 *   copy:  avg <- w                            (AveragedModel's first update)
 *   swa:   avg <- avg + (w - avg) / (n + 1)    (get_swa_avg_fn; count = n + 1)
 *   ema:   avg <- lerp(avg, w, 1 - decay)      (get_ema_multi_avg_fn)
 *   swap:  avg <-> w                           (bits moved, no arithmetic)
 *
 * lerp is torch's: with wt = 1 - decay in the parameter's dtype,
 * fma(wt, w - avg, avg) for wt < 0.5, else fma(wt - 1, w - avg, w).
 * Reads only the parameter and its average; the driver binds every tensor.
 */
#ifndef FO_T
#define FO_KERNEL_NAME average
#define FO_KERNEL_NSTATE 1
#define FO_KERNEL_HP(X) X(mode) X(count) X(decay)
#define FO_KERNEL_SCALARS(X) X(mode) X(count) X(wt)
#include "declare.h"

enum { AVG_COPY, AVG_SWA, AVG_EMA, AVG_SWAP };

static double average_scalars(const fo_ctx *c, double *s)
{
    const double *h = c->hp;
    s[S_mode] = h[HP_mode];
    s[S_count] = h[HP_count];
    s[S_wt] = 1.0 - h[HP_decay];
    return c->aux;
}
#define FO_KERNEL_SCALARS_FN average_scalars
#include "instantiate.h"
#else

static void FO_FN(average)(const fo_tensor *t, int64_t begin, int64_t end, const double *s)
{
    FO_T *restrict w = (FO_T *)t->param + begin;
    FO_T *restrict avg = FO_STATE(0);
    const int64_t n = end - begin;
    const int mode = (int)s[S_mode];
    if (mode == AVG_COPY) {
        for (int64_t i = 0; i < n; i++)
            avg[i] = w[i];
    } else if (mode == AVG_SWA) {
        const FO_T count = (FO_T)s[S_count];
        for (int64_t i = 0; i < n; i++)
            avg[i] = avg[i] + (w[i] - avg[i]) / count;
    } else if (mode == AVG_EMA) {
        const FO_T wt = (FO_T)s[S_wt];
        if (wt < (FO_T)0.5) {
            for (int64_t i = 0; i < n; i++)
                avg[i] = FO_FMA(wt, w[i] - avg[i], avg[i]);
        } else {
            const FO_T wm1 = wt - (FO_T)1;
            for (int64_t i = 0; i < n; i++)
                avg[i] = FO_FMA(wm1, w[i] - avg[i], w[i]);
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            FO_T a = avg[i];
            avg[i] = w[i];
            w[i] = a;
        }
    }
}

#endif
