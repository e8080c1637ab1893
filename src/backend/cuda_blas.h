// cuBLAS for the CUDA backend's dequantize + cuBLAS path (large M), loaded
// at run time with dlopen: libwoq.so needs no CUDA library to load, and a
// machine without cuBLAS loses only this path.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/launch.h"

namespace woq {

class CudaBlas {
 public:
  // Loads libcublas (.so.13, else .so.12) once per process and creates a
  // handle on the current device that queues on `stream`. Throws
  // Status::Unsupported naming what could not be loaded.
  explicit CudaBlas(cudaStream_t stream);
  ~CudaBlas();
  CudaBlas(const CudaBlas&) = delete;
  CudaBlas& operator=(const CudaBlas&) = delete;

  // Y[i][j] = sum_l X[i][l] W[j][l] for i < m, j < n, fp32 accumulation:
  // W n x k and X m x k row-major of ab_type (F16 or BF16), Y m rows of
  // y_stride elements of y_type (ab_type or F32). Queued on the stream.
  void gemm(uint64_t n, uint64_t m, uint64_t k, const void* w, const void* x, kernels::cuda::Dtype ab_type, void* y,
            kernels::cuda::Dtype y_type, uint64_t y_stride);

 private:
  void* handle_ = nullptr;
};

}  // namespace woq
