// The fused CPU transducer loss of one utterance (ops transducer_loss and transducer_loss_grad,
// cpu/transducer_cpu.cpp): stage 1 (log-sum-exp and the blank and target log-probs of each valid logits
// row), the lattice, the edge occupancies and, in backward, the gradient rows. Only the utterance's
// valid cells (t < T_b, u <= U_b) are read or computed; the op writes the padded gradient rows.
//
// Generic over a lane policy L: ScalarLanes<T> below (cpu/transducer_cpu.cpp) or the AVX2 policy of
// cpu/transducer_avx2.cpp. L provides the vector type L::V, L::size lanes, set1, load, store, the
// partial load_tail / store_tail of the last n < size values, the horizontal hmax / hsum, first (lane
// 0) and exp, the exponential of the V-wide passes (exact 0 for -inf, NaN for NaN).
// The cell arithmetic is that of ../recurrences.h and seqloss/rnnt.py, in the same order:
//   lse(t, u)   = m + log(sum_v exp(x[v] - m)), m = max_v x[v] (0 where infinite), as torch.logsumexp;
//   blank(t, u) = x[blank] - lse, emit(t, u) = x[y_{u+1}] - lse (lse = 0 without fused_log_softmax);
//   grad[v]     = ((exp(x[v] - lse) gamma if fused) - occ_blank [v = blank] - occ_emit [v = y_{u+1}]),
//                 clamped, times the upstream gradient.
// No includes: include it after <algorithm>, <cmath>, <cstdint>, <cstring>, kernels.h and
// ../recurrences.h, in the namespace that holds those recurrences (see avx2_recurrences.h).
#pragma once

namespace seqloss {

template <typename T>
struct ScalarLanes {
  using V = T;
  static constexpr int64_t size = 1;
  static V set1(T x) { return x; }
  static V load(const T* p) { return *p; }
  static void store(T* p, V v) { *p = v; }
  static V load_tail(const T* p, int64_t, T) { return *p; }  // never called: no tail with one lane
  static void store_tail(T* p, V v, int64_t) { *p = v; }
  static T hmax(V v) { return v; }
  static T hsum(V v) { return v; }
  static T first(V v) { return v; }
  static V exp(V v) { return exp_(v); }
};

// log-sum-exp of a row of n values, as torch.logsumexp (NaN in, NaN out; all -inf gives -inf).
template <typename L, typename T>
T row_logsumexp(const T* x, int64_t n) {
  using V = typename L::V;
  const T ninf = neg_inf<T>();
  V m = L::set1(ninf);
  int64_t i = 0;
  for (; i + L::size <= n; i += L::size) m = vmax(m, L::load(x + i));
  if (i < n) m = vmax(m, L::load_tail(x + i, n - i, ninf));
  const T top = L::hmax(m);
  const T shift = (top == -ninf || top == ninf) ? T(0) : top;
  const V vshift = L::set1(shift);
  V sum = L::set1(T(0));
  for (i = 0; i + L::size <= n; i += L::size) sum = sum + L::exp(L::load(x + i) - vshift);
  if (i < n) sum = sum + L::exp(L::load_tail(x + i, n - i, ninf) - vshift);
  return log_(L::hsum(sum)) + shift;
}

// out[i] = f(i) for i < n, f taking and returning L::V of the lanes starting at i.
template <typename L, typename T, typename F>
void for_lanes(T* out, int64_t n, F f) {
  int64_t i = 0;
  for (; i + L::size <= n; i += L::size) L::store(out + i, f(i, L::size));
  if (i < n) L::store_tail(out + i, f(i, n - i), n - i);
}

// Load of the lanes starting at i, `count` of them valid (the rest `fill`).
template <typename L, typename T>
typename L::V lanes_at(const T* p, int64_t i, int64_t count, T fill) {
  return count == L::size ? L::load(p + i) : L::load_tail(p + i, count, fill);
}

// Stage 1, lattice and occupancies of one utterance. Writes lse (fused only), occ_blank (u <= U_b)
// and occ_emit (u < U_b) of its valid cells into `grids` and returns log P; NaN in those cells and
// the result when a valid cell has a NaN or +inf score or log-sum-exp (the rule of seqloss/rnnt.py).
// `work` holds transducer_work_size(T_b, U_b) values.
//
// The lattice cells are stored so that each step of both recursions is one contiguous vector
// operation: cell (t, u) at row k = t + u (delta = 0: an anti-diagonal, whose cells are independent)
// or k = t (delta = 1: a frame), column u + 1 of a (K, U_b + 3) array with -inf columns 0 and U_b + 2.
// In both schedules alpha(t, u) reads row k - 1 at columns u (the blank edge) and u - 1 (the emit
// edge), and beta(t, u) reads row k + 1 at columns u and u + 1:
//   alpha[k][u] = log_add(alpha[k-1][u] + blank[k-1][u], alpha[k-1][u-1] + emit[k-1][u-1])
//   beta[k][u]  = log_add(blank[k][u] + beta[k+1][u], emit[k][u] + beta[k+1][u+1])
// the cell recurrences of ../recurrences.h (transducer_alpha, transducer_beta) lane by lane.
template <typename L, typename T>
T transducer_forward(const ::seqloss::TransducerRows<T>& r, const ::seqloss::TransducerOptions& o,
                     const ::seqloss::TransducerGrids<T>& grids, T* work) {
  using V = typename L::V;
  const T ninf = neg_inf<T>(), inf = -ninf;
  const int64_t F = r.frames, W = r.labels + 1, E = r.labels, G = grids.width, P = W + 2;
  const int64_t K = o.delta ? F + 2 : F + W + 1;  // rows, with an all -inf one past the last
  T* blank = work;
  T* emit = blank + K * P;
  T* alpha = emit + K * P;
  T* beta = alpha + K * P;
  std::fill(work, work + 4 * K * P, ninf);
  auto at = [&](int64_t t, int64_t u) { return (o.delta ? t : t + u) * P + u + 1; };
  const int64_t emit_frames = o.delta && o.final_blank ? F - 1 : F;
  bool bad = false;
  for (int64_t t = 0; t < F; ++t) {
    for (int64_t u = 0; u < W; ++u) {
      const T* x = r.x + (t * r.row_stride + u) * r.classes;
      T lse = T(0);
      if (o.fused_log_softmax) {
        lse = row_logsumexp<L>(x, r.classes);
        grids.lse[t * G + u] = lse;
        bad |= !(lse < inf);
      }
      const T b = x[o.blank] - lse;
      blank[at(t, u)] = b;
      bad |= !(b < inf);
      if (u < E && t < emit_frames) {
        const T e = x[r.targets[u]] - lse;
        emit[at(t, u)] = e;
        bad |= !(e < inf);
      }
    }
  }
  if (bad) {
    const T nan = std::numeric_limits<T>::quiet_NaN();
    for (int64_t t = 0; t < F; ++t) {
      std::fill(grids.occ_blank + t * G, grids.occ_blank + t * G + W, nan);
      std::fill(grids.occ_emit + t * G, grids.occ_emit + t * G + E, nan);
    }
    return nan;
  }
  // the cells of row k: u in [lo, hi]
  auto lo = [&](int64_t k) { return o.delta ? int64_t(0) : std::max<int64_t>(0, k - F); };
  auto hi = [&](int64_t k) { return o.delta ? W - 1 : std::min<int64_t>(W - 1, k); };
  const int64_t last = o.delta ? F : F + E;  // the row of the terminal cell (T_b, U_b)
  alpha[at(0, 0)] = T(0);
  for (int64_t k = 1; k <= last; ++k) {
    const int64_t u0 = lo(k);
    const T* a = alpha + (k - 1) * P + 1;
    const T* bl = blank + (k - 1) * P + 1;
    const T* em = emit + (k - 1) * P + 1;
    for_lanes<L>(alpha + k * P + 1 + u0, hi(k) - u0 + 1, [&](int64_t i, int64_t n) {
      const int64_t u = u0 + i;
      return vlog_add(lanes_at<L>(a, u, n, ninf) + lanes_at<L>(bl, u, n, ninf),
                      lanes_at<L>(a - 1, u, n, ninf) + lanes_at<L>(em - 1, u, n, ninf));
    });
  }
  const T total = alpha[at(F, E)];
  for (int64_t k = last; k >= 0; --k) {
    const int64_t u0 = lo(k);
    const T* bl = blank + k * P + 1;
    const T* em = emit + k * P + 1;
    const T* next = beta + (k + 1) * P + 1;
    for_lanes<L>(beta + k * P + 1 + u0, hi(k) - u0 + 1, [&](int64_t i, int64_t n) {
      const int64_t u = u0 + i;
      return vlog_add(lanes_at<L>(bl, u, n, ninf) + lanes_at<L>(next, u, n, ninf),
                      lanes_at<L>(em, u, n, ninf) + lanes_at<L>(next + 1, u, n, ninf));
    });
    if (k == last) beta[at(F, E)] = T(0);
  }
  // occupancies of the cells t < T_b: occ = exp(alpha + score + beta after the edge - log P)
  const V vtotal = L::set1(total);
  T occ_lanes[2 * L::size];
  for (int64_t k = 0; k < (o.delta ? F : F + E); ++k) {
    const int64_t u0 = o.delta ? 0 : std::max<int64_t>(0, k - F + 1);
    const T* a = alpha + k * P + 1;
    const T* bl = blank + k * P + 1;
    const T* em = emit + k * P + 1;
    const T* next = beta + (k + 1) * P + 1;
    const int64_t count = hi(k) - u0 + 1;
    for (int64_t i = 0; i < count; i += L::size) {
      const int64_t u = u0 + i, n = std::min<int64_t>(L::size, count - i);
      const V va = lanes_at<L>(a, u, n, ninf);
      const V ob = occupancy(va + lanes_at<L>(bl, u, n, ninf) + lanes_at<L>(next, u, n, ninf), vtotal);
      const V oe = occupancy(va + lanes_at<L>(em, u, n, ninf) + lanes_at<L>(next + 1, u, n, ninf), vtotal);
      if (o.delta) {  // a frame: contiguous in the grids
        if (n == L::size) {
          L::store(grids.occ_blank + k * G + u, ob);
          L::store(grids.occ_emit + k * G + u, oe);
        } else {
          L::store_tail(grids.occ_blank + k * G + u, ob, n);
          L::store_tail(grids.occ_emit + k * G + u, oe, n);
        }
        continue;
      }
      L::store(occ_lanes, ob);
      L::store(occ_lanes + L::size, oe);
      for (int64_t j = 0; j < n; ++j) {  // an anti-diagonal: cell (k - u, u) of the grids
        const int64_t cell = (k - u - j) * G + u + j;
        grids.occ_blank[cell] = occ_lanes[j];
        grids.occ_emit[cell] = occ_lanes[L::size + j];
      }
    }
  }
  return total;
}

// The gradient rows of one utterance's valid cells (t < T_b, u <= U_b) from the grids of
// transducer_forward, in one pass over each row; `grad` has the layout of r.x and may be r.x itself
// (each row's blank and target logits are read before it is written). Padded rows are not touched.
template <typename L, typename T>
void transducer_backward(const ::seqloss::TransducerRows<T>& r, const ::seqloss::TransducerOptions& o, T clamp, T scale,
                         const ::seqloss::TransducerGrids<T>& grids, T* grad) {
  using V = typename L::V;
  const int64_t F = r.frames, W = r.labels + 1, G = grids.width, n = r.classes;
  const V vscale = L::set1(scale), high = L::set1(clamp), low = L::set1(-clamp);
  auto finish = [&](V value) {  // clamp (NaN stays NaN), then the upstream gradient
    if (clamp > 0) value = vselect(value < low, low, vselect(value > high, high, value));
    return value * vscale;
  };
  for (int64_t t = 0; t < F; ++t) {
    for (int64_t u = 0; u < W; ++u) {
      const int64_t offset = (t * r.row_stride + u) * n;
      const T* x = r.x + offset;
      T* g = grad + offset;
      const T occ_blank = grids.occ_blank[t * G + u];
      const T occ_emit = u < r.labels ? grids.occ_emit[t * G + u] : T(0);
      const int64_t y = u < r.labels ? r.targets[u] : -1;
      if (!o.fused_log_softmax) {
        const T scaled_zero = L::first(finish(L::set1(T(0))));
        const T at_blank = L::first(finish(L::set1(-occ_blank)));
        const T at_target = y >= 0 ? L::first(finish(L::set1(-occ_emit))) : scaled_zero;
        std::fill(g, g + n, scaled_zero);
        g[o.blank] = at_blank;
        if (y >= 0) g[y] = at_target;
        continue;
      }
      T lse = grids.lse[t * G + u];
      lse = is_finite(lse) ? lse : T(0);
      const V vlse = L::set1(lse), gamma = L::set1(occ_blank + occ_emit);
      // softmax(x) gamma, less the occupancy of the blank and of the target edge where they apply
      const T at_blank = L::first(finish(L::exp(L::set1(x[o.blank]) - vlse) * gamma - L::set1(occ_blank)));
      const T at_target = y >= 0 ? L::first(finish(L::exp(L::set1(x[y]) - vlse) * gamma - L::set1(occ_emit))) : T(0);
      for_lanes<L>(g, n, [&](int64_t v, int64_t count) {
        return finish(L::exp(lanes_at<L>(x, v, count, T(0)) - vlse) * gamma);
      });
      g[o.blank] = at_blank;
      if (y >= 0) g[y] = at_target;
    }
  }
}

}  // namespace seqloss
