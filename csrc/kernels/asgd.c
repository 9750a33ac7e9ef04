/*
 * ASGD: averaged stochastic gradient descent (torch.optim.ASGD; torch
 * convention only, Keras has none).
 *
 *   w  <- w*(1 - lambd*eta) - eta*g
 *   ax <- w                     if mu == 1  (a copy, as torch: mu.item() == 1)
 *         ax + (w - ax)*mu      otherwise
 *
 * eta and mu are per-tensor scalars that torch computes at the END of a
 * tensor's step from that step's values and uses on its next step:
 *   eta_{t+1} = lr_t / (1 + lambd*lr_t*t)^alpha,   mu_{t+1} = 1/max(1, t - t0),
 * with eta_1 = the learning rate of the first step and mu_1 = 1.  eta is the
 * tensor's host value (FO_KERNEL_AUX): a learning-rate schedule reaches the
 * update one step late, as in torch.  mu depends on the step count only and
 * is computed from t - 1 here, with this step's t0 (torch uses the t0 of the
 * previous step; they differ only when t0 itself is changed mid-run).  torch
 * keeps eta and mu as tensors of the default dtype; fastopt keeps them in
 * double (torch's numbers with torch.set_default_dtype(torch.float64)).
 *
 * state: 0 ax (the running average of the parameters).
 */
#ifndef FO_T
#define FO_KERNEL_NAME asgd
#define FO_KERNEL_NSTATE 1
#define FO_KERNEL_HP(X) X(learning_rate) X(lambd) X(alpha) X(t0)
#define FO_KERNEL_SCALARS(X) X(decay) X(neta) X(mu) X(copy)
#define FO_KERNEL_AUX 1
#include "declare.h"

static double asgd_scalars(const fo_ctx *c, double *s)
{
    const double *h = c->hp;
    const double lr = h[HP_learning_rate], lambd = h[HP_lambd];
    const double eta = c->t == 1 ? lr : c->aux;
    /* Python's max(1, x): 1 unless x > 1 (a NaN x gives 1) */
    const double since = (double)(c->t - 1) - h[HP_t0];
    const double mu = c->t == 1 ? 1.0 : 1.0 / (since > 1.0 ? since : 1.0);
    s[S_decay] = 1.0 - lambd * eta;
    s[S_neta] = -eta;
    s[S_mu] = mu;
    s[S_copy] = mu == 1.0 ? 1.0 : 0.0;
    return lr / pow(1.0 + lambd * lr * (double)c->t, h[HP_alpha]);
}
#define FO_KERNEL_SCALARS_FN asgd_scalars
#include "instantiate.h"
#else

static void FO_FN(asgd)(const fo_tensor *t, int64_t begin, int64_t end, const double *s)
{
    FO_KERNEL_BEGIN;
    const FO_T dec = (FO_T)s[S_decay];
    const FO_T neta = (FO_T)s[S_neta];
    const FO_T mu = (FO_T)s[S_mu];
    FO_T *restrict ax = FO_STATE(0);

    if (s[S_copy] != 0.0) {
        FO_LOOP(FO_T wn = wi * dec; wn = wn + neta * gi; w[i] = wn; ax[i] = wn;)
    } else {
        FO_LOOP(FO_T wn = wi * dec; wn = wn + neta * gi; w[i] = wn;
                ax[i] = ax[i] + (wn - ax[i]) * mu;)
    }
}

#endif
