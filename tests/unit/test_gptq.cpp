// GPTQ: output error on held-out activations against RTN, fake-quant values
// equal to what is stored, degenerate calibration data, bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "kernels/cpu/reference.h"
#include "quant/gptq.h"
#include "runtime/error.h"

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

QuantConfig gptq_config(bool act_order) {
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
  const auto gptq = woq::quantize_gptq(w.data(), DType::F32, n, k, gptq_config(false), c);
  const double e_gptq = relative_output_error(held_out, s, w, dequantized(gptq), n, k);
  const auto act = woq::quantize_gptq(w.data(), DType::F32, n, k, gptq_config(true), c);
  const double e_act = relative_output_error(held_out, s, w, dequantized(act), n, k);
  std::printf("held-out relative output MSE: RTN %.4g, GPTQ %.4g (%.0f%% less), act-order %.4g (%.0f%% less)\n",
              e_rtn, e_gptq, 100 * (1 - e_gptq / e_rtn), e_act, 100 * (1 - e_act / e_rtn));
  EXPECT_LT(e_gptq, 0.75 * e_rtn);
  EXPECT_LT(e_act, 0.70 * e_rtn);
  EXPECT_EQ(gptq.method, Method::Gptq);
  // Weight error goes up (GPTQ trades it for output error), but stays bounded.
  EXPECT_GT(gptq.stats.rel_frobenius_error, rtn.stats.rel_frobenius_error);
  EXPECT_LT(gptq.stats.rel_frobenius_error, 3 * rtn.stats.rel_frobenius_error);
}

TEST(Gptq, StoredCodesDequantizeToItsOwnFakeQuantValues) {
  for (bool act_order : {false, true})
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
              << "act_order " << act_order << " bits " << bits << " group " << group << " at " << i;
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
  for (bool act_order : {false, true})
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
  const auto m = woq::quantize_gptq(w.data(), DType::F32, n, k, gptq_config(false), {zeros.data(), DType::F32, 8}, &report);
  const auto rtn = woq::quantize_rtn(w.data(), DType::F32, n, k, QuantConfig{});
  EXPECT_EQ(report.dead_columns, k);
  EXPECT_EQ(m.codes, rtn.codes);
  EXPECT_EQ(m.scales, rtn.scales);
}

TEST(Gptq, RejectsMissingOrNonFiniteCalibration) {
  const uint64_t n = 4, k = 64;
  const auto w = weights(n, k, 1);
  auto x = activations(8, k, 1);
  QuantConfig config = gptq_config(false);
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
