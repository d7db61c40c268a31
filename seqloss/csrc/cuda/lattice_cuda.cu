// CUDA host wrappers of the seqloss lattice ops: argument checks (../checks.h, shared with the CPU
// ops), allocation (lattice_buffers.h), dispatch and launch on the current stream. The kernels live
// in lattice_kernels.cuh, which the tests also compile for the host under an emulation of the CUDA
// thread model (../emulation/); keep device code out of this file.
// Sizes, dtypes and devices are checked on the host; length values on the device (see checks.h): no
// host synchronisation per call.
// Light headers only (no torch/extension.h, no ATen/cuda/CUDAContext.h): compile time.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "../checks.h"
#include "lattice_buffers.h"
#include "lattice_kernels.cuh"

namespace seqloss {
namespace {

void check_cuda(const char* op, const at::Tensor& x, const char* name) {
  TORCH_CHECK_VALUE(x.is_cuda(), op, ": ", name, " must be a CUDA tensor, got ", x.device());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> transducer_lattice_cuda(const at::Tensor& blank_in,
                                                                       const at::Tensor& emit_in,
                                                                       const at::Tensor& frames_in,
                                                                       const at::Tensor& labels_in,
                                                                       bool one_symbol_per_frame) {
  constexpr const char* op = "seqloss::transducer_lattice";
  check_cuda(op, blank_in, "blank");
  checks::check_transducer_inputs(op, blank_in, emit_in, frames_in, labels_in);
  const c10::cuda::CUDAGuard guard(blank_in.device());
  const auto blank = blank_in.contiguous(), emit = emit_in.contiguous();
  const auto frames = frames_in.contiguous(), labels = labels_in.contiguous();
  const int64_t B = blank.size(0), rows = blank.size(1), W = blank.size(2);
  auto out = transducer_lattice_buffers(blank);
  if (B == 0) return {out.log_p, out.alpha, out.beta};
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(blank.scalar_type(), "transducer_lattice_cuda", [&] {
    transducer_lattice_kernel<scalar_t><<<B, threads_for(W), 0, stream>>>(
        blank.data_ptr<scalar_t>(), emit.data_ptr<scalar_t>(), frames.data_ptr<int64_t>(), labels.data_ptr<int64_t>(),
        rows, W, one_symbol_per_frame ? 1 : 0, out.log_p.data_ptr<scalar_t>(), out.alpha.data_ptr<scalar_t>(),
        out.beta.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {out.log_p, out.alpha, out.beta};
}

std::tuple<at::Tensor, at::Tensor> transducer_viterbi_cuda(const at::Tensor& blank_in, const at::Tensor& emit_in,
                                                           const at::Tensor& frames_in, const at::Tensor& labels_in,
                                                           bool one_symbol_per_frame) {
  constexpr const char* op = "seqloss::transducer_viterbi";
  check_cuda(op, blank_in, "blank");
  checks::check_transducer_inputs(op, blank_in, emit_in, frames_in, labels_in);
  const c10::cuda::CUDAGuard guard(blank_in.device());
  const auto blank = blank_in.contiguous(), emit = emit_in.contiguous();
  const auto frames = frames_in.contiguous(), labels = labels_in.contiguous();
  const int64_t B = blank.size(0), rows = blank.size(1), W = blank.size(2);
  auto out = transducer_viterbi_buffers(blank, frames);
  if (B == 0) return {out.score, out.emit_frames};
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(blank.scalar_type(), "transducer_viterbi_cuda", [&] {
    transducer_viterbi_kernel<scalar_t><<<B, threads_for(W), 0, stream>>>(
        blank.data_ptr<scalar_t>(), emit.data_ptr<scalar_t>(), frames.data_ptr<int64_t>(), labels.data_ptr<int64_t>(),
        rows, W, one_symbol_per_frame ? 1 : 0, out.score.data_ptr<scalar_t>(), out.alpha.data_ptr<scalar_t>(),
        out.back.data_ptr<uint8_t>(), out.emit_frames.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {out.score, out.emit_frames};
}

std::tuple<at::Tensor, at::Tensor> ctc_occupancy_cuda(const at::Tensor& e_in, const at::Tensor& ext_in,
                                                      const at::Tensor& target_lengths_in,
                                                      const at::Tensor& input_lengths_in, int64_t blank) {
  constexpr const char* op = "seqloss::ctc_occupancy";
  check_cuda(op, e_in, "e");
  checks::check_ctc_inputs(op, e_in, ext_in, target_lengths_in, input_lengths_in);
  const c10::cuda::CUDAGuard guard(e_in.device());
  const auto e = e_in.contiguous(), ext = ext_in.contiguous();
  const auto target_lengths = target_lengths_in.contiguous(), input_lengths = input_lengths_in.contiguous();
  const int64_t T = e.size(0), B = e.size(1), S = e.size(2);
  auto out = ctc_occupancy_buffers(e);
  if (B == 0) return {out.log_p, out.gamma};
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(e.scalar_type(), "ctc_occupancy_cuda", [&] {
    ctc_occupancy_kernel<scalar_t><<<B, threads_for(S), 0, stream>>>(
        e.data_ptr<scalar_t>(), ext.data_ptr<int64_t>(), target_lengths.data_ptr<int64_t>(),
        input_lengths.data_ptr<int64_t>(), T, B, S, blank, out.log_p.data_ptr<scalar_t>(),
        out.gamma.data_ptr<scalar_t>(), out.rows.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {out.log_p, out.gamma};
}

std::tuple<at::Tensor, at::Tensor> ctc_viterbi_cuda(const at::Tensor& e_in, const at::Tensor& ext_in,
                                                    const at::Tensor& target_lengths_in,
                                                    const at::Tensor& input_lengths_in, int64_t blank) {
  constexpr const char* op = "seqloss::ctc_viterbi";
  check_cuda(op, e_in, "e");
  checks::check_ctc_inputs(op, e_in, ext_in, target_lengths_in, input_lengths_in);
  const c10::cuda::CUDAGuard guard(e_in.device());
  const auto e = e_in.contiguous(), ext = ext_in.contiguous();
  const auto target_lengths = target_lengths_in.contiguous(), input_lengths = input_lengths_in.contiguous();
  const int64_t T = e.size(0), B = e.size(1), S = e.size(2);
  auto out = ctc_viterbi_buffers(e, ext);
  if (B == 0) return {out.score, out.path};
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(e.scalar_type(), "ctc_viterbi_cuda", [&] {
    ctc_viterbi_kernel<scalar_t><<<B, threads_for(S), 0, stream>>>(
        e.data_ptr<scalar_t>(), ext.data_ptr<int64_t>(), target_lengths.data_ptr<int64_t>(),
        input_lengths.data_ptr<int64_t>(), T, B, S, blank, out.score.data_ptr<scalar_t>(),
        out.rows.data_ptr<scalar_t>(), out.back.data_ptr<uint8_t>(), out.path.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {out.score, out.path};
}

}  // namespace

TORCH_LIBRARY_IMPL(seqloss, CUDA, m) {
  m.impl("transducer_lattice", &transducer_lattice_cuda);
  m.impl("transducer_viterbi", &transducer_viterbi_cuda);
  m.impl("ctc_occupancy", &ctc_occupancy_cuda);
  m.impl("ctc_viterbi", &ctc_viterbi_cuda);
}

}  // namespace seqloss
