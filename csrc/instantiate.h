/* Included by a kernel file (see kernel.h): instantiates its body for every
 * dtype and SIMD variant and defines its registry entry fo_kernel_<name>. */
#include "kernel.h"

#define FO_T float
#define FO_DT f32
#define FO_SQRT sqrtf
#define FO_FABS fabsf
#define FO_POW powf
#define FO_FMA fmaf
#define FO_EPSILON FLT_EPSILON
#include "variants.h"
#undef FO_T
#undef FO_DT
#undef FO_SQRT
#undef FO_FABS
#undef FO_POW
#undef FO_FMA
#undef FO_EPSILON

#define FO_T double
#define FO_DT f64
#define FO_SQRT sqrt
#define FO_FABS fabs
#define FO_POW pow
#define FO_FMA fma
#define FO_EPSILON DBL_EPSILON
#include "variants.h"
#undef FO_T
#undef FO_DT
#undef FO_SQRT
#undef FO_FABS
#undef FO_POW
#undef FO_FMA
#undef FO_EPSILON

#define FO_ENTRY_(name, dt, var) fo_k_##name##_##dt##_##var
#define FO_ENTRY(name, dt, var) FO_ENTRY_(name, dt, var)

#if FO_X86_VARIANTS
#define FO_X86_ENTRY(dt, var) FO_ENTRY(FO_KERNEL_NAME, dt, var)
#else
#define FO_X86_ENTRY(dt, var) FO_ENTRY(FO_KERNEL_NAME, dt, baseline)
#endif

#ifdef FO_KERNEL_REDUCE
#define FO_RENTRY_(name, dt, var) fo_kr_##name##_##dt##_##var
#define FO_RENTRY(name, dt, var) FO_RENTRY_(name, dt, var)
#if FO_X86_VARIANTS
#define FO_X86_RENTRY(dt, var) FO_RENTRY(FO_KERNEL_NAME, dt, var)
#else
#define FO_X86_RENTRY(dt, var) FO_RENTRY(FO_KERNEL_NAME, dt, baseline)
#endif
#define FO_REDUCE_TABLE                                                          \
    {                                                                            \
        {FO_RENTRY(FO_KERNEL_NAME, f32, baseline), FO_RENTRY(FO_KERNEL_NAME, f64, baseline)}, \
        {FO_X86_RENTRY(f32, avx2), FO_X86_RENTRY(f64, avx2)},                     \
        {FO_X86_RENTRY(f32, avx512), FO_X86_RENTRY(f64, avx512)},                 \
    }
#else
#define FO_REDUCE_TABLE {{NULL, NULL}, {NULL, NULL}, {NULL, NULL}}
#endif

/* A kernel whose state depends on its scalars defines FO_KERNEL_NSTATE_USED(s). */
#ifndef FO_KERNEL_NSTATE_USED
#define FO_KERNEL_NSTATE_USED(s) ((void)(s), FO_KERNEL_NSTATE)
#endif
static int32_t FO_CAT(fo_nstate_used_, FO_KERNEL_NAME)(const double *s)
{
    return (int32_t)(FO_KERNEL_NSTATE_USED(s));
}

#ifdef FO_KERNEL_ROWCOL
#define FO_CENTRY_(name, dt, var) fo_kc_##name##_##dt##_##var
#define FO_CENTRY(name, dt, var) FO_CENTRY_(name, dt, var)
#if FO_X86_VARIANTS
#define FO_X86_CENTRY(dt, var) FO_CENTRY(FO_KERNEL_NAME, dt, var)
#else
#define FO_X86_CENTRY(dt, var) FO_CENTRY(FO_KERNEL_NAME, dt, baseline)
#endif
#define FO_ROWCOL_TABLE                                                          \
    {                                                                            \
        {FO_CENTRY(FO_KERNEL_NAME, f32, baseline), FO_CENTRY(FO_KERNEL_NAME, f64, baseline)}, \
        {FO_X86_CENTRY(f32, avx2), FO_X86_CENTRY(f64, avx2)},                     \
        {FO_X86_CENTRY(f32, avx512), FO_X86_CENTRY(f64, avx512)},                 \
    }
#define FO_FENTRY_(name, dt) fo_kf_##name##_##dt##_baseline
#define FO_FENTRY(name, dt) FO_FENTRY_(name, dt)
#define FO_FOLD_TABLE {FO_FENTRY(FO_KERNEL_NAME, f32), FO_FENTRY(FO_KERNEL_NAME, f64)}
#else
#define FO_ROWCOL_TABLE {{NULL, NULL}, {NULL, NULL}, {NULL, NULL}}
#define FO_FOLD_TABLE {NULL, NULL}
#endif

#ifndef FO_KERNEL_FINISH
#define FO_KERNEL_FINISH NULL
#endif
#ifndef FO_KERNEL_AUX
#define FO_KERNEL_AUX 0
#endif
#define FO_NAME_STR(x) #x " "

const fo_kernel_info FO_CAT(fo_kernel_, FO_KERNEL_NAME) = {
    FO_STR(FO_KERNEL_NAME), FO_KERNEL_NSTATE,
    FO_KERNEL_HP(FO_NAME_STR), FO_NHP, FO_KERNEL_AUX,
    FO_KERNEL_SCALARS_FN, FO_KERNEL_FINISH,
    FO_CAT(fo_nstate_used_, FO_KERNEL_NAME),
    {
        {FO_ENTRY(FO_KERNEL_NAME, f32, baseline), FO_ENTRY(FO_KERNEL_NAME, f64, baseline)},
        {FO_X86_ENTRY(f32, avx2), FO_X86_ENTRY(f64, avx2)},
        {FO_X86_ENTRY(f32, avx512), FO_X86_ENTRY(f64, avx512)},
    },
    FO_REDUCE_TABLE,
    FO_ROWCOL_TABLE,
    FO_FOLD_TABLE,
};
