// Argument checks of the seqloss custom ops, one implementation for every backend: the CPU kernels
// (cpu/lattice_cpu.cpp), the CUDA host wrappers (cuda/lattice_cuda.cu) and the CUDA emulation
// (emulation/emulated_ops.cpp) call these functions, so a malformed call gets the same error on
// every device. Messages start with the op name and name the offending argument.
//
// Two kinds of check:
//   * check_*_inputs: dimensions, sizes, dtypes and devices, from the tensor metadata only (no data
//     is read, no device synchronisation). Every backend runs them before allocating or launching.
//   * check_*_lengths: the length VALUES (0 <= length <= the tensor dimension). They read the data
//     and run on the CPU backend only, where that costs nothing. The CUDA ops do not copy lengths to
//     the host (that would synchronise the stream on every call); instead each CUDA block checks its
//     own lengths on the device and, if they do not fit, writes NaN to its outputs and returns without
//     touching memory (cuda/lattice_kernels.cuh). The Python losses check lengths before calling an
//     op, so only direct op calls can reach that path.
// Dtype errors raise TypeError, everything else ValueError.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>

namespace seqloss {
namespace checks {

inline void check_float_scores(const char* op, const at::Tensor& x, const char* name) {
  TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op, ": ", name,
                   " must be float32 or float64, got ", x.scalar_type());
}

inline void check_same_device(const char* op, const at::Tensor& ref, const char* ref_name, const at::Tensor& x,
                              const char* name) {
  TORCH_CHECK_VALUE(x.device() == ref.device(), op, ": ", name, " must be on the device of ", ref_name, " (",
                    ref.device(), "), got ", x.device());
}

// An int64 vector of one length per utterance, on the device of `ref`.
inline void check_length_vector(const char* op, const at::Tensor& lengths, const char* name, int64_t batch,
                                const at::Tensor& ref, const char* ref_name) {
  TORCH_CHECK_TYPE(lengths.scalar_type() == at::kLong, op, ": ", name, " must be int64, got ", lengths.scalar_type());
  TORCH_CHECK_VALUE(lengths.dim() == 1 && lengths.size(0) == batch, op, ": ", name, " must have shape (", batch,
                    ",) (one length per utterance), got ", lengths.sizes());
  check_same_device(op, ref, ref_name, lengths, name);
}

// Every value of the int64 CPU vector `lengths` lies in [0, upper]; the message names the first
// utterance that does not.
inline void check_length_values(const char* op, const at::Tensor& lengths, const char* name, int64_t upper,
                                const char* upper_name) {
  TORCH_CHECK_VALUE(lengths.device().is_cpu(), op, ": ", name, " values can only be checked on the CPU");
  const auto contiguous = lengths.contiguous();
  const int64_t* data = contiguous.data_ptr<int64_t>();
  for (int64_t b = 0; b < contiguous.numel(); ++b) {
    TORCH_CHECK_VALUE(data[b] >= 0 && data[b] <= upper, op, ": ", name, "[", b, "] = ", data[b], " must be in [0, ",
                      upper, "] (", upper_name, ")");
  }
}

// Transducer lattice ops: blank (B,T,U+1), emit (B,T,U) float32/float64; frames, labels int64 (B,).
inline void check_transducer_inputs(const char* op, const at::Tensor& blank, const at::Tensor& emit,
                                    const at::Tensor& frames, const at::Tensor& labels) {
  TORCH_CHECK_VALUE(blank.dim() == 3, op, ": blank must be (B,T,U+1), got shape ", blank.sizes());
  TORCH_CHECK_VALUE(emit.dim() == 3 && emit.size(0) == blank.size(0) && emit.size(1) == blank.size(1) &&
                        emit.size(2) + 1 == blank.size(2),
                    op, ": emit must have shape (B,T,U) for blank (B,T,U+1), got ", emit.sizes(), " and ",
                    blank.sizes());
  check_float_scores(op, blank, "blank");
  TORCH_CHECK_TYPE(emit.scalar_type() == blank.scalar_type(), op, ": emit must have the dtype of blank (",
                   blank.scalar_type(), "), got ", emit.scalar_type());
  check_same_device(op, blank, "blank", emit, "emit");
  check_length_vector(op, frames, "frames", blank.size(0), blank, "blank");
  check_length_vector(op, labels, "labels", blank.size(0), blank, "blank");
}

// frames[b] <= T and labels[b] <= U (CPU tensors; after check_transducer_inputs).
inline void check_transducer_lengths(const char* op, const at::Tensor& blank, const at::Tensor& frames,
                                     const at::Tensor& labels) {
  check_length_values(op, frames, "frames", blank.size(1), "T, blank.size(1)");
  check_length_values(op, labels, "labels", blank.size(2) - 1, "U, blank.size(2) - 1");
}

// CTC lattice ops: e (T,B,S) float32/float64, ext (B,S) int64, target_lengths and input_lengths
// int64 (B,).
inline void check_ctc_inputs(const char* op, const at::Tensor& e, const at::Tensor& ext,
                             const at::Tensor& target_lengths, const at::Tensor& input_lengths) {
  TORCH_CHECK_VALUE(e.dim() == 3, op, ": e must be (T,B,S), got shape ", e.sizes());
  TORCH_CHECK_VALUE(ext.dim() == 2 && ext.size(0) == e.size(1) && ext.size(1) == e.size(2), op,
                    ": ext must have shape (B,S) for e (T,B,S), got ", ext.sizes(), " and ", e.sizes());
  TORCH_CHECK_VALUE(e.size(2) >= 1, op, ": e must have at least one state (S >= 1), got shape ", e.sizes());
  check_float_scores(op, e, "e");
  TORCH_CHECK_TYPE(ext.scalar_type() == at::kLong, op, ": ext must be int64, got ", ext.scalar_type());
  check_same_device(op, e, "e", ext, "ext");
  check_length_vector(op, target_lengths, "target_lengths", e.size(1), e, "e");
  check_length_vector(op, input_lengths, "input_lengths", e.size(1), e, "e");
}

// input_lengths[b] <= T and 2 * target_lengths[b] + 1 <= S (CPU tensors; after check_ctc_inputs).
inline void check_ctc_lengths(const char* op, const at::Tensor& e, const at::Tensor& target_lengths,
                              const at::Tensor& input_lengths) {
  check_length_values(op, input_lengths, "input_lengths", e.size(0), "T, e.size(0)");
  check_length_values(op, target_lengths, "target_lengths", (e.size(2) - 1) / 2, "(S - 1) / 2, S = e.size(2)");
}

// SSNT on gathered scores: token and choose (B,J,S) float32/float64; source_lengths, target_lengths
// int64 (B,).
inline void check_ssnt_inputs(const char* op, const at::Tensor& token, const at::Tensor& choose,
                              const at::Tensor& source_lengths, const at::Tensor& target_lengths) {
  TORCH_CHECK_VALUE(token.dim() == 3 && choose.sizes() == token.sizes(), op,
                    ": token and choose must both be (B,J,S), got ", token.sizes(), " and ", choose.sizes());
  check_float_scores(op, token, "token");
  TORCH_CHECK_TYPE(choose.scalar_type() == token.scalar_type(), op, ": choose must have the dtype of token (",
                   token.scalar_type(), "), got ", choose.scalar_type());
  check_same_device(op, token, "token", choose, "choose");
  check_length_vector(op, source_lengths, "source_lengths", token.size(0), token, "token");
  check_length_vector(op, target_lengths, "target_lengths", token.size(0), token, "token");
}

// source_lengths[b] <= S and target_lengths[b] <= J (CPU tensors; after check_ssnt_inputs).
inline void check_ssnt_lengths(const char* op, const at::Tensor& token, const at::Tensor& source_lengths,
                               const at::Tensor& target_lengths) {
  check_length_values(op, source_lengths, "source_lengths", token.size(2), "S, token.size(2)");
  check_length_values(op, target_lengths, "target_lengths", token.size(1), "J, token.size(1)");
}

}  // namespace checks
}  // namespace seqloss
