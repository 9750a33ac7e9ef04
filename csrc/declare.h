/* Included by a kernel file before its scalar function (see kernel.h): the
 * enums HP_<name> (index into fo_ctx.hp) and S_<name> (slot of the scalar
 * row) from its FO_KERNEL_HP and FO_KERNEL_SCALARS lists. */
#include "kernel.h"

#define FO_KERNEL_FILE FO_STR(kernels/FO_KERNEL_NAME.c)

#define FO_HP_ENUM(x) HP_##x,
#define FO_SLOT_ENUM(x) S_##x,
enum { FO_KERNEL_HP(FO_HP_ENUM) FO_NHP };
enum { S_before_ = FO_S_K - 1, FO_KERNEL_SCALARS(FO_SLOT_ENUM) S_end_ };
_Static_assert(S_end_ <= FO_NSCALARS, "too many scalar slots");
_Static_assert(FO_NHP <= FO_MAX_HP, "too many hyper-parameters");
#undef FO_HP_ENUM
#undef FO_SLOT_ENUM
