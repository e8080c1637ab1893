// CUDA benchmark: woq_matmul_buffers on a CUDA context against cuBLAS fp16
// (cublasGemmEx, fp32 accumulation) and a device-to-device copy measured in
// the same run.
//
//   woq_cuda_bench [--quick] [--no-cublas] [--bits 4|8] [--m M]... [--shape NxK]...
//
// WOQ_CUDA_KERNEL=gemv|split|tile|wgmma in the environment times one
// tensor-core kernel at every M, =cublas dequantize + cuBLAS (docs/CUDA.md),
// to place the switches between them; --no-cublas leaves out the cuBLAS
// fp16 baseline (and its fp16 weights) when only those are compared.
//
// Shapes (N x K): the Llama-7B block (4096x4096, 11008x4096, 4096x11008),
// Llama-3-8B up (14336x4096), 8192x8192 and 8192x28672. Each shape's weights
// are rotated through enough copies to exceed twice the L2 cache, so that
// they come from HBM. woq and cuBLAS queue on one stream of the benchmark's
// (woq_context_options.cuda_stream, cublasSetStream); a time is the median
// over passes of CUDA events around a pass, divided by its calls, a pass
// being as many rounds over the copies as make it last >= 1 ms, so that
// neither the events nor a host wake-up are in the number. woq GB/s =
// packed bytes (codes + fp16 scale + u8 zero per group) / time, copy GB/s
// = 2 x bytes (read + write) / time.
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <woq.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

namespace {

void check(woq_status s, const char* what) {
  if (s != WOQ_OK) {
    std::fprintf(stderr, "%s: %s: %s\n", what, woq_status_string(s), woq_last_error());
    std::exit(1);
  }
}
void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}
void check(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) {
    std::fprintf(stderr, "%s: cuBLAS status %d\n", what, int(s));
    std::exit(1);
  }
}

// Seconds of one call of `call(i)` (i: which copy), as the header says:
// the median of `reps` passes of CUDA events on `stream`.
class Timer {
 public:
  explicit Timer(cudaStream_t stream) : stream_(stream) {
    check(cudaEventCreate(&start_), "event");
    check(cudaEventCreate(&stop_), "event");
  }
  ~Timer() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  template <class Call>
  double seconds_per_call(Call&& call, int copies, int reps) {
    pass(call, copies, 1);  // warm-up: first-call work (workspaces, cuBLAS's choice) stays out
    const double first = pass(call, copies, 1) / copies;  // how long a call takes
    const int rounds = std::clamp(int(1e-3 / (first * copies)) + 1, 1, 64);
    reps = std::clamp(int(0.5 / (first * copies * rounds)), 3, reps);  // <= ~0.5 s a measurement
    std::vector<double> times;
    for (int r = 0; r < reps; ++r) times.push_back(pass(call, copies, rounds) / (double(copies) * rounds));
    std::nth_element(times.begin(), times.begin() + reps / 2, times.end());
    return times[reps / 2];
  }

 private:
  template <class Call>
  double pass(Call& call, int copies, int rounds) {
    check(cudaEventRecord(start_, stream_), "event record");
    for (int round = 0; round < rounds; ++round)
      for (int i = 0; i < copies; ++i) call(i);
    check(cudaEventRecord(stop_, stream_), "event record");
    check(cudaEventSynchronize(stop_), "event synchronize");
    check(cudaGetLastError(), "a kernel of the pass");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, start_, stop_), "event time");
    return ms * 1e-3;
  }

  cudaStream_t stream_;
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

struct Shape {
  const char* name;
  uint64_t n, k;
};

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, baseline = true;
  uint32_t bits = 4;
  std::vector<uint64_t> ms;
  std::vector<Shape> chosen;
  std::vector<std::string> names;
  names.reserve(argc);  // Shape keeps a pointer to its name
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    unsigned long long n = 0, k = 0;
    if (a == "--quick") quick = true;
    else if (a == "--no-cublas") baseline = false;
    else if (a == "--bits" && i + 1 < argc) bits = uint32_t(std::atoi(argv[++i]));
    else if (a == "--m" && i + 1 < argc) ms.push_back(uint64_t(std::atoll(argv[++i])));
    else if (a == "--shape" && i + 1 < argc && std::sscanf(argv[i + 1], "%llux%llu", &n, &k) == 2 && n && k) {
      names.push_back(argv[++i]);
      chosen.push_back({names.back().c_str(), n, k});
    } else {
      std::fprintf(stderr, "usage: woq_cuda_bench [--quick] [--no-cublas] [--bits 4|8] [--m M]... [--shape NxK]...\n");
      return 2;
    }
  }
  if (ms.empty()) ms = {1, 4, 16, 64, 128, 256, 1024, 4096};
  std::vector<Shape> shapes = {{"4096x4096", 4096, 4096},   {"11008x4096", 11008, 4096}, {"4096x11008", 4096, 11008},
                               {"14336x4096", 14336, 4096}, {"8192x8192", 8192, 8192},   {"8192x28672", 8192, 28672}};
  if (quick) shapes = {{"4096x4096", 4096, 4096}}, ms = {1, 16, 256};
  if (!chosen.empty()) shapes = chosen;

  cudaStream_t stream = nullptr;
  check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream");
  woq_context_options o;
  woq_context_options_init(&o);
  o.backend = WOQ_BACKEND_CUDA;
  o.cuda_stream = stream;
  woq_context* ctx = nullptr;
  check(woq_context_create(&o, &ctx), "CUDA context");
  const char* kernel = "";
  woq_context_kernel(ctx, &kernel);
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "device properties");
  std::printf("woq CUDA benchmark: %s (%s), %u-bit group 128, fp16 activations, L2 %d MiB, libwoq %s\n", prop.name,
              kernel, bits, prop.l2CacheSize >> 20, woq_version_string());

  Timer timer(stream);
  // Device-to-device copy bandwidth: 1 GiB, median of 10.
  const size_t copy_bytes = size_t(1) << 30;
  void *src = nullptr, *dst = nullptr;
  check(cudaMalloc(&src, copy_bytes), "copy source");
  check(cudaMalloc(&dst, copy_bytes), "copy destination");
  check(cudaMemset(src, 0x5A, copy_bytes), "copy source fill");
  const double copy_s = timer.seconds_per_call(
      [&](int) { check(cudaMemcpyAsync(dst, src, copy_bytes, cudaMemcpyDeviceToDevice, stream), "copy"); }, 1, 10);
  cudaFree(src);
  cudaFree(dst);
  const double copy_gbs = 2.0 * copy_bytes / copy_s / 1e9;
  std::printf("device-to-device copy: %.0f GB/s (read + write)\n\n", copy_gbs);

  cublasHandle_t blas;
  check(cublasCreate(&blas), "cublasCreate");
  check(cublasSetStream(blas, stream), "cublasSetStream");
  std::printf("| shape | M | woq us | woq GB/s eff. | %% of copy BW | woq TFLOPS | cuBLAS fp16 us | woq speedup |\n");
  std::printf("|---|--:|--:|--:|--:|--:|--:|--:|\n");
  std::mt19937 rng(1);
  std::normal_distribution<float> dist(0.0f, 0.02f);
  const uint64_t max_m = *std::max_element(ms.begin(), ms.end());
  for (const Shape& s : shapes) {
    std::vector<float> w(s.n * s.k);
    for (float& v : w) v = dist(rng);
    woq_quant_options q;
    woq_quant_options_init(&q);
    q.bits = bits;
    woq_qmatrix* qm = nullptr;
    check(woq_quantize(w.data(), WOQ_DTYPE_F32, s.n, s.k, &q, &qm), "quantize");
    const double packed = double(s.n) * s.k * (bits / 8.0 + 3.0 / 128);
    const int copies = std::max(1, int(2.0 * prop.l2CacheSize / packed) + 1);
    std::vector<woq_tensor*> tensors(copies);
    for (auto& t : tensors) check(woq_tensor_from_qmatrix(ctx, qm, nullptr, &t), "upload");
    woq_qmatrix_destroy(qm);
    // cuBLAS operands: fp16 W (N x K; rotated like woq's), X, Y.
    std::vector<__half> wh(s.n * s.k), xh(max_m * s.k);
    for (size_t i = 0; i < wh.size(); ++i) wh[i] = __float2half(w[i]);
    for (auto& v : xh) v = __float2half(dist(rng) * 50);
    const int blas_copies = baseline ? std::max(1, int(2.0 * prop.l2CacheSize / (wh.size() * 2.0)) + 1) : 0;
    std::vector<__half*> dw(blas_copies);
    __half *dx = nullptr, *dy = nullptr;
    for (auto& p : dw) {
      check(cudaMalloc(&p, wh.size() * 2), "W fp16");
      check(cudaMemcpy(p, wh.data(), wh.size() * 2, cudaMemcpyHostToDevice), "W upload");
    }
    check(cudaMalloc(&dx, xh.size() * 2), "X fp16");
    check(cudaMalloc(&dy, max_m * s.n * 2), "Y fp16");
    check(cudaMemcpy(dx, xh.data(), xh.size() * 2, cudaMemcpyHostToDevice), "X upload");
    woq_buffer *xb = nullptr, *yb = nullptr;
    check(woq_buffer_create(ctx, max_m * s.k * 2, &xb), "X buffer");
    check(woq_buffer_create(ctx, max_m * s.n * 2, &yb), "Y buffer");
    check(woq_buffer_write(xb, 0, xh.data(), xh.size() * 2), "X write");
    for (uint64_t m : ms) {
      const int reps = m >= 1024 ? 5 : 20;
      const double woq_s = timer.seconds_per_call(
          [&](int i) {
            check(woq_matmul_buffers(ctx, tensors[i], xb, WOQ_DTYPE_F16, m, yb, WOQ_DTYPE_F16), "matmul");
          },
          copies, reps);
      const float one = 1.0f, zero = 0.0f;
      // Y^T (N x M, column-major) = W^T' X^T: W row-major N x K is K x N column-major.
      const double blas_s = !baseline ? 0.0 : timer.seconds_per_call(
                                                  [&](int i) {
                                                    check(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, int(s.n), int(m),
                                                                       int(s.k), &one, dw[i], CUDA_R_16F, int(s.k), dx,
                                                                       CUDA_R_16F, int(s.k), &zero, dy, CUDA_R_16F,
                                                                       int(s.n), CUBLAS_COMPUTE_32F,
                                                                       CUBLAS_GEMM_DEFAULT),
                                                          "cublasGemmEx");
                                                  },
                                                  blas_copies, reps);
      const double gbs = packed / woq_s / 1e9, tflops = 2.0 * double(m) * s.n * s.k / woq_s / 1e12;
      std::printf("| %s | %llu | %.1f | %.0f | %.0f%% | %.1f | ", s.name, static_cast<unsigned long long>(m),
                  woq_s * 1e6, gbs, 100 * gbs / copy_gbs, tflops);
      if (baseline) std::printf("%.1f | %.2fx |\n", blas_s * 1e6, blas_s / woq_s);
      else std::printf("- | - |\n");
      std::fflush(stdout);
    }
    woq_buffer_destroy(xb);
    woq_buffer_destroy(yb);
    for (woq_tensor* t : tensors) woq_tensor_destroy(t);
    for (__half* p : dw) cudaFree(p);
    cudaFree(dx);
    cudaFree(dy);
  }
  cublasDestroy(blas);
  check(woq_context_synchronize(ctx), "synchronize");
  woq_context_destroy(ctx);
  cudaStreamDestroy(stream);
  return 0;
}
