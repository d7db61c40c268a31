// Host emulation of the CUDA execution model, enough to run the seqloss kernels
// (../cuda/lattice_kernels.cuh) on the CPU unchanged. Include this header BEFORE the kernel source.
//
// What it provides:
//   * __global__, __device__, __host__, __forceinline__, __shared__: host meanings (qualifiers vanish;
//     __shared__ becomes static storage, shared by all threads of the block because blocks run one
//     after another).
//   * threadIdx, blockIdx, blockDim, gridDim: per-OS-thread variables that the scheduler sets before
//     resuming each emulated CUDA thread.
//   * __syncthreads(): a real barrier. Every CUDA thread of a block is a fiber (ucontext) with its own
//     stack; exactly one runs at a time. The scheduler runs the block in phases: in each phase it
//     resumes every live thread once, in the phase's order, and that thread runs until it reaches a
//     __syncthreads() or returns. The order is adversarial by default: reversed (threadIdx.x =
//     n-1, ..., 0) or a fresh seeded shuffle per phase, so that a missing barrier lets a thread read
//     cells its neighbours have not written yet and the result changes, instead of being hidden by a
//     lucky schedule. The ascending order 0..n-1 is available to show what such a schedule hides.
//   * Barrier divergence is an error, never a hang: after each phase either every thread waits at the
//     same __syncthreads() (same source line, same barrier count) or every thread has returned; any
//     other state throws std::runtime_error naming the kernel, the block and the threads.
//   * Blocks run one after another, in the same order mode (reversed or shuffled), so a kernel that
//     relied on block scheduling order would also be caught.
// Launches: seqloss_emu::launch(name, config, kernel, args...) instead of kernel<<<grid, block>>>(args).
#pragma once

#include <ucontext.h>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __syncthreads() ::seqloss_emu::syncthreads(__FILE__, __LINE__)

struct dim3 {
  unsigned int x = 1, y = 1, z = 1;
};

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace seqloss_emu {

// Order in which the threads of a block (and the blocks of a grid) run between two barriers.
enum Order : int {
  kReversed = 0,   // n-1, ..., 1, 0
  kShuffled = 1,   // a seeded random permutation, drawn afresh for every phase and block
  kAscending = 2,  // 0, 1, ..., n-1 (the naive schedule; hides some missing barriers)
};

// Grid and block of one launch (one-dimensional, as the seqloss kernels use them).
struct LaunchConfig {
  int64_t grid = 1;
  int64_t threads = 1;
  int order = kReversed;
  uint64_t seed = 0;
};

// Thrown inside an emulated thread that waits at a barrier when its block is abandoned (another
// thread failed, or the barriers diverged); unwinds that thread's stack. Never leaves the runtime.
struct BlockAborted {};

struct Fiber {
  enum State { kFresh, kAtBarrier, kReturned };
  ucontext_t context;
  std::unique_ptr<char[]> stack;
  State state = kFresh;
  const char* file = nullptr;  // the __syncthreads() it waits at
  int line = 0;
  int64_t barriers = 0;  // barriers passed or reached so far
  std::exception_ptr error;
};

struct BlockRun {
  ucontext_t scheduler;
  std::vector<Fiber>* fibers = nullptr;
  Fiber* running = nullptr;
  const std::function<void()>* body = nullptr;
  bool aborting = false;
};

inline thread_local BlockRun* current_run = nullptr;

inline void fiber_main() {
  BlockRun* run = current_run;
  Fiber* self = run->running;
  try {
    (*run->body)();
  } catch (const BlockAborted&) {
  } catch (...) {
    self->error = std::current_exception();
  }
  self->state = Fiber::kReturned;
  // Returning resumes run->scheduler (uc_link).
}

inline void syncthreads(const char* file, int line) {
  BlockRun* run = current_run;
  if (run == nullptr) throw std::logic_error("__syncthreads() called outside an emulated kernel launch");
  Fiber* self = run->running;
  self->state = Fiber::kAtBarrier;
  self->file = file;
  self->line = line;
  ++self->barriers;
  swapcontext(&self->context, &run->scheduler);
  if (run->aborting) throw BlockAborted{};
}

// splitmix64: a fixed generator (unlike std::shuffle's), so a seed gives the same order everywhere.
inline uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

inline std::vector<int64_t> phase_order(std::vector<int64_t> ids, int order, uint64_t seed, uint64_t salt) {
  if (order == kReversed) {
    std::reverse(ids.begin(), ids.end());
  } else if (order == kShuffled) {  // Fisher-Yates
    uint64_t state = seed ^ splitmix64(salt);
    for (size_t i = ids.size(); i > 1; --i) std::swap(ids[i - 1], ids[splitmix64(state) % i]);
  } else if (order != kAscending) {
    throw std::invalid_argument("unknown thread order " + std::to_string(order) +
                                " (0 reversed, 1 shuffled, 2 ascending)");
  }
  return ids;
}

inline std::string describe_threads(const std::vector<int64_t>& ids) {
  std::string out = "[";
  for (size_t i = 0; i < ids.size() && i < 8; ++i) out += (i ? ", " : "") + std::to_string(ids[i]);
  if (ids.size() > 8) out += ", ... (" + std::to_string(ids.size()) + " threads)";
  return out + "]";
}

inline std::string describe_barrier(const Fiber& f) {
  return std::string("__syncthreads() (") + f.file + ":" + std::to_string(f.line) + ", barrier " +
         std::to_string(f.barriers) + ")";
}

// Runs `body` as every thread of block `block`; throws std::runtime_error on barrier divergence or
// rethrows the first exception a thread raised.
inline void run_block(const char* kernel, const LaunchConfig& config, int64_t block, std::vector<Fiber>& fibers,
                      size_t stack_bytes, const std::function<void()>& body) {
  const int64_t n = config.threads;
  BlockRun run;
  run.fibers = &fibers;
  run.body = &body;
  for (int64_t i = 0; i < n; ++i) {
    Fiber& f = fibers[i];
    f.state = Fiber::kFresh;
    f.file = nullptr;
    f.line = 0;
    f.barriers = 0;
    f.error = nullptr;
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = f.stack.get();
    f.context.uc_stack.ss_size = stack_bytes;
    f.context.uc_link = &run.scheduler;
    makecontext(&f.context, fiber_main, 0);
  }
  BlockRun* const outer = current_run;
  current_run = &run;
  auto resume = [&](int64_t i) {
    run.running = &fibers[i];
    threadIdx.x = static_cast<unsigned int>(i);
    swapcontext(&run.scheduler, &fibers[i].context);
  };
  // Unwind every thread suspended at a barrier; threads never started need no unwinding.
  auto abandon = [&]() {
    run.aborting = true;
    for (int64_t i = 0; i < n; ++i) {
      if (fibers[i].state == Fiber::kAtBarrier) resume(i);
    }
    current_run = outer;
  };
  std::vector<int64_t> all(n);
  std::iota(all.begin(), all.end(), 0);
  for (uint64_t phase = 0;; ++phase) {
    const auto order = phase_order(all, config.order, config.seed, (static_cast<uint64_t>(block) << 32) ^ phase);
    for (const int64_t i : order) {
      if (fibers[i].state == Fiber::kReturned) continue;
      resume(i);
      if (fibers[i].error) {
        const auto error = fibers[i].error;
        abandon();
        std::rethrow_exception(error);
      }
    }
    std::vector<int64_t> waiting, returned;
    for (int64_t i = 0; i < n; ++i) (fibers[i].state == Fiber::kAtBarrier ? waiting : returned).push_back(i);
    if (waiting.empty()) break;  // every thread returned: the block is done
    const std::string where = std::string("CUDA emulation: barrier divergence in kernel ") + kernel + ", block " +
                              std::to_string(block) + ": ";
    std::string error;
    const Fiber& first = fibers[waiting[0]];
    if (!returned.empty()) {
      error = where + "threads " + describe_threads(waiting) + " wait at " + describe_barrier(first) +
              " while threads " + describe_threads(returned) + " have returned";
    } else {
      for (const int64_t i : waiting) {
        const Fiber& f = fibers[i];
        if (f.line != first.line || f.barriers != first.barriers || std::string(f.file) != first.file) {
          error = where + "thread " + std::to_string(waiting[0]) + " waits at " + describe_barrier(first) +
                  " but thread " + std::to_string(i) + " at " + describe_barrier(f);
          break;
        }
      }
    }
    if (!error.empty()) {
      abandon();
      throw std::runtime_error(error);
    }
  }
  current_run = outer;
}

// Runs kernel(args...) on a grid of config.grid blocks of config.threads threads.
template <typename... Params, typename... Args>
void launch(const char* kernel_name, const LaunchConfig& config, void (*kernel)(Params...), Args... args) {
  if (config.threads < 1 || config.threads > 1024) {
    throw std::invalid_argument(std::string("CUDA emulation: ") + kernel_name +
                                ": threads per block must be in [1, 1024], got " + std::to_string(config.threads));
  }
  if (config.grid < 0) throw std::invalid_argument(std::string("CUDA emulation: ") + kernel_name + ": negative grid");
  constexpr size_t stack_bytes = 256 * 1024;
  std::vector<Fiber> fibers(config.threads);
  for (auto& f : fibers) f.stack.reset(new char[stack_bytes]);
  const std::function<void()> body = [&]() { kernel(args...); };
  const dim3 saved_thread = threadIdx, saved_block = blockIdx, saved_dim = blockDim, saved_grid = gridDim;
  gridDim = dim3{static_cast<unsigned int>(config.grid), 1, 1};
  blockDim = dim3{static_cast<unsigned int>(config.threads), 1, 1};
  std::vector<int64_t> blocks(config.grid);
  std::iota(blocks.begin(), blocks.end(), 0);
  const auto block_order = phase_order(blocks, config.order, config.seed, ~uint64_t(0));
  try {
    for (const int64_t block : block_order) {
      blockIdx = dim3{static_cast<unsigned int>(block), 0, 0};
      run_block(kernel_name, config, block, fibers, stack_bytes, body);
    }
  } catch (...) {
    threadIdx = saved_thread, blockIdx = saved_block, blockDim = saved_dim, gridDim = saved_grid;
    throw;
  }
  threadIdx = saved_thread, blockIdx = saved_block, blockDim = saved_dim, gridDim = saved_grid;
}

}  // namespace seqloss_emu
