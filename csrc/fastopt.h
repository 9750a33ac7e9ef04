/*
 * fastopt public C API.
 *
 * The C layer never allocates per step and never fails during a step: every
 * argument is validated by the caller (fastopt/_core.pyx) before a kernel
 * runs.  A kernel updates elements [begin, end) of one tensor, reading the
 * per-step scalars that the host computed in double.
 */
#ifndef FASTOPT_H
#define FASTOPT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FO_MAX_STATE 4      /* state arrays per tensor (Adam+AMSGrad: m, v, vhat) */
#define FO_NSCALARS 16      /* doubles per scalar row */
#define FO_CHUNK 4096       /* elements per work-list chunk (16 KiB of float32) */
#define FO_ALIGN 16         /* thread split points are multiples of this many elements */
#define FO_NRED 2           /* partial sums a reduction pass returns per chunk (Lamb: |w|^2, |r|^2) */
#define FO_QBLOCK 256       /* elements per block of compact storage (one int8 scale each) */
#define FO_QBLOCK_BYTES (4 + FO_QBLOCK)   /* an int8 block: float32 absmax, then the codes */

enum { FO_OK = 0, FO_ENOMEM = 1, FO_EINVAL = 2 };
enum { FO_FLOAT32 = 0, FO_FLOAT64 = 1 };
/* Storage of a param, grad or state array (csrc/compact.c): NATIVE is the
 * tensor's dtype; the others hold float32 values in fewer bytes. */
enum { FO_FMT_NATIVE = 0, FO_FMT_BF16 = 1, FO_FMT_F16 = 2, FO_FMT_Q8S = 3, FO_FMT_Q8U = 4 };
enum { FO_ROUND_NEAREST = 0, FO_ROUND_STOCHASTIC = 1 };
enum { FO_KERAS = 0, FO_TORCH = 1 };     /* whose formulas a kernel's scalars follow */
#define FO_MAX_HP 16        /* hyper-parameters a kernel may read */
enum { FO_SIMD_BASELINE = 0, FO_SIMD_AVX2 = 1, FO_SIMD_AVX512 = 2, FO_SIMD_COUNT = 3 };

/* Scalar slots shared by every kernel.  The gradient each kernel sees is
 *   g' = clamp(g * GSCALE, -CLIP, CLIP) + L2 * w
 * and the parameter is first scaled by DECAY (decoupled weight decay).
 * FLAGS tells whether any of that is needed; kernels specialise on it. */
enum {
    FO_S_FLAGS = 0,     /* bit set of FO_F_* */
    FO_S_GSCALE = 1,    /* maximize (-1), clipping factors, 1/accumulation */
    FO_S_CLIP = 2,      /* clipvalue bound */
    FO_S_L2 = 3,        /* coupled (torch) weight decay */
    FO_S_DECAY = 4,     /* decoupled weight decay factor 1 - lr*wd */
    FO_S_K = 5          /* first kernel-specific slot */
};
enum { FO_F_GSCALE = 1, FO_F_CLIP = 2, FO_F_L2 = 4, FO_F_DECAY = 8 };

typedef struct {
    void *param;
    const void *grad;            /* NULL: this tensor is skipped this step */
    void *state[FO_MAX_STATE];
    int64_t size;
    int32_t dtype;               /* FO_FLOAT32 or FO_FLOAT64 */
    int32_t row;                 /* row of the scalar table used this step */
    /* A row list (the gradient of some rows of a C-contiguous 2-D param, made
     * by fo_rows_coalesce): when rows is not NULL, only the nrows distinct rows
     * rows[j] (each `width` contiguous elements) are updated, row j's gradient
     * read at rgrad[j]; grad is then non-NULL and not read.  The reductions
     * see the rows' gradients as one array of nrows*width elements. */
    const int64_t *rows;
    const void *const *rgrad;
    int64_t nrows;
    int64_t width;
    /* Factored view, for a kernel with a row/column pass (FO_KERNEL_ROWCOL):
     * the tensor as size/(frows*fcols) matrices of frows x fcols (its last two
     * axes).  fcols == 0: not factored (fewer than two axes, or a kernel
     * without the pass); then work is NULL. */
    int64_t frows, fcols;
    double *work;                /* fo_work_size(t) doubles: row sums, column sums,
                                    one value per matrix (see fo_step_rowcol) */
    /* Compact storage (csrc/compact.c).  When `compact` is set the tensor is
     * float32 and every pass runs its float32 body on blocks of FO_QBLOCK
     * elements decoded into float32, then encodes what it wrote: fmt[k] is
     * the storage of state array k, pfmt of the param, gfmt of the grad bound
     * now.  A low-precision param with a master copy is read and written
     * through `master` (float32) and rewritten from it, rounded; without one
     * it is rounded directly.  Roundings that are stochastic draw from a
     * counter-based generator keyed by (key, step, base + element index), so
     * the bits do not depend on threads, SIMD variant or how a param is cut
     * into shards; int8 blocks start at multiples of FO_QBLOCK from element 0
     * of the whole param (base is a multiple of FO_QBLOCK). */
    int8_t compact;
    int8_t fmt[FO_MAX_STATE];
    int8_t pfmt, gfmt;
    int8_t rounding;             /* FO_ROUND_* of a low-precision param */
    float *master;
    uint64_t key;                /* fo_rng_key(seed, index of the param in its optimizer) */
    int64_t base;                /* index of element 0 in the whole param */
    int64_t step;                /* the step applied now */
} fo_tensor;

typedef void (*fo_kernel_fn)(const fo_tensor *t, int64_t begin, int64_t end,
                             const double *s);

/* A reduction pass: updates [begin, end) like a kernel and adds FO_NRED sums
 * over those elements to acc (acc starts at zero for every chunk). */
typedef void (*fo_reduce_fn)(const fo_tensor *t, int64_t begin, int64_t end,
                             const double *s, double *acc);

/* What a kernel's scalar function reads to fill one scalar row: the group's
 * hyper-parameters (in the order the kernel names them), the tensor's 1-based
 * step, the convention, how many state arrays the group uses now (SGD without
 * momentum keeps none), and the tensor's host values (Nadam's momentum product;
 * unused by other kernels).  A kernel with two host values (FO_KERNEL_AUX 2)
 * reads the second as aux2 and writes its new value to *aux2_next. */
typedef struct {
    const double *hp;
    int64_t t;
    int32_t convention;
    int32_t nstate;
    double aux;
    double aux2;
    double *aux2_next;
} fo_ctx;

/* Fills the kernel's slots s[FO_S_K..] in double; returns the host value the
 * tensor keeps if the update is applied. */
typedef double (*fo_scalars_fn)(const fo_ctx *c, double *s);

/* Turns a tensor's row and the FO_NRED sums of the reduction pass into the
 * row of its elementwise pass (Lamb's trust ratio, Adafactor's RMS scaling). */
typedef void (*fo_finish_fn)(const fo_tensor *t, const double *sums, double *s);

/* A row/column pass over the rows [r0, r1) of one matrix of a factored
 * tensor (row indices of its (size/cols) x cols view): stores each row's sum
 * of the kernel's elementwise quantity in rowsum[r - r0] and adds each
 * column's sum to colsum[j] (zero on entry), in element order. */
typedef void (*fo_rowcol_fn)(const fo_tensor *t, int64_t r0, int64_t r1, const double *s,
                             double *rowsum, double *colsum);

/* Turns one factored tensor's row and column sums (in t->work) into its
 * factored state and the one value per matrix its passes read; serial,
 * O(rows + cols) per matrix. */
typedef void (*fo_fold_fn)(const fo_tensor *t, const double *s);

typedef struct {
    const char *name;
    int32_t nstate;                      /* most state arrays the kernel can read */
    const char *hp;                      /* hyper-parameters it reads, space-separated */
    int32_t nhp;
    int32_t has_aux;                     /* host values kept per tensor (0, 1 or 2) */
    fo_scalars_fn scalars_fn;
    fo_finish_fn finish;                 /* NULL unless the kernel has a reduction pass */
    /* State arrays the kernel reads with this scalar row (Adam reads vhat only
     * with amsgrad): the host checks a tensor has them before every step. */
    int32_t (*nstate_used)(const double *s);
    fo_kernel_fn fn[FO_SIMD_COUNT][2];   /* [simd][dtype] */
    fo_reduce_fn reduce[FO_SIMD_COUNT][2];   /* NULL unless the kernel has a reduction pass */
    fo_rowcol_fn rowcol[FO_SIMD_COUNT][2];   /* NULL unless the kernel has a row/column pass */
    fo_fold_fn fold[2];                      /* [dtype]; with the row/column pass */
} fo_kernel_info;

typedef struct {
    int32_t tensor;
    int64_t begin, end;
} fo_chunk;

/* The work list: every tensor cut into chunks of at most FO_CHUNK elements.
 * Built once per optimizer; only grad pointers and rows change per step. */
typedef struct {
    fo_tensor *tensors;
    int32_t ntensors;
    fo_chunk *chunks;
    int64_t nchunks;
    int64_t total;
} fo_plan;

/* Kernel registry, generated from registry.def. */
#define FO_OPT(name, cost) FO_KID_##name,
enum {
#include "registry.def"
    FO_NKERNELS
};
#undef FO_OPT

const fo_kernel_info *fo_kernel(int32_t id);

int fo_plan_init(fo_plan *plan, fo_tensor *tensors, int32_t ntensors);

/* Compact storage (csrc/compact.c). */
uint64_t fo_rng_key(uint64_t seed, uint64_t param_index);
/* Runs the float32 elementwise pass f over [begin, end) of a compact tensor
 * (begin a multiple of FO_QBLOCK) with the SIMD variant simd.  Kernels with a
 * reduction or row/column pass never see compact tensors (the host refuses). */
void fo_compact_run(int simd, const fo_tensor *t, fo_kernel_fn f, int64_t begin, int64_t end,
                    const double *s);
/* Encodes/decodes n float32 values from element `first` of an array of
 * storage fmt (a whole number of blocks for int8 formats; the reference
 * tests use these to model the rounding).  stream picks the draws. */
void fo_compact_encode(int fmt, int rounding, const float *x, void *out, int64_t first, int64_t n,
                       uint64_t key, int64_t step, int stream);
void fo_compact_decode(int fmt, const void *in, float *x, int64_t first, int64_t n);
/* Elements [b, b + n) (n <= FO_CHUNK) of a tensor's grad (which 0) or
 * param (which 1) as an array of its dtype: the memory itself, its float32
 * master copy, or 16-bit values decoded into buf (FO_CHUNK floats). */
const void *fo_values(const fo_tensor *t, int which, int64_t b, int64_t n, float *buf);
void fo_plan_free(fo_plan *plan);

/* One optimizer update over every tensor whose grad is set: a single
 * parallel region (or none, for small work or nthreads <= 1). */
void fo_step(const fo_plan *plan, int32_t kernel, const double *rows, int nthreads);

/* Deterministic per-tensor sum of squares of the grads (or params when
 * which == 1): partial sums per chunk, combined in chunk order, so the result
 * does not depend on the thread count or the SIMD variant.  Tensors without a
 * grad get 0.  out has ntensors doubles; scratch has nchunks doubles. */
void fo_sumsq(const fo_plan *plan, int which, double *out, double *scratch, int nthreads);

/* Norm of one tensor's grad (which == 0) or param (which == 1), computed with
 * scaling so that it is finite whenever the elements are, even where the plain
 * sum of squares overflows a double.  Serial; for the rare overflow case. */
double fo_norm_scaled(const fo_plan *plan, int32_t tensor, int which);

/* The kernel's reduction pass over every tensor whose grad is set (Lamb's
 * first pass: moments, decay and the per-tensor norms its second pass needs).
 * Each chunk's FO_NRED sums are combined per tensor in chunk order, so out
 * (ntensors x FO_NRED doubles, 0 for tensors without a grad) does not depend
 * on the thread count or the SIMD variant.  scratch has FO_NRED*nchunks
 * doubles.  Does nothing for a kernel without a reduction pass. */
void fo_step_reduce(const fo_plan *plan, int32_t kernel, const double *rows, double *out,
                    double *scratch, int nthreads);

/* Blocks of rows per matrix in the row/column pass: each block's column sums
 * are kept apart and added in block order, so the result does not depend on
 * the thread count, and the scratch is at most FO_RC_BLOCKS columns' worth
 * per matrix. */
#define FO_RC_BLOCKS 16

/* Doubles of a factored tensor's work array: one per row of its
 * (size/cols) x cols view, one per column of each matrix, one per matrix. */
int64_t fo_work_size(int64_t size, int64_t rows, int64_t cols);

/* Doubles of scratch fo_step_rowcol needs for this plan. */
int64_t fo_rowcol_scratch(const fo_plan *plan);

/* The kernel's row/column pass over every factored tensor whose grad is set:
 * row sums into t->work[0 .. size/cols), column sums per matrix after them
 * (blocks of rows run in parallel, their column sums combined in block
 * order: the same bits for any thread count), then the kernel's fold per
 * tensor.  Does nothing for a kernel without the pass. */
void fo_step_rowcol(const fo_plan *plan, int32_t kernel, const double *rows, double *scratch,
                    int nthreads);

/* The correctly rounded sum of x[0..n) (as Python's math.fsum), +inf when
 * the exact sum overflows, NaN when any x is NaN. */
double fo_fsum(const double *x, int64_t n);

/* Coalesce the gradient of rows of a 2-D param (width elements per row):
 * idx holds n row indices (int32, or int64 when idx64), in any order, with
 * duplicates; values is n x width in dtype.  Writes the distinct indices in
 * ascending order to rows[0..nu) and, for each, rgrad[j]: its row of values,
 * or for an index given several times the sum of its rows in the order they
 * appear (written to sums, room for (n/2)*width elements).  Serial and in a
 * fixed order: the result does not depend on the thread count.  scratch has
 * 2*n int64.  Returns nu, or -1-p when idx[p] is outside [0, limit) (then
 * nothing but scratch, rows, rgrad and sums was written). */
int64_t fo_rows_coalesce(const void *idx, int idx64, int64_t n, int64_t limit,
                         const void *values, int64_t width, int32_t dtype, int64_t *rows,
                         const void **rgrad, void *sums, int64_t *scratch);

/* Number of non-finite grad elements per tensor (same determinism). */
void fo_count_nonfinite(const fo_plan *plan, int64_t *out, int64_t *scratch, int nthreads);

/* Call once when the library loads: registers the fork handler that makes a
 * child process run serially (libgomp's threads do not survive fork). */
void fo_init(void);

/* Runtime configuration. */
int fo_simd_supported(int level);        /* CPU + OS + build support */
int fo_simd_best(void);
int fo_simd_get(void);
int fo_simd_set(int level);              /* FO_EINVAL if unsupported */
const char *fo_simd_name(int level);
int fo_openmp(void);                     /* built with OpenMP? */
int fo_max_threads(void);                /* omp_get_max_threads() or 1 */
int fo_max_team(void);                   /* most threads a step uses: 4 per processor, at most
                                            OMP_THREAD_LIMIT (1 without OpenMP) */
int fo_team_seen(void);                  /* most threads a driver call ran with since the last call */
int64_t fo_parallel_threshold(void);
void fo_set_parallel_threshold(int64_t n);
int64_t fo_now_ns(void);                 /* a monotonic clock, in nanoseconds */

#ifdef __cplusplus
}
#endif
#endif
