#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <thread>

#include "runtime/thread_pool.h"

TEST(ThreadPool, RunsEveryIndexExactlyOnce) {
  woq::ThreadPool pool(4);
  EXPECT_EQ(pool.threads(), 4);
  for (size_t n : {0u, 1u, 3u, 1000u}) {
    std::vector<std::atomic<int>> hits(n);
    pool.parallel_for(n, [&](size_t i) { hits[i]++; });
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << i;
  }
}

TEST(ThreadPool, PropagatesExceptionsAndStaysUsable) {
  woq::ThreadPool pool(3);
  EXPECT_THROW(pool.parallel_for(100, [](size_t i) { if (i == 57) throw std::runtime_error("boom"); }),
               std::runtime_error);
  std::atomic<int> sum{0};
  pool.parallel_for(10, [&](size_t i) { sum += int(i); });
  EXPECT_EQ(sum.load(), 45);
}

TEST(ThreadPool, ConcurrentAndNestedCallersFinish) {
  woq::ThreadPool pool(2);
  std::atomic<long> total{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 4; ++c)
    callers.emplace_back([&] {
      for (int rep = 0; rep < 50; ++rep)
        pool.parallel_for(8, [&](size_t) { pool.parallel_for(4, [&](size_t) { total++; }); });
    });
  for (auto& t : callers) t.join();
  EXPECT_EQ(total.load(), 4L * 50 * 8 * 4);
}
