// Host-side entry points of the CUDA kernels (kernels/cuda/*.cu). Plain C++
// over the CUDA runtime API, so src/backend/cuda_backend.cpp includes it
// without nvcc. Depends on nothing of woq but itself.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace woq::kernels::cuda {

// Same values as woq_dtype.
enum class Dtype : int { F32 = 0, F16 = 1, BF16 = 2 };

// A tensor in device memory, in the GPU layout made at upload: row-major
// codes of 4 or 8 bits (other widths widened to 8-bit fields), field t of a
// word holding input k + t, each row padded to whole 16-byte chunks (zero
// codes past cols); per (row, group) an fp16 scale and a u8 zero-point;
// optional fp32 bias.
struct DeviceMatrix {
  uint64_t rows = 0, cols = 0;
  uint32_t group_size = 0;
  uint32_t code_bits = 0;  // 4 or 8
  uint64_t row_words = 0;  // u32 words per row, a multiple of 4
  const uint32_t* codes = nullptr;
  const uint16_t* scales = nullptr;  // rows x groups, fp16 bits
  const uint8_t* zeros = nullptr;    // rows x groups
  const float* bias = nullptr;       // rows, or null
};

// Y[m][n] = sum_k X[m][k] W_hat[n][k] (+ bias[n]), fp32 accumulation; X is
// m x cols of x_type, Y m x rows of y_type, both device memory. Each row of
// Y is computed the same way whatever m is. Asynchronous on `stream`.
cudaError_t matmul(const DeviceMatrix& w, const void* x, Dtype x_type, uint64_t m, void* y, Dtype y_type,
                   cudaStream_t stream);

// out[m][k] = X[m][k] * scales[k] in fp32 (AWQ's input scales), device memory.
cudaError_t scale_inputs(const void* x, Dtype x_type, uint64_t m, uint64_t k, const float* scales, float* out,
                         cudaStream_t stream);

// out = W_hat (rows x cols, fp32, row-major, no bias), device memory.
cudaError_t dequantize(const DeviceMatrix& w, float* out, cudaStream_t stream);

}  // namespace woq::kernels::cuda
