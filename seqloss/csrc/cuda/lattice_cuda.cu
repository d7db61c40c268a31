// CUDA kernels of the seqloss lattice ops: one thread block per utterance, threads over the label
// axis (u, or the CTC state s), a __syncthreads() between anti-diagonals (RNN-T, SSNT) or frames
// (CTC, one-symbol-per-frame transducers). Cells come from ../recurrences.h, as on the CPU.
// Every size a kernel needs is read on the device: no host synchronisation per call.
// Light headers only (no torch/extension.h, no ATen/cuda/CUDAContext.h): compile time.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "../recurrences.h"

namespace seqloss {
namespace {

int threads_for(int64_t width) {
  const int64_t warps = (width + 31) / 32;
  return static_cast<int>(warps > 16 ? 512 : warps * 32);
}

void check_cuda(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.is_cuda(), name, " must be a CUDA tensor");
}

// Visit the cells of the (T+1, U+1) grid in an order that respects the dependencies of alpha
// (forward = true) or beta: by anti-diagonal n = t + u for delta = 0, by frame for delta = 1.
template <typename F>
__device__ void for_each_wavefront(int64_t rows, int64_t width, int64_t delta, bool forward, F cell) {
  const int64_t steps = delta ? rows + 1 : rows + width;
  for (int64_t k = 0; k < steps; ++k) {
    const int64_t n = forward ? k : steps - 1 - k;
    for (int64_t u = threadIdx.x; u < width; u += blockDim.x) {
      const int64_t t = delta ? n : n - u;
      if (t >= 0 && t <= rows) cell(t, u);
    }
    __syncthreads();
  }
}

template <typename T>
__global__ void transducer_lattice_kernel(const T* blank, const T* emit, const int64_t* frames, const int64_t* labels,
                                          int64_t rows, int64_t width, int64_t delta, T* log_p, T* alpha, T* beta) {
  const int64_t b = blockIdx.x;
  const TransducerGrid<T> g{blank + b * rows * width, emit + b * rows * (width - 1), rows, width};
  T* a = alpha + b * (rows + 1) * width;
  T* be = beta + b * (rows + 1) * width;
  const int64_t fr = frames[b], lab = labels[b];
  for_each_wavefront(rows, width, delta, true,
                     [&](int64_t t, int64_t u) { a[t * width + u] = transducer_alpha(g, a, t, u, delta); });
  for_each_wavefront(rows, width, delta, false, [&](int64_t t, int64_t u) {
    be[t * width + u] = transducer_beta(g, be, t, u, delta, fr, lab);
  });
  if (threadIdx.x == 0) log_p[b] = a[fr * width + lab];
}

template <typename T>
__global__ void transducer_viterbi_kernel(const T* blank, const T* emit, const int64_t* frames, const int64_t* labels,
                                          int64_t rows, int64_t width, int64_t delta, T* score, T* alpha,
                                          uint8_t* back, int64_t* emit_frames) {
  const int64_t b = blockIdx.x;
  const TransducerGrid<T> g{blank + b * rows * width, emit + b * rows * (width - 1), rows, width};
  T* a = alpha + b * (rows + 1) * width;
  uint8_t* bk = back + b * (rows + 1) * width;
  for_each_wavefront(rows, width, delta, true, [&](int64_t t, int64_t u) {
    a[t * width + u] = transducer_viterbi(g, a, t, u, delta, &bk[t * width + u]);
  });
  if (threadIdx.x != 0) return;
  int64_t t = frames[b], u = labels[b];
  score[b] = a[t * width + u];
  if (!is_finite(score[b])) return;
  while (t > 0 || u > 0) {
    if (bk[t * width + u]) {
      t -= delta;
      u -= 1;
      emit_frames[b * (width - 1) + u] = t;
    } else {
      t -= 1;
    }
  }
}

// alpha into gamma, log P, then beta (two rows of `rows_buf`) turning alpha into gamma.
template <typename T>
__global__ void ctc_occupancy_kernel(const T* e, const int64_t* ext, const int64_t* target_lengths,
                                     const int64_t* input_lengths, int64_t num_frames, int64_t batch,
                                     int64_t num_states, int64_t blank, T* log_p, T* gamma, T* rows_buf) {
  const int64_t b = blockIdx.x;
  const int64_t frames = input_lengths[b], states = 2 * target_lengths[b] + 1;
  const int64_t* lab = ext + b * num_states;
  if (frames == 0) {
    if (threadIdx.x == 0) log_p[b] = target_lengths[b] == 0 ? T(0) : neg_inf<T>();
    return;
  }
  auto E = [&](int64_t t) { return e + (t * batch + b) * num_states; };
  auto G = [&](int64_t t) { return gamma + (t * batch + b) * num_states; };
  for (int64_t s = threadIdx.x; s < states; s += blockDim.x) G(0)[s] = s < 2 ? E(0)[s] : neg_inf<T>();
  __syncthreads();
  for (int64_t t = 1; t < frames; ++t) {
    for (int64_t s = threadIdx.x; s < states; s += blockDim.x) G(t)[s] = ctc_alpha(E(t)[s], G(t - 1), s, lab, blank);
    __syncthreads();
  }
  const T total = ctc_log_likelihood(G(frames - 1), states);
  if (threadIdx.x == 0) log_p[b] = total;
  T* next = rows_buf + 2 * b * num_states;
  T* cur = next + num_states;
  for (int64_t t = frames - 1; t >= 0; --t) {
    for (int64_t s = threadIdx.x; s < states; s += blockDim.x) {
      const T et = E(t)[s];
      const T beta = t == frames - 1 ? ctc_beta_last(et, s, states) : ctc_beta(et, next, s, states, lab, blank);
      cur[s] = beta;
      G(t)[s] = occupancy(G(t)[s] + beta - et, total);
    }
    __syncthreads();
    T* swap = cur;
    cur = next;
    next = swap;
  }
}

template <typename T>
__global__ void ctc_viterbi_kernel(const T* e, const int64_t* ext, const int64_t* target_lengths,
                                   const int64_t* input_lengths, int64_t num_frames, int64_t batch,
                                   int64_t num_states, int64_t blank, T* score, T* rows_buf, uint8_t* back,
                                   int64_t* path) {
  const int64_t b = blockIdx.x;
  const int64_t frames = input_lengths[b], states = 2 * target_lengths[b] + 1;
  const int64_t* lab = ext + b * num_states;
  uint8_t* bk = back + b * num_frames * num_states;
  if (frames == 0) {
    if (threadIdx.x == 0) score[b] = target_lengths[b] == 0 ? T(0) : neg_inf<T>();
    return;
  }
  auto E = [&](int64_t t) { return e + (t * batch + b) * num_states; };
  T* prev = rows_buf + 2 * b * num_states;
  T* cur = prev + num_states;
  for (int64_t s = threadIdx.x; s < states; s += blockDim.x) prev[s] = s < 2 ? E(0)[s] : neg_inf<T>();
  __syncthreads();
  for (int64_t t = 1; t < frames; ++t) {
    for (int64_t s = threadIdx.x; s < states; s += blockDim.x) {
      cur[s] = ctc_viterbi(E(t)[s], prev, s, lab, blank, &bk[t * num_states + s]);
    }
    __syncthreads();
    T* swap = cur;
    cur = prev;
    prev = swap;
  }
  if (threadIdx.x != 0) return;
  int64_t s = ctc_viterbi_end(prev, states);
  score[b] = prev[s];
  if (!is_finite(score[b])) return;
  for (int64_t t = frames - 1; t >= 0; --t) {
    path[b * num_frames + t] = s;
    if (t > 0) s -= bk[t * num_states + s];
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> transducer_lattice_cuda(const at::Tensor& blank_in,
                                                                        const at::Tensor& emit_in,
                                                                        const at::Tensor& frames_in,
                                                                        const at::Tensor& labels_in,
                                                                        bool emit_advances_time) {
  check_cuda(blank_in, "blank");
  const c10::cuda::CUDAGuard guard(blank_in.device());
  const auto blank = blank_in.contiguous(), emit = emit_in.contiguous();
  const auto frames = frames_in.contiguous(), labels = labels_in.contiguous();
  TORCH_CHECK(frames.scalar_type() == at::kLong && labels.scalar_type() == at::kLong, "lengths must be int64");
  const int64_t B = blank.size(0), rows = blank.size(1), W = blank.size(2);
  auto log_p = at::empty({B}, blank.options());
  auto alpha = at::empty({B, rows + 1, W}, blank.options());
  auto beta = at::empty({B, rows + 1, W}, blank.options());
  if (B == 0) return {log_p, alpha, beta};
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(blank.scalar_type(), "transducer_lattice_cuda", [&] {
    transducer_lattice_kernel<scalar_t><<<B, threads_for(W), 0, stream>>>(
        blank.data_ptr<scalar_t>(), emit.data_ptr<scalar_t>(), frames.data_ptr<int64_t>(),
        labels.data_ptr<int64_t>(), rows, W, emit_advances_time ? 1 : 0, log_p.data_ptr<scalar_t>(),
        alpha.data_ptr<scalar_t>(), beta.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {log_p, alpha, beta};
}

std::tuple<at::Tensor, at::Tensor> transducer_viterbi_cuda(const at::Tensor& blank_in, const at::Tensor& emit_in,
                                                           const at::Tensor& frames_in, const at::Tensor& labels_in,
                                                           bool emit_advances_time) {
  check_cuda(blank_in, "blank");
  const c10::cuda::CUDAGuard guard(blank_in.device());
  const auto blank = blank_in.contiguous(), emit = emit_in.contiguous();
  const auto frames = frames_in.contiguous(), labels = labels_in.contiguous();
  TORCH_CHECK(frames.scalar_type() == at::kLong && labels.scalar_type() == at::kLong, "lengths must be int64");
  const int64_t B = blank.size(0), rows = blank.size(1), W = blank.size(2);
  auto score = at::empty({B}, blank.options());
  auto emit_frames = at::full({B, W - 1}, -1, frames.options());
  if (B == 0) return {score, emit_frames};
  auto alpha = at::empty({B, rows + 1, W}, blank.options());
  auto back = at::empty({B, rows + 1, W}, blank.options().dtype(at::kByte));
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(blank.scalar_type(), "transducer_viterbi_cuda", [&] {
    transducer_viterbi_kernel<scalar_t><<<B, threads_for(W), 0, stream>>>(
        blank.data_ptr<scalar_t>(), emit.data_ptr<scalar_t>(), frames.data_ptr<int64_t>(),
        labels.data_ptr<int64_t>(), rows, W, emit_advances_time ? 1 : 0, score.data_ptr<scalar_t>(),
        alpha.data_ptr<scalar_t>(), back.data_ptr<uint8_t>(), emit_frames.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {score, emit_frames};
}

std::tuple<at::Tensor, at::Tensor> ctc_occupancy_cuda(const at::Tensor& e_in, const at::Tensor& ext_in,
                                                      const at::Tensor& target_lengths_in,
                                                      const at::Tensor& input_lengths_in, int64_t blank) {
  check_cuda(e_in, "e");
  const c10::cuda::CUDAGuard guard(e_in.device());
  const auto e = e_in.contiguous(), ext = ext_in.contiguous();
  const auto target_lengths = target_lengths_in.contiguous(), input_lengths = input_lengths_in.contiguous();
  TORCH_CHECK(ext.scalar_type() == at::kLong && target_lengths.scalar_type() == at::kLong &&
              input_lengths.scalar_type() == at::kLong, "ext and lengths must be int64");
  const int64_t T = e.size(0), B = e.size(1), S = e.size(2);
  auto log_p = at::empty({B}, e.options());
  auto gamma = at::zeros({T, B, S}, e.options());
  if (B == 0) return {log_p, gamma};
  auto rows_buf = at::empty({B, 2, S}, e.options());
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(e.scalar_type(), "ctc_occupancy_cuda", [&] {
    ctc_occupancy_kernel<scalar_t><<<B, threads_for(S), 0, stream>>>(
        e.data_ptr<scalar_t>(), ext.data_ptr<int64_t>(), target_lengths.data_ptr<int64_t>(),
        input_lengths.data_ptr<int64_t>(), T, B, S, blank, log_p.data_ptr<scalar_t>(), gamma.data_ptr<scalar_t>(),
        rows_buf.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {log_p, gamma};
}

std::tuple<at::Tensor, at::Tensor> ctc_viterbi_cuda(const at::Tensor& e_in, const at::Tensor& ext_in,
                                                    const at::Tensor& target_lengths_in,
                                                    const at::Tensor& input_lengths_in, int64_t blank) {
  check_cuda(e_in, "e");
  const c10::cuda::CUDAGuard guard(e_in.device());
  const auto e = e_in.contiguous(), ext = ext_in.contiguous();
  const auto target_lengths = target_lengths_in.contiguous(), input_lengths = input_lengths_in.contiguous();
  TORCH_CHECK(ext.scalar_type() == at::kLong && target_lengths.scalar_type() == at::kLong &&
              input_lengths.scalar_type() == at::kLong, "ext and lengths must be int64");
  const int64_t T = e.size(0), B = e.size(1), S = e.size(2);
  auto score = at::empty({B}, e.options());
  auto path = at::full({B, T}, -1, ext.options());
  if (B == 0) return {score, path};
  auto rows_buf = at::empty({B, 2, S}, e.options());
  auto back = at::empty({B, T, S}, e.options().dtype(at::kByte));
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(e.scalar_type(), "ctc_viterbi_cuda", [&] {
    ctc_viterbi_kernel<scalar_t><<<B, threads_for(S), 0, stream>>>(
        e.data_ptr<scalar_t>(), ext.data_ptr<int64_t>(), target_lengths.data_ptr<int64_t>(),
        input_lengths.data_ptr<int64_t>(), T, B, S, blank, score.data_ptr<scalar_t>(), rows_buf.data_ptr<scalar_t>(),
        back.data_ptr<uint8_t>(), path.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {score, path};
}

}  // namespace

TORCH_LIBRARY_IMPL(seqloss, CUDA, m) {
  m.impl("transducer_lattice", &transducer_lattice_cuda);
  m.impl("transducer_viterbi", &transducer_viterbi_cuda);
  m.impl("ctc_occupancy", &ctc_occupancy_cuda);
  m.impl("ctc_viterbi", &ctc_viterbi_cuda);
}

}  // namespace seqloss
