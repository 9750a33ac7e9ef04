/*
 * The one driver: work split, the single parallel region, SIMD choice,
 * deterministic reductions.
 */
#if !defined(_POSIX_C_SOURCE) && !defined(_WIN32)
#define _POSIX_C_SOURCE 200809L     /* clock_gettime under -std=c99 */
#endif
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

int64_t fo_now_ns(void)
{
#if defined(CLOCK_MONOTONIC)
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
#elif defined(_OPENMP)
    return (int64_t)(omp_get_wtime() * 1e9);
#else
    return 0;       /* a serial build has no team to measure */
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

/* Elements a bound tensor updates this step: all of them, or its rows. */
static int64_t fo_active_size(const fo_tensor *t)
{
    return t->rows != NULL ? t->nrows * t->width : t->size;
}

/* Rows are scattered over a table far larger than the caches: the loads of
 * the row FO_ROW_AHEAD rows on are started before a row is updated, so the
 * misses overlap instead of coming one after another (the first
 * FO_ROW_PREFETCH_BYTES of each array's row; the hardware streams the rest). */
#define FO_ROW_AHEAD 4
#define FO_ROW_PREFETCH_BYTES 1024

static void fo_prefetch_row(const fo_tensor *t, int64_t j, size_t es)
{
#if defined(__GNUC__)
    const size_t off = (size_t)(t->rows[j] * t->width) * es;
    size_t bytes = (size_t)t->width * es;
    if (bytes > FO_ROW_PREFETCH_BYTES)
        bytes = FO_ROW_PREFETCH_BYTES;
    for (size_t b = 0; b < bytes; b += 64) {
        __builtin_prefetch((const char *)t->param + off + b, 1);
        __builtin_prefetch((const char *)t->rgrad[j] + b, 0);
        for (int k = 0; k < FO_MAX_STATE; k++)
            if (t->state[k] != NULL)
                __builtin_prefetch((const char *)t->state[k] + off + b, 1);
    }
#else
    (void)t; (void)j; (void)es;
#endif
}

/* The row list's rows [ra, rb): the kernel body runs on each row as on a
 * tensor of `width` elements whose param, grad and state start at the row. */
static void fo_run_rows(const fo_tensor *t, fo_kernel_fn f, int64_t ra, int64_t rb,
                        const double *s)
{
    const size_t es = t->dtype == FO_FLOAT32 ? sizeof(float) : sizeof(double);
    fo_tensor r = *t;
    r.rows = NULL;
    r.rgrad = NULL;
    r.size = t->width;
    for (int64_t j = ra; j < rb && j < ra + FO_ROW_AHEAD; j++)
        fo_prefetch_row(t, j, es);
    for (int64_t j = ra; j < rb; j++) {
        if (j + FO_ROW_AHEAD < rb)
            fo_prefetch_row(t, j + FO_ROW_AHEAD, es);
        const size_t off = (size_t)(t->rows[j] * t->width) * es;
        r.param = (char *)t->param + off;
        r.grad = t->rgrad[j];
        for (int k = 0; k < FO_MAX_STATE; k++)
            r.state[k] = t->state[k] != NULL ? (char *)t->state[k] + off : NULL;
        f(&r, 0, t->width, s);
    }
}

/* Thread `part` of `parts` updates the active elements [lo, hi) of the
 * concatenation of active tensors.  Cut points inside a tensor are rounded to
 * FO_ALIGN elements so no two threads write one cache line (FO_QBLOCK in a
 * compact tensor, whose blocks stay whole). */
static void fo_run_part(const fo_plan *plan, int simd, fo_kernel_fn f32, fo_kernel_fn f64,
                        const double *rows, int64_t active, int part, int parts)
{
    const int64_t lo = active / parts * part + active % parts * part / parts;
    const int64_t hi = active / parts * (part + 1) + active % parts * (part + 1) / parts;
    int64_t off = 0;
    for (int32_t i = 0; i < plan->ntensors && off < hi; i++) {
        const fo_tensor *t = &plan->tensors[i];
        const int64_t size = t->grad != NULL ? fo_active_size(t) : 0;
        if (size == 0)
            continue;
        const int64_t end = off + size;
        if (end > lo && t->rows != NULL) {
            /* whole rows: a row goes to the part holding its first element */
            const int64_t a = lo > off ? lo - off : 0, b = hi < end ? hi - off : size;
            fo_run_rows(t, t->dtype == FO_FLOAT32 ? f32 : f64, (a + t->width - 1) / t->width,
                        (b + t->width - 1) / t->width, rows + (int64_t)t->row * FO_NSCALARS);
        } else if (end > lo) {
            /* a compact tensor is cut between its blocks */
            const int64_t align = t->compact ? FO_QBLOCK : FO_ALIGN;
            int64_t a = lo > off ? lo - off : 0;
            int64_t b = hi < end ? hi - off : t->size;
            if (a > 0)
                a -= a % align;
            if (b < t->size)
                b -= b % align;
            if (b > a && t->compact)
                fo_compact_run(simd, t, f32, a, b, rows + (int64_t)t->row * FO_NSCALARS);
            else if (b > a)
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
            active += fo_active_size(&plan->tensors[i]);
    if (active == 0)
        return;
    const int team = fo_team_size(active, fo_costs[kernel], nthreads);
    if (team <= 1) {
        fo_run_part(plan, simd, f32, f64, rows, active, 0, 1);
        fo_note_team(1);
        return;
    }
    int ran = 1;
#ifdef _OPENMP
#pragma omp parallel num_threads(team)
    {
        if (omp_get_thread_num() == 0)
            ran = omp_get_num_threads();
        fo_run_part(plan, simd, f32, f64, rows, active, omp_get_thread_num(),
                    omp_get_num_threads());
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

const void *fo_values(const fo_tensor *t, int which, int64_t b, int64_t n, float *buf)
{
    const int fmt = which == 1 ? t->pfmt : t->gfmt;
    const void *base = which == 1 ? (const void *)t->param : t->grad;
    if (which == 1 && t->master != NULL)
        return t->master + b;
    if (fmt == FO_FMT_NATIVE)
        return (const char *)base + (size_t)b * (t->dtype == FO_FLOAT32 ? sizeof(float)
                                                                        : sizeof(double));
    fo_compact_decode(fmt, (const uint16_t *)base + b, buf, b, n);
    return buf;
}

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

/* The same over a row list's gradients, read as one array in row order. */
#define FO_NORM_SCALED_ROWS_BODY(T)                                          \
    double m = 0.0, s = 0.0;                                                 \
    for (int64_t j = 0; j < t->nrows; j++)                                   \
        for (int64_t i = 0; i < t->width; i++) {                             \
            double a = fabs((double)((const T *)t->rgrad[j])[i]);            \
            if (!(a <= m) && m == m)                                         \
                m = a;                                                       \
        }                                                                    \
    if (m == 0.0 || !(m <= DBL_MAX))                                         \
        return m;                                                            \
    for (int64_t j = 0; j < t->nrows; j++)                                   \
        for (int64_t i = 0; i < t->width; i++) {                             \
            double r = (double)((const T *)t->rgrad[j])[i] / m;              \
            s += r * r;                                                      \
        }                                                                    \
    return m * sqrt(s);

static double fo_norm_scaled_rows_f32(const fo_tensor *t) { FO_NORM_SCALED_ROWS_BODY(float) }
static double fo_norm_scaled_rows_f64(const fo_tensor *t) { FO_NORM_SCALED_ROWS_BODY(double) }

double fo_norm_scaled(const fo_plan *plan, int32_t tensor, int which)
{
    const fo_tensor *t = &plan->tensors[tensor];
    const void *base = which == 1 ? (const void *)t->param : t->grad;
    if (base == NULL)
        return 0.0;
    if (which == 0 && t->rows != NULL)
        return t->dtype == FO_FLOAT32 ? fo_norm_scaled_rows_f32(t) : fo_norm_scaled_rows_f64(t);
    if (which == 1 && t->master != NULL)
        return fo_norm_scaled_f32(t->master, t->size);
    if ((which == 1 ? t->pfmt : t->gfmt) != FO_FMT_NATIVE) {
        /* 16-bit values: their sum of squares cannot overflow a double */
        double s = 0.0;
        for (int64_t b = 0; b < t->size; b += FO_CHUNK) {
            float buf[FO_CHUNK];
            const int64_t n = t->size - b < FO_CHUNK ? t->size - b : FO_CHUNK;
            s += fo_sumsq_f32(fo_values(t, which, b, n, buf), n);
        }
        return sqrt(s);
    }
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
        if (which == 1)
            active += plan->tensors[i].size;
        else if (plan->tensors[i].grad != NULL)
            active += fo_active_size(&plan->tensors[i]);
    return active;
}

/* A row list's gradients are read as one array of nrows*width elements in
 * row order, cut by the tensor's own chunks (there are enough: nrows never
 * exceeds the param's rows), so each chunk's partial result is a fixed
 * function of the rows whichever thread computes it.  Chunk [b, e) of that
 * array, in pieces of at most one row. */
#define FO_ROWS_PIECES(t, b, e, PIECE)                                       \
    do {                                                                     \
        const int64_t nv_ = (t)->nrows * (t)->width;                         \
        const size_t es_ = (t)->dtype == FO_FLOAT32 ? sizeof(float) : sizeof(double); \
        int64_t b_ = (b), e_ = (e) < nv_ ? (e) : nv_;                        \
        while (b_ < e_) {                                                    \
            const int64_t j_ = b_ / (t)->width, o_ = b_ % (t)->width;        \
            const int64_t len = (t)->width - o_ < e_ - b_ ? (t)->width - o_ : e_ - b_; \
            const char *p = (const char *)(t)->rgrad[j_] + (size_t)o_ * es_; \
            PIECE;                                                           \
            b_ += len;                                                       \
        }                                                                    \
    } while (0)

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
        if (base != NULL && which == 0 && t->rows != NULL) {
            FO_ROWS_PIECES(t, ch->begin, ch->end,
                           r += t->dtype == FO_FLOAT32 ? fo_sumsq_f32(p, len)
                                                       : fo_sumsq_f64(p, len));
        } else if (base != NULL) {
            float buf[FO_CHUNK];
            const void *p = fo_values(t, which, ch->begin, ch->end - ch->begin, buf);
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
        /* a row list never reaches a kernel with a reduction pass (the host
         * refuses it): its update depends on the whole tensor */
        if (t->grad != NULL && t->rows == NULL)
            (t->dtype == FO_FLOAT32 ? f32 : f64)(t, ch->begin, ch->end,
                                                 rows + (int64_t)t->row * FO_NSCALARS, acc);
    }
    fo_note_team(ran);
    for (int64_t c = 0; c < nc; c++)
        for (int j = 0; j < FO_NRED; j++)
            out[plan->chunks[c].tensor * FO_NRED + j] += scratch[c * FO_NRED + j];
}

/* ---- the row/column pass of factored kernels ---------------------------- */

int64_t fo_work_size(int64_t size, int64_t rows, int64_t cols)
{
    if (cols <= 0 || rows <= 0 || size == 0)
        return 0;
    const int64_t nrow = size / cols, batch = nrow / rows;
    return nrow + batch * cols + batch;
}

static int64_t fo_rc_blocks(const fo_tensor *t)
{
    return t->frows < FO_RC_BLOCKS ? t->frows : FO_RC_BLOCKS;
}

static int fo_factored(const fo_tensor *t)
{
    return t->fcols > 0 && t->frows > 0 && t->size > 0;
}

int64_t fo_rowcol_scratch(const fo_plan *plan)
{
    int64_t n = 0;
    for (int32_t i = 0; i < plan->ntensors; i++) {
        const fo_tensor *t = &plan->tensors[i];
        if (fo_factored(t))
            n += t->size / (t->frows * t->fcols) * fo_rc_blocks(t) * t->fcols;
    }
    return n;
}

/* Thread `part` of `parts` runs the work items [lo, hi) of fo_step_rowcol,
 * walking the tensors once. */
static void fo_rowcol_part(const fo_plan *plan, fo_rowcol_fn f32, fo_rowcol_fn f64,
                           const double *rows, double *scratch, int64_t nitems, int part,
                           int parts)
{
    const int64_t lo = nitems * part / parts, hi = nitems * (part + 1) / parts;
    int64_t first = 0, off = 0;
    for (int32_t i = 0; i < plan->ntensors && first < hi; i++) {
        const fo_tensor *t = &plan->tensors[i];
        if (!fo_factored(t))
            continue;
        const int64_t nb = fo_rc_blocks(t), n = t->size / (t->frows * t->fcols) * nb;
        for (int64_t it = lo > first ? lo : first; it < first + n && it < hi; it++) {
            const int64_t local = it - first, b = local / nb, blk = local % nb;
            double *col = scratch + off + local * t->fcols;
            for (int64_t j = 0; j < t->fcols; j++)
                col[j] = 0.0;
            if (t->grad == NULL)
                continue;
            const int64_t r0 = b * t->frows + t->frows * blk / nb;
            const int64_t r1 = b * t->frows + t->frows * (blk + 1) / nb;
            (t->dtype == FO_FLOAT32 ? f32 : f64)(t, r0, r1,
                                                 rows + (int64_t)t->row * FO_NSCALARS,
                                                 t->work + r0, col);
        }
        first += n;
        off += n * t->fcols;
    }
}

void fo_step_rowcol(const fo_plan *plan, int32_t kernel, const double *rows, double *scratch,
                    int nthreads)
{
    const fo_kernel_info *k = fo_kernel(kernel);
    const int simd = fo_simd_get();
    const fo_rowcol_fn f32 = k->rowcol[simd][FO_FLOAT32], f64 = k->rowcol[simd][FO_FLOAT64];
    if (f32 == NULL || f64 == NULL)
        return;
    /* Work items: (tensor, matrix, block of rows); their number, their rows
     * and their scratch follow from the shapes alone. */
    int64_t nitems = 0, active = 0;
    for (int32_t i = 0; i < plan->ntensors; i++) {
        const fo_tensor *t = &plan->tensors[i];
        if (fo_factored(t)) {
            nitems += t->size / (t->frows * t->fcols) * fo_rc_blocks(t);
            if (t->grad != NULL)
                active += t->size;
        }
    }
    if (active == 0)
        return;
    const int team = fo_team_size(active, fo_costs[kernel], nthreads);
    (void)team;
#ifdef _OPENMP
#pragma omp parallel num_threads(team) if (team > 1)
    fo_rowcol_part(plan, f32, f64, rows, scratch, nitems, omp_get_thread_num(),
                   omp_get_num_threads());
#else
    fo_rowcol_part(plan, f32, f64, rows, scratch, nitems, 0, 1);
#endif
    int64_t off = 0;
    for (int32_t i = 0; i < plan->ntensors; i++) {
        const fo_tensor *t = &plan->tensors[i];
        if (!fo_factored(t))
            continue;
        const int64_t nb = fo_rc_blocks(t), batch = t->size / (t->frows * t->fcols);
        if (t->grad != NULL) {
            double *colsum = t->work + t->size / t->fcols;
            for (int64_t b = 0; b < batch; b++)
                for (int64_t j = 0; j < t->fcols; j++) {
                    double acc = 0.0;
                    for (int64_t blk = 0; blk < nb; blk++)
                        acc += scratch[off + (b * nb + blk) * t->fcols + j];
                    colsum[b * t->fcols + j] = acc;
                }
            k->fold[t->dtype](t, rows + (int64_t)t->row * FO_NSCALARS);
        }
        off += batch * nb * t->fcols;
    }
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
        if (t->grad != NULL && t->rows != NULL)
            FO_ROWS_PIECES(t, ch->begin, ch->end,
                           r += t->dtype == FO_FLOAT32 ? fo_nonfinite_f32((const float *)p, len)
                                                       : fo_nonfinite_f64((const double *)p, len));
        else if (t->grad != NULL) {
            float buf[FO_CHUNK];
            const void *p = fo_values(t, 0, ch->begin, ch->end - ch->begin, buf);
            r = t->dtype == FO_FLOAT32 ? fo_nonfinite_f32((const float *)p, ch->end - ch->begin)
                                       : fo_nonfinite_f64((const double *)p, ch->end - ch->begin);
        }
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

/* ---- row lists ---------------------------------------------------------- */

#define FO_RADIX_BITS 11

static int64_t fo_idx_at(const void *idx, int idx64, int64_t p)
{
    return idx64 ? ((const int64_t *)idx)[p] : (int64_t)((const int32_t *)idx)[p];
}

#define FO_ROW_ADD(T)                                                        \
    for (int64_t i = 0; i < width; i++)                                      \
        ((T *)dst)[i] = ((T *)dst)[i] + ((const T *)src)[i]

int64_t fo_rows_coalesce(const void *idx, int idx64, int64_t n, int64_t limit,
                         const void *values, int64_t width, int32_t dtype, int64_t *rows,
                         const void **rgrad, void *sums, int64_t *scratch)
{
    const size_t es = dtype == FO_FLOAT32 ? sizeof(float) : sizeof(double);
    const size_t rowbytes = (size_t)width * es;
    int64_t *perm = scratch, *tmp = scratch + n;
    int64_t sorted = 1;
    for (int64_t p = 0; p < n; p++) {
        const int64_t k = fo_idx_at(idx, idx64, p);
        if (k < 0 || k >= limit)
            return -1 - p;
        perm[p] = p;
        if (p > 0 && k <= fo_idx_at(idx, idx64, p - 1))
            sorted = 0;
    }
    /* Stable LSD radix sort of the positions by index: equal indices keep the
     * order in which they were given. */
    int bits = 0;
    while (bits < 63 && ((int64_t)1 << bits) < limit)
        bits++;
    for (int shift = 0; !sorted && shift < bits; shift += FO_RADIX_BITS) {
        int64_t count[1 << FO_RADIX_BITS];
        const int64_t mask = ((int64_t)1 << FO_RADIX_BITS) - 1;
        memset(count, 0, sizeof(count));
        for (int64_t p = 0; p < n; p++)
            count[(fo_idx_at(idx, idx64, perm[p]) >> shift) & mask]++;
        int64_t at = 0;
        for (int64_t d = 0; d <= mask; d++) {
            const int64_t c = count[d];
            count[d] = at;
            at += c;
        }
        for (int64_t p = 0; p < n; p++)
            tmp[count[(fo_idx_at(idx, idx64, perm[p]) >> shift) & mask]++] = perm[p];
        int64_t *swap = perm;
        perm = tmp;
        tmp = swap;
    }
    int64_t nu = 0, nsum = 0;
    for (int64_t a = 0; a < n;) {
        const int64_t k = fo_idx_at(idx, idx64, perm[a]);
        int64_t b = a + 1;
        while (b < n && fo_idx_at(idx, idx64, perm[b]) == k)
            b++;
        const char *first = (const char *)values + (size_t)perm[a] * rowbytes;
        if (b - a == 1) {
            rgrad[nu] = first;
        } else {
            char *dst = (char *)sums + (size_t)nsum++ * rowbytes;
            memcpy(dst, first, rowbytes);
            for (int64_t q = a + 1; q < b; q++) {
                const char *src = (const char *)values + (size_t)perm[q] * rowbytes;
                if (dtype == FO_FLOAT32) {
                    FO_ROW_ADD(float);
                } else {
                    FO_ROW_ADD(double);
                }
            }
            rgrad[nu] = dst;
        }
        rows[nu++] = k;
        a = b;
    }
    return nu;
}
