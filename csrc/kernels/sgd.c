/*
 * SGD, momentum, Nesterov (NAG).
 *
 * plain:            w <- w - lr*g
 * Keras momentum:   v <- mu*v - lr*g;  w <- w + v            (lr inside v)
 *     nesterov:                        w <- w + mu*v - lr*g
 * torch momentum:   b <- mu*b + (1-dampening)*g   (b <- g on a tensor's first step)
 *                   d <- b,  or g + mu*b with nesterov;  w <- w - lr*d   (lr outside b)
 *
 * The two momentum forms agree for a constant lr; with a schedule Keras applies
 * the new lr to new gradients only, torch rescales the whole buffer.
 *
 */
#ifndef FO_T
#define FO_KERNEL_NAME sgd
#define FO_KERNEL_NSTATE 1
#define FO_KERNEL_HP(X) X(learning_rate) X(momentum) X(nesterov) X(dampening)
#define FO_KERNEL_SCALARS(X) X(lr) X(mu) X(mode) X(nesterov) X(omd)
#define FO_KERNEL_NSTATE_USED(s) (s[S_mode] != 0.0 ? 1 : 0)
#include "declare.h"

enum { SGD_PLAIN = 0, SGD_KERAS = 1, SGD_TORCH = 2, SGD_TORCH_FIRST = 3 };

static double sgd_scalars(const fo_ctx *c, double *s)
{
    const double *h = c->hp;
    double mode = SGD_PLAIN;
    /* torch reads and writes its momentum buffer only while momentum != 0 (a
     * momentum scheduled or set to 0 leaves it as it is, and dampening unread) */
    if (c->nstate > 0 && (c->convention == FO_KERAS || h[HP_momentum] != 0.0))
        mode = c->convention == FO_KERAS ? SGD_KERAS : (c->t == 1 ? SGD_TORCH_FIRST : SGD_TORCH);
    s[S_lr] = h[HP_learning_rate];
    s[S_mu] = h[HP_momentum];
    s[S_mode] = mode;
    s[S_nesterov] = h[HP_nesterov] != 0.0 ? 1.0 : 0.0;
    s[S_omd] = 1.0 - h[HP_dampening];
    return c->aux;
}
#define FO_KERNEL_SCALARS_FN sgd_scalars
#include "instantiate.h"
#else

static void FO_FN(sgd)(const fo_tensor *t, int64_t begin, int64_t end, const double *s)
{
    FO_KERNEL_BEGIN;
    const FO_T lr = (FO_T)s[S_lr];
    const FO_T mu = (FO_T)s[S_mu];
    const int mode = (int)s[S_mode];
    const int nesterov = s[S_nesterov] != 0.0;
    const FO_T damp = (FO_T)s[S_omd];

    if (mode == SGD_PLAIN) {
        FO_LOOP(w[i] = wi - lr * gi;)
        return;
    }
    FO_T *restrict b = FO_STATE(0);
    if (mode == SGD_KERAS) {
        if (nesterov) {
            FO_LOOP(FO_T v = mu * b[i] - lr * gi; b[i] = v; w[i] = wi + (mu * v - lr * gi);)
        } else {
            FO_LOOP(FO_T v = mu * b[i] - lr * gi; b[i] = v; w[i] = wi + v;)
        }
    } else if (mode == SGD_TORCH) {
        if (nesterov) {
            FO_LOOP(FO_T v = mu * b[i] + damp * gi; b[i] = v; w[i] = wi - lr * (gi + mu * v);)
        } else {
            FO_LOOP(FO_T v = mu * b[i] + damp * gi; b[i] = v; w[i] = wi - lr * v;)
        }
    } else {
        if (nesterov) {
            FO_LOOP(b[i] = gi; w[i] = wi - lr * (gi + mu * gi);)
        } else {
            FO_LOOP(b[i] = gi; w[i] = wi - lr * gi;)
        }
    }
}

#endif
