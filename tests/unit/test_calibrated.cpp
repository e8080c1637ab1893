// Calibration-aware quantizers (GPTQ, AWQ): output error on held-out
// activations against RTN, stored values equal to the quantizer's own,
// degenerate calibration data, bad input, AWQ's input scales end to end.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "kernels/cpu/reference.h"
#include "quant/awq.h"
#include "quant/gptq.h"
#include "runtime/error.h"
#include "test_util.h"

using woq::Calibration;
using woq::DType;
using woq::GptqReport;
using woq::Method;
using woq::QuantConfig;
using woq::QuantizedMatrix;

namespace {

// Activations with the structure of a transformer layer's inputs: features
// that are correlated (a random mixing of fewer latent factors) and a few
// input channels tens of times larger than the rest.
std::vector<float> activations(uint64_t s, uint64_t k, uint32_t seed) {
  std::mt19937 rng(seed);  // the mixing is the same for every seed's split
  std::mt19937 mix_rng(1234);
  std::normal_distribution<float> normal(0, 1);
  const uint64_t latent = k / 4;
  std::vector<float> a(latent * k), scale(k, 1.0f);
  for (float& v : a) v = normal(mix_rng);
  for (uint64_t c = 0; c < k; c += 37) scale[c] = 20.0f;
  std::vector<float> x(s * k), z(latent);
  for (uint64_t r = 0; r < s; ++r) {
    for (float& v : z) v = normal(rng);
    for (uint64_t c = 0; c < k; ++c) {
      float v = 0.3f * normal(rng);
      for (uint64_t l = 0; l < latent; ++l) v += z[l] * a[l * k + c] / std::sqrt(float(latent));
      x[r * k + c] = v * scale[c];
    }
  }
  return x;
}

std::vector<float> weights(uint64_t n, uint64_t k, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0, 0.05f);
  std::vector<float> w(n * k);
  for (float& v : w) v = normal(rng);
  return w;
}

std::vector<float> dequantized(const QuantizedMatrix& m) {
  std::vector<float> w(m.rows * m.cols);
  for (uint64_t n = 0; n < m.rows; ++n) woq::kernels::reference_dequantize_row(m.view(), n, &w[n * m.cols]);
  return w;
}

// ||X (W_hat - W)^T||^2 / ||X W^T||^2 in float64.
double relative_output_error(const std::vector<float>& x, uint64_t s, const std::vector<float>& w,
                             const std::vector<float>& w_hat, uint64_t n, uint64_t k) {
  double err = 0, ref = 0;
  for (uint64_t r = 0; r < s; ++r)
    for (uint64_t o = 0; o < n; ++o) {
      double y = 0, e = 0;
      for (uint64_t c = 0; c < k; ++c) {
        y += double(x[r * k + c]) * w[o * k + c];
        e += double(x[r * k + c]) * (double(w_hat[o * k + c]) - w[o * k + c]);
      }
      err += e * e;
      ref += y * y;
    }
  return err / ref;
}

QuantConfig gptq_config(woq::ActOrder act_order) {
  QuantConfig c;
  c.method = Method::Gptq;
  c.act_order = act_order;
  return c;
}

}  // namespace

TEST(Gptq, CutsHeldOutOutputErrorAgainstRtn) {
  const uint64_t n = 64, k = 256, s = 512;
  const auto w = weights(n, k, 1);
  const auto calib = activations(s, k, 2), held_out = activations(s, k, 3);
  const Calibration c{calib.data(), DType::F32, s};
  const auto rtn = woq::quantize_rtn(w.data(), DType::F32, n, k, QuantConfig{});
  const double e_rtn = relative_output_error(held_out, s, w, dequantized(rtn), n, k);
  const auto gptq = woq::quantize_gptq(w.data(), DType::F32, n, k, gptq_config(woq::ActOrder::Off), c);
  const double e_gptq = relative_output_error(held_out, s, w, dequantized(gptq), n, k);
  const auto act = woq::quantize_gptq(w.data(), DType::F32, n, k, gptq_config(woq::ActOrder::StaticGroups), c);
  const double e_act = relative_output_error(held_out, s, w, dequantized(act), n, k);
  const auto perm = woq::quantize_gptq(w.data(), DType::F32, n, k, gptq_config(woq::ActOrder::Permuted), c);
  const double e_perm = relative_output_error(held_out, s, w, dequantized(perm), n, k);
  std::printf("held-out relative output MSE: RTN %.4g, GPTQ %.4g (%.0f%% less), act-order %.4g (%.0f%% less), "
              "act-order with permuted groups %.4g (%.0f%% less)\n",
              e_rtn, e_gptq, 100 * (1 - e_gptq / e_rtn), e_act, 100 * (1 - e_act / e_rtn), e_perm,
              100 * (1 - e_perm / e_rtn));
  EXPECT_LT(e_gptq, 0.75 * e_rtn);
  EXPECT_LT(e_act, 0.70 * e_rtn);
  EXPECT_LT(e_perm, 0.70 * e_rtn);
  EXPECT_TRUE(act.input_permutation.empty());
  EXPECT_EQ(perm.input_permutation.size(), k);
  EXPECT_EQ(gptq.method, Method::Gptq);
  // Weight error goes up (GPTQ trades it for output error), but stays bounded.
  EXPECT_GT(gptq.stats.rel_frobenius_error, rtn.stats.rel_frobenius_error);
  EXPECT_LT(gptq.stats.rel_frobenius_error, 3 * rtn.stats.rel_frobenius_error);
}

TEST(Gptq, StoredCodesDequantizeToItsOwnFakeQuantValues) {
  for (woq::ActOrder act_order : {woq::ActOrder::Off, woq::ActOrder::StaticGroups, woq::ActOrder::Permuted})
    for (uint32_t bits : {3u, 4u, 8u})
      for (uint32_t group : {32u, 128u, 0u}) {
        const uint64_t n = 24, k = 256, s = 300;
        const auto w = weights(n, k, bits + group);
        const auto x = activations(s, k, 5);
        QuantConfig config = gptq_config(act_order);
        config.bits = bits;
        config.group_size = group;
        GptqReport report;
        report.keep_fake_quant = true;
        const auto m = woq::quantize_gptq(w.data(), DType::F32, n, k, config, {x.data(), DType::F32, s}, &report);
        const auto w_hat = dequantized(m);
        ASSERT_EQ(report.fake_quant.size(), w_hat.size());
        for (size_t i = 0; i < w_hat.size(); ++i)
          ASSERT_EQ(std::memcmp(&w_hat[i], &report.fake_quant[i], 4), 0)
              << "act_order " << int(act_order) << " bits " << bits << " group " << group << " at " << i;
        EXPECT_EQ(report.damp, 0.01);
      }
}

TEST(Gptq, DegenerateDataGivesFiniteResults) {
  const uint64_t n = 16, k = 128;
  auto w = weights(n, k, 9);
  for (uint64_t c = 0; c < 32; ++c) w[3 * k + c] = 0.25f;  // a zero-range group
  for (uint64_t c = 0; c < 32; ++c) w[4 * k + c] = 0.0f;   // an all-zero group
  w[5 * k + 7] = 3000.0f;                                  // a huge outlier
  auto x = activations(64, k, 4);
  for (uint64_t r = 0; r < 64; ++r) x[r * k + 10] = x[r * k + 11] = 0;  // dead inputs
  for (uint64_t r = 0; r < 64; ++r) x[r * k + 20] = 1e4f;               // a huge constant input
  for (woq::ActOrder act_order : {woq::ActOrder::Off, woq::ActOrder::StaticGroups, woq::ActOrder::Permuted})
    for (uint64_t s : {uint64_t(1), uint64_t(2), uint64_t(64)}) {  // S = 1: H has rank 1
      GptqReport report;
      const auto m = woq::quantize_gptq(w.data(), DType::F32, n, k, gptq_config(act_order), {x.data(), DType::F32, s}, &report);
      EXPECT_GE(report.dead_columns, 2u);
      for (float v : dequantized(m)) ASSERT_TRUE(std::isfinite(v));
      EXPECT_TRUE(std::isfinite(m.stats.rel_frobenius_error));
      // The dead inputs' weights are still quantized as RTN would (not zeroed).
      EXPECT_NE(dequantized(m)[0 * k + 10], 0.0f);
    }
  // An all-zero calibration set: every input is dead and GPTQ is RTN.
  std::vector<float> zeros(8 * k, 0.0f);
  GptqReport report;
  const auto m = woq::quantize_gptq(w.data(), DType::F32, n, k, gptq_config(woq::ActOrder::Off), {zeros.data(), DType::F32, 8}, &report);
  const auto rtn = woq::quantize_rtn(w.data(), DType::F32, n, k, QuantConfig{});
  EXPECT_EQ(report.dead_columns, k);
  EXPECT_EQ(m.codes, rtn.codes);
  EXPECT_EQ(m.scales, rtn.scales);
}

TEST(Gptq, RejectsMissingOrNonFiniteCalibration) {
  const uint64_t n = 4, k = 64;
  const auto w = weights(n, k, 1);
  auto x = activations(8, k, 1);
  QuantConfig config = gptq_config(woq::ActOrder::Off);
  config.group_size = 32;
  try {
    woq::quantize_gptq(w.data(), DType::F32, n, k, config, {nullptr, DType::F32, 0});
    FAIL() << "no calibration accepted";
  } catch (const woq::Error& e) {
    EXPECT_EQ(e.status(), woq::Status::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("calibration"), std::string::npos);
  }
  x[3 * k + 5] = NAN;
  try {
    woq::quantize_gptq(w.data(), DType::F32, n, k, config, {x.data(), DType::F32, 8});
    FAIL() << "NaN activation accepted";
  } catch (const woq::Error& e) {
    EXPECT_NE(std::string(e.what()).find("row 3, col 5"), std::string::npos) << e.what();
  }
}

namespace {

QuantConfig awq_config() {
  QuantConfig c;
  c.method = Method::Awq;
  return c;
}

}  // namespace

// Through the C API: act_order = 2 writes a format 1.2 file whose input
// permutation every CPU backend applies; dequantization gives GPTQ's own
// fake-quantized weights (model order) bit for bit, and a value outside
// 0..2 is refused by name.
TEST(Gptq, PermutedGroupsSurviveTheFileAndEveryBackend) {
  using woq::test::TempDir;
  const uint64_t n = 40, k = 256, s = 256, m = 3;
  const auto w = weights(n, k, 21);
  const auto x_cal = activations(s, k, 22), x = activations(m, k, 23);
  woq_quant_options o;
  woq_quant_options_init(&o);
  o.method = WOQ_METHOD_GPTQ;
  o.group_size = 64;
  o.calibration = x_cal.data();
  o.calibration_rows = s;
  o.act_order = 2;
  woq_qmatrix* q = nullptr;
  ASSERT_EQ(woq_quantize(w.data(), WOQ_DTYPE_F32, n, k, &o, &q), WOQ_OK) << woq_last_error();
  QuantConfig config = gptq_config(woq::ActOrder::Permuted);
  config.group_size = 64;
  GptqReport report;
  report.keep_fake_quant = true;
  woq::quantize_gptq(w.data(), DType::F32, n, k, config, {x_cal.data(), DType::F32, s}, &report);
  TempDir dir;
  ASSERT_TRUE(woq::test::write_one_tensor(dir.file("gptq.woq"), "w", q));
  EXPECT_EQ(woq::test::read_file(dir.file("gptq.woq"))[10], 2) << "an input permutation is format 1.2";
  woq_file* f = nullptr;
  ASSERT_EQ(woq_file_open(dir.file("gptq.woq").c_str(), &f), WOQ_OK);
  for (woq_backend backend : {WOQ_BACKEND_CPU_REFERENCE, WOQ_BACKEND_CPU}) {
    woq_context* ctx = nullptr;
    ASSERT_EQ(woq::test::create_context(backend, &ctx), WOQ_OK);
    woq_tensor* t = nullptr;
    ASSERT_EQ(woq_tensor_load(ctx, f, "w", &t), WOQ_OK) << woq_last_error();
    std::vector<float> w_hat(n * k);
    ASSERT_EQ(woq_dequantize(ctx, t, w_hat.data(), WOQ_DTYPE_F32, n * k * 4), WOQ_OK);
    ASSERT_EQ(std::memcmp(w_hat.data(), report.fake_quant.data(), n * k * 4), 0) << "backend " << backend;
    std::vector<float> y(m * n);
    ASSERT_EQ(woq_matmul(ctx, t, x.data(), WOQ_DTYPE_F32, m, y.data(), WOQ_DTYPE_F32), WOQ_OK);
    EXPECT_LT(woq::test::rel_error(y, woq::test::matmul_f64(x, w_hat, nullptr, m, n, k)), 1e-5) << "backend " << backend;
    woq_tensor_destroy(t);
    woq_context_destroy(ctx);
  }
  woq_file_close(f);
  woq_qmatrix_destroy(q);
  o.act_order = 3;
  EXPECT_EQ(woq_quantize(w.data(), WOQ_DTYPE_F32, n, k, &o, &q), WOQ_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(woq_last_error()).find("act_order 3"), std::string::npos) << woq_last_error();
}

TEST(Awq, CutsHeldOutOutputErrorAgainstRtn) {
  const uint64_t n = 64, k = 256, s = 512;
  const auto w = weights(n, k, 1);
  const auto calib = activations(s, k, 2), held_out = activations(s, k, 3);
  const auto rtn = woq::quantize_rtn(w.data(), DType::F32, n, k, QuantConfig{});
  const double e_rtn = relative_output_error(held_out, s, w, dequantized(rtn), n, k);
  woq::AwqReport report;
  const auto awq = woq::quantize_awq(w.data(), DType::F32, n, k, awq_config(), {calib.data(), DType::F32, s}, false, &report);
  const double e_awq = relative_output_error(held_out, s, w, dequantized(awq), n, k);
  std::printf("held-out relative output MSE: RTN %.4g, AWQ %.4g (%.0f%% less; alpha %.2f; calibration %.4g -> %.4g)\n",
              e_rtn, e_awq, 100 * (1 - e_awq / e_rtn), report.alpha, report.calib_error_rtn, report.calib_error);
  EXPECT_LT(e_awq, 0.85 * e_rtn);
  EXPECT_GT(report.alpha, 0.0);
  EXPECT_LT(report.calib_error, report.calib_error_rtn);
  ASSERT_EQ(awq.input_scales.size(), k);
  for (float v : awq.input_scales) ASSERT_TRUE(std::isfinite(v) && v > 0);
}

TEST(Awq, DegenerateDataGivesFiniteResults) {
  const uint64_t n = 16, k = 128;
  auto w = weights(n, k, 9);
  for (uint64_t c = 0; c < 32; ++c) w[3 * k + c] = 0.25f, w[4 * k + c] = 0.0f;
  w[5 * k + 7] = 3000.0f;
  auto x = activations(64, k, 4);
  for (uint64_t r = 0; r < 64; ++r) x[r * k + 10] = x[r * k + 11] = 0;  // dead inputs
  for (uint64_t r = 0; r < 64; ++r) x[r * k + 20] = 1e4f;               // a huge input
  for (uint64_t s : {uint64_t(1), uint64_t(64)}) {
    const auto m = woq::quantize_awq(w.data(), DType::F32, n, k, awq_config(), {x.data(), DType::F32, s}, false);
    for (float v : dequantized(m)) ASSERT_TRUE(std::isfinite(v));
    for (float v : m.input_scales) ASSERT_TRUE(std::isfinite(v) && v > 0);
  }
  std::vector<float> zeros(8 * k, 0.0f);  // no signal at all: alpha 0 is as good as any
  woq::AwqReport report;
  const auto m = woq::quantize_awq(w.data(), DType::F32, n, k, awq_config(), {zeros.data(), DType::F32, 8}, false, &report);
  for (float v : dequantized(m)) ASSERT_TRUE(std::isfinite(v));
}

// Through the C API: the .woq file (format 1.1) keeps the input scales, every
// backend applies them, dequantization gives the quantizer's own effective
// weights bit for bit, and a folded matrix equals the unfolded one on
// pre-scaled activations.
TEST(Awq, InputScalesSurviveTheFileAndEveryBackend) {
  using woq::test::TempDir;
  const uint64_t n = 48, k = 256, s = 256, m = 3;
  const auto w = weights(n, k, 11);
  const auto x_cal = activations(s, k, 12), x = activations(m, k, 13);
  woq_quant_options o;
  woq_quant_options_init(&o);
  o.method = WOQ_METHOD_AWQ;
  o.calibration = x_cal.data();
  o.calibration_rows = s;
  woq_qmatrix* q = nullptr;
  ASSERT_EQ(woq_quantize(w.data(), WOQ_DTYPE_F32, n, k, &o, &q), WOQ_OK) << woq_last_error();
  uint64_t count = 0;
  std::vector<float> factors(k);
  ASSERT_EQ(woq_qmatrix_input_scales(q, factors.data(), k * 4, &count), WOQ_OK);
  ASSERT_EQ(count, k);
  EXPECT_EQ(woq_qmatrix_input_scales(q, factors.data(), k * 4 - 1, &count), WOQ_ERR_SHAPE);

  TempDir dir;
  ASSERT_TRUE(woq::test::write_one_tensor(dir.file("awq.woq"), "w", q));
  const auto bytes = woq::test::read_file(dir.file("awq.woq"));
  EXPECT_EQ(bytes[10], 1) << "a file with input scales is format 1.1";
  woq_file* f = nullptr;
  ASSERT_EQ(woq_file_open(dir.file("awq.woq").c_str(), &f), WOQ_OK);
  woq_tensor_info info;
  info.struct_size = sizeof info;
  ASSERT_EQ(woq_file_tensor_info(f, 0, &info), WOQ_OK);
  EXPECT_EQ(info.has_input_scales, 1);
  EXPECT_EQ(info.method, WOQ_METHOD_AWQ);

  std::vector<float> ref_weights;  // effective weights from the first backend
  for (woq_backend backend : {WOQ_BACKEND_CPU_REFERENCE, WOQ_BACKEND_CPU}) {
    woq_context* ctx = nullptr;
    ASSERT_EQ(woq::test::create_context(backend, &ctx), WOQ_OK);
    woq_tensor *from_file = nullptr, *direct = nullptr;
    ASSERT_EQ(woq_tensor_load(ctx, f, "w", &from_file), WOQ_OK) << woq_last_error();
    ASSERT_EQ(woq_tensor_from_qmatrix(ctx, q, nullptr, &direct), WOQ_OK);
    std::vector<float> w_file(n * k), w_direct(n * k);
    ASSERT_EQ(woq_dequantize(ctx, from_file, w_file.data(), WOQ_DTYPE_F32, n * k * 4), WOQ_OK);
    ASSERT_EQ(woq_dequantize(ctx, direct, w_direct.data(), WOQ_DTYPE_F32, n * k * 4), WOQ_OK);
    ASSERT_EQ(std::memcmp(w_file.data(), w_direct.data(), n * k * 4), 0);
    if (ref_weights.empty()) ref_weights = w_file;
    ASSERT_EQ(std::memcmp(w_file.data(), ref_weights.data(), n * k * 4), 0) << "backend " << backend;
    std::vector<float> y(m * n);
    ASSERT_EQ(woq_matmul(ctx, from_file, x.data(), WOQ_DTYPE_F32, m, y.data(), WOQ_DTYPE_F32), WOQ_OK);
    EXPECT_LT(woq::test::rel_error(y, woq::test::matmul_f64(x, w_file, nullptr, m, n, k)), 1e-5) << "backend " << backend;
    woq_tensor_destroy(from_file);
    woq_tensor_destroy(direct);
    woq_context_destroy(ctx);
  }
  woq_file_close(f);

  // Folded: no factors in the matrix; X pre-multiplied gives the same Y.
  o.fold_input_scales = 1;
  woq_qmatrix* folded = nullptr;
  ASSERT_EQ(woq_quantize(w.data(), WOQ_DTYPE_F32, n, k, &o, &folded), WOQ_OK) << woq_last_error();
  std::vector<float> folded_factors(k);
  ASSERT_EQ(woq_qmatrix_input_scales(folded, folded_factors.data(), k * 4, &count), WOQ_OK);
  ASSERT_EQ(count, k);
  EXPECT_EQ(folded_factors, factors);
  ASSERT_TRUE(woq::test::write_one_tensor(dir.file("folded.woq"), "w", folded));
  EXPECT_EQ(woq::test::read_file(dir.file("folded.woq"))[10], 0) << "no input scales: format 1.0";
  woq_context* ctx = nullptr;
  ASSERT_EQ(woq_context_create(nullptr, &ctx), WOQ_OK);
  woq_tensor *t = nullptr, *t_folded = nullptr;
  ASSERT_EQ(woq_tensor_from_qmatrix(ctx, q, nullptr, &t), WOQ_OK);
  ASSERT_EQ(woq_tensor_from_qmatrix(ctx, folded, nullptr, &t_folded), WOQ_OK);
  std::vector<float> x_scaled(x), y(m * n), y_folded(m * n);
  for (uint64_t i = 0; i < x_scaled.size(); ++i) x_scaled[i] *= factors[i % k];
  ASSERT_EQ(woq_matmul(ctx, t, x.data(), WOQ_DTYPE_F32, m, y.data(), WOQ_DTYPE_F32), WOQ_OK);
  ASSERT_EQ(woq_matmul(ctx, t_folded, x_scaled.data(), WOQ_DTYPE_F32, m, y_folded.data(), WOQ_DTYPE_F32), WOQ_OK);
  EXPECT_EQ(y, y_folded);  // the same products in the same order
  woq_tensor_destroy(t);
  woq_tensor_destroy(t_folded);
  woq_context_destroy(ctx);
  woq_qmatrix_destroy(q);
  woq_qmatrix_destroy(folded);

  // Misuse is named.
  o.method = WOQ_METHOD_RTN;
  EXPECT_EQ(woq_quantize(w.data(), WOQ_DTYPE_F32, n, k, &o, &q), WOQ_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(woq_last_error()).find("fold_input_scales"), std::string::npos);
  o.fold_input_scales = 0;
  EXPECT_EQ(woq_quantize(w.data(), WOQ_DTYPE_F32, n, k, &o, &q), WOQ_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(woq_last_error()).find("calibration"), std::string::npos);
  o.method = WOQ_METHOD_AWQ;
  o.calibration = nullptr;
  EXPECT_EQ(woq_quantize(w.data(), WOQ_DTYPE_F32, n, k, &o, &q), WOQ_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(woq_last_error()).find("AWQ needs calibration"), std::string::npos);
}
