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

int floor_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}
