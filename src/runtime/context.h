// The objects behind the C API's opaque handles.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "backend/backend.h"
#include "fileformat/reader.h"
#include "runtime/memory_account.h"
#include "runtime/thread_pool.h"

namespace woq {

class Context {
 public:
  // threads <= 0 picks one per online CPU; cuda_stream: a host-supplied
  // cudaStream_t for the CUDA backend, or null. Throws Error(Unsupported)
  // for a backend this build lacks.
  Context(BackendKind kind, int threads, int device_index, void* cuda_stream = nullptr);

  BackendKind kind() const { return backend_->kind(); }
  int threads() const { return pool_.threads(); }
  Backend& backend() { return *backend_; }
  ThreadPool& pool() { return pool_; }
  format::ParallelFor parallel_for();
  const std::shared_ptr<MemoryAccount>& memory() const { return memory_; }

 private:
  ThreadPool pool_;
  std::shared_ptr<MemoryAccount> memory_ = std::make_shared<MemoryAccount>();  // before backend_, which may charge it
  std::unique_ptr<Backend> backend_;
};

class Tensor {
 public:
  Tensor(Context* owner, std::unique_ptr<BackendTensor> impl)
      : owner_(owner), impl_(std::move(impl)), charge_(owner->memory(), impl_->bytes) {}
  Context* owner() const { return owner_; }
  const BackendTensor& impl() const { return *impl_; }
  uint64_t rows() const { return impl_->rows; }
  uint64_t cols() const { return impl_->cols; }

 private:
  Context* owner_;
  std::unique_ptr<BackendTensor> impl_;
  MemoryCharge charge_;
};

class Buffer {
 public:
  Buffer(Context* owner, std::unique_ptr<BackendBuffer> impl)
      : owner_(owner), impl_(std::move(impl)), charge_(owner->memory(), impl_->size()) {}
  Context* owner() const { return owner_; }
  BackendBuffer& impl() const { return *impl_; }

 private:
  Context* owner_;
  std::unique_ptr<BackendBuffer> impl_;
  MemoryCharge charge_;
};

// Throws Error(Shape) unless row_begin < row_end <= the tensor's rows.
void check_row_range(const format::TensorRecord& record, uint64_t row_begin, uint64_t row_end);

// Reads rows [row_begin, row_end) of a stored tensor into the canonical
// layout (chunks decode in parallel) and validates the decoded data.
QuantizedMatrix read_quantized(const format::Reader& file, const format::TensorRecord& record, uint64_t row_begin,
                               uint64_t row_end, const format::ParallelFor& parallel);

// Y = X . W_hat^T with every shape and dtype checked first; caller_memory:
// x and y come from the caller (woq_matmul), not from woq_buffers, so the
// backend finds out what memory they are.
void checked_matmul(Context& ctx, const Tensor& w, const void* x, DType x_dtype, uint64_t m, void* y, DType y_dtype,
                    bool caller_memory);

// Maps a fileformat error onto the core's Error.
[[noreturn]] void rethrow_format_error(const format::Error& e);

}  // namespace woq
