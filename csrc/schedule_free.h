/*
 * The per-step averaging weight of the schedule-free methods (the
 * schedulefree package's AdamWScheduleFree and SGDScheduleFree; included by
 * their kernels' scalar functions).  With t = k+1 the optimizer's 1-based
 * step:
 *
 *   lr_t       = lr * min(t/warmup_steps, 1)      (lr when warmup_steps = 0)
 *   lr_max     = max(lr_max, lr_t)                (-1 before the first step)
 *   weight     = t^r * lr_max^weight_lr_power
 *   weight_sum = weight_sum + weight
 *   ckp1       = weight / weight_sum,  0 when weight_sum is 0
 *
 * weight_sum is the tensor's (here: the group's) first host value, lr_max its
 * second.  A learning rate of 0 on the first steps (an outside warmup) gives
 * weight_sum = 0: ckp1 is then 0, as the package's ZeroDivisionError branch,
 * never 0/0.
 */
#ifndef FO_SCHEDULE_FREE_H
#define FO_SCHEDULE_FREE_H

#include <math.h>
#include "fastopt.h"

/* The warmed-up learning rate of step t (the package: k < warmup_steps). */
static double fo_sf_lr(double lr, double warmup, int64_t t)
{
    return (double)(t - 1) < warmup ? lr * ((double)t / warmup) : lr;
}

/* ckp1 of step t for the warmed-up rate lr_t; returns the new weight_sum and
 * writes the new lr_max to *c->aux2_next. */
static double fo_sf_weight(const fo_ctx *c, double lr_t, double r, double power, double *ckp1)
{
    const double lr_max_prev = c->t == 1 ? -1.0 : c->aux2;
    const double sum_prev = c->t == 1 ? 0.0 : c->aux;
    const double lr_max = lr_max_prev > lr_t ? lr_max_prev : lr_t;
    const double weight = pow((double)c->t, r) * pow(lr_max, power);
    const double sum = sum_prev + weight;
    *ckp1 = sum != 0.0 ? weight / sum : 0.0;
    *c->aux2_next = lr_max;
    return sum;
}

#endif
