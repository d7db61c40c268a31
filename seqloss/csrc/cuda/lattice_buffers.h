// Outputs and scratch buffers of each CUDA lattice kernel launch, allocated on the device of the
// (already checked, contiguous) inputs. Shared by the CUDA host wrappers (lattice_cuda.cu) and the
// host emulation of the kernels (../emulation/emulated_ops.cpp), so that the emulated ops return
// exactly the tensors the CUDA ops return. Buffers made with at::empty are written by the kernel
// before they are read (the emulation fills them with NaN first to prove it).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>

namespace seqloss {

// transducer_lattice_kernel: log P (B,), alpha and beta (B, T+1, U+1), every cell written.
struct TransducerLatticeBuffers {
  at::Tensor log_p, alpha, beta;
};

inline TransducerLatticeBuffers transducer_lattice_buffers(const at::Tensor& blank) {
  const int64_t B = blank.size(0), rows = blank.size(1), W = blank.size(2);
  return {at::empty({B}, blank.options()), at::empty({B, rows + 1, W}, blank.options()),
          at::empty({B, rows + 1, W}, blank.options())};
}

// transducer_viterbi_kernel: score (B,), emit_frames (B, U) (-1 where no emit edge is taken),
// scratch alpha and back pointers (B, T+1, U+1).
struct TransducerViterbiBuffers {
  at::Tensor score, emit_frames, alpha, back;
};

inline TransducerViterbiBuffers transducer_viterbi_buffers(const at::Tensor& blank, const at::Tensor& frames) {
  const int64_t B = blank.size(0), rows = blank.size(1), W = blank.size(2);
  return {at::empty({B}, blank.options()), at::full({B, W - 1}, -1, frames.options()),
          at::empty({B, rows + 1, W}, blank.options()), at::empty({B, rows + 1, W}, blank.options().dtype(at::kByte))};
}

// ctc_occupancy_kernel: log P (B,), gamma (T, B, S) (0 outside each utterance), scratch rows (B, 2, S).
struct CtcOccupancyBuffers {
  at::Tensor log_p, gamma, rows;
};

inline CtcOccupancyBuffers ctc_occupancy_buffers(const at::Tensor& e) {
  const int64_t T = e.size(0), B = e.size(1), S = e.size(2);
  return {at::empty({B}, e.options()), at::zeros({T, B, S}, e.options()), at::empty({B, 2, S}, e.options())};
}

// ctc_viterbi_kernel: score (B,), path (B, T) (-1 past each utterance), scratch rows (B, 2, S) and
// back pointers (B, T, S).
struct CtcViterbiBuffers {
  at::Tensor score, path, rows, back;
};

inline CtcViterbiBuffers ctc_viterbi_buffers(const at::Tensor& e, const at::Tensor& ext) {
  const int64_t T = e.size(0), B = e.size(1), S = e.size(2);
  return {at::empty({B}, e.options()), at::full({B, T}, -1, ext.options()), at::empty({B, 2, S}, e.options()),
          at::empty({B, T, S}, e.options().dtype(at::kByte))};
}

}  // namespace seqloss
