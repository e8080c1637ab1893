#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "backend/backend.h"
#include "kernels/cpu/numeric.h"
#include "kernels/cpu/reference.h"
#include "runtime/error.h"
#include "runtime/thread_pool.h"

namespace woq {
namespace {

// CPU tensors keep the canonical layout; SIMD kernels with their own
// layouts are repacked here at upload.
class CpuTensor : public BackendTensor {
 public:
  explicit CpuTensor(QuantizedMatrix&& m) : matrix(std::move(m)) {
    rows = matrix.rows;
    cols = matrix.cols;
  }
  QuantizedMatrix matrix;
};

class CpuBuffer : public BackendBuffer {
 public:
  explicit CpuBuffer(uint64_t bytes) : size_(bytes) {
    // 64-byte alignment suits every SIMD load width.
    data_ = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!data_) throw std::bad_alloc();
    std::memset(data_, 0, bytes);
  }
  ~CpuBuffer() override { std::free(data_); }
  uint64_t size() const override { return size_; }
  void write(uint64_t offset, const void* src, uint64_t bytes) override {
    std::memcpy(static_cast<uint8_t*>(data_) + offset, src, bytes);
  }
  void read(uint64_t offset, void* dst, uint64_t bytes) const override {
    std::memcpy(dst, static_cast<const uint8_t*>(data_) + offset, bytes);
  }
  void* data() override { return data_; }

 private:
  void* data_;
  uint64_t size_;
};

class CpuBackend : public Backend {
 public:
  CpuBackend(BackendKind kind, ThreadPool& pool) : kind_(kind), pool_(pool) {}
  BackendKind kind() const override { return kind_; }

  std::unique_ptr<BackendTensor> upload(QuantizedMatrix&& matrix) override {
    return std::make_unique<CpuTensor>(std::move(matrix));
  }

  std::unique_ptr<BackendBuffer> allocate(uint64_t bytes) override { return std::make_unique<CpuBuffer>(bytes); }

  void matmul(const BackendTensor& w, const void* x, DType x_dtype, uint64_t m, void* y, DType y_dtype) override {
    const kernels::QuantView view = static_cast<const CpuTensor&>(w).matrix.view();
    if (kind_ == BackendKind::CpuReference) {
      kernels::reference_matmul(view, x, to_act(x_dtype), m, y, to_act(y_dtype), 0, view.rows);
      return;
    }
    // Split output rows into blocks; each block reads its weights once.
    const uint64_t block = 64;
    const uint64_t blocks = (view.rows + block - 1) / block;
    pool_.parallel_for(blocks, [&](size_t b) {
      const uint64_t begin = b * block, end = std::min(view.rows, begin + block);
      kernels::reference_matmul(view, x, to_act(x_dtype), m, y, to_act(y_dtype), begin, end);
    });
  }

  void dequantize(const BackendTensor& w, void* out, DType out_dtype) override {
    const kernels::QuantView view = static_cast<const CpuTensor&>(w).matrix.view();
    std::vector<float> row(view.cols);
    for (uint64_t n = 0; n < view.rows; ++n) {
      kernels::reference_dequantize_row(view, n, row.data());
      for (uint64_t k = 0; k < view.cols; ++k) {
        const uint64_t i = n * view.cols + k;
        switch (out_dtype) {
          case DType::F32: static_cast<float*>(out)[i] = row[k]; break;
          case DType::F16: static_cast<uint16_t*>(out)[i] = kernels::float_to_half(row[k]); break;
          case DType::BF16: static_cast<uint16_t*>(out)[i] = kernels::float_to_bf16(row[k]); break;
        }
      }
    }
  }

 private:
  BackendKind kind_;
  ThreadPool& pool_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(BackendKind kind, ThreadPool& pool) {
  return std::make_unique<CpuBackend>(kind, pool);
}

}  // namespace woq
