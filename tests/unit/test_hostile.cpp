// Replays the hostile-file corpus (tests/data/hostile, made by
// tests/golden/make_hostile.py): each file must give exactly the status its
// EXPECTED line names, with a message containing the named word, from
// woq_file_open, woq_file_verify or woq_tensor_load - never a crash.
#include <gtest/gtest.h>
#include <woq.h>

#include <fstream>
#include <sstream>
#include <string>

TEST(Hostile, CorpusIsRejectedWithTheRightStatus) {
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
    woq_status s = woq_file_open((dir + "/" + name + ".woq").c_str(), &f);
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
