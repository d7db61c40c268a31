// The CTC forward-backward vectorised over the states s of a frame with AVX2 (8 floats / 4 doubles,
// Sleef exp/log from libtorch: cpu/vec_ops.h). Only this file is compiled for AVX2 (GCC target pragma); the
// dispatcher in lattice_cpu.cpp calls it where the CPU supports AVX2 and FMA. Headers shared with the
// other translation units are included before the pragma so that their inline functions keep the
// baseline instruction set, and the recurrences are included into a namespace of their own here, so
// that no AVX2 copy of an inline function can stand in for the baseline one at link time.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>

#include "kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#include "avx2_recurrences.h"

namespace seqloss_avx2 {
namespace seqloss {
namespace {

// Flush-to-zero and denormals-are-zero for the lifetime of the guard (the previous MXCSR is restored), as in
// ssnt_avx2.cpp: subnormal intermediates such as exp(-95) otherwise cost a microcode assist each.
struct FlushDenormals {
  unsigned int saved;
  FlushDenormals() : saved(_mm_getcsr()) { _mm_setcsr(saved | 0x8040u); }
  ~FlushDenormals() { _mm_setcsr(saved); }
};

// e + log(exp(a) + exp(b) + exp(c)) with two exponentials: the largest term is exp(0) = 1 exactly, so
// m + log(1 + exp(mid - m) + exp(low - m)), m the maximum (the value of ctc_cell, summed in another order;
// exp and log inlined, vec_ops.h).
template <typename V>
__attribute__((always_inline)) inline V ctc_cell2(V e, V a, V b, V c) {
  const V high_ab = vmax(a, b);
  const V m = vmax(high_ab, c);
  const V mid = vmin(high_ab, c);
  const V low = vmin(a, b);
  const auto finite = finite_mask(m);
  const V safe = vselect(finite, m, V(0));
  return e + vselect(finite, safe + vlog_fast(V(1) + vexp_fast(mid - safe) + vexp_fast(low - safe)), m);
}

// occupancy of ../recurrences.h with vexp_fast.
template <typename V>
V occupancy_fast(V numerator, V total) {
  const V exponent = vmin(numerator - total, V(0));
  return vselect(finite_mask(total) & finite_mask(numerator), vexp_fast(exponent), V(0));
}

// The first n values of p, `fill` in the other lanes (the tail of a row: no read past it).
template <typename V, typename T>
V load_upto(const T* p, int64_t n, T fill) {
  if (n >= V::size()) return V::loadu(p);
  T lanes[V::size()];
  for (int64_t i = 0; i < V::size(); ++i) lanes[i] = i < n ? p[i] : fill;
  return V::loadu(lanes);
}

// The recursions run on rows of `padded` values with two -inf entries in front (index 2 + s holds state
// s) and -inf past the states, so that every step is whole vectors: no scalar cells at the edges. Only
// the band of states a path can occupy is computed: alpha_t(s) = -inf for s > 2t + 1 and
// beta_t(s) = -inf for s < states - 2 (T_b - t); outside it the rows keep their -inf.
template <typename T>
T ctc_utterance(const T* e, int64_t e_stride, const int64_t* lab, int64_t frames, int64_t states, int64_t blank,
                T* gamma, int64_t g_stride, T* work) {
  using V = Vec<T>;
  constexpr int64_t L = V::size();
  const T ninf = neg_inf<T>();
  const V vninf(ninf);
  const int64_t padded = (states + L - 1) / L * L, width = padded + 4;
  // skip_ok[s] = 1 where s-2 -> s is allowed (0 past the states); two rows for each recursion
  T* skip_ok = work;
  T* a0 = skip_ok + width;
  T* a1 = a0 + width;
  T* b0 = a1 + width;
  T* b1 = b0 + width;
  std::fill(skip_ok, skip_ok + width, T(0));
  std::fill(a0, a0 + 4 * width, ninf);
  for (int64_t s = 0; s < states; ++s) skip_ok[s] = ctc_skip_allowed(lab, s, blank) ? T(1) : T(0);
  auto E = [&](int64_t t) { return e + t * e_stride; };
  auto G = [&](int64_t t) { return gamma + t * g_stride; };
  auto e_at = [&](int64_t t, int64_t s) { return load_upto<V>(E(t) + s, states - s, ninf); };
  // alpha, kept in gamma's rows
  T* prev = a0;
  T* cur = a1;
  for (int64_t s = 0; s < std::min<int64_t>(2, states); ++s) prev[2 + s] = E(0)[s];
  std::copy(prev + 2, prev + 2 + states, G(0));
  for (int64_t t = 1; t < frames; ++t) {
    const int64_t hi = std::min(states, 2 * t + 2);
    for (int64_t s = 0; s < hi; s += L) {
      const V skip = vselect(V::loadu(skip_ok + s) > V(0), V::loadu(prev + s), vninf);
      ctc_cell2(e_at(t, s), V::loadu(prev + 2 + s), V::loadu(prev + 1 + s), skip).store(cur + 2 + s);
    }
    std::copy(cur + 2, cur + 2 + states, G(t));
    std::swap(prev, cur);
  }
  const T total = ctc_log_likelihood(G(frames - 1), states);
  const V vtotal(total);
  // beta from the last frame back, turning alpha into gamma = exp(alpha + beta - e - log P)
  T* next = b0;
  cur = b1;
  for (int64_t t = frames - 1; t >= 0; --t) {
    const int64_t lo = std::max<int64_t>(0, states - 2 * (frames - t)) / L * L;
    if (t == frames - 1) {
      for (int64_t s = std::max<int64_t>(0, states - 2); s < states; ++s)
        cur[2 + s] = ctc_beta_last(E(t)[s], s, states);
    } else {
      for (int64_t s = lo; s < states; s += L) {
        const V skip = vselect(V::loadu(skip_ok + s + 2) > V(0), V::loadu(next + 4 + s), vninf);
        ctc_cell2(e_at(t, s), V::loadu(next + 2 + s), V::loadu(next + 3 + s), skip).store(cur + 2 + s);
      }
    }
    T* g = G(t);
    int64_t s = 0;
    for (; s + L <= states; s += L) {
      occupancy_fast(V::loadu(g + s) + V::loadu(cur + 2 + s) - V::loadu(E(t) + s), vtotal).store(g + s);
    }
    for (; s < states; ++s) g[s] = occupancy(g[s] + cur[2 + s] - E(t)[s], total);
    std::swap(cur, next);
  }
  return total;
}

}  // namespace
}  // namespace seqloss
}  // namespace seqloss_avx2

namespace seqloss {

float ctc_occupancy_utterance_avx2(const float* e, int64_t e_stride, const int64_t* lab, int64_t frames, int64_t states,
                                   int64_t blank, float* gamma, int64_t g_stride, float* work) {
  const seqloss_avx2::seqloss::FlushDenormals flush;
  return seqloss_avx2::seqloss::ctc_utterance(e, e_stride, lab, frames, states, blank, gamma, g_stride, work);
}

double ctc_occupancy_utterance_avx2(const double* e, int64_t e_stride, const int64_t* lab, int64_t frames,
                                    int64_t states, int64_t blank, double* gamma, int64_t g_stride, double* work) {
  const seqloss_avx2::seqloss::FlushDenormals flush;
  return seqloss_avx2::seqloss::ctc_utterance(e, e_stride, lab, frames, states, blank, gamma, g_stride, work);
}

}  // namespace seqloss
#pragma GCC pop_options

namespace seqloss {
// SEQLOSS_DISABLE_AVX2=1 forces the scalar kernels (read once; the tests use it to cover them).
bool cpu_has_avx2() {
  static const bool use = [] {
    const char* off = std::getenv("SEQLOSS_DISABLE_AVX2");
    const bool disabled = off != nullptr && off[0] != '\0' && off[0] != '0';
    return !disabled && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return use;
}
}  // namespace seqloss

#else
namespace seqloss {
bool cpu_has_avx2() { return false; }
// Never called where cpu_has_avx2() is false.
float ctc_occupancy_utterance_avx2(const float*, int64_t, const int64_t*, int64_t, int64_t, int64_t, float*, int64_t,
                                   float*) {
  return 0.0f;
}
double ctc_occupancy_utterance_avx2(const double*, int64_t, const int64_t*, int64_t, int64_t, int64_t, double*, int64_t,
                                    double*) {
  return 0.0;
}
}  // namespace seqloss
#endif
