// Fuzz target: quantize -> write -> read round trip. The input chooses the
// shape, bit width, group, scheme and the weights (any bit patterns: NaN and
// infinities must be refused, everything else must round-trip exactly).
#include <unistd.h>
#include <woq.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  const uint32_t bits = 2 + data[0] % 7;
  const uint32_t groups[] = {32, 64, 128, 256, 0};
  const uint32_t group = groups[data[1] % 5];
  const uint64_t rows = 1 + data[2] % 8;
  const uint64_t cols = group ? group * (1 + data[3] % 2) : 1 + data[3] % 96;
  std::vector<float> w(rows * cols, 0.0f);
  std::memcpy(w.data(), data + 4, std::min(size - 4, w.size() * 4));
  woq_quant_options q;
  woq_quant_options_init(&q);
  q.bits = bits;
  q.group_size = group;
  q.scheme = (data[0] & 0x80) ? WOQ_SCHEME_SYMMETRIC : WOQ_SCHEME_ASYMMETRIC;
  woq_qmatrix* qm = nullptr;
  if (woq_quantize(w.data(), WOQ_DTYPE_F32, rows, cols, &q, &qm) != WOQ_OK) return 0;  // refused: fine
  static const std::string path = "/tmp/woq_fuzz_roundtrip_" + std::to_string(getpid()) + ".woq";
  woq_writer* wr = nullptr;
  if (woq_writer_create(path.c_str(), &wr) != WOQ_OK || woq_writer_add_tensor(wr, "w", qm, nullptr) != WOQ_OK ||
      woq_writer_finish(wr) != WOQ_OK)
    std::abort();
  woq_writer_destroy(wr);
  woq_context* ctx = nullptr;
  woq_file* f = nullptr;
  woq_tensor *loaded = nullptr, *direct = nullptr;
  if (woq_context_create(nullptr, &ctx) != WOQ_OK || woq_file_open(path.c_str(), &f) != WOQ_OK ||
      woq_tensor_load(ctx, f, "w", &loaded) != WOQ_OK || woq_tensor_from_qmatrix(ctx, qm, nullptr, &direct) != WOQ_OK)
    std::abort();
  std::vector<float> a(rows * cols), b(rows * cols);
  if (woq_dequantize(ctx, loaded, a.data(), WOQ_DTYPE_F32, a.size() * 4) != WOQ_OK ||
      woq_dequantize(ctx, direct, b.data(), WOQ_DTYPE_F32, b.size() * 4) != WOQ_OK ||
      std::memcmp(a.data(), b.data(), a.size() * 4) != 0)
    std::abort();
  woq_tensor_destroy(loaded);
  woq_tensor_destroy(direct);
  woq_file_close(f);
  woq_context_destroy(ctx);
  woq_qmatrix_destroy(qm);
  std::remove(path.c_str());
  return 0;
}
