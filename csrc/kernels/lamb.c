/*
 * Lamb (Keras 3): Adam's direction scaled per tensor by a trust ratio.
 *
 *   m <- m + (1-b1)*(g - m);   v <- v + (1-b2)*(g^2 - v)     (Keras's forms)
 *   r  = (m/(1 - b1^t)) / (sqrt(v/(1 - b2^t)) + eps)
 *   phi = ||w||_2 / ||r||_2 over the whole tensor if both are > 0, else 1
 *   w <- w - lr*phi*r
 *
 * Two passes.  The reduction pass (fo_step_reduce) applies the shared
 * preprocessing and decoupled decay, updates m, v and w, and returns the
 * per-chunk sums of w^2 (the decayed w, as Keras decays before the update)
 * and r^2, accumulated in double over 8 fixed lanes and combined in a fixed
 * order, so the norms are the same for any thread count or SIMD width.  The
 * host forms phi per tensor; the elementwise pass recomputes r from m and v
 * (the same operations, so the same bits) and applies the step.
 *
 */
#ifndef FO_T
#define FO_KERNEL_NAME lamb
#define FO_KERNEL_NSTATE 2
#define FO_KERNEL_REDUCE 1
#define FO_KERNEL_HP(X) X(learning_rate) X(beta_1) X(beta_2) X(epsilon)
#define FO_KERNEL_SCALARS(X) X(a1) X(c) X(eps) X(omb1) X(omb2) X(step)
#include "declare.h"

static double lamb_scalars(const fo_ctx *c, double *s)
{
    const double *h = c->hp;
    const double b1 = h[HP_beta_1], b2 = h[HP_beta_2];
    s[S_a1] = 1.0 / (1.0 - pow(b1, (double)c->t));
    s[S_c] = 1.0 / sqrt(1.0 - pow(b2, (double)c->t));
    s[S_eps] = h[HP_epsilon];
    s[S_omb1] = 1.0 - b1;
    s[S_omb2] = 1.0 - b2;
    s[S_step] = h[HP_learning_rate];
    return c->aux;
}
#define FO_KERNEL_SCALARS_FN lamb_scalars
/* The elementwise pass's row from the reduction pass's sums |w|^2, |r|^2 of
 * one tensor: the step scaled by the trust ratio, no preprocessing (the
 * reduction pass applied it). */
static void lamb_trust(const fo_tensor *t, const double *sums, double *s)
{
    const double wn = sqrt(sums[0]), rn = sqrt(sums[1]);
    (void)t;
    const double phi = wn > 0.0 && rn > 0.0 ? wn / rn : 1.0;
    s[FO_S_FLAGS] = 0.0;
    s[S_step] *= phi;
}
#define FO_KERNEL_FINISH lamb_trust
#include "instantiate.h"
#else

#define LAMB_SCALARS                                                         \
    const FO_T a1 = (FO_T)s[S_a1];                                     \
    const FO_T c = (FO_T)s[S_c];                                      \
    const FO_T eps = (FO_T)s[S_eps];                                    \
    FO_T *restrict m = FO_STATE(0);                                          \
    FO_T *restrict v = FO_STATE(1)

/* One element of the reduction pass, accumulating into lane j. */
#define LAMB_FIRST(ii, j)                                                    \
    {                                                                        \
        FO_PREP(gi, wi, ii);                                                 \
        FO_T mi = m[ii] + omb1 * (gi - m[ii]);                               \
        FO_T vi = v[ii] + omb2 * (gi * gi - v[ii]);                          \
        FO_T ri = mi * a1 / (FO_SQRT(vi) * c + eps);                         \
        m[ii] = mi; v[ii] = vi; w[ii] = wi;                                  \
        aw[j] += (double)wi * (double)wi;                                    \
        ar[j] += (double)ri * (double)ri;                                    \
    }

static void FO_RFN(lamb)(const fo_tensor *t, int64_t begin, int64_t end, const double *s,
                         double *acc)
{
    FO_KERNEL_BEGIN;
    LAMB_SCALARS;
    const FO_T omb1 = (FO_T)s[S_omb1];
    const FO_T omb2 = (FO_T)s[S_omb2];
    double aw[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    double ar[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            LAMB_FIRST(i + j, j)
    for (int j = 0; i + j < n; j++)
        LAMB_FIRST(i + j, j)
    acc[0] += ((aw[0] + aw[1]) + (aw[2] + aw[3])) + ((aw[4] + aw[5]) + (aw[6] + aw[7]));
    acc[1] += ((ar[0] + ar[1]) + (ar[2] + ar[3])) + ((ar[4] + ar[5]) + (ar[6] + ar[7]));
}

static void FO_FN(lamb)(const fo_tensor *t, int64_t begin, int64_t end, const double *s)
{
    FO_KERNEL_BEGIN;
    LAMB_SCALARS;
    const FO_T step = (FO_T)s[S_step];
    (void)g; (void)flags;
    for (int64_t i = 0; i < n; i++) {
        FO_T ri = m[i] * a1 / (FO_SQRT(v[i]) * c + eps);
        w[i] = w[i] - step * ri;
    }
}

#undef LAMB_SCALARS
#undef LAMB_FIRST
#endif
