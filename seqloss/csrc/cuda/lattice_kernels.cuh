// CUDA kernels of the seqloss lattice ops: one thread block per utterance, threads over the label
// axis (u, or the CTC state s), a __syncthreads() between anti-diagonals (RNN-T, SSNT) or frames
// (CTC, one-symbol-per-frame transducers). Cells come from ../recurrences.h, as on the CPU.
//
// This header holds the device code only. It is compiled twice:
//   * by nvcc, included from lattice_cuda.cu (the host wrappers: allocation, launch, streams);
//   * by the host C++ compiler under the CUDA emulation (../emulation/cuda_emulation.h defines
//     __global__, threadIdx, __syncthreads() and the rest first), so that these exact kernels run
//     on the CPU in the tests, block by block, with the threads of a block interleaved adversarially
//     at every barrier.
// It must therefore use nothing from the CUDA runtime beyond threadIdx, blockIdx, blockDim, gridDim
// and __syncthreads(), and no headers but ../recurrences.h and the standard library.
//
// Every length a kernel needs is read on the device: no host synchronisation per call. A block whose
// lengths do not fit the tensor dimensions (a call that bypassed the Python checks) writes NaN to its
// score (and lattice, where it has one) and returns before touching any cell: a bad length never makes
// a kernel read or write out of bounds. The CPU ops raise an error for the same call instead.
#pragma once

#include <cstdint>

#include "../recurrences.h"

namespace seqloss {

// Threads per block for a lattice `width` cells wide: whole warps, at most 512 (wider lattices
// stride: thread x handles u = x, x + blockDim.x, ...).
inline int threads_for(int64_t width) {
  const int64_t warps = (width + 31) / 32;
  return static_cast<int>(warps > 16 ? 512 : warps * 32);
}

template <typename T>
__device__ __forceinline__ T quiet_nan() {
  return static_cast<T>(NAN);
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

// Whether the terminal cell (frames, labels) of an utterance lies on its (rows + 1, width) grid.
__device__ __forceinline__ bool transducer_lengths_fit(int64_t frames, int64_t labels, int64_t rows, int64_t width) {
  return frames >= 0 && frames <= rows && labels >= 0 && labels < width;
}

// Whether an utterance of `frames` frames and `labels` labels fits e (num_frames, B, num_states).
__device__ __forceinline__ bool ctc_lengths_fit(int64_t frames, int64_t labels, int64_t num_frames,
                                                int64_t num_states) {
  return frames >= 0 && frames <= num_frames && labels >= 0 && 2 * labels + 1 <= num_states;
}

template <typename T>
__global__ void transducer_lattice_kernel(const T* blank, const T* emit, const int64_t* frames, const int64_t* labels,
                                          int64_t rows, int64_t width, int64_t delta, T* log_p, T* alpha, T* beta) {
  const int64_t b = blockIdx.x;
  const TransducerGrid<T> g{blank + b * rows * width, emit + b * rows * (width - 1), rows, width};
  T* a = alpha + b * (rows + 1) * width;
  T* be = beta + b * (rows + 1) * width;
  const int64_t fr = frames[b], lab = labels[b];
  if (!transducer_lengths_fit(fr, lab, rows, width)) {  // uniform over the block: no barrier is skipped
    for (int64_t i = threadIdx.x; i < (rows + 1) * width; i += blockDim.x) a[i] = be[i] = quiet_nan<T>();
    if (threadIdx.x == 0) log_p[b] = quiet_nan<T>();
    return;
  }
  for_each_wavefront(rows, width, delta, true,
                     [&](int64_t t, int64_t u) { a[t * width + u] = transducer_alpha(g, a, t, u, delta); });
  for_each_wavefront(rows, width, delta, false,
                     [&](int64_t t, int64_t u) { be[t * width + u] = transducer_beta(g, be, t, u, delta, fr, lab); });
  if (threadIdx.x == 0) log_p[b] = a[fr * width + lab];
}

template <typename T>
__global__ void transducer_viterbi_kernel(const T* blank, const T* emit, const int64_t* frames, const int64_t* labels,
                                          int64_t rows, int64_t width, int64_t delta, T* score, T* alpha, uint8_t* back,
                                          int64_t* emit_frames) {
  const int64_t b = blockIdx.x;
  const TransducerGrid<T> g{blank + b * rows * width, emit + b * rows * (width - 1), rows, width};
  T* a = alpha + b * (rows + 1) * width;
  uint8_t* bk = back + b * (rows + 1) * width;
  if (!transducer_lengths_fit(frames[b], labels[b], rows, width)) {
    if (threadIdx.x == 0) score[b] = quiet_nan<T>();
    return;
  }
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
  if (!ctc_lengths_fit(frames, target_lengths[b], num_frames, num_states)) {
    if (threadIdx.x == 0) log_p[b] = quiet_nan<T>();
    return;
  }
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
  // Every thread must have read the last alpha row before the first beta step overwrites it with gamma.
  __syncthreads();
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
                                   const int64_t* input_lengths, int64_t num_frames, int64_t batch, int64_t num_states,
                                   int64_t blank, T* score, T* rows_buf, uint8_t* back, int64_t* path) {
  const int64_t b = blockIdx.x;
  const int64_t frames = input_lengths[b], states = 2 * target_lengths[b] + 1;
  const int64_t* lab = ext + b * num_states;
  uint8_t* bk = back + b * num_frames * num_states;
  if (!ctc_lengths_fit(frames, target_lengths[b], num_frames, num_states)) {
    if (threadIdx.x == 0) score[b] = quiet_nan<T>();
    return;
  }
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

}  // namespace seqloss
