/*
 * Adafactor (Shazeer & Stern 2018) as Keras 3 and torch.optim compute it.
 *
 * With t the 1-based step, rho = min(lr, 1/sqrt(t)), d the clipping
 * threshold (Keras clip_threshold):
 *
 *   keras: b = 1 - t^decay;  q = g^2 + eps1
 *          factored:   r <- b*r + (1-b)*mean_cols(q);  c <- b*c + (1-b)*mean_rows(q)
 *                      v  = (r / mean(r)) * c                 (outer product)
 *          otherwise:  v <- b*v + (1-b)*q
 *          u = g / sqrt(v)
 *   torch: w' = t^decay (the lerp weight);  q = g^2;  eps1 = None: the dtype's epsilon
 *          factored:   r <- lerp(r, mean_cols(q), w');  c <- lerp(c, mean_rows(q), w')
 *                      v  = r*c / max(mean(r), eps1)
 *          otherwise:  v <- lerp(v, q, w')
 *          u = g / sqrt(max(v, eps1^2))
 *   alpha = max(eps2, RMS(w)) * rho       (keras: w after weight decay, torch: before)
 *   w <- w - alpha / max(1, RMS(u)/d) * u
 *
 * A param of two or more axes is factored over its last two: r holds one
 * value per row (shape[:-1]), c one per column of each matrix
 * (shape[:-2] + shape[-1:]); nothing of the param's size is kept.  Three
 * passes: the row/column pass sums q per row and per column (fo_step_rowcol,
 * deterministic), the fold turns the sums into r, c and mean(r) per matrix;
 * the reduction pass applies the preprocessing and weight decay, updates v
 * (params of fewer axes) and returns the sums of w^2 and u^2; the finish
 * turns them into alpha / max(1, RMS(u)/d); the elementwise pass recomputes
 * u (the same operations, so the same bits) and applies the step.
 */
#ifndef FO_T
/* gcc's loop unswitching copies each pass once per combination of the
 * preprocessing flags and conventions: 60 s of compile time for a few
 * per cent of speed.  Without it the branches are if-converted. */
#pragma GCC optimize("no-unswitch-loops")
#define FO_KERNEL_NAME adafactor
#define FO_KERNEL_NSTATE 2
#define FO_KERNEL_NSTATE_USED(s) ((void)(s), 1)
#define FO_KERNEL_REDUCE 1
#define FO_KERNEL_ROWCOL 1
#define FO_KERNEL_HP(X) X(learning_rate) X(beta_2_decay) X(epsilon_1) X(epsilon_2) X(clip_threshold)
#define FO_KERNEL_SCALARS(X) X(rho) X(b2) X(omb2) X(eps1) X(eps2) X(d) X(torch) X(step)
#include "declare.h"

static double adafactor_scalars(const fo_ctx *c, double *s)
{
    const double *h = c->hp;
    const double t = (double)c->t, lr = h[HP_learning_rate], inv = 1.0 / sqrt(t);
    s[S_rho] = lr < inv ? lr : inv;
    if (c->convention == FO_TORCH) {
        s[S_omb2] = pow(t, h[HP_beta_2_decay]);
        s[S_b2] = 1.0 - s[S_omb2];
    } else {
        s[S_b2] = 1.0 - pow(t, h[HP_beta_2_decay]);
        s[S_omb2] = 1.0 - s[S_b2];
    }
    s[S_eps1] = h[HP_epsilon_1];    /* < 0: the machine epsilon of the param's dtype */
    s[S_eps2] = h[HP_epsilon_2];
    s[S_d] = h[HP_clip_threshold];
    s[S_torch] = c->convention == FO_TORCH;
    s[S_step] = 0.0;
    return c->aux;
}
#define FO_KERNEL_SCALARS_FN adafactor_scalars

/* The elementwise pass's row: the step alpha / max(1, RMS(u)/d) from the
 * sums of w^2 and u^2; decay was applied by the reduction pass. */
static void adafactor_finish(const fo_tensor *t, const double *sums, double *s)
{
    const double n = (double)t->size, eps2 = s[S_eps2], d = s[S_d];
    s[FO_S_FLAGS] = (double)((int)s[FO_S_FLAGS] & ~FO_F_DECAY);
    if (t->size == 0) {
        s[S_step] = 0.0;
        return;
    }
    double rw, ru;
    if (s[S_torch] != 0.0) {
        rw = sqrt(sums[0]) / sqrt(n);
        ru = sqrt(sums[1]) / (sqrt(n) * d);
    } else {
        rw = sqrt(sums[0] / n);
        ru = sqrt(sums[1] / n) / d;
    }
    const double alpha = (rw > eps2 ? rw : eps2) * s[S_rho];
    s[S_step] = alpha / (ru > 1.0 ? ru : 1.0);
}
#define FO_KERNEL_FINISH adafactor_finish
#include "instantiate.h"
#else

/* torch's lerp: a + w*(b - a) for w < 0.5, else b - (b - a)*(1 - w) */
#define AF_LERP(a, b, wt, omw) ((wt) < (FO_T)0.5 ? (a) + (wt) * ((b) - (a)) : (b) - ((b) - (a)) * (omw))

#define AF_SCALARS                                                           \
    const int torch = s[S_torch] != 0.0;                                     \
    const double e1_ = s[S_eps1] < 0.0 ? (double)FO_EPSILON : s[S_eps1];     \
    const FO_T eps1 = (FO_T)e1_;                                             \
    const FO_T eps1sq = (FO_T)(e1_ * e1_);                                   \
    const FO_T b2 = (FO_T)s[S_b2];                                           \
    const FO_T omb2 = (FO_T)s[S_omb2];                                       \
    const FO_T ombw = (FO_T)(1.0 - s[S_omb2]);                               \
    (void)eps1; (void)eps1sq; (void)b2; (void)omb2; (void)ombw

/* u of an unfactored element, updating v when `update` (the reduction pass);
 * TORCH and `update` are literals, so each loop is branch-free */
#define AF_U_PLAIN(TORCH, ui, gi, vv, update)                                \
    FO_T ui;                                                                 \
    {                                                                        \
        FO_T vi = vv;                                                        \
        if (update)                                                          \
            vi = TORCH ? AF_LERP(vi, gi * gi, omb2, ombw) : b2 * vi + omb2 * (gi * gi + eps1); \
        if (update)                                                          \
            vv = vi;                                                         \
        if (TORCH)                                                           \
            ui = gi / FO_SQRT(vi < eps1sq ? eps1sq : vi);                    \
        else                                                                 \
            ui = gi / FO_SQRT(vi);                                           \
    }

/* u of a factored element: rf the row's factor (keras: r/mean(r); torch: r),
 * cj the column's, den the matrix's max(mean(r), eps1) (torch) */
#define AF_U_FACT(TORCH, ui, gi, rf, cj, den)                                \
    FO_T ui;                                                                 \
    if (TORCH) {                                                             \
        FO_T vi = rf * cj / den;                                             \
        ui = gi / FO_SQRT(vi < eps1sq ? eps1sq : vi);                        \
    } else {                                                                 \
        ui = gi / FO_SQRT(rf * cj);                                          \
    }

static void FO_CFN(adafactor)(const fo_tensor *t, int64_t r0, int64_t r1, const double *s,
                              double *rowsum, double *colsum)
{
    const int64_t cols = t->fcols;
    const int flags = (int)s[FO_S_FLAGS];
    const FO_T gscale = (FO_T)s[FO_S_GSCALE];
    const FO_T clip = (FO_T)s[FO_S_CLIP];
    const double e1_ = s[S_eps1] < 0.0 ? (double)FO_EPSILON : s[S_eps1];
    const FO_T add = s[S_torch] != 0.0 ? (FO_T)0 : (FO_T)e1_;
    for (int64_t r = r0; r < r1; r++) {
        const FO_T *restrict gr = (const FO_T *)t->grad + r * cols;
        double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        int64_t j = 0;
#define AF_Q(jj, lane)                                                       \
        {                                                                    \
            FO_T gi = gr[jj];                                                \
            if (flags & FO_F_GSCALE) gi = gi * gscale;                       \
            if (flags & FO_F_CLIP) gi = gi < -clip ? -clip : (gi > clip ? clip : gi); \
            const FO_T q = gi * gi + add;                                    \
            acc[lane] += (double)q;                                          \
            colsum[jj] += (double)q;                                         \
        }
        for (; j + 8 <= cols; j += 8)
            for (int l = 0; l < 8; l++)
                AF_Q(j + l, l)
        for (int l = 0; j + l < cols; l++)
            AF_Q(j + l, l)
#undef AF_Q
        rowsum[r - r0] = ((acc[0] + acc[1]) + (acc[2] + acc[3])) +
                         ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    }
}

/* Serial, O(rows + cols): only the baseline instance is registered. */
__attribute__((unused)) static void FO_FFN(adafactor)(const fo_tensor *t, const double *s)
{
    AF_SCALARS;
    const int64_t R = t->frows, C = t->fcols, nrow = t->size / C, batch = nrow / R;
    const double *rowsum = t->work, *colsum = t->work + nrow;
    double *per = t->work + nrow + batch * C;
    FO_T *restrict r = (FO_T *)t->state[0];
    FO_T *restrict c = (FO_T *)t->state[1];
    for (int64_t i = 0; i < nrow; i++) {
        const FO_T mean = (FO_T)rowsum[i] / (FO_T)C;
        r[i] = torch ? AF_LERP(r[i], mean, omb2, ombw) : b2 * r[i] + omb2 * mean;
    }
    for (int64_t k = 0; k < batch * C; k++) {
        const FO_T mean = (FO_T)colsum[k] / (FO_T)R;
        c[k] = torch ? AF_LERP(c[k], mean, omb2, ombw) : b2 * c[k] + omb2 * mean;
    }
    for (int64_t b = 0; b < batch; b++) {
        double acc = 0.0;
        for (int64_t i = 0; i < R; i++)
            acc += (double)r[b * R + i];
        FO_T mean = (FO_T)acc / (FO_T)R;
        if (torch && !(mean >= eps1))
            mean = mean != mean ? mean : eps1;
        per[b] = (double)mean;
    }
}

/* One element at index ii of [begin, end): the body ELEM runs with gi, wi,
 * w0 (w before decay), ui bound and `lane`. */
#define AF_PLAIN_ELEM(TORCH, update, ii, lane, ELEM)                         \
    {                                                                        \
        const int64_t i = ii;                                                \
        const int l_ = lane;                                                 \
        const FO_T w0 = w[i];                                                \
        FO_PREP(gi, wi, i);                                                  \
        AF_U_PLAIN(TORCH, ui, gi, v[i], update);                             \
        (void)w0; (void)l_;                                                  \
        ELEM                                                                 \
    }
#define AF_FACT_ELEM(TORCH, ii, lane, ELEM)                                  \
    {                                                                        \
        const int64_t i = ii;                                                \
        const int l_ = lane;                                                 \
        const FO_T w0 = w[i];                                                \
        FO_PREP(gi, wi, i);                                                  \
        AF_U_FACT(TORCH, ui, gi, rf, cb[i - base], den);                     \
        (void)w0; (void)l_;                                                  \
        ELEM                                                                 \
    }

/* One pass over [begin, end) in one convention.  Element i (from begin)
 * accumulates into lane i % 8 in every path, so the sums do not depend on
 * how the loops are blocked; whole blocks of 8 let the compiler vectorise. */
#define AF_PASS(TORCH, update, ELEM)                                         \
    if (t->fcols == 0) {                                                      \
        FO_T *restrict v = FO_STATE(0);                                      \
        int64_t k = 0;                                                       \
        for (; k + 8 <= n; k += 8)                                           \
            for (int j = 0; j < 8; j++)                                      \
                AF_PLAIN_ELEM(TORCH, update, k + j, j, ELEM)                 \
        for (int j = 0; k + j < n; j++)                                      \
            AF_PLAIN_ELEM(TORCH, update, k + j, j, ELEM)                     \
    } else {                                                                 \
        const int64_t C = t->fcols, R = t->frows, nrow = t->size / C;         \
        const FO_T *restrict rv = (const FO_T *)t->state[0];                 \
        const FO_T *restrict cv = (const FO_T *)t->state[1];                 \
        const double *per = t->work + nrow + nrow / R * C;                   \
        int64_t k = 0;                                                       \
        while (k < n) {                                                      \
            const int64_t row = (begin + k) / C, b = row / R;                \
            const int64_t stop = (row + 1) * C - begin < n ? (row + 1) * C - begin : n; \
            const FO_T den = (FO_T)per[b];                                   \
            const FO_T rf = TORCH ? rv[row] : rv[row] / den;                 \
            const FO_T *restrict cb = cv + b * C;                            \
            const int64_t base = row * C - begin;  /* cb[i - base]: column of i */ \
            for (; k < stop && (k & 7); k++)                                 \
                AF_FACT_ELEM(TORCH, k, (int)(k & 7), ELEM)                   \
            for (; k + 8 <= stop; k += 8)                                    \
                for (int j = 0; j < 8; j++)                                  \
                    AF_FACT_ELEM(TORCH, k + j, j, ELEM)                      \
            for (; k < stop; k++)                                            \
                AF_FACT_ELEM(TORCH, k, (int)(k & 7), ELEM)                   \
        }                                                                    \
    }

#define AF_REDUCE_ELEM(TORCH)                                                \
    {                                                                        \
        w[i] = wi;                                                           \
        const double x = TORCH ? (double)w0 : (double)wi;                    \
        aw[l_] += x * x;                                                     \
        au[l_] += (double)ui * (double)ui;                                   \
    }

static void FO_RFN(adafactor)(const fo_tensor *t, int64_t begin, int64_t end, const double *s,
                              double *acc)
{
    FO_KERNEL_BEGIN;
    AF_SCALARS;
    double aw[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    double au[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    if (torch) {
        AF_PASS(1, 1, AF_REDUCE_ELEM(1))
    } else {
        AF_PASS(0, 1, AF_REDUCE_ELEM(0))
    }
    acc[0] += ((aw[0] + aw[1]) + (aw[2] + aw[3])) + ((aw[4] + aw[5]) + (aw[6] + aw[7]));
    acc[1] += ((au[0] + au[1]) + (au[2] + au[3])) + ((au[4] + au[5]) + (au[6] + au[7]));
}

static void FO_FN(adafactor)(const fo_tensor *t, int64_t begin, int64_t end, const double *s)
{
    FO_KERNEL_BEGIN;
    AF_SCALARS;
    const FO_T step = (FO_T)s[S_step];
    if (torch) {
        AF_PASS(1, 0, { w[i] = wi - step * ui; })
    } else {
        AF_PASS(0, 0, { w[i] = wi - step * ui; })
    }
}

#undef AF_LERP
#undef AF_SCALARS
#undef AF_U_PLAIN
#undef AF_U_FACT
#undef AF_PASS
#undef AF_PLAIN_ELEM
#undef AF_FACT_ELEM
#undef AF_REDUCE_ELEM
#endif
