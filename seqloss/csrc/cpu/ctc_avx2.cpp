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

template <typename T>
T ctc_utterance(const T* e, int64_t e_stride, const int64_t* lab, int64_t frames, int64_t states, int64_t blank,
                T* gamma, int64_t g_stride, T* work) {
  using V = Vec<T>;
  constexpr int64_t L = V::size();
  const T ninf = neg_inf<T>();
  const V vninf(ninf);
  // skip_ok[s] = 1 where s-2 -> s is allowed; next/cur: beta rows with -inf padding past `states`.
  T* skip_ok = work;
  T* next = work + states + 2;
  T* cur = next + states + 2;
  for (int64_t s = 0; s < states + 2; ++s) {
    skip_ok[s] = s < states && ctc_skip_allowed(lab, s, blank) ? T(1) : T(0);
    next[s] = cur[s] = ninf;
  }
  auto E = [&](int64_t t) { return e + t * e_stride; };
  auto G = [&](int64_t t) { return gamma + t * g_stride; };
  for (int64_t s = 0; s < states; ++s) G(0)[s] = s < 2 ? E(0)[s] : ninf;
  for (int64_t t = 1; t < frames; ++t) {
    const T* prev = G(t - 1);
    const T* et = E(t);
    T* row = G(t);
    int64_t s = 0;
    for (; s < std::min<int64_t>(2, states); ++s) row[s] = ctc_alpha(et[s], prev, s, lab, blank);
    for (; s + L <= states; s += L) {
      const V skip = vselect(V::loadu(skip_ok + s) > V(0), V::loadu(prev + s - 2), vninf);
      ctc_cell(V::loadu(et + s), V::loadu(prev + s), V::loadu(prev + s - 1), skip).store(row + s);
    }
    for (; s < states; ++s) row[s] = ctc_alpha(et[s], prev, s, lab, blank);
  }
  const T total = ctc_log_likelihood(G(frames - 1), states);
  const V vtotal(total);
  for (int64_t t = frames - 1; t >= 0; --t) {
    const T* et = E(t);
    T* g = G(t);
    int64_t s = 0;
    if (t == frames - 1) {
      for (; s < states; ++s) cur[s] = ctc_beta_last(et[s], s, states);
    } else {
      for (; s + L <= states; s += L) {
        const V skip = vselect(V::loadu(skip_ok + s + 2) > V(0), V::loadu(next + s + 2), vninf);
        ctc_cell(V::loadu(et + s), V::loadu(next + s), V::loadu(next + s + 1), skip).store(cur + s);
      }
      for (; s < states; ++s) cur[s] = ctc_beta(et[s], next, s, states, lab, blank);
    }
    for (s = 0; s + L <= states; s += L) {
      occupancy(V::loadu(g + s) + V::loadu(cur + s) - V::loadu(et + s), vtotal).store(g + s);
    }
    for (; s < states; ++s) g[s] = occupancy(g[s] + cur[s] - et[s], total);
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
