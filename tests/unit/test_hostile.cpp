// Replays the hostile-file corpus (tests/data/hostile, made by
// tests/golden/make_hostile.py): each file must give exactly the status its
// EXPECTED line names, with a message containing the named word, from
// woq_file_open, woq_file_verify or woq_tensor_load - never a crash; and the
// same opened from memory, copied or borrowed.
#include <gtest/gtest.h>
#include <woq.h>

#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"

namespace {

enum class Open { Path, MemoryCopy, MemoryBorrow };

// The file's bytes one past the start of an allocation of exactly their
// size + 1: unaligned, and any read past the end is a heap overflow that
// ASan reports.
struct Image {
  std::unique_ptr<uint8_t[]> storage;
  const uint8_t* data = nullptr;
  size_t size = 0;
};

Image read_image(const std::string& path) {
  const std::vector<uint8_t> bytes = woq::test::read_file(path);
  Image image;
  image.storage.reset(new uint8_t[bytes.size() + 1]);
  if (!bytes.empty()) std::memcpy(image.storage.get() + 1, bytes.data(), bytes.size());
  image.data = image.storage.get() + 1;
  image.size = bytes.size();
  return image;
}

class Hostile : public ::testing::TestWithParam<Open> {};

}  // namespace

TEST_P(Hostile, CorpusIsRejectedWithTheRightStatus) {
  const std::string dir = std::string(WOQ_TEST_DATA) + "/hostile";
  std::ifstream expected(dir + "/EXPECTED");
  ASSERT_TRUE(expected) << "missing " << dir << "/EXPECTED";
  woq_context* ctx = nullptr;
  ASSERT_EQ(woq_context_create(nullptr, &ctx), WOQ_OK);
  std::string line;
  int cases = 0, rejected = 0;
  while (std::getline(expected, line)) {
    std::istringstream in(line);
    std::string name, status, word;
    in >> name >> status;
    std::getline(in, word);
    if (!word.empty() && word[0] == ' ') word.erase(0, 1);
    SCOPED_TRACE(name);
    woq_file* f = nullptr;
    const std::string path = dir + "/" + name + ".woq";
    Image image;  // outlives f
    woq_status s;
    if (GetParam() == Open::Path) {
      s = woq_file_open(path.c_str(), &f);
    } else {
      image = read_image(path);
      s = woq_file_open_memory(image.data, image.size,
                               GetParam() == Open::MemoryCopy ? WOQ_MEMORY_COPY : WOQ_MEMORY_BORROW, nullptr, &f);
      if (GetParam() == Open::MemoryCopy) image = Image();  // the copy must not need them
    }
    if (s == WOQ_OK) s = woq_file_verify(f);
    uint64_t count = 0;
    if (s == WOQ_OK) woq_file_tensor_count(f, &count);
    for (uint64_t i = 0; s == WOQ_OK && i < count; ++i) {
      woq_tensor_info info;
      info.struct_size = sizeof info;
      woq_file_tensor_info(f, i, &info);
      woq_tensor* t = nullptr;
      s = woq_tensor_load(ctx, f, info.name, &t);
      woq_tensor_destroy(t);
    }
    const std::string message = woq_last_error();
    woq_file_close(f);
    EXPECT_STREQ(woq_status_string(s), status.c_str()) << message;
    if (s != WOQ_OK) {
      ++rejected;
      EXPECT_NE(message.find(word), std::string::npos) << "message: " << message;
    }
    ++cases;
  }
  EXPECT_GE(cases, 40);
  std::printf("%d hostile files, %d rejected as expected\n", cases, rejected);
  woq_context_destroy(ctx);
}

INSTANTIATE_TEST_SUITE_P(Opened, Hostile, ::testing::Values(Open::Path, Open::MemoryCopy, Open::MemoryBorrow),
                         [](const ::testing::TestParamInfo<Open>& info) {
                           return info.param == Open::Path ? std::string("FromPath")
                                  : info.param == Open::MemoryCopy ? std::string("FromMemoryCopy")
                                                                   : std::string("FromMemoryBorrowed");
                         });
