// Golden vectors from tests/golden/make_golden.py (an independent numpy
// implementation of SPEC.md): codes, scales and zero-points must match bit
// for bit; matmul outputs within the fp32 tolerance of DESIGN.md.
#include <gtest/gtest.h>
#include <woq.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "import/safetensors.h"
#include "quant/rtn.h"
#include "test_util.h"

#ifndef WOQ_TEST_DATA
#error "WOQ_TEST_DATA must name tests/data"
#endif

namespace {

using woq::import::SafeTensor;
using woq::import::Safetensors;

template <class T>
std::vector<T> copy_as(const SafeTensor& t) {
  std::vector<T> out(t.bytes / sizeof(T));
  std::memcpy(out.data(), t.data, t.bytes);
  return out;
}

class Golden : public testing::Test {
 protected:
  static void SetUpTestSuite() { file_ = Safetensors::open(std::string(WOQ_TEST_DATA) + "/golden_rtn.safetensors"); }
  static void TearDownTestSuite() { file_.reset(); }
  const SafeTensor& get(const std::string& name) {
    const SafeTensor* t = file_->find(name);
    if (!t) throw std::runtime_error("golden tensor missing: " + name);
    return *t;
  }
  static std::unique_ptr<Safetensors> file_;
};
std::unique_ptr<Safetensors> Golden::file_;

}  // namespace

TEST_F(Golden, QuantizerMatchesReferenceBitForBitAndMatmulMatches) {
  auto cases = nlohmann::json::parse(file_->metadata().at("cases"));
  ASSERT_GE(cases.size(), 40u);
  woq_context_options co;
  woq_context_options_init(&co);
  int checked = 0;
  for (const auto& c : cases) {
    const std::string name = c["name"];
    SCOPED_TRACE(name);
    const SafeTensor& w = get(name + ".w");
    const uint64_t rows = w.shape[0], cols = w.shape[1];
    const std::string dt = c["dtype"];
    const woq::DType dtype = dt == "F32" ? woq::DType::F32 : dt == "F16" ? woq::DType::F16 : woq::DType::BF16;
    std::vector<uint8_t> wbytes = copy_as<uint8_t>(w);
    woq::QuantConfig cfg;
    cfg.bits = c["bits"];
    cfg.group_size = c["group"];
    cfg.scheme = c["symmetric"] ? woq::Scheme::Symmetric : woq::Scheme::Asymmetric;
    const std::string method = c["method"];
    cfg.method = method == "mse" ? woq::Method::Mse : method == "hqq" ? woq::Method::Hqq : woq::Method::Rtn;
    woq::QuantizedMatrix m = woq::quantize_rtn(wbytes.data(), dtype, rows, cols, cfg);
    EXPECT_EQ(m.codes, copy_as<uint32_t>(get(name + ".packed")));
    EXPECT_EQ(m.scales, copy_as<uint16_t>(get(name + ".scales")));
    EXPECT_EQ(m.zeros, copy_as<uint8_t>(get(name + ".zeros")));

    // The same through the C API, on both CPU backends.
    woq_quant_options qo;
    woq_quant_options_init(&qo);
    qo.bits = cfg.bits;
    qo.group_size = cfg.group_size;
    qo.scheme = c["symmetric"] ? WOQ_SCHEME_SYMMETRIC : WOQ_SCHEME_ASYMMETRIC;
    qo.method = static_cast<woq_method>(cfg.method);
    woq_qmatrix* qm = nullptr;
    ASSERT_EQ(woq_quantize(wbytes.data(), static_cast<woq_dtype>(dtype), rows, cols, &qo, &qm), WOQ_OK)
        << woq_last_error();
    const std::vector<float> x = copy_as<float>(get(name + ".x"));
    const std::vector<float> bias = copy_as<float>(get(name + ".bias"));
    const std::vector<double> y_ref = copy_as<double>(get(name + ".y"));
    const uint64_t mrows = x.size() / cols;
    for (woq_backend backend : {WOQ_BACKEND_CPU_REFERENCE, WOQ_BACKEND_CPU}) {
      co.backend = backend;
      woq_context* ctx = nullptr;
      ASSERT_EQ(woq_context_create(&co, &ctx), WOQ_OK);
      woq_tensor* t = nullptr;
      ASSERT_EQ(woq_tensor_from_qmatrix(ctx, qm, bias.data(), &t), WOQ_OK) << woq_last_error();
      std::vector<float> y(y_ref.size(), std::nanf(""));
      ASSERT_EQ(woq_matmul(ctx, t, x.data(), WOQ_DTYPE_F32, mrows, y.data(), WOQ_DTYPE_F32), WOQ_OK);
      // The reference accumulates like the golden script; the optimized
      // kernels factor out the zero-point, which costs a little precision.
      EXPECT_LT(woq::test::rel_error(y, y_ref), backend == WOQ_BACKEND_CPU_REFERENCE ? 1e-6 : 5e-6)
          << "backend " << backend;
      woq_tensor_destroy(t);
      woq_context_destroy(ctx);
    }
    woq_qmatrix_destroy(qm);
    ++checked;
  }
  EXPECT_EQ(checked, int(cases.size()));
}
