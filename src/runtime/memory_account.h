// What a context's backend memory holds (woq_context_memory).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

namespace woq {

// Bytes a context's tensors and buffers hold in its backend's memory
// (woq_context_memory), and the most they ever held together.
class MemoryAccount {
 public:
  void add(uint64_t bytes);
  void remove(uint64_t bytes) { in_use_.fetch_sub(bytes); }
  uint64_t in_use() const { return in_use_.load(); }
  uint64_t peak() const { return peak_.load(); }

 private:
  std::atomic<uint64_t> in_use_{0}, peak_{0};
};

// One tensor's or buffer's bytes on its context's account, from its upload
// to its destruction. Shares the account, so a handle destroyed after its
// context still settles safely.
class MemoryCharge {
 public:
  MemoryCharge(std::shared_ptr<MemoryAccount> account, uint64_t bytes) : account_(std::move(account)), bytes_(bytes) {
    account_->add(bytes_);
  }
  ~MemoryCharge() { account_->remove(bytes_); }
  MemoryCharge(const MemoryCharge&) = delete;
  MemoryCharge& operator=(const MemoryCharge&) = delete;

 private:
  std::shared_ptr<MemoryAccount> account_;
  uint64_t bytes_;
};

}  // namespace woq
