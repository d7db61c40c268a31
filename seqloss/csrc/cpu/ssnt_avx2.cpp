// The fused SSNT kernel of one utterance (cpu/lattice_cpu.cpp, ssnt_lattice) vectorised with AVX2.
// Same compilation scheme as ctc_avx2.cpp: only this file is built for AVX2, the dispatcher calls it
// where cpu_has_avx2() holds; the scalar kernel in lattice_cpu.cpp is its twin (same cells, same order
// of operations, so the two agree up to the last-ulp differences of Sleef and glibc).
//
// The lattice (t = source frame i, u = target position j, delta = 0) is stored by anti-diagonals:
// cell (t, u) lives at row n = t + u, column u of a (rows + W + 1, W + 2) array whose first and last
// columns are -inf padding. Cells of one anti-diagonal are independent (alpha(t, u) needs (t-1, u) and
// (t, u-1), both on diagonal n-1), and their neighbours sit at columns u and u-1 (alpha) or u and u+1
// (beta) of the adjacent diagonal, so every recursion step is a contiguous vector operation.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#include "avx2_recurrences.h"

namespace seqloss_avx2 {
namespace seqloss {
namespace {

// Flush-to-zero and denormals-are-zero for the lifetime of the guard (the previous MXCSR is restored).
// Lattices are full of terms like exp(-95) whose subnormal results cost a microcode assist in every
// later instruction that touches them (6x slower here); as zeros they change results by < 1e-38.
struct FlushDenormals {
  unsigned int saved;
  FlushDenormals() : saved(_mm_getcsr()) { _mm_setcsr(saved | 0x8040u); }
  ~FlushDenormals() { _mm_setcsr(saved); }
};

template <typename T>
T utterance(const T* tok, const T* cho, int64_t stride, int64_t rows, int64_t labels, T* grad_token, T* grad_choose) {
  using V = Vec<T>;
  constexpr int64_t L = V::size();
  const FlushDenormals flush;
  const int64_t W = labels + 1, P = W + 2, D = rows + W + 1;
  const T ninf = neg_inf<T>();
  auto at = [P](int64_t n, int64_t u) { return n * P + u + 1; };
  std::vector<T> blank(D * P, ninf), emit(D * P, ninf), q(D * P, ninf), alpha(D * P, ninf), beta(D * P, ninf);
  // scores: blank = shift r = log(1 - e^q), emit = token + q; vectors along each (J, S) row, stored by diagonal
  T r_lanes[L], e_lanes[L];
  for (int64_t j = 0; j < labels; ++j) {
    const T* t_row = tok + j * stride;
    const T* q_row = cho + j * stride;
    int64_t i = 0;
    for (; i + L <= rows; i += L) {
      const V vq = V::loadu(q_row + i);
      log1mexp(vq).store(r_lanes);
      (V::loadu(t_row + i) + vq).store(e_lanes);
      for (int64_t k = 0; k < L; ++k) {
        const int64_t c = at(i + k + j, j);
        blank[c] = r_lanes[k];
        emit[c] = e_lanes[k];
        q[c] = q_row[i + k];
      }
    }
    for (; i < rows; ++i) {
      const int64_t c = at(i + j, j);
      blank[c] = log1mexp(q_row[i]);
      emit[c] = t_row[i] + q_row[i];
      q[c] = q_row[i];
    }
  }
  if (rows > 0) blank[at(rows - 1 + labels, labels)] = T(0);  // the path ends by emitting on frame S_b - 1
  // alpha(t, u) = log_add(alpha(t-1, u) + blank(t-1, u), alpha(t, u-1) + emit(t, u-1))
  alpha[at(0, 0)] = T(0);
  for (int64_t n = 1; n < D; ++n) {
    const int64_t lo = std::max<int64_t>(0, n - rows), hi = std::min<int64_t>(W - 1, n);
    const T* a0 = alpha.data() + at(n - 1, 0);
    const T* b0 = blank.data() + at(n - 1, 0);
    const T* e0 = emit.data() + at(n - 1, 0);
    T* out = alpha.data() + at(n, 0);
    int64_t u = lo;
    for (; u + L <= hi + 1; u += L) {
      vlog_add(V::loadu(a0 + u) + V::loadu(b0 + u), V::loadu(a0 + u - 1) + V::loadu(e0 + u - 1)).store(out + u);
    }
    for (; u <= hi; ++u) out[u] = log_add(a0[u] + b0[u], a0[u - 1] + e0[u - 1]);
  }
  const T total = alpha[at(rows + labels, labels)];
  // beta(t, u) = log_add(blank(t, u) + beta(t+1, u), emit(t, u) + beta(t, u+1)), beta(S_b, J_b) = 0
  for (int64_t n = rows + labels; n >= 0; --n) {
    const int64_t lo = std::max<int64_t>(0, n - rows), hi = std::min<int64_t>(W - 1, n);
    const T* b1 = beta.data() + at(n + 1, 0);
    const T* bl = blank.data() + at(n, 0);
    const T* em = emit.data() + at(n, 0);
    T* out = beta.data() + at(n, 0);
    int64_t u = lo;
    for (; u + L <= hi + 1; u += L) {
      vlog_add(V::loadu(bl + u) + V::loadu(b1 + u), V::loadu(em + u) + V::loadu(b1 + u + 1)).store(out + u);
    }
    for (; u <= hi; ++u) out[u] = log_add(bl[u] + b1[u], em[u] + b1[u + 1]);
    if (n == rows + labels) out[labels] = T(0);
  }
  // chain back, cell (i, j) for i < S_b, j < J_b: d log P / d token = occ_emit, d / d choose adds the shift term
  const V vtotal(total);
  T occ_lanes[L], choose_lanes[L];
  for (int64_t n = 0; n + 1 < rows + labels; ++n) {
    const int64_t lo = std::max<int64_t>(0, n - rows + 1), hi = std::min<int64_t>(labels - 1, n);
    const T* a = alpha.data() + at(n, 0);
    const T* e = emit.data() + at(n, 0);
    const T* r = blank.data() + at(n, 0);
    const T* qq = q.data() + at(n, 0);
    const T* b1 = beta.data() + at(n + 1, 0);  // beta(i, j+1) at column j+1, beta(i+1, j) at column j
    int64_t j = lo;
    for (; j + L <= hi + 1; j += L) {
      const V va = V::loadu(a + j);
      const V occ = occupancy(va + V::loadu(e + j) + V::loadu(b1 + j + 1), vtotal);
      occ.store(occ_lanes);
      (occ + ssnt_shift_grad(va, V::loadu(qq + j), V::loadu(r + j), V::loadu(b1 + j), vtotal)).store(choose_lanes);
      for (int64_t k = 0; k < L; ++k) {
        grad_token[(j + k) * stride + n - j - k] = occ_lanes[k];
        grad_choose[(j + k) * stride + n - j - k] = choose_lanes[k];
      }
    }
    for (; j <= hi; ++j) {
      const T occ = occupancy(a[j] + e[j] + b1[j + 1], total);
      grad_token[j * stride + n - j] = occ;
      grad_choose[j * stride + n - j] = occ + ssnt_shift_grad(a[j], qq[j], r[j], b1[j], total);
    }
  }
  return total;
}

}  // namespace
}  // namespace seqloss
}  // namespace seqloss_avx2

namespace seqloss {

float ssnt_utterance_avx2(const float* tok, const float* cho, int64_t stride, int64_t rows, int64_t labels,
                          float* grad_token, float* grad_choose) {
  return seqloss_avx2::seqloss::utterance(tok, cho, stride, rows, labels, grad_token, grad_choose);
}
double ssnt_utterance_avx2(const double* tok, const double* cho, int64_t stride, int64_t rows, int64_t labels,
                           double* grad_token, double* grad_choose) {
  return seqloss_avx2::seqloss::utterance(tok, cho, stride, rows, labels, grad_token, grad_choose);
}

}  // namespace seqloss
#pragma GCC pop_options

#else
namespace seqloss {
// Never called where cpu_has_avx2() is false.
float ssnt_utterance_avx2(const float*, const float*, int64_t, int64_t, int64_t, float*, float*) { return 0.0f; }
double ssnt_utterance_avx2(const double*, const double*, int64_t, int64_t, int64_t, double*, double*) { return 0.0; }
}  // namespace seqloss
#endif
