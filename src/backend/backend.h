// What a backend provides: tensors in its own layout, memory it owns, and
// the fused dequantize + matmul. The CPU backends live in cpu_backend.cpp,
// the CUDA backend in cuda_backend.cpp.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include "quant/quantized_matrix.h"
#include "runtime/dtype.h"
#include "runtime/memory_account.h"

namespace woq {

class ThreadPool;

// The rows of a stored tensor, readable in blocks.
struct RowSource {
  uint64_t rows = 0, cols = 0;
  uint32_t bits = 0, group_size = 0;
  uint64_t rows_per_chunk = 0;  // blocks of a multiple of it decode each chunk once
  // Rows [row_begin, row_end) in the canonical layout, validated.
  std::function<QuantizedMatrix(uint64_t row_begin, uint64_t row_end)> read;
};

enum class BackendKind { CpuReference = 0, Cpu = 1, Cuda = 2 };

// A tensor resident in a backend. Immutable after upload.
class BackendTensor {
 public:
  virtual ~BackendTensor() = default;
  uint64_t rows = 0;
  uint64_t cols = 0;
  uint64_t bytes = 0;  // backend memory it holds (woq_context_memory)
};

// Backend-owned memory of a fixed size.
class BackendBuffer {
 public:
  virtual ~BackendBuffer() = default;
  virtual uint64_t size() const = 0;
  virtual void write(uint64_t offset, const void* src, uint64_t bytes) = 0;
  virtual void read(uint64_t offset, void* dst, uint64_t bytes) const = 0;
  // Address kernels of this backend use (host memory for CPU backends).
  virtual void* data() = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual BackendKind kind() const = 0;
  // Which kernels run: "reference", "portable", "avx2", "avx512", ...
  virtual const char* kernel_name() const = 0;
  virtual std::unique_ptr<BackendTensor> upload(QuantizedMatrix&& matrix) = 0;
  // A tensor that can be read in blocks of rows (a file's chunks decode
  // per block). By default read whole and uploaded; the CUDA backend copies
  // one block to the device while the next one is read.
  virtual std::unique_ptr<BackendTensor> upload_rows(const RowSource& source) {
    return upload(source.read(0, source.rows));
  }
  virtual std::unique_ptr<BackendBuffer> allocate(uint64_t bytes) = 0;
  // Shapes are already validated by the caller; x and y are backend memory.
  virtual void matmul(const BackendTensor& w, const void* x, DType x_dtype, uint64_t m, void* y,
                      DType y_dtype) = 0;
  virtual void dequantize(const BackendTensor& w, void* out, DType out_dtype) = 0;
  // Scale and zero-point of (row, group); both are in range (checked by the caller).
  virtual void group(const BackendTensor& w, uint64_t row, uint64_t group, float* scale, int32_t* zero) = 0;
  uint64_t groups_of(const BackendTensor& w) const { return w.cols / group_size_of(w); }
  virtual uint32_t group_size_of(const BackendTensor& w) const = 0;
  // The fp32 bias (rows values) into host memory; false when there is none.
  virtual bool bias(const BackendTensor& w, float* out) = 0;
  // Waits for queued work (asynchronous backends); throws its first failure.
  virtual void synchronize() {}
  // matmul on memory a caller of woq_matmul passed (host memory for the CPU
  // backends; host or device memory for CUDA, which copies host X and Y
  // through the device and waits). Shapes are already validated.
  virtual void matmul_caller_memory(const BackendTensor& w, const void* x, DType x_dtype, uint64_t m, void* y,
                                    DType y_dtype) {
    matmul(w, x, x_dtype, m, y, y_dtype);
  }
};

// The scalar oracle (single-threaded) or the multithreaded CPU backend.
std::unique_ptr<Backend> make_cpu_backend(BackendKind kind, ThreadPool& pool);
// GPU `device_index` (builds with WOQ_HAVE_CUDA only), on `stream` (a
// cudaStream_t the caller owns) or, when null, a stream of its own; throws
// Error(Unsupported) when no CUDA device is usable.
// Memory the backend keeps for itself between calls (the split kernel's
// workspace) is charged to `account`.
std::unique_ptr<Backend> make_cuda_backend(int device_index, void* stream, std::shared_ptr<MemoryAccount> account);

}  // namespace woq
