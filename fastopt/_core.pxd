# Mirror of csrc/fastopt.h: the one C API shared by C users and Cython.
from libc.stdint cimport int8_t, int32_t, int64_t, uint64_t

cdef extern from "fastopt.h" nogil:
    enum:
        FO_MAX_STATE
        FO_NSCALARS
        FO_CHUNK
        FO_NRED
        FO_QBLOCK
        FO_QBLOCK_BYTES
        FO_FMT_NATIVE
        FO_FMT_BF16
        FO_FMT_F16
        FO_FMT_Q8S
        FO_FMT_Q8U
        FO_ROUND_NEAREST
        FO_ROUND_STOCHASTIC
        FO_OK
        FO_ENOMEM
        FO_EINVAL
        FO_FLOAT32
        FO_FLOAT64
        FO_SIMD_BASELINE
        FO_SIMD_AVX2
        FO_SIMD_AVX512
        FO_SIMD_COUNT
        FO_NKERNELS
        FO_KERAS
        FO_TORCH
        FO_MAX_HP
        FO_S_FLAGS
        FO_S_GSCALE
        FO_S_CLIP
        FO_S_L2
        FO_S_DECAY
        FO_S_K
        FO_F_GSCALE
        FO_F_CLIP
        FO_F_L2
        FO_F_DECAY

    ctypedef struct fo_tensor:
        void *param
        const void *grad
        void *state[FO_MAX_STATE]
        int64_t size
        int32_t dtype
        int32_t row
        const int64_t *rows
        const void *const *rgrad
        int64_t nrows
        int64_t width
        int64_t frows
        int64_t fcols
        double *work
        int8_t compact
        int8_t fmt[FO_MAX_STATE]
        int8_t pfmt
        int8_t gfmt
        int8_t rounding
        float *master
        uint64_t key
        int64_t base
        int64_t step

    ctypedef struct fo_ctx:
        const double *hp
        int64_t t
        int32_t convention
        int32_t nstate
        double aux
        double aux2
        double *aux2_next

    ctypedef double (*fo_scalars_fn)(const fo_ctx *c, double *s)
    ctypedef void (*fo_finish_fn)(const fo_tensor *t, const double *sums, double *s)

    ctypedef struct fo_kernel_info:
        const char *name
        int32_t nstate
        const char *hp
        int32_t nhp
        int32_t has_aux
        fo_scalars_fn scalars_fn
        fo_finish_fn finish
        int32_t (*nstate_used)(const double *s)
        void *reduce[FO_SIMD_COUNT][2]
        void *rowcol[FO_SIMD_COUNT][2]

    ctypedef struct fo_plan:
        fo_tensor *tensors
        int32_t ntensors
        int64_t nchunks
        int64_t total

    const fo_kernel_info *fo_kernel(int32_t id)
    int fo_plan_init(fo_plan *plan, fo_tensor *tensors, int32_t ntensors)
    void fo_plan_free(fo_plan *plan)
    uint64_t fo_rng_key(uint64_t seed, uint64_t param_index)
    void fo_compact_encode(int fmt, int rounding, const float *x, void *out, int64_t first,
                           int64_t n, uint64_t key, int64_t step, int stream)
    void fo_compact_decode(int fmt, const void *inp, float *x, int64_t first, int64_t n)
    const void *fo_values(const fo_tensor *t, int which, int64_t b, int64_t n, float *buf)
    void fo_step(const fo_plan *plan, int32_t kernel, const double *rows, int nthreads)
    void fo_step_reduce(const fo_plan *plan, int32_t kernel, const double *rows, double *out,
                        double *scratch, int nthreads)
    void fo_sumsq(const fo_plan *plan, int which, double *out, double *scratch, int nthreads)
    double fo_norm_scaled(const fo_plan *plan, int32_t tensor, int which)
    void fo_init()
    int64_t fo_work_size(int64_t size, int64_t rows, int64_t cols)
    int64_t fo_rowcol_scratch(const fo_plan *plan)
    void fo_step_rowcol(const fo_plan *plan, int32_t kernel, const double *rows, double *scratch,
                        int nthreads)
    double fo_fsum(const double *x, int64_t n)
    int64_t fo_rows_coalesce(const void *idx, int idx64, int64_t n, int64_t limit,
                             const void *values, int64_t width, int32_t dtype, int64_t *rows,
                             const void **rgrad, void *sums, int64_t *scratch)
    void fo_count_nonfinite(const fo_plan *plan, int64_t *out, int64_t *scratch, int nthreads)
    int fo_simd_supported(int level)
    int fo_simd_best()
    int fo_simd_get()
    int fo_simd_set(int level)
    const char *fo_simd_name(int level)
    int fo_openmp()
    int fo_max_threads()
    int fo_max_team()
    int fo_team_seen()
    int64_t fo_parallel_threshold()
    void fo_set_parallel_threshold(int64_t n)
    int64_t fo_now_ns()
