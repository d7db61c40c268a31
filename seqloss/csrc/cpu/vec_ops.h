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

}  // namespace seqloss
