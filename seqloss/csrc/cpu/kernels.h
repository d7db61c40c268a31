// Per-utterance CPU kernels shared between the translation units of the CPU extension.
#pragma once

#include <cstdint>

namespace seqloss {

// CTC forward-backward of utterance b (frames >= 1): writes gamma[t, b, s] for t < frames, s < states
// and returns log P. e, gamma: (T, B, S) contiguous; lab: the utterance's extended labels (S,);
// work: 3 * (S + 2) scratch values. Built with AVX2/FMA (cpu/ctc_avx2.cpp); call only where
// cpu_has_avx2() holds.
float ctc_occupancy_utterance_avx2(const float* e, const int64_t* lab, int64_t frames, int64_t states,
                                   int64_t batch, int64_t num_states, int64_t b, int64_t blank, float* gamma,
                                   float* work);
double ctc_occupancy_utterance_avx2(const double* e, const int64_t* lab, int64_t frames, int64_t states,
                                    int64_t batch, int64_t num_states, int64_t b, int64_t blank, double* gamma,
                                    double* work);
bool cpu_has_avx2();

// The fused SSNT kernel's vectorised loops for one utterance (cpu/ssnt_avx2.cpp; layouts there):
// lattice scores blank = log(1 - e^q), emit = token + q and q frame-major from the (J, S) token and
// choose rows; and the gradients d log P / d token, d log P / d choose from alpha and beta.
void ssnt_scores_avx2(const float* tok, const float* cho, int64_t stride, int64_t rows, int64_t labels,
                      float* blank, float* emit, float* q_by_frame);
void ssnt_scores_avx2(const double* tok, const double* cho, int64_t stride, int64_t rows, int64_t labels,
                      double* blank, double* emit, double* q_by_frame);
void ssnt_grads_avx2(const float* alpha, const float* beta, const float* blank, const float* emit,
                     const float* q_by_frame, float total, int64_t stride, int64_t rows, int64_t labels,
                     float* grad_token, float* grad_choose);
void ssnt_grads_avx2(const double* alpha, const double* beta, const double* blank, const double* emit,
                     const double* q_by_frame, double total, int64_t stride, int64_t rows, int64_t labels,
                     double* grad_token, double* grad_choose);

}  // namespace seqloss
