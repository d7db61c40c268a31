// Per-utterance CPU kernels shared between the translation units of the CPU extension.
#pragma once

#include <cstdint>

namespace seqloss {

// CTC forward-backward of utterance b (frames >= 1): writes gamma[t, b, s] for t < frames, s < states
// and returns log P. e, gamma: (T, B, S) contiguous; lab: the utterance's extended labels (S,);
// work: 3 * (S + 2) scratch values. Built with AVX2/FMA (cpu/ctc_avx2.cpp); call only where
// cpu_has_avx2() holds.
float ctc_occupancy_utterance_avx2(const float* e, const int64_t* lab, int64_t frames, int64_t states, int64_t batch,
                                   int64_t num_states, int64_t b, int64_t blank, float* gamma, float* work);
double ctc_occupancy_utterance_avx2(const double* e, const int64_t* lab, int64_t frames, int64_t states, int64_t batch,
                                    int64_t num_states, int64_t b, int64_t blank, double* gamma, double* work);
bool cpu_has_avx2();

// The fused SSNT kernel of one utterance (S_b = rows, J_b = labels) vectorised along the lattice's
// anti-diagonals (cpu/ssnt_avx2.cpp): reads the (J, S) token and choose rows (row stride `stride`),
// writes d log P / d token and d log P / d choose for its valid cells, returns log P.
float ssnt_utterance_avx2(const float* tok, const float* cho, int64_t stride, int64_t rows, int64_t labels,
                          float* grad_token, float* grad_choose);
double ssnt_utterance_avx2(const double* tok, const double* cho, int64_t stride, int64_t rows, int64_t labels,
                           double* grad_token, double* grad_choose);

}  // namespace seqloss
