// Transparent huge pages for the large outputs of the CPU ops (the dense gradients).
//
// A fresh (B, T, U+1, V) gradient is memory the process has never touched: writing it costs one
// page fault per 4 KiB page, in which the kernel also zeroes the page. For a 160 MB gradient that
// is about 40,000 faults, 70-100 ms on one core: more than the loss's arithmetic. Asking for huge
// pages (madvise MADV_HUGEPAGE) before the first write makes it one fault per 2 MiB page instead
// (about 4x less time for the first write, benchmarks/RESULTS.md). It is a hint: where transparent
// huge pages are disabled ("never") or the kernel has none free, nothing changes but the call.
// SEQLOSS_HUGE_PAGES=0 (read once per process) turns the hint off.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace seqloss {

// Advise huge pages for the 2 MiB-aligned interior of `t`'s storage, if it is large (>= 8 MiB).
inline void advise_huge_pages(const at::Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  static const bool enabled = [] {
    const char* value = std::getenv("SEQLOSS_HUGE_PAGES");
    return value == nullptr || std::strcmp(value, "0") != 0;
  }();
  if (!enabled) return;
  constexpr std::uintptr_t kHuge = std::uintptr_t{1} << 21;
  const auto bytes = static_cast<std::uintptr_t>(t.nbytes());
  if (!t.device().is_cpu() || bytes < 4 * kHuge) return;
  const auto begin = reinterpret_cast<std::uintptr_t>(t.data_ptr());
  const std::uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1);
  const std::uintptr_t last = (begin + bytes) & ~(kHuge - 1);
  if (last > first) (void)madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#else
  (void)t;
#endif
}

}  // namespace seqloss
