/*
 * Memory-traffic floor probe, compiled by bench/run.py at bench time.
 *
 * One pass reads p, g and every state array and writes p and every state
 * array back: the bytes an optimizer kernel with `nstate` state arrays must
 * move, with trivial arithmetic (one multiply-add per array) so that only
 * the traffic is timed.  The split is the engine's: one parallel region,
 * one contiguous part per thread.  The pass is timed inside C so the
 * figure carries no call overhead: it is the floor, not a product.
 */
#include <stdint.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define FLOOR_BODY(T)                                                        \
    const int64_t lo = n / parts * part + n % parts * part / parts;         \
    const int64_t hi = n / parts * (part + 1) + n % parts * (part + 1) / parts; \
    T *restrict w = (T *)p;                                                 \
    const T *restrict gg = (const T *)g;                                    \
    if (nstate == 0) {                                                       \
        for (int64_t i = lo; i < hi; i++) w[i] = w[i] + c * gg[i];           \
    } else if (nstate == 1) {                                                \
        T *restrict s0 = (T *)st[0];                                         \
        for (int64_t i = lo; i < hi; i++) {                                  \
            T a = s0[i] * c + gg[i]; s0[i] = a; w[i] = w[i] - c * a;         \
        }                                                                    \
    } else if (nstate == 2) {                                                \
        T *restrict s0 = (T *)st[0], *restrict s1 = (T *)st[1];              \
        for (int64_t i = lo; i < hi; i++) {                                  \
            T a = s0[i] * c + gg[i]; T b = s1[i] * c + gg[i];                \
            s0[i] = a; s1[i] = b; w[i] = w[i] - c * (a + b);                 \
        }                                                                    \
    } else {                                                                 \
        T *restrict s0 = (T *)st[0], *restrict s1 = (T *)st[1], *restrict s2 = (T *)st[2]; \
        for (int64_t i = lo; i < hi; i++) {                                  \
            T a = s0[i] * c + gg[i]; T b = s1[i] * c + gg[i];                \
            T d = s2[i] * c + gg[i];                                         \
            s0[i] = a; s1[i] = b; s2[i] = d; w[i] = w[i] - c * (a + b + d);  \
        }                                                                    \
    }

static void pass_f32(void *p, const void *g, void **st, int nstate, int64_t n, float c,
                     int part, int parts) { FLOOR_BODY(float) }
static void pass_f64(void *p, const void *g, void **st, int nstate, int64_t n, double c,
                     int part, int parts) { FLOOR_BODY(double) }

static void one_pass(void *p, const void *g, void **st, int nstate, int64_t n, int f64,
                     int nthreads)
{
    /* c is tiny so repeated passes keep the data finite and denormal-free. */
    if (nthreads <= 1) {
        if (f64) pass_f64(p, g, st, nstate, n, 1e-6, 0, 1);
        else pass_f32(p, g, st, nstate, n, 1e-6f, 0, 1);
        return;
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(nthreads)
    {
        int part = omp_get_thread_num(), parts = omp_get_num_threads();
        if (f64) pass_f64(p, g, st, nstate, n, 1e-6, part, parts);
        else pass_f32(p, g, st, nstate, n, 1e-6f, part, parts);
    }
#endif
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* Runs `reps` passes; returns the mean nanoseconds per pass. */
double floor_probe(void *p, const void *g, void **st, int nstate, int64_t n, int f64,
                   int nthreads, int reps)
{
    double t0 = now_ns();
    for (int r = 0; r < reps; r++)
        one_pass(p, g, st, nstate, n, f64, nthreads);
    return (now_ns() - t0) / (reps > 0 ? reps : 1);
}

/* The floor of a lazy row update: the same trivial arithmetic on `nrows`
 * rows of `width` elements, row rows[j] of p and of every state array taking
 * row j of g (the rows distinct and sorted, g already summed per row, as after
 * coalescing).  Each thread updates a contiguous share of the rows, as the
 * engine's row lists do, and the loads of a row start ROWS_AHEAD rows
 * early.  Returns the nanoseconds of one pass. */
#define ROWS_AHEAD 4
static void rows_part(void *p, const void *g, void **st, int nstate, const int64_t *rows,
                      int64_t nrows, int64_t width, int f64, int part, int parts)
{
    const int64_t a = nrows * part / parts, b = nrows * (part + 1) / parts;
    const size_t es = f64 ? sizeof(double) : sizeof(float);
    for (int64_t j = a; j < b; j++) {
#if defined(__GNUC__)
        /* the misses of a row ROWS_AHEAD rows on start before this row's work */
        if (j + ROWS_AHEAD < b) {
            const size_t ahead = (size_t)(rows[j + ROWS_AHEAD] * width) * es;
            for (size_t c = 0; c < (size_t)width * es; c += 64) {
                __builtin_prefetch((char *)p + ahead + c, 1);
                for (int k = 0; k < nstate && k < 3; k++)
                    __builtin_prefetch((char *)st[k] + ahead + c, 1);
            }
        }
#endif
        const size_t off = (size_t)(rows[j] * width) * es;
        void *rs[3];
        for (int k = 0; k < nstate && k < 3; k++)
            rs[k] = (char *)st[k] + off;
        const void *rg = (const char *)g + (size_t)(j * width) * es;
        if (f64) pass_f64((char *)p + off, rg, rs, nstate, width, 1e-6, 0, 1);
        else pass_f32((char *)p + off, rg, rs, nstate, width, 1e-6f, 0, 1);
    }
}

double floor_rows_probe(void *p, const void *g, void **st, int nstate, const int64_t *rows,
                        int64_t nrows, int64_t width, int f64, int nthreads)
{
    double t0 = now_ns();
    if (nthreads <= 1) {
        rows_part(p, g, st, nstate, rows, nrows, width, f64, 0, 1);
    } else {
#ifdef _OPENMP
#pragma omp parallel num_threads(nthreads)
        rows_part(p, g, st, nstate, rows, nrows, width, f64, omp_get_thread_num(),
                  omp_get_num_threads());
#else
        rows_part(p, g, st, nstate, rows, nrows, width, f64, 0, 1);
#endif
    }
    return now_ns() - t0;
}

int floor_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}
