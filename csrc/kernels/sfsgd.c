/*
 * Schedule-free SGD (the schedulefree package's SGDScheduleFree with
 * foreach=False; torch convention only).  The params hold y; with ckp1 and
 * lr_t from csrc/schedule_free.h and g' = g + wd*y (the shared coupled L2
 * slot, at y as the package does):
 *   y <- lerp(y, z, ckp1) + lr_t*(momentum*(1 - ckp1) - 1)*g'
 *   z <- z - lr_t*g'
 * lerp as torch computes it (see sfadamw.c).  On the first step z is read
 * from the parameter (the package creates z as its copy then).
 *
 * state: 0 z.
 */
#ifndef FO_T
#define FO_KERNEL_NAME sfsgd
#define FO_KERNEL_NSTATE 1
#define FO_KERNEL_HP(X) X(learning_rate) X(momentum) X(warmup_steps) X(r) X(weight_lr_power)
#define FO_KERNEL_SCALARS(X) X(first) X(lr) X(ckp1) X(cy)
#define FO_KERNEL_AUX 2
#include "declare.h"
#include "schedule_free.h"

static double sfsgd_scalars(const fo_ctx *c, double *s)
{
    const double *h = c->hp;
    const double lr = fo_sf_lr(h[HP_learning_rate], h[HP_warmup_steps], c->t);
    double ckp1;
    const double sum = fo_sf_weight(c, lr, h[HP_r], h[HP_weight_lr_power], &ckp1);
    s[S_first] = c->t == 1 ? 1.0 : 0.0;
    s[S_lr] = lr;
    s[S_ckp1] = ckp1;
    s[S_cy] = lr * (h[HP_momentum] * (1.0 - ckp1) - 1.0);
    return sum;
}
#define FO_KERNEL_SCALARS_FN sfsgd_scalars
#include "instantiate.h"
#else

static void FO_FN(sfsgd)(const fo_tensor *t, int64_t begin, int64_t end, const double *s)
{
    FO_KERNEL_BEGIN;
    const int first = s[S_first] != 0.0;
    const FO_T lr = (FO_T)s[S_lr];
    const FO_T ck = (FO_T)s[S_ckp1];
    const FO_T omck = (FO_T)1 - ck;
    const int small = FO_FABS(ck) < (FO_T)0.5;
    const FO_T cy = (FO_T)s[S_cy];
    FO_T *restrict z = FO_STATE(0);

    FO_LOOP(
        const FO_T zo = first ? w[i] : z[i];
        const FO_T y = small ? wi + ck * (zo - wi) : zo - (zo - wi) * omck;
        w[i] = y + cy * gi;
        z[i] = zo - lr * gi;)
}

#endif
