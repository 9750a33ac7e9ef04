/* One dtype (FO_T, FO_DT bound by instantiate.h), every SIMD variant. */
#define FO_VAR baseline
#include FO_KERNEL_FILE
#undef FO_VAR

#if FO_X86_VARIANTS
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define FO_VAR avx2
#include FO_KERNEL_FILE
#undef FO_VAR
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,prefer-vector-width=512")
#define FO_VAR avx512
#include FO_KERNEL_FILE
#undef FO_VAR
#pragma GCC pop_options
#endif
