// Host-side entry points of the CUDA kernels (kernels/cuda/*.cu). Plain C++
// over the CUDA runtime API, so src/backend/cuda_backend.cpp includes it
// without nvcc. Depends on nothing of woq but itself.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace woq::kernels::cuda {

// Same values as woq_dtype.
enum class Dtype : int { F32 = 0, F16 = 1, BF16 = 2 };

// A tensor in device memory in the fragment layout (layout.h): units of
// 16 rows x step_cols(field) codes, scales and zero-points group-major over
// padded rows; optional fp32 bias.
struct DeviceMatrix {
  uint64_t rows = 0, cols = 0;
  uint32_t group_size = 0;           // a multiple of 32, or cols
  uint32_t group_shift = 64;         // column >> group_shift is its group; 64: divide instead
  uint32_t field = 0;                // 4 or 8 bits per code
  uint64_t slices = 0, steps = 0;    // units per column of slices, per slice
  const uint32_t* units = nullptr;   // slices x steps units of 512 bytes
  const uint16_t* scales = nullptr;  // groups x (slices * 16), fp16 bits
  const uint8_t* zeros = nullptr;    // groups x (slices * 16)
  const float* bias = nullptr;       // rows, or null
};

// Which tensor-core kernel runs fp16 / bf16 X: by M (Auto), or one forced
// for every M (all compute the same bits; forcing one lets a benchmark
// time each at any M). Wgmma needs `wgmma` (wgmma_supported).
enum class Kernel { Auto, Gemv, Split, Tile, Wgmma };
struct KernelChoice {
  KernelChoice(Kernel k = Kernel::Auto, bool hopper = false, int sms = 0)
      : kernel(k), wgmma(hopper), multiprocessors(sms) {}
  Kernel kernel;
  bool wgmma;           // the device runs the wgmma kernel (Auto takes it for large M)
  int multiprocessors;  // the device's, to size blocks to (0: unknown)
};

// Whether `device` (the current device) runs this binary's wgmma kernel:
// compute capability 9.0 and sm_90a code built in (one tiny kernel on a
// stream of its own finds out). Synchronous; *out is false on any error.
cudaError_t wgmma_supported(int device, bool* out);

// Y[m][n] = sum_k X[m][k] W_hat[n][k] (+ bias[n]), fp32 accumulation; X is
// m x cols of x_type, Y m x rows of y_type, both device memory. fp16 / bf16
// X run on tensor cores (mma.m16n8k16 with the exact integers q - z as B,
// the group scale applied in fp32), fp32 X on fp32 FMAs. Each row of Y is
// computed the same way whatever m is. Asynchronous on `stream`.
// workspace: device memory of matmul_workspace_floats(...) floats (may be
// null when that is 0), used by this call until its kernels are done.
cudaError_t matmul(const DeviceMatrix& w, const void* x, Dtype x_type, uint64_t m, void* y, Dtype y_type,
                   cudaStream_t stream, KernelChoice choice = {}, float* workspace = nullptr);
uint64_t matmul_workspace_floats(const DeviceMatrix& w, Dtype x_type, uint64_t m, KernelChoice choice = {});

// out[m][k] = X[m][k] * scales[k] in fp32 (AWQ's input scales), device memory.
cudaError_t scale_inputs(const void* x, Dtype x_type, uint64_t m, uint64_t k, const float* scales, float* out,
                         cudaStream_t stream);

// out[m][i] = X[m][columns[i]] in x_type, bit for bit (an act-order
// tensor's input permutation), device memory.
cudaError_t permute_inputs(const void* x, Dtype x_type, uint64_t m, uint64_t k, const uint32_t* columns, void* out,
                           cudaStream_t stream);

// out = rows [first_row, first_row + rows) of W_hat (row-major, cols a
// row, no bias) as out_type, device memory: each element s * (q - z) in
// fp32 (the CPU reference's product), rounded to nearest for 16-bit types.
// first_row is a multiple of 16 (a slice).
cudaError_t dequantize_rows(const DeviceMatrix& w, uint64_t first_row, uint64_t rows, Dtype out_type, void* out,
                            cudaStream_t stream);

// Y[i][j] += bias[j] for an m x n Y of y_type (rounded once more for
// 16-bit types), device memory.
cudaError_t add_bias(void* y, Dtype y_type, uint64_t m, uint64_t n, const float* bias, cudaStream_t stream);

}  // namespace woq::kernels::cuda
