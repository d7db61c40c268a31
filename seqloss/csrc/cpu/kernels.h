// Per-utterance CPU kernels shared between the translation units of the CPU extension.
#pragma once

#include <cstdint>

namespace seqloss {

// CTC forward-backward of one utterance (frames >= 1): writes gamma_t(s) at gamma + t * g_stride + s for
// t < frames, s < states and returns log P. e_t(s) is read at e + t * e_stride + s; lab: the utterance's
// extended labels (states,); work: ctc_work_size(states) scratch values. Built with AVX2/FMA
// (cpu/ctc_avx2.cpp); call only where cpu_has_avx2() holds.
inline int64_t ctc_work_size(int64_t states) { return 5 * (states + 8 + 4); }
float ctc_occupancy_utterance_avx2(const float* e, int64_t e_stride, const int64_t* lab, int64_t frames, int64_t states,
                                   int64_t blank, float* gamma, int64_t g_stride, float* work);
double ctc_occupancy_utterance_avx2(const double* e, int64_t e_stride, const int64_t* lab, int64_t frames,
                                    int64_t states, int64_t blank, double* gamma, int64_t g_stride, double* work);
bool cpu_has_avx2();

// The fused SSNT kernel of one utterance (S_b = rows, J_b = labels) vectorised along the lattice's
// anti-diagonals (cpu/ssnt_avx2.cpp): reads the (J, S) token and choose rows (row stride `stride`),
// writes d log P / d token and d log P / d choose for its valid cells, returns log P.
float ssnt_utterance_avx2(const float* tok, const float* cho, int64_t stride, int64_t rows, int64_t labels,
                          float* grad_token, float* grad_choose);
double ssnt_utterance_avx2(const double* tok, const double* cho, int64_t stride, int64_t rows, int64_t labels,
                           double* grad_token, double* grad_choose);

}  // namespace seqloss

namespace seqloss {

// ----- the fused transducer loss (cpu/transducer_cpu.cpp: ops transducer_loss, transducer_loss_grad) -----
// One utterance's rows of the (N, V) logits: the row of lattice cell (t, u) starts at
// x + (t * row_stride + u) * classes (row_stride = U+1 of the dense grid, or U_b + 1 when packed).
// Plain aggregates only: they are shared by translation units built for different instruction sets.
template <typename T>
struct TransducerRows {
  const T* x;
  int64_t row_stride;
  int64_t classes;
  const int64_t* targets;  // y_1..y_{U_b}
  int64_t frames;          // T_b
  int64_t labels;          // U_b
};

struct TransducerOptions {
  int64_t blank;
  bool fused_log_softmax;
  int64_t delta;     // 1: one symbol per frame
  bool final_blank;  // with delta = 1: no emit on the last frame
};

// Per-utterance outputs and inputs on the (T, grid_width) slice of the (B, T, U+1) grids.
template <typename T>
struct TransducerGrids {
  T* lse;
  T* occ_blank;
  T* occ_emit;
  int64_t width;
};

// Scratch values transducer_forward needs for an utterance: blank, emit, alpha and beta, each on the
// (T_b + U_b + 2, U_b + 3) array of the lattice's anti-diagonals (one symbol per frame: frames) with a
// -inf column on either side.
inline int64_t transducer_work_size(int64_t frames, int64_t labels) { return 4 * (frames + labels + 2) * (labels + 3); }

// AVX2 builds of the per-utterance kernels of cpu/transducer_fused.h (call only where cpu_has_avx2()).
float transducer_forward_avx2(const TransducerRows<float>& rows, const TransducerOptions& options,
                              const TransducerGrids<float>& grids, float* work);
double transducer_forward_avx2(const TransducerRows<double>& rows, const TransducerOptions& options,
                               const TransducerGrids<double>& grids, double* work);
void transducer_backward_avx2(const TransducerRows<float>& rows, const TransducerOptions& options, float clamp,
                              float scale, const TransducerGrids<float>& grids, float* grad);
void transducer_backward_avx2(const TransducerRows<double>& rows, const TransducerOptions& options, double clamp,
                              double scale, const TransducerGrids<double>& grids, double* grad);

}  // namespace seqloss
