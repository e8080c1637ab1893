// Every CPU kernel path this machine supports (forced with WOQ_CPU_ISA)
// against float64 on the same dequantized weights, over bit widths, group
// sizes, batch sizes from GEMV to blocked GEMM, ragged row counts and dtypes.
#include <gtest/gtest.h>
#include <woq.h>

#include <algorithm>
#include <cstdlib>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>

#include "kernels/cpu/numeric.h"
#include "kernels/cpu/packed.h"
#include "test_util.h"

namespace {

std::vector<std::string> supported_isas() {
  std::vector<std::string> out;
  const auto best = woq::kernels::detect_isa();
  for (auto isa : woq::kernels::kAllIsas)
    if (isa <= best && woq::kernels::packed_matmul_for(isa)) out.push_back(woq::kernels::isa_name(isa));
  return out;
}

// A CPU context running the named ISA.
woq_context* context_for(const std::string& isa, int threads) {
  setenv("WOQ_CPU_ISA", isa.c_str(), 1);
  woq_context_options o;
  woq_context_options_init(&o);
  o.threads = threads;
  woq_context* ctx = nullptr;
  const woq_status s = woq_context_create(&o, &ctx);
  unsetenv("WOQ_CPU_ISA");
  EXPECT_EQ(s, WOQ_OK) << woq_last_error();
  const char* name = nullptr;
  EXPECT_EQ(woq_context_kernel(ctx, &name), WOQ_OK);
  EXPECT_EQ(std::string(name), isa);
  return ctx;
}

struct Shape {
  uint64_t n, k;
  uint32_t bits, group;
  woq_scheme scheme;
};

class CpuKernels : public testing::TestWithParam<std::string> {};

}  // namespace

TEST_P(CpuKernels, MatchFloat64AcrossShapesAndBatchSizes) {
  const std::string isa = GetParam();
  woq_context* ctx = context_for(isa, 2);
  const std::vector<Shape> shapes = {
      {37, 256, 4, 32, WOQ_SCHEME_ASYMMETRIC}, {100, 512, 4, 128, WOQ_SCHEME_SYMMETRIC},
      {16, 384, 4, 0, WOQ_SCHEME_ASYMMETRIC},  {33, 256, 8, 64, WOQ_SCHEME_ASYMMETRIC},
      {50, 768, 8, 256, WOQ_SCHEME_SYMMETRIC}, {21, 256, 3, 32, WOQ_SCHEME_ASYMMETRIC},
      {19, 320, 2, 64, WOQ_SCHEME_ASYMMETRIC}, {24, 256, 5, 128, WOQ_SCHEME_SYMMETRIC},
      {9, 600, 6, 0, WOQ_SCHEME_ASYMMETRIC},   {17, 256, 7, 256, WOQ_SCHEME_ASYMMETRIC},
      {3, 77, 4, 0, WOQ_SCHEME_ASYMMETRIC},    // K not a multiple of 8: canonical fallback
      // Per-channel with K = 8 x 33 and 16 x 17: fixed-point blocks of 8 and
      // 16 inputs, fewer code words than one int16 accumulation (avx2).
      {11, 264, 4, 0, WOQ_SCHEME_ASYMMETRIC},  {6, 272, 4, 0, WOQ_SCHEME_SYMMETRIC},
  };
  for (const Shape& sh : shapes) {
    SCOPED_TRACE(isa + " " + std::to_string(sh.n) + "x" + std::to_string(sh.k) + " b" + std::to_string(sh.bits) +
                 " g" + std::to_string(sh.group));
    std::vector<float> w = woq::test::random_weights(sh.n, sh.k, uint32_t(sh.n * sh.k + sh.bits));
    for (uint64_t k = 0; k < std::min<uint64_t>(sh.k, 64); ++k) w[k] = 0.0f;  // a zero group in row 0
    woq_quant_options qo;
    woq_quant_options_init(&qo);
    qo.bits = sh.bits;
    qo.group_size = sh.group;
    qo.scheme = sh.scheme;
    woq_qmatrix* q = nullptr;
    ASSERT_EQ(woq_quantize(w.data(), WOQ_DTYPE_F32, sh.n, sh.k, &qo, &q), WOQ_OK) << woq_last_error();
    std::vector<float> bias = woq::test::random_activations(sh.n, 5);
    woq_tensor* t = nullptr;
    ASSERT_EQ(woq_tensor_from_qmatrix(ctx, q, bias.data(), &t), WOQ_OK);
    std::vector<float> w_hat(sh.n * sh.k);
    ASSERT_EQ(woq_dequantize(ctx, t, w_hat.data(), WOQ_DTYPE_F32, w_hat.size() * 4), WOQ_OK);
    // The packed layout dequantizes to exactly the canonical values.
    woq_context* ref = nullptr;
    woq_context_options ro;
    woq_context_options_init(&ro);
    ro.backend = WOQ_BACKEND_CPU_REFERENCE;
    ASSERT_EQ(woq_context_create(&ro, &ref), WOQ_OK);
    woq_tensor* rt = nullptr;
    ASSERT_EQ(woq_tensor_from_qmatrix(ref, q, bias.data(), &rt), WOQ_OK);
    std::vector<float> w_ref(sh.n * sh.k);
    ASSERT_EQ(woq_dequantize(ref, rt, w_ref.data(), WOQ_DTYPE_F32, w_ref.size() * 4), WOQ_OK);
    EXPECT_EQ(w_hat, w_ref);
    for (uint64_t m : {1, 2, 3, 4, 5, 8, 9, 17, 33, 64}) {
      std::vector<float> x = woq::test::random_activations(m * sh.k, uint32_t(m));
      std::vector<float> y(m * sh.n, std::nanf(""));
      ASSERT_EQ(woq_matmul(ctx, t, x.data(), WOQ_DTYPE_F32, m, y.data(), WOQ_DTYPE_F32), WOQ_OK);
      const double err = woq::test::rel_error(y, woq::test::matmul_f64(x, w_ref, bias.data(), m, sh.n, sh.k));
      EXPECT_LT(err, 5e-6) << "m=" << m;
    }
    // 16-bit activations with fp32 output, at GEMV sizes (the fixed-point
    // kernels of avx512vnni) and beyond.
    for (woq_dtype xt : {WOQ_DTYPE_BF16, WOQ_DTYPE_F16})
      for (uint64_t m : {1, 3, 4, 7, 16, 33}) {  // amx: bf16 tiles at 16 (groups of 32) and 33
        std::vector<float> xs = woq::test::random_activations(m * sh.k, uint32_t(m + 40)), xe(m * sh.k);
        std::vector<uint16_t> x16(m * sh.k);
        for (size_t i = 0; i < x16.size(); ++i) {
          x16[i] = xt == WOQ_DTYPE_BF16 ? woq::kernels::float_to_bf16(xs[i]) : woq::kernels::float_to_half(xs[i]);
          xe[i] = xt == WOQ_DTYPE_BF16 ? woq::kernels::bf16_to_float(x16[i]) : woq::kernels::half_to_float(x16[i]);
        }
        std::vector<float> y(m * sh.n, std::nanf(""));
        ASSERT_EQ(woq_matmul(ctx, t, x16.data(), xt, m, y.data(), WOQ_DTYPE_F32), WOQ_OK);
        EXPECT_LT(woq::test::rel_error(y, woq::test::matmul_f64(xe, w_ref, bias.data(), m, sh.n, sh.k)), 5e-6)
            << "x dtype " << xt << " m=" << m;
      }
    // Half-precision activations in and out.
    const uint64_t m = 6;
    std::vector<float> xs = woq::test::random_activations(m * sh.k, 99), xe(m * sh.k);
    std::vector<uint16_t> xh(m * sh.k), yh(m * sh.n, 0xffff);
    for (size_t i = 0; i < xh.size(); ++i) {
      xh[i] = woq::kernels::float_to_bf16(xs[i]);
      xe[i] = woq::kernels::bf16_to_float(xh[i]);
    }
    ASSERT_EQ(woq_matmul(ctx, t, xh.data(), WOQ_DTYPE_BF16, m, yh.data(), WOQ_DTYPE_F16), WOQ_OK);
    std::vector<float> yf(yh.size());
    for (size_t i = 0; i < yh.size(); ++i) yf[i] = woq::kernels::half_to_float(yh[i]);
    EXPECT_LT(woq::test::rel_error(yf, woq::test::matmul_f64(xe, w_ref, bias.data(), m, sh.n, sh.k)), 2e-3);
    woq_tensor_destroy(rt);
    woq_context_destroy(ref);
    woq_tensor_destroy(t);
    woq_qmatrix_destroy(q);
  }
  woq_context_destroy(ctx);
}

INSTANTIATE_TEST_SUITE_P(SupportedIsas, CpuKernels, testing::ValuesIn(supported_isas()),
                         [](const testing::TestParamInfo<std::string>& i) { return i.param; });

TEST(CpuKernels, SimdPathsAgreeBitForBit) {
  // AVX2 and AVX-512 run the same operations in the same order: the fp32
  // kernels (m = 4: small M, m = 7: blocked GEMM) and the fixed-point
  // kernels (m = 1, 3: exact integer sums, combined the same way).
  const auto isas = supported_isas();
  if (std::find(isas.begin(), isas.end(), "avx512") == isas.end()) GTEST_SKIP() << "this CPU has no AVX-512";
  std::vector<float> w = woq::test::random_weights(70, 512, 1);
  woq_qmatrix* q = nullptr;
  ASSERT_EQ(woq_quantize(w.data(), WOQ_DTYPE_F32, 70, 512, nullptr, &q), WOQ_OK);
  auto run = [&](const char* isa, uint64_t m) {
    woq_context* ctx = context_for(isa, 1);
    woq_tensor* t = nullptr;
    EXPECT_EQ(woq_tensor_from_qmatrix(ctx, q, nullptr, &t), WOQ_OK);
    std::vector<float> x = woq::test::random_activations(m * 512, 3), y(m * 70, std::nanf(""));
    EXPECT_EQ(woq_matmul(ctx, t, x.data(), WOQ_DTYPE_F32, m, y.data(), WOQ_DTYPE_F32), WOQ_OK);
    woq_tensor_destroy(t);
    woq_context_destroy(ctx);
    return y;
  };
  for (uint64_t m : {4, 7}) EXPECT_EQ(run("avx2", m), run("avx512", m)) << "m=" << m;
  if (std::find(isas.begin(), isas.end(), "avx512vnni") != isas.end())
    for (uint64_t m : {1, 3}) EXPECT_EQ(run("avx2", m), run("avx512vnni", m)) << "m=" << m;
  woq_qmatrix_destroy(q);
}

TEST(CpuKernels, UnknownOrUnsupportedIsaIsRefused) {
  setenv("WOQ_CPU_ISA", "sse9", 1);
  woq_context* ctx = nullptr;
  EXPECT_EQ(woq_context_create(nullptr, &ctx), WOQ_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(woq_last_error()).find("sse9"), std::string::npos);
  unsetenv("WOQ_CPU_ISA");
  EXPECT_EQ(ctx, nullptr);
}

namespace {

// The form prepare_activations gives x for a K-wide matrix of `bits`-bit
// codes and `group` inputs per group on `isa`.
woq::kernels::Activations::Form prepared_form(const std::vector<float>& x, uint64_t m, uint64_t k, uint32_t bits,
                                              uint32_t group,
                                              woq::kernels::Isa isa = woq::kernels::Isa::Avx512Vnni,
                                              bool x_is_bf16 = false) {
  woq::kernels::PackedMatrix p;
  p.cols = k;
  p.group_size = group;
  p.code_bits = bits;
  woq::kernels::Activations a;
  a.x = x.data();
  a.m = m;
  a.x_is_bf16 = x_is_bf16;
  woq::kernels::prepare_activations(isa, p, a);
  return a.form;
}

struct Quantized {
  std::vector<float> w_hat;
  woq_tensor* tensor = nullptr;
};

// Random weights, quantized into a tensor of ctx. With zero_input >= 0 that
// input's weight is 0 in every row (asymmetric: q = z, dequantized exactly 0).
Quantized quantize_into(woq_context* ctx, uint64_t n, uint64_t k, uint32_t bits, uint32_t group, uint32_t seed,
                        int64_t zero_input = -1) {
  std::vector<float> w = woq::test::random_weights(n, k, seed);
  if (zero_input >= 0)
    for (uint64_t r = 0; r < n; ++r) w[r * k + uint64_t(zero_input)] = 0.0f;
  woq_quant_options qo;
  woq_quant_options_init(&qo);
  qo.bits = bits;
  qo.group_size = group;
  woq_qmatrix* q = nullptr;
  Quantized out;
  EXPECT_EQ(woq_quantize(w.data(), WOQ_DTYPE_F32, n, k, &qo, &q), WOQ_OK) << woq_last_error();
  EXPECT_EQ(woq_tensor_from_qmatrix(ctx, q, nullptr, &out.tensor), WOQ_OK) << woq_last_error();
  out.w_hat.resize(n * k);
  EXPECT_EQ(woq_dequantize(ctx, out.tensor, out.w_hat.data(), WOQ_DTYPE_F32, out.w_hat.size() * 4), WOQ_OK);
  woq_qmatrix_destroy(q);
  return out;
}

bool has_isa(const char* name) {
  const auto isas = supported_isas();
  return std::find(isas.begin(), isas.end(), name) != isas.end();
}

}  // namespace

TEST(CpuKernels, FixedPointActivationsScaleExactlyAndMatchFloat64) {
  if (!has_isa("avx512vnni")) GTEST_SKIP() << "this CPU has no AVX-512 VNNI";
  woq_context* ctx = context_for("avx512vnni", 2);
  const uint64_t n = 45;
  // K = 1020 per channel: blocks of 4 inputs, one word of byte codes each
  // (the kernel's odd tail); 4-bit rows of 1020 codes are not packed.
  struct Layout {
    uint64_t k;
    uint32_t group;
  };
  for (uint32_t bits : {4u, 8u, 3u})
    for (Layout layout : {Layout{1024, 32}, Layout{1024, 128}, Layout{1024, 0}, Layout{1020, 0}}) {
      const uint64_t k = layout.k;
      const uint32_t group = layout.group;
      if (bits == 4 && k % 8) continue;
      SCOPED_TRACE("bits " + std::to_string(bits) + " group " + std::to_string(group) + " k " + std::to_string(k));
      Quantized q = quantize_into(ctx, n, k, bits, group, bits * 100 + group);
      for (uint64_t m : {1, 2, 3, 4, 7, 32}) {
        std::vector<float> x = woq::test::random_activations(m * k, uint32_t(m));
        // Blocks of very different magnitudes (each block gets its own exponent).
        for (uint64_t i = 0; i < x.size(); ++i) x[i] = std::ldexp(x[i], int((i / 32) % 5) * 9 - 18);
        ASSERT_EQ(prepared_form(x, m, k, bits == 4 ? 4 : 8, group ? group : uint32_t(k)),
                  woq::kernels::Activations::Form::FixedPoint);
        std::vector<float> y(m * n, std::nanf(""));
        ASSERT_EQ(woq_matmul(ctx, q.tensor, x.data(), WOQ_DTYPE_F32, m, y.data(), WOQ_DTYPE_F32), WOQ_OK);
        EXPECT_LT(woq::test::rel_error(y, woq::test::matmul_f64(x, q.w_hat, nullptr, m, n, k)), 5e-6) << "m=" << m;
        // Scaling X by a power of two scales Y exactly, far into both ends of
        // the fp32 range: the digits are the same, only the exponent moves.
        for (int shift : {-100, 90}) {
          std::vector<float> xs(x.size()), ys(y.size(), std::nanf(""));
          for (uint64_t i = 0; i < x.size(); ++i) xs[i] = std::ldexp(x[i], shift);
          ASSERT_EQ(woq_matmul(ctx, q.tensor, xs.data(), WOQ_DTYPE_F32, m, ys.data(), WOQ_DTYPE_F32), WOQ_OK);
          for (uint64_t i = 0; i < y.size(); ++i) ASSERT_EQ(ys[i], std::ldexp(y[i], shift)) << "shift " << shift;
        }
      }
      woq_tensor_destroy(q.tensor);
    }
  woq_context_destroy(ctx);
}

TEST(CpuKernels, AmxGivesEachRowTheBitsOfAvx512VnniAlone) {
  // AMX takes rows of X 16 at a time through tiles, the rest through the
  // avx512vnni kernel; every row must come out as that kernel computes it
  // for the row alone (M = 1), so a row's result is independent of the batch.
  if (!has_isa("amx")) GTEST_SKIP() << "this CPU or OS has no AMX-INT8";
  woq_context* amx = context_for("amx", 2);
  woq_context* vnni = context_for("avx512vnni", 1);
  const uint64_t n = 45;  // a ragged last block of outputs
  struct Layout {
    uint64_t k;
    uint32_t group;
  };
  for (uint32_t bits : {4u, 8u, 3u})
    for (Layout layout : {Layout{1024, 32}, Layout{1024, 64}, Layout{1024, 128}, Layout{768, 256}, Layout{1088, 0},
                          Layout{960, 0}, Layout{1056, 0}}) {
      const uint64_t k = layout.k;
      SCOPED_TRACE("bits " + std::to_string(bits) + " group " + std::to_string(layout.group) + " k " +
                   std::to_string(k));
      std::vector<float> wf = woq::test::random_weights(n, k, bits + layout.group);
      woq_quant_options qo;
      woq_quant_options_init(&qo);
      qo.bits = bits;
      qo.group_size = layout.group;
      woq_qmatrix* q = nullptr;
      ASSERT_EQ(woq_quantize(wf.data(), WOQ_DTYPE_F32, n, k, &qo, &q), WOQ_OK) << woq_last_error();
      woq_tensor *ta = nullptr, *tv = nullptr;
      ASSERT_EQ(woq_tensor_from_qmatrix(amx, q, nullptr, &ta), WOQ_OK);
      ASSERT_EQ(woq_tensor_from_qmatrix(vnni, q, nullptr, &tv), WOQ_OK);
      for (uint64_t m : {8, 9, 16, 23, 48, 70}) {  // groups of 32: AMX from M = 16
        std::vector<float> x = woq::test::random_activations(m * k, uint32_t(m + bits));
        for (uint64_t i = 0; i < x.size(); ++i) x[i] = std::ldexp(x[i], int((i / 64) % 3) * 7 - 7);
        ASSERT_EQ(prepared_form(x, m, k, bits == 4 ? 4 : 8, layout.group ? layout.group : uint32_t(k),
                                woq::kernels::Isa::Amx),
                  woq::kernels::Activations::Form::FixedPoint)
            << "m=" << m;
        std::vector<float> y(m * n, std::nanf("")), row(n);
        ASSERT_EQ(woq_matmul(amx, ta, x.data(), WOQ_DTYPE_F32, m, y.data(), WOQ_DTYPE_F32), WOQ_OK);
        for (uint64_t r = 0; r < m; ++r) {
          std::fill(row.begin(), row.end(), std::nanf(""));
          ASSERT_EQ(woq_matmul(vnni, tv, x.data() + r * k, WOQ_DTYPE_F32, 1, row.data(), WOQ_DTYPE_F32), WOQ_OK);
          for (uint64_t i = 0; i < n; ++i) ASSERT_EQ(y[r * n + i], row[i]) << "m=" << m << " row " << r << " output " << i;
        }
      }
      woq_tensor_destroy(ta);
      woq_tensor_destroy(tv);
      woq_qmatrix_destroy(q);
    }
  woq_context_destroy(vnni);
  woq_context_destroy(amx);
}

namespace {

// x rounded to bf16: the values as bf16 and as the floats they are.
struct Bf16Values {
  std::vector<uint16_t> bits;
  std::vector<float> values;
};
Bf16Values to_bf16(const std::vector<float>& x) {
  Bf16Values b{std::vector<uint16_t>(x.size()), std::vector<float>(x.size())};
  for (size_t i = 0; i < x.size(); ++i) {
    b.bits[i] = woq::kernels::float_to_bf16(x[i]);
    b.values[i] = woq::kernels::bf16_to_float(b.bits[i]);
  }
  return b;
}

}  // namespace

TEST(CpuKernels, AmxBf16TilesMatchFloat64AndAreIndependentOfTheBatch) {
  // bf16 X from M = 32 (12 for groups of 32) runs tdpbf16ps on q - z:
  // exact products, fp32 sums per group. Each row of X is its own row of the tiles, so a row's
  // result must not depend on which or how many rows share its call.
  if (!has_isa("amx")) GTEST_SKIP() << "this CPU or OS has no AMX";
  woq_context* ctx = context_for("amx", 2);
  const uint64_t n = 45;  // three blocks of outputs: a pair and a ragged single
  struct Layout {
    uint64_t k;
    uint32_t group;
    woq_scheme scheme;
  };
  for (uint32_t bits : {4u, 8u, 3u})
    for (Layout layout : {Layout{1024, 32, WOQ_SCHEME_ASYMMETRIC}, Layout{1024, 64, WOQ_SCHEME_SYMMETRIC},
                          Layout{1024, 128, WOQ_SCHEME_ASYMMETRIC}, Layout{768, 256, WOQ_SCHEME_ASYMMETRIC},
                          Layout{1088, 0, WOQ_SCHEME_ASYMMETRIC}, Layout{960, 0, WOQ_SCHEME_SYMMETRIC}}) {
      const uint64_t k = layout.k;
      SCOPED_TRACE("bits " + std::to_string(bits) + " group " + std::to_string(layout.group) + " k " +
                   std::to_string(k));
      woq_quant_options qo;
      woq_quant_options_init(&qo);
      qo.bits = bits;
      qo.group_size = layout.group;
      qo.scheme = layout.scheme;
      std::vector<float> wf = woq::test::random_weights(n, k, bits * 7 + layout.group);
      woq_qmatrix* q = nullptr;
      ASSERT_EQ(woq_quantize(wf.data(), WOQ_DTYPE_F32, n, k, &qo, &q), WOQ_OK) << woq_last_error();
      std::vector<float> bias = woq::test::random_activations(n, 11);
      woq_tensor* t = nullptr;
      ASSERT_EQ(woq_tensor_from_qmatrix(ctx, q, bias.data(), &t), WOQ_OK);
      std::vector<float> w_hat(n * k);
      ASSERT_EQ(woq_dequantize(ctx, t, w_hat.data(), WOQ_DTYPE_F32, w_hat.size() * 4), WOQ_OK);
      // Magnitudes 2^-7 to 2^7 apart from block to block.
      const uint64_t rows = 70;
      std::vector<float> xs = woq::test::random_activations(rows * k, bits + layout.group);
      for (uint64_t i = 0; i < xs.size(); ++i) xs[i] = std::ldexp(xs[i], int((i / 64) % 3) * 7 - 7);
      const Bf16Values x = to_bf16(xs);
      const uint32_t packed_bits = bits == 4 ? 4 : 8, group = layout.group ? layout.group : uint32_t(k);
      const uint64_t min_rows = group == 32 ? woq::kernels::kAmxBf16MinRows32 : woq::kernels::kAmxBf16MinRows;
      ASSERT_EQ(prepared_form(x.values, min_rows - 1, k, packed_bits, group, woq::kernels::Isa::Amx, true),
                woq::kernels::Activations::Form::FixedPoint);
      std::vector<float> y_all(rows * n, std::nanf(""));
      ASSERT_EQ(woq_matmul(ctx, t, x.bits.data(), WOQ_DTYPE_BF16, rows, y_all.data(), WOQ_DTYPE_F32), WOQ_OK);
      EXPECT_LT(woq::test::rel_error(y_all, woq::test::matmul_f64(x.values, w_hat, bias.data(), rows, n, k)), 5e-6);
      // Fewer rows, from anywhere in X: each row as in the call of 70.
      struct Slice {
        uint64_t first, m;
      };
      for (Slice sl : {Slice{0, min_rows}, Slice{37, min_rows}, Slice{3, 33}, Slice{20, 35}, Slice{6, 64}, Slice{1, 69}}) {
        std::vector<float> xv(x.values.begin() + long(sl.first * k), x.values.begin() + long((sl.first + sl.m) * k));
        ASSERT_EQ(prepared_form(xv, sl.m, k, packed_bits, group, woq::kernels::Isa::Amx, true),
                  woq::kernels::Activations::Form::Bf16);
        std::vector<float> y(sl.m * n, std::nanf(""));
        ASSERT_EQ(woq_matmul(ctx, t, x.bits.data() + sl.first * k, WOQ_DTYPE_BF16, sl.m, y.data(), WOQ_DTYPE_F32),
                  WOQ_OK);
        for (uint64_t i = 0; i < y.size(); ++i)
          ASSERT_EQ(y[i], y_all[sl.first * n + i]) << "rows " << sl.first << "+" << sl.m << " element " << i;
      }
      woq_tensor_destroy(t);
      woq_qmatrix_destroy(q);
    }
  woq_context_destroy(ctx);
}

TEST(CpuKernels, AmxBf16TilesTakePeaksButNotSubnormalsOrNonFinite) {
  if (!has_isa("amx")) GTEST_SKIP() << "this CPU or OS has no AMX";
  woq_context* ctx = context_for("amx", 2);
  const uint64_t n = 40, k = 512, m = 48;
  const Quantized qz = quantize_into(ctx, n, k, 4, 128, 6, 300);
  woq_tensor* t = qz.tensor;
  const std::vector<float>& w_hat = qz.w_hat;
  for (uint64_t r = 0; r < n; ++r) ASSERT_EQ(w_hat[r * k + 300], 0.0f);
  std::vector<float> xs = woq::test::random_activations(m * k, 12);
  // A massive activation multiplying zero weights: the tiles multiply the
  // small values beside it exactly, where fixed point would keep ~10 bits.
  xs[40 * k + 300] = 1e4f;
  Bf16Values x = to_bf16(xs);
  ASSERT_EQ(prepared_form(x.values, m, k, 4, 128, woq::kernels::Isa::Amx, true), woq::kernels::Activations::Form::Bf16);
  std::vector<float> y(m * n, std::nanf(""));
  ASSERT_EQ(woq_matmul(ctx, t, x.bits.data(), WOQ_DTYPE_BF16, m, y.data(), WOQ_DTYPE_F32), WOQ_OK);
  const std::vector<double> y_ref = woq::test::matmul_f64(x.values, w_hat, nullptr, m, n, k);
  const std::vector<float> row40(y.begin() + 40 * n, y.begin() + 41 * n);
  EXPECT_LT(woq::test::rel_error(row40, std::vector<double>(y_ref.begin() + 40 * n, y_ref.begin() + 41 * n)), 5e-6);
  // A subnormal value (the tiles would flush it) and values near the top of
  // the range (their sums could overflow) go to fixed point instead; still
  // accurate.
  for (float odd : {1e-39f, -3e-30f, 1e30f}) {
    Bf16Values xo = x;
    xo.bits[5 * k + 17] = woq::kernels::float_to_bf16(odd);
    xo.values[5 * k + 17] = woq::kernels::bf16_to_float(xo.bits[5 * k + 17]);
    xo.bits[40 * k + 300] = xo.bits[40 * k + 301];  // no peak: fixed point takes it
    xo.values[40 * k + 300] = xo.values[40 * k + 301];
    const auto form = prepared_form(xo.values, m, k, 4, 128, woq::kernels::Isa::Amx, true);
    EXPECT_EQ(form, odd == 1e30f ? woq::kernels::Activations::Form::Fp32 : woq::kernels::Activations::Form::FixedPoint)
        << odd;
    std::fill(y.begin(), y.end(), std::nanf(""));
    ASSERT_EQ(woq_matmul(ctx, t, xo.bits.data(), WOQ_DTYPE_BF16, m, y.data(), WOQ_DTYPE_F32), WOQ_OK);
    EXPECT_LT(woq::test::rel_error(y, woq::test::matmul_f64(xo.values, w_hat, nullptr, m, n, k)), 5e-6) << odd;
  }
  // Infinity and NaN propagate as in IEEE arithmetic (the fp32 kernels).
  for (float bad : {std::numeric_limits<float>::infinity(), std::nanf("")}) {
    Bf16Values xb = x;
    xb.bits[9 * k + 7] = woq::kernels::float_to_bf16(bad);
    xb.values[9 * k + 7] = bad;
    ASSERT_EQ(prepared_form(xb.values, m, k, 4, 128, woq::kernels::Isa::Amx, true),
              woq::kernels::Activations::Form::Fp32);
    std::fill(y.begin(), y.end(), 0.0f);
    ASSERT_EQ(woq_matmul(ctx, t, xb.bits.data(), WOQ_DTYPE_BF16, m, y.data(), WOQ_DTYPE_F32), WOQ_OK);
    for (uint64_t i = 0; i < n; ++i) EXPECT_FALSE(std::isfinite(y[9 * n + i]));
    for (uint64_t i = 0; i < n; ++i) EXPECT_TRUE(std::isfinite(y[8 * n + i]));
  }
  woq_tensor_destroy(t);
  woq_context_destroy(ctx);
}

#if defined(__x86_64__)
// The calling thread's 64-byte tile configuration (64 zero bytes when no
// tiles are configured).
std::vector<uint8_t> tile_configuration() {
  alignas(64) uint8_t c[64];
  __asm__ volatile("sttilecfg %0" : "=m"(c)::"memory");
  return std::vector<uint8_t>(c, c + 64);
}

TEST(CpuKernels, AmxLeavesTheCallersTileConfigurationAsItWas) {
  // A library that configures its tiles once per thread and keeps them
  // (llama.cpp's ggml does) faults on its next tile load if a woq call
  // between two of its own releases them: woq's tile kernels put the
  // caller's configuration back, and release the tiles of a thread that had
  // none configured.
  if (!has_isa("amx")) GTEST_SKIP() << "this CPU or OS has no AMX";
  woq_context* ctx = context_for("amx", 1);  // one thread: the kernels run on the calling one
  const uint64_t n = 64, k = 1024, m = 64;
  woq_quant_options qo;
  woq_quant_options_init(&qo);
  std::vector<float> wf = woq::test::random_weights(n, k, 5);
  woq_qmatrix* q = nullptr;
  ASSERT_EQ(woq_quantize(wf.data(), WOQ_DTYPE_F32, n, k, &qo, &q), WOQ_OK) << woq_last_error();
  woq_tensor* t = nullptr;
  ASSERT_EQ(woq_tensor_from_qmatrix(ctx, q, nullptr, &t), WOQ_OK);
  const std::vector<float> x = woq::test::random_activations(m * k, 6);
  const Bf16Values xb = to_bf16(x);
  ASSERT_EQ(prepared_form(x, m, k, 4, 128, woq::kernels::Isa::Amx, false), woq::kernels::Activations::Form::FixedPoint);
  ASSERT_EQ(prepared_form(xb.values, m, k, 4, 128, woq::kernels::Isa::Amx, true), woq::kernels::Activations::Form::Bf16);
  // Palette 1, eight tiles of shapes no woq kernel uses.
  alignas(64) uint8_t theirs[64] = {1};
  for (int i = 0; i < 8; ++i) {
    const uint16_t colsb = uint16_t(4 * (i + 1));
    std::memcpy(theirs + 16 + 2 * i, &colsb, 2);
    theirs[48 + i] = uint8_t(i + 1);
  }
  std::vector<float> y(m * n);
  for (bool bf16 : {false, true}) {
    SCOPED_TRACE(bf16 ? "bf16 tiles" : "int8 tiles");
    const void* xp = bf16 ? static_cast<const void*>(xb.bits.data()) : x.data();
    const woq_dtype xt = bf16 ? WOQ_DTYPE_BF16 : WOQ_DTYPE_F32;
    __asm__ volatile("ldtilecfg %0" ::"m"(theirs) : "memory");
    ASSERT_EQ(woq_matmul(ctx, t, xp, xt, m, y.data(), WOQ_DTYPE_F32), WOQ_OK);
    EXPECT_EQ(tile_configuration(), std::vector<uint8_t>(theirs, theirs + 64));
    __asm__ volatile("tilerelease" ::: "memory");
    ASSERT_EQ(woq_matmul(ctx, t, xp, xt, m, y.data(), WOQ_DTYPE_F32), WOQ_OK);
    EXPECT_EQ(tile_configuration(), std::vector<uint8_t>(64, 0));
  }
  woq_tensor_destroy(t);
  woq_qmatrix_destroy(q);
  woq_context_destroy(ctx);
}
#endif

TEST(CpuKernels, PeakyOrNonFiniteActivationsRunTheFp32Kernel) {
  if (!has_isa("avx512vnni")) GTEST_SKIP() << "this CPU has no AVX-512 VNNI";
  woq_context* ctx = context_for("avx512vnni", 1);
  const uint64_t n = 40, k = 512;
  Quantized q = quantize_into(ctx, n, k, 4, 128, 5);
  std::vector<float> x = woq::test::random_activations(33 * k, 9);
  // Up to 32 rows of X; the blocked fp32 GEMM beyond.
  ASSERT_EQ(prepared_form(x, 32, k, 4, 128), woq::kernels::Activations::Form::FixedPoint);
  ASSERT_EQ(prepared_form(x, 33, k, 4, 128), woq::kernels::Activations::Form::Fp32);
  x.resize(k);
  ASSERT_EQ(prepared_form(x, 1, k, 4, 128), woq::kernels::Activations::Form::FixedPoint);
  // One value 1e4 times the others (as in LLMs' massive activations): in
  // fixed point the block's other values would keep about 10 bits.
  x[300] = 1e4f;
  ASSERT_EQ(prepared_form(x, 1, k, 4, 128), woq::kernels::Activations::Form::Fp32);
  std::vector<float> y(n, std::nanf(""));
  ASSERT_EQ(woq_matmul(ctx, q.tensor, x.data(), WOQ_DTYPE_F32, 1, y.data(), WOQ_DTYPE_F32), WOQ_OK);
  EXPECT_LT(woq::test::rel_error(y, woq::test::matmul_f64(x, q.w_hat, nullptr, 1, n, k)), 5e-6);
  // The same result with that input's weights zeroed leaves only the small
  // values: still accurate, relative to the much smaller result.
  for (uint64_t r = 0; r < n; ++r) q.w_hat[r * k + 300] = 0.0f;
  std::vector<float> x_without = x;
  x_without[300] = 0.0f;
  const std::vector<double> y_rest = woq::test::matmul_f64(x_without, q.w_hat, nullptr, 1, n, k);
  std::vector<float> y_rest_kernel(n, std::nanf(""));
  ASSERT_EQ(woq_matmul(ctx, q.tensor, x_without.data(), WOQ_DTYPE_F32, 1, y_rest_kernel.data(), WOQ_DTYPE_F32), WOQ_OK);
  EXPECT_LT(woq::test::rel_error(y_rest_kernel, y_rest), 5e-6);
  // Infinity and NaN propagate as in IEEE arithmetic instead of turning into digits.
  for (float bad : {std::numeric_limits<float>::infinity(), std::nanf("")}) {
    x = woq::test::random_activations(k, 9);
    x[7] = bad;
    ASSERT_EQ(prepared_form(x, 1, k, 4, 128), woq::kernels::Activations::Form::Fp32);
    std::fill(y.begin(), y.end(), 0.0f);
    ASSERT_EQ(woq_matmul(ctx, q.tensor, x.data(), WOQ_DTYPE_F32, 1, y.data(), WOQ_DTYPE_F32), WOQ_OK);
    for (float v : y) EXPECT_FALSE(std::isfinite(v));
  }
  woq_tensor_destroy(q.tensor);
  woq_context_destroy(ctx);
  // Rows of a large X are prepared on the pool's threads: one peaky row far
  // from the first still sends the whole call to the fp32 kernels (amx runs
  // fixed point at this M otherwise). The peak multiplies zero weights, so
  // the result is made of the small values alone, which fixed point would
  // round to about 1e-3 of their block's peak.
  woq_context* wide = context_for(has_isa("amx") ? "amx" : "avx512vnni", 2);
  const Quantized qz = quantize_into(wide, n, k, 4, 128, 6, 300);
  woq_tensor* tz = qz.tensor;
  const std::vector<float>& wz_hat = qz.w_hat;
  for (uint64_t r = 0; r < n; ++r) ASSERT_EQ(wz_hat[r * k + 300], 0.0f);
  const uint64_t m = 48;
  std::vector<float> xm = woq::test::random_activations(m * k, 10);
  ASSERT_EQ(prepared_form(xm, m, k, 4, 128, woq::kernels::Isa::Amx), woq::kernels::Activations::Form::FixedPoint);
  xm[40 * k + 300] = 1e4f;
  ASSERT_EQ(prepared_form(xm, m, k, 4, 128, woq::kernels::Isa::Amx), woq::kernels::Activations::Form::Fp32);
  std::vector<float> ym(m * n, std::nanf(""));
  ASSERT_EQ(woq_matmul(wide, tz, xm.data(), WOQ_DTYPE_F32, m, ym.data(), WOQ_DTYPE_F32), WOQ_OK);
  const std::vector<double> ym_ref = woq::test::matmul_f64(xm, wz_hat, nullptr, m, n, k);
  const std::vector<float> row40(ym.begin() + 40 * n, ym.begin() + 41 * n);
  const std::vector<double> row40_ref(ym_ref.begin() + 40 * n, ym_ref.begin() + 41 * n);
  EXPECT_LT(woq::test::rel_error(row40, row40_ref), 5e-6);
  EXPECT_LT(woq::test::rel_error(ym, ym_ref), 5e-6);
  woq_tensor_destroy(tz);
  woq_context_destroy(wide);
}

namespace {

// A matrix of random codes, scales and zero-points (not from the quantizer),
// repacked for the SIMD kernels, and its dequantized weights from the
// canonical reference.
struct RandomPacked {
  std::vector<uint32_t> codes;
  std::vector<uint16_t> scales;
  std::vector<uint8_t> zeros;
  woq::kernels::PackedMatrix packed;
  std::vector<float> w_hat;
  RandomPacked(uint64_t n, uint64_t k, uint32_t bits, uint32_t group, uint32_t seed) {
    std::mt19937 rng(seed);
    const uint64_t words_per_row = (k * bits + 31) / 32, groups = k / group;
    codes.resize(n * words_per_row);
    for (uint32_t& c : codes) c = rng();
    scales.resize(n * groups);
    zeros.resize(n * groups);
    std::uniform_real_distribution<float> scale(0.001f, 0.02f);
    for (uint64_t i = 0; i < scales.size(); ++i) {
      scales[i] = woq::kernels::float_to_half(scale(rng));
      zeros[i] = uint8_t(rng() % (1u << bits));
    }
    const woq::kernels::QuantView view{codes.data(), scales.data(), zeros.data(), nullptr, n, k, bits, group,
                                       words_per_row};
    packed = woq::kernels::repack(view);
    w_hat.resize(n * k);
    for (uint64_t r = 0; r < n; ++r) woq::kernels::reference_dequantize_row(view, r, w_hat.data() + r * k);
  }
};

// Every 32nd value of x (uniform in [-1, 1], times 2^chunk_exponent(i) for
// its run of 32) 8 times the others' largest: blocks of inputs nearly as
// peaky as fixed point takes (largest |x| about 11 times the mean, under
// kFixedPointPeak), which leaves their other values the fewest bits.
template <class Exponent>
void add_peaks(std::vector<float>& x, Exponent chunk_exponent) {
  for (uint64_t i = 0; i < x.size(); i += 32) x[i] = std::ldexp(std::copysign(8.0f, x[i]), chunk_exponent(i));
}

// Y (fp32) of one packed kernel call on `isa`, with the activations
// prepared for a 16-bit Y or an fp32 one; the digits they were given (0 for
// the fp32 kernels).
std::vector<float> packed_matmul(woq::kernels::Isa isa, const woq::kernels::PackedMatrix& w,
                                 const std::vector<float>& x, uint64_t m, bool y_is_16bit, int* digits) {
  woq::kernels::Activations a;
  a.x = x.data();
  a.m = m;
  a.y_is_16bit = y_is_16bit;
  woq::kernels::prepare_activations(isa, w, a);
  *digits = a.form == woq::kernels::Activations::Form::FixedPoint ? a.digits : 0;
  std::vector<float> y(m * w.rows, std::nanf(""));
  woq::kernels::packed_matmul_for(isa)(w, a, 0, w.blocks, y.data());
  return y;
}

}  // namespace

TEST(CpuKernels, TwoDigitsForSixteenBitOutputsStayFarBelowTheirRounding) {
  // Where Y is fp16 / bf16 the fixed-point kernels take two digits (15 bits
  // of each block's largest |x|) instead of three, and avx512vnni runs them
  // at every M: measured here in fp32, before Y's rounding, against float64
  // on the same dequantized weights.
  std::vector<woq::kernels::Isa> isas;
  if (has_isa("avx2")) isas.push_back(woq::kernels::Isa::Avx2);
  if (has_isa("avx512vnni")) isas.push_back(woq::kernels::Isa::Avx512Vnni);
  if (isas.empty()) GTEST_SKIP() << "this CPU has no fixed-point kernels";
  const uint64_t n = 45;
  struct Layout {
    uint64_t k;
    uint32_t bits, group;
  };
  for (const Layout& l : {Layout{1024, 4, 128}, Layout{1024, 4, 32}, Layout{1024, 8, 64}, Layout{1020, 8, 1020}}) {
    SCOPED_TRACE("bits " + std::to_string(l.bits) + " group " + std::to_string(l.group) + " k " + std::to_string(l.k));
    const RandomPacked w(n, l.k, l.bits, l.group, l.bits * 1000 + l.group);
    for (uint64_t m : {1, 2, 3, 4, 7, 32, 33, 70})  // beyond 32 rows only two digits run fixed point
      for (bool peaky : {false, true}) {
        std::vector<float> x = woq::test::random_activations(m * l.k, uint32_t(m));
        // Runs of very different magnitudes, or (peaky) a peak in each run of
        // 32 (runs of different magnitudes would add to the peaks).
        const auto exponent = [peaky](uint64_t i) { return peaky ? 0 : int((i / 32) % 5) * 9 - 18; };
        for (uint64_t i = 0; i < x.size(); ++i) x[i] = std::ldexp(x[i], exponent(i));
        if (peaky) add_peaks(x, exponent);
        const std::vector<double> ref = woq::test::matmul_f64(x, w.w_hat, nullptr, m, n, l.k);
        std::vector<float> y_avx2;
        for (woq::kernels::Isa isa : isas) {
          if (isa == woq::kernels::Isa::Avx2 && (l.bits != 4 || m > woq::kernels::kFixedPointMaxMAvx2)) continue;
          SCOPED_TRACE(std::string(woq::kernels::isa_name(isa)) + " m=" + std::to_string(m));
          int digits = 0;
          const std::vector<float> y3 = packed_matmul(isa, w.packed, x, m, false, &digits);
          EXPECT_EQ(digits, m <= woq::kernels::kFixedPointMaxM ? 3 : 0);
          const std::vector<float> y2 = packed_matmul(isa, w.packed, x, m, true, &digits);
          EXPECT_EQ(digits, 2);
          const double err3 = woq::test::rel_error(y3, ref), err2 = woq::test::rel_error(y2, ref);
          EXPECT_LT(err3, 5e-6);
          // At most 2^-15 of a block's largest |x| per value, random in sign,
          // times the dequantized weights: measured 2.6e-5..4.9e-5 here, and
          // 1.4e-4..2.2e-4 with peaks (random codes and zero-points; rounding
          // Y to fp16 alone costs about 2e-4).
          EXPECT_LT(err2, peaky ? 4e-4 : 1e-4);
          EXPECT_GT(err2, err3);  // the digits did change
          // Scaling X by a power of two scales Y exactly: the digits are the same.
          std::vector<float> xs(x.size());
          for (uint64_t i = 0; i < x.size(); ++i) xs[i] = std::ldexp(x[i], -60);
          const std::vector<float> y2s = packed_matmul(isa, w.packed, xs, m, true, &digits);
          for (uint64_t i = 0; i < y2.size(); ++i) ASSERT_EQ(y2s[i], std::ldexp(y2[i], -60)) << i;
          // avx2 and avx512vnni sum the same integers and combine them alike.
          if (isa == woq::kernels::Isa::Avx2) y_avx2 = y2;
          else if (!y_avx2.empty()) EXPECT_EQ(y2, y_avx2);
        }
      }
  }
}

TEST(CpuKernels, SixteenBitOutputsAddLittleToTheirOwnRounding) {
  // Through the C API on every ISA: fp16 and bf16 Y against float64 rounded
  // to Y's type. Whatever the kernel, its error must be that rounding's and
  // hardly more.
  std::vector<float> wf = woq::test::random_weights(300, 2048, 17);
  woq_qmatrix* q = nullptr;
  ASSERT_EQ(woq_quantize(wf.data(), WOQ_DTYPE_F32, 300, 2048, nullptr, &q), WOQ_OK);
  for (const std::string& isa : supported_isas()) {
    woq_context* ctx = context_for(isa, 2);
    woq_tensor* t = nullptr;
    ASSERT_EQ(woq_tensor_from_qmatrix(ctx, q, nullptr, &t), WOQ_OK);
    std::vector<float> w_hat(300 * 2048);
    ASSERT_EQ(woq_dequantize(ctx, t, w_hat.data(), WOQ_DTYPE_F32, w_hat.size() * 4), WOQ_OK);
    for (woq_dtype yt : {WOQ_DTYPE_F16, WOQ_DTYPE_BF16})
      for (uint64_t m : {1, 3, 8, 48})
        for (bool peaky : {false, true}) {
          SCOPED_TRACE(isa + " y dtype " + std::to_string(yt) + " m=" + std::to_string(m) + (peaky ? " peaky" : ""));
          std::vector<float> x = woq::test::random_activations(m * 2048, uint32_t(m + 7));
          if (peaky) add_peaks(x, [](uint64_t) { return 0; });
          const std::vector<double> ref = woq::test::matmul_f64(x, w_hat, nullptr, m, 300, 2048);
          std::vector<float> ref_rounded(ref.size());
          for (size_t i = 0; i < ref.size(); ++i)
            ref_rounded[i] = yt == WOQ_DTYPE_F16 ? woq::kernels::half_to_float(woq::kernels::float_to_half(float(ref[i])))
                                                 : woq::kernels::bf16_to_float(woq::kernels::float_to_bf16(float(ref[i])));
          std::vector<uint16_t> y16(m * 300, 0xffff);
          ASSERT_EQ(woq_matmul(ctx, t, x.data(), WOQ_DTYPE_F32, m, y16.data(), yt), WOQ_OK);
          std::vector<float> y(y16.size());
          for (size_t i = 0; i < y.size(); ++i)
            y[i] = yt == WOQ_DTYPE_F16 ? woq::kernels::half_to_float(y16[i]) : woq::kernels::bf16_to_float(y16[i]);
          // Measured: 1.00-1.014 times the rounding alone (fp16 Y about 2e-4,
          // bf16 1.6e-3), 1.30-1.37 with peaks (bf16 1.01); with one digit
          // instead of two, 5-240 times.
          const double rounding = woq::test::rel_error(ref_rounded, ref);
          EXPECT_GT(rounding, 0.0);
          EXPECT_LT(woq::test::rel_error(y, ref), (peaky ? 1.6 : 1.1) * rounding) << "rounding alone " << rounding;
        }
    woq_tensor_destroy(t);
    woq_context_destroy(ctx);
  }
  woq_qmatrix_destroy(q);
}
