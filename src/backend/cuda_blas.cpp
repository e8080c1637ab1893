// cuBLAS through dlopen: the few entry points the backend calls, typed from
// cuBLAS's own declarations (the header only; nothing links against it).
#include "backend/cuda_blas.h"

#include <cublas_api.h>
#include <dlfcn.h>

#include <climits>
#include <mutex>
#include <string>

#include "runtime/error.h"

// What dlopen tries, in order (the emulated tests name an emulated cuBLAS).
#ifndef WOQ_CUBLAS_LIBRARIES
#define WOQ_CUBLAS_LIBRARIES "libcublas.so.13", "libcublas.so.12"
#endif

namespace woq {
namespace {

namespace cu = kernels::cuda;

// cublasGemmEx is overloaded in C++ (an inline shim for old compute types):
// the entry point itself.
using GemmEx = cublasStatus_t (*)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void*,
                                  const void*, cudaDataType, int, const void*, cudaDataType, int, const void*, void*,
                                  cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);

struct Library {
  decltype(&cublasCreate_v2) create = nullptr;
  decltype(&cublasDestroy_v2) destroy = nullptr;
  decltype(&cublasSetStream_v2) set_stream = nullptr;
  GemmEx gemm_ex = nullptr;
  decltype(&cublasGetStatusString) status_string = nullptr;
  std::string error;  // why it did not load, if it did not
};

template <class F>
bool bind(void* lib, const char* name, F& f, std::string& error) {
  f = reinterpret_cast<F>(dlsym(lib, name));
  if (!f) error = std::string("libcublas has no ") + name;
  return f != nullptr;
}

// Loaded once and kept for the life of the process (never dlclose'd: its
// handles may outlive any one context).
const Library& library() {
  static Library lib;
  static std::once_flag once;
  std::call_once(once, [] {
    void* so = nullptr;
    std::string tried;
    for (const char* name : {WOQ_CUBLAS_LIBRARIES}) {
      if ((so = dlopen(name, RTLD_NOW | RTLD_LOCAL))) break;
      const char* why = dlerror();
      tried += std::string(tried.empty() ? "" : "; ") + (why ? why : name);
    }
    if (!so) {
      lib.error = "cuBLAS could not be loaded (" + tried + ")";
      return;
    }
    if (!bind(so, "cublasCreate_v2", lib.create, lib.error) || !bind(so, "cublasDestroy_v2", lib.destroy, lib.error) ||
        !bind(so, "cublasSetStream_v2", lib.set_stream, lib.error) ||
        !bind(so, "cublasGemmEx", lib.gemm_ex, lib.error) ||
        !bind(so, "cublasGetStatusString", lib.status_string, lib.error))
      lib.create = nullptr;
  });
  return lib;
}

void check(const Library& lib, cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return;
  // Not initialized: no usable GPU or driver for cuBLAS.
  fail(s == CUBLAS_STATUS_ALLOC_FAILED      ? Status::OutOfMemory
       : s == CUBLAS_STATUS_NOT_INITIALIZED ? Status::Unsupported
                                            : Status::Internal,
       std::string("cuBLAS ") + what + ": " + lib.status_string(s) + " (status " + std::to_string(int(s)) + ")");
}

cudaDataType_t blas_type(cu::Dtype t) {
  return t == cu::Dtype::F32 ? CUDA_R_32F : t == cu::Dtype::F16 ? CUDA_R_16F : CUDA_R_16BF;
}

}  // namespace

CudaBlas::CudaBlas(cudaStream_t stream) {
  const Library& lib = library();
  if (!lib.create) fail(Status::Unsupported, lib.error);
  cublasHandle_t h = nullptr;
  check(lib, lib.create(&h), "cublasCreate");
  handle_ = h;
  check(lib, lib.set_stream(h, stream), "cublasSetStream");
}

CudaBlas::~CudaBlas() {
  if (handle_) library().destroy(static_cast<cublasHandle_t>(handle_));
}

void CudaBlas::gemm(uint64_t n, uint64_t m, uint64_t k, const void* w, const void* x, cu::Dtype ab_type, void* y,
                    cu::Dtype y_type, uint64_t y_stride) {
  if (n > INT_MAX || m > INT_MAX || k > INT_MAX || y_stride > INT_MAX)
    fail(Status::Internal, "a cuBLAS product of " + std::to_string(m) + " x " + std::to_string(n) + " x " +
                               std::to_string(k) + " is past cuBLAS's int dimensions");
  const Library& lib = library();
  const float one = 1.0f, zero = 0.0f;
  // Column-major, as cuBLAS sees it: Y^T (n x m, ld y_stride) = W^T' X^T,
  // row-major W (n x k) being k x n column-major, and X (m x k) k x m.
  check(lib,
        lib.gemm_ex(static_cast<cublasHandle_t>(handle_), CUBLAS_OP_T, CUBLAS_OP_N, int(n), int(m), int(k), &one, w,
                    blas_type(ab_type), int(k), x, blas_type(ab_type), int(k), &zero, y, blas_type(y_type),
                    int(y_stride), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
        "cublasGemmEx");
}

}  // namespace woq
