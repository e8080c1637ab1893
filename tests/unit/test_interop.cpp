// Reads a .woq file written by tests/golden/woq_reference.py (run by ctest
// first, see tests/CMakeLists.txt) and checks that libwoq dequantizes every
// tensor to exactly the values the Python reference computed.
#include <gtest/gtest.h>
#include <woq.h>

#include <cstdlib>
#include <cstring>

#include "import/safetensors.h"

TEST(Interop, PythonWrittenFileDequantizesExactly) {
  const char* dir = std::getenv("WOQ_INTEROP_DIR");
  if (!dir) GTEST_SKIP() << "WOQ_INTEROP_DIR is not set (ctest sets it after running the Python writer)";
  const std::string woq_path = std::string(dir) + "/py.woq";
  auto expect = woq::import::Safetensors::open(std::string(dir) + "/py_expect.safetensors");
  woq_file* f = nullptr;
  ASSERT_EQ(woq_file_open(woq_path.c_str(), &f), WOQ_OK) << woq_last_error();
  ASSERT_EQ(woq_file_verify(f), WOQ_OK) << woq_last_error();
  woq_context* ctx = nullptr;
  ASSERT_EQ(woq_context_create(nullptr, &ctx), WOQ_OK);
  uint64_t count = 0;
  ASSERT_EQ(woq_file_tensor_count(f, &count), WOQ_OK);
  ASSERT_EQ(count, expect->tensors().size());
  for (uint64_t i = 0; i < count; ++i) {
    woq_tensor_info info;
    info.struct_size = sizeof info;
    ASSERT_EQ(woq_file_tensor_info(f, i, &info), WOQ_OK);
    const auto* e = expect->find(info.name);
    ASSERT_NE(e, nullptr) << info.name;
    woq_tensor* t = nullptr;
    ASSERT_EQ(woq_tensor_load(ctx, f, info.name, &t), WOQ_OK) << woq_last_error();
    std::vector<float> got(info.rows * info.cols), want(info.rows * info.cols);
    ASSERT_EQ(e->bytes, want.size() * 4);
    std::memcpy(want.data(), e->data, e->bytes);
    ASSERT_EQ(woq_dequantize(ctx, t, got.data(), WOQ_DTYPE_F32, got.size() * 4), WOQ_OK);
    EXPECT_EQ(got, want) << info.name;
    woq_tensor_destroy(t);
  }
  const char* name = nullptr;
  EXPECT_EQ(woq_file_metadata_string(f, "model.name", &name, nullptr), WOQ_OK);
  double ratio = 0;
  EXPECT_EQ(woq_file_metadata_float(f, "ratio", &ratio), WOQ_OK);
  EXPECT_EQ(ratio, 0.5);
  woq_context_destroy(ctx);
  woq_file_close(f);
}
