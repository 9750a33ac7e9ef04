/*
 * The one driver: work split, the single parallel region, SIMD choice,
 * deterministic reductions.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fastopt.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define FO_HAVE_ATFORK 1
#endif

#define FO_OPT(name, cost) extern const fo_kernel_info fo_kernel_##name;
#include "registry.def"
#undef FO_OPT

static const fo_kernel_info *const fo_kernels[FO_NKERNELS] = {
#define FO_OPT(name, cost) &fo_kernel_##name,
#include "registry.def"
#undef FO_OPT
};

/* Work per element relative to SGD (registry.def), for the threshold. */
static const int64_t fo_costs[FO_NKERNELS] = {
#define FO_OPT(name, cost) cost,
#include "registry.def"
#undef FO_OPT
};

const fo_kernel_info *fo_kernel(int32_t id)
{
    return (id >= 0 && id < FO_NKERNELS) ? fo_kernels[id] : NULL;
}

/* ---- configuration -------------------------------------------------- */

static int fo_simd_level = -1;
/* Below this much work (active elements times the kernel's cost) a step runs
 * on the calling thread: waking a team costs more than it saves.  Measured
 * with bench/run.py --threshold: SGD needs 32768 elements to gain from 2
 * threads, Adam (cost 2) 16384. */
static int64_t fo_threshold = 32768;
/* libgomp's thread pool does not survive fork(); a child process runs serial. */
static volatile int fo_forked = 0;

static void fo_atfork_child(void) { fo_forked = 1; }

/* The most threads any driver call actually ran with since fo_team_seen()
 * was last called (1: all stayed on the calling thread; 0: no call), read back
 * by the tests that force a split: identity across thread counts means nothing
 * unless a team larger than one ran.  Written after each region by the
 * calling thread. */
static volatile int fo_team_max = 0;

static void fo_note_team(int ran)
{
    if (ran > fo_team_max)
        fo_team_max = ran;
}

int fo_team_seen(void)
{
    const int seen = fo_team_max;
    fo_team_max = 0;
    return seen;
}

/* Registered when the module loads (fo_init), not at fastopt's first parallel
 * region: the libgomp fastopt links may be shared with other libraries, and a
 * fork after one of them ran a team must still make the child serial.  Once,
 * even when two threads make their first call together. */
#ifdef FO_HAVE_ATFORK
static pthread_once_t fo_once = PTHREAD_ONCE_INIT;
static void fo_register_atfork(void) { pthread_atfork(NULL, NULL, fo_atfork_child); }
static void fo_init_once(void) { pthread_once(&fo_once, fo_register_atfork); }
#else
static void fo_init_once(void) {}
#endif

void fo_init(void) { fo_init_once(); }

int fo_simd_supported(int level)
{
    if (level == FO_SIMD_BASELINE)
        return 1;
#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__) && !defined(__clang__)
    __builtin_cpu_init();
    if (level == FO_SIMD_AVX2)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (level == FO_SIMD_AVX512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
#endif
    return 0;
}

int fo_simd_best(void)
{
    for (int level = FO_SIMD_COUNT - 1; level > 0; level--)
        if (fo_simd_supported(level))
            return level;
    return FO_SIMD_BASELINE;
}

int fo_simd_get(void)
{
    fo_init_once();
    if (fo_simd_level < 0)
        fo_simd_level = fo_simd_best();
    return fo_simd_level;
}

int fo_simd_set(int level)
{
    if (level < 0 || level >= FO_SIMD_COUNT || !fo_simd_supported(level))
        return FO_EINVAL;
    fo_simd_get();
    fo_simd_level = level;
    return FO_OK;
}

const char *fo_simd_name(int level)
{
    static const char *const names[FO_SIMD_COUNT] = {"baseline", "avx2", "avx512"};
    return (level >= 0 && level < FO_SIMD_COUNT) ? names[level] : "unknown";
}

int fo_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int fo_max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

int64_t fo_parallel_threshold(void) { return fo_threshold; }
void fo_set_parallel_threshold(int64_t n) { fo_threshold = n < 0 ? 0 : n; }

/* ---- the work list -------------------------------------------------- */

int fo_plan_init(fo_plan *plan, fo_tensor *tensors, int32_t ntensors)
{
    int64_t nchunks = 0, total = 0;
    memset(plan, 0, sizeof(*plan));
    for (int32_t i = 0; i < ntensors; i++) {
        nchunks += (tensors[i].size + FO_CHUNK - 1) / FO_CHUNK;
        total += tensors[i].size;
    }
    fo_chunk *chunks = NULL;
    if (nchunks > 0) {
        chunks = (fo_chunk *)malloc((size_t)nchunks * sizeof(fo_chunk));
        if (chunks == NULL)
            return FO_ENOMEM;
    }
    int64_t c = 0;
    for (int32_t i = 0; i < ntensors; i++)
        for (int64_t b = 0; b < tensors[i].size; b += FO_CHUNK) {
            chunks[c].tensor = i;
            chunks[c].begin = b;
            chunks[c].end = b + FO_CHUNK < tensors[i].size ? b + FO_CHUNK : tensors[i].size;
            c++;
        }
    plan->tensors = tensors;
    plan->ntensors = ntensors;
    plan->chunks = chunks;
    plan->nchunks = nchunks;
    plan->total = total;
    return FO_OK;
}

void fo_plan_free(fo_plan *plan)
{
    free(plan->chunks);
    memset(plan, 0, sizeof(*plan));
}

/* Most threads per available processor a team may have.  libgomp exits the
 * process when it cannot create a team's threads, so a request far beyond the
 * machine (num_threads=1000) is cut down instead of being passed on. */
#define FO_THREADS_PER_PROC 4

int fo_max_team(void)
{
#ifdef _OPENMP
    const int64_t procs = omp_get_num_procs(), limit = omp_get_thread_limit();
    const int64_t most = procs * FO_THREADS_PER_PROC;
    return (int)(most < limit ? most : limit);
#else
    return 1;
#endif
}

static int fo_team_size(int64_t elems, int64_t cost, int nthreads)
{
    fo_init_once();
    if (nthreads <= 1 || fo_forked || !fo_openmp() || elems * cost < fo_threshold)
        return 1;
    const int cap = fo_max_team();
    if (nthreads > cap)
        nthreads = cap;
    int64_t most = elems / FO_ALIGN;
    return most < nthreads ? (int)(most > 1 ? most : 1) : nthreads;
}

static int64_t fo_align_down(int64_t x) { return x - x % FO_ALIGN; }

/* Thread `part` of `parts` updates the active elements [lo, hi) of the
 * concatenation of active tensors.  Cut points inside a tensor are rounded to
 * FO_ALIGN elements so no two threads write one cache line. */
static void fo_run_part(const fo_plan *plan, fo_kernel_fn f32, fo_kernel_fn f64,
                        const double *rows, int64_t active, int part, int parts)
{
    const int64_t lo = active / parts * part + active % parts * part / parts;
    const int64_t hi = active / parts * (part + 1) + active % parts * (part + 1) / parts;
    int64_t off = 0;
    for (int32_t i = 0; i < plan->ntensors && off < hi; i++) {
        const fo_tensor *t = &plan->tensors[i];
        if (t->grad == NULL || t->size == 0)
            continue;
        const int64_t end = off + t->size;
        if (end > lo) {
            int64_t a = lo > off ? lo - off : 0;
            int64_t b = hi < end ? hi - off : t->size;
            if (a > 0)
                a = fo_align_down(a);
            if (b < t->size)
                b = fo_align_down(b);
            if (b > a)
                (t->dtype == FO_FLOAT32 ? f32 : f64)(t, a, b, rows + (int64_t)t->row * FO_NSCALARS);
        }
        off = end;
    }
}

void fo_step(const fo_plan *plan, int32_t kernel, const double *rows, int nthreads)
{
    const fo_kernel_info *k = fo_kernel(kernel);
    const int simd = fo_simd_get();
    const fo_kernel_fn f32 = k->fn[simd][FO_FLOAT32], f64 = k->fn[simd][FO_FLOAT64];
    int64_t active = 0;
    for (int32_t i = 0; i < plan->ntensors; i++)
        if (plan->tensors[i].grad != NULL)
            active += plan->tensors[i].size;
    if (active == 0)
        return;
    const int team = fo_team_size(active, fo_costs[kernel], nthreads);
    if (team <= 1) {
        fo_run_part(plan, f32, f64, rows, active, 0, 1);
        fo_note_team(1);
        return;
    }
    int ran = 1;
#ifdef _OPENMP
#pragma omp parallel num_threads(team)
    {
        if (omp_get_thread_num() == 0)
            ran = omp_get_num_threads();
        fo_run_part(plan, f32, f64, rows, active, omp_get_thread_num(), omp_get_num_threads());
    }
#endif
    fo_note_team(ran);
}

/* ---- deterministic reductions ---------------------------------------- */

/* Sum of squares of one chunk, accumulated in double over 8 fixed lanes that
 * are combined in a fixed order: the same result for any vector width. */
#define FO_SUMSQ_BODY(T)                                                     \
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};                                \
    int64_t i = 0;                                                           \
    for (; i + 8 <= n; i += 8)                                               \
        for (int j = 0; j < 8; j++) {                                        \
            double x = (double)((const T *)p)[i + j];                        \
            acc[j] += x * x;                                                 \
        }                                                                    \
    for (int j = 0; i + j < n; j++) {                                        \
        double x = (double)((const T *)p)[i + j];                            \
        acc[j] += x * x;                                                     \
    }                                                                        \
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));

static double fo_sumsq_f32(const void *p, int64_t n) { FO_SUMSQ_BODY(float) }
static double fo_sumsq_f64(const void *p, int64_t n) { FO_SUMSQ_BODY(double) }

/* Norm of one whole tensor, scaled by its largest magnitude so that a sum of
 * squares beyond DBL_MAX (float64 elements near 1e155) still gives the finite
 * norm.  Serial and in element order: deterministic.  Only called when the
 * plain sum of squares overflowed, so speed does not matter here. */
#define FO_NORM_SCALED_BODY(T)                                               \
    const T *x = (const T *)p;                                               \
    double m = 0.0, s = 0.0;                                                 \
    for (int64_t i = 0; i < n; i++) {                                        \
        double a = fabs((double)x[i]);                                       \
        if (!(a <= m) && m == m)                                             \
            m = a; /* a NaN, once seen, stays */                             \
    }                                                                        \
    if (m == 0.0 || !(m <= DBL_MAX))                                         \
        return m;                                                            \
    for (int64_t i = 0; i < n; i++) {                                        \
        double r = (double)x[i] / m;                                         \
        s += r * r;                                                          \
    }                                                                        \
    return m * sqrt(s);

static double fo_norm_scaled_f32(const void *p, int64_t n) { FO_NORM_SCALED_BODY(float) }
static double fo_norm_scaled_f64(const void *p, int64_t n) { FO_NORM_SCALED_BODY(double) }

double fo_norm_scaled(const fo_plan *plan, int32_t tensor, int which)
{
    const fo_tensor *t = &plan->tensors[tensor];
    const void *base = which == 1 ? (const void *)t->param : t->grad;
    if (base == NULL)
        return 0.0;
    return t->dtype == FO_FLOAT32 ? fo_norm_scaled_f32(base, t->size)
                                  : fo_norm_scaled_f64(base, t->size);
}

static int64_t fo_nonfinite_f32(const float *p, int64_t n)
{
    int64_t c = 0;
    for (int64_t i = 0; i < n; i++)
        c += !(fabsf(p[i]) <= FLT_MAX);
    return c;
}

static int64_t fo_nonfinite_f64(const double *p, int64_t n)
{
    int64_t c = 0;
    for (int64_t i = 0; i < n; i++)
        c += !(fabs(p[i]) <= DBL_MAX);
    return c;
}

static int64_t fo_active_chunk_elems(const fo_plan *plan, int which)
{
    int64_t active = 0;
    for (int32_t i = 0; i < plan->ntensors; i++)
        if (which == 1 || plan->tensors[i].grad != NULL)
            active += plan->tensors[i].size;
    return active;
}

void fo_sumsq(const fo_plan *plan, int which, double *out, double *scratch, int nthreads)
{
    const int64_t nc = plan->nchunks;
    const int team = fo_team_size(fo_active_chunk_elems(plan, which), 1, nthreads);
    int ran = 1;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(team) if (team > 1)
#endif
    for (int64_t c = 0; c < nc; c++) {
#ifdef _OPENMP
        if (c == 0)
            ran = omp_get_num_threads();
#endif
        const fo_chunk *ch = &plan->chunks[c];
        const fo_tensor *t = &plan->tensors[ch->tensor];
        const void *base = which == 1 ? (const void *)t->param : t->grad;
        double r = 0.0;
        if (base != NULL) {
            const size_t es = t->dtype == FO_FLOAT32 ? sizeof(float) : sizeof(double);
            const char *p = (const char *)base + (size_t)ch->begin * es;
            r = t->dtype == FO_FLOAT32 ? fo_sumsq_f32(p, ch->end - ch->begin)
                                       : fo_sumsq_f64(p, ch->end - ch->begin);
        }
        scratch[c] = r;
    }
    fo_note_team(ran);
    for (int32_t i = 0; i < plan->ntensors; i++)
        out[i] = 0.0;
    for (int64_t c = 0; c < nc; c++)
        out[plan->chunks[c].tensor] += scratch[c];
}

void fo_step_reduce(const fo_plan *plan, int32_t kernel, const double *rows, double *out,
                    double *scratch, int nthreads)
{
    const fo_kernel_info *k = fo_kernel(kernel);
    const int simd = fo_simd_get();
    const fo_reduce_fn f32 = k->reduce[simd][FO_FLOAT32], f64 = k->reduce[simd][FO_FLOAT64];
    for (int32_t i = 0; i < plan->ntensors * FO_NRED; i++)
        out[i] = 0.0;
    if (f32 == NULL || f64 == NULL)
        return;
    const int64_t nc = plan->nchunks;
    const int team = fo_team_size(fo_active_chunk_elems(plan, 0), fo_costs[kernel], nthreads);
    int ran = 1;
    /* Chunks, not the element split of fo_step: each chunk's sums are a fixed
     * function of its elements, whichever thread runs it. */
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(team) if (team > 1)
#endif
    for (int64_t c = 0; c < nc; c++) {
#ifdef _OPENMP
        if (c == 0)
            ran = omp_get_num_threads();
#endif
        const fo_chunk *ch = &plan->chunks[c];
        const fo_tensor *t = &plan->tensors[ch->tensor];
        double *acc = scratch + c * FO_NRED;
        for (int j = 0; j < FO_NRED; j++)
            acc[j] = 0.0;
        if (t->grad != NULL)
            (t->dtype == FO_FLOAT32 ? f32 : f64)(t, ch->begin, ch->end,
                                                 rows + (int64_t)t->row * FO_NSCALARS, acc);
    }
    fo_note_team(ran);
    for (int64_t c = 0; c < nc; c++)
        for (int j = 0; j < FO_NRED; j++)
            out[plan->chunks[c].tensor * FO_NRED + j] += scratch[c * FO_NRED + j];
}

void fo_count_nonfinite(const fo_plan *plan, int64_t *out, int64_t *scratch, int nthreads)
{
    const int64_t nc = plan->nchunks;
    const int team = fo_team_size(fo_active_chunk_elems(plan, 0), 1, nthreads);
    int ran = 1;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(team) if (team > 1)
#endif
    for (int64_t c = 0; c < nc; c++) {
#ifdef _OPENMP
        if (c == 0)
            ran = omp_get_num_threads();
#endif
        const fo_chunk *ch = &plan->chunks[c];
        const fo_tensor *t = &plan->tensors[ch->tensor];
        int64_t r = 0;
        if (t->grad != NULL)
            r = t->dtype == FO_FLOAT32
                    ? fo_nonfinite_f32((const float *)t->grad + ch->begin, ch->end - ch->begin)
                    : fo_nonfinite_f64((const double *)t->grad + ch->begin, ch->end - ch->begin);
        scratch[c] = r;
    }
    fo_note_team(ran);
    for (int32_t i = 0; i < plan->ntensors; i++)
        out[i] = 0;
    for (int64_t c = 0; c < nc; c++)
        out[plan->chunks[c].tensor] += scratch[c];
}

/* ---- exact sums -------------------------------------------------------- */

/* Shewchuk's algorithm as in CPython's math.fsum: the partials hold the sum
 * exactly, the last step rounds it once (half to even), so the result does
 * not depend on the order of x. */
double fo_fsum(const double *x, int64_t n)
{
    double p[128];      /* non-overlapping partials: at most ~40 for doubles */
    int np = 0;
    double special = 0.0, inf_sum = 0.0;
    for (int64_t k = 0; k < n; k++) {
        double v = x[k];
        if (!(fabs(v) <= DBL_MAX)) {            /* inf or NaN: the sum is that */
            if (v != v)
                special = v;
            else
                inf_sum += v;
            continue;
        }
        int i = 0;
        for (int j = 0; j < np; j++) {
            double y = p[j];
            if (fabs(v) < fabs(y)) {
                double t = v;
                v = y;
                y = t;
            }
            double hi = v + y;
            double lo = y - (hi - v);
            if (lo != 0.0)
                p[i++] = lo;
            v = hi;
        }
        if (!(fabs(v) <= DBL_MAX))              /* intermediate overflow */
            return v != v ? v : (v > 0 ? INFINITY : -INFINITY);
        if (i < 128)
            p[i++] = v;
        np = i;
    }
    if (special != 0.0 || special != special)
        return special;
    if (inf_sum != 0.0)
        return inf_sum;
    double hi = 0.0, lo = 0.0;
    int m = np;
    if (m > 0) {
        hi = p[--m];
        while (m > 0) {
            double a = hi, b = p[--m];
            hi = a + b;
            double yr = hi - a;
            lo = b - yr;
            if (lo != 0.0)
                break;
        }
        if (m > 0 && ((lo < 0.0 && p[m - 1] < 0.0) || (lo > 0.0 && p[m - 1] > 0.0))) {
            double b = lo * 2.0;
            double a = hi + b;
            double yr = a - hi;
            if (b == yr)
                hi = a;
        }
    }
    return hi;
}
