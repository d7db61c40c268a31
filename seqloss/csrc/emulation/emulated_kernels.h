// The table of emulated kernel launchers that emulated_kernels.cpp exports (plain pointers, no torch
// types), so that emulated_ops.cpp can run either the kernels compiled into the extension or those of
// another build of emulated_kernels.cpp (a variant of the kernel source, loaded with dlopen).
#pragma once

#include <cstdint>

#include "cuda_emulation.h"

namespace seqloss_emu {

// One launcher per kernel of ../cuda/lattice_kernels.cuh; arguments as the kernel's, after the launch
// configuration.
template <typename T>
struct LatticeLaunchers {
  void (*transducer_lattice)(const LaunchConfig&, const T* blank, const T* emit, const int64_t* frames,
                             const int64_t* labels, int64_t rows, int64_t width, int64_t delta, T* log_p, T* alpha,
                             T* beta);
  void (*transducer_viterbi)(const LaunchConfig&, const T* blank, const T* emit, const int64_t* frames,
                             const int64_t* labels, int64_t rows, int64_t width, int64_t delta, T* score, T* alpha,
                             uint8_t* back, int64_t* emit_frames);
  void (*ctc_occupancy)(const LaunchConfig&, const T* e, const int64_t* ext, const int64_t* target_lengths,
                        const int64_t* input_lengths, int64_t num_frames, int64_t batch, int64_t num_states,
                        int64_t blank, T* log_p, T* gamma, T* rows_buf);
  void (*ctc_viterbi)(const LaunchConfig&, const T* e, const int64_t* ext, const int64_t* target_lengths,
                      const int64_t* input_lengths, int64_t num_frames, int64_t batch, int64_t num_states,
                      int64_t blank, T* score, T* rows_buf, uint8_t* back, int64_t* path);
};

constexpr int kTableVersion = 1;

struct KernelTable {
  int version;
  LatticeLaunchers<float> f32;
  LatticeLaunchers<double> f64;
  // threads_for(width) of the kernel source: the block size the CUDA host wrappers launch with.
  int (*threads_for)(int64_t width);
  // The barrier test kernels of barrier_test_kernels.cuh; out has config.threads entries.
  void (*barrier_test)(const LaunchConfig&, int64_t mode, int64_t* out);
};

}  // namespace seqloss_emu

// Exported by every build of emulated_kernels.cpp.
extern "C" const seqloss_emu::KernelTable* seqloss_emulation_kernels();
