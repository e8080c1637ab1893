// The C API: numerics of every backend and dtype against float64, argument
// validation, handles, buffers, options and thread-safety.
#include <gtest/gtest.h>
#include <woq.h>

#include <cstddef>
#include <cstring>
#include <thread>

#include "kernels/cpu/numeric.h"
#include "test_util.h"

namespace {

struct Fixture {
  woq_context* ctx = nullptr;
  woq_qmatrix* q = nullptr;
  woq_tensor* t = nullptr;
  uint64_t rows, cols;
  std::vector<float> bias;
  Fixture(woq_backend backend, uint64_t n, uint64_t k, uint32_t bits = 4, uint32_t group = 64, int threads = 2)
      : rows(n), cols(k) {
    woq_context_options o;
    woq_context_options_init(&o);
    o.backend = backend;
    o.threads = threads;
    EXPECT_EQ(woq_context_create(&o, &ctx), WOQ_OK) << woq_last_error();
    std::vector<float> w = woq::test::random_weights(n, k, uint32_t(n * 31 + k));
    woq_quant_options qo;
    woq_quant_options_init(&qo);
    qo.bits = bits;
    qo.group_size = group;
    EXPECT_EQ(woq_quantize(w.data(), WOQ_DTYPE_F32, n, k, &qo, &q), WOQ_OK) << woq_last_error();
    bias = woq::test::random_activations(n, 17);
    EXPECT_EQ(woq_tensor_from_qmatrix(ctx, q, bias.data(), &t), WOQ_OK);
  }
  ~Fixture() {
    woq_tensor_destroy(t);
    woq_qmatrix_destroy(q);
    woq_context_destroy(ctx);
  }
  std::vector<float> w_hat() {
    std::vector<float> out(rows * cols);
    EXPECT_EQ(woq_dequantize(ctx, t, out.data(), WOQ_DTYPE_F32, out.size() * 4), WOQ_OK);
    return out;
  }
};

// Activations of the given dtype and their exact fp32 values.
void make_x(woq_dtype dt, const std::vector<float>& src, std::vector<uint8_t>& bytes, std::vector<float>& exact) {
  exact.resize(src.size());
  bytes.resize(src.size() * (dt == WOQ_DTYPE_F32 ? 4 : 2));
  for (size_t i = 0; i < src.size(); ++i) {
    if (dt == WOQ_DTYPE_F32) {
      std::memcpy(bytes.data() + 4 * i, &src[i], 4);
      exact[i] = src[i];
    } else {
      uint16_t h = dt == WOQ_DTYPE_F16 ? woq::kernels::float_to_half(src[i]) : woq::kernels::float_to_bf16(src[i]);
      std::memcpy(bytes.data() + 2 * i, &h, 2);
      exact[i] = dt == WOQ_DTYPE_F16 ? woq::kernels::half_to_float(h) : woq::kernels::bf16_to_float(h);
    }
  }
}

std::vector<double> read_y(woq_dtype dt, const std::vector<uint8_t>& bytes, size_t n) {
  std::vector<double> y(n);
  for (size_t i = 0; i < n; ++i) {
    if (dt == WOQ_DTYPE_F32) {
      float f;
      std::memcpy(&f, bytes.data() + 4 * i, 4);
      y[i] = f;
    } else {
      uint16_t h;
      std::memcpy(&h, bytes.data() + 2 * i, 2);
      y[i] = dt == WOQ_DTYPE_F16 ? woq::kernels::half_to_float(h) : woq::kernels::bf16_to_float(h);
    }
  }
  return y;
}

struct MatmulCase {
  woq_backend backend;
  woq_dtype x, y;
};

class Matmul : public testing::TestWithParam<MatmulCase> {};

}  // namespace

TEST_P(Matmul, MatchesFloat64OnTheDequantizedWeights) {
  const MatmulCase c = GetParam();
  for (uint64_t m : {1ull, 3ull, 17ull}) {
    Fixture fx(c.backend, 200, 320, 4, 64);
    const std::vector<float> w = fx.w_hat();
    std::vector<uint8_t> xb;
    std::vector<float> x;
    make_x(c.x, woq::test::random_activations(m * fx.cols, uint32_t(m)), xb, x);
    const size_t ysize = (c.y == WOQ_DTYPE_F32 ? 4 : 2) * m * fx.rows;
    std::vector<uint8_t> yb(ysize, 0xff);  // poison: NaN in every dtype
    ASSERT_EQ(woq_matmul(fx.ctx, fx.t, xb.data(), c.x, m, yb.data(), c.y), WOQ_OK) << woq_last_error();
    const double err = woq::test::rel_error(read_y(c.y, yb, m * fx.rows), woq::test::matmul_f64(x, w, fx.bias.data(), m, fx.rows, fx.cols));
    const double tol = c.y == WOQ_DTYPE_F32 ? 1e-5 : 2e-3;
    EXPECT_LT(err, tol) << "m=" << m;
  }
}

namespace {
std::vector<MatmulCase> matmul_cases() {
  std::vector<MatmulCase> v;
  for (woq_backend b : {WOQ_BACKEND_CPU_REFERENCE, WOQ_BACKEND_CPU})
    for (woq_dtype x : {WOQ_DTYPE_F32, WOQ_DTYPE_F16, WOQ_DTYPE_BF16})
      for (woq_dtype y : {WOQ_DTYPE_F32, WOQ_DTYPE_F16, WOQ_DTYPE_BF16}) v.push_back({b, x, y});
  return v;
}
std::string matmul_case_name(const testing::TestParamInfo<MatmulCase>& i) {
  const char* names[] = {"f32", "f16", "bf16"};
  return std::string(i.param.backend == WOQ_BACKEND_CPU ? "cpu" : "reference") + "_x" + names[i.param.x] + "_y" +
         names[i.param.y];
}
}  // namespace

INSTANTIATE_TEST_SUITE_P(BackendsAndDtypes, Matmul, testing::ValuesIn(matmul_cases()), matmul_case_name);

TEST(CApi, VersionAndStatusStrings) {
  EXPECT_EQ(woq_version(), uint32_t(WOQ_VERSION_NUMBER));
  EXPECT_EQ(woq_version() / 10000, uint32_t(WOQ_VERSION_MAJOR));
  EXPECT_STREQ(woq_version_string(), "1.0.0");
  EXPECT_STREQ(woq_status_string(WOQ_OK), "WOQ_OK");
  EXPECT_STREQ(woq_status_string(WOQ_ERR_CHECKSUM), "WOQ_ERR_CHECKSUM");
  EXPECT_STREQ(woq_status_string(static_cast<woq_status>(999)), "WOQ_ERR_UNKNOWN_STATUS");
}

TEST(CApi, NullArgumentsAreNamed) {
  Fixture fx(WOQ_BACKEND_CPU, 8, 64);
  std::vector<float> x(64), y(8);
  auto expect_named = [](woq_status s, const char* arg) {
    EXPECT_EQ(s, WOQ_ERR_INVALID_ARGUMENT) << arg;
    EXPECT_NE(std::string(woq_last_error()).find(arg), std::string::npos) << woq_last_error();
  };
  expect_named(woq_matmul(nullptr, fx.t, x.data(), WOQ_DTYPE_F32, 1, y.data(), WOQ_DTYPE_F32), "context");
  expect_named(woq_matmul(fx.ctx, nullptr, x.data(), WOQ_DTYPE_F32, 1, y.data(), WOQ_DTYPE_F32), "tensor");
  expect_named(woq_matmul(fx.ctx, fx.t, nullptr, WOQ_DTYPE_F32, 1, y.data(), WOQ_DTYPE_F32), "x");
  expect_named(woq_matmul(fx.ctx, fx.t, x.data(), WOQ_DTYPE_F32, 1, nullptr, WOQ_DTYPE_F32), "y");
  expect_named(woq_matmul(fx.ctx, fx.t, x.data(), static_cast<woq_dtype>(7), 1, y.data(), WOQ_DTYPE_F32), "x_dtype");
  woq_qmatrix* q = nullptr;
  expect_named(woq_quantize(nullptr, WOQ_DTYPE_F32, 8, 64, nullptr, &q), "weights");
  expect_named(woq_quantize(x.data(), WOQ_DTYPE_F32, 1, 64, nullptr, nullptr), "out_qmatrix");
  expect_named(woq_context_create(nullptr, nullptr), "out_context");
  expect_named(woq_file_open(nullptr, nullptr), "path");
  expect_named(woq_writer_create(nullptr, nullptr), "path");
  expect_named(woq_tensor_shape(fx.t, nullptr, nullptr), "out_rows");
  expect_named(woq_context_options_init(nullptr), "options");
  woq_tensor_info info;
  info.struct_size = sizeof info;
  expect_named(woq_file_tensor_info(nullptr, 0, &info), "file");
  // Destroying NULL is a no-op.
  woq_context_destroy(nullptr);
  woq_tensor_destroy(nullptr);
  woq_file_close(nullptr);
  woq_writer_destroy(nullptr);
  woq_buffer_destroy(nullptr);
  woq_qmatrix_destroy(nullptr);
  // A successful call clears the message.
  uint64_t r, c;
  EXPECT_EQ(woq_tensor_shape(fx.t, &r, &c), WOQ_OK);
  EXPECT_STREQ(woq_last_error(), "");
}

TEST(CApi, ShapeAndOwnershipMisuse) {
  Fixture fx(WOQ_BACKEND_CPU, 8, 64), other(WOQ_BACKEND_CPU, 8, 64);
  std::vector<float> x(2 * 64), y(2 * 8);
  EXPECT_EQ(woq_matmul(fx.ctx, fx.t, x.data(), WOQ_DTYPE_F32, 0, y.data(), WOQ_DTYPE_F32), WOQ_ERR_SHAPE);
  EXPECT_EQ(woq_matmul(fx.ctx, fx.t, x.data(), WOQ_DTYPE_F32, ~0ull, y.data(), WOQ_DTYPE_F32), WOQ_ERR_SHAPE);
  EXPECT_EQ(woq_matmul(fx.ctx, other.t, x.data(), WOQ_DTYPE_F32, 1, y.data(), WOQ_DTYPE_F32), WOQ_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(woq_last_error()).find("different context"), std::string::npos);
  EXPECT_EQ(woq_matmul(fx.ctx, fx.t, x.data(), WOQ_DTYPE_F32, 1, x.data() + 4, WOQ_DTYPE_F32), WOQ_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(woq_last_error()).find("overlap"), std::string::npos);
  std::vector<float> small(8 * 64 - 1);
  EXPECT_EQ(woq_dequantize(fx.ctx, fx.t, small.data(), WOQ_DTYPE_F32, small.size() * 4), WOQ_ERR_SHAPE);
  EXPECT_NE(std::string(woq_last_error()).find("needs 2048"), std::string::npos) << woq_last_error();
  // A handle of another type is refused, not used.
  EXPECT_EQ(woq_matmul(fx.ctx, reinterpret_cast<woq_tensor*>(fx.q), x.data(), WOQ_DTYPE_F32, 1, y.data(), WOQ_DTYPE_F32),
            WOQ_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(woq_last_error()).find("not a live handle"), std::string::npos);
  woq_tensor* t = nullptr;
  EXPECT_EQ(woq_tensor_from_qmatrix(fx.ctx, reinterpret_cast<woq_qmatrix*>(fx.ctx), nullptr, &t), WOQ_ERR_INVALID_ARGUMENT);
}

TEST(CApi, OptionsAreSizePrefixed) {
  woq_context_options o;
  woq_context_options_init(&o);
  EXPECT_EQ(o.struct_size, sizeof o);
  EXPECT_EQ(o.backend, WOQ_BACKEND_CPU);
  woq_context* ctx = nullptr;
  o.struct_size = 0;
  EXPECT_EQ(woq_context_create(&o, &ctx), WOQ_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(woq_last_error()).find("struct_size"), std::string::npos);
  // An older caller that knew only struct_size and backend: the rest defaults.
  woq_context_options_init(&o);
  o.struct_size = offsetof(woq_context_options, threads);
  o.backend = WOQ_BACKEND_CPU_REFERENCE;
  o.threads = 99;  // beyond the declared size: ignored
  ASSERT_EQ(woq_context_create(&o, &ctx), WOQ_OK);
  woq_backend b;
  int32_t threads;
  EXPECT_EQ(woq_context_info(ctx, &b, &threads), WOQ_OK);
  EXPECT_EQ(b, WOQ_BACKEND_CPU_REFERENCE);
  EXPECT_EQ(threads, 1);
  woq_context_destroy(ctx);
  woq_context_options_init(&o);
  o.threads = 3;
  ASSERT_EQ(woq_context_create(&o, &ctx), WOQ_OK);
  EXPECT_EQ(woq_context_info(ctx, &b, &threads), WOQ_OK);
  EXPECT_EQ(threads, 3);
  woq_context_destroy(ctx);
  o.threads = -1;
  EXPECT_EQ(woq_context_create(&o, &ctx), WOQ_ERR_INVALID_ARGUMENT);
  woq_context_options_init(&o);
  o.backend = static_cast<woq_backend>(42);
  EXPECT_EQ(woq_context_create(&o, &ctx), WOQ_ERR_INVALID_ARGUMENT);
  woq_context_options_init(&o);
  int not_a_stream = 0;
  o.cuda_stream = &not_a_stream;  // a stream is for CUDA contexts only
  ctx = nullptr;
  EXPECT_EQ(woq_context_create(&o, &ctx), WOQ_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(woq_last_error()).find("cuda_stream"), std::string::npos);
  EXPECT_EQ(ctx, nullptr);
  // A caller built against the header before cuda_stream existed.
  woq_context_options_init(&o);
  o.struct_size = offsetof(woq_context_options, cuda_stream);
  o.cuda_stream = &not_a_stream;  // past its struct_size: never read
  ASSERT_EQ(woq_context_create(&o, &ctx), WOQ_OK) << woq_last_error();
  woq_context_destroy(ctx);
  woq_quant_options q;
  woq_quant_options_init(&q);
  EXPECT_EQ(q.bits, 4u);
  EXPECT_EQ(q.group_size, 128u);
}

TEST(CApi, CudaBackendWithoutGpuReportsUnsupportedClearly) {
  woq_context_options o;
  woq_context_options_init(&o);
  o.backend = WOQ_BACKEND_CUDA;
  woq_context* ctx = nullptr;
  const woq_status s = woq_context_create(&o, &ctx);
  if (s == WOQ_OK) {
    woq_context_destroy(ctx);
    GTEST_SKIP() << "this machine has a usable CUDA device (the gpu-labelled tests cover it)";
  }
  EXPECT_EQ(s, WOQ_ERR_UNSUPPORTED);
  EXPECT_NE(std::string(woq_last_error()).find("CUDA"), std::string::npos);
  EXPECT_EQ(ctx, nullptr);
}

TEST(CApi, SynchronizeIsImmediateOnCpuAndRefusesNull) {
  Fixture fx(WOQ_BACKEND_CPU, 8, 64);
  EXPECT_EQ(woq_context_synchronize(fx.ctx), WOQ_OK);
  EXPECT_EQ(woq_context_synchronize(nullptr), WOQ_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(woq_last_error()).find("context"), std::string::npos);
}

// Bytes expected from the layouts as documented (docs/CPU_KERNELS.md for the
// packed one, fileformat/SPEC.md for the canonical one), not from the code.
TEST(CApi, ContextMemoryCountsTensorsAndBuffersUntilDestroyed) {
  const uint64_t n = 40, k = 256, groups = k / 128;
  const uint64_t bias_bytes = n * 4;
  // Packed: 16-row blocks (rows padded), a u32 word per 8 inputs per row,
  // fp16 scale + int8 zero-point per (block row, group), fp32 bias.
  const uint64_t blocks = (n + 15) / 16;
  const uint64_t packed = blocks * 16 * (k / 8 * 4 + groups * 3) + bias_bytes;
  // Canonical: rows of u32 words, fp16 scale + u8 zero-point per (row, group).
  const uint64_t canonical = n * (k / 8 * 4 + groups * 3) + bias_bytes;
  for (auto [backend, tensor_bytes] : {std::pair{WOQ_BACKEND_CPU, packed}, std::pair{WOQ_BACKEND_CPU_REFERENCE, canonical}}) {
    SCOPED_TRACE(backend == WOQ_BACKEND_CPU ? "cpu" : "reference");
    woq_context_options o;
    woq_context_options_init(&o);
    o.backend = backend;
    woq_context* ctx = nullptr;
    ASSERT_EQ(woq_context_create(&o, &ctx), WOQ_OK);
    uint64_t in_use = 1, peak = 1;
    ASSERT_EQ(woq_context_memory(ctx, &in_use, &peak), WOQ_OK);
    EXPECT_EQ(in_use, 0u);
    EXPECT_EQ(peak, 0u);

    std::vector<float> w = woq::test::random_weights(n, k, 5);
    std::vector<float> bias = woq::test::random_activations(n, 6);
    woq_quant_options qo;
    woq_quant_options_init(&qo);
    woq_qmatrix* q = nullptr;
    ASSERT_EQ(woq_quantize(w.data(), WOQ_DTYPE_F32, n, k, &qo, &q), WOQ_OK);
    woq_tensor* t = nullptr;
    ASSERT_EQ(woq_tensor_from_qmatrix(ctx, q, bias.data(), &t), WOQ_OK);
    woq_qmatrix_destroy(q);  // the tensor holds its own copy
    ASSERT_EQ(woq_context_memory(ctx, &in_use, &peak), WOQ_OK);
    EXPECT_EQ(in_use, tensor_bytes);
    EXPECT_EQ(peak, tensor_bytes);

    woq_buffer* b = nullptr;
    ASSERT_EQ(woq_buffer_create(ctx, 1000, &b), WOQ_OK);
    ASSERT_EQ(woq_context_memory(ctx, &in_use, &peak), WOQ_OK);
    EXPECT_EQ(in_use, tensor_bytes + 1000);
    EXPECT_EQ(peak, tensor_bytes + 1000);

    woq_tensor_destroy(t);
    ASSERT_EQ(woq_context_memory(ctx, &in_use, &peak), WOQ_OK);
    EXPECT_EQ(in_use, 1000u);
    EXPECT_EQ(peak, tensor_bytes + 1000);
    woq_buffer_destroy(b);
    ASSERT_EQ(woq_context_memory(ctx, &in_use, &peak), WOQ_OK);
    EXPECT_EQ(in_use, 0u);
    EXPECT_EQ(peak, tensor_bytes + 1000);

    EXPECT_EQ(woq_context_memory(ctx, nullptr, &peak), WOQ_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(woq_last_error()).find("out_in_use_bytes"), std::string::npos);
    EXPECT_EQ(woq_context_memory(ctx, &in_use, nullptr), WOQ_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(woq_context_memory(nullptr, &in_use, &peak), WOQ_ERR_INVALID_ARGUMENT);
    woq_context_destroy(ctx);
  }
}

TEST(CApi, ImportOptionsAreCheckedBeforeTheCheckpointIsRead) {
  woq_import_options o;
  ASSERT_EQ(woq_import_options_init(&o), WOQ_OK);
  EXPECT_EQ(o.struct_size, sizeof o);
  EXPECT_EQ(o.round_scales, 0);
  const char* in = "/nonexistent/model.onnx";
  const char* out = "/nonexistent/out.woq";
  o.round_scales = 2;
  EXPECT_EQ(woq_import_checkpoint_ex(in, "auto", out, &o, nullptr), WOQ_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(woq_last_error()).find("round_scales = 2"), std::string::npos) << woq_last_error();
  o.round_scales = 1;
  o.struct_size = 3;
  EXPECT_EQ(woq_import_checkpoint_ex(in, "auto", out, &o, nullptr), WOQ_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(woq_last_error()).find("woq_import_options->struct_size"), std::string::npos);
  // An older caller that knew only struct_size: round_scales (beyond it) is
  // never read, so the checkpoint is: its missing file is the error.
  o.struct_size = sizeof(size_t);
  o.round_scales = 2;
  EXPECT_EQ(woq_import_checkpoint_ex(in, "auto", out, &o, nullptr), WOQ_ERR_IO);
  EXPECT_NE(std::string(woq_last_error()).find(in), std::string::npos) << woq_last_error();
  EXPECT_EQ(woq_import_checkpoint_ex(in, "auto", out, nullptr, nullptr), WOQ_ERR_IO);
  EXPECT_EQ(woq_import_options_init(nullptr), WOQ_ERR_INVALID_ARGUMENT);
}

TEST(CApi, TensorInfoHonoursStructSize) {
  woq::test::TempDir dir;
  Fixture fx(WOQ_BACKEND_CPU, 8, 64);
  ASSERT_TRUE(woq::test::write_one_tensor(dir.file("i.woq"), "t", fx.q));
  woq_file* f = nullptr;
  ASSERT_EQ(woq_file_open(dir.file("i.woq").c_str(), &f), WOQ_OK);
  woq_tensor_info info;
  std::memset(&info, 0xab, sizeof info);
  info.struct_size = offsetof(woq_tensor_info, cols);  // an old caller
  ASSERT_EQ(woq_file_tensor_info(f, 0, &info), WOQ_OK);
  EXPECT_EQ(info.rows, 8u);
  uint64_t untouched;
  std::memset(&untouched, 0xab, 8);
  EXPECT_EQ(info.cols, untouched);
  info.struct_size = 0;
  EXPECT_EQ(woq_file_tensor_info(f, 0, &info), WOQ_ERR_INVALID_ARGUMENT);
  info.struct_size = sizeof info;
  EXPECT_EQ(woq_file_tensor_info(f, 1, &info), WOQ_ERR_NOT_FOUND);
  EXPECT_EQ(woq_file_tensor_info_by_name(f, "missing", &info), WOQ_ERR_NOT_FOUND);
  EXPECT_NE(std::string(woq_last_error()).find("missing"), std::string::npos);
  woq_file_close(f);
}

TEST(CApi, BuffersDriveMatmul) {
  Fixture fx(WOQ_BACKEND_CPU, 40, 128);
  const uint64_t m = 4;
  std::vector<float> x = woq::test::random_activations(m * 128, 8), y_direct(m * 40), y_buf(m * 40, std::nanf(""));
  ASSERT_EQ(woq_matmul(fx.ctx, fx.t, x.data(), WOQ_DTYPE_F32, m, y_direct.data(), WOQ_DTYPE_F32), WOQ_OK);
  woq_buffer *xb = nullptr, *yb = nullptr, *small = nullptr;
  ASSERT_EQ(woq_buffer_create(fx.ctx, x.size() * 4, &xb), WOQ_OK);
  ASSERT_EQ(woq_buffer_create(fx.ctx, y_buf.size() * 4, &yb), WOQ_OK);
  ASSERT_EQ(woq_buffer_create(fx.ctx, 16, &small), WOQ_OK);
  uint64_t size = 0;
  EXPECT_EQ(woq_buffer_size(xb, &size), WOQ_OK);
  EXPECT_EQ(size, x.size() * 4);
  ASSERT_EQ(woq_buffer_write(xb, 0, x.data(), x.size() * 4), WOQ_OK);
  ASSERT_EQ(woq_matmul_buffers(fx.ctx, fx.t, xb, WOQ_DTYPE_F32, m, yb, WOQ_DTYPE_F32), WOQ_OK) << woq_last_error();
  ASSERT_EQ(woq_buffer_read(yb, 0, y_buf.data(), y_buf.size() * 4), WOQ_OK);
  EXPECT_EQ(y_buf, y_direct);
  EXPECT_EQ(woq_matmul_buffers(fx.ctx, fx.t, xb, WOQ_DTYPE_F32, m + 1, yb, WOQ_DTYPE_F32), WOQ_ERR_SHAPE);
  EXPECT_NE(std::string(woq_last_error()).find("x_buffer holds"), std::string::npos);
  EXPECT_EQ(woq_matmul_buffers(fx.ctx, fx.t, xb, WOQ_DTYPE_F32, m, small, WOQ_DTYPE_F32), WOQ_ERR_SHAPE);
  EXPECT_EQ(woq_matmul_buffers(fx.ctx, fx.t, xb, WOQ_DTYPE_F32, 1, xb, WOQ_DTYPE_F32), WOQ_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(woq_buffer_write(small, 8, x.data(), 9), WOQ_ERR_SHAPE);
  EXPECT_EQ(woq_buffer_write(small, ~0ull, x.data(), 2), WOQ_ERR_SHAPE);
  EXPECT_EQ(woq_buffer_read(small, 0, nullptr, 1), WOQ_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(woq_buffer_create(fx.ctx, 0, &small), WOQ_ERR_INVALID_ARGUMENT);
  std::vector<uint8_t> zeros(16, 1);
  woq_buffer* fresh = nullptr;
  ASSERT_EQ(woq_buffer_create(fx.ctx, 16, &fresh), WOQ_OK);
  ASSERT_EQ(woq_buffer_read(fresh, 0, zeros.data(), 16), WOQ_OK);
  EXPECT_EQ(zeros, std::vector<uint8_t>(16, 0));
  woq_buffer_destroy(fresh);
  woq_buffer_destroy(xb);
  woq_buffer_destroy(yb);
  woq_buffer_destroy(small);
}

TEST(CApi, OneTensorFromManyThreadsGivesIdenticalResults) {
  Fixture fx(WOQ_BACKEND_CPU, 96, 256, 4, 128, 2);
  const uint64_t m = 2;
  std::vector<float> x = woq::test::random_activations(m * 256, 3), expect(m * 96);
  ASSERT_EQ(woq_matmul(fx.ctx, fx.t, x.data(), WOQ_DTYPE_F32, m, expect.data(), WOQ_DTYPE_F32), WOQ_OK);
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([&, i] {
      std::vector<float> y(m * 96);
      for (int rep = 0; rep < 50; ++rep) {
        std::fill(y.begin(), y.end(), std::nanf(""));
        if (woq_matmul(fx.ctx, fx.t, x.data(), WOQ_DTYPE_F32, m, y.data(), WOQ_DTYPE_F32) != WOQ_OK || y != expect)
          ++mismatches[i];
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches, std::vector<int>(4, 0));
}

TEST(CApi, TensorBiasIsReturnedWhenPresent) {
  for (woq_backend b : {WOQ_BACKEND_CPU_REFERENCE, WOQ_BACKEND_CPU}) {
    Fixture fx(b, 24, 64);  // made with a bias
    std::vector<float> bias(24, std::nanf(""));
    int32_t has = -1;
    ASSERT_EQ(woq_tensor_bias(fx.ctx, fx.t, bias.data(), bias.size() * 4, &has), WOQ_OK);
    EXPECT_EQ(has, 1);
    EXPECT_EQ(bias, fx.bias);
    EXPECT_EQ(woq_tensor_bias(fx.ctx, fx.t, bias.data(), 8, &has), WOQ_ERR_SHAPE);
    EXPECT_EQ(woq_tensor_bias(fx.ctx, fx.t, nullptr, 0, &has), WOQ_OK);  // only ask
    EXPECT_EQ(has, 1);
    woq_tensor* plain = nullptr;
    ASSERT_EQ(woq_tensor_from_qmatrix(fx.ctx, fx.q, nullptr, &plain), WOQ_OK);
    ASSERT_EQ(woq_tensor_bias(fx.ctx, plain, bias.data(), bias.size() * 4, &has), WOQ_OK);
    EXPECT_EQ(has, 0);
    EXPECT_EQ(woq_tensor_bias(fx.ctx, plain, bias.data(), 0, nullptr), WOQ_ERR_INVALID_ARGUMENT);
    woq_tensor_destroy(plain);
  }
}

TEST(CApi, GroupParametersReproduceTheDequantizedWeights) {
  for (woq_backend b : {WOQ_BACKEND_CPU_REFERENCE, WOQ_BACKEND_CPU}) {
    Fixture fx(b, 20, 128, 4, 32);
    const std::vector<float> w = fx.w_hat();
    for (uint64_t row = 0; row < 20; ++row)
      for (uint64_t j = 0; j < 4; ++j) {
        float s = 0;
        int32_t z = -1;
        ASSERT_EQ(woq_tensor_group(fx.ctx, fx.t, row, j, &s, &z), WOQ_OK);
        ASSERT_GT(s, 0.0f);
        ASSERT_GE(z, 0);
        ASSERT_LE(z, 15);
        for (uint64_t k = j * 32; k < j * 32 + 32; ++k) {
          const float q = w[row * 128 + k] / s + float(z);  // must be an integer code
          ASSERT_EQ(q, std::nearbyint(q));
          ASSERT_GE(q, 0.0f);
          ASSERT_LE(q, 15.0f);
        }
      }
    float s;
    int32_t z;
    EXPECT_EQ(woq_tensor_group(fx.ctx, fx.t, 20, 0, &s, &z), WOQ_ERR_SHAPE);
    EXPECT_EQ(woq_tensor_group(fx.ctx, fx.t, 0, 4, &s, &z), WOQ_ERR_SHAPE);
  }
}
