// Shared by the CPU benchmarks: timing, the machine's read bandwidth and
// last-level cache size, and error checks that end the run.
#pragma once

#include <immintrin.h>
#include <woq.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

namespace woq_bench {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

inline void check(woq_status s, const char* what) {
  if (s != WOQ_OK) {
    std::fflush(stdout);  // what was printed so far comes first
    std::fprintf(stderr, "%s: %s: %s\n", what, woq_status_string(s), woq_last_error());
    std::exit(1);
  }
}

// A CPU context of `threads` threads (0: one per online CPU); the name of
// the kernels it picked goes to *kernel when one is given.
inline woq_context* cpu_context(int threads, std::string* kernel = nullptr) {
  woq_context_options o;
  woq_context_options_init(&o);
  o.threads = threads;
  woq_context* ctx = nullptr;
  check(woq_context_create(&o, &ctx), "woq_context_create");
  if (kernel) {
    const char* name = "";
    woq_context_kernel(ctx, &name);
    *kernel = name;
  }
  return ctx;
}

// One tensor loaded from `file` for each of `count` names, name(i).
template <class Name>
std::vector<woq_tensor*> load_tensors(woq_context* ctx, woq_file* file, size_t count, Name name) {
  std::vector<woq_tensor*> tensors;
  for (size_t i = 0; i < count; ++i) {
    woq_tensor* t = nullptr;
    check(woq_tensor_load(ctx, file, name(i).c_str(), &t), "woq_tensor_load");
    tensors.push_back(t);
  }
  return tensors;
}

struct Shape {
  std::string name;  // "NxK"
  uint64_t n, k;
};
// Read bandwidth: threads each sum a disjoint part of a 1 GiB array, with or
// without the software prefetches the GEMV kernels issue (L1 2 KiB and L2
// 12 KiB ahead, kernels/cpu/packed_kernels.inl); whichever reads faster.
template <bool kPrefetch>
__attribute__((target("avx2"))) uint64_t sum_range(const uint64_t* p, size_t n) {
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i + 16 <= n; i += 16) {
    if constexpr (kPrefetch) {
      for (size_t line = 0; line < 16; line += 8) {
        __builtin_prefetch(p + i + line + 256, 0, 3);
        __builtin_prefetch(p + i + line + 1536, 0, 2);
      }
    }
    a0 = _mm256_add_epi64(a0, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i)));
    a1 = _mm256_add_epi64(a1, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 4)));
    a2 = _mm256_add_epi64(a2, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 8)));
    a3 = _mm256_add_epi64(a3, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 12)));
  }
  __m256i s = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
  alignas(32) uint64_t out[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(out), s);
  return out[0] + out[1] + out[2] + out[3];
}

inline double read_bandwidth(int threads, size_t bytes) {
  static uint64_t* buf = nullptr;
  static size_t buf_bytes = 0;
  if (buf_bytes < bytes) {
    std::free(buf);
    buf = static_cast<uint64_t*>(std::aligned_alloc(64, bytes));
    for (size_t i = 0; i < bytes / 8; ++i) buf[i] = i;
    buf_bytes = bytes;
  }
  const size_t n = bytes / 8, part = n / threads / 16 * 16;
  double best = 0;
  volatile uint64_t sink = 0;
  // Best of at least 10 passes and 2 s, as long as woq's own timings sample.
  const auto start = Clock::now();
  for (int rep = 0; rep < 10 || seconds_since(start) < 2.0; ++rep) {
    std::vector<uint64_t> sums(threads);
    auto t0 = Clock::now();
    std::vector<std::thread> ts;
    for (int i = 0; i < threads; ++i)
      ts.emplace_back([&, i, rep] {
        sums[i] = rep % 2 ? sum_range<true>(buf + i * part, part) : sum_range<false>(buf + i * part, part);
      });
    for (auto& t : ts) t.join();
    const double s = seconds_since(t0);
    for (uint64_t v : sums) sink = sink + v;
    best = std::max(best, double(part) * threads * 8 / s / 1e9);  // the peak: a conservative denominator
  }
  return best;
}

// Size of the largest CPU cache (sysfs), or 32 MiB when it cannot be read.
inline uint64_t last_level_cache_bytes() {
  uint64_t best = 0;
  for (int index = 0; index < 8; ++index) {
    const std::string path = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/size";
    FILE* f = std::fopen(path.c_str(), "r");
    if (!f) continue;
    unsigned long long v = 0;
    char unit = 0;
    if (std::fscanf(f, "%llu%c", &v, &unit) >= 1)
      best = std::max<uint64_t>(best, v * (unit == 'K' ? 1024ull : unit == 'M' ? 1048576ull : 1ull));
    std::fclose(f);
  }
  return best ? best : 32ull << 20;
}

// ||Y - Y64|| / ||Y64|| over X's first (up to) 4 rows, where Y64 is X W^T
// in float64 from the same X values: y [M, N], x [M, K], w [N, K].
inline double reference_error(const float* y, const float* x, uint64_t m, uint64_t n, uint64_t k, const float* w) {
  double diff = 0, norm = 0;
  for (uint64_t r = 0; r < std::min<uint64_t>(m, 4); ++r)
    for (uint64_t j = 0; j < n; ++j) {
      double want = 0;
      for (uint64_t i = 0; i < k; ++i) want += double(x[r * k + i]) * double(w[j * k + i]);
      diff += (y[r * n + j] - want) * (y[r * n + j] - want);
      norm += want * want;
    }
  return std::sqrt(diff / norm);
}

// Best-of-reps time of `pass`, after one warm-up pass.
template <class Pass>
double time_pass(Pass&& pass, double min_seconds, int min_reps) {
  pass();
  double best = 1e30, spent = 0;
  for (int rep = 0; rep < min_reps || spent < min_seconds; ++rep) {
    auto t0 = Clock::now();
    pass();
    const double s = seconds_since(t0);
    best = std::min(best, s);
    spent += s;
    if (rep > 200) break;
  }
  return best;
}

}  // namespace woq_bench
