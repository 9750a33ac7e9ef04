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
 * scalars: K+0 lr, K+1 mu, K+2 mode (SGD_PLAIN/KERAS/TORCH/TORCH_FIRST),
 *          K+3 nesterov, K+4 1-dampening.  state[0]: v or b.
 */
#ifndef FO_T
#define FO_KERNEL_FILE "kernels/sgd.c"
#define FO_KERNEL_NAME sgd
#define FO_KERNEL_NSTATE 1
#define FO_KERNEL_NSTATE_USED(s) (s[FO_S_K + 2] != 0.0 ? 1 : 0)
#include "instantiate.h"
#else

#ifndef FO_SGD_MODES
#define FO_SGD_MODES
enum { SGD_PLAIN = 0, SGD_KERAS = 1, SGD_TORCH = 2, SGD_TORCH_FIRST = 3 };
#endif

static void FO_FN(sgd)(const fo_tensor *t, int64_t begin, int64_t end, const double *s)
{
    FO_KERNEL_BEGIN;
    const FO_T lr = (FO_T)s[FO_S_K + 0];
    const FO_T mu = (FO_T)s[FO_S_K + 1];
    const int mode = (int)s[FO_S_K + 2];
    const int nesterov = s[FO_S_K + 3] != 0.0;
    const FO_T damp = (FO_T)s[FO_S_K + 4];

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
