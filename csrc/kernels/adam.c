/*
 * Adam, AMSGrad (and AdamW: the decoupled decay is the shared DECAY slot).
 *
 *   m <- m + (1-b1)*(g - m)
 *   v <- b2*v + (1-b2)*g^2
 *   vv = max(vhat, v) -> vhat   with amsgrad (max over the raw v), else v
 *   w <- w - a * m / (sqrt(vv)*c + eps)
 *
 * Keras:  a = lr*sqrt(1-b2^t)/(1-b1^t), c = 1            (eps not bias-corrected)
 * torch:  a = lr/(1-b1^t),             c = 1/sqrt(1-b2^t)
 * Both are the same loop with one sqrt and one divide per element; the host
 * computes a and c in double.
 *
 * state: 0 m, 1 v, 2 vhat (amsgrad only).
 */
#ifndef FO_T
#define FO_KERNEL_NAME adam
#define FO_KERNEL_NSTATE 3
#define FO_KERNEL_HP(X) X(learning_rate) X(beta_1) X(beta_2) X(epsilon) X(amsgrad)
#define FO_KERNEL_SCALARS(X) X(a) X(c) X(eps) X(omb1) X(b2) X(omb2) X(amsgrad)
#define FO_KERNEL_NSTATE_USED(s) (s[S_amsgrad] != 0.0 ? 3 : 2)
#include "declare.h"

static double adam_scalars(const fo_ctx *c, double *s)
{
    const double *h = c->hp;
    const double b1 = h[HP_beta_1], b2 = h[HP_beta_2], lr = h[HP_learning_rate];
    const double bc1 = 1.0 - pow(b1, (double)c->t);
    const double bc2 = 1.0 - pow(b2, (double)c->t);
    if (c->convention == FO_KERAS) {
        s[S_a] = lr * sqrt(bc2) / bc1;
        s[S_c] = 1.0;
    } else {
        s[S_a] = lr / bc1;
        s[S_c] = 1.0 / sqrt(bc2);
    }
    s[S_eps] = h[HP_epsilon];
    s[S_omb1] = 1.0 - b1;
    s[S_b2] = b2;
    s[S_omb2] = 1.0 - b2;
    s[S_amsgrad] = h[HP_amsgrad] != 0.0 ? 1.0 : 0.0;
    return c->aux;
}
#define FO_KERNEL_SCALARS_FN adam_scalars
#include "instantiate.h"
#else

static void FO_FN(adam)(const fo_tensor *t, int64_t begin, int64_t end, const double *s)
{
    FO_KERNEL_BEGIN;
    const FO_T a = (FO_T)s[S_a];
    const FO_T c = (FO_T)s[S_c];
    const FO_T eps = (FO_T)s[S_eps];
    const FO_T omb1 = (FO_T)s[S_omb1];
    const FO_T b2 = (FO_T)s[S_b2];
    const FO_T omb2 = (FO_T)s[S_omb2];
    const int amsgrad = s[S_amsgrad] != 0.0;
    FO_T *restrict m = FO_STATE(0);
    FO_T *restrict v = FO_STATE(1);

    if (amsgrad) {
        FO_T *restrict vh = FO_STATE(2);
        FO_LOOP(
            FO_T mi = m[i] + omb1 * (gi - m[i]);
            FO_T vi = b2 * v[i] + omb2 * (gi * gi);
            FO_T hi = vh[i] > vi ? vh[i] : vi;
            m[i] = mi; v[i] = vi; vh[i] = hi;
            w[i] = wi - a * mi / (FO_SQRT(hi) * c + eps);)
    } else {
        FO_LOOP(
            FO_T mi = m[i] + omb1 * (gi - m[i]);
            FO_T vi = b2 * v[i] + omb2 * (gi * gi);
            m[i] = mi; v[i] = vi;
            w[i] = wi - a * mi / (FO_SQRT(vi) * c + eps);)
    }
}

#endif
