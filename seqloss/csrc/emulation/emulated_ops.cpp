// torch ops (namespace seqloss_emulation) that run the CUDA kernels of ../cuda/lattice_kernels.cuh on
// CPU tensors under the CUDA emulation. Each op mirrors its CUDA host wrapper in ../cuda/lattice_cuda.cu:
// the same argument checks (../checks.h: sizes, dtypes, devices; no length values, which the kernels
// check themselves), the same buffers (../cuda/lattice_buffers.h), the same grid (one block per
// utterance) and by default the same block size (threads_for). Extra arguments:
//   threads_per_block  block size; -1 = threads_for(width) as on CUDA. Smaller values make the
//                      kernels' striding loops run (several cells per thread).
//   order, seed        thread order between barriers (cuda_emulation.h: 0 reversed, 1 shuffled by
//                      seed, 2 ascending).
//   kernels            "" for the kernels compiled into this extension, or the path of another build
//                      of emulated_kernels.cpp (a modified kernel source) to run instead.
// Buffers the CUDA wrapper leaves uninitialised (at::empty) are filled with NaN (floating point) or
// 0xFF (bytes) first, so a kernel that reads a cell before writing it shows up in the result.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <dlfcn.h>

#include <cmath>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>

#include "../checks.h"
#include "../cuda/lattice_buffers.h"
#include "emulated_kernels.h"

namespace seqloss_emulation {
namespace {

using seqloss_emu::KernelTable;
using seqloss_emu::LaunchConfig;

const KernelTable& kernel_table(const std::string& library) {
  if (library.empty()) return *seqloss_emulation_kernels();
  static std::mutex mutex;
  static std::map<std::string, const KernelTable*> tables;
  const std::lock_guard<std::mutex> lock(mutex);
  auto found = tables.find(library);
  if (found != tables.end()) return *found->second;
  // RTLD_LOCAL: every variant keeps its own kernels (they share symbol names). Never closed: the
  // table points into the library.
  void* handle = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  TORCH_CHECK(handle != nullptr, "seqloss_emulation: cannot load kernels from ", library, ": ", dlerror());
  auto entry = reinterpret_cast<const KernelTable* (*)()>(dlsym(handle, "seqloss_emulation_kernels"));
  TORCH_CHECK(entry != nullptr, "seqloss_emulation: ", library, " does not export seqloss_emulation_kernels");
  const KernelTable* table = entry();
  TORCH_CHECK(table->version == seqloss_emu::kTableVersion, "seqloss_emulation: ", library,
              " was built from another version of emulated_kernels.h");
  tables.emplace(library, table);
  return *table;
}

template <typename T>
const seqloss_emu::LatticeLaunchers<T>& launchers(const KernelTable& table) {
  if constexpr (std::is_same_v<T, float>) {
    return table.f32;
  } else {
    return table.f64;
  }
}

void check_cpu(const char* op, const at::Tensor& x, const char* name) {
  TORCH_CHECK_VALUE(x.device().is_cpu(), op, ": the CUDA emulation runs on CPU tensors, ", name, " is on ", x.device());
}

LaunchConfig launch_config(const KernelTable& table, int64_t grid, int64_t width, int64_t threads_per_block,
                           int64_t order, int64_t seed) {
  TORCH_CHECK_VALUE(threads_per_block == -1 || (threads_per_block >= 1 && threads_per_block <= 1024),
                    "seqloss_emulation: threads_per_block must be -1 (as on CUDA) or in [1, 1024], got ",
                    threads_per_block);
  TORCH_CHECK_VALUE(order >= 0 && order <= 2,
                    "seqloss_emulation: order must be 0 (reversed), 1 (shuffled) or 2 "
                    "(ascending), got ",
                    order);
  LaunchConfig config;
  config.grid = grid;
  config.threads = threads_per_block == -1 ? table.threads_for(width) : threads_per_block;
  config.order = static_cast<int>(order);
  config.seed = static_cast<uint64_t>(seed);
  return config;
}

// The contents at::empty leaves undefined on CUDA: make reading them before writing visible.
void poison(at::Tensor& x) {
  if (x.scalar_type() == at::kByte) {
    x.fill_(255);
  } else {
    x.fill_(NAN);
  }
}

// Runs one emulated launch, turning a kernel failure (barrier divergence) into a RuntimeError.
template <typename F>
void run(F&& launch) {
  try {
    launch();
  } catch (const c10::Error&) {
    throw;
  } catch (const std::exception& error) {
    TORCH_CHECK(false, error.what());
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> transducer_lattice(
    const at::Tensor& blank_in, const at::Tensor& emit_in, const at::Tensor& frames_in, const at::Tensor& labels_in,
    bool one_symbol_per_frame, int64_t threads_per_block, int64_t order, int64_t seed, const std::string& kernels) {
  constexpr const char* op = "seqloss::transducer_lattice";
  check_cpu(op, blank_in, "blank");
  seqloss::checks::check_transducer_inputs(op, blank_in, emit_in, frames_in, labels_in);
  const auto blank = blank_in.contiguous(), emit = emit_in.contiguous();
  const auto frames = frames_in.contiguous(), labels = labels_in.contiguous();
  const int64_t B = blank.size(0), rows = blank.size(1), W = blank.size(2);
  auto out = seqloss::transducer_lattice_buffers(blank);
  poison(out.log_p), poison(out.alpha), poison(out.beta);
  if (B == 0) return {out.log_p, out.alpha, out.beta};
  const auto& table = kernel_table(kernels);
  const auto config = launch_config(table, B, W, threads_per_block, order, seed);
  AT_DISPATCH_FLOATING_TYPES(blank.scalar_type(), "transducer_lattice_emulated", [&] {
    run([&] {
      launchers<scalar_t>(table).transducer_lattice(config, blank.data_ptr<scalar_t>(), emit.data_ptr<scalar_t>(),
                                                    frames.data_ptr<int64_t>(), labels.data_ptr<int64_t>(), rows, W,
                                                    one_symbol_per_frame ? 1 : 0, out.log_p.data_ptr<scalar_t>(),
                                                    out.alpha.data_ptr<scalar_t>(), out.beta.data_ptr<scalar_t>());
    });
  });
  return {out.log_p, out.alpha, out.beta};
}

std::tuple<at::Tensor, at::Tensor> transducer_viterbi(const at::Tensor& blank_in, const at::Tensor& emit_in,
                                                      const at::Tensor& frames_in, const at::Tensor& labels_in,
                                                      bool one_symbol_per_frame, int64_t threads_per_block,
                                                      int64_t order, int64_t seed, const std::string& kernels) {
  constexpr const char* op = "seqloss::transducer_viterbi";
  check_cpu(op, blank_in, "blank");
  seqloss::checks::check_transducer_inputs(op, blank_in, emit_in, frames_in, labels_in);
  const auto blank = blank_in.contiguous(), emit = emit_in.contiguous();
  const auto frames = frames_in.contiguous(), labels = labels_in.contiguous();
  const int64_t B = blank.size(0), rows = blank.size(1), W = blank.size(2);
  auto out = seqloss::transducer_viterbi_buffers(blank, frames);
  poison(out.score), poison(out.alpha), poison(out.back);
  if (B == 0) return {out.score, out.emit_frames};
  const auto& table = kernel_table(kernels);
  const auto config = launch_config(table, B, W, threads_per_block, order, seed);
  AT_DISPATCH_FLOATING_TYPES(blank.scalar_type(), "transducer_viterbi_emulated", [&] {
    run([&] {
      launchers<scalar_t>(table).transducer_viterbi(
          config, blank.data_ptr<scalar_t>(), emit.data_ptr<scalar_t>(), frames.data_ptr<int64_t>(),
          labels.data_ptr<int64_t>(), rows, W, one_symbol_per_frame ? 1 : 0, out.score.data_ptr<scalar_t>(),
          out.alpha.data_ptr<scalar_t>(), out.back.data_ptr<uint8_t>(), out.emit_frames.data_ptr<int64_t>());
    });
  });
  return {out.score, out.emit_frames};
}

std::tuple<at::Tensor, at::Tensor> ctc_occupancy(const at::Tensor& e_in, const at::Tensor& ext_in,
                                                 const at::Tensor& target_lengths_in,
                                                 const at::Tensor& input_lengths_in, int64_t blank,
                                                 int64_t threads_per_block, int64_t order, int64_t seed,
                                                 const std::string& kernels) {
  constexpr const char* op = "seqloss::ctc_occupancy";
  check_cpu(op, e_in, "e");
  seqloss::checks::check_ctc_inputs(op, e_in, ext_in, target_lengths_in, input_lengths_in);
  const auto e = e_in.contiguous(), ext = ext_in.contiguous();
  const auto target_lengths = target_lengths_in.contiguous(), input_lengths = input_lengths_in.contiguous();
  const int64_t T = e.size(0), B = e.size(1), S = e.size(2);
  auto out = seqloss::ctc_occupancy_buffers(e);
  poison(out.log_p), poison(out.rows);
  if (B == 0) return {out.log_p, out.gamma};
  const auto& table = kernel_table(kernels);
  const auto config = launch_config(table, B, S, threads_per_block, order, seed);
  AT_DISPATCH_FLOATING_TYPES(e.scalar_type(), "ctc_occupancy_emulated", [&] {
    run([&] {
      launchers<scalar_t>(table).ctc_occupancy(config, e.data_ptr<scalar_t>(), ext.data_ptr<int64_t>(),
                                               target_lengths.data_ptr<int64_t>(), input_lengths.data_ptr<int64_t>(), T,
                                               B, S, blank, out.log_p.data_ptr<scalar_t>(),
                                               out.gamma.data_ptr<scalar_t>(), out.rows.data_ptr<scalar_t>());
    });
  });
  return {out.log_p, out.gamma};
}

std::tuple<at::Tensor, at::Tensor> ctc_viterbi(const at::Tensor& e_in, const at::Tensor& ext_in,
                                               const at::Tensor& target_lengths_in, const at::Tensor& input_lengths_in,
                                               int64_t blank, int64_t threads_per_block, int64_t order, int64_t seed,
                                               const std::string& kernels) {
  constexpr const char* op = "seqloss::ctc_viterbi";
  check_cpu(op, e_in, "e");
  seqloss::checks::check_ctc_inputs(op, e_in, ext_in, target_lengths_in, input_lengths_in);
  const auto e = e_in.contiguous(), ext = ext_in.contiguous();
  const auto target_lengths = target_lengths_in.contiguous(), input_lengths = input_lengths_in.contiguous();
  const int64_t T = e.size(0), B = e.size(1), S = e.size(2);
  auto out = seqloss::ctc_viterbi_buffers(e, ext);
  poison(out.score), poison(out.rows), poison(out.back);
  if (B == 0) return {out.score, out.path};
  const auto& table = kernel_table(kernels);
  const auto config = launch_config(table, B, S, threads_per_block, order, seed);
  AT_DISPATCH_FLOATING_TYPES(e.scalar_type(), "ctc_viterbi_emulated", [&] {
    run([&] {
      launchers<scalar_t>(table).ctc_viterbi(config, e.data_ptr<scalar_t>(), ext.data_ptr<int64_t>(),
                                             target_lengths.data_ptr<int64_t>(), input_lengths.data_ptr<int64_t>(), T,
                                             B, S, blank, out.score.data_ptr<scalar_t>(), out.rows.data_ptr<scalar_t>(),
                                             out.back.data_ptr<uint8_t>(), out.path.data_ptr<int64_t>());
    });
  });
  return {out.score, out.path};
}

int64_t threads_for(int64_t width, const std::string& kernels) { return kernel_table(kernels).threads_for(width); }

// One block of `threads` threads running barrier_test_kernel(mode); returns its `out` array.
at::Tensor barrier_test(int64_t mode, int64_t threads, int64_t order, int64_t seed, const std::string& kernels) {
  const auto& table = kernel_table(kernels);
  auto config = launch_config(table, 1, threads, threads, order, seed);
  auto out = at::full({threads}, -1, at::TensorOptions().dtype(at::kLong));
  run([&] { table.barrier_test(config, mode, out.data_ptr<int64_t>()); });
  return out;
}

}  // namespace

TORCH_LIBRARY(seqloss_emulation, m) {
  m.def(
      "transducer_lattice(Tensor blank, Tensor emit, Tensor frames, Tensor labels, bool one_symbol_per_frame, "
      "int threads_per_block=-1, int order=0, int seed=0, str kernels='') -> (Tensor, Tensor, Tensor)",
      &transducer_lattice);
  m.def(
      "transducer_viterbi(Tensor blank, Tensor emit, Tensor frames, Tensor labels, bool one_symbol_per_frame, "
      "int threads_per_block=-1, int order=0, int seed=0, str kernels='') -> (Tensor, Tensor)",
      &transducer_viterbi);
  m.def(
      "ctc_occupancy(Tensor e, Tensor ext, Tensor target_lengths, Tensor input_lengths, int blank, "
      "int threads_per_block=-1, int order=0, int seed=0, str kernels='') -> (Tensor, Tensor)",
      &ctc_occupancy);
  m.def(
      "ctc_viterbi(Tensor e, Tensor ext, Tensor target_lengths, Tensor input_lengths, int blank, "
      "int threads_per_block=-1, int order=0, int seed=0, str kernels='') -> (Tensor, Tensor)",
      &ctc_viterbi);
  m.def("threads_for(int width, str kernels='') -> int", &threads_for);
  m.def("barrier_test(int mode, int threads, int order=0, int seed=0, str kernels='') -> Tensor", &barrier_test);
}

}  // namespace seqloss_emulation
