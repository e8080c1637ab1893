// An emulated cuBLAS (libwoq_emulated_cublas.so): the five entry points
// src/backend/cuda_blas.cpp binds with dlopen, on the CPU over the
// emulated runtime's "device memory" (host memory), so that the backend's
// dequantize + cuBLAS path runs in woq_gpu_tests_emulated. cublasGemmEx
// follows cuBLAS's documented column-major contract, written from that
// contract and not from the backend's call: C (m x n, ldc) = alpha op(A)
// op(B) + beta C, op(A) m x k, op(B) k x n, with the leading dimensions
// checked as cuBLAS checks them. Sums in double, rounded once into C's
// type (at least as exact as CUBLAS_COMPUTE_32F). The product is queued on
// the handle's stream (cudaLaunchHostFunc) and runs in its order; one
// queued during a graph capture is refused, as not emulated.
#include <cublas_api.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "kernels/cpu/numeric.h"

struct cublasContext {
  cudaStream_t stream = nullptr;
};

namespace {

double element(const void* p, cudaDataType t, uint64_t i) {
  if (t == CUDA_R_32F) return static_cast<const float*>(p)[i];
  const uint16_t bits = static_cast<const uint16_t*>(p)[i];
  return t == CUDA_R_16F ? woq::kernels::half_to_float(bits) : woq::kernels::bf16_to_float(bits);
}

void put(void* p, cudaDataType t, uint64_t i, double v) {
  if (t == CUDA_R_32F) static_cast<float*>(p)[i] = float(v);
  else if (t == CUDA_R_16F) static_cast<uint16_t*>(p)[i] = woq::kernels::float_to_half(float(v));
  else static_cast<uint16_t*>(p)[i] = woq::kernels::float_to_bf16(float(v));
}

bool known(cudaDataType t) { return t == CUDA_R_32F || t == CUDA_R_16F || t == CUDA_R_16BF; }

// One cublasGemmEx, C = alpha op(A) op(B) + beta C, column-major.
struct Product {
  int m, n, k;
  bool ta, tb;
  const void* A;
  cudaDataType Atype;
  int lda;
  const void* B;
  cudaDataType Btype;
  int ldb;
  void* C;
  cudaDataType Ctype;
  int ldc;
  double alpha, beta;
};

void CUDART_CB run_product(void* data) {
  const std::unique_ptr<Product> p(static_cast<Product*>(data));
  const int m = p->m, n = p->n, k = p->k;
  // op(A) as m rows and op(B) as n columns of k exact doubles, then the sums.
  std::vector<double> a(uint64_t(m) * k), b(uint64_t(n) * k);
  for (int i = 0; i < m; ++i)
    for (int l = 0; l < k; ++l)
      a[uint64_t(i) * k + l] =
          element(p->A, p->Atype, p->ta ? uint64_t(l) + uint64_t(i) * p->lda : uint64_t(i) + uint64_t(l) * p->lda);
  for (int j = 0; j < n; ++j)
    for (int l = 0; l < k; ++l)
      b[uint64_t(j) * k + l] =
          element(p->B, p->Btype, p->tb ? uint64_t(j) + uint64_t(l) * p->ldb : uint64_t(l) + uint64_t(j) * p->ldb);
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      const double* row = a.data() + uint64_t(i) * k;
      const double* col = b.data() + uint64_t(j) * k;
      double sum = 0;
      for (int l = 0; l < k; ++l) sum += row[l] * col[l];
      const uint64_t c_at = uint64_t(i) + uint64_t(j) * p->ldc;
      // beta 0: C is not read (it may hold NaNs), as cuBLAS documents.
      put(p->C, p->Ctype, c_at, p->alpha * sum + (p->beta != 0 ? p->beta * element(p->C, p->Ctype, c_at) : 0.0));
    }
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) cublasStatus_t cublasCreate_v2(cublasHandle_t* handle) {
  if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
  *handle = new cublasContext;
  return CUBLAS_STATUS_SUCCESS;
}

__attribute__((visibility("default"))) cublasStatus_t cublasDestroy_v2(cublasHandle_t handle) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

__attribute__((visibility("default"))) cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, cudaStream_t stream) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}

__attribute__((visibility("default"))) const char* cublasGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "CUBLAS_STATUS (emulated: unnamed)";
  }
}

__attribute__((visibility("default"))) cublasStatus_t cublasGemmEx(
    cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k, const void* alpha,
    const void* A, cudaDataType Atype, int lda, const void* B, cudaDataType Btype, int ldb, const void* beta, void* C,
    cudaDataType Ctype, int ldc, cublasComputeType_t compute, cublasGemmAlgo_t /*algo*/) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  const bool ta = transa == CUBLAS_OP_T, tb = transb == CUBLAS_OP_T;
  if ((transa != CUBLAS_OP_N && !ta) || (transb != CUBLAS_OP_N && !tb) || m < 0 || n < 0 || k < 0)
    return CUBLAS_STATUS_INVALID_VALUE;
  if (lda < (ta ? k : m) || lda < 1 || ldb < (tb ? n : k) || ldb < 1 || ldc < m || ldc < 1)
    return CUBLAS_STATUS_INVALID_VALUE;
  if (!known(Atype) || Atype != Btype || !known(Ctype) || compute != CUBLAS_COMPUTE_32F)
    return CUBLAS_STATUS_NOT_SUPPORTED;
  if (Atype == CUDA_R_32F || (Ctype != Atype && Ctype != CUDA_R_32F)) return CUBLAS_STATUS_NOT_SUPPORTED;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  if (handle->stream && cudaStreamIsCapturing(handle->stream, &capture) == cudaSuccess &&
      capture != cudaStreamCaptureStatusNone)
    return CUBLAS_STATUS_NOT_SUPPORTED;
  // alpha and beta are read now (host pointer mode); the product runs in
  // stream order, when the emulated runtime runs the stream's work.
  auto* product = new Product{m, n, k, ta, tb, A, Atype, lda, B, Btype, ldb, C, Ctype, ldc,
                              *static_cast<const float*>(alpha), *static_cast<const float*>(beta)};
  if (cudaLaunchHostFunc(handle->stream, run_product, product) != cudaSuccess) {
    delete product;
    return CUBLAS_STATUS_EXECUTION_FAILED;
  }
  return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"
