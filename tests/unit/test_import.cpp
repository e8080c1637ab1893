// woq_import_checkpoint on malformed checkpoints: an error naming the layer,
// never a crash. (Well-formed checkpoints of every flavour are checked
// against an independent numpy packer by ctest's import_* tests.)
#include <gtest/gtest.h>
#include <woq.h>

#include <cmath>
#include <cstring>

#include "import/safetensors.h"
#include "test_util.h"

namespace {

using woq::import::SafeTensorOut;

// A tensor of `shape` with every element `fill` (of type T, stored as dtype).
template <class T>
SafeTensorOut filled(const std::string& name, const char* dtype, std::vector<uint64_t> shape, T fill) {
  uint64_t n = 1;
  for (uint64_t d : shape) n *= d;
  std::vector<T> v(n, fill);
  SafeTensorOut t{name, dtype, shape, std::vector<uint8_t>(n * sizeof(T))};
  if (n) std::memcpy(t.bytes.data(), v.data(), t.bytes.size());
  return t;
}

SafeTensorOut i32(const std::string& name, std::vector<uint64_t> shape, int32_t fill = 0x12345678) {
  return filled(name, "I32", shape, fill);
}

SafeTensorOut f16(const std::string& name, std::vector<uint64_t> shape, uint16_t fill = 0x2000) {
  return filled(name, "F16", shape, fill);
}

// The plain g_idx of k inputs in groups of `group`: k / group.
SafeTensorOut g_idx(uint64_t k, int32_t group) {
  std::vector<int32_t> g(k);
  for (uint64_t i = 0; i < k; ++i) g[i] = int32_t(i / group);
  SafeTensorOut t{"l.g_idx", "I32", {k}, std::vector<uint8_t>(4 * k)};
  if (k) std::memcpy(t.bytes.data(), g.data(), t.bytes.size());
  return t;
}

woq_status import(const woq::test::TempDir& dir, const std::vector<SafeTensorOut>& tensors, const char* format,
                  std::string* message) {
  woq::import::write_safetensors(dir.file("m.safetensors"), tensors, {});
  const woq_status s = woq_import_checkpoint(dir.file("m.safetensors").c_str(), format, dir.file("o.woq").c_str(), nullptr);
  *message = woq_last_error();
  return s;
}

}  // namespace

TEST(Import, MalformedCheckpointsAreRefusedWithAMessage) {
  woq::test::TempDir dir;
  std::string msg;
  // A plain GPTQ layer works...
  EXPECT_EQ(import(dir, {i32("l.qweight", {8, 16}), i32("l.qzeros", {2, 2}, 0x77777777), f16("l.scales", {2, 16}),
                         i32("l.g_idx", {64}, 0)},
                   "gptq_v2", &msg),
            WOQ_ERR_UNSUPPORTED);  // g_idx all 0: groups of 64 and 0 inputs, which no layout stores
  EXPECT_NE(msg.find("puts 64 inputs in group 0, not 32"), std::string::npos) << msg;
  EXPECT_EQ(import(dir, {i32("l.qweight", {8, 16}), i32("l.qzeros", {2, 2}, 0x77777777), f16("l.scales", {2, 16}),
                         i32("l.g_idx", {64}, 2)},
                   "gptq_v2", &msg),
            WOQ_ERR_FORMAT);
  EXPECT_NE(msg.find("l.g_idx[0] = 2 is not a group in 0..1"), std::string::npos) << msg;
  const SafeTensorOut gidx = g_idx(64, 32);
  EXPECT_EQ(import(dir, {i32("l.qweight", {8, 16}), i32("l.qzeros", {2, 2}, 0x77777777), f16("l.scales", {2, 16}), gidx},
                   "gptq_v2", &msg),
            WOQ_OK)
      << msg;
  // ...and these are refused, each naming what is wrong.
  struct Case {
    std::vector<SafeTensorOut> tensors;
    const char* format;
    woq_status status;
    const char* word;
  };
  const std::vector<Case> cases = {
      {{i32("l.qweight", {8, 16}), i32("l.qzeros", {0, 2}), f16("l.scales", {0, 16}), gidx}, "gptq", WOQ_ERR_FORMAT, "groups"},
      {{i32("l.qweight", {8, 16}), i32("l.qzeros", {2, 2}), f16("l.scales", {2, 16})}, "gptq", WOQ_ERR_UNSUPPORTED, "bit"},
      {{i32("l.qweight", {8, 16}), f16("l.scales", {2, 16}), gidx}, "gptq", WOQ_ERR_FORMAT, "qzeros"},
      {{i32("l.qweight", {8, 16}), i32("l.qzeros", {3, 2}), f16("l.scales", {2, 16}), gidx}, "gptq_v2", WOQ_ERR_FORMAT, "shape"},
      {{i32("l.qweight", {64, 2}), i32("l.qzeros", {0, 2}), f16("l.scales", {0, 16})}, "awq", WOQ_ERR_FORMAT, "groups"},
      {{i32("l.weight_packed", {16, 2}), f16("l.weight_scale", {16, 0}), i32("l.weight_shape", {2}, 16)},
       "compressed-tensors", WOQ_ERR_FORMAT, "groups"},
      {{i32("l.weight_packed", {16, 8}), f16("l.weight_scale", {16, 1}), i32("l.weight_shape", {2}, 16)},
       "compressed-tensors", WOQ_ERR_UNSUPPORTED, "not 2, 4 or 8 bits"},
      {{i32("l.weight_packed", {16, 0}), f16("l.weight_scale", {16, 2}), i32("l.weight_shape", {2}, 16)},
       "compressed-tensors", WOQ_ERR_FORMAT, "weight_packed"},
      {{f16("only.weight", {4, 4})}, "auto", WOQ_ERR_FORMAT, "not a GPTQ"},
      {{f16("only.weight", {4, 4})}, "nonsense", WOQ_ERR_INVALID_ARGUMENT, "nonsense"},
      {{i32("l.qweight", {8, 16}), i32("l.qzeros", {2, 2}, 0x77777777), f16("l.scales", {2, 16}, 0x7c00), gidx},
       "gptq_v2", WOQ_ERR_UNSUPPORTED, "fp16"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(import(dir, c.tensors, c.format, &msg), c.status) << c.word << ": " << msg;
    EXPECT_NE(msg.find(c.word), std::string::npos) << msg;
  }
  EXPECT_EQ(woq_import_checkpoint(nullptr, "auto", "x.woq", nullptr), WOQ_ERR_INVALID_ARGUMENT);
}

namespace {
// A valid 4-bit GPTQ v2 layer `name` (K = 64, N = 16, groups of 32);
// `scale` is every scale's fp16 bits.
std::vector<SafeTensorOut> gptq_layer(const std::string& name, uint16_t scale = 0x2000) {
  SafeTensorOut gidx = g_idx(64, 32);
  gidx.name = name + ".g_idx";
  return {i32(name + ".qweight", {8, 16}), i32(name + ".qzeros", {2, 2}, 0x77777777),
          f16(name + ".scales", {2, 16}, scale), gidx};
}

struct ProgressCall {
  uint64_t done, total;
  std::string layer;
};

void record_progress(void* user, uint64_t done, uint64_t total, const char* layer) {
  static_cast<std::vector<ProgressCall>*>(user)->push_back({done, total, layer});
}
}  // namespace

// Layers are written as they are converted, each reported to the progress
// callback; a layer that fails after others were written leaves no file.
TEST(Import, LayersAreReportedAsTheyAreWrittenAndAFailureLeavesNoFile) {
  woq::test::TempDir dir;
  std::vector<SafeTensorOut> tensors;
  for (const char* name : {"a", "b", "c"})
    for (SafeTensorOut& t : gptq_layer(name)) tensors.push_back(std::move(t));
  woq::import::write_safetensors(dir.file("m.safetensors"), tensors, {});
  woq_import_options o;
  woq_import_options_init(&o);
  EXPECT_EQ(o.progress, nullptr);
  std::vector<ProgressCall> calls;
  o.progress = record_progress;
  o.progress_user_data = &calls;
  const char* report = nullptr;
  ASSERT_EQ(woq_import_checkpoint_ex(dir.file("m.safetensors").c_str(), "gptq_v2", dir.file("o.woq").c_str(), &o,
                                     &report),
            WOQ_OK)
      << woq_last_error();
  EXPECT_NE(std::string(report).find("3 layers converted"), std::string::npos) << report;
  ASSERT_EQ(calls.size(), 3u);
  for (uint64_t i = 0; i < 3; ++i) {
    EXPECT_EQ(calls[i].done, i + 1);
    EXPECT_EQ(calls[i].total, 3u);
    EXPECT_EQ(calls[i].layer, std::string(1, char('a' + i)) + ".weight");
  }
  woq_file* f = nullptr;
  ASSERT_EQ(woq_file_open(dir.file("o.woq").c_str(), &f), WOQ_OK);
  uint64_t count = 0;
  EXPECT_EQ(woq_file_tensor_count(f, &count), WOQ_OK);
  EXPECT_EQ(count, 3u);
  EXPECT_EQ(woq_file_verify(f), WOQ_OK);
  woq_file_close(f);

  // Layer "b" has an infinite scale: "a" is converted and written first.
  tensors.clear();
  for (const char* name : {"a", "b", "c"})
    for (SafeTensorOut& t : gptq_layer(name, name[0] == 'b' ? 0x7c00 : 0x2000)) tensors.push_back(std::move(t));
  woq::import::write_safetensors(dir.file("bad.safetensors"), tensors, {});
  calls.clear();
  EXPECT_EQ(woq_import_checkpoint_ex(dir.file("bad.safetensors").c_str(), "gptq_v2", dir.file("bad.woq").c_str(), &o,
                                     nullptr),
            WOQ_ERR_UNSUPPORTED);
  EXPECT_NE(std::string(woq_last_error()).find("b."), std::string::npos) << woq_last_error();
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0].layer, "a.weight");
  for (const std::string& name : woq::test::list_dir(dir.path()))
    EXPECT_TRUE(name == "m.safetensors" || name == "bad.safetensors" || name == "o.woq") << "left behind: " << name;
}

// fp32 scales fp16 cannot hold: refused unless rounding is asked for, then
// counted in the report; never rounded to zero or to infinity.
TEST(Import, Fp32ScalesAreRoundedOnlyOnRequest) {
  woq::test::TempDir dir;
  woq_import_options rounding;
  ASSERT_EQ(woq_import_options_init(&rounding), WOQ_OK);
  rounding.round_scales = 1;
  auto run = [&](float scale, const woq_import_options* options, std::string* said) {
    woq::import::write_safetensors(dir.file("m.safetensors"),
                                   {i32("l.qweight", {8, 16}), i32("l.qzeros", {2, 2}, 0x77777777),
                                    filled("l.scales", "F32", {2, 16}, scale), g_idx(64, 32)},
                                   {});
    const char* report = nullptr;
    const woq_status s = woq_import_checkpoint_ex(dir.file("m.safetensors").c_str(), "gptq_v2",
                                                  dir.file("o.woq").c_str(), options, &report);
    *said = s == WOQ_OK ? report : woq_last_error();
    return s;
  };
  std::string said;
  EXPECT_EQ(run(0.1f, nullptr, &said), WOQ_ERR_UNSUPPORTED);
  EXPECT_NE(said.find("not exactly representable in fp16"), std::string::npos) << said;
  EXPECT_NE(said.find("--round-scales"), std::string::npos) << said;
  ASSERT_EQ(run(0.1f, &rounding, &said), WOQ_OK) << said;
  // fp16's nearest to 0.1 is 0.0999755859375: a change of 2.4e-4.
  EXPECT_NE(said.find("32 of 32 scales rounded to fp16, largest relative change 0.00024"), std::string::npos) << said;
  ASSERT_EQ(run(0.125f, &rounding, &said), WOQ_OK) << said;
  EXPECT_EQ(said.find("rounded"), std::string::npos) << said;  // exact: nothing to report
  EXPECT_EQ(run(1e-9f, &rounding, &said), WOQ_ERR_UNSUPPORTED);
  EXPECT_NE(said.find("would round to zero"), std::string::npos) << said;
  EXPECT_EQ(run(1e6f, &rounding, &said), WOQ_ERR_UNSUPPORTED);
  EXPECT_NE(said.find("beyond fp16's range"), std::string::npos) << said;
}

// The config next to a checkpoint: fields of the wrong type are refused
// naming the file and key; null fields count as absent. And a GPTQ K that does not fill whole
// int32 words (or an empty g_idx) is refused before any code is unpacked.
TEST(Import, ConfigFieldsAndPackedLengthsAreChecked) {
  woq::test::TempDir dir;
  std::string msg;
  auto with_config = [&](const char* name, const char* text) {
    std::remove(dir.file("quantize_config.json").c_str());
    std::remove(dir.file("config.json").c_str());
    const std::string s = text;
    woq::test::write_file(dir.file(name), std::vector<uint8_t>(s.begin(), s.end()));
  };
  const std::vector<SafeTensorOut> gptq = {i32("l.qweight", {8, 16}), i32("l.qzeros", {2, 2}, 0x77777777),
                                           f16("l.scales", {2, 16}), g_idx(64, 32)};
  struct Case {
    const char* file;
    const char* config;
    std::vector<SafeTensorOut> tensors;
    woq_status status;
    const char* word;
  };
  const std::vector<Case> cases = {
      {"quantize_config.json", R"({"bits": 4, "group_size": 32, "desc_act": false})", gptq, WOQ_OK, ""},
      {"quantize_config.json", R"({"bits": null, "group_size": null, "desc_act": null})", gptq, WOQ_OK, ""},
      // Each layer's scales give its group (configs may override it per layer).
      {"quantize_config.json", R"({"bits": 4, "group_size": 64})", gptq, WOQ_OK, ""},
      {"quantize_config.json", R"({"bits": 4, "desc_act": "no"})", gptq, WOQ_ERR_FORMAT, "\"desc_act\" is \"no\""},
      {"quantize_config.json", R"({"bits": "4"})", gptq, WOQ_ERR_FORMAT, "\"bits\""},
      {"quantize_config.json", R"({"bits": -1})", gptq, WOQ_ERR_FORMAT, "from 0 to 65536"},
      {"quantize_config.json", R"({"bits": 18446744073709551615})", gptq, WOQ_ERR_FORMAT, "from 0 to 65536"},
      {"quantize_config.json", R"({"checkpoint_format": 2})", gptq, WOQ_ERR_FORMAT, "checkpoint_format"},
      {"quantize_config.json", "[4, 32]", gptq, WOQ_ERR_FORMAT, "not a JSON object"},
      {"config.json", R"({"quantization_config": 7})", gptq, WOQ_ERR_FORMAT, "quantization_config is not a JSON object"},
      {"config.json", R"({"quantization_config": {"quant_method": "awq", "bits": 8}})",
       {i32("l.qweight", {64, 2}), i32("l.qzeros", {2, 2}), f16("l.scales", {2, 16})}, WOQ_ERR_UNSUPPORTED,
       "4-bit only"},
      // 9 inputs of 4 bits: qweight's one word a column holds 8 of them.
      {"quantize_config.json", R"({"bits": 4})",
       {i32("l.qweight", {1, 16}), i32("l.qzeros", {1, 2}), f16("l.scales", {1, 16}), g_idx(9, 9)}, WOQ_ERR_FORMAT,
       "9 inputs (g_idx's length) do not fill whole int32 words"},
      {"quantize_config.json", R"({"bits": 4})",
       {i32("l.qweight", {8, 16}), i32("l.qzeros", {1, 2}), f16("l.scales", {1, 16}), g_idx(0, 1)}, WOQ_ERR_FORMAT,
       "no inputs: g_idx is empty"},
  };
  for (const Case& c : cases) {
    with_config(c.file, c.config);
    EXPECT_EQ(import(dir, c.tensors, "auto", &msg), c.status) << c.config << ": " << msg;
    EXPECT_NE(msg.find(c.word), std::string::npos) << c.config << ": " << msg;
  }
}

// An act-order GPTQ layer (g_idx a permutation of k / group, written here
// byte by byte) imports into a format 1.2 file with an input permutation;
// every CPU backend dequantizes it to the checkpoint's own weights in the
// model's input order, bit for bit, and multiplies X in that order, for
// each X dtype and for batches that take different kernel paths.
TEST(Import, ActOrderLayersKeepTheModelsInputOrderOnEveryCpuBackend) {
  woq::test::TempDir dir;
  const uint64_t n = 48, k = 384, group = 64;
  const std::vector<float> w = woq::test::write_act_order_gptq(dir.file("m.safetensors"), n, k, group, 5);
  ASSERT_EQ(woq_import_checkpoint(dir.file("m.safetensors").c_str(), "gptq_v2", dir.file("o.woq").c_str(), nullptr),
            WOQ_OK)
      << woq_last_error();
  EXPECT_EQ(woq::test::read_file(dir.file("o.woq"))[10], 2) << "an input permutation is format 1.2";
  woq_file* f = nullptr;
  ASSERT_EQ(woq_file_open(dir.file("o.woq").c_str(), &f), WOQ_OK);
  woq_tensor_info info;
  info.struct_size = sizeof info;
  ASSERT_EQ(woq_file_tensor_info(f, 0, &info), WOQ_OK);
  EXPECT_EQ(info.has_input_permutation, 1);
  EXPECT_EQ(info.has_input_scales, 0);
  EXPECT_EQ(info.group_size, group);
  for (woq_backend backend : {WOQ_BACKEND_CPU_REFERENCE, WOQ_BACKEND_CPU}) {
    woq_context* ctx = nullptr;
    ASSERT_EQ(woq::test::create_context(backend, &ctx), WOQ_OK);
    woq_tensor* t = nullptr;
    ASSERT_EQ(woq_tensor_load(ctx, f, "l.weight", &t), WOQ_OK) << woq_last_error();
    std::vector<float> w_hat(n * k, std::nanf(""));
    ASSERT_EQ(woq_dequantize(ctx, t, w_hat.data(), WOQ_DTYPE_F32, n * k * 4), WOQ_OK);
    ASSERT_EQ(std::memcmp(w_hat.data(), w.data(), n * k * 4), 0) << "backend " << backend;
    for (uint64_t m : {1, 5, 40}) {
      const std::vector<float> x = woq::test::random_activations(m * k, uint32_t(m));
      const std::vector<double> want = woq::test::matmul_f64(x, w, nullptr, m, n, k);
      std::vector<float> y(m * n, std::nanf(""));
      ASSERT_EQ(woq_matmul(ctx, t, x.data(), WOQ_DTYPE_F32, m, y.data(), WOQ_DTYPE_F32), WOQ_OK);
      EXPECT_LT(woq::test::rel_error(y, want), 1e-5) << "backend " << backend << " m " << m;
      // bf16 X (each value exact in bf16, so float64 of the same X is the truth)
      std::vector<float> x_rounded(m * k);
      std::vector<uint16_t> x16(m * k);
      for (uint64_t i = 0; i < m * k; ++i) {
        uint32_t bits;
        std::memcpy(&bits, &x[i], 4);
        bits &= 0xFFFF0000u;
        x16[i] = uint16_t(bits >> 16);
        std::memcpy(&x_rounded[i], &bits, 4);
      }
      std::fill(y.begin(), y.end(), std::nanf(""));
      ASSERT_EQ(woq_matmul(ctx, t, x16.data(), WOQ_DTYPE_BF16, m, y.data(), WOQ_DTYPE_F32), WOQ_OK);
      EXPECT_LT(woq::test::rel_error(y, woq::test::matmul_f64(x_rounded, w, nullptr, m, n, k)), 1e-5)
          << "bf16 X, backend " << backend << " m " << m;
    }
    woq_tensor_destroy(t);
    woq_context_destroy(ctx);
  }
  woq_file_close(f);
}
