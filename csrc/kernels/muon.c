/*
 * Muon (Jordan et al. 2024): momentum, then the momentum's orthogonalisation
 * by a Newton-Schulz iteration, as torch.optim.Muon and Keras 3 compute it;
 * and Keras's AdamW route, for the params its Muon does not orthogonalise.
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
 *
 * The AdamW route (Keras only: params that are not 2-D, embeddings and
 * exclude_layers), Keras's _adamw_update_step with lr*adam_lr_ratio:
 *
 *   m <- m + (g - m)*(1 - b1);   v <- v + (g^2 - v)*(1 - b2)
 *   w <- w*(1 - lr*adam_wd) - (m*alpha) / (sqrt(v) + eps),
 *   alpha = lr*adam_lr_ratio*sqrt(1 - b2^t)/(1 - b1^t)
 *
 * Its decay multiplies adam_weight_decay by lr itself, not by lr*adam_lr_ratio
 * (Keras's _apply_weight_decay).  A tensor is on this route when it keeps a
 * second moment: it is bound with m, v (state 1) and the scratch (state 2),
 * one on the Muon route with m and the scratch only, so the kernel tells
 * them apart by state 2, as Keras's Muon tells them apart by the presence
 * of the velocity.  Such a tensor's scratch is never read or written.  The
 * reduction pass leaves it alone; the host stage hands as its second sum
 * whether its decay applies (0 when exclude_from_weight_decay names it: the
 * shared decay slot holds Muon's weight_decay, and says nothing of an
 * excluded tensor when that is 0); the finish puts alpha and the decay in
 * its row, and the elementwise pass does the whole update in one pass.
 */
#ifndef FO_T
#define FO_KERNEL_NAME muon
#define FO_KERNEL_NSTATE 3
/* a tensor on the Muon route reads two arrays, one on the AdamW route three */
#define FO_KERNEL_NSTATE_USED(s) ((void)(s), 2)
#define FO_KERNEL_REDUCE 1
#define FO_KERNEL_HP(X) X(learning_rate) X(momentum) X(nesterov) X(epsilon) \
    X(adam_beta_1) X(adam_beta_2) X(adam_lr_ratio) X(adam_weight_decay)
#define FO_KERNEL_SCALARS(X) X(lr) X(mu) X(nesterov) X(torch) X(step) \
    X(alpha) X(omb1) X(omb2) X(eps) X(adecay)
#include "declare.h"

/* The AdamW route: Keras's Muon keeps its second moment in state 1 and the
 * scratch after it. */
#define MU_ADAMW(t) ((t)->state[2] != NULL)

static double muon_scalars(const fo_ctx *c, double *s)
{
    const double *h = c->hp;
    const double lr = h[HP_learning_rate];
    const double b1 = h[HP_adam_beta_1], b2 = h[HP_adam_beta_2];
    s[S_lr] = lr;
    s[S_mu] = h[HP_momentum];
    s[S_nesterov] = h[HP_nesterov] != 0.0 ? 1.0 : 0.0;
    s[S_torch] = c->convention == FO_TORCH;
    s[S_step] = 0.0;
    /* the AdamW route (its hyper-parameters are 0 in the torch convention,
     * which has no such route) */
    s[S_alpha] = lr * h[HP_adam_lr_ratio] * sqrt(1.0 - pow(b2, (double)c->t)) /
                 (1.0 - pow(b1, (double)c->t));
    s[S_omb1] = 1.0 - b1;
    s[S_omb2] = 1.0 - b2;
    s[S_eps] = h[HP_epsilon];
    s[S_adecay] = 1.0 - lr * h[HP_adam_weight_decay];
    return c->aux;
}
#define FO_KERNEL_SCALARS_FN muon_scalars

/* The elementwise pass's row.  Muon route: lr times the ratio the host stage
 * left in the second sum; preprocessing and decay were applied by the
 * reduction pass.  AdamW route: alpha, the preprocessing of the group's row,
 * and the route's own decay unless the host stage says it is excluded. */
static void muon_finish(const fo_tensor *t, const double *sums, double *s)
{
    if (MU_ADAMW(t)) {
        int flags = (int)s[FO_S_FLAGS] & ~FO_F_DECAY;
        s[FO_S_DECAY] = 1.0;
        if (sums[1] != 0.0 && s[S_adecay] != 1.0) {
            flags |= FO_F_DECAY;
            s[FO_S_DECAY] = s[S_adecay];
        }
        s[FO_S_FLAGS] = (double)flags;
        s[S_step] = s[S_alpha];
        return;
    }
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
    if (MU_ADAMW(t))
        return;     /* the elementwise pass does the whole AdamW update */
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
    const FO_T step = (FO_T)s[S_step];
    if (MU_ADAMW(t)) {
        FO_T *restrict m = FO_STATE(0);
        FO_T *restrict v = FO_STATE(1);
        const FO_T omb1 = (FO_T)s[S_omb1];
        const FO_T omb2 = (FO_T)s[S_omb2];
        const FO_T eps = (FO_T)s[S_eps];
        FO_LOOP(
            FO_T mi = m[i] + (gi - m[i]) * omb1;
            FO_T vi = v[i] + (gi * gi - v[i]) * omb2;
            m[i] = mi; v[i] = vi;
            w[i] = wi - (mi * step) / (FO_SQRT(vi) + eps);)
        return;
    }
    const FO_T *restrict u = FO_STATE(1);
    (void)g; (void)flags;
    for (int64_t i = 0; i < n; i++)
        w[i] = w[i] - step * u[i];
}

#undef MU_LERP
#undef MU_FIRST
#endif
