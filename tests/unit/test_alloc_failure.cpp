// Allocation failure injection: every allocation of a file load is made to
// fail in turn; each must end in WOQ_ERR_OUT_OF_MEMORY (or succeed) and leak
// nothing. This binary replaces the global operator new / delete to count
// live allocations and fail the n-th one on request.
#include <gtest/gtest.h>
#include <woq.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include "test_util.h"

namespace {
std::atomic<long> g_live{0};
std::atomic<long> g_countdown{-1};  // fail when it reaches 0; -1 = never

void* counted_alloc(size_t size, size_t align) {
  if (g_countdown.load() >= 0 && g_countdown.fetch_sub(1) == 0) throw std::bad_alloc();
  void* p = align > alignof(std::max_align_t) ? std::aligned_alloc(align, (size + align - 1) / align * align)
                                              : std::malloc(size ? size : 1);
  if (!p) throw std::bad_alloc();
  ++g_live;
  return p;
}
void counted_free(void* p) {
  if (!p) return;
  --g_live;
  std::free(p);
}
}  // namespace

void* operator new(size_t n) { return counted_alloc(n, 0); }
void* operator new[](size_t n) { return counted_alloc(n, 0); }
void* operator new(size_t n, std::align_val_t a) { return counted_alloc(n, size_t(a)); }
void* operator new[](size_t n, std::align_val_t a) { return counted_alloc(n, size_t(a)); }
void operator delete(void* p) noexcept { counted_free(p); }
void operator delete[](void* p) noexcept { counted_free(p); }
void operator delete(void* p, size_t) noexcept { counted_free(p); }
void operator delete[](void* p, size_t) noexcept { counted_free(p); }
void operator delete(void* p, std::align_val_t) noexcept { counted_free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { counted_free(p); }
void operator delete(void* p, size_t, std::align_val_t) noexcept { counted_free(p); }
void operator delete[](void* p, size_t, std::align_val_t) noexcept { counted_free(p); }

TEST(AllocationFailure, EveryFailedAllocationOfALoadIsReportedAndLeaksNothing) {
  woq::test::TempDir dir;
  const std::string path = dir.file("a.woq");
  std::vector<float> w = woq::test::random_weights(40, 256, 9), bias(40, 0.25f);
  woq_qmatrix* q = nullptr;
  ASSERT_EQ(woq_quantize(w.data(), WOQ_DTYPE_F32, 40, 256, nullptr, &q), WOQ_OK);
  ASSERT_TRUE(woq::test::write_one_tensor(path, "t", q, bias.data()));
  woq_qmatrix_destroy(q);
  woq_context_options o;
  woq_context_options_init(&o);
  o.threads = 1;  // no worker threads: their stacks are not ours to count
  std::vector<float> x(256, 1.0f), y(40);

  const std::vector<uint8_t> image = woq::test::read_file(path);
  // The file opened from its path, from a copied image and a borrowed one.
  auto open = [&](int how, woq_file** f) {
    if (how == 0) return woq_file_open(path.c_str(), f);
    return woq_file_open_memory(image.data(), image.size(), how == 1 ? WOQ_MEMORY_COPY : WOQ_MEMORY_BORROW, nullptr,
                                f);
  };
  // open + load + matmul + close, with the n-th allocation failing.
  auto cycle = [&](int how, long fail_at) {
    woq_context* ctx = nullptr;
    woq_file* f = nullptr;
    woq_tensor* t = nullptr;
    g_countdown = fail_at;
    woq_status s = woq_context_create(&o, &ctx);
    if (s == WOQ_OK) s = open(how, &f);
    if (s == WOQ_OK) s = woq_tensor_load(ctx, f, "t", &t);
    if (s == WOQ_OK) s = woq_matmul(ctx, t, x.data(), WOQ_DTYPE_F32, 1, y.data(), WOQ_DTYPE_F32);
    g_countdown = -1;
    woq_tensor_destroy(t);
    woq_file_close(f);
    woq_context_destroy(ctx);
    return s;
  };
  ASSERT_EQ(cycle(0, -1), WOQ_OK);  // warm-up: thread-local scratch buffers
  // ...and the thread-local error message, which keeps its heap buffer.
  woq_file* none = nullptr;
  ASSERT_EQ(woq_file_open((dir.path() + "/a-long-name-that-does-not-exist.woq").c_str(), &none), WOQ_ERR_IO);
  const long live_before = g_live.load();
  for (int how = 0; how < 3; ++how) {
    const char* opened = how == 0 ? "path" : how == 1 ? "copied image" : "borrowed image";  // no SCOPED_TRACE: it allocates
    int failures = 0;
    long n = 0;
    for (; n < 100000; ++n) {
      const woq_status s = cycle(how, n);
      ASSERT_EQ(g_live.load(), live_before) << opened << ": leak after failing allocation " << n;
      if (s == WOQ_OK) break;
      ASSERT_EQ(s, WOQ_ERR_OUT_OF_MEMORY) << opened << ": allocation " << n << ": " << woq_last_error();
      ++failures;
    }
    EXPECT_GT(failures, 10) << opened;
    std::printf("%s: %d injected allocation failures, all reported as WOQ_ERR_OUT_OF_MEMORY, none leaked\n", opened,
                failures);
  }
}
