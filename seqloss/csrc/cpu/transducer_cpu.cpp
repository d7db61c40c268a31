// The fused CPU transducer loss ops (schemas in ../ops.cpp): transducer_loss runs stage 1, the lattice and
// the occupancies of each utterance in one task; transducer_loss_grad (and the in-place
// transducer_loss_grad_) writes the gradient w.r.t. the logits. Dense (B, T, U+1, V) or packed
// (sum_b T_b (U_b+1), V) logits; only the rows of valid cells (t < T_b, u <= U_b) are read, and the
// gradient's padded rows are zeroed with one memset per contiguous block, or, where the gradient is a fresh
// allocation of zero pages (zero_pages.h), never touched at all. Per-utterance kernels:
// cpu/transducer_fused.h, built for AVX2 in cpu/transducer_avx2.cpp and scalar here.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <tuple>
#include <vector>

#include "../checks.h"
#include "../recurrences.h"
#include "kernels.h"
#include "transducer_fused.h"
#include "zero_pages.h"

namespace seqloss {
namespace {

// Shapes, dtypes and length values of a transducer_loss call; returns the first logits row of each
// utterance (B + 1 entries, the last one the row count).
std::vector<int64_t> check_fused_inputs(const char* op, const at::Tensor& logits, const at::Tensor& targets,
                                        const at::Tensor& logit_lengths, const at::Tensor& target_lengths,
                                        int64_t blank, int64_t max_frames, int64_t max_labels) {
  TORCH_CHECK_VALUE(logits.dim() == 4 || logits.dim() == 2, op,
                    ": logits must be dense (B, T, U+1, V) or packed (N, V), got shape ", logits.sizes());
  checks::check_float_scores(op, logits, "logits");
  TORCH_CHECK_VALUE(logits.device().is_cpu(), op, ": logits must be on the CPU, got ", logits.device());
  TORCH_CHECK_TYPE(targets.scalar_type() == at::kLong, op, ": targets must be int64, got ", targets.scalar_type());
  TORCH_CHECK_VALUE(targets.dim() == 2, op, ": targets must be (B, U), got shape ", targets.sizes());
  const int64_t B = targets.size(0), V = logits.size(-1);
  checks::check_same_device(op, logits, "logits", targets, "targets");
  checks::check_length_vector(op, logit_lengths, "logit_lengths", B, logits, "logits");
  checks::check_length_vector(op, target_lengths, "target_lengths", B, logits, "logits");
  TORCH_CHECK_VALUE(blank >= 0 && blank < V, op, ": blank must be in [0, ", V, ") for ", V, " classes, got ", blank);
  TORCH_CHECK_VALUE(max_frames >= 0 && max_labels >= 0, op, ": max_frames and max_labels must be >= 0, got ",
                    max_frames, " and ", max_labels);
  if (logits.dim() == 4) {
    TORCH_CHECK_VALUE(logits.size(0) == B && logits.size(1) == max_frames && logits.size(2) == max_labels + 1, op,
                      ": dense logits must have shape (B, max_frames, max_labels + 1, V) = (", B, ", ", max_frames,
                      ", ", max_labels + 1, ", V), got ", logits.sizes());
  }
  checks::check_length_values(op, logit_lengths, "logit_lengths", max_frames, "max_frames");
  checks::check_length_values(op, target_lengths, "target_lengths", std::min(max_labels, targets.size(1)),
                              "min(max_labels, targets.size(1))");
  const auto frames = logit_lengths.contiguous(), labels = target_lengths.contiguous();
  const auto ids = targets.contiguous();
  const int64_t* fp = frames.data_ptr<int64_t>();
  const int64_t* lp = labels.data_ptr<int64_t>();
  const int64_t* yp = ids.data_ptr<int64_t>();
  std::vector<int64_t> first(B + 1, 0);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t u = 0; u < lp[b]; ++u) {
      const int64_t y = yp[b * ids.size(1) + u];
      TORCH_CHECK_VALUE(y >= 0 && y < V, op, ": targets[", b, ", ", u, "] = ", y, " must be in [0, ", V, ")");
    }
    first[b + 1] = logits.dim() == 4 ? (b + 1) * max_frames * (max_labels + 1) : first[b] + fp[b] * (lp[b] + 1);
  }
  TORCH_CHECK_VALUE(logits.dim() == 4 || first[B] == logits.size(0), op,
                    ": packed logits must have sum_b logit_lengths[b] * (target_lengths[b] + 1) = ", first[B],
                    " rows, got ", logits.size(0));
  return first;
}

template <typename T>
TransducerRows<T> utterance_rows(const T* x, const std::vector<int64_t>& first, bool dense, int64_t width,
                                 int64_t classes, const int64_t* targets, int64_t frames, int64_t labels, int64_t b) {
  return TransducerRows<T>{x + first[b] * classes, dense ? width : labels + 1, classes, targets, frames, labels};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> transducer_loss_cpu(
    const at::Tensor& logits_in, const at::Tensor& targets_in, const at::Tensor& logit_lengths_in,
    const at::Tensor& target_lengths_in, int64_t blank, bool fused_log_softmax, bool one_symbol_per_frame,
    bool final_blank, int64_t max_frames, int64_t max_labels) {
  const char* op = "seqloss::transducer_loss";
  const auto first =
      check_fused_inputs(op, logits_in, targets_in, logit_lengths_in, target_lengths_in, blank, max_frames, max_labels);
  const auto logits = logits_in.contiguous(), targets = targets_in.contiguous();
  const auto frames = logit_lengths_in.contiguous(), labels = target_lengths_in.contiguous();
  const int64_t B = targets.size(0), V = logits.size(-1), W = max_labels + 1;
  const bool dense = logits.dim() == 4;
  auto log_p = at::empty({B}, logits.options());
  auto lse = at::zeros({B, max_frames, W}, logits.options());
  auto occ_blank = at::zeros({B, max_frames, W}, logits.options());
  auto occ_emit = at::zeros({B, max_frames, W}, logits.options());
  const TransducerOptions options{blank, fused_log_softmax, one_symbol_per_frame ? 1 : 0, final_blank};
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "transducer_loss_cpu", [&] {
    const scalar_t* x = logits.data_ptr<scalar_t>();
    const int64_t* yp = targets.data_ptr<int64_t>();
    const int64_t* fp = frames.data_ptr<int64_t>();
    const int64_t* lp = labels.data_ptr<int64_t>();
    scalar_t* out = log_p.data_ptr<scalar_t>();
    scalar_t* lse_p = lse.data_ptr<scalar_t>();
    scalar_t* ob_p = occ_blank.data_ptr<scalar_t>();
    scalar_t* oe_p = occ_emit.data_ptr<scalar_t>();
    const bool avx2 = cpu_has_avx2();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> work;
      for (int64_t b = begin; b < end; ++b) {
        const auto rows = utterance_rows(x, first, dense, W, V, yp + b * targets.size(1), fp[b], lp[b], b);
        const int64_t grid = b * max_frames * W;
        const TransducerGrids<scalar_t> grids{lse_p + grid, ob_p + grid, oe_p + grid, W};
        work.resize(transducer_work_size(fp[b], lp[b]));
        out[b] = avx2 ? transducer_forward_avx2(rows, options, grids, work.data())
                      : transducer_forward<ScalarLanes<scalar_t>>(rows, options, grids, work.data());
      }
    });
  });
  return {log_p, lse, occ_blank, occ_emit};
}

// The gradient into `grad` (the logits' layout; may be the logits themselves).
void transducer_loss_grad_into(const char* op, const at::Tensor& grad, const at::Tensor& logits,
                               const at::Tensor& targets_in, const at::Tensor& logit_lengths_in,
                               const at::Tensor& target_lengths_in, const at::Tensor& lse_in,
                               const at::Tensor& occ_blank_in, const at::Tensor& occ_emit_in,
                               const at::Tensor& scale_in, int64_t blank, double clamp, bool fused_log_softmax,
                               bool grad_zeroed) {
  const int64_t max_frames = lse_in.dim() == 3 ? lse_in.size(1) : -1, W = lse_in.dim() == 3 ? lse_in.size(2) : 0;
  TORCH_CHECK_VALUE(lse_in.dim() == 3 && W >= 1, op, ": lse must be (B, T, U+1), got shape ", lse_in.sizes());
  const auto first =
      check_fused_inputs(op, logits, targets_in, logit_lengths_in, target_lengths_in, blank, max_frames, W - 1);
  const int64_t B = targets_in.size(0), V = logits.size(-1);
  for (const auto& [tensor, name] :
       {std::pair{&lse_in, "lse"}, std::pair{&occ_blank_in, "occ_blank"}, std::pair{&occ_emit_in, "occ_emit"}}) {
    TORCH_CHECK_VALUE(tensor->sizes() == at::IntArrayRef({B, max_frames, W}), op, ": ", name, " must have shape (", B,
                      ", ", max_frames, ", ", W, "), got ", tensor->sizes());
    TORCH_CHECK_TYPE(tensor->scalar_type() == logits.scalar_type(), op, ": ", name, " must have the dtype of logits (",
                     logits.scalar_type(), "), got ", tensor->scalar_type());
  }
  TORCH_CHECK_VALUE(scale_in.dim() == 1 && scale_in.size(0) == B, op, ": scale must have shape (", B, ",), got ",
                    scale_in.sizes());
  TORCH_CHECK_TYPE(scale_in.scalar_type() == logits.scalar_type(), op, ": scale must have the dtype of logits");
  TORCH_CHECK_VALUE(grad.is_contiguous(), op, ": the gradient buffer must be contiguous");
  const auto targets = targets_in.contiguous(), frames = logit_lengths_in.contiguous();
  const auto labels = target_lengths_in.contiguous(), lse = lse_in.contiguous();
  const auto occ_blank = occ_blank_in.contiguous(), occ_emit = occ_emit_in.contiguous();
  const auto scale = scale_in.contiguous();
  const bool dense = logits.dim() == 4;
  const TransducerOptions options{blank, fused_log_softmax, 0, true};
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "transducer_loss_grad_cpu", [&] {
    const scalar_t* x = logits.data_ptr<scalar_t>();
    scalar_t* g = grad.data_ptr<scalar_t>();
    const int64_t* yp = targets.data_ptr<int64_t>();
    const int64_t* fp = frames.data_ptr<int64_t>();
    const int64_t* lp = labels.data_ptr<int64_t>();
    const scalar_t* lse_p = lse.data_ptr<scalar_t>();
    const scalar_t* ob_p = occ_blank.data_ptr<scalar_t>();
    const scalar_t* oe_p = occ_emit.data_ptr<scalar_t>();
    const scalar_t* sp = scale.data_ptr<scalar_t>();
    const bool avx2 = cpu_has_avx2();
    const auto cut = static_cast<scalar_t>(clamp);
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const auto rows = utterance_rows(x, first, dense, W, V, yp + b * targets.size(1), fp[b], lp[b], b);
        const int64_t grid = b * max_frames * W;
        const TransducerGrids<scalar_t> grids{const_cast<scalar_t*>(lse_p) + grid, const_cast<scalar_t*>(ob_p) + grid,
                                              const_cast<scalar_t*>(oe_p) + grid, W};
        scalar_t* gb = g + first[b] * V;
        if (avx2) {
          transducer_backward_avx2(rows, options, cut, sp[b], grids, gb);
        } else {
          transducer_backward<ScalarLanes<scalar_t>>(rows, options, cut, sp[b], grids, gb);
        }
        if (!dense || grad_zeroed) continue;
        // padded rows of the dense grid: u > U_b on each valid frame, then every row of the frames t >= T_b
        const int64_t tail = (W - 1 - lp[b]) * V;
        for (int64_t t = 0; t < fp[b] && tail > 0; ++t) {
          std::memset(gb + (t * W + lp[b] + 1) * V, 0, tail * sizeof(scalar_t));
        }
        std::memset(gb + fp[b] * W * V, 0, (max_frames - fp[b]) * W * V * sizeof(scalar_t));
      }
    });
  });
}

at::Tensor transducer_loss_grad_cpu(const at::Tensor& logits_in, const at::Tensor& targets,
                                    const at::Tensor& logit_lengths, const at::Tensor& target_lengths,
                                    const at::Tensor& lse, const at::Tensor& occ_blank, const at::Tensor& occ_emit,
                                    const at::Tensor& scale, int64_t blank, double clamp, bool fused_log_softmax) {
  const auto logits = logits_in.contiguous();
  // padded cells of a fresh zero-page gradient are left as they are: zero, and never faulted in
  const auto output = empty_or_zero_pages(logits.sizes(), logits.options());
  const at::Tensor& grad = output.tensor;
  transducer_loss_grad_into("seqloss::transducer_loss_grad", grad, logits, targets, logit_lengths, target_lengths, lse,
                            occ_blank, occ_emit, scale, blank, clamp, fused_log_softmax, output.zeroed);
  return grad;
}

void transducer_loss_grad_inplace_cpu(const at::Tensor& logits, const at::Tensor& targets,
                                      const at::Tensor& logit_lengths, const at::Tensor& target_lengths,
                                      const at::Tensor& lse, const at::Tensor& occ_blank, const at::Tensor& occ_emit,
                                      const at::Tensor& scale, int64_t blank, double clamp, bool fused_log_softmax) {
  const char* op = "seqloss::transducer_loss_grad_";
  TORCH_CHECK_VALUE(logits.is_contiguous(), op, ": logits must be contiguous (the gradient is written over them)");
  transducer_loss_grad_into(op, logits, logits, targets, logit_lengths, target_lengths, lse, occ_blank, occ_emit, scale,
                            blank, clamp, fused_log_softmax, /*grad_zeroed=*/false);
}

}  // namespace

TORCH_LIBRARY_IMPL(seqloss, CPU, m) {
  m.impl("transducer_loss", &transducer_loss_cpu);
  m.impl("transducer_loss_grad", &transducer_loss_grad_cpu);
  m.impl("transducer_loss_grad_", &transducer_loss_grad_inplace_cpu);
}

}  // namespace seqloss
