// A persistent pool of worker threads. parallel_for splits work into pieces
// that workers and the calling thread take from a shared queue; the caller
// always helps with its own job, so several host threads (or nested calls)
// can use one pool at once without deadlock.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace woq {

class ThreadPool {
 public:
  // `threads` counts the caller: threads - 1 workers are started.
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs body(i) for every i in [0, count). Returns when all are done;
  // rethrows the first exception a body threw.
  void parallel_for(size_t count, const std::function<void(size_t)>& body);

 private:
  struct Job;
  void worker_loop();
  static bool run_one(Job& job);

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::vector<std::thread> workers_;
  bool stop_ = false;
  // Lock-free hints for spinning threads: jobs in queue_, and stop_.
  std::atomic<size_t> queued_{0};
  std::atomic<bool> stopping_{false};
};

// Number of online CPUs (at least 1).
int hardware_threads();

}  // namespace woq
