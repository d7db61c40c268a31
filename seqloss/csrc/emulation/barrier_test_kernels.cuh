// Small kernels that exercise the emulated barrier itself (tests/seqloss/test_cuda_emulation.py):
// mode 0 is correct (a neighbour exchange through a barrier), modes 1 and 2 diverge, which the
// emulation must report as an error instead of hanging.
#pragma once

#include <cstdint>

namespace seqloss_emu_tests {

// mode 0: out[x] = x + 1 + (x + 1) % n, i.e. every thread reads its right neighbour's value after a
//         barrier (without the barrier, the reversed order makes thread x read an unwritten value).
// mode 1: odd threads return before the barrier the even threads wait at.
// mode 2: even and odd threads wait at two different __syncthreads() calls.
__global__ void barrier_test_kernel(int64_t mode, int64_t* out) {
  const int64_t x = threadIdx.x, n = blockDim.x;
  out[x] = x + 1;
  if (mode == 1 && x % 2 == 1) return;
  if (mode == 2 && x % 2 == 1) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  const int64_t right = out[(x + 1) % n];
  __syncthreads();
  out[x] += right - 1;
}

}  // namespace seqloss_emu_tests
