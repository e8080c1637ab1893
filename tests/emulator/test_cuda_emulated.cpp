// The CUDA kernels of kernels/cuda/matmul.cu, compiled as host C++ and run
// on the warp emulator (cuda_emulator.h), against a float64 product of the
// CPU reference's dequantized weights: every kernel (GEMV, split, tile,
// wgmma, fp32), 2..8-bit codes, groups and per-channel, ragged N and K, K
// not a multiple of 8 (the element-wise X path), fp32 / fp16 / bf16 X and
// Y, batch independence across the kernels, the dequantize and input-scale
// kernels.
// Runs wherever CUDA's headers are, GPU or not; what it cannot show is the
// hardware's own behaviour (tests/gpu does that on a GPU).
#include "tests/emulator/cuda_emulator.h"

// clang-format off
#include "kernels/cuda/matmul.cu"
// clang-format on

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/reference.h"
#include "kernels/cuda/layout.h"
#include "quant/rtn.h"

namespace {

namespace cu = woq::kernels::cuda;
namespace k = woq::kernels;

struct Config {
  uint32_t bits, group;
  woq::Scheme scheme;
  uint64_t n, k;
};

// A quantized matrix in host memory, in the GPU layout, with the view the
// kernels take.
struct Emulated {
  woq::QuantizedMatrix q;
  cu::FragmentMatrix f;
  cu::DeviceMatrix view;
  std::vector<double> w_hat;  // float64 dequantized weights, N x K
};

Emulated make(const Config& c, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 0.05f);
  std::vector<float> w(c.n * c.k);
  for (float& v : w) v = dist(rng);
  woq::QuantConfig qc;
  qc.bits = c.bits;
  qc.group_size = c.group;
  qc.scheme = c.scheme;
  Emulated e;
  e.q = woq::quantize_rtn(w.data(), woq::DType::F32, c.n, c.k, qc);
  e.q.bias.resize(c.n);
  for (float& b : e.q.bias) b = dist(rng);
  const k::QuantView v = e.q.view();
  e.f = cu::repack_fragments(v.codes, v.words_per_row, v.scales, v.zeros, v.rows, v.cols, v.bits, v.group_size);
  e.view.rows = c.n;
  e.view.cols = c.k;
  e.view.group_size = v.group_size;
  e.view.group_shift = e.f.shape.group_shift;
  e.view.field = e.f.shape.field;
  e.view.slices = e.f.shape.slices;
  e.view.steps = e.f.shape.steps;
  e.view.units = e.f.units.data();
  e.view.scales = e.f.scales.data();
  e.view.zeros = e.f.zeros.data();
  e.view.bias = e.q.bias.data();
  std::vector<float> row(c.k);
  for (uint64_t n = 0; n < c.n; ++n) {
    k::reference_dequantize_row(v, n, row.data());
    for (uint64_t j = 0; j < c.k; ++j) e.w_hat.push_back(row[j]);
  }
  return e;
}

// X as its dtype's bits (fp32 as floats) and its exact values.
struct Activations {
  std::vector<float> f32, exact;
  std::vector<uint16_t> b16;
  const void* data(cu::Dtype t) const { return t == cu::Dtype::F32 ? static_cast<const void*>(f32.data()) : b16.data(); }
};

Activations activations(uint64_t count, cu::Dtype t, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  Activations a;
  for (uint64_t i = 0; i < count; ++i) {
    const float v = dist(rng);
    if (t == cu::Dtype::F32) {
      a.f32.push_back(v);
      a.exact.push_back(v);
    } else {
      const uint16_t b = t == cu::Dtype::F16 ? k::float_to_half(v) : k::float_to_bf16(v);
      a.b16.push_back(b);
      a.exact.push_back(t == cu::Dtype::F16 ? k::half_to_float(b) : k::bf16_to_float(b));
    }
  }
  return a;
}

double rel_error(const std::vector<float>& y, const Emulated& e, const std::vector<float>& x, uint64_t m) {
  double err = 0, ref = 0;
  for (uint64_t r = 0; r < m; ++r)
    for (uint64_t n = 0; n < e.view.rows; ++n) {
      double want = e.q.bias[n];
      for (uint64_t j = 0; j < e.view.cols; ++j) want += double(x[r * e.view.cols + j]) * e.w_hat[n * e.view.cols + j];
      const double d = double(y[r * e.view.rows + n]) - want;
      err += d * d;
      ref += want * want;
    }
  return std::sqrt(err / ref);
}

// As on a Hopper GPU: Auto takes the wgmma kernel for large M.
// (multiprocessors: unknown, so blocks of two warpgroups and the GEMV
// kernel with 2 units in flight; many: of one, and with 6.)
std::vector<float> run(const Emulated& e, const Activations& x, cu::Dtype t, uint64_t m,
                       cu::Kernel kernel = cu::Kernel::Auto, int multiprocessors = 0) {
  const cu::KernelChoice choice(kernel, true, multiprocessors);
  std::vector<float> y(m * e.view.rows, std::nanf(""));  // poisoned, and so is the workspace
  std::vector<float> workspace(cu::matmul_workspace_floats(e.view, t, m, choice), std::nanf(""));
  EXPECT_EQ(cu::matmul(e.view, x.data(t), t, m, y.data(), cu::Dtype::F32, nullptr, choice,
                       workspace.empty() ? nullptr : workspace.data()),
            cudaSuccess);
  return y;
}

void PrintTo(const Config& c, std::ostream* os) {  // not the struct's bytes (padding included)
  *os << c.bits << "-bit g" << c.group << " " << c.n << "x" << c.k;
}

class EmulatedKernels : public ::testing::TestWithParam<Config> {};

TEST_P(EmulatedKernels, MatchFloat64AndDoNotDependOnM) {
  const Config c = GetParam();
  const Emulated e = make(c, uint32_t(c.n * 31 + c.k));
  // The dequantize kernel writes the reference's exact products, and in
  // 16 bits those rounded to nearest; here all rows, and rows from the
  // second slice on (the ranges dequantize + cuBLAS takes).
  std::vector<float> w_gpu(c.n * c.k, std::nanf(""));
  ASSERT_EQ(cu::dequantize_rows(e.view, 0, c.n, cu::Dtype::F32, w_gpu.data(), nullptr), cudaSuccess);
  for (uint64_t i = 0; i < w_gpu.size(); ++i) ASSERT_EQ(double(w_gpu[i]), e.w_hat[i]) << "weight " << i;
  for (cu::Dtype t : {cu::Dtype::F32, cu::Dtype::F16, cu::Dtype::BF16}) {
    // From the second slice on, ending 3 rows short of the end where there
    // are rows enough: a partial last slice with rows after it.
    const uint64_t first = c.n > 16 ? 16 : 0, rows = c.n - first - (c.n > 20 ? 3 : 0);
    const size_t size = t == cu::Dtype::F32 ? 4 : 2;
    std::vector<uint32_t> words((rows * c.k * size + 3) / 4 + 4, 0xFFFFFFFFu);  // 16 bytes past the end, untouched
    ASSERT_EQ(cu::dequantize_rows(e.view, first, rows, t, words.data(), nullptr), cudaSuccess);
    const auto* bytes = reinterpret_cast<const unsigned char*>(words.data());
    for (uint64_t i = 0; i < rows * c.k; ++i) {
      const float w = float(e.w_hat[first * c.k + i]);
      if (t == cu::Dtype::F32) {
        float got;
        std::memcpy(&got, bytes + 4 * i, 4);
        ASSERT_EQ(got, w) << "weight " << i;
      } else {
        uint16_t got;
        std::memcpy(&got, bytes + 2 * i, 2);
        ASSERT_EQ(got, t == cu::Dtype::F16 ? k::float_to_half(w) : k::float_to_bf16(w)) << "weight " << i;
      }
    }
    for (size_t i = rows * c.k * size; i < words.size() * 4; ++i) ASSERT_EQ(bytes[i], 0xFF) << "byte " << i;
  }

  for (cu::Dtype t : {cu::Dtype::F32, cu::Dtype::F16, cu::Dtype::BF16}) {
    // 1, 3: the GEMV kernel (one block of 8 rows, partly empty); 5, 17, 33:
    // the split kernel with 1, 2 and 4 tiles of 16 rows; 130: the wgmma
    // kernel (3 blocks of 64 rows, the last nearly empty); fp32 X: 8 rows a
    // block.
    for (uint64_t m : {1, 3, 5, 17, 33, 130}) {
      SCOPED_TRACE("x dtype " + std::to_string(int(t)) + ", m " + std::to_string(m));
      const Activations x = activations(m * c.k, t, uint32_t(m + c.k));
      const std::vector<float> y = run(e, x, t, m);
      EXPECT_LT(rel_error(y, e, x.exact, m), t == cu::Dtype::F32 ? 1e-5 : 1e-4);
      if (t != cu::Dtype::F32 && (m == 3 || m == 33)) {  // every tensor-core kernel forced at this M: the same bits
        for (cu::Kernel forced : {cu::Kernel::Gemv, cu::Kernel::Split, cu::Kernel::Tile, cu::Kernel::Wgmma})
          ASSERT_EQ(run(e, x, t, m, forced), y) << "kernel " << int(forced);
        // Many multiprocessors for few blocks: the GEMV kernel with 6 units in flight.
        ASSERT_EQ(run(e, x, t, m, cu::Kernel::Gemv, 1000), y) << "deep GEMV kernel";
      }
      if (t != cu::Dtype::F32 && m == 130) {
        ASSERT_EQ(run(e, x, t, m, cu::Kernel::Tile), y) << "tile kernel";
        ASSERT_EQ(run(e, x, t, m, cu::Kernel::Wgmma, 1000), y) << "wgmma kernel, blocks of one warpgroup";
      }
      if (m < 17) continue;
      // Row 16 of this batch, alone (M = 1): the same bits.
      Activations one;
      if (t == cu::Dtype::F32) one.f32.assign(x.f32.begin() + 16 * c.k, x.f32.begin() + 17 * c.k);
      else one.b16.assign(x.b16.begin() + 16 * c.k, x.b16.begin() + 17 * c.k);
      const std::vector<float> y1 = run(e, one, t, 1);
      for (uint64_t n = 0; n < c.n; ++n) ASSERT_EQ(y1[n], y[16 * c.n + n]) << "output " << n;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, EmulatedKernels,
    ::testing::Values(Config{4, 128, woq::Scheme::Asymmetric, 37, 384}, Config{4, 32, woq::Scheme::Symmetric, 21, 160},
                      Config{4, 0, woq::Scheme::Asymmetric, 9, 77}, Config{4, 64, woq::Scheme::Asymmetric, 16, 1088},
                      Config{8, 128, woq::Scheme::Asymmetric, 20, 256}, Config{8, 32, woq::Scheme::Symmetric, 24, 288},
                      Config{8, 0, woq::Scheme::Asymmetric, 5, 301}, Config{3, 64, woq::Scheme::Asymmetric, 30, 192},
                      Config{6, 32, woq::Scheme::Asymmetric, 24, 160},
                      // 8 steps a K-part: past the deepest streams' 6 units ahead
                      Config{4, 128, woq::Scheme::Asymmetric, 16, 4096}),
    [](const ::testing::TestParamInfo<Config>& info) {
      const Config& c = info.param;
      return "b" + std::to_string(c.bits) + "_g" + std::to_string(c.group) + "_" + std::to_string(c.n) + "x" +
             std::to_string(c.k);
    });

// Y in fp16 and bf16: the fp32 result rounded once.
TEST(EmulatedKernels, SixteenBitOutputsAreTheRoundedFp32Result) {
  const Emulated e = make({4, 128, woq::Scheme::Asymmetric, 40, 256}, 3);
  const Activations x = activations(2 * 256, cu::Dtype::F16, 4);
  const std::vector<float> y = run(e, x, cu::Dtype::F16, 2);
  for (cu::Dtype yt : {cu::Dtype::F16, cu::Dtype::BF16}) {
    std::vector<uint16_t> y16(y.size(), 0xFFFF);
    ASSERT_EQ(cu::matmul(e.view, x.data(cu::Dtype::F16), cu::Dtype::F16, 2, y16.data(), yt, nullptr), cudaSuccess);
    std::vector<uint16_t> split16(y.size(), 0xFFFF);  // and through the split kernel's reduction
    std::vector<float> workspace(cu::matmul_workspace_floats(e.view, cu::Dtype::F16, 2, cu::Kernel::Split));
    ASSERT_EQ(cu::matmul(e.view, x.data(cu::Dtype::F16), cu::Dtype::F16, 2, split16.data(), yt, nullptr,
                         cu::Kernel::Split, workspace.data()),
              cudaSuccess);
    EXPECT_EQ(split16, y16);
    for (size_t i = 0; i < y.size(); ++i)
      ASSERT_EQ(y16[i], yt == cu::Dtype::F16 ? k::float_to_half(y[i]) : k::float_to_bf16(y[i])) << i;
  }
}

// Row ranges must start on a slice and end inside the matrix.
TEST(EmulatedKernels, DequantizeRowsRefusesRangesOffTheSlices) {
  const Emulated e = make({4, 32, woq::Scheme::Asymmetric, 40, 64}, 6);
  std::vector<float> out(40 * 64);
  EXPECT_EQ(cu::dequantize_rows(e.view, 8, 16, cu::Dtype::F32, out.data(), nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(cu::dequantize_rows(e.view, 32, 16, cu::Dtype::F32, out.data(), nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(cu::dequantize_rows(e.view, 32, 8, cu::Dtype::F32, out.data(), nullptr), cudaSuccess);
}

// Y += bias in every Y dtype: the sum rounded once to Y's type.
TEST(EmulatedKernels, AddBiasAddsPerColumn) {
  const uint64_t m = 3, n = 37;
  std::vector<float> bias(n), y(m * n);
  for (uint64_t j = 0; j < n; ++j) bias[j] = 0.25f * float(j) - 3.0f;
  for (uint64_t i = 0; i < m * n; ++i) y[i] = float(i % 11) / 8 - 0.6f;
  std::vector<float> y32 = y;
  ASSERT_EQ(cu::add_bias(y32.data(), cu::Dtype::F32, m, n, bias.data(), nullptr), cudaSuccess);
  for (uint64_t i = 0; i < m * n; ++i) ASSERT_EQ(y32[i], y[i] + bias[i % n]) << i;
  for (cu::Dtype t : {cu::Dtype::F16, cu::Dtype::BF16}) {
    const auto to16 = [t](float v) { return t == cu::Dtype::F16 ? k::float_to_half(v) : k::float_to_bf16(v); };
    const auto from16 = [t](uint16_t v) { return t == cu::Dtype::F16 ? k::half_to_float(v) : k::bf16_to_float(v); };
    std::vector<uint16_t> y16(m * n);
    for (uint64_t i = 0; i < m * n; ++i) y16[i] = to16(y[i]);
    const std::vector<uint16_t> before = y16;
    ASSERT_EQ(cu::add_bias(y16.data(), t, m, n, bias.data(), nullptr), cudaSuccess);
    for (uint64_t i = 0; i < m * n; ++i) ASSERT_EQ(y16[i], to16(from16(before[i]) + bias[i % n])) << i;
  }
}

// AWQ: X diag(scales) in fp32, for every X dtype.
TEST(EmulatedKernels, InputScalesMultiplyX) {
  const uint64_t m = 3, cols = 70;
  std::vector<float> scales(cols);
  for (uint64_t j = 0; j < cols; ++j) scales[j] = 0.5f + float(j) / 64;
  for (cu::Dtype t : {cu::Dtype::F32, cu::Dtype::F16, cu::Dtype::BF16}) {
    const Activations x = activations(m * cols, t, 5);
    std::vector<float> out(m * cols, std::nanf(""));
    ASSERT_EQ(cu::scale_inputs(x.data(t), t, m, cols, scales.data(), out.data(), nullptr), cudaSuccess);
    for (uint64_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i], x.exact[i] * scales[i % cols]) << i;
  }
}

// Act-order: X's columns gathered by the permutation, bit for bit, in X's
// own dtype.
TEST(EmulatedKernels, InputPermutationGathersXColumns) {
  const uint64_t m = 3, cols = 70;
  std::vector<uint32_t> columns(cols);
  for (uint64_t j = 0; j < cols; ++j) columns[j] = uint32_t((j * 31 + 7) % cols);  // 31 is coprime to 70
  for (cu::Dtype t : {cu::Dtype::F32, cu::Dtype::F16, cu::Dtype::BF16}) {
    const Activations x = activations(m * cols, t, 6);
    const size_t bytes = t == cu::Dtype::F32 ? 4 : 2;
    std::vector<uint8_t> out(m * cols * bytes, 0xff);
    ASSERT_EQ(cu::permute_inputs(x.data(t), t, m, cols, columns.data(), out.data(), nullptr), cudaSuccess);
    const auto* in = static_cast<const uint8_t*>(x.data(t));
    for (uint64_t r = 0; r < m; ++r)
      for (uint64_t j = 0; j < cols; ++j)
        ASSERT_EQ(std::memcmp(&out[(r * cols + j) * bytes], in + (r * cols + columns[j]) * bytes, bytes), 0) << r << " " << j;
  }
}

}  // namespace
