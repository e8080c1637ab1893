// The safetensors importer refuses malformed files with a message.
#include <gtest/gtest.h>

#include <cstring>

#include "import/safetensors.h"
#include "runtime/error.h"
#include "test_util.h"

namespace {

std::vector<uint8_t> make(const std::string& header, size_t data_bytes) {
  std::vector<uint8_t> out(8 + header.size() + data_bytes, 0);
  const uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  std::copy(header.begin(), header.end(), out.begin() + 8);
  return out;
}

std::string open_error(const std::vector<uint8_t>& bytes) {
  woq::test::TempDir dir;
  woq::test::write_file(dir.file("t.safetensors"), bytes);
  try {
    woq::import::SafetensorsFile::open(dir.file("t.safetensors"));
  } catch (const woq::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Safetensors, ReadsAValidFile) {
  woq::test::TempDir dir;
  woq::test::write_file(dir.file("ok.safetensors"),
                        make(R"({"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"__metadata__":{"k":"v"}})", 24));
  auto f = woq::import::SafetensorsFile::open(dir.file("ok.safetensors"));
  ASSERT_EQ(f->tensors().size(), 1u);
  EXPECT_EQ(f->tensors()[0].shape, (std::vector<uint64_t>{2, 3}));
  EXPECT_EQ(f->metadata().at("k"), "v");
}

TEST(Safetensors, RejectsMalformedFiles) {
  EXPECT_NE(open_error({1, 2, 3}).find("shorter"), std::string::npos);
  std::vector<uint8_t> huge(16, 0xff);
  EXPECT_NE(open_error(huge).find("header length"), std::string::npos);
  EXPECT_NE(open_error(make("{not json", 0)).find("JSON"), std::string::npos);
  EXPECT_NE(open_error(make("[1,2]", 0)).find("object"), std::string::npos);
  EXPECT_NE(open_error(make(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}})", 8)).find("outside"),
            std::string::npos);
  EXPECT_NE(open_error(make(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8)).find("needs 12"),
            std::string::npos);
  EXPECT_NE(open_error(make(R"({"a":{"dtype":"Q9","shape":[1],"data_offsets":[0,1]}})", 8)).find("dtype"),
            std::string::npos);
  EXPECT_NE(open_error(make(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 8)).find("non-negative"),
            std::string::npos);
  EXPECT_NE(open_error(make(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}})", 8))
                .find("overflow"),
            std::string::npos);
  EXPECT_NE(open_error(make(R"({"a":{"dtype":"F32"}})", 8)).find("needs dtype"), std::string::npos);
}
