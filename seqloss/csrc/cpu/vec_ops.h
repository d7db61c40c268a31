// A minimal AVX2 vector type for the value-level cells of ../recurrences.h (8 floats or 4 doubles),
// with the elementwise helpers those templates call. exp and log are Sleef's 1-ulp AVX2 functions,
// exported by libtorch_cpu. A mask is a vector whose lanes are all-ones or all-zeros bits.
// Include after `#pragma GCC target("avx2,fma")` and before ../recurrences.h.
#pragma once

#include <immintrin.h>

extern "C" {
__m256 Sleef_expf8_u10(__m256);
__m256 Sleef_logf8_u10(__m256);
__m256d Sleef_expd4_u10(__m256d);
__m256d Sleef_logd4_u10(__m256d);
__m256 Sleef_expm1f8_u10(__m256);
__m256 Sleef_log1pf8_u10(__m256);
__m256d Sleef_expm1d4_u10(__m256d);
__m256d Sleef_log1pd4_u10(__m256d);
}

namespace seqloss {

template <typename T>
struct Vec;

template <>
struct Vec<float> {
  __m256 v;
  static constexpr int64_t size() { return 8; }
  Vec(__m256 x) : v(x) {}
  explicit Vec(float x) : v(_mm256_set1_ps(x)) {}
  static Vec loadu(const float* p) { return Vec(_mm256_loadu_ps(p)); }
  void store(float* p) const { _mm256_storeu_ps(p, v); }
  static Vec blendv(Vec a, Vec b, Vec mask) { return Vec(_mm256_blendv_ps(a.v, b.v, mask.v)); }
  Vec exp() const { return Vec(Sleef_expf8_u10(v)); }
  Vec log() const { return Vec(Sleef_logf8_u10(v)); }
  Vec expm1() const { return Vec(Sleef_expm1f8_u10(v)); }
  Vec log1p() const { return Vec(Sleef_log1pf8_u10(v)); }
};

template <>
struct Vec<double> {
  __m256d v;
  static constexpr int64_t size() { return 4; }
  Vec(__m256d x) : v(x) {}
  explicit Vec(double x) : v(_mm256_set1_pd(x)) {}
  static Vec loadu(const double* p) { return Vec(_mm256_loadu_pd(p)); }
  void store(double* p) const { _mm256_storeu_pd(p, v); }
  static Vec blendv(Vec a, Vec b, Vec mask) { return Vec(_mm256_blendv_pd(a.v, b.v, mask.v)); }
  Vec exp() const { return Vec(Sleef_expd4_u10(v)); }
  Vec log() const { return Vec(Sleef_logd4_u10(v)); }
  Vec expm1() const { return Vec(Sleef_expm1d4_u10(v)); }
  Vec log1p() const { return Vec(Sleef_log1pd4_u10(v)); }
};

inline Vec<float> operator+(Vec<float> a, Vec<float> b) { return Vec<float>(_mm256_add_ps(a.v, b.v)); }
inline Vec<float> operator-(Vec<float> a, Vec<float> b) { return Vec<float>(_mm256_sub_ps(a.v, b.v)); }
inline Vec<float> operator*(Vec<float> a, Vec<float> b) { return Vec<float>(_mm256_mul_ps(a.v, b.v)); }
inline Vec<float> operator&(Vec<float> a, Vec<float> b) { return Vec<float>(_mm256_and_ps(a.v, b.v)); }
inline Vec<float> operator>(Vec<float> a, Vec<float> b) { return Vec<float>(_mm256_cmp_ps(a.v, b.v, _CMP_GT_OQ)); }
inline Vec<float> operator<(Vec<float> a, Vec<float> b) { return Vec<float>(_mm256_cmp_ps(a.v, b.v, _CMP_LT_OQ)); }
inline Vec<double> operator+(Vec<double> a, Vec<double> b) { return Vec<double>(_mm256_add_pd(a.v, b.v)); }
inline Vec<double> operator-(Vec<double> a, Vec<double> b) { return Vec<double>(_mm256_sub_pd(a.v, b.v)); }
inline Vec<double> operator*(Vec<double> a, Vec<double> b) { return Vec<double>(_mm256_mul_pd(a.v, b.v)); }
inline Vec<double> operator&(Vec<double> a, Vec<double> b) { return Vec<double>(_mm256_and_pd(a.v, b.v)); }
inline Vec<double> operator>(Vec<double> a, Vec<double> b) { return Vec<double>(_mm256_cmp_pd(a.v, b.v, _CMP_GT_OQ)); }
inline Vec<double> operator<(Vec<double> a, Vec<double> b) { return Vec<double>(_mm256_cmp_pd(a.v, b.v, _CMP_LT_OQ)); }

// max/min as the scalar `a > b ? a : b` / `a > b ? b : a`; blendv(a, b, mask) takes b where mask is set.
template <typename T>
inline Vec<T> vmax(Vec<T> a, Vec<T> b) {
  return Vec<T>::blendv(b, a, a > b);
}
template <typename T>
inline Vec<T> vmin(Vec<T> a, Vec<T> b) {
  return Vec<T>::blendv(a, b, a > b);
}
template <typename T>
inline Vec<T> finite_mask(Vec<T> x) {
  const T inf = static_cast<T>(INFINITY);
  return (x < Vec<T>(inf)) & (x > Vec<T>(-inf));
}
template <typename T>
inline Vec<T> vselect(Vec<T> mask, Vec<T> a, Vec<T> b) {
  return Vec<T>::blendv(b, a, mask);
}
template <typename T>
inline Vec<T> vexp(Vec<T> x) {
  return x.exp();
}
template <typename T>
inline Vec<T> vlog(Vec<T> x) {
  return x.log();
}
template <typename T>
inline Vec<T> vexpm1(Vec<T> x) {
  return x.expm1();
}
template <typename T>
inline Vec<T> vlog1p(Vec<T> x) {
  return x.log1p();
}

// exp and log without a call, for the hot loops (float: Cephes' expf and logf, about 1 ulp; double:
// Sleef's, 1 ulp). vexp_fast: 0 below -87 (results under 1.7e-38, near or below FLT_MIN: never computed,
// so that no subnormal intermediate costs a microcode assist; -inf included), +inf above log(FLT_MAX),
// NaN for NaN. vlog_fast: for positive normal x (what the recursions pass it), NaN for NaN.
inline Vec<float> vexp_fast(Vec<float> v) {
  __m256 x = v.v;
  const __m256 too_small = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_LT_OQ);
  const __m256 too_large = _mm256_cmp_ps(x, _mm256_set1_ps(88.72283935f), _CMP_GT_OQ);
  // min/max with x second: a NaN x passes through
  x = _mm256_max_ps(_mm256_set1_ps(-87.0f), _mm256_min_ps(_mm256_set1_ps(88.3762626647949f), x));
  const __m256 n = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  const __m256 result = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  return Vec<float>(
      _mm256_blendv_ps(_mm256_blendv_ps(result, _mm256_setzero_ps(), too_small), _mm256_set1_ps(INFINITY), too_large));
}
inline Vec<float> vlog_fast(Vec<float> v) {
  const __m256 x0 = v.v;
  // x = m 2^k with m in [sqrt(1/2), sqrt(2)), then log(m) by Cephes' polynomial in m - 1
  const __m256i bits = _mm256_castps_si256(x0);
  __m256 k = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(126)));
  __m256 m = _mm256_or_ps(_mm256_and_ps(x0, _mm256_castsi256_ps(_mm256_set1_epi32(0x007fffff))),
                          _mm256_set1_ps(0.5f));  // [0.5, 1)
  const __m256 small = _mm256_cmp_ps(m, _mm256_set1_ps(0.707106781186547524f), _CMP_LT_OQ);
  k = _mm256_sub_ps(k, _mm256_and_ps(_mm256_set1_ps(1.0f), small));
  m = _mm256_add_ps(_mm256_sub_ps(m, _mm256_set1_ps(1.0f)), _mm256_and_ps(m, small));
  const __m256 z = _mm256_mul_ps(m, m);
  __m256 y = _mm256_set1_ps(7.0376836292e-2f);
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(-1.1514610310e-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(1.1676998740e-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(-1.2420140846e-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(1.4249322787e-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(-1.6668057665e-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(2.0000714765e-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(-2.4999993993e-1f));
  y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(3.3333331174e-1f));
  y = _mm256_mul_ps(_mm256_mul_ps(y, m), z);
  y = _mm256_fmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), y);
  y = _mm256_fnmadd_ps(_mm256_set1_ps(0.5f), z, y);
  __m256 result = _mm256_add_ps(m, y);
  result = _mm256_fmadd_ps(k, _mm256_set1_ps(0.693359375f), result);
  const __m256 nan = _mm256_cmp_ps(x0, x0, _CMP_UNORD_Q);
  return Vec<float>(_mm256_blendv_ps(result, x0, nan));
}
inline Vec<double> vexp_fast(Vec<double> v) { return v.exp(); }
inline Vec<double> vlog_fast(Vec<double> v) { return v.log(); }

}  // namespace seqloss
