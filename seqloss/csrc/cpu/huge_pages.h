// Transparent huge pages for the large outputs of the CPU ops (the dense gradients).
//
// A fresh (B, T, U+1, V) gradient is memory the process has never touched: writing it costs one
// page fault per 4 KiB page, in which the kernel also zeroes the page. For a 160 MB gradient that
// is about 40,000 faults, 70-100 ms on one core: more than the loss's arithmetic. Asking for huge
// pages (madvise MADV_HUGEPAGE) before the first write makes it one fault per 2 MiB page instead.
// Opt-in, with SEQLOSS_HUGE_PAGES=1 (read once per process): measured, it halves the RNN-T call at
// B=8 T=200 U=50 V=500 (163 MB gradient), but in a process that also holds other large buffers it
// made the call at B=4 T=400 U=100 V=1000 (646 MB) 1.5x slower (benchmarks/RESULTS.md). It is a
// hint: where transparent huge pages are disabled ("never"), nothing changes but the call.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace seqloss {

// With SEQLOSS_HUGE_PAGES=1: advise huge pages for the 2 MiB-aligned interior of `t`'s storage,
// if it is large (>= 8 MiB).
inline void advise_huge_pages(const at::Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  static const bool enabled = [] {
    const char* value = std::getenv("SEQLOSS_HUGE_PAGES");
    return value != nullptr && std::strcmp(value, "1") == 0;
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
