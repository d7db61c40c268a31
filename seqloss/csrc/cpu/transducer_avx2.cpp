// The fused transducer kernels of cpu/transducer_fused.h vectorised with AVX2 (8 floats / 4 doubles per
// instruction, Sleef exp/log from libtorch). Same compilation scheme as ctc_avx2.cpp: only this file is
// built for AVX2, and cpu/transducer_cpu.cpp calls it where cpu_has_avx2() holds; its scalar twin is the
// same template with ScalarLanes.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#include "avx2_recurrences.h"

namespace seqloss_avx2 {
#include "transducer_fused.h"

namespace seqloss {
namespace {

// The first n < size values through a stack buffer (`fill` in the other lanes): plain vector loads and
// stores, which are faster here than the masked AVX2 ones.
template <typename V, typename T>
inline V load_partial(const T* p, int64_t n, T fill) {
  T lanes[V::size()];
  for (int64_t i = 0; i < V::size(); ++i) lanes[i] = i < n ? p[i] : fill;
  return V::loadu(lanes);
}
template <typename V, typename T>
inline void store_partial(T* p, V v, int64_t n) {
  T lanes[V::size()];
  v.store(lanes);
  std::memcpy(p, lanes, n * sizeof(T));
}

// Flush-to-zero and denormals-are-zero for the lifetime of the guard (the previous MXCSR is restored),
// as in ssnt_avx2.cpp: lattices are full of terms like exp(-95) whose subnormal results cost a
// microcode assist in every later instruction that touches them; as zeros they change results by < 1e-38.
struct FlushDenormals {
  unsigned int saved;
  FlushDenormals() : saved(_mm_getcsr()) { _mm_setcsr(saved | 0x8040u); }
  ~FlushDenormals() { _mm_setcsr(saved); }
};

template <typename T>
struct Avx2Lanes;

template <>
struct Avx2Lanes<float> {
  using V = Vec<float>;
  static constexpr int64_t size = 8;
  static V set1(float x) { return V(x); }
  static V load(const float* p) { return V::loadu(p); }
  static void store(float* p, V v) { v.store(p); }
  static V load_tail(const float* p, int64_t n, float fill) { return load_partial<V>(p, n, fill); }
  static void store_tail(float* p, V v, int64_t n) { store_partial<V>(p, v, n); }
  static float hmax(V v) {
    __m128 x = _mm_max_ps(_mm256_castps256_ps128(v.v), _mm256_extractf128_ps(v.v, 1));
    x = _mm_max_ps(x, _mm_movehl_ps(x, x));
    x = _mm_max_ss(x, _mm_shuffle_ps(x, x, 1));
    return _mm_cvtss_f32(x);
  }
  static float hsum(V v) {
    __m128 x = _mm_add_ps(_mm256_castps256_ps128(v.v), _mm256_extractf128_ps(v.v, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    x = _mm_add_ss(x, _mm_shuffle_ps(x, x, 1));
    return _mm_cvtss_f32(x);
  }
  static float first(V v) { return _mm256_cvtss_f32(v.v); }
  static V exp(V v) { return vexp_fast(v); }
};

template <>
struct Avx2Lanes<double> {
  using V = Vec<double>;
  static constexpr int64_t size = 4;
  static V set1(double x) { return V(x); }
  static V load(const double* p) { return V::loadu(p); }
  static void store(double* p, V v) { v.store(p); }
  static V load_tail(const double* p, int64_t n, double fill) { return load_partial<V>(p, n, fill); }
  static void store_tail(double* p, V v, int64_t n) { store_partial<V>(p, v, n); }
  static double hmax(V v) {
    __m128d x = _mm_max_pd(_mm256_castpd256_pd128(v.v), _mm256_extractf128_pd(v.v, 1));
    return _mm_cvtsd_f64(_mm_max_sd(x, _mm_unpackhi_pd(x, x)));
  }
  static double hsum(V v) {
    __m128d x = _mm_add_pd(_mm256_castpd256_pd128(v.v), _mm256_extractf128_pd(v.v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(x, _mm_unpackhi_pd(x, x)));
  }
  static double first(V v) { return _mm256_cvtsd_f64(v.v); }
  static V exp(V v) { return vexp_fast(v); }
};

}  // namespace
}  // namespace seqloss
}  // namespace seqloss_avx2

namespace seqloss {

float transducer_forward_avx2(const TransducerRows<float>& rows, const TransducerOptions& options,
                              const TransducerGrids<float>& grids, float* work) {
  using L = seqloss_avx2::seqloss::Avx2Lanes<float>;
  const seqloss_avx2::seqloss::FlushDenormals flush;
  return seqloss_avx2::seqloss::transducer_forward<L>(rows, options, grids, work);
}
double transducer_forward_avx2(const TransducerRows<double>& rows, const TransducerOptions& options,
                               const TransducerGrids<double>& grids, double* work) {
  using L = seqloss_avx2::seqloss::Avx2Lanes<double>;
  const seqloss_avx2::seqloss::FlushDenormals flush;
  return seqloss_avx2::seqloss::transducer_forward<L>(rows, options, grids, work);
}
void transducer_backward_avx2(const TransducerRows<float>& rows, const TransducerOptions& options, float clamp,
                              float scale, const TransducerGrids<float>& grids, float* grad) {
  using L = seqloss_avx2::seqloss::Avx2Lanes<float>;
  const seqloss_avx2::seqloss::FlushDenormals flush;
  seqloss_avx2::seqloss::transducer_backward<L>(rows, options, clamp, scale, grids, grad);
}
void transducer_backward_avx2(const TransducerRows<double>& rows, const TransducerOptions& options, double clamp,
                              double scale, const TransducerGrids<double>& grids, double* grad) {
  using L = seqloss_avx2::seqloss::Avx2Lanes<double>;
  const seqloss_avx2::seqloss::FlushDenormals flush;
  seqloss_avx2::seqloss::transducer_backward<L>(rows, options, clamp, scale, grids, grad);
}

}  // namespace seqloss
#pragma GCC pop_options

#else
namespace seqloss {
// Never called where cpu_has_avx2() is false.
float transducer_forward_avx2(const TransducerRows<float>&, const TransducerOptions&, const TransducerGrids<float>&,
                              float*) {
  return 0.0f;
}
double transducer_forward_avx2(const TransducerRows<double>&, const TransducerOptions&, const TransducerGrids<double>&,
                               double*) {
  return 0.0;
}
void transducer_backward_avx2(const TransducerRows<float>&, const TransducerOptions&, float, float,
                              const TransducerGrids<float>&, float*) {}
void transducer_backward_avx2(const TransducerRows<double>&, const TransducerOptions&, double, double,
                              const TransducerGrids<double>&, double*) {}
}  // namespace seqloss
#endif
