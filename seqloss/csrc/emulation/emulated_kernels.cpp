// The CUDA kernels of ../cuda/lattice_kernels.cuh compiled for the host under the CUDA emulation
// (cuda_emulation.h), behind the launcher table of emulated_kernels.h. No torch headers: the tests
// build variants of this file around modified copies of the kernel header in a few seconds.
//
// SEQLOSS_KERNELS_HEADER selects the kernel source (default: the real one). The tests define it, then
// #include this file, to compile a deliberately broken copy.
#include "cuda_emulation.h"

#ifndef SEQLOSS_KERNELS_HEADER
#define SEQLOSS_KERNELS_HEADER "../cuda/lattice_kernels.cuh"
#endif
#include SEQLOSS_KERNELS_HEADER

#include "barrier_test_kernels.cuh"
#include "emulated_kernels.h"

namespace seqloss_emu {
namespace {

template <typename T>
void transducer_lattice(const LaunchConfig& config, const T* blank, const T* emit, const int64_t* frames,
                        const int64_t* labels, int64_t rows, int64_t width, int64_t delta, T* log_p, T* alpha,
                        T* beta) {
  launch("transducer_lattice_kernel", config, &seqloss::transducer_lattice_kernel<T>, blank, emit, frames, labels, rows,
         width, delta, log_p, alpha, beta);
}

template <typename T>
void transducer_viterbi(const LaunchConfig& config, const T* blank, const T* emit, const int64_t* frames,
                        const int64_t* labels, int64_t rows, int64_t width, int64_t delta, T* score, T* alpha,
                        uint8_t* back, int64_t* emit_frames) {
  launch("transducer_viterbi_kernel", config, &seqloss::transducer_viterbi_kernel<T>, blank, emit, frames, labels, rows,
         width, delta, score, alpha, back, emit_frames);
}

template <typename T>
void ctc_occupancy(const LaunchConfig& config, const T* e, const int64_t* ext, const int64_t* target_lengths,
                   const int64_t* input_lengths, int64_t num_frames, int64_t batch, int64_t num_states, int64_t blank,
                   T* log_p, T* gamma, T* rows_buf) {
  launch("ctc_occupancy_kernel", config, &seqloss::ctc_occupancy_kernel<T>, e, ext, target_lengths, input_lengths,
         num_frames, batch, num_states, blank, log_p, gamma, rows_buf);
}

template <typename T>
void ctc_viterbi(const LaunchConfig& config, const T* e, const int64_t* ext, const int64_t* target_lengths,
                 const int64_t* input_lengths, int64_t num_frames, int64_t batch, int64_t num_states, int64_t blank,
                 T* score, T* rows_buf, uint8_t* back, int64_t* path) {
  launch("ctc_viterbi_kernel", config, &seqloss::ctc_viterbi_kernel<T>, e, ext, target_lengths, input_lengths,
         num_frames, batch, num_states, blank, score, rows_buf, back, path);
}

int threads_for(int64_t width) { return seqloss::threads_for(width); }

void barrier_test(const LaunchConfig& config, int64_t mode, int64_t* out) {
  launch("barrier_test_kernel", config, &seqloss_emu_tests::barrier_test_kernel, mode, out);
}

template <typename T>
constexpr LatticeLaunchers<T> launchers() {
  return {&transducer_lattice<T>, &transducer_viterbi<T>, &ctc_occupancy<T>, &ctc_viterbi<T>};
}

}  // namespace
}  // namespace seqloss_emu

extern "C" __attribute__((visibility("default"))) const seqloss_emu::KernelTable* seqloss_emulation_kernels() {
  static const seqloss_emu::KernelTable table{seqloss_emu::kTableVersion, seqloss_emu::launchers<float>(),
                                              seqloss_emu::launchers<double>(), &seqloss_emu::threads_for,
                                              &seqloss_emu::barrier_test};
  return &table;
}
