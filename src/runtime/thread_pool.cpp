#include "runtime/thread_pool.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <exception>

namespace woq {
namespace {

// Workers poll for the next job, and a caller for its job's end, this long
// before sleeping on a condition variable: a decode loop's matmuls follow
// each other within it, and waking a sleeping thread took tens of
// microseconds here (docs/CPU_KERNELS.md, Threads).
constexpr auto kSpin = std::chrono::microseconds(200);

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Polls `ready` for up to kSpin; true when it held.
template <class Ready>
bool spin_until(Ready&& ready) {
  const auto deadline = std::chrono::steady_clock::now() + kSpin;
  for (unsigned i = 1;; ++i) {
    if (ready()) return true;
    cpu_relax();
    if (i % 64 == 0 && std::chrono::steady_clock::now() > deadline) return ready();
  }
}

}  // namespace

struct ThreadPool::Job {
  const std::function<void(size_t)>* body = nullptr;
  size_t count = 0;
  std::atomic<size_t> next{0};
  std::atomic<size_t> done{0};
  std::mutex mutex;
  std::condition_variable finished;
  std::exception_ptr error;
};

int hardware_threads() {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<int>(n) : 1;
}

ThreadPool::ThreadPool(int threads) {
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
    stopping_.store(true);
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

// Takes and runs one piece of `job`; false when none was left to take.
bool ThreadPool::run_one(Job& job) {
  size_t i = job.next.fetch_add(1);
  if (i >= job.count) return false;
  try {
    (*job.body)(i);
  } catch (...) {
    std::lock_guard<std::mutex> lock(job.mutex);
    if (!job.error) job.error = std::current_exception();
  }
  if (job.done.fetch_add(1) + 1 == job.count) {
    std::lock_guard<std::mutex> lock(job.mutex);
    job.finished.notify_all();
  }
  return true;
}

void ThreadPool::worker_loop() {
  for (;;) {
    std::shared_ptr<Job> job;
    spin_until([this] { return queued_.load(std::memory_order_acquire) > 0 || stopping_.load(); });
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (stop_ && queue_.empty()) return;
      job = queue_.front();
      if (job->next.load() >= job->count) {
        queue_.pop_front();  // fully handed out: stop offering it
        queued_.fetch_sub(1);
        continue;
      }
    }
    while (run_one(*job)) {
    }
  }
}

void ThreadPool::parallel_for(size_t count, const std::function<void(size_t)>& body) {
  if (count == 0) return;
  if (count == 1 || workers_.empty()) {
    for (size_t i = 0; i < count; ++i) body(i);
    return;
  }
  auto job = std::make_shared<Job>();
  job->body = &body;
  job->count = count;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    queue_.push_back(job);
    queued_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();
  while (run_one(*job)) {
  }
  if (!spin_until([&] { return job->done.load() == job->count; })) {
    std::unique_lock<std::mutex> lock(job->mutex);
    job->finished.wait(lock, [&] { return job->done.load() == job->count; });
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = queue_.begin(); it != queue_.end(); ++it)
      if (*it == job) {
        queue_.erase(it);
        queued_.fetch_sub(1);
        break;
      }
  }
  if (job->error) std::rethrow_exception(job->error);
}

}  // namespace woq
