/*
 * Schedule-free AdamW: the params hold y, the point the gradient is taken
 * at; z is the base sequence, x (evaluated with opt.eval()) its weighted
 * average, and y = (1 - beta_1)*z + beta_1*x.
 *
 * torch convention (the schedulefree package, AdamWScheduleFree with
 * foreach=False), with ckp1 and lr_t from csrc/schedule_free.h:
 *   v  <- v*b2 + ((1-b2)*g)*g
 *   d   = g / (sqrt(v/(1 - b2^t)) + eps) + wd*y        (weight decay at y)
 *   y  <- lerp(y, z, ckp1) + lr_t*(b1*(1 - ckp1) - 1)*d
 *   z  <- z - lr_t*d
 * lerp as torch computes it: y + w*(z - y) for |w| < 0.5, else
 * z - (z - y)*(1 - w).  The group's coupled weight decay (the shared L2
 * slot, honouring exclusions) is taken over by the scalar function and
 * applied here, after the normalisation, as the package does.
 *
 * Keras convention (keras.optimizers.ScheduleFreeAdamW on Keras's torch
 * backend), lr_t = lr*min(t/W, 1) and the plain average weight 1/t (no
 * lr_max weighting):
 *   v  <- v + (g*g - v)*(1-b2)
 *   z' = z - (lr_t*g)/(sqrt(v/(1 - b2^t)) + eps)
 *   x  = (y - (1-b1)*z')/b1;   x' = (1 - 1/t)*x + (1/t)*z'
 *   y  <- (1-b1)*z' + b1*x'
 * y is the parameter after Keras's decoupled weight decay (the shared
 * DECAY slot).  1 - b1, 1 - b2 and 1/t are formed in the element type, as
 * Keras forms them from values cast to the variable's dtype.  Two numbers
 * are those of the torch backend, which the anchor runs on: x is recovered
 * from the NEW z (Keras keeps "momentum_old = momentum.value", and the torch
 * backend's assign_sub then updates that very tensor in place; on JAX and
 * TensorFlow it is the old z), and the warmup factor min(t/W, 1) is rounded
 * to float32 (ops.minimum with a Python float gives float32 there).
 *
 * On the first step z is read from the parameter (both libraries create z
 * as a copy of it then; the host also fills z with a copy at construction,
 * for a parameter whose first grad comes later, as Keras's build does).
 *
 * state: 0 z, 1 v.
 */
#ifndef FO_T
#define FO_KERNEL_NAME sfadamw
#define FO_KERNEL_NSTATE 2
#define FO_KERNEL_HP(X) X(learning_rate) X(beta_1) X(beta_2) X(epsilon) X(warmup_steps) \
    X(r) X(weight_lr_power)
#define FO_KERNEL_SCALARS(X) X(keras) X(first) X(lr) X(ckp1) X(cy) X(wd) X(b1) X(b2) \
    X(bc2) X(eps) X(t)
#define FO_KERNEL_AUX 2
#include "declare.h"
#include "schedule_free.h"

static double sfadamw_scalars(const fo_ctx *c, double *s)
{
    const double *h = c->hp;
    const double b1 = h[HP_beta_1], b2 = h[HP_beta_2];
    const double warmup = h[HP_warmup_steps];
    double lr = fo_sf_lr(h[HP_learning_rate], warmup, c->t);
    if (c->convention == FO_KERAS && warmup > 0.0) {
        /* Keras's ops.minimum(t/W, 1.0) is float32 on its torch backend */
        const double f = (double)c->t / warmup;
        lr = h[HP_learning_rate] * (double)(float)(f < 1.0 ? f : 1.0);
    }
    double ckp1 = 1.0 / (double)c->t, sum = c->aux;
    s[S_keras] = c->convention == FO_KERAS ? 1.0 : 0.0;
    if (c->convention == FO_TORCH) {
        sum = fo_sf_weight(c, lr, h[HP_r], h[HP_weight_lr_power], &ckp1);
        const int flags = (int)s[FO_S_FLAGS];
        if (flags & FO_F_L2) {
            s[S_wd] = s[FO_S_L2];
            s[FO_S_FLAGS] = (double)(flags & ~FO_F_L2);
            s[FO_S_L2] = 0.0;
        }
    }
    s[S_first] = c->t == 1 ? 1.0 : 0.0;
    s[S_lr] = lr;
    s[S_ckp1] = ckp1;
    s[S_cy] = lr * (b1 * (1.0 - ckp1) - 1.0);
    s[S_b1] = b1;
    s[S_b2] = b2;
    s[S_bc2] = 1.0 - pow(b2, (double)c->t);
    s[S_eps] = h[HP_epsilon];
    s[S_t] = (double)c->t;
    return sum;
}
#define FO_KERNEL_SCALARS_FN sfadamw_scalars
#include "instantiate.h"
#else

/* torch's lerp(a, b, wt) with omw = 1 - wt and small = |wt| < 0.5 */
#define SF_LERP(a, b, wt, omw, small) ((small) ? (a) + (wt) * ((b) - (a)) : (b) - ((b) - (a)) * (omw))

static void FO_FN(sfadamw)(const fo_tensor *t, int64_t begin, int64_t end, const double *s)
{
    FO_KERNEL_BEGIN;
    const int first = s[S_first] != 0.0;
    const FO_T lr = (FO_T)s[S_lr];
    const FO_T b1 = (FO_T)s[S_b1];
    const FO_T b2 = (FO_T)s[S_b2];
    const FO_T bc2 = (FO_T)s[S_bc2];
    const FO_T eps = (FO_T)s[S_eps];
    const FO_T one = 1;
    FO_T *restrict z = FO_STATE(0);
    FO_T *restrict v = FO_STATE(1);

    if (s[S_keras] != 0.0) {
        const FO_T omb1 = one - b1, omb2 = one - b2;
        const FO_T wt = one / (FO_T)s[S_t];
        const FO_T omw = one - wt;
        FO_LOOP(
            const FO_T zo = first ? w[i] : z[i];
            FO_T vi = v[i] + (gi * gi - v[i]) * omb2;
            v[i] = vi;
            const FO_T zn = zo - (lr * gi) / (FO_SQRT(vi / bc2) + eps);
            z[i] = zn;
            const FO_T x = (wi - omb1 * zn) / b1;
            const FO_T xn = omw * x + wt * zn;
            w[i] = omb1 * zn + b1 * xn;)
    } else {
        const FO_T omb2 = (FO_T)(1.0 - s[S_b2]);
        const FO_T ck = (FO_T)s[S_ckp1];
        const FO_T omck = one - ck;
        const int small = FO_FABS(ck) < (FO_T)0.5;
        const FO_T cy = (FO_T)s[S_cy];
        const FO_T wd = (FO_T)s[S_wd];
        const int has_wd = s[S_wd] != 0.0;
        FO_LOOP(
            const FO_T zo = first ? w[i] : z[i];
            FO_T vi = v[i] * b2 + (omb2 * gi) * gi;
            v[i] = vi;
            FO_T d = gi / (FO_SQRT(vi / bc2) + eps);
            if (has_wd) d = d + wd * wi;
            const FO_T y = SF_LERP(wi, zo, ck, omck, small);
            w[i] = y + cy * d;
            z[i] = zo - lr * d;)
    }
}

#undef SF_LERP

#endif
