// The objects behind the C API's opaque handles.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "backend/backend.h"
#include "fileformat/reader.h"
#include "runtime/thread_pool.h"

namespace woq {

class Context {
 public:
  // threads <= 0 picks one per online CPU. Throws Error(Unsupported) for a
  // backend this build lacks.
  Context(BackendKind kind, int threads, int device_index);

  BackendKind kind() const { return backend_->kind(); }
  int threads() const { return pool_.threads(); }
  Backend& backend() { return *backend_; }
  ThreadPool& pool() { return pool_; }
  format::ParallelFor parallel_for();

 private:
  ThreadPool pool_;
  std::unique_ptr<Backend> backend_;
};

class Tensor {
 public:
  Tensor(Context* owner, std::unique_ptr<BackendTensor> impl) : owner_(owner), impl_(std::move(impl)) {}
  Context* owner() const { return owner_; }
  const BackendTensor& impl() const { return *impl_; }
  uint64_t rows() const { return impl_->rows; }
  uint64_t cols() const { return impl_->cols; }

 private:
  Context* owner_;
  std::unique_ptr<BackendTensor> impl_;
};

class Buffer {
 public:
  Buffer(Context* owner, std::unique_ptr<BackendBuffer> impl) : owner_(owner), impl_(std::move(impl)) {}
  Context* owner() const { return owner_; }
  BackendBuffer& impl() const { return *impl_; }

 private:
  Context* owner_;
  std::unique_ptr<BackendBuffer> impl_;
};

// Reads rows [row_begin, row_end) of a stored tensor into the canonical
// layout (chunks decode in parallel) and validates the decoded data.
QuantizedMatrix read_quantized(const format::Reader& file, const format::TensorRecord& record, uint64_t row_begin,
                               uint64_t row_end, const format::ParallelFor& parallel);

// Y = X . W_hat^T with every shape and dtype checked first.
void checked_matmul(Context& ctx, const Tensor& w, const void* x, DType x_dtype, uint64_t m, void* y, DType y_dtype);

// Maps a fileformat error onto the core's Error.
[[noreturn]] void rethrow_format_error(const format::Error& e);

}  // namespace woq
