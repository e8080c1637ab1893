// Concurrency and crash safety: the thread-safety woq.h documents, and a
// writer killed mid-write.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <woq.h>

#include <atomic>
#include <thread>

#include "test_util.h"

namespace {

woq_qmatrix* quantized(uint64_t rows, uint64_t cols, uint32_t seed) {
  std::vector<float> w = woq::test::random_weights(rows, cols, seed);
  woq_qmatrix* q = nullptr;
  EXPECT_EQ(woq_quantize(w.data(), WOQ_DTYPE_F32, rows, cols, nullptr, &q), WOQ_OK);
  return q;
}

}  // namespace

TEST(Concurrency, EightThreadsTimesAThousandMatmulsOnOneLoadedTensor) {
  woq_context* ctx = nullptr;
  ASSERT_EQ(woq_context_create(nullptr, &ctx), WOQ_OK);
  woq_qmatrix* q = quantized(64, 256, 1);
  woq::test::TempDir dir;
  ASSERT_TRUE(woq::test::write_one_tensor(dir.file("l.woq"), "t", q));
  woq_file* f = nullptr;
  ASSERT_EQ(woq_file_open(dir.file("l.woq").c_str(), &f), WOQ_OK);
  woq_tensor* t = nullptr;
  ASSERT_EQ(woq_tensor_load(ctx, f, "t", &t), WOQ_OK);
  woq_file_close(f);
  const uint64_t m = 2;
  const std::vector<float> x = woq::test::random_activations(m * 256, 2);
  std::vector<float> expect(m * 64);
  ASSERT_EQ(woq_matmul(ctx, t, x.data(), WOQ_DTYPE_F32, m, expect.data(), WOQ_DTYPE_F32), WOQ_OK);
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i)
    threads.emplace_back([&] {
      std::vector<float> y(m * 64);
      for (int rep = 0; rep < 1000; ++rep) {
        std::fill(y.begin(), y.end(), std::nanf(""));
        if (woq_matmul(ctx, t, x.data(), WOQ_DTYPE_F32, m, y.data(), WOQ_DTYPE_F32) != WOQ_OK || y != expect) ++bad;
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
  woq_tensor_destroy(t);
  woq_qmatrix_destroy(q);
  woq_context_destroy(ctx);
}

TEST(Concurrency, DestroyingOneTensorWhileOthersAreInUse) {
  woq_context* ctx = nullptr;
  ASSERT_EQ(woq_context_create(nullptr, &ctx), WOQ_OK);
  woq_qmatrix* q = quantized(32, 128, 3);
  woq_tensor* shared = nullptr;
  ASSERT_EQ(woq_tensor_from_qmatrix(ctx, q, nullptr, &shared), WOQ_OK);
  const std::vector<float> x = woq::test::random_activations(128, 4);
  std::vector<float> expect(32);
  ASSERT_EQ(woq_matmul(ctx, shared, x.data(), WOQ_DTYPE_F32, 1, expect.data(), WOQ_DTYPE_F32), WOQ_OK);
  // A fixed amount of work per thread (not "until told to stop"), so the
  // test also finishes under valgrind, which runs one thread at a time.
  std::atomic<int> bad{0};
  std::vector<std::thread> users;
  for (int i = 0; i < 3; ++i)
    users.emplace_back([&] {
      std::vector<float> y(32);
      for (int rep = 0; rep < 2000; ++rep)
        if (woq_matmul(ctx, shared, x.data(), WOQ_DTYPE_F32, 1, y.data(), WOQ_DTYPE_F32) != WOQ_OK || y != expect) ++bad;
    });
  // Meanwhile: load, use and destroy other tensors, contexts and files.
  woq::test::TempDir dir;
  ASSERT_TRUE(woq::test::write_one_tensor(dir.file("c.woq"), "t", q));
  for (int rep = 0; rep < 200; ++rep) {
    woq_file* f = nullptr;
    ASSERT_EQ(woq_file_open(dir.file("c.woq").c_str(), &f), WOQ_OK);
    woq_tensor* t = nullptr;
    ASSERT_EQ(woq_tensor_load(ctx, f, "t", &t), WOQ_OK);
    woq_file_close(f);  // the tensor outlives its file
    std::vector<float> y(32);
    ASSERT_EQ(woq_matmul(ctx, t, x.data(), WOQ_DTYPE_F32, 1, y.data(), WOQ_DTYPE_F32), WOQ_OK);
    EXPECT_EQ(y, expect);
    woq_tensor_destroy(t);
    woq_context* other = nullptr;
    ASSERT_EQ(woq_context_create(nullptr, &other), WOQ_OK);
    woq_context_destroy(other);
  }
  for (auto& th : users) th.join();
  EXPECT_EQ(bad.load(), 0);
  woq_tensor_destroy(shared);
  woq_qmatrix_destroy(q);
  woq_context_destroy(ctx);
}

TEST(CrashSafety, WriterKilledMidWriteLeavesThePreviousFileIntact) {
  woq::test::TempDir dir;
  const std::string path = dir.file("model.woq");
  woq_qmatrix* q = quantized(512, 1024, 5);
  ASSERT_TRUE(woq::test::write_one_tensor(path, "old", q));
  const std::vector<uint8_t> original = woq::test::read_file(path);
  int killed_mid_write = 0;
  for (int attempt = 0; attempt < 8; ++attempt) {
    const pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      // Rewrite the file with many tensors until killed.
      woq_writer* cw = nullptr;
      if (woq_writer_create(path.c_str(), &cw) != WOQ_OK) _exit(2);
      for (int i = 0; i < 100000; ++i)
        if (woq_writer_add_tensor(cw, ("t" + std::to_string(i)).c_str(), q, nullptr) != WOQ_OK) _exit(3);
      woq_writer_finish(cw);
      _exit(0);
    }
    usleep(20000 + 15000 * attempt);
    kill(child, SIGKILL);
    int status = 0;
    waitpid(child, &status, 0);
    if (WIFSIGNALED(status)) ++killed_mid_write;
    EXPECT_EQ(woq::test::read_file(path), original) << "attempt " << attempt;
    woq_file* f = nullptr;
    ASSERT_EQ(woq_file_open(path.c_str(), &f), WOQ_OK) << woq_last_error();
    EXPECT_EQ(woq_file_verify(f), WOQ_OK);
    woq_file_close(f);
  }
  EXPECT_EQ(killed_mid_write, 8);
  woq_qmatrix_destroy(q);
}
