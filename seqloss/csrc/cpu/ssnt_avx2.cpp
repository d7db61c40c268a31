// The cell-independent parts of the fused SSNT kernel (cpu/lattice_cpu.cpp) vectorised with AVX2:
// the lattice scores from the token and choose log-probs, and the chain back from alpha/beta to the
// gradients. The alpha/beta recursions themselves stay scalar in lattice_cpu.cpp. Same compilation
// scheme as ctc_avx2.cpp: only this file is built for AVX2, with the recurrences in a namespace of
// their own; the dispatcher calls it where cpu_has_avx2() holds.
//
// Layouts (one utterance, S_b = rows frames, J_b = labels targets, W = labels + 1): tok, cho, grad_token,
// grad_choose are (J, S) rows of stride S; blank (rows, W), emit and q_by_frame (rows, labels), alpha and
// beta (rows + 1, W) are frame-major, as the lattice recursions read them.
#include <cmath>
#include <cstdint>

#include "kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#include "avx2_recurrences.h"

namespace seqloss_avx2 {
namespace seqloss {
namespace {

template <typename T>
void scores(const T* tok, const T* cho, int64_t stride, int64_t rows, int64_t labels, T* blank, T* emit,
            T* q_by_frame) {
  using V = Vec<T>;
  constexpr int64_t L = V::size();
  const int64_t W = labels + 1;
  T r_lanes[L], e_lanes[L];
  for (int64_t j = 0; j < labels; ++j) {
    const T* t_row = tok + j * stride;
    const T* q_row = cho + j * stride;
    int64_t i = 0;
    for (; i + L <= rows; i += L) {
      const V q = V::loadu(q_row + i);
      log1mexp(q).store(r_lanes);
      (V::loadu(t_row + i) + q).store(e_lanes);
      for (int64_t k = 0; k < L; ++k) {
        blank[(i + k) * W + j] = r_lanes[k];
        emit[(i + k) * labels + j] = e_lanes[k];
        q_by_frame[(i + k) * labels + j] = q_row[i + k];
      }
    }
    for (; i < rows; ++i) {
      const T q = q_row[i];
      blank[i * W + j] = log1mexp(q);
      emit[i * labels + j] = t_row[i] + q;
      q_by_frame[i * labels + j] = q;
    }
  }
}

template <typename T>
void grads(const T* alpha, const T* beta, const T* blank, const T* emit, const T* q_by_frame, T total,
           int64_t stride, int64_t rows, int64_t labels, T* grad_token, T* grad_choose) {
  using V = Vec<T>;
  constexpr int64_t L = V::size();
  const int64_t W = labels + 1;
  const V vtotal(total);
  T occ_lanes[L], choose_lanes[L];
  for (int64_t i = 0; i < rows; ++i) {
    const T* a = alpha + i * W;
    const T* b_emit = beta + i * W + 1;
    const T* b_shift = beta + (i + 1) * W;
    const T* r = blank + i * W;
    const T* e = emit + i * labels;
    const T* q = q_by_frame + i * labels;
    int64_t j = 0;
    for (; j + L <= labels; j += L) {
      const V va = V::loadu(a + j), vq = V::loadu(q + j);
      const V occ = occupancy(va + V::loadu(e + j) + V::loadu(b_emit + j), vtotal);
      occ.store(occ_lanes);
      (occ + ssnt_shift_grad(va, vq, V::loadu(r + j), V::loadu(b_shift + j), vtotal)).store(choose_lanes);
      for (int64_t k = 0; k < L; ++k) {
        grad_token[(j + k) * stride + i] = occ_lanes[k];
        grad_choose[(j + k) * stride + i] = choose_lanes[k];
      }
    }
    for (; j < labels; ++j) {
      const T occ = occupancy(a[j] + e[j] + b_emit[j], total);
      grad_token[j * stride + i] = occ;
      grad_choose[j * stride + i] = occ + ssnt_shift_grad(a[j], q[j], r[j], b_shift[j], total);
    }
  }
}

}  // namespace
}  // namespace seqloss
}  // namespace seqloss_avx2

namespace seqloss {

void ssnt_scores_avx2(const float* tok, const float* cho, int64_t stride, int64_t rows, int64_t labels,
                      float* blank, float* emit, float* q_by_frame) {
  seqloss_avx2::seqloss::scores(tok, cho, stride, rows, labels, blank, emit, q_by_frame);
}
void ssnt_scores_avx2(const double* tok, const double* cho, int64_t stride, int64_t rows, int64_t labels,
                      double* blank, double* emit, double* q_by_frame) {
  seqloss_avx2::seqloss::scores(tok, cho, stride, rows, labels, blank, emit, q_by_frame);
}
void ssnt_grads_avx2(const float* alpha, const float* beta, const float* blank, const float* emit,
                     const float* q_by_frame, float total, int64_t stride, int64_t rows, int64_t labels,
                     float* grad_token, float* grad_choose) {
  seqloss_avx2::seqloss::grads(alpha, beta, blank, emit, q_by_frame, total, stride, rows, labels, grad_token,
                               grad_choose);
}
void ssnt_grads_avx2(const double* alpha, const double* beta, const double* blank, const double* emit,
                     const double* q_by_frame, double total, int64_t stride, int64_t rows, int64_t labels,
                     double* grad_token, double* grad_choose) {
  seqloss_avx2::seqloss::grads(alpha, beta, blank, emit, q_by_frame, total, stride, rows, labels, grad_token,
                               grad_choose);
}

}  // namespace seqloss
#pragma GCC pop_options

#else
namespace seqloss {
// Never called where cpu_has_avx2() is false.
void ssnt_scores_avx2(const float*, const float*, int64_t, int64_t, int64_t, float*, float*, float*) {}
void ssnt_scores_avx2(const double*, const double*, int64_t, int64_t, int64_t, double*, double*, double*) {}
void ssnt_grads_avx2(const float*, const float*, const float*, const float*, const float*, float, int64_t, int64_t,
                     int64_t, float*, float*) {}
void ssnt_grads_avx2(const double*, const double*, const double*, const double*, const double*, double, int64_t,
                     int64_t, int64_t, double*, double*) {}
}  // namespace seqloss
#endif
