// Fused dequantize + matmul on CUDA: a warp per output row streams the row's
// codes in 16-byte chunks (coalesced: a warp reads 512 contiguous bytes),
// turns each field into (q - z) in registers, multiplies it with up to
// kRowsOfX rows of X and accumulates in fp32; the group scale is applied
// once per 32-bit word. Rows of X beyond kRowsOfX take further passes over
// the weights. First version, written without a GPU at hand: correctness
// first (tests/gpu), speed to be measured on one (docs/BENCHMARKS.md).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda/launch.h"

namespace woq::kernels::cuda {
namespace {

constexpr int kWarpsPerBlock = 8;
constexpr int kRowsOfX = 8;

template <class T>
__device__ __forceinline__ float to_float(T v);
template <>
__device__ __forceinline__ float to_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

__device__ __forceinline__ void store(void* y, Dtype t, uint64_t i, float v) {
  if (t == Dtype::F32) static_cast<float*>(y)[i] = v;
  else if (t == Dtype::F16) static_cast<__half*>(y)[i] = __float2half_rn(v);
  else static_cast<__nv_bfloat16*>(y)[i] = __float2bfloat16_rn(v);
}

// Rows [m0, m0 + mt) of X (mt <= kRowsOfX) times row blockIdx.x * warps +
// warp of W.
template <class XT, int BITS>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
    matmul_kernel(DeviceMatrix w, const XT* __restrict__ x, uint64_t m0, int mt, void* y, Dtype y_type) {
  constexpr int kFields = 32 / BITS;  // codes per word
  constexpr uint32_t kMask = (1u << BITS) - 1u;
  const int lane = threadIdx.x % 32;
  const uint64_t n = uint64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (n >= w.rows) return;
  const uint64_t K = w.cols, groups = w.cols / w.group_size;
  const uint4* row = reinterpret_cast<const uint4*>(w.codes + n * w.row_words);
  const uint64_t chunks = w.row_words / 4;
  float acc[kRowsOfX];
#pragma unroll
  for (int r = 0; r < kRowsOfX; ++r) acc[r] = 0.0f;
  for (uint64_t c = lane; c < chunks; c += 32) {
    const uint4 chunk = __ldg(row + c);
    const uint32_t words[4] = {chunk.x, chunk.y, chunk.z, chunk.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const uint64_t k0 = (c * 4 + j) * kFields;
      if (k0 >= K) break;
      // A word lies in one group (group sizes are multiples of 8, or K).
      const uint64_t g = n * groups + k0 / w.group_size;
      const float s = __half2float(__ushort_as_half(__ldg(w.scales + g)));
      const float z = float(__ldg(w.zeros + g));
      float part[kRowsOfX];
#pragma unroll
      for (int r = 0; r < kRowsOfX; ++r) part[r] = 0.0f;
#pragma unroll
      for (int t = 0; t < kFields; ++t) {
        const uint64_t k = k0 + t;
        if (k >= K) break;
        const float q = float((words[j] >> (BITS * t)) & kMask) - z;  // exact
#pragma unroll
        for (int r = 0; r < kRowsOfX; ++r)
          if (r < mt) part[r] = fmaf(q, to_float(x[(m0 + r) * K + k]), part[r]);
      }
#pragma unroll
      for (int r = 0; r < kRowsOfX; ++r) acc[r] = fmaf(s, part[r], acc[r]);
    }
  }
#pragma unroll
  for (int r = 0; r < kRowsOfX; ++r)
    for (int offset = 16; offset > 0; offset /= 2) acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], offset);
  if (lane == 0) {
    const float b = w.bias ? w.bias[n] : 0.0f;
    for (int r = 0; r < mt; ++r) store(y, y_type, (m0 + r) * w.rows + n, acc[r] + b);
  }
}

template <class XT>
cudaError_t matmul_typed(const DeviceMatrix& w, const XT* x, uint64_t m, void* y, Dtype y_type, cudaStream_t stream) {
  const dim3 block(kWarpsPerBlock * 32);
  const dim3 grid(unsigned((w.rows + kWarpsPerBlock - 1) / kWarpsPerBlock));
  for (uint64_t m0 = 0; m0 < m; m0 += kRowsOfX) {
    const int mt = int(m - m0 < kRowsOfX ? m - m0 : kRowsOfX);
    if (w.code_bits == 4) matmul_kernel<XT, 4><<<grid, block, 0, stream>>>(w, x, m0, mt, y, y_type);
    else matmul_kernel<XT, 8><<<grid, block, 0, stream>>>(w, x, m0, mt, y, y_type);
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

template <class XT>
__global__ void scale_inputs_kernel(const XT* __restrict__ x, uint64_t total, uint64_t k, const float* scales,
                                    float* out) {
  for (uint64_t i = uint64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += uint64_t(gridDim.x) * blockDim.x)
    out[i] = to_float(x[i]) * scales[i % k];
}

__global__ void dequantize_kernel(DeviceMatrix w, float* out) {
  const uint64_t total = w.rows * w.cols, groups = w.cols / w.group_size;
  const int fields = 32 / int(w.code_bits);
  const uint32_t mask = (1u << w.code_bits) - 1u;
  for (uint64_t i = uint64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += uint64_t(gridDim.x) * blockDim.x) {
    const uint64_t n = i / w.cols, k = i % w.cols;
    const uint32_t word = w.codes[n * w.row_words + k / fields];
    const float q = float((word >> (w.code_bits * (k % fields))) & mask);
    const uint64_t g = n * groups + k / w.group_size;
    const float s = __half2float(__ushort_as_half(w.scales[g]));
    out[i] = s * (q - float(w.zeros[g]));  // as the CPU reference: exact product
  }
}

unsigned grid_for(uint64_t total, unsigned block) {
  const uint64_t blocks = (total + block - 1) / block;
  return unsigned(blocks < 65535 * 16 ? (blocks ? blocks : 1) : 65535 * 16);
}

}  // namespace

cudaError_t matmul(const DeviceMatrix& w, const void* x, Dtype x_type, uint64_t m, void* y, Dtype y_type,
                   cudaStream_t stream) {
  switch (x_type) {
    case Dtype::F32: return matmul_typed(w, static_cast<const float*>(x), m, y, y_type, stream);
    case Dtype::F16: return matmul_typed(w, static_cast<const __half*>(x), m, y, y_type, stream);
    case Dtype::BF16: return matmul_typed(w, static_cast<const __nv_bfloat16*>(x), m, y, y_type, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t scale_inputs(const void* x, Dtype x_type, uint64_t m, uint64_t k, const float* scales, float* out,
                         cudaStream_t stream) {
  const unsigned block = 256, grid = grid_for(m * k, block);
  switch (x_type) {
    case Dtype::F32: scale_inputs_kernel<<<grid, block, 0, stream>>>(static_cast<const float*>(x), m * k, k, scales, out); break;
    case Dtype::F16: scale_inputs_kernel<<<grid, block, 0, stream>>>(static_cast<const __half*>(x), m * k, k, scales, out); break;
    case Dtype::BF16:
      scale_inputs_kernel<<<grid, block, 0, stream>>>(static_cast<const __nv_bfloat16*>(x), m * k, k, scales, out);
      break;
  }
  return cudaGetLastError();
}

cudaError_t dequantize(const DeviceMatrix& w, float* out, cudaStream_t stream) {
  const unsigned block = 256;
  dequantize_kernel<<<grid_for(w.rows * w.cols, block), block, 0, stream>>>(w, out);
  return cudaGetLastError();
}

}  // namespace woq::kernels::cuda
