// The recurrences and the AVX2 vector type, for a translation unit compiled for AVX2: include right
// after `#pragma GCC push_options` / `#pragma GCC target("avx2,fma")`. Everything lands in the
// namespace seqloss_avx2, so that no AVX2 copy of an inline function can stand in for the baseline
// one of the other translation units at link time. No include guard: one inclusion per such file.
#include <immintrin.h>

namespace seqloss_avx2 {
#include "vec_ops.h"
#include "../recurrences.h"
}  // namespace seqloss_avx2
