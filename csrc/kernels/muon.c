/*
 * Muon (Jordan et al. 2024): momentum, then the momentum's orthogonalisation
 * by a Newton-Schulz iteration, as torch.optim.Muon and Keras 3 compute it.
 *
 *   keras: m <- m + (g + m*(mu - 1));    u = nesterov ? g + mu*m : m
 *   torch: m <- lerp(m, g, 1 - mu);      u = nesterov ? lerp(g, m, mu) : m
 *   O = NS(u / (||u||_F + eps))          (torch: u / max(||u||_F, eps))
 *   w <- w*(1 - lr*wd) - lr*ratio*O
 *
 * Three stages.  The reduction pass applies the shared preprocessing and the
 * decoupled decay, updates m, writes u into the scratch array (state 1) and
 * returns the sum of u^2 (8 fixed lanes, combined in chunk order: the same
 * bits for any thread count).  The optimizer's host stage then runs the
 * Newton-Schulz iteration on the scratch array with NumPy's matmul in the
 * param's dtype, writes O back into it and hands each tensor's ratio (which
 * depends on its shape) as its second sum; the finish turns it into the step,
 * and the elementwise pass applies it.
 */
#ifndef FO_T
#define FO_KERNEL_NAME muon
#define FO_KERNEL_NSTATE 2
#define FO_KERNEL_REDUCE 1
#define FO_KERNEL_HP(X) X(learning_rate) X(momentum) X(nesterov)
#define FO_KERNEL_SCALARS(X) X(lr) X(mu) X(nesterov) X(torch) X(step)
#include "declare.h"

static double muon_scalars(const fo_ctx *c, double *s)
{
    const double *h = c->hp;
    s[S_lr] = h[HP_learning_rate];
    s[S_mu] = h[HP_momentum];
    s[S_nesterov] = h[HP_nesterov] != 0.0 ? 1.0 : 0.0;
    s[S_torch] = c->convention == FO_TORCH;
    s[S_step] = 0.0;
    return c->aux;
}
#define FO_KERNEL_SCALARS_FN muon_scalars

/* The elementwise pass's row: lr times the ratio the host stage left in the
 * second sum; preprocessing and decay were applied by the reduction pass. */
static void muon_finish(const fo_tensor *t, const double *sums, double *s)
{
    (void)t;
    s[FO_S_FLAGS] = 0.0;
    s[S_step] = s[S_lr] * sums[1];
}
#define FO_KERNEL_FINISH muon_finish
#include "instantiate.h"
#else

/* torch's lerp: a + w*(b - a) for |w| < 0.5, else b - (b - a)*(1 - w) */
#define MU_LERP(a, b, wt, omw)                                               \
    (FO_FABS(wt) < (FO_T)0.5 ? (a) + (wt) * ((b) - (a)) : (b) - ((b) - (a)) * (omw))

/* One element of the reduction pass, accumulating u^2 into lane j. */
#define MU_FIRST(ii, j)                                                      \
    {                                                                        \
        FO_PREP(gi, wi, ii);                                                 \
        FO_T mi, ui;                                                         \
        if (torch) {                                                         \
            mi = MU_LERP(m[ii], gi, wm, omwm);                               \
            ui = nesterov ? MU_LERP(gi, mi, mu, ommu) : mi;                  \
        } else {                                                             \
            mi = m[ii] + (gi + m[ii] * mum1);                                \
            ui = nesterov ? gi + mu * mi : mi;                               \
        }                                                                    \
        m[ii] = mi; u[ii] = ui; w[ii] = wi;                                  \
        au[j] += (double)ui * (double)ui;                                    \
    }

static void FO_RFN(muon)(const fo_tensor *t, int64_t begin, int64_t end, const double *s,
                         double *acc)
{
    FO_KERNEL_BEGIN;
    FO_T *restrict m = FO_STATE(0);
    FO_T *restrict u = FO_STATE(1);
    const int torch = s[S_torch] != 0.0, nesterov = s[S_nesterov] != 0.0;
    const FO_T mu = (FO_T)s[S_mu];
    const FO_T mum1 = (FO_T)(s[S_mu] - 1.0);
    const FO_T ommu = (FO_T)1 - mu;             /* torch: 1 - weight in the dtype */
    const FO_T wm = (FO_T)(1.0 - s[S_mu]);      /* torch's weight 1 - momentum */
    const FO_T omwm = (FO_T)1 - wm;
    double au[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            MU_FIRST(i + j, j)
    for (int j = 0; i + j < n; j++)
        MU_FIRST(i + j, j)
    acc[0] += ((au[0] + au[1]) + (au[2] + au[3])) + ((au[4] + au[5]) + (au[6] + au[7]));
}

static void FO_FN(muon)(const fo_tensor *t, int64_t begin, int64_t end, const double *s)
{
    FO_KERNEL_BEGIN;
    const FO_T *restrict u = FO_STATE(1);
    const FO_T step = (FO_T)s[S_step];
    (void)g; (void)flags;
    for (int64_t i = 0; i < n; i++)
        w[i] = w[i] - step * u[i];
}

#undef MU_LERP
#undef MU_FIRST
#endif
