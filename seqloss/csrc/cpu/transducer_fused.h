// The fused CPU transducer loss of one utterance (ops transducer_loss and transducer_loss_grad,
// cpu/transducer_cpu.cpp): stage 1 (log-sum-exp and the blank and target log-probs of each valid logits
// row), the lattice, the edge occupancies and, in backward, the gradient rows. Only the utterance's
// valid cells (t < T_b, u <= U_b) are read or computed; the op writes the padded gradient rows.
//
// Generic over a lane policy L: ScalarLanes<T> below (cpu/transducer_cpu.cpp) or the AVX2 policy of
// cpu/transducer_avx2.cpp. L provides the vector type L::V, L::size lanes, set1, load, store, the
// partial load_tail / store_tail of the last n < size values, and the horizontal hmax / hsum.
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
  for (i = 0; i + L::size <= n; i += L::size) sum = sum + vexp(L::load(x + i) - vshift);
  if (i < n) sum = sum + vexp(L::load_tail(x + i, n - i, ninf) - vshift);
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
template <typename L, typename T>
T transducer_forward(const ::seqloss::TransducerRows<T>& r, const ::seqloss::TransducerOptions& o,
                     const ::seqloss::TransducerGrids<T>& grids, T* work) {
  using V = typename L::V;
  const T ninf = neg_inf<T>(), inf = -ninf;
  const int64_t F = r.frames, W = r.labels + 1, E = r.labels, G = grids.width;
  T* blank = work;
  T* emit = blank + (F + 1) * W;
  T* alpha = emit + (F + 1) * W;
  T* beta = alpha + (F + 1) * W;
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
      blank[t * W + u] = b;
      bad |= !(b < inf);
      if (u < E) {
        const T e = t < emit_frames ? x[r.targets[u]] - lse : ninf;
        emit[t * E + u] = e;
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
  const TransducerGrid<T> g{blank, emit, F, W};
  for (int64_t t = 0; t <= F; ++t) {
    for (int64_t u = 0; u < W; ++u) alpha[t * W + u] = transducer_alpha(g, alpha, t, u, o.delta);
  }
  for (int64_t t = F; t >= 0; --t) {
    for (int64_t u = W - 1; u >= 0; --u) beta[t * W + u] = transducer_beta(g, beta, t, u, o.delta, F, r.labels);
  }
  const T total = alpha[F * W + r.labels];
  const V vtotal = L::set1(total);
  for (int64_t t = 0; t < F; ++t) {
    const T* a = alpha + t * W;
    const T* bl = blank + t * W;
    const T* next = beta + (t + 1) * W;
    for_lanes<L>(grids.occ_blank + t * G, W, [&](int64_t u, int64_t n) {
      return occupancy(lanes_at<L>(a, u, n, ninf) + lanes_at<L>(bl, u, n, ninf) + lanes_at<L>(next, u, n, ninf),
                       vtotal);
    });
    const T* em = emit + t * E;
    const T* after = beta + (t + o.delta) * W + 1;
    for_lanes<L>(grids.occ_emit + t * G, E, [&](int64_t u, int64_t n) {
      return occupancy(lanes_at<L>(a, u, n, ninf) + lanes_at<L>(em, u, n, ninf) + lanes_at<L>(after, u, n, ninf),
                       vtotal);
    });
  }
  return total;
}

// The gradient rows of one utterance's valid cells (t < T_b, u <= U_b) from the grids of
// transducer_forward; `grad` has the layout of r.x and may be r.x itself (each row is read before
// it is written). Padded rows are not touched.
template <typename L, typename T>
void transducer_backward(const ::seqloss::TransducerRows<T>& r, const ::seqloss::TransducerOptions& o, T clamp, T scale,
                         const ::seqloss::TransducerGrids<T>& grids, T* grad) {
  using V = typename L::V;
  const int64_t F = r.frames, W = r.labels + 1, G = grids.width, n = r.classes;
  const V vscale = L::set1(scale), high = L::set1(clamp), low = L::set1(-clamp);
  for (int64_t t = 0; t < F; ++t) {
    for (int64_t u = 0; u < W; ++u) {
      const int64_t offset = (t * r.row_stride + u) * n;
      const T* x = r.x + offset;
      T* g = grad + offset;
      const T occ_blank = grids.occ_blank[t * G + u];
      const T occ_emit = u < r.labels ? grids.occ_emit[t * G + u] : T(0);
      if (o.fused_log_softmax) {
        T lse = grids.lse[t * G + u];
        lse = is_finite(lse) ? lse : T(0);
        const V vlse = L::set1(lse), gamma = L::set1(occ_blank + occ_emit);
        for_lanes<L>(g, n,
                     [&](int64_t v, int64_t count) { return vexp(lanes_at<L>(x, v, count, T(0)) - vlse) * gamma; });
      } else {
        std::fill(g, g + n, T(0));
      }
      g[o.blank] -= occ_blank;
      if (u < r.labels) g[r.targets[u]] -= occ_emit;
      for_lanes<L>(g, n, [&](int64_t v, int64_t count) {
        V value = lanes_at<L>(g, v, count, T(0));
        if (clamp > 0) value = vselect(value < low, low, vselect(value > high, high, value));  // NaN stays NaN
        return value * vscale;
      });
    }
  }
}

}  // namespace seqloss
