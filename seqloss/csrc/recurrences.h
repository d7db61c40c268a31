// Cell recurrences of every seqloss lattice, shared by the C++ CPU kernel and the CUDA kernel.
//
// Each function computes one lattice cell from its neighbours, in the log semiring (forward/backward
// variables) or the max-plus semiring (Viterbi). They mirror the pure-PyTorch reference
// (seqloss/_lattice) operation by operation (the CTC cells excepted, see below), so both backends round
// the same way:
//   log_add(a, b) = max + log1p(exp(min - max)), -inf when both are -inf (never NaN);
//   occupancy(num, total) = exp(min(num - total, 0)), 0 when total or num is not finite.
//
// Transducer lattice (RNN-T, SSNT: delta = 0; modified transducer, simplified CTC: delta = 1), on the
// grid t = 0..T, u = 0..U extended by one row; blank(t, u) = -inf for t = T, emit(t, u) = -inf for
// t = T or u = U:
//   alpha(0, 0) = 0
//   alpha(t, u) = log_add(alpha(t-1, u) + blank(t-1, u), alpha(t-delta, u-1) + emit(t-delta, u-1))
//   beta(t, u)  = log_add(blank(t, u) + beta(t+1, u), emit(t, u) + beta(t+delta, u+1)),
//                 then beta(T_b, U_b) = 0 (the terminal cell of utterance b)
// CTC lattice over the blank-extended labels l' (S = 2L + 1 states), e_t(s) = log_probs[t, l'_s]:
//   alpha_t(s) = e_t(s) + LSE(alpha_{t-1}(s), alpha_{t-1}(s-1), skip(s) ? alpha_{t-1}(s-2) : -inf)
//   beta_t(s)  = e_t(s) + LSE(beta_{t+1}(s), beta_{t+1}(s+1), skip(s+2) ? beta_{t+1}(s+2) : -inf)
// (the three-term LSE with a single log: equal to the reference's nested log_add up to rounding).
// Viterbi replaces log_add by max and records which predecessor won (tie rules at each function).
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define SEQLOSS_HD __host__ __device__ __forceinline__
#else
#define SEQLOSS_HD inline
#endif

namespace seqloss {

template <typename T>
SEQLOSS_HD T neg_inf() {
  return -static_cast<T>(INFINITY);
}

// exp, returning the exact 0 directly where the result underflows to 0 (x below log of half the
// smallest subnormal; -inf included): the library's underflow path (errno, -inf) is slow and
// lattices are full of such cells.
SEQLOSS_HD float exp_(float x) { return x < -104.0f ? 0.0f : ::expf(x); }
SEQLOSS_HD double exp_(double x) { return x < -746.0 ? 0.0 : ::exp(x); }
SEQLOSS_HD float log_(float x) { return ::logf(x); }
SEQLOSS_HD double log_(double x) { return ::log(x); }
SEQLOSS_HD float log1p_(float x) { return ::log1pf(x); }
SEQLOSS_HD double log1p_(double x) { return ::log1p(x); }
SEQLOSS_HD float expm1_(float x) { return ::expm1f(x); }
SEQLOSS_HD double expm1_(double x) { return ::expm1(x); }

// NaN and +-inf are not finite (the comparison form works on host and device and vectorises).
template <typename T>
SEQLOSS_HD bool is_finite(T x) {
  return x < static_cast<T>(INFINITY) && x > -static_cast<T>(INFINITY);
}

template <typename T>
SEQLOSS_HD T log_add(T a, T b) {
  const T high = a > b ? a : b;
  const T low = a > b ? b : a;
  return is_finite(high) ? high + log1p_(exp_(low - high)) : high;
}

// Elementwise helpers for the value-level cells below, which are templates over V: a scalar (CPU and
// CUDA) or a SIMD vector (cpu/vec_ops.h overloads these for at::vec::Vectorized).
template <typename T>
SEQLOSS_HD T vmax(T a, T b) {
  return a > b ? a : b;
}
template <typename T>
SEQLOSS_HD T vmin(T a, T b) {
  return a > b ? b : a;
}
template <typename T>
SEQLOSS_HD bool finite_mask(T x) {
  return is_finite(x);
}
template <typename T>
SEQLOSS_HD T vselect(bool mask, T a, T b) {
  return mask ? a : b;
}
SEQLOSS_HD float vexp(float x) { return exp_(x); }
SEQLOSS_HD double vexp(double x) { return exp_(x); }
SEQLOSS_HD float vlog(float x) { return log_(x); }
SEQLOSS_HD double vlog(double x) { return log_(x); }
SEQLOSS_HD float vlog1p(float x) { return log1p_(x); }
SEQLOSS_HD double vlog1p(double x) { return log1p_(x); }

// log(exp(a) + exp(b) + exp(c)) = m + log(sum exp(x - m)), m the maximum; -inf when all are -inf.
// One log instead of the two log1p of log_add(log_add(a, b), c): equal up to rounding.
template <typename V>
SEQLOSS_HD V log_add3(V a, V b, V c) {
  const V m = vmax(vmax(a, b), c);
  const auto finite = finite_mask(m);
  const V safe = vselect(finite, m, V(0));
  return vselect(finite, safe + vlog(vexp(a - safe) + vexp(b - safe) + vexp(c - safe)), m);
}

// exp(numerator - total) clamped to at most 1; 0 for an infeasible utterance or unreachable cell.
template <typename V>
SEQLOSS_HD V occupancy(V numerator, V total) {
  const V exponent = vmin(numerator - total, V(0));
  return vselect(finite_mask(total) & finite_mask(numerator), vexp(exponent), V(0));
}

// log_add on SIMD vectors (the scalar log_add above, lane by lane: the same max/min and formula).
template <typename V>
SEQLOSS_HD V vlog_add(V a, V b) {
  const V high = vmax(a, b);
  const V low = vmin(a, b);
  return vselect(finite_mask(high), high + vlog1p(vexp(low - high)), high);
}

// One CTC cell, alpha or beta: e + LSE(stay, step, skip) (skip = -inf where the jump is not allowed).
template <typename V>
SEQLOSS_HD V ctc_cell(V e, V stay, V step, V skip) {
  return e + log_add3(stay, step, skip);
}

// ----- transducer lattice ---------------------------------------------------------------------
// Scores of one utterance on the grid extended by one row (t = T) and one emit column (u = U).
template <typename T>
struct TransducerGrid {
  const T* blank;  // (T, U+1)
  const T* emit;   // (T, U)
  int64_t rows;    // T
  int64_t width;   // U+1
  SEQLOSS_HD T blank_at(int64_t t, int64_t u) const { return t < rows ? blank[t * width + u] : neg_inf<T>(); }
  SEQLOSS_HD T emit_at(int64_t t, int64_t u) const {
    return t < rows && u < width - 1 ? emit[t * (width - 1) + u] : neg_inf<T>();
  }
};

// The two ways into cell (t, u): from_blank = alpha(t-1, u) + blank(t-1, u),
// from_emit = alpha(t-delta, u-1) + emit(t-delta, u-1); alpha is the row-major (T+1, U+1) grid.
template <typename T>
SEQLOSS_HD T transducer_from_blank(const TransducerGrid<T>& g, const T* alpha, int64_t t, int64_t u) {
  return t > 0 ? alpha[(t - 1) * g.width + u] + g.blank_at(t - 1, u) : neg_inf<T>();
}

template <typename T>
SEQLOSS_HD T transducer_from_emit(const TransducerGrid<T>& g, const T* alpha, int64_t t, int64_t u, int64_t delta) {
  return u > 0 && t >= delta ? alpha[(t - delta) * g.width + u - 1] + g.emit_at(t - delta, u - 1) : neg_inf<T>();
}

// alpha(t, u); needs alpha(t-1, u) and alpha(t-delta, u-1).
template <typename T>
SEQLOSS_HD T transducer_alpha(const TransducerGrid<T>& g, const T* alpha, int64_t t, int64_t u, int64_t delta) {
  if (t == 0 && u == 0) return T(0);
  return log_add(transducer_from_blank(g, alpha, t, u), transducer_from_emit(g, alpha, t, u, delta));
}

// beta(t, u); needs beta(t+1, u) and beta(t+delta, u+1). (frames, labels) is the terminal cell.
template <typename T>
SEQLOSS_HD T transducer_beta(const TransducerGrid<T>& g, const T* beta, int64_t t, int64_t u, int64_t delta,
                             int64_t frames, int64_t labels) {
  if (t == frames && u == labels) return T(0);
  const T next_blank = t < g.rows ? beta[(t + 1) * g.width + u] : neg_inf<T>();
  const T next_emit = u < g.width - 1 && t + delta <= g.rows ? beta[(t + delta) * g.width + u + 1] : neg_inf<T>();
  return log_add(g.blank_at(t, u) + next_blank, g.emit_at(t, u) + next_emit);
}

// Max-plus alpha(t, u); *came_by_emit = 1 when the emit edge wins (ties go to the blank edge).
template <typename T>
SEQLOSS_HD T transducer_viterbi(const TransducerGrid<T>& g, const T* alpha, int64_t t, int64_t u, int64_t delta,
                                uint8_t* came_by_emit) {
  *came_by_emit = 0;
  if (t == 0 && u == 0) return T(0);
  const T from_blank = transducer_from_blank(g, alpha, t, u);
  const T from_emit = transducer_from_emit(g, alpha, t, u, delta);
  *came_by_emit = from_emit > from_blank ? 1 : 0;
  return from_emit > from_blank ? from_emit : from_blank;
}

// ----- SSNT on the transducer lattice (t = source frame i, u = target position j) -------------
// r = log(1 - e^q) for a choose log-prob q <= 0: log(-expm1(q)) above -log 2, log1p(-exp(q)) below
// (the two forms of seqloss/ssnt.py's _log1mexp). Scalars take one branch; vectors compute both.
SEQLOSS_HD float log1mexp(float q) { return q > -0.6931471805599453f ? log_(-expm1_(q)) : log1p_(-exp_(q)); }
SEQLOSS_HD double log1mexp(double q) { return q > -0.6931471805599453 ? log_(-expm1_(q)) : log1p_(-exp_(q)); }
template <typename V>
SEQLOSS_HD V log1mexp(V q) {
  return vselect(q > V(-0.6931471805599453), vlog(V(0) - vexpm1(q)), vlog1p(V(0) - vexp(q)));
}

// d log P / d q through the shift edge of cell (i, j): -exp(alpha + q + beta(i+1, j) - log P), with the
// exponent capped at q - r (the shift occupancy is at most 1); 0 where it is not finite.
template <typename V>
SEQLOSS_HD V ssnt_shift_grad(V alpha, V q, V r, V beta_next, V total) {
  const V exponent = vmin(alpha + q + beta_next - total, q - r);
  return vselect(finite_mask(total) & finite_mask(exponent), V(0) - vexp(exponent), V(0));
}

// ----- CTC lattice ----------------------------------------------------------------------------
// The transition s-2 -> s exists for a label different from the one two states before.
SEQLOSS_HD bool ctc_skip_allowed(const int64_t* ext, int64_t s, int64_t blank) {
  return s >= 2 && ext[s] != blank && ext[s] != ext[s - 2];
}

// alpha_t(s) from the previous frame's row `prev` (t >= 1); e = e_t(s).
template <typename T>
SEQLOSS_HD T ctc_alpha(T e, const T* prev, int64_t s, const int64_t* ext, int64_t blank) {
  const T step = s >= 1 ? prev[s - 1] : neg_inf<T>();
  const T skip = ctc_skip_allowed(ext, s, blank) ? prev[s - 2] : neg_inf<T>();
  return ctc_cell(e, prev[s], step, skip);
}

// beta_t(s) from the next frame's row `next` (t < T_b - 1), over `states` = 2L + 1 states.
template <typename T>
SEQLOSS_HD T ctc_beta(T e, const T* next, int64_t s, int64_t states, const int64_t* ext, int64_t blank) {
  const T step = s + 1 < states ? next[s + 1] : neg_inf<T>();
  const T skip = s + 2 < states && ctc_skip_allowed(ext, s + 2, blank) ? next[s + 2] : neg_inf<T>();
  return ctc_cell(e, next[s], step, skip);
}

// beta on the last frame T_b - 1: the path must end in the last label or the final blank.
template <typename T>
SEQLOSS_HD T ctc_beta_last(T e, int64_t s, int64_t states) {
  const int64_t fin = states - 1;
  return e + ((s == fin || (s == fin - 1 && fin > 0)) ? T(0) : neg_inf<T>());
}

// log P from the alpha row of the last frame.
template <typename T>
SEQLOSS_HD T ctc_log_likelihood(const T* last, int64_t states) {
  const int64_t fin = states - 1;
  return log_add(last[fin], fin > 0 ? last[fin - 1] : neg_inf<T>());
}

// Max-plus alpha_t(s); *back = 0 (stay), 1 (from s-1) or 2 (from s-2); ties prefer the smaller jump.
template <typename T>
SEQLOSS_HD T ctc_viterbi(T e, const T* prev, int64_t s, const int64_t* ext, int64_t blank, uint8_t* back) {
  T best = prev[s];
  uint8_t arg = 0;
  if (s >= 1 && prev[s - 1] > best) {
    best = prev[s - 1];
    arg = 1;
  }
  if (ctc_skip_allowed(ext, s, blank) && prev[s - 2] > best) {
    best = prev[s - 2];
    arg = 2;
  }
  *back = arg;
  return e + best;
}

// The state the best path ends in: the final blank, or the last label if strictly better.
template <typename T>
SEQLOSS_HD int64_t ctc_viterbi_end(const T* last, int64_t states) {
  const int64_t fin = states - 1;
  return fin > 0 && last[fin - 1] > last[fin] ? fin - 1 : fin;
}

}  // namespace seqloss
