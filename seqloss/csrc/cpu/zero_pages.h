// Large outputs that are mostly zero (the dense gradients), allocated as fresh zero pages.
//
// The dense RNN-T gradient is zero on every padded cell (frames t >= T_b, labels u > U_b of each
// utterance). With a ragged batch that is often 30-50 % of a (B, T, U+1, V) tensor of hundreds of MB,
// and writing those zeros costs more than the memset: each untouched 4 KiB page of a fresh large
// allocation takes a page fault on its first write (40,000 faults, 70-100 ms on one core for 160 MB).
// Anonymous memory from mmap is already zero, so an op that allocates its output this way skips the
// padded cells altogether: their pages are never written, never faulted in, and never count towards the
// process's resident memory. Only sizes at or above glibc's largest mmap threshold (32 MiB) are taken this
// way: below it, malloc hands back memory the process has already touched, which is faster to rewrite.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>

#include <cstddef>
#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "huge_pages.h"

namespace seqloss {

struct ZeroPagesOutput {
  at::Tensor tensor;  // contiguous, of the requested sizes and options
  bool zeroed;        // true: every element is already zero (fresh pages); false: uninitialised (at::empty)
};

// An uninitialised contiguous tensor, or, where it is large, one of fresh zero pages (`zeroed` says which).
// Huge pages are advised on it as for any large output (huge_pages.h).
inline ZeroPagesOutput empty_or_zero_pages(at::IntArrayRef sizes, const at::TensorOptions& options) {
#if defined(__linux__)
  constexpr std::size_t kMinBytes = std::size_t{32} << 20;  // glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
  std::size_t bytes = options.dtype().itemsize();
  for (const auto s : sizes) bytes *= static_cast<std::size_t>(s);
  if (options.device().is_cpu() && bytes >= kMinBytes) {
    void* data = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (data != MAP_FAILED) {
      auto tensor = at::from_blob(data, sizes, [bytes](void* p) { munmap(p, bytes); }, options);
      advise_huge_pages(tensor);
      return {tensor, true};
    }
    // out of address space or mappings: fall through to the allocator, which reports the failure
  }
#endif
  auto tensor = at::empty(sizes, options);
  advise_huge_pages(tensor);
  return {tensor, false};
}

}  // namespace seqloss
