// The CUDA backend against the CPU reference (ctest label `gpu`): every
// kernel path on random data (never zeros), outputs poisoned before each
// run, over bit widths, group sizes, schemes, activation and output dtypes,
// ragged N and K and batch sizes from GEMV to large M. Every test skips,
// printing why, where no CUDA device is usable.
#include <gtest/gtest.h>
#include <woq.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#if defined(WOQ_TEST_CUDART)
#include <cuda_runtime_api.h>
#endif

#include "../unit/test_util.h"
#include "kernels/cpu/numeric.h"

namespace {

// A CUDA context on device 0, queueing on `stream` (null: its own).
woq_status create_cuda_context(woq_context** out, void* stream = nullptr) {
  woq_context_options o;
  woq_context_options_init(&o);
  o.backend = WOQ_BACKEND_CUDA;
  o.cuda_stream = stream;
  return woq_context_create(&o, out);
}

// A CUDA context on device 0, or null with the reason in `why`.
woq_context* cuda_context(std::string& why) {
  woq_context* ctx = nullptr;
  if (create_cuda_context(&ctx) != WOQ_OK) {
    why = std::string("no CUDA context: ") + woq_last_error();
    return nullptr;
  }
  return ctx;
}

// Skips (printing why) where no CUDA device is usable, unless
// WOQ_REQUIRE_GPU is set (tests/gpu/run.sh on the GPU machine): then fails.
#define NEED_CUDA(ctx)                                         \
  std::string why;                                             \
  woq_context* ctx = cuda_context(why);                        \
  if (!ctx) {                                                  \
    if (std::getenv("WOQ_REQUIRE_GPU")) FAIL() << why;         \
    std::printf("skipped: %s\n", why.c_str());                  \
    GTEST_SKIP() << why;                                       \
  }

woq_context* reference_context() {
  woq_context_options o;
  woq_context_options_init(&o);
  o.backend = WOQ_BACKEND_CPU_REFERENCE;
  woq_context* ctx = nullptr;
  EXPECT_EQ(woq_context_create(&o, &ctx), WOQ_OK);
  return ctx;
}

std::vector<uint16_t> to_16bit(const std::vector<float>& x, woq_dtype t, std::vector<float>& exact) {
  std::vector<uint16_t> out(x.size());
  exact.resize(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    out[i] = t == WOQ_DTYPE_F16 ? woq::kernels::float_to_half(x[i]) : woq::kernels::float_to_bf16(x[i]);
    exact[i] = t == WOQ_DTYPE_F16 ? woq::kernels::half_to_float(out[i]) : woq::kernels::bf16_to_float(out[i]);
  }
  return out;
}

// Y = X W^T on the GPU through buffers; Y poisoned (all bits set) first.
std::vector<float> gpu_matmul(woq_context* ctx, woq_tensor* t, const void* x, size_t x_bytes, woq_dtype xt,
                              uint64_t m, uint64_t n) {
  woq_buffer *xb = nullptr, *yb = nullptr;
  EXPECT_EQ(woq_buffer_create(ctx, x_bytes, &xb), WOQ_OK) << woq_last_error();
  EXPECT_EQ(woq_buffer_create(ctx, m * n * 4, &yb), WOQ_OK) << woq_last_error();
  EXPECT_EQ(woq_buffer_write(xb, 0, x, x_bytes), WOQ_OK);
  std::vector<uint8_t> poison(m * n * 4, 0xff);
  EXPECT_EQ(woq_buffer_write(yb, 0, poison.data(), poison.size()), WOQ_OK);
  EXPECT_EQ(woq_matmul_buffers(ctx, t, xb, xt, m, yb, WOQ_DTYPE_F32), WOQ_OK) << woq_last_error();
  std::vector<float> y(m * n);
  EXPECT_EQ(woq_buffer_read(yb, 0, y.data(), y.size() * 4), WOQ_OK);
  woq_buffer_destroy(xb);
  woq_buffer_destroy(yb);
  return y;
}

struct Config {
  uint32_t bits, group;
  woq_scheme scheme;
  uint64_t n, k;
};

// Random n x k weights (seeded) quantized as the config says; null (with a
// failure recorded) if woq_quantize refuses.
woq_qmatrix* quantize(const Config& c, uint32_t seed) {
  const std::vector<float> w = woq::test::random_weights(c.n, c.k, seed);
  woq_quant_options qo;
  woq_quant_options_init(&qo);
  qo.bits = c.bits;
  qo.group_size = c.group;
  qo.scheme = c.scheme;
  woq_qmatrix* q = nullptr;
  EXPECT_EQ(woq_quantize(w.data(), WOQ_DTYPE_F32, c.n, c.k, &qo, &q), WOQ_OK) << woq_last_error();
  return q;
}

// A CUDA context created with the environment variable `name` set to
// `value` (read only at creation), the variable restored afterwards.
woq_status context_with(const char* name, const char* value, woq_context** out) {
  const char* saved = std::getenv(name);
  const std::string restore = saved ? saved : "";
  setenv(name, value, 1);
  const woq_status st = create_cuda_context(out);
  if (saved) setenv(name, restore.c_str(), 1);
  else unsetenv(name);
  return st;
}
woq_status forced_context(const char* kernel, woq_context** out) {
  return context_with("WOQ_CUDA_KERNEL", kernel, out);
}

}  // namespace

TEST(Cuda, MatchesFloat64AcrossShapesDtypesAndBatchSizes) {
  NEED_CUDA(ctx);
  woq_context* ref = reference_context();
  const std::vector<Config> configs = {
      {4, 128, WOQ_SCHEME_ASYMMETRIC, 3 * 128 + 5, 3 * 128},  // N and K odd multiples of the group
      {4, 32, WOQ_SCHEME_SYMMETRIC, 97, 5 * 32},
      {4, 256, WOQ_SCHEME_ASYMMETRIC, 33, 3 * 256},
      {4, 64, WOQ_SCHEME_ASYMMETRIC, 51, 7 * 64},
      {4, 0, WOQ_SCHEME_ASYMMETRIC, 40, 1000},  // per-channel, K not a multiple of 32
      {4, 0, WOQ_SCHEME_ASYMMETRIC, 9, 77},     // K tail within a word
      {8, 128, WOQ_SCHEME_ASYMMETRIC, 129, 3 * 128},
      {8, 32, WOQ_SCHEME_SYMMETRIC, 45, 9 * 32},
      {8, 0, WOQ_SCHEME_ASYMMETRIC, 20, 301},
      {3, 64, WOQ_SCHEME_ASYMMETRIC, 30, 3 * 64},  // widened to 4-bit fields at upload
      {6, 32, WOQ_SCHEME_ASYMMETRIC, 24, 5 * 32},  // widened to 8-bit fields at upload
      {4, 128, WOQ_SCHEME_ASYMMETRIC, 272, 2048},  // many units per warp (loads in flight)
      {4, 128, WOQ_SCHEME_ASYMMETRIC, 64, 8192},   // 16 steps a K-part: the deepest streams' steady state
      {8, 64, WOQ_SCHEME_SYMMETRIC, 100, 1536},
  };
  for (const Config& c : configs) {
    SCOPED_TRACE("bits " + std::to_string(c.bits) + " group " + std::to_string(c.group) + " " +
                 std::to_string(c.n) + "x" + std::to_string(c.k));
    woq_qmatrix* q = quantize(c, uint32_t(c.n * 7 + c.k));
    ASSERT_NE(q, nullptr);
    std::vector<float> bias = woq::test::random_activations(c.n, 3);
    woq_tensor *t = nullptr, *rt = nullptr;
    ASSERT_EQ(woq_tensor_from_qmatrix(ctx, q, bias.data(), &t), WOQ_OK) << woq_last_error();
    ASSERT_EQ(woq_tensor_from_qmatrix(ref, q, bias.data(), &rt), WOQ_OK);
    std::vector<float> w_gpu(c.n * c.k), w_ref(c.n * c.k);
    ASSERT_EQ(woq_dequantize(ctx, t, w_gpu.data(), WOQ_DTYPE_F32, w_gpu.size() * 4), WOQ_OK) << woq_last_error();
    ASSERT_EQ(woq_dequantize(ref, rt, w_ref.data(), WOQ_DTYPE_F32, w_ref.size() * 4), WOQ_OK);
    EXPECT_EQ(w_gpu, w_ref);
    for (uint64_t m : {1, 2, 3, 4, 5, 6, 7, 8, 16, 33, 128, 512}) {
      std::vector<float> x = woq::test::random_activations(m * c.k, uint32_t(m + c.k));
      std::vector<float> y = gpu_matmul(ctx, t, x.data(), x.size() * 4, WOQ_DTYPE_F32, m, c.n);
      EXPECT_LT(woq::test::rel_error(y, woq::test::matmul_f64(x, w_ref, bias.data(), m, c.n, c.k)), 1e-5)
          << "fp32 x, m=" << m;
      for (woq_dtype xt : {WOQ_DTYPE_F16, WOQ_DTYPE_BF16}) {
        std::vector<float> exact;
        std::vector<uint16_t> x16 = to_16bit(x, xt, exact);
        std::vector<float> y16 = gpu_matmul(ctx, t, x16.data(), x16.size() * 2, xt, m, c.n);
        // Tensor cores on the exact integers q - z, scales in fp32: far
        // below the contract's 2e-3 (a misplaced weight gives O(1)).
        EXPECT_LT(woq::test::rel_error(y16, woq::test::matmul_f64(exact, w_ref, bias.data(), m, c.n, c.k)), 1e-4)
            << "x dtype " << xt << " m=" << m;
        // Each row of Y is computed the same way whatever M is.
        if (m == 33 || m == 512) {  // the split and the tile kernel against the GEMV kernel
          const std::vector<uint16_t> x_row(x16.begin() + 17 * c.k, x16.begin() + 18 * c.k);
          const std::vector<float> y_row = gpu_matmul(ctx, t, x_row.data(), x_row.size() * 2, xt, 1, c.n);
          for (uint64_t j = 0; j < c.n; ++j) ASSERT_EQ(y_row[j], y16[17 * c.n + j]) << "x dtype " << xt;
        }
      }
      if (m == 33 || m == 512) {
        std::vector<float> x_row(x.begin() + 17 * c.k, x.begin() + 18 * c.k);
        std::vector<float> y_row = gpu_matmul(ctx, t, x_row.data(), x_row.size() * 4, WOQ_DTYPE_F32, 1, c.n);
        for (uint64_t j = 0; j < c.n; ++j) ASSERT_EQ(y_row[j], y[17 * c.n + j]);
      }
    }
    woq_tensor_destroy(t);
    woq_tensor_destroy(rt);
    woq_qmatrix_destroy(q);
  }
  woq_context_destroy(ref);
  woq_context_destroy(ctx);
}

// Every tensor-core kernel forced for every M (WOQ_CUDA_KERNEL, read at
// context creation) gives the bits of the kernel Auto picks: on the
// hardware's own mma and wgmma, not only on the emulator. The wgmma kernel
// is left out, with a note, on GPUs that cannot run it.
TEST(Cuda, EveryForcedKernelGivesTheSameBits) {
  NEED_CUDA(ctx);
  // Slices past the last block's; 7 steps of 64 columns, so K-part 7 is empty.
  const uint64_t n = 200, k = 7 * 64;
  std::vector<float> w = woq::test::random_weights(n, k, 11);
  woq_quant_options qo;
  woq_quant_options_init(&qo);
  qo.group_size = 64;
  woq_qmatrix* q = nullptr;
  ASSERT_EQ(woq_quantize(w.data(), WOQ_DTYPE_F32, n, k, &qo, &q), WOQ_OK) << woq_last_error();
  std::vector<float> bias = woq::test::random_activations(n, 12);
  woq_tensor* t = nullptr;
  ASSERT_EQ(woq_tensor_from_qmatrix(ctx, q, bias.data(), &t), WOQ_OK) << woq_last_error();
  for (woq_dtype xt : {WOQ_DTYPE_F16, WOQ_DTYPE_BF16})
    for (uint64_t m : {1, 5, 33, 130, 300}) {
      std::vector<float> exact;
      const std::vector<uint16_t> x = to_16bit(woq::test::random_activations(m * k, uint32_t(m)), xt, exact);
      const std::vector<float> want = gpu_matmul(ctx, t, x.data(), x.size() * 2, xt, m, n);
      for (const char* kernel : {"gemv", "split", "tile", "wgmma"}) {
        SCOPED_TRACE(std::string(kernel) + " x dtype " + std::to_string(xt) + " m " + std::to_string(m));
        woq_context* forced = nullptr;
        const woq_status st = forced_context(kernel, &forced);
        if (st == WOQ_ERR_UNSUPPORTED && std::string(kernel) == "wgmma") {
          if (m == 1 && xt == WOQ_DTYPE_F16) std::printf("wgmma not compared: %s\n", woq_last_error());
          continue;
        }
        ASSERT_EQ(st, WOQ_OK) << woq_last_error();
        woq_tensor* ft = nullptr;
        ASSERT_EQ(woq_tensor_from_qmatrix(forced, q, bias.data(), &ft), WOQ_OK) << woq_last_error();
        const std::vector<float> got = gpu_matmul(forced, ft, x.data(), x.size() * 2, xt, m, n);
        for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], want[i]) << "output " << i;
        woq_tensor_destroy(ft);
        woq_context_destroy(forced);
      }
    }
  woq_tensor_destroy(t);
  woq_qmatrix_destroy(q);
  woq_context_destroy(ctx);
}

// Dequantize + cuBLAS (WOQ_CUDA_KERNEL=cublas): W_hat rounded to X's type,
// so within the contract's 2e-3 rather than bit-equal: fp16 keeps 11 bits
// of each weight, bf16 8 (from that rounding alone, a relative error of
// about 1.5e-4 and 1.6e-3 is to be expected). fp32 X runs
// the fused kernel. 10000 x 4096 takes three chunks of rows (the last one
// partial); ragged N and K, 8-bit codes, bias, Y in 16 bits too.
TEST(Cuda, DequantizeAndCublasMatchesFloat64) {
  NEED_CUDA(ctx);
  woq_context_destroy(ctx);
  woq_context* blas = nullptr;
  ASSERT_EQ(forced_context("cublas", &blas), WOQ_OK) << woq_last_error();
  const char* name = "";
  ASSERT_EQ(woq_context_kernel(blas, &name), WOQ_OK);
  EXPECT_NE(std::string(name).find("-cublas"), std::string::npos) << name;
  woq_context* ref = reference_context();
  const std::vector<Config> configs = {
      {4, 128, WOQ_SCHEME_ASYMMETRIC, 3 * 128 + 5, 3 * 128},
      {8, 32, WOQ_SCHEME_SYMMETRIC, 45, 9 * 32},
      {4, 0, WOQ_SCHEME_ASYMMETRIC, 9, 77},  // odd K: rows of X and W_hat not 4-byte aligned
      {4, 128, WOQ_SCHEME_ASYMMETRIC, 10000, 4096},
  };
  for (const Config& c : configs) {
    SCOPED_TRACE("bits " + std::to_string(c.bits) + " " + std::to_string(c.n) + "x" + std::to_string(c.k));
    woq_qmatrix* q = quantize(c, uint32_t(c.n + 5 * c.k));
    ASSERT_NE(q, nullptr);
    std::vector<float> bias = woq::test::random_activations(c.n, 4);
    woq_tensor *t = nullptr, *rt = nullptr;
    ASSERT_EQ(woq_tensor_from_qmatrix(blas, q, bias.data(), &t), WOQ_OK) << woq_last_error();
    ASSERT_EQ(woq_tensor_from_qmatrix(ref, q, bias.data(), &rt), WOQ_OK);
    std::vector<float> w_ref(c.n * c.k);
    ASSERT_EQ(woq_dequantize(ref, rt, w_ref.data(), WOQ_DTYPE_F32, w_ref.size() * 4), WOQ_OK);
    const std::vector<uint64_t> ms = c.n > 1000 ? std::vector<uint64_t>{33} : std::vector<uint64_t>{1, 33, 300};
    for (uint64_t m : ms) {
      const std::vector<float> x = woq::test::random_activations(m * c.k, uint32_t(3 * m + c.k));
      const std::vector<float> y = gpu_matmul(blas, t, x.data(), x.size() * 4, WOQ_DTYPE_F32, m, c.n);
      EXPECT_LT(woq::test::rel_error(y, woq::test::matmul_f64(x, w_ref, bias.data(), m, c.n, c.k)), 1e-5)
          << "fp32 x (the fused kernel), m=" << m;
      for (woq_dtype xt : {WOQ_DTYPE_F16, WOQ_DTYPE_BF16}) {
        std::vector<float> exact;
        const std::vector<uint16_t> x16 = to_16bit(x, xt, exact);
        const std::vector<double> want = woq::test::matmul_f64(exact, w_ref, bias.data(), m, c.n, c.k);
        const double bound = xt == WOQ_DTYPE_F16 ? 5e-4 : 2e-3;
        const std::vector<float> y32 = gpu_matmul(blas, t, x16.data(), x16.size() * 2, xt, m, c.n);
        EXPECT_LT(woq::test::rel_error(y32, want), bound) << "x dtype " << xt << ", y fp32, m=" << m;
        // Y in X's type: cuBLAS rounds, then the bias is added and rounded again.
        woq_buffer *xb = nullptr, *yb = nullptr;
        ASSERT_EQ(woq_buffer_create(blas, x16.size() * 2, &xb), WOQ_OK) << woq_last_error();
        ASSERT_EQ(woq_buffer_create(blas, m * c.n * 2, &yb), WOQ_OK) << woq_last_error();
        ASSERT_EQ(woq_buffer_write(xb, 0, x16.data(), x16.size() * 2), WOQ_OK);
        std::vector<uint16_t> y16(m * c.n, 0xFFFF);  // poisoned: NaN in both types
        ASSERT_EQ(woq_buffer_write(yb, 0, y16.data(), y16.size() * 2), WOQ_OK);
        ASSERT_EQ(woq_matmul_buffers(blas, t, xb, xt, m, yb, xt), WOQ_OK) << woq_last_error();
        ASSERT_EQ(woq_buffer_read(yb, 0, y16.data(), y16.size() * 2), WOQ_OK);
        std::vector<float> y16f(y16.size());
        for (size_t i = 0; i < y16.size(); ++i)
          y16f[i] = xt == WOQ_DTYPE_F16 ? woq::kernels::half_to_float(y16[i]) : woq::kernels::bf16_to_float(y16[i]);
        EXPECT_LT(woq::test::rel_error(y16f, want), xt == WOQ_DTYPE_F16 ? 2e-3 : 8e-3)
            << "x dtype " << xt << ", y in its type, m=" << m;
        woq_buffer_destroy(xb);
        woq_buffer_destroy(yb);
      }
    }
    woq_tensor_destroy(t);
    woq_tensor_destroy(rt);
    woq_qmatrix_destroy(q);
  }
  woq_context_destroy(ref);
  woq_context_destroy(blas);
}

// woq_matmul with host X and Y on a CUDA context: copied through the
// device, Y written when the call returns, the bits of the buffer path.
// WOQ_CUDA_BLAS_MIN_ROWS=64: Auto gives the fused kernels' bits below 64
// rows and dequantize + cuBLAS's from 64 on; bad values and a forced
// kernel with it are refused by name.
TEST(Cuda, AutoTakesCublasFromTheRowsItIsGiven) {
  NEED_CUDA(ctx);
  woq_context *switched = nullptr, *blas = nullptr;
  const woq_status st = context_with("WOQ_CUDA_BLAS_MIN_ROWS", "64", &switched);
  if (st == WOQ_ERR_UNSUPPORTED) {  // no cuBLAS on this machine: said, not hidden
    std::printf("skipped: %s\n", woq_last_error());
    woq_context_destroy(ctx);
    GTEST_SKIP() << woq_last_error();
  }
  ASSERT_EQ(st, WOQ_OK) << woq_last_error();
  ASSERT_EQ(forced_context("cublas", &blas), WOQ_OK) << woq_last_error();
  const char* name = "";
  ASSERT_EQ(woq_context_kernel(switched, &name), WOQ_OK);
  EXPECT_NE(std::string(name).find("-cublas-from-64"), std::string::npos) << name;

  const Config c{4, 128, WOQ_SCHEME_ASYMMETRIC, 150, 512};
  woq_qmatrix* q = quantize(c, 31);
  ASSERT_NE(q, nullptr);
  woq_tensor *t_auto = nullptr, *t_switched = nullptr, *t_blas = nullptr;
  ASSERT_EQ(woq_tensor_from_qmatrix(ctx, q, nullptr, &t_auto), WOQ_OK) << woq_last_error();
  ASSERT_EQ(woq_tensor_from_qmatrix(switched, q, nullptr, &t_switched), WOQ_OK) << woq_last_error();
  ASSERT_EQ(woq_tensor_from_qmatrix(blas, q, nullptr, &t_blas), WOQ_OK) << woq_last_error();
  for (uint64_t m : {1, 63, 64, 200}) {
    SCOPED_TRACE("m " + std::to_string(m));
    std::vector<float> exact;
    const std::vector<uint16_t> x = to_16bit(woq::test::random_activations(m * c.k, uint32_t(m)), WOQ_DTYPE_F16, exact);
    const std::vector<float> got = gpu_matmul(switched, t_switched, x.data(), x.size() * 2, WOQ_DTYPE_F16, m, c.n);
    woq_context* same = m < 64 ? ctx : blas;
    woq_tensor* same_t = m < 64 ? t_auto : t_blas;
    EXPECT_EQ(got, gpu_matmul(same, same_t, x.data(), x.size() * 2, WOQ_DTYPE_F16, m, c.n))
        << (m < 64 ? "not the fused kernels' bits" : "not dequantize + cuBLAS's bits");
  }
  woq_tensor_destroy(t_auto);
  woq_tensor_destroy(t_switched);
  woq_tensor_destroy(t_blas);
  woq_qmatrix_destroy(q);
  woq_context_destroy(switched);
  woq_context_destroy(blas);

  for (const char* bad : {"", "abc", "-1", "12x", "1000000000"}) {
    woq_context* refused = nullptr;
    EXPECT_EQ(context_with("WOQ_CUDA_BLAS_MIN_ROWS", bad, &refused), WOQ_ERR_INVALID_ARGUMENT) << "'" << bad << "'";
    EXPECT_NE(std::string(woq_last_error()).find("WOQ_CUDA_BLAS_MIN_ROWS"), std::string::npos) << woq_last_error();
    EXPECT_EQ(refused, nullptr);
  }
  setenv("WOQ_CUDA_BLAS_MIN_ROWS", "256", 1);
  woq_context* both = nullptr;
  EXPECT_EQ(forced_context("gemv", &both), WOQ_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(woq_last_error()).find("forces one path"), std::string::npos) << woq_last_error();
  unsetenv("WOQ_CUDA_BLAS_MIN_ROWS");
  woq_context_destroy(ctx);
}

TEST(Cuda, HostMemoryIsCopiedThroughAndWaitedFor) {
  NEED_CUDA(ctx);
  const uint64_t n = 48, k = 256, m = 3;
  std::vector<float> w = woq::test::random_weights(n, k, 1);
  woq_qmatrix* q = nullptr;
  ASSERT_EQ(woq_quantize(w.data(), WOQ_DTYPE_F32, n, k, nullptr, &q), WOQ_OK) << woq_last_error();
  woq_tensor* t = nullptr;
  ASSERT_EQ(woq_tensor_from_qmatrix(ctx, q, nullptr, &t), WOQ_OK);
  for (woq_dtype xt : {WOQ_DTYPE_F32, WOQ_DTYPE_F16}) {
    std::vector<float> exact, x32 = woq::test::random_activations(m * k, 7);
    const std::vector<uint16_t> x16 = to_16bit(x32, WOQ_DTYPE_F16, exact);
    const void* x = xt == WOQ_DTYPE_F32 ? static_cast<const void*>(x32.data()) : x16.data();
    const size_t x_bytes = xt == WOQ_DTYPE_F32 ? x32.size() * 4 : x16.size() * 2;
    std::vector<float> y(m * n, std::nanf(""));
    ASSERT_EQ(woq_matmul(ctx, t, x, xt, m, y.data(), WOQ_DTYPE_F32), WOQ_OK) << woq_last_error();
    EXPECT_EQ(y, gpu_matmul(ctx, t, x, x_bytes, xt, m, n)) << "x dtype " << xt;
  }
  woq_tensor_destroy(t);
  woq_qmatrix_destroy(q);
  woq_context_destroy(ctx);
}

TEST(Cuda, MemoryAccountingCountsDeviceBytes) {
  NEED_CUDA(ctx);
  // 16 rows of 40 per-channel 4-bit codes: one 512-byte unit of 16 rows x 64
  // columns (kernels/cuda/layout.h), an fp16 scale and a u8 zero-point per
  // row (16 rows, already whole slices), fp32 bias.
  const uint64_t n = 16, k = 40, expected = 512 + n * (2 + 1) + n * 4;
  std::vector<float> w = woq::test::random_weights(n, k, 2), bias = woq::test::random_activations(n, 4);
  woq_quant_options qo;
  woq_quant_options_init(&qo);
  qo.group_size = 0;
  woq_qmatrix* q = nullptr;
  ASSERT_EQ(woq_quantize(w.data(), WOQ_DTYPE_F32, n, k, &qo, &q), WOQ_OK) << woq_last_error();
  woq_tensor* t = nullptr;
  ASSERT_EQ(woq_tensor_from_qmatrix(ctx, q, bias.data(), &t), WOQ_OK) << woq_last_error();
  woq_buffer* b = nullptr;
  ASSERT_EQ(woq_buffer_create(ctx, 4096, &b), WOQ_OK) << woq_last_error();
  uint64_t in_use = 0, peak = 0;
  ASSERT_EQ(woq_context_memory(ctx, &in_use, &peak), WOQ_OK);
  EXPECT_EQ(in_use, expected + 4096);
  // M = 5 rows of fp16 X: the split kernel's workspace, 8 x M x N floats
  // (docs/CUDA.md), stays with the context.
  const uint64_t m = 5, workspace = 8 * m * n * 4;
  std::vector<float> exact;
  const std::vector<uint16_t> x = to_16bit(woq::test::random_activations(m * k, 5), WOQ_DTYPE_F16, exact);
  const std::vector<float> y = gpu_matmul(ctx, t, x.data(), x.size() * 2, WOQ_DTYPE_F16, m, n);
  for (float v : y) ASSERT_FALSE(std::isnan(v));  // every output written over the poison
  ASSERT_EQ(woq_context_memory(ctx, &in_use, &peak), WOQ_OK);
  EXPECT_EQ(in_use, expected + 4096 + workspace);
  woq_tensor_destroy(t);
  woq_buffer_destroy(b);
  ASSERT_EQ(woq_context_memory(ctx, &in_use, &peak), WOQ_OK);
  EXPECT_EQ(in_use, workspace);
  // gpu_matmul's two buffers (X, Y) were held with the workspace at once.
  EXPECT_EQ(peak, expected + 4096 + m * k * 2 + m * n * 4 + workspace);
  woq_qmatrix_destroy(q);
  woq_context_destroy(ctx);
}

// A tensor of three upload blocks (8 MiB of repacked codes each, 1952 rows
// of 8192 columns), so the third reuses the first's staging buffer, loaded
// from a file, whole and as a shard starting mid-slice: the same weights,
// bias and products as the reference backend loads.
TEST(Cuda, FileLoadsInBlocksMatchTheReference) {
  NEED_CUDA(ctx);
  woq_context* ref = reference_context();
  const uint64_t n = 4100, k = 8192;
  std::vector<float> w = woq::test::random_weights(n, k, 8), bias = woq::test::random_activations(n, 9);
  woq_qmatrix* q = nullptr;
  ASSERT_EQ(woq_quantize(w.data(), WOQ_DTYPE_F32, n, k, nullptr, &q), WOQ_OK) << woq_last_error();
  woq::test::TempDir dir;
  const std::string path = dir.file("big.woq");
  ASSERT_TRUE(woq::test::write_one_tensor(path, "big", q, bias.data()));
  woq_qmatrix_destroy(q);
  woq_file* f = nullptr;
  ASSERT_EQ(woq_file_open(path.c_str(), &f), WOQ_OK) << woq_last_error();
  for (const auto& [b, e] : {std::pair<uint64_t, uint64_t>{0, n}, {5, 4000}}) {
    SCOPED_TRACE("rows " + std::to_string(b) + ".." + std::to_string(e));
    woq_tensor *t = nullptr, *rt = nullptr;
    ASSERT_EQ(woq_tensor_load_rows(ctx, f, "big", b, e, &t), WOQ_OK) << woq_last_error();
    ASSERT_EQ(woq_tensor_load_rows(ref, f, "big", b, e, &rt), WOQ_OK) << woq_last_error();
    const uint64_t rows = e - b;
    std::vector<float> w_gpu(rows * k), w_ref(rows * k), b_gpu(rows), b_ref(rows);
    ASSERT_EQ(woq_dequantize(ctx, t, w_gpu.data(), WOQ_DTYPE_F32, w_gpu.size() * 4), WOQ_OK) << woq_last_error();
    ASSERT_EQ(woq_dequantize(ref, rt, w_ref.data(), WOQ_DTYPE_F32, w_ref.size() * 4), WOQ_OK);
    EXPECT_EQ(w_gpu, w_ref);
    int32_t has_gpu = 0, has_ref = 0;
    ASSERT_EQ(woq_tensor_bias(ctx, t, b_gpu.data(), rows * 4, &has_gpu), WOQ_OK);
    ASSERT_EQ(woq_tensor_bias(ref, rt, b_ref.data(), rows * 4, &has_ref), WOQ_OK);
    EXPECT_TRUE(has_gpu && has_ref);
    EXPECT_EQ(b_gpu, b_ref);
    const uint64_t m = 2;
    std::vector<float> exact;
    const std::vector<uint16_t> x = to_16bit(woq::test::random_activations(m * k, 10), WOQ_DTYPE_F16, exact);
    const std::vector<float> y = gpu_matmul(ctx, t, x.data(), x.size() * 2, WOQ_DTYPE_F16, m, rows);
    EXPECT_LT(woq::test::rel_error(y, woq::test::matmul_f64(exact, w_ref, b_ref.data(), m, rows, k)), 1e-4);
    woq_tensor_destroy(t);
    woq_tensor_destroy(rt);
  }
  woq_file_close(f);
  woq_context_destroy(ref);
  woq_context_destroy(ctx);
}

// An act-order checkpoint's layer (imported with its input permutation),
// whole and as a shard of rows: the checkpoint's own weights in the model's
// input order, and X gathered into the stored order on the GPU for 16-bit X
// at batches that take the GEMV, tensor-core and large-M paths.
TEST(Cuda, ActOrderLayersGatherXInTheModelsInputOrder) {
  NEED_CUDA(ctx);
  woq::test::TempDir dir;
  const uint64_t n = 64, k = 512;
  const std::vector<float> w = woq::test::write_act_order_gptq(dir.file("m.safetensors"), n, k, 128, 21);
  ASSERT_EQ(woq_import_checkpoint(dir.file("m.safetensors").c_str(), "gptq_v2", dir.file("o.woq").c_str(), nullptr),
            WOQ_OK)
      << woq_last_error();
  woq_file* f = nullptr;
  ASSERT_EQ(woq_file_open(dir.file("o.woq").c_str(), &f), WOQ_OK) << woq_last_error();
  for (const auto& [b, e] : {std::pair<uint64_t, uint64_t>{0, n}, {16, 56}}) {
    SCOPED_TRACE("rows " + std::to_string(b) + ".." + std::to_string(e));
    const uint64_t rows = e - b;
    const std::vector<float> w_rows(w.begin() + b * k, w.begin() + e * k);
    woq_tensor* t = nullptr;
    ASSERT_EQ(woq_tensor_load_rows(ctx, f, "l.weight", b, e, &t), WOQ_OK) << woq_last_error();
    std::vector<float> w_gpu(rows * k, std::nanf(""));
    ASSERT_EQ(woq_dequantize(ctx, t, w_gpu.data(), WOQ_DTYPE_F32, w_gpu.size() * 4), WOQ_OK) << woq_last_error();
    EXPECT_EQ(w_gpu, w_rows);
    for (woq_dtype xt : {WOQ_DTYPE_F16, WOQ_DTYPE_BF16})
      for (uint64_t m : {1, 3, 16, 33, 300}) {
        std::vector<float> exact;
        const std::vector<uint16_t> x = to_16bit(woq::test::random_activations(m * k, uint32_t(m)), xt, exact);
        const std::vector<float> y = gpu_matmul(ctx, t, x.data(), x.size() * 2, xt, m, rows);
        EXPECT_LT(woq::test::rel_error(y, woq::test::matmul_f64(exact, w_rows, nullptr, m, rows, k)), 1e-4)
            << "x dtype " << xt << " m " << m;
      }
    woq_tensor_destroy(t);
  }
  woq_file_close(f);
  woq_context_destroy(ctx);
}

#if defined(WOQ_TEST_CUDART)
// woq_matmul on device pointers, queued on a stream the host owns: the same
// bits as through woq_buffers, and only after that stream is synchronized.
TEST(Cuda, DevicePointersOnAHostStream) {
  NEED_CUDA(probe);
  woq_context_destroy(probe);
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  woq_context* ctx = nullptr;
  ASSERT_EQ(create_cuda_context(&ctx, stream), WOQ_OK) << woq_last_error();

  const uint64_t n = 200, k = 256, m = 3;
  std::vector<float> w = woq::test::random_weights(n, k, 5);
  woq_qmatrix* q = nullptr;
  ASSERT_EQ(woq_quantize(w.data(), WOQ_DTYPE_F32, n, k, nullptr, &q), WOQ_OK) << woq_last_error();
  woq_tensor* t = nullptr;
  ASSERT_EQ(woq_tensor_from_qmatrix(ctx, q, nullptr, &t), WOQ_OK) << woq_last_error();
  std::vector<float> exact;
  const std::vector<uint16_t> x = to_16bit(woq::test::random_activations(m * k, 6), WOQ_DTYPE_F16, exact);

  void *dx = nullptr, *dy = nullptr;
  ASSERT_EQ(cudaMalloc(&dx, x.size() * 2), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dy, m * n * 4), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dx, x.data(), x.size() * 2, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemset(dy, 0xff, m * n * 4), cudaSuccess);  // poison
  ASSERT_EQ(woq_matmul(ctx, t, dx, WOQ_DTYPE_F16, m, dy, WOQ_DTYPE_F32), WOQ_OK) << woq_last_error();
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  std::vector<float> y(m * n);
  ASSERT_EQ(cudaMemcpy(y.data(), dy, y.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);

  std::vector<float> w_ref(n * k);
  ASSERT_EQ(woq_dequantize(ctx, t, w_ref.data(), WOQ_DTYPE_F32, w_ref.size() * 4), WOQ_OK);
  EXPECT_LT(woq::test::rel_error(y, woq::test::matmul_f64(exact, w_ref, nullptr, m, n, k)), 1e-4);
  EXPECT_EQ(y, gpu_matmul(ctx, t, x.data(), x.size() * 2, WOQ_DTYPE_F16, m, n));

  std::vector<float> host_y(m * n);  // host memory mixed with device memory is refused by name
  EXPECT_EQ(woq_matmul(ctx, t, dx, WOQ_DTYPE_F16, m, host_y.data(), WOQ_DTYPE_F32), WOQ_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(woq_last_error()).find("y is host memory"), std::string::npos) << woq_last_error();

  cudaFree(dx);
  cudaFree(dy);
  woq_tensor_destroy(t);
  woq_qmatrix_destroy(q);
  woq_context_destroy(ctx);
  EXPECT_EQ(cudaStreamDestroy(stream), cudaSuccess);  // still the caller's after the context is gone
}

// Matmuls on device pointers captured into a CUDA graph on the context's
// stream (a decode loop's way) replay to the bits of direct calls, at the
// GEMV, split and large-M kernels' M, once a direct call of each M has
// sized the kept workspace; under capture, a workspace that must grow and
// host memory are refused by name, and a workspace a graph uses stays
// (counted) when a later call replaces it.
TEST(Cuda, MatmulsReplayFromACudaGraph) {
  NEED_CUDA(probe);
  woq_context_destroy(probe);
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  woq_context* ctx = nullptr;
  ASSERT_EQ(create_cuda_context(&ctx, stream), WOQ_OK) << woq_last_error();
  const Config c{4, 128, WOQ_SCHEME_ASYMMETRIC, 300, 1024};
  woq_qmatrix* q = quantize(c, 21);
  ASSERT_NE(q, nullptr);
  woq_tensor* t = nullptr;
  ASSERT_EQ(woq_tensor_from_qmatrix(ctx, q, nullptr, &t), WOQ_OK) << woq_last_error();

  const std::vector<uint64_t> ms = {1, 64, 300};  // GEMV, split (workspace), tile / wgmma
  std::vector<float> exact;
  const std::vector<uint16_t> x = to_16bit(woq::test::random_activations(300 * c.k, 22), WOQ_DTYPE_F16, exact);
  void* dx = nullptr;
  ASSERT_EQ(cudaMalloc(&dx, x.size() * 2), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dx, x.data(), x.size() * 2, cudaMemcpyHostToDevice), cudaSuccess);
  std::vector<void*> dy(ms.size());
  for (void*& p : dy) ASSERT_EQ(cudaMalloc(&p, 300 * c.n * 4), cudaSuccess);
  const auto poison_and = [&](auto&& queue) {
    for (size_t i = 0; i < ms.size(); ++i)
      ASSERT_EQ(cudaMemsetAsync(dy[i], 0xff, ms[i] * c.n * 4, stream), cudaSuccess);
    queue();
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  };
  const auto results = [&]() {
    std::vector<std::vector<float>> y(ms.size());
    for (size_t i = 0; i < ms.size(); ++i) {
      y[i].resize(ms[i] * c.n);
      EXPECT_EQ(cudaMemcpy(y[i].data(), dy[i], y[i].size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    }
    return y;
  };
  const auto queue_all = [&]() {
    for (size_t i = 0; i < ms.size(); ++i)
      ASSERT_EQ(woq_matmul(ctx, t, dx, WOQ_DTYPE_F16, ms[i], dy[i], WOQ_DTYPE_F32), WOQ_OK) << woq_last_error();
  };
  poison_and(queue_all);
  const std::vector<std::vector<float>> direct = results();
  std::vector<float> w_hat(c.n * c.k);
  ASSERT_EQ(woq_dequantize(ctx, t, w_hat.data(), WOQ_DTYPE_F32, w_hat.size() * 4), WOQ_OK);
  for (size_t i = 0; i < ms.size(); ++i) {
    const std::vector<float> x_rows(exact.begin(), exact.begin() + ms[i] * c.k);
    EXPECT_LT(woq::test::rel_error(direct[i], woq::test::matmul_f64(x_rows, w_hat, nullptr, ms[i], c.n, c.k)), 1e-4)
        << "M " << ms[i];
  }

  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), cudaSuccess);
  queue_all();
  // Refused, with nothing queued (the capture stays valid): a larger split
  // workspace, and host memory.
  EXPECT_EQ(woq_matmul(ctx, t, dx, WOQ_DTYPE_F16, 100, dy[2], WOQ_DTYPE_F32), WOQ_ERR_UNSUPPORTED);
  EXPECT_NE(std::string(woq_last_error()).find("captured into a CUDA graph"), std::string::npos) << woq_last_error();
  std::vector<float> host_y(c.n);
  EXPECT_EQ(woq_matmul(ctx, t, x.data(), WOQ_DTYPE_F16, 1, host_y.data(), WOQ_DTYPE_F32), WOQ_ERR_UNSUPPORTED);
  EXPECT_NE(std::string(woq_last_error()).find("host memory"), std::string::npos) << woq_last_error();
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  for (int replay = 0; replay < 2; ++replay) {
    poison_and([&] { ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess); });
    EXPECT_EQ(results(), direct) << "replay " << replay;
  }

  // A direct call that grows the workspace (M = 100 after 64) keeps the
  // graph's: in use grows by the whole new one, 8 x M x N floats.
  uint64_t before = 0, after = 0, peak = 0;
  ASSERT_EQ(woq_context_memory(ctx, &before, &peak), WOQ_OK);
  ASSERT_EQ(woq_matmul(ctx, t, dx, WOQ_DTYPE_F16, 100, dy[2], WOQ_DTYPE_F32), WOQ_OK) << woq_last_error();
  ASSERT_EQ(woq_context_memory(ctx, &after, &peak), WOQ_OK);
  EXPECT_EQ(after - before, 8 * 100 * c.n * 4);
  poison_and([&] { ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess); });
  EXPECT_EQ(results(), direct) << "replay after the workspace was replaced";

  EXPECT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
  EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  cudaFree(dx);
  for (void* p : dy) cudaFree(p);
  woq_tensor_destroy(t);
  woq_qmatrix_destroy(q);
  woq_context_destroy(ctx);
  EXPECT_EQ(cudaStreamDestroy(stream), cudaSuccess);
}

#endif
