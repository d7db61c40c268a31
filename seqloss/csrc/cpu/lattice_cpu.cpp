// CPU kernels of the seqloss lattice ops: one utterance per task, parallel over the batch
// (at::parallel_for, OpenMP), cells from ../recurrences.h.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <memory>
#include <tuple>
#include <vector>

#include "../checks.h"
#include "../recurrences.h"
#include "zero_pages.h"
#include "kernels.h"

namespace seqloss {
namespace {

// Shapes, dtypes and devices (checks.h, shared with the CUDA ops), then the length values.
void check_lattice_inputs(const char* op, const at::Tensor& blank, const at::Tensor& emit, const at::Tensor& frames,
                          const at::Tensor& labels) {
  checks::check_transducer_inputs(op, blank, emit, frames, labels);
  checks::check_transducer_lengths(op, blank, frames, labels);
}

void check_ctc_inputs(const char* op, const at::Tensor& e, const at::Tensor& ext, const at::Tensor& target_lengths,
                      const at::Tensor& input_lengths) {
  checks::check_ctc_inputs(op, e, ext, target_lengths, input_lengths);
  checks::check_ctc_lengths(op, e, target_lengths, input_lengths);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> transducer_lattice_cpu(const at::Tensor& blank_in,
                                                                      const at::Tensor& emit_in,
                                                                      const at::Tensor& frames_in,
                                                                      const at::Tensor& labels_in,
                                                                      bool one_symbol_per_frame) {
  check_lattice_inputs("seqloss::transducer_lattice", blank_in, emit_in, frames_in, labels_in);
  const auto blank = blank_in.contiguous(), emit = emit_in.contiguous();
  const auto frames = frames_in.contiguous(), labels = labels_in.contiguous();
  const int64_t B = blank.size(0), rows = blank.size(1), W = blank.size(2), delta = one_symbol_per_frame ? 1 : 0;
  auto log_p = at::empty({B}, blank.options());
  auto alpha = at::empty({B, rows + 1, W}, blank.options());
  auto beta = at::empty({B, rows + 1, W}, blank.options());
  AT_DISPATCH_FLOATING_TYPES(blank.scalar_type(), "transducer_lattice_cpu", [&] {
    const scalar_t* bp = blank.data_ptr<scalar_t>();
    const scalar_t* ep = emit.data_ptr<scalar_t>();
    const int64_t* fp = frames.data_ptr<int64_t>();
    const int64_t* lp = labels.data_ptr<int64_t>();
    scalar_t* ap = alpha.data_ptr<scalar_t>();
    scalar_t* betap = beta.data_ptr<scalar_t>();
    scalar_t* out = log_p.data_ptr<scalar_t>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const TransducerGrid<scalar_t> g{bp + b * rows * W, ep + b * rows * (W - 1), rows, W};
        scalar_t* a = ap + b * (rows + 1) * W;
        scalar_t* be = betap + b * (rows + 1) * W;
        for (int64_t t = 0; t <= rows; ++t) {
          for (int64_t u = 0; u < W; ++u) a[t * W + u] = transducer_alpha(g, a, t, u, delta);
        }
        for (int64_t t = rows; t >= 0; --t) {
          for (int64_t u = W - 1; u >= 0; --u) be[t * W + u] = transducer_beta(g, be, t, u, delta, fp[b], lp[b]);
        }
        out[b] = a[fp[b] * W + lp[b]];
      }
    });
  });
  return {log_p, alpha, beta};
}

std::tuple<at::Tensor, at::Tensor> transducer_viterbi_cpu(const at::Tensor& blank_in, const at::Tensor& emit_in,
                                                          const at::Tensor& frames_in, const at::Tensor& labels_in,
                                                          bool one_symbol_per_frame) {
  check_lattice_inputs("seqloss::transducer_viterbi", blank_in, emit_in, frames_in, labels_in);
  const auto blank = blank_in.contiguous(), emit = emit_in.contiguous();
  const auto frames = frames_in.contiguous(), labels = labels_in.contiguous();
  const int64_t B = blank.size(0), rows = blank.size(1), W = blank.size(2), delta = one_symbol_per_frame ? 1 : 0;
  auto score = at::empty({B}, blank.options());
  auto emit_frames = at::full({B, W - 1}, -1, frames.options());
  AT_DISPATCH_FLOATING_TYPES(blank.scalar_type(), "transducer_viterbi_cpu", [&] {
    const scalar_t* bp = blank.data_ptr<scalar_t>();
    const scalar_t* ep = emit.data_ptr<scalar_t>();
    const int64_t* fp = frames.data_ptr<int64_t>();
    const int64_t* lp = labels.data_ptr<int64_t>();
    scalar_t* out = score.data_ptr<scalar_t>();
    int64_t* path = emit_frames.data_ptr<int64_t>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> alpha((rows + 1) * W);
      std::vector<uint8_t> back((rows + 1) * W);
      for (int64_t b = begin; b < end; ++b) {
        const TransducerGrid<scalar_t> g{bp + b * rows * W, ep + b * rows * (W - 1), rows, W};
        for (int64_t t = 0; t <= rows; ++t) {
          for (int64_t u = 0; u < W; ++u) {
            alpha[t * W + u] = transducer_viterbi(g, alpha.data(), t, u, delta, &back[t * W + u]);
          }
        }
        int64_t t = fp[b], u = lp[b];
        out[b] = alpha[t * W + u];
        if (!is_finite(out[b])) continue;
        while (t > 0 || u > 0) {
          if (back[t * W + u]) {
            t -= delta;
            u -= 1;
            path[b * (W - 1) + u] = t;
          } else {
            t -= 1;
          }
        }
      }
    });
  });
  return {score, emit_frames};
}

// The scalar twin of ctc_occupancy_utterance_avx2 (same arguments, same result up to rounding).
template <typename T>
T ctc_occupancy_utterance(const T* e, int64_t e_stride, const int64_t* lab, int64_t frames, int64_t states,
                          int64_t blank, T* gamma, int64_t g_stride, T* work) {
  auto E = [&](int64_t t) { return e + t * e_stride; };
  auto G = [&](int64_t t) { return gamma + t * g_stride; };
  // alpha, stored where gamma goes
  for (int64_t s = 0; s < states; ++s) G(0)[s] = s < 2 ? E(0)[s] : neg_inf<T>();
  for (int64_t t = 1; t < frames; ++t) {
    for (int64_t s = 0; s < states; ++s) G(t)[s] = ctc_alpha(E(t)[s], G(t - 1), s, lab, blank);
  }
  const T total = ctc_log_likelihood(G(frames - 1), states);
  // beta from the last frame back, turning alpha into gamma = exp(alpha + beta - e - log P)
  T* next = work;
  T* cur = work + states + 2;
  for (int64_t t = frames - 1; t >= 0; --t) {
    const T* et = E(t);
    T* g = G(t);
    for (int64_t s = 0; s < states; ++s) {
      cur[s] = t == frames - 1 ? ctc_beta_last(et[s], s, states) : ctc_beta(et[s], next, s, states, lab, blank);
      g[s] = occupancy(g[s] + cur[s] - et[s], total);
    }
    std::swap(cur, next);
  }
  return total;
}

std::tuple<at::Tensor, at::Tensor> ctc_occupancy_cpu(const at::Tensor& e_in, const at::Tensor& ext_in,
                                                     const at::Tensor& target_lengths_in,
                                                     const at::Tensor& input_lengths_in, int64_t blank) {
  check_ctc_inputs("seqloss::ctc_occupancy", e_in, ext_in, target_lengths_in, input_lengths_in);
  const auto e = e_in.contiguous(), ext = ext_in.contiguous();
  const auto target_lengths = target_lengths_in.contiguous(), input_lengths = input_lengths_in.contiguous();
  const int64_t T = e.size(0), B = e.size(1), S = e.size(2);
  auto log_p = at::empty({B}, e.options());
  auto gamma = at::zeros({T, B, S}, e.options());
  AT_DISPATCH_FLOATING_TYPES(e.scalar_type(), "ctc_occupancy_cpu", [&] {
    using T_ = scalar_t;
    const T_* ep = e.data_ptr<T_>();
    const int64_t* xp = ext.data_ptr<int64_t>();
    const int64_t* tl = target_lengths.data_ptr<int64_t>();
    const int64_t* il = input_lengths.data_ptr<int64_t>();
    T_* gp = gamma.data_ptr<T_>();
    T_* out = log_p.data_ptr<T_>();
    const T_ ninf = neg_inf<T_>();
    const bool avx2 = cpu_has_avx2();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      std::vector<T_> work(ctc_work_size(S));
      for (int64_t b = begin; b < end; ++b) {
        const int64_t frames = il[b], states = 2 * tl[b] + 1;
        const int64_t* lab = xp + b * S;
        if (frames == 0) {
          out[b] = tl[b] == 0 ? T_(0) : ninf;
        } else if (avx2) {
          out[b] = ctc_occupancy_utterance_avx2(ep + b * S, B * S, lab, frames, states, blank, gp + b * S, B * S,
                                                work.data());
        } else {
          out[b] =
              ctc_occupancy_utterance(ep + b * S, B * S, lab, frames, states, blank, gp + b * S, B * S, work.data());
        }
      }
    });
  });
  return {log_p, gamma};
}

// ----- the fused CTC loss: ops ctc_loss and ctc_loss_grad, from (T, B, V) log-probs and padded targets --------
// Checks of a ctc_loss / ctc_loss_grad call; targets (B, L) int64, padding past target_lengths ignored.
void check_ctc_loss_inputs(const char* op, const at::Tensor& log_probs, const at::Tensor& targets,
                           const at::Tensor& input_lengths, const at::Tensor& target_lengths, int64_t blank) {
  TORCH_CHECK_VALUE(log_probs.dim() == 3, op, ": log_probs must be (T,B,V), got shape ", log_probs.sizes());
  checks::check_float_scores(op, log_probs, "log_probs");
  TORCH_CHECK_VALUE(log_probs.device().is_cpu(), op, ": log_probs must be on the CPU, got ", log_probs.device());
  const int64_t B = log_probs.size(1), V = log_probs.size(2);
  TORCH_CHECK_TYPE(targets.scalar_type() == at::kLong, op, ": targets must be int64, got ", targets.scalar_type());
  TORCH_CHECK_VALUE(targets.dim() == 2 && targets.size(0) == B, op, ": targets must have shape (", B,
                    ", L) (padded), got ", targets.sizes());
  checks::check_same_device(op, log_probs, "log_probs", targets, "targets");
  checks::check_length_vector(op, input_lengths, "input_lengths", B, log_probs, "log_probs");
  checks::check_length_vector(op, target_lengths, "target_lengths", B, log_probs, "log_probs");
  checks::check_length_values(op, input_lengths, "input_lengths", log_probs.size(0), "T, log_probs.size(0)");
  checks::check_length_values(op, target_lengths, "target_lengths", targets.size(1), "L, targets.size(1)");
  TORCH_CHECK_VALUE(blank >= 0 && blank < V, op, ": blank must be in [0, ", V, ") for ", V, " classes, got ", blank);
  const auto ids = targets.contiguous(), lengths = target_lengths.contiguous();
  const int64_t* yp = ids.data_ptr<int64_t>();
  const int64_t* lp = lengths.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t l = 0; l < lp[b]; ++l) {
      const int64_t y = yp[b * ids.size(1) + l];
      TORCH_CHECK_VALUE(y >= 0 && y < V, op, ": targets[", b, ", ", l, "] = ", y, " must be in [0, ", V, ")");
    }
  }
}

// l' = (blank, y_1, blank, ..., y_L, blank) of one utterance into `lab` (2 L + 1 values).
void extended_labels(const int64_t* y, int64_t labels, int64_t blank, int64_t* lab) {
  for (int64_t l = 0; l < labels; ++l) {
    lab[2 * l] = blank;
    lab[2 * l + 1] = y[l];
  }
  lab[2 * labels] = blank;
}

// log P (B,) and the state occupancies gamma (T, B, 2L+1) = d log P / d e, as ctc_occupancy on the
// emissions of seqloss.scores.ctc_emissions, without building the padded tensor: the e_t(s) =
// log_probs[t, b, l'_s] (t < T_b, s < 2 L_b + 1) of every utterance are gathered in one frame-major pass
// into a block per utterance. An utterance with a NaN or +inf among those scores gets log P and gamma NaN
// (on its frames); gamma is 0 elsewhere.
std::tuple<at::Tensor, at::Tensor> ctc_loss_cpu(const at::Tensor& log_probs_in, const at::Tensor& targets_in,
                                                const at::Tensor& input_lengths_in, const at::Tensor& target_lengths_in,
                                                int64_t blank) {
  const char* op = "seqloss::ctc_loss";
  check_ctc_loss_inputs(op, log_probs_in, targets_in, input_lengths_in, target_lengths_in, blank);
  const auto log_probs = log_probs_in.contiguous(), targets = targets_in.contiguous();
  const auto input_lengths = input_lengths_in.contiguous(), target_lengths = target_lengths_in.contiguous();
  const int64_t T = log_probs.size(0), B = log_probs.size(1), V = log_probs.size(2), S = 2 * targets.size(1) + 1;
  auto log_p = at::empty({B}, log_probs.options());
  auto gamma = at::empty({T, B, S}, log_probs.options());
  AT_DISPATCH_FLOATING_TYPES(log_probs.scalar_type(), "ctc_loss_cpu", [&] {
    using T_ = scalar_t;
    const T_* xp = log_probs.data_ptr<T_>();
    const int64_t* yp = targets.data_ptr<int64_t>();
    const int64_t* il = input_lengths.data_ptr<int64_t>();
    const int64_t* tl = target_lengths.data_ptr<int64_t>();
    T_* gp = gamma.data_ptr<T_>();
    T_* out = log_p.data_ptr<T_>();
    const bool avx2 = cpu_has_avx2();
    // every utterance's emissions e_t(s), gathered in the memory order of log_probs (frame-major): the
    // rows of one utterance are B * V apart, a cache (and, for large B * V, TLB) miss each if read
    // utterance by utterance
    std::vector<int64_t> offset(B + 1, 0), labs(B * S);
    for (int64_t b = 0; b < B; ++b) {
      offset[b + 1] = offset[b] + il[b] * (2 * tl[b] + 1);
      extended_labels(yp + b * targets.size(1), tl[b], blank, labs.data() + b * S);
    }
    std::unique_ptr<T_[]> emissions(new T_[offset[B]]);  // every element is written below
    std::vector<char> bad(B, 0);
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {  // utterances [begin, end), frame by frame
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t b = begin; b < end; ++b) {
          if (t >= il[b]) continue;
          const int64_t states = 2 * tl[b] + 1;
          const T_* row = xp + (t * B + b) * V;
          const int64_t* lab = labs.data() + b * S;
          T_* et = emissions.get() + offset[b] + t * states;
          bool flag = false;
          for (int64_t s = 0; s < states; ++s) {
            et[s] = row[lab[s]];
            flag |= !(et[s] < std::numeric_limits<T_>::infinity());  // NaN or +inf
          }
          bad[b] |= flag;
        }
      }
    });
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      std::vector<T_> work(ctc_work_size(S));
      for (int64_t b = begin; b < end; ++b) {
        const int64_t frames = il[b], states = 2 * tl[b] + 1;
        T_* g = gp + b * S;
        for (int64_t t = 0; t < T; ++t) {  // gamma outside the utterance's cells
          const int64_t from = t < frames ? states : 0;
          std::memset(g + t * B * S + from, 0, (S - from) * sizeof(T_));
        }
        if (frames == 0) {
          out[b] = tl[b] == 0 ? T_(0) : neg_inf<T_>();
          continue;
        }
        if (bad[b]) {
          for (int64_t t = 0; t < frames; ++t) std::fill(g + t * B * S, g + t * B * S + states, T_(NAN));
          out[b] = T_(NAN);
          continue;
        }
        const T_* e = emissions.get() + offset[b];
        const int64_t* lab = labs.data() + b * S;
        out[b] = avx2 ? ctc_occupancy_utterance_avx2(e, states, lab, frames, states, blank, g, B * S, work.data())
                      : ctc_occupancy_utterance(e, states, lab, frames, states, blank, g, B * S, work.data());
      }
    });
  });
  return {log_p, gamma};
}

// grad[t, b, v] = scale[b] sum_{s: l'_s = v} gamma[t, b, s] (scatter-added in the order of s), every row
// written once: rows of frames t >= T_b are zero.
at::Tensor ctc_loss_grad_cpu(const at::Tensor& log_probs, const at::Tensor& targets_in,
                             const at::Tensor& input_lengths_in, const at::Tensor& target_lengths_in,
                             const at::Tensor& gamma_in, const at::Tensor& scale_in, int64_t blank) {
  const char* op = "seqloss::ctc_loss_grad";
  check_ctc_loss_inputs(op, log_probs, targets_in, input_lengths_in, target_lengths_in, blank);
  const int64_t T = log_probs.size(0), B = log_probs.size(1), V = log_probs.size(2), S = 2 * targets_in.size(1) + 1;
  TORCH_CHECK_VALUE(gamma_in.sizes() == at::IntArrayRef({T, B, S}), op, ": gamma must have shape (", T, ", ", B, ", ",
                    S, "), got ", gamma_in.sizes());
  TORCH_CHECK_TYPE(gamma_in.scalar_type() == log_probs.scalar_type(), op, ": gamma must have the dtype of log_probs");
  TORCH_CHECK_VALUE(scale_in.dim() == 1 && scale_in.size(0) == B, op, ": scale must have shape (", B, ",), got ",
                    scale_in.sizes());
  TORCH_CHECK_TYPE(scale_in.scalar_type() == log_probs.scalar_type(), op, ": scale must have the dtype of log_probs");
  const auto targets = targets_in.contiguous(), input_lengths = input_lengths_in.contiguous();
  const auto target_lengths = target_lengths_in.contiguous(), gamma = gamma_in.contiguous();
  const auto scale = scale_in.contiguous();
  const auto output = empty_or_zero_pages({T, B, V}, log_probs.options());
  const at::Tensor& grad = output.tensor;
  const bool zeroed = output.zeroed;
  AT_DISPATCH_FLOATING_TYPES(log_probs.scalar_type(), "ctc_loss_grad_cpu", [&] {
    using T_ = scalar_t;
    const int64_t* yp = targets.data_ptr<int64_t>();
    const int64_t* il = input_lengths.data_ptr<int64_t>();
    const int64_t* tl = target_lengths.data_ptr<int64_t>();
    const T_* gp = gamma.data_ptr<T_>();
    const T_* sp = scale.data_ptr<T_>();
    T_* out = grad.data_ptr<T_>();
    std::vector<int64_t> labs(B * S);  // the extended labels of every utterance
    for (int64_t b = 0; b < B; ++b) extended_labels(yp + b * targets.size(1), tl[b], blank, labs.data() + b * S);
    // frame-major, the order of the (T, B, V) rows in memory
    at::parallel_for(0, T, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        for (int64_t b = 0; b < B; ++b) {
          T_* row = out + (t * B + b) * V;
          if (!zeroed) std::memset(row, 0, V * sizeof(T_));  // a fresh zero-page gradient needs no memset
          if (t >= il[b]) continue;
          const T_* g = gp + (t * B + b) * S;
          const int64_t* lab = labs.data() + b * S;
          for (int64_t s = 0; s < 2 * tl[b] + 1; ++s) row[lab[s]] += g[s] * sp[b];
        }
      }
    });
  });
  return grad;
}

std::tuple<at::Tensor, at::Tensor> ctc_viterbi_cpu(const at::Tensor& e_in, const at::Tensor& ext_in,
                                                   const at::Tensor& target_lengths_in,
                                                   const at::Tensor& input_lengths_in, int64_t blank) {
  check_ctc_inputs("seqloss::ctc_viterbi", e_in, ext_in, target_lengths_in, input_lengths_in);
  const auto e = e_in.contiguous(), ext = ext_in.contiguous();
  const auto target_lengths = target_lengths_in.contiguous(), input_lengths = input_lengths_in.contiguous();
  const int64_t T = e.size(0), B = e.size(1), S = e.size(2);
  auto score = at::empty({B}, e.options());
  auto states_out = at::full({B, T}, -1, ext.options());
  AT_DISPATCH_FLOATING_TYPES(e.scalar_type(), "ctc_viterbi_cpu", [&] {
    using T_ = scalar_t;
    const T_* ep = e.data_ptr<T_>();
    const int64_t* xp = ext.data_ptr<int64_t>();
    const int64_t* tl = target_lengths.data_ptr<int64_t>();
    const int64_t* il = input_lengths.data_ptr<int64_t>();
    int64_t* path = states_out.data_ptr<int64_t>();
    T_* out = score.data_ptr<T_>();
    const T_ ninf = neg_inf<T_>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      std::vector<T_> prev(S), cur(S);
      std::vector<uint8_t> back(T * S);
      for (int64_t b = begin; b < end; ++b) {
        const int64_t frames = il[b], states = 2 * tl[b] + 1;
        const int64_t* lab = xp + b * S;
        if (frames == 0) {
          out[b] = tl[b] == 0 ? T_(0) : ninf;
          continue;
        }
        auto E = [&](int64_t t) { return ep + (t * B + b) * S; };
        for (int64_t s = 0; s < states; ++s) prev[s] = s < 2 ? E(0)[s] : ninf;
        for (int64_t t = 1; t < frames; ++t) {
          const T_* et = E(t);
          for (int64_t s = 0; s < states; ++s) {
            cur[s] = ctc_viterbi(et[s], prev.data(), s, lab, blank, &back[t * S + s]);
          }
          std::swap(prev, cur);
        }
        int64_t s = ctc_viterbi_end(prev.data(), states);
        out[b] = prev[s];
        if (!is_finite(out[b])) continue;
        for (int64_t t = frames - 1; t >= 0; --t) {
          path[b * T + t] = s;
          if (t > 0) s -= back[t * S + s];
        }
      }
    });
  });
  return {score, states_out};
}

// SSNT forward-backward on gathered scores, one utterance per task: the transducer lattice of
// seqloss/ssnt.py (blank = shift r_j(i), emit = token + choose, a zero-score final edge) with the
// chain back to the token and choose log-probs done in the same pass, so that no (B, S, J+1) score
// or marginal tensor is built. token, choose: (B, J, S); returns log P (B,), d log P / d token and
// d log P / d choose (B, J, S), zero outside each utterance.
std::tuple<at::Tensor, at::Tensor, at::Tensor> ssnt_lattice_cpu(const at::Tensor& token_in, const at::Tensor& choose_in,
                                                                const at::Tensor& source_lengths_in,
                                                                const at::Tensor& target_lengths_in) {
  checks::check_ssnt_inputs("seqloss::ssnt_lattice", token_in, choose_in, source_lengths_in, target_lengths_in);
  checks::check_ssnt_lengths("seqloss::ssnt_lattice", token_in, source_lengths_in, target_lengths_in);
  const auto token = token_in.contiguous(), choose = choose_in.contiguous();
  const auto source_lengths = source_lengths_in.contiguous(), target_lengths = target_lengths_in.contiguous();
  const int64_t B = token.size(0), J = token.size(1), S = token.size(2);
  auto log_p = at::empty({B}, token.options());
  auto grad_token = at::zeros({B, J, S}, token.options());
  auto grad_choose = at::zeros({B, J, S}, token.options());
  AT_DISPATCH_FLOATING_TYPES(token.scalar_type(), "ssnt_lattice_cpu", [&] {
    using T_ = scalar_t;
    const T_* tp = token.data_ptr<T_>();
    const T_* cp = choose.data_ptr<T_>();
    const int64_t* sl = source_lengths.data_ptr<int64_t>();
    const int64_t* tl = target_lengths.data_ptr<int64_t>();
    T_* out = log_p.data_ptr<T_>();
    T_* gt = grad_token.data_ptr<T_>();
    T_* gc = grad_choose.data_ptr<T_>();
    const bool avx2 = cpu_has_avx2();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      std::vector<T_> blank, emit, alpha, beta;
      for (int64_t b = begin; b < end; ++b) {
        const int64_t rows = sl[b], labels = tl[b], W = labels + 1;
        const T_* tok = tp + b * J * S;
        const T_* cho = cp + b * J * S;
        T_* gtb = gt + b * J * S;
        T_* gcb = gc + b * J * S;
        if (avx2) {
          out[b] = ssnt_utterance_avx2(tok, cho, S, rows, labels, gtb, gcb);
          continue;
        }
        blank.assign(rows * W, neg_inf<T_>());
        emit.resize(rows * labels);
        alpha.resize((rows + 1) * W);
        beta.resize((rows + 1) * W);
        for (int64_t j = 0; j < labels; ++j) {
          for (int64_t i = 0; i < rows; ++i) {
            const T_ q = cho[j * S + i];
            blank[i * W + j] = log1mexp(q);
            emit[i * labels + j] = tok[j * S + i] + q;
          }
        }
        if (rows > 0) blank[(rows - 1) * W + labels] = T_(0);  // the path ends by emitting on frame S_b - 1
        const TransducerGrid<T_> g{blank.data(), emit.data(), rows, W};
        for (int64_t t = 0; t <= rows; ++t) {
          for (int64_t u = 0; u < W; ++u) alpha[t * W + u] = transducer_alpha(g, alpha.data(), t, u, int64_t(0));
        }
        for (int64_t t = rows; t >= 0; --t) {
          for (int64_t u = W - 1; u >= 0; --u) {
            beta[t * W + u] = transducer_beta(g, beta.data(), t, u, int64_t(0), rows, labels);
          }
        }
        const T_ total = alpha[rows * W + labels];
        out[b] = total;
        for (int64_t j = 0; j < labels; ++j) {
          for (int64_t i = 0; i < rows; ++i) {
            const T_ a = alpha[i * W + j];
            const T_ occ_emit = occupancy(a + emit[i * labels + j] + beta[i * W + j + 1], total);
            const T_ q = cho[j * S + i];
            gtb[j * S + i] = occ_emit;
            gcb[j * S + i] = occ_emit + ssnt_shift_grad(a, q, blank[i * W + j], beta[(i + 1) * W + j], total);
          }
        }
      }
    });
  });
  return {log_p, grad_token, grad_choose};
}

}  // namespace

TORCH_LIBRARY_IMPL(seqloss, CPU, m) {
  m.impl("transducer_lattice", &transducer_lattice_cpu);
  m.impl("transducer_viterbi", &transducer_viterbi_cpu);
  m.impl("ctc_occupancy", &ctc_occupancy_cpu);
  m.impl("ctc_viterbi", &ctc_viterbi_cpu);
  m.impl("ssnt_lattice", &ssnt_lattice_cpu);
  m.impl("ctc_loss", &ctc_loss_cpu);
  m.impl("ctc_loss_grad", &ctc_loss_grad_cpu);
}

}  // namespace seqloss
