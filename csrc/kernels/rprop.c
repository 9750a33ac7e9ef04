/*
 * Rprop (torch.optim.Rprop; torch convention only, Keras has none).
 *
 *   p = g * prev                               in the element type
 *   f = etaplus if p > 0, etaminus if p < 0, 1 otherwise (p == 0 or NaN)
 *   step_size <- clamp(step_size * f, min, max)     (a NaN step_size stays NaN)
 *   g <- 0 where f == etaminus                  (the sign flipped: skip this step)
 *   w <- w - sign(g) * step_size,  sign(NaN) = 0;   prev <- g
 *
 * On a tensor's first step (FIRST = 1) torch creates the state: prev = 0 and
 * step_size = lr, so the body runs with those instead of reading the state
 * (f is 1 then, even for a non-finite g).  lr is read on no other step:
 * torch never looks at the group's lr again, so a schedule only reaches
 * tensors whose first step comes later.  No bias correction, no step count.
 *
 * Bit-exact with torch (CPU, float32 and float64) by doing what its ops do:
 *   - f as torch builds it from sign(p) = (p > 0) - (p < 0): set etaplus where
 *     > 0, then etaminus where < 0, then 1 where == 0, in that order (an
 *     etaminus that rounds to 0 in float32 becomes 1; torch does that too);
 *   - "f == etaminus" compared in the element type (torch compares the
 *     float32 tensor with the scalar cast to float32);
 *   - clamp as std::min(std::max(x, min), max), which keeps a NaN x;
 *   - w + (-1 * sign(g)) * step_size, addcmul_'s order (a zero sign leaves
 *     w, and its sign bit, unchanged).
 * maximize is the shared GSCALE = -1 (torch negates g first, prev holds -g).
 * The host refuses what torch refuses: lr < 0, and etas unless
 * 0 < etaminus < 1 < etaplus; NaN step-size bounds too (torch does not check
 * them, and its scalar and vector clamps disagree on them).
 *
 * state: 0 prev, 1 step_size.
 */
#ifndef FO_T
#define FO_KERNEL_NAME rprop
#define FO_KERNEL_NSTATE 2
#define FO_KERNEL_HP(X) X(learning_rate) X(etaminus) X(etaplus) X(step_size_min) X(step_size_max)
#define FO_KERNEL_SCALARS(X) X(lr) X(etaminus) X(etaplus) X(min) X(max) X(first)
#include "declare.h"

static double rprop_scalars(const fo_ctx *c, double *s)
{
    const double *h = c->hp;
    s[S_lr] = h[HP_learning_rate];
    s[S_etaminus] = h[HP_etaminus];
    s[S_etaplus] = h[HP_etaplus];
    s[S_min] = h[HP_step_size_min];
    s[S_max] = h[HP_step_size_max];
    s[S_first] = c->t == 1 ? 1.0 : 0.0;
    return c->aux;
}
#define FO_KERNEL_SCALARS_FN rprop_scalars
#include "instantiate.h"
#else

/* One element: PREV and SS are the previous grad and step size. */
#define RPROP_BODY(PREV, SS)                                                 \
    const FO_T p = gi * (PREV);                                              \
    FO_T f = (FO_T)(p > zero) - (FO_T)(p < zero);                            \
    f = f > zero ? ep : f;                                                   \
    f = f < zero ? em : f;                                                   \
    f = f == zero ? one : f;                                                 \
    FO_T z = (SS) * f;                                                       \
    z = z < lo ? lo : z;                                                     \
    z = hi < z ? hi : z;                                                     \
    const FO_T gz = f == em ? zero : gi;                                     \
    const FO_T sg = (FO_T)(gz > zero) - (FO_T)(gz < zero);                   \
    prev[i] = gz;                                                            \
    ss[i] = z;                                                               \
    w[i] = wi + (mone * sg) * z;

static void FO_FN(rprop)(const fo_tensor *t, int64_t begin, int64_t end, const double *s)
{
    FO_KERNEL_BEGIN;
    const FO_T lr = (FO_T)s[S_lr];
    const FO_T em = (FO_T)s[S_etaminus];
    const FO_T ep = (FO_T)s[S_etaplus];
    const FO_T lo = (FO_T)s[S_min];
    const FO_T hi = (FO_T)s[S_max];
    const FO_T zero = 0, one = 1, mone = -1;
    FO_T *restrict prev = FO_STATE(0);
    FO_T *restrict ss = FO_STATE(1);

    if (s[S_first] != 0.0) {
        FO_LOOP(RPROP_BODY(zero, lr))
    } else {
        FO_LOOP(RPROP_BODY(prev[i], ss[i]))
    }
}

#undef RPROP_BODY

#endif
