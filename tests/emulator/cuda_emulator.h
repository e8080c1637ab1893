// A CPU emulation of the little of CUDA that kernels/cuda/matmul.cu uses,
// so that its kernels compile as host C++ (WOQ_CUDA_EMULATE) and run here,
// where there is no GPU: every thread of a block is a fiber (its own stack,
// switched to and from at barriers on the launching thread; under the
// sanitizers, which follow OS threads only, a std::thread), blocks run one
// after another (so `__shared__` can be a static), and the warp
// collectives (shuffles, mma.m16n8k16) meet at a barrier of the warp's 32
// threads (a wgmma at a barrier of its warpgroup's 128). A block whose
// threads all wait at barriers that cannot complete (a __syncthreads not
// every thread reaches) aborts with a message rather than hanging. The mma is
// computed from the PTX ISA's fragment tables (9.7.14.5.8, .f16 / .bf16):
// lane = 4 groupID + tid holds
//   A: a0,a1 (row g, cols 2t, 2t+1), a2,a3 (row g+8), a4,a5 (row g,
//      cols +8), a6,a7 (row g+8, cols +8), two per register, low half first;
//   B: b0,b1 (rows 2t, 2t+1 of column g), b2,b3 (rows +8);
//   C, D: c0,c1 (row g, cols 2t, 2t+1), c2,c3 (row g+8).
// Products and sums are formed in double and rounded to float once, so
// this is at least as exact as the hardware. Include before matmul.cu.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define WOQ_EMULATE_WITH_THREADS 1
#else
#include <ucontext.h>
#endif

#include "kernels/cpu/numeric.h"
#include "kernels/cuda/launch.h"

// CUDA's headers define these for host compilers; here they take their
// emulated meaning.
#undef __global__
#define __global__
#undef __device__
#define __device__
#undef __shared__
#define __shared__ static  // one block at a time, shared by its threads
#undef __launch_bounds__
#define __launch_bounds__(...)

inline thread_local uint3 threadIdx, blockIdx;
inline thread_local dim3 blockDim, gridDim;

namespace emu {

// Fibers (defined below): whether this thread is running a block's, and a
// switch back to the block's scheduler.
inline thread_local bool in_fibers = false;
inline void yield_fiber();
inline void fiber_event();

class Barrier {
 public:
  explicit Barrier(unsigned count) : count_(count) {}
  void wait() {
    if (in_fibers) {  // one OS thread: no lock
      const unsigned generation = generation_;
      fiber_event();
      if (++arrived_ == count_) {
        arrived_ = 0;
        ++generation_;
        return;
      }
      while (generation_ == generation) yield_fiber();
      return;
    }
    std::unique_lock<std::mutex> lock(mutex_);
    const unsigned generation = generation_;
    if (++arrived_ == count_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
      return;
    }
    cv_.wait(lock, [&] { return generation_ != generation; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  unsigned count_, arrived_ = 0, generation_ = 0;
};

struct Warp {
  Barrier barrier{32};
  uint32_t a[32][4], b[32][2];
  float c[32][4], value[32];
};

// A warpgroup's wgmma operands: 128 threads' A registers and accumulators.
struct WarpGroup {
  static constexpr unsigned kMaxCount = 32;  // m64n64: 32 fp32 accumulators a thread
  Barrier barrier{128};
  uint32_t a[128][4];
  float d[128][kMaxCount];
  uint64_t descriptor[128];
};

struct Block {
  Block(unsigned threads, size_t dynamic_bytes) : barrier(threads), dynamic((dynamic_bytes + 15) / 16) {
    for (unsigned w = 0; w < (threads + 31) / 32; ++w) warps.push_back(std::make_unique<Warp>());
    for (unsigned g = 0; g < threads / 128; ++g) groups.push_back(std::make_unique<WarpGroup>());
  }
  Barrier barrier;
  std::vector<std::unique_ptr<Warp>> warps;
  std::vector<std::unique_ptr<WarpGroup>> groups;
  std::vector<uint4> dynamic;  // the launch's dynamic shared memory, poisoned
  std::atomic<const unsigned char*> shared_base{nullptr};  // what shared addresses count from
};

inline thread_local Block* this_block = nullptr;
inline thread_local Warp* this_warp = nullptr;
inline thread_local unsigned this_lane = 0;

inline bool valid_block(unsigned threads) { return threads != 0 && threads % 32 == 0 && threads <= 1024; }

// Runs job(t) for every thread t of a block (defined below).
inline void run_block(unsigned threads, const std::function<void(unsigned)>& job);

// Runs every block of `grid`, one after another, each with `threads`
// threads (a whole number of warps) and `dynamic_bytes` of dynamic shared
// memory. One launch at a time in the process: `__shared__` is static.
inline std::mutex launches;
template <class Kernel, class... Args>
cudaError_t launch(Kernel kernel, dim3 grid, unsigned threads, size_t dynamic_bytes, Args... args) {
  if (!valid_block(threads)) return cudaErrorInvalidConfiguration;
  std::lock_guard<std::mutex> one_at_a_time(launches);
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        Block block(threads, dynamic_bytes);
        if (!block.dynamic.empty())
          std::memset(static_cast<void*>(block.dynamic.data()), 0xA5, block.dynamic.size() * sizeof(uint4));
        run_block(threads, [&](unsigned t) {
          threadIdx = make_uint3(t, 0, 0);
          blockIdx = make_uint3(x, y, z);
          blockDim = dim3(threads);
          gridDim = grid;
          this_block = &block;
          this_warp = block.warps[t / 32].get();
          this_lane = t % 32;
          kernel(args...);
        });
      }
  return cudaSuccess;
}

// Set by the emulated CUDA runtime (cuda_runtime_emulated.cpp) where it is
// linked: queues a launch on `stream` (or records it into the graph that
// stream is capturing, or refuses it as the runtime would) and returns its
// status. Without the runtime, launches run at once.
inline cudaError_t (*queue_launch)(cudaStream_t stream, std::function<void()> launch) = nullptr;

// Set by the emulated CUDA runtime where it is linked: whether `p` points
// into one of its device allocations. A kernel handed any other pointer
// (host memory, say) would fault on a GPU; here its launch fails, naming
// the argument. Without the runtime (the emulator's own tests, on host
// vectors) nothing is checked.
inline bool (*device_pointer)(const void* p) = nullptr;

inline bool device_argument(const void* p, int index, const char* what) {
  if (!p || !device_pointer || device_pointer(p)) return true;
  std::fprintf(stderr, "emulator: kernel argument %d (%s) %p is not device memory\n", index, what, p);
  return false;
}
template <class T>
bool check_argument(const T&, int) {
  return true;
}
template <class T>
bool check_argument(T* p, int index) {
  return device_argument(p, index, "a pointer");
}
inline bool check_argument(const woq::kernels::cuda::DeviceMatrix& w, int index) {
  return device_argument(w.units, index, "the matrix's units") && device_argument(w.scales, index, "its scales") &&
         device_argument(w.zeros, index, "its zero-points") && device_argument(w.bias, index, "its bias");
}

// A launch on `stream`: now, unless the emulated runtime queues it.
template <class Kernel, class... Args>
cudaError_t launch_on(cudaStream_t stream, Kernel kernel, dim3 grid, unsigned threads, size_t dynamic_bytes,
                      Args... args) {
  if (!valid_block(threads)) return cudaErrorInvalidConfiguration;
  int index = 0;
  if (!(check_argument(args, index++) && ...)) return cudaErrorIllegalAddress;
  if (queue_launch) return queue_launch(stream, [=] { launch(kernel, grid, threads, dynamic_bytes, args...); });
  return launch(kernel, grid, threads, dynamic_bytes, args...);
}

inline float bits16_to_float(uint32_t bits, bool bf16) {
  return bf16 ? woq::kernels::bf16_to_float(uint16_t(bits)) : woq::kernels::half_to_float(uint16_t(bits));
}
inline uint32_t float_to_bits16(float v, bool bf16) {
  return bf16 ? woq::kernels::float_to_bf16(v) : woq::kernels::float_to_half(v);
}

// d = a * b + c on two 16-bit lanes, rounded once (through double: exact
// products of 16-bit floats, one rounding to the 16-bit result but for
// double rounding, which cannot matter for the small integers it sees).
inline uint32_t fma_16x2(uint32_t a, uint32_t b, uint32_t c, bool bf16) {
  uint32_t d = 0;
  for (int h = 0; h < 2; ++h) {
    const auto part = [&](uint32_t v) { return double(bits16_to_float((v >> (16 * h)) & 0xFFFFu, bf16)); };
    d |= float_to_bits16(float(part(a) * part(b) + part(c)), bf16) << (16 * h);
  }
  return d;
}
inline uint32_t fma_f16x2(uint32_t a, uint32_t b, uint32_t c) { return fma_16x2(a, b, c, false); }
inline uint32_t fma_bf16x2(uint32_t a, uint32_t b, uint32_t c) { return fma_16x2(a, b, c, true); }

// Half `half` of a register of 16-bit floats, exactly.
inline double element16(uint32_t reg, unsigned half, bool bf16) {
  return double(bits16_to_float(reg >> (16 * half), bf16));
}

// A[row][k] of a 16 x 16 A fragment held by a warp's 32 lanes' registers
// (`lanes[lane]`), as mma.m16n8k16 (and each warp of a wgmma) holds it.
inline double fragment_a(const uint32_t (*lanes)[4], unsigned row, unsigned k, bool bf16) {
  return element16(lanes[4 * (row % 8) + (k % 8) / 2][(row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0)], k % 2, bf16);
}

inline void mma_m16n8k16(bool bf16, float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  Warp& w = *this_warp;
  const unsigned lane = this_lane;
  std::memcpy(w.a[lane], a, sizeof a);
  std::memcpy(w.b[lane], b, sizeof b);
  std::memcpy(w.c[lane], c, sizeof c);
  w.barrier.wait();
  const auto A = [&](unsigned row, unsigned k) { return fragment_a(w.a, row, k, bf16); };
  const auto B = [&](unsigned k, unsigned col) {
    return element16(w.b[4 * col + (k % 8) / 2][k >= 8 ? 1 : 0], k % 2, bf16);
  };
  float d[4];
  for (unsigned e = 0; e < 4; ++e) {
    const unsigned row = lane / 4 + 8 * (e / 2), col = 2 * (lane % 4) + e % 2;
    double sum = w.c[lane][e];
    for (unsigned k = 0; k < 16; ++k) sum += A(row, k) * B(k, col);
    d[e] = float(sum);
  }
  w.barrier.wait();  // every lane has read the fragments
  std::memcpy(c, d, sizeof d);
}

// A shared-memory address as the kernel's descriptors hold it: here, a
// byte offset from the block's one shared array, `base`.
inline uint32_t shared_address(const void* base, uint32_t offset) {
  const auto* b = static_cast<const unsigned char*>(base);
  const unsigned char* expected = nullptr;
  if (!this_block->shared_base.compare_exchange_strong(expected, b) && expected != b) {
    std::fprintf(stderr, "emulator: shared addresses from two arrays\n");
    std::abort();
  }
  return offset;
}

inline unsigned char* dynamic_shared() { return reinterpret_cast<unsigned char*>(this_block->dynamic.data()); }

// The asynchronous operations (cp.async, wgmma) take effect as late as
// PTX allows: at the wait that covers them, not at issue. So a kernel that
// reads a stage before its copies are waited for, or reads accumulators,
// or changes A registers or a stage a pending wgmma reads, before that
// wgmma is waited for, computes wrong numbers here as it could on a GPU.
// Each thread keeps its own groups, as the hardware does.

// A cp.async of 16 bytes to shared address `to` (as shared_address
// gives): `bytes` (0 or 16) of them from `from`, zeros for the rest.
struct CopyToShared {
  uint32_t to;
  unsigned char bytes[16];
};
inline thread_local std::vector<CopyToShared> copies_open;  // issued, not committed
inline thread_local std::deque<std::vector<CopyToShared>> copy_groups;  // committed, oldest first

inline void cp_async16(uint32_t to, const void* from, uint32_t bytes) {
  if (!this_block->shared_base.load() || (bytes != 0 && bytes != 16) || to % 16 != 0 ||
      reinterpret_cast<uintptr_t>(from) % 16 != 0) {
    std::fprintf(stderr, "emulator: cp.async without a shared array, of %u bytes or misaligned\n", bytes);
    std::abort();
  }
  CopyToShared c{to, {}};
  std::memcpy(c.bytes, from, bytes);  // the kernel's global inputs do not change while it runs
  copies_open.push_back(c);
}
inline void cp_async_commit() {
  copy_groups.push_back(std::move(copies_open));
  copies_open.clear();
}
// cp.async.wait_group: all but the `pending` most recent groups land.
inline void cp_async_wait(unsigned pending) {
  unsigned char* base = const_cast<unsigned char*>(this_block->shared_base.load());
  while (copy_groups.size() > pending) {
    for (const CopyToShared& c : copy_groups.front()) std::memcpy(base + c.to, c.bytes, 16);
    copy_groups.pop_front();
  }
}

[[noreturn]] inline void wgmma_fault(const char* what) {
  std::fprintf(stderr, "emulator: wgmma %s\n", what);
  std::abort();
}

// d += A B, wgmma.mma_async.m64n64k16 with A from registers (PTX ISA
// 9.7.15.5.1.1: warp w of the warpgroup holds rows 16 w .. 16 w + 15 of A
// as mma.m16n8k16 holds its A; accumulator i of lane 4 g + t is row
// 16 w + g (+ 8 for odd i / 2), column 8 (i / 4) + 2 t (+ 1 for odd i)) and
// B (16 x 64, K-major, no swizzle) from shared memory through `descriptor`
// (9.7.15.5.1.2: start, LBO and SBO in 16-byte units at bits 0, 16 and 32;
// element (k, n) at start + (n / 8) SBO + (k / 8) LBO + (n % 8) 16 + (k % 8) 2).
// Without `accumulate` (scale-d false), d = A B. Issue records it; the
// wait that covers its group computes it, reading A, d and B then (so the
// kernel must leave them alone until then), with the warpgroup's 128
// threads, which issue and wait alike.
struct PendingWgmma {
  bool bf16, accumulate;
  float* d;
  const uint32_t* a;
  uint64_t descriptor;
};
inline thread_local std::vector<PendingWgmma> wgmmas_open;
inline thread_local std::deque<std::vector<PendingWgmma>> wgmma_groups;

#if defined(WOQ_EMULATE_WITH_THREADS)
inline void yield_fiber() {}
inline void fiber_event() {}
inline void run_block(unsigned threads, const std::function<void(unsigned)>& job) {
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (unsigned t = 0; t < threads; ++t) pool.emplace_back([&job, t] { job(t); });
  for (std::thread& th : pool) th.join();
}
#else
// A block's threads as fibers on the launching thread, run in turn until
// each reaches a barrier (or its end). What CUDA keeps per thread and this
// emulation keeps in thread_locals is swapped in and out with the fiber.
struct Fiber {
  ucontext_t context;
  std::unique_ptr<char[]> stack;
  bool done = false;
  uint3 thread_idx;
  Warp* warp = nullptr;
  unsigned lane = 0;
  std::vector<CopyToShared> copies_open;
  std::deque<std::vector<CopyToShared>> copy_groups;
  std::vector<PendingWgmma> wgmmas_open;
  std::deque<std::vector<PendingWgmma>> wgmma_groups;

  void swap_state() {
    std::swap(threadIdx, thread_idx);
    std::swap(this_warp, warp);
    std::swap(this_lane, lane);
    copies_open.swap(emu::copies_open);
    copy_groups.swap(emu::copy_groups);
    wgmmas_open.swap(emu::wgmmas_open);
    wgmma_groups.swap(emu::wgmma_groups);
  }
};

struct FiberBlock {
  static constexpr size_t kStackBytes = 256 << 10;
  ucontext_t scheduler;
  std::vector<std::unique_ptr<Fiber>> fibers;  // kept from block to block (their stacks)
  const std::function<void(unsigned)>* job = nullptr;
  unsigned current = 0;
  uint64_t events = 0;  // barrier arrivals and thread ends: progress
};
inline thread_local FiberBlock fiber_block;

inline void fiber_event() { ++fiber_block.events; }
inline void yield_fiber() {
  FiberBlock& b = fiber_block;
  swapcontext(&b.fibers[b.current]->context, &b.scheduler);
}
inline void fiber_entry() {
  FiberBlock& b = fiber_block;
  (*b.job)(b.current);
  b.fibers[b.current]->done = true;
  ++b.events;
}  // returns to the scheduler (uc_link)

inline void run_block(unsigned threads, const std::function<void(unsigned)>& job) {
  FiberBlock& b = fiber_block;
  while (b.fibers.size() < threads) {
    b.fibers.push_back(std::make_unique<Fiber>());
    b.fibers.back()->stack.reset(new char[FiberBlock::kStackBytes]);
  }
  for (unsigned t = 0; t < threads; ++t) {
    Fiber& f = *b.fibers[t];
    f.done = false;
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = f.stack.get();
    f.context.uc_stack.ss_size = FiberBlock::kStackBytes;
    f.context.uc_link = &b.scheduler;
    makecontext(&f.context, fiber_entry, 0);
    f.copies_open.clear();
    f.copy_groups.clear();
    f.wgmmas_open.clear();
    f.wgmma_groups.clear();
  }
  b.job = &job;
  in_fibers = true;
  for (unsigned left = threads; left > 0;) {
    const uint64_t before = b.events;
    for (unsigned t = 0; t < threads; ++t) {
      Fiber& f = *b.fibers[t];
      if (f.done) continue;
      b.current = t;
      f.swap_state();
      swapcontext(&b.scheduler, &f.context);
      f.swap_state();
      if (f.done) --left;
    }
    if (left > 0 && b.events == before) {
      std::fprintf(stderr, "emulator: %u threads of a block wait at barriers no other thread will reach\n", left);
      std::abort();
    }
  }
  in_fibers = false;
  b.job = nullptr;
}
#endif

inline void wgmma(bool bf16, float (&d)[32], const uint32_t (&a)[4], uint64_t descriptor, bool accumulate) {
  wgmmas_open.push_back({bf16, accumulate, d, a, descriptor});
}
inline void wgmma_commit() {
  wgmma_groups.push_back(std::move(wgmmas_open));
  wgmmas_open.clear();
}

inline void wgmma_compute(const PendingWgmma& op) {
  const unsigned thread = threadIdx.x % 128;
  WarpGroup& wg = *this_block->groups.at(threadIdx.x / 128);
  std::memcpy(wg.a[thread], op.a, sizeof wg.a[thread]);
  std::memcpy(wg.d[thread], op.d, sizeof wg.d[thread]);
  wg.descriptor[thread] = op.descriptor;
  wg.barrier.wait();
  const uint64_t descriptor = op.descriptor;
  const bool bf16 = op.bf16;
  if (wg.descriptor[0] != descriptor) wgmma_fault("descriptors differ across the warpgroup");
  if ((descriptor >> 49) & 0x7) wgmma_fault("base offset is not 0");
  if (descriptor >> 62) wgmma_fault("swizzled layouts are not emulated");
  const unsigned char* base = this_block->shared_base.load();
  if (!base) wgmma_fault("no shared array");
  const uint64_t start = (descriptor & 0x3FFF) << 4, lbo = ((descriptor >> 16) & 0x3FFF) << 4,
                 sbo = ((descriptor >> 32) & 0x3FFF) << 4;
  const auto A = [&](unsigned row, unsigned k) { return fragment_a(wg.a + 32 * (row / 16), row % 16, k, bf16); };
  const auto B = [&](unsigned k, unsigned n) {
    uint16_t bits;
    std::memcpy(&bits, base + start + (n / 8) * sbo + (k / 8) * lbo + (n % 8) * 16 + (k % 8) * 2, 2);
    return double(bits16_to_float(bits, bf16));
  };
  const unsigned warp = thread / 32, lane = thread % 32;
  float out[32];
  for (unsigned i = 0; i < 32; ++i) {
    const unsigned row = 16 * warp + lane / 4 + 8 * ((i / 2) % 2), col = 8 * (i / 4) + 2 * (lane % 4) + i % 2;
    double sum = op.accumulate ? wg.d[thread][i] : 0.0;
    for (unsigned k = 0; k < 16; ++k) sum += A(row, k) * B(k, col);
    out[i] = float(sum);
  }
  wg.barrier.wait();  // every thread has read the operands
  std::memcpy(op.d, out, sizeof out);
}

// wgmma.wait_group: all but the `pending` most recent groups complete.
inline void wgmma_wait(unsigned pending) {
  while (wgmma_groups.size() > pending) {
    for (const PendingWgmma& op : wgmma_groups.front()) wgmma_compute(op);
    wgmma_groups.pop_front();
  }
}

}  // namespace emu

inline void __syncthreads() { emu::this_block->barrier.wait(); }
inline void __syncwarp(unsigned /*mask*/ = 0xFFFFFFFFu) { emu::this_warp->barrier.wait(); }

inline float __shfl_xor_sync(unsigned /*mask*/, float v, int lane_mask) {
  emu::Warp& w = *emu::this_warp;
  w.value[emu::this_lane] = v;
  w.barrier.wait();
  const float r = w.value[emu::this_lane ^ unsigned(lane_mask)];
  w.barrier.wait();
  return r;
}

template <class T>
T __ldg(const T* p) {
  return *p;
}

inline float __uint_as_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
