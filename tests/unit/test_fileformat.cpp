// .woq writer and reader: round trips for every configuration, row ranges,
// truncated / bit-flipped / forged files, crash-safe writes.
#include <gtest/gtest.h>
#include <woq.h>
#include <xxhash.h>
#include <zstd.h>

#include <cstring>

#include "fileformat/reader.h"
#include "fileformat/writer.h"
#include "quant/rtn.h"
#include "test_util.h"

using woq::test::TempDir;

namespace {

struct Ctx {
  woq_context* p = nullptr;
  explicit Ctx(woq_backend b = WOQ_BACKEND_CPU, int threads = 2) {
    woq_context_options o;
    woq_context_options_init(&o);
    o.backend = b;
    o.threads = threads;
    EXPECT_EQ(woq_context_create(&o, &p), WOQ_OK);
  }
  ~Ctx() { woq_context_destroy(p); }
};

woq_qmatrix* make_qmatrix(uint64_t rows, uint64_t cols, uint32_t bits, uint32_t group, woq_scheme scheme,
                          uint32_t seed = 1) {
  std::vector<float> w = woq::test::random_weights(rows, cols, seed);
  woq_quant_options o;
  woq_quant_options_init(&o);
  o.bits = bits;
  o.group_size = group;
  o.scheme = scheme;
  woq_qmatrix* q = nullptr;
  EXPECT_EQ(woq_quantize(w.data(), WOQ_DTYPE_F32, rows, cols, &o, &q), WOQ_OK) << woq_last_error();
  return q;
}

std::vector<float> dequantize(woq_context* ctx, woq_tensor* t) {
  uint64_t rows, cols;
  EXPECT_EQ(woq_tensor_shape(t, &rows, &cols), WOQ_OK);
  std::vector<float> out(rows * cols, std::nanf(""));
  EXPECT_EQ(woq_dequantize(ctx, t, out.data(), WOQ_DTYPE_F32, out.size() * 4), WOQ_OK) << woq_last_error();
  return out;
}

// Writes one small tensor with the C API and returns the file's bytes.
std::vector<uint8_t> small_file(const TempDir& dir, const std::string& name = "a.woq") {
  woq_qmatrix* q = make_qmatrix(16, 64, 4, 32, WOQ_SCHEME_ASYMMETRIC);
  std::vector<float> bias(16, 0.5f);
  woq_writer* w = nullptr;
  EXPECT_EQ(woq_writer_create(dir.file(name).c_str(), &w), WOQ_OK);
  EXPECT_EQ(woq_writer_add_tensor(w, "layer.weight", q, bias.data()), WOQ_OK);
  EXPECT_EQ(woq_writer_set_metadata_string(w, "model.name", "tiny"), WOQ_OK);
  EXPECT_EQ(woq_writer_finish(w), WOQ_OK) << woq_last_error();
  woq_writer_destroy(w);
  woq_qmatrix_destroy(q);
  return woq::test::read_file(dir.file(name));
}

// Opens `bytes` as a file; on success also verifies and loads every tensor.
woq_status open_and_use(const TempDir& dir, const std::vector<uint8_t>& bytes, std::string* message = nullptr) {
  const std::string path = dir.file("probe.woq");
  woq::test::write_file(path, bytes);
  woq_file* f = nullptr;
  woq_status s = woq_file_open(path.c_str(), &f);
  if (s == WOQ_OK) s = woq_file_verify(f);
  if (s == WOQ_OK) {
    Ctx ctx;
    uint64_t n = 0;
    woq_file_tensor_count(f, &n);
    for (uint64_t i = 0; i < n && s == WOQ_OK; ++i) {
      woq_tensor_info info;
      info.struct_size = sizeof info;
      woq_file_tensor_info(f, i, &info);
      woq_tensor* t = nullptr;
      s = woq_tensor_load(ctx.p, f, info.name, &t);
      woq_tensor_destroy(t);
    }
  }
  if (message) *message = woq_last_error();
  woq_file_close(f);
  return s;
}

// Recomputes the header+directory checksum so a forged field gets past it.
void reseal(std::vector<uint8_t>& img) {
  uint64_t dir_off;
  std::memcpy(&dir_off, img.data() + 16, 8);
  XXH3_state_t* st = XXH3_createState();
  XXH3_64bits_reset(st);
  XXH3_64bits_update(st, img.data(), 48);
  XXH3_64bits_update(st, img.data() + dir_off, img.size() - dir_off);
  uint64_t sum = XXH3_64bits_digest(st);
  XXH3_freeState(st);
  std::memcpy(img.data() + 48, &sum, 8);
}

uint64_t directory_offset(const std::vector<uint8_t>& img) {
  uint64_t v;
  std::memcpy(&v, img.data() + 16, 8);
  return v;
}

// Byte offset of the first tensor record in an image written with metadata
// entries ahead of it.
uint64_t first_record(const std::vector<uint8_t>& img) {
  uint64_t at = directory_offset(img);
  uint32_t meta_count;
  std::memcpy(&meta_count, img.data() + at + 4, 4);
  at += 8;
  for (uint32_t i = 0; i < meta_count; ++i) {
    uint32_t size;
    std::memcpy(&size, img.data() + at, 4);
    at += size;
  }
  return at;
}

template <class T>
void poke(std::vector<uint8_t>& img, uint64_t at, T value) {
  std::memcpy(img.data() + at, &value, sizeof value);
}

struct RoundTrip {
  uint32_t bits, group;
  woq_scheme scheme;
  bool bias;
};

// gtest would otherwise print the struct's bytes, padding included.
void PrintTo(const RoundTrip& p, std::ostream* os) {
  *os << "bits " << p.bits << " group " << p.group << " scheme " << p.scheme << " bias " << p.bias;
}

class FileRoundTrip : public testing::TestWithParam<RoundTrip> {};

std::vector<RoundTrip> round_trips() {
  std::vector<RoundTrip> v;
  for (uint32_t b = 2; b <= 8; ++b)
    for (uint32_t g : {32u, 64u, 128u, 256u, 0u})
      for (woq_scheme s : {WOQ_SCHEME_ASYMMETRIC, WOQ_SCHEME_SYMMETRIC}) v.push_back({b, g, s, (b + g) % 2 == 0});
  return v;
}

}  // namespace

TEST_P(FileRoundTrip, StoredTensorEqualsInMemoryTensor) {
  const RoundTrip p = GetParam();
  TempDir dir;
  const uint64_t rows = 37, cols = 512;
  woq_qmatrix* q = make_qmatrix(rows, cols, p.bits, p.group, p.scheme, p.bits * 100 + p.group);
  std::vector<float> bias = woq::test::random_activations(rows, 9);
  woq_writer* w = nullptr;
  const std::string path = dir.file("m.woq");
  ASSERT_EQ(woq_writer_create(path.c_str(), &w), WOQ_OK);
  ASSERT_EQ(woq_writer_add_tensor(w, "blk.0.weight", q, p.bias ? bias.data() : nullptr), WOQ_OK);
  ASSERT_EQ(woq_writer_set_metadata_int(w, "quant.bits", p.bits), WOQ_OK);
  ASSERT_EQ(woq_writer_finish(w), WOQ_OK) << woq_last_error();
  woq_writer_destroy(w);

  woq_file* f = nullptr;
  ASSERT_EQ(woq_file_open(path.c_str(), &f), WOQ_OK) << woq_last_error();
  ASSERT_EQ(woq_file_verify(f), WOQ_OK);
  woq_tensor_info info;
  info.struct_size = sizeof info;
  ASSERT_EQ(woq_file_tensor_info_by_name(f, "blk.0.weight", &info), WOQ_OK);
  EXPECT_STREQ(info.name, "blk.0.weight");
  EXPECT_EQ(info.rows, rows);
  EXPECT_EQ(info.cols, cols);
  EXPECT_EQ(info.bits, p.bits);
  EXPECT_EQ(info.group_size, p.group ? p.group : cols);
  EXPECT_EQ(info.scheme, p.scheme);
  EXPECT_EQ(info.has_bias, p.bias ? 1 : 0);
  double max_err, rel, sqnr;
  woq_qmatrix_stats(q, &max_err, &rel, &sqnr);
  EXPECT_EQ(info.max_abs_error, max_err);
  EXPECT_EQ(info.rel_frobenius_error, rel);
  const double g = p.group ? p.group : cols;
  EXPECT_DOUBLE_EQ(info.bits_per_weight, (std::ceil(cols * p.bits / 32.0) * 32 / cols) + 24.0 / g);
  int64_t bits_md = 0;
  EXPECT_EQ(woq_file_metadata_int(f, "quant.bits", &bits_md), WOQ_OK);
  EXPECT_EQ(bits_md, p.bits);

  Ctx ctx;
  woq_tensor *loaded = nullptr, *direct = nullptr;
  ASSERT_EQ(woq_tensor_load(ctx.p, f, "blk.0.weight", &loaded), WOQ_OK) << woq_last_error();
  ASSERT_EQ(woq_tensor_from_qmatrix(ctx.p, q, p.bias ? bias.data() : nullptr, &direct), WOQ_OK);
  EXPECT_EQ(dequantize(ctx.p, loaded), dequantize(ctx.p, direct));
  const uint64_t m = 3;
  std::vector<float> x = woq::test::random_activations(m * cols, 4);
  std::vector<float> y1(m * rows, std::nanf("")), y2(m * rows, std::nanf(""));
  ASSERT_EQ(woq_matmul(ctx.p, loaded, x.data(), WOQ_DTYPE_F32, m, y1.data(), WOQ_DTYPE_F32), WOQ_OK);
  ASSERT_EQ(woq_matmul(ctx.p, direct, x.data(), WOQ_DTYPE_F32, m, y2.data(), WOQ_DTYPE_F32), WOQ_OK);
  EXPECT_EQ(y1, y2);
  woq_tensor_destroy(loaded);
  woq_tensor_destroy(direct);
  woq_file_close(f);
  woq_qmatrix_destroy(q);
}

INSTANTIATE_TEST_SUITE_P(AllConfigs, FileRoundTrip, testing::ValuesIn(round_trips()),
                         [](const testing::TestParamInfo<RoundTrip>& i) {
                           return "b" + std::to_string(i.param.bits) + "_g" + std::to_string(i.param.group) +
                                  (i.param.scheme ? "_sym" : "_asym") + (i.param.bias ? "_bias" : "");
                         });

TEST(FileFormat, RowRangesReadOnlyTheirRowsAcrossChunks) {
  TempDir dir;
  const uint64_t rows = 301, cols = 256;
  std::vector<float> w = woq::test::random_weights(rows, cols, 77);
  woq::QuantizedMatrix m = woq::quantize_rtn(w.data(), woq::DType::F32, rows, cols, woq::QuantConfig{});
  std::vector<float> bias = woq::test::random_activations(rows, 1);
  const std::string path = dir.file("chunks.woq");
  {
    // 128 bytes of codes per row and 1 KiB chunks: 8 rows per chunk, 38 chunks.
    woq::format::Writer writer(path, 3, 1024);
    woq::format::TensorRecord rec;
    rec.name = "w";
    rec.bits = 4;
    rec.rows = rows;
    rec.cols = cols;
    rec.group_size = 128;
    writer.add_tensor(rec, {m.codes.data(), m.scales.data(), m.zeros.data(), bias.data()});
    writer.finish();
  }
  auto reader = woq::format::Reader::open(path);
  ASSERT_EQ(reader->tensors()[0].rows_per_chunk, 8u);
  ASSERT_EQ(reader->tensors()[0].chunk_count(), 38u);

  Ctx ctx;
  woq_file* f = nullptr;
  ASSERT_EQ(woq_file_open(path.c_str(), &f), WOQ_OK);
  woq_tensor* whole = nullptr;
  ASSERT_EQ(woq_tensor_load(ctx.p, f, "w", &whole), WOQ_OK);
  const std::vector<float> all = dequantize(ctx.p, whole);
  for (auto [a, b] : std::vector<std::pair<uint64_t, uint64_t>>{{0, 1}, {3, 13}, {8, 16}, {7, 301}, {300, 301}, {0, 301}}) {
    woq_tensor* part = nullptr;
    ASSERT_EQ(woq_tensor_load_rows(ctx.p, f, "w", a, b, &part), WOQ_OK) << woq_last_error();
    std::vector<float> got = dequantize(ctx.p, part);
    ASSERT_EQ(got, std::vector<float>(all.begin() + a * cols, all.begin() + b * cols)) << a << ".." << b;
    // Bias rows follow the shard.
    std::vector<float> x(cols, 0.0f), y(b - a);
    ASSERT_EQ(woq_matmul(ctx.p, part, x.data(), WOQ_DTYPE_F32, 1, y.data(), WOQ_DTYPE_F32), WOQ_OK);
    EXPECT_EQ(y, std::vector<float>(bias.begin() + a, bias.begin() + b));
    woq_tensor_destroy(part);
  }
  woq_tensor* bad = nullptr;
  EXPECT_EQ(woq_tensor_load_rows(ctx.p, f, "w", 5, 5, &bad), WOQ_ERR_SHAPE);
  EXPECT_EQ(woq_tensor_load_rows(ctx.p, f, "w", 0, 302, &bad), WOQ_ERR_SHAPE);
  EXPECT_EQ(woq_tensor_load_rows(ctx.p, f, "nope", 0, 1, &bad), WOQ_ERR_NOT_FOUND);
  EXPECT_EQ(bad, nullptr);
  woq_tensor_destroy(whole);
  woq_file_close(f);
}

TEST(FileFormat, EveryTruncationIsRejected) {
  TempDir dir;
  const std::vector<uint8_t> good = small_file(dir);
  ASSERT_EQ(open_and_use(dir, good), WOQ_OK);
  for (size_t len = 0; len < good.size(); ++len) {
    std::string msg;
    woq_status s = open_and_use(dir, std::vector<uint8_t>(good.begin(), good.begin() + len), &msg);
    ASSERT_EQ(s, WOQ_ERR_FORMAT) << "length " << len;
    ASSERT_FALSE(msg.empty());
  }
  std::vector<uint8_t> longer = good;
  longer.push_back(0);
  EXPECT_EQ(open_and_use(dir, longer), WOQ_ERR_FORMAT);
}

TEST(FileFormat, EveryBitFlipOutsidePaddingIsRejected) {
  TempDir dir;
  const std::vector<uint8_t> good = small_file(dir);
  auto reader = woq::format::Reader::from_memory(good);
  // Bytes that carry meaning: header, chunks and directory.
  std::vector<std::pair<uint64_t, uint64_t>> ranges = {{0, 64}, {directory_offset(good), good.size()}};
  for (const auto& sec : reader->tensors()[0].sections)
    for (const auto& c : sec) ranges.push_back({c.offset, c.offset + c.stored_size});
  int flips = 0;
  for (auto [a, b] : ranges)
    for (uint64_t i = a; i < b; ++i) {
      std::vector<uint8_t> bad = good;
      bad[i] ^= uint8_t(1u << (i % 8));
      std::string msg;
      woq_status s = open_and_use(dir, bad, &msg);
      ASSERT_NE(s, WOQ_OK) << "flip at byte " << i << " accepted";
      ASSERT_TRUE(s == WOQ_ERR_CHECKSUM || s == WOQ_ERR_FORMAT || s == WOQ_ERR_VERSION) << i << ": " << msg;
      if (i >= 64 && i < directory_offset(good)) {
        EXPECT_EQ(s, WOQ_ERR_CHECKSUM) << "chunk byte " << i;
        EXPECT_NE(msg.find("checksum mismatch"), std::string::npos) << msg;
      }
      if (i >= directory_offset(good)) EXPECT_EQ(s, WOQ_ERR_CHECKSUM) << "directory byte " << i;
      ++flips;
    }
  EXPECT_GT(flips, 500);
}

TEST(FileFormat, VersionsAreHandledAsSpecified) {
  TempDir dir;
  std::vector<uint8_t> img = small_file(dir);
  std::vector<uint8_t> major2 = img;
  major2[9] = 2;
  reseal(major2);
  std::string msg;
  EXPECT_EQ(open_and_use(dir, major2, &msg), WOQ_ERR_VERSION);
  EXPECT_NE(msg.find("2.0"), std::string::npos) << msg;

  // A newer minor (than this reader's 1.2) may append bytes to records;
  // this reader skips them.
  std::vector<uint8_t> newer = img;
  newer[10] = 3;
  const uint64_t rec = first_record(newer);
  uint32_t size;
  std::memcpy(&size, newer.data() + rec, 4);
  newer.insert(newer.begin() + rec + size, {0xAB, 0xCD, 0xEF, 0x01});
  poke<uint32_t>(newer, rec, size + 4);
  poke<uint64_t>(newer, 24, newer.size() - directory_offset(newer));
  poke<uint64_t>(newer, 32, newer.size());
  reseal(newer);
  EXPECT_EQ(open_and_use(dir, newer, &msg), WOQ_OK) << msg;
  // The same extra bytes in a 1.0 file are an error.
  newer[10] = 0;
  reseal(newer);
  EXPECT_EQ(open_and_use(dir, newer, &msg), WOQ_ERR_FORMAT);
  EXPECT_NE(msg.find("record_size"), std::string::npos) << msg;
}

TEST(FileFormat, ForgedFieldsWithValidChecksumAreRejected) {
  TempDir dir;
  const std::vector<uint8_t> good = small_file(dir);
  const uint64_t rec = first_record(good);
  uint16_t name_len;
  std::memcpy(&name_len, good.data() + rec + 4, 2);
  const uint64_t section0 = rec + 64 + name_len;  // codes section header
  const uint64_t chunk0 = section0 + 8;           // its first chunk reference
  const uint64_t scales_chunk0 = chunk0 + 40 + 8;
  struct Forgery {
    const char* what;
    std::function<void(std::vector<uint8_t>&)> apply;
    woq_status expect;
    const char* message;
  };
  std::vector<Forgery> forgeries = {
      {"rows = 0", [&](auto& b) { poke<uint64_t>(b, rec + 16, 0); }, WOQ_ERR_FORMAT, "dimension"},
      {"huge rows", [&](auto& b) { poke<uint64_t>(b, rec + 16, 1ull << 40); }, WOQ_ERR_FORMAT, "dimension"},
      {"rows*cols > 2^40", [&](auto& b) { poke<uint64_t>(b, rec + 16, 1ull << 31); poke<uint64_t>(b, rec + 24, 1ull << 31); },
       WOQ_ERR_FORMAT, "2^40"},
      {"group does not divide", [&](auto& b) { poke<uint32_t>(b, rec + 32, 48); }, WOQ_ERR_FORMAT, "group_size"},
      {"group 0", [&](auto& b) { poke<uint32_t>(b, rec + 32, 0); }, WOQ_ERR_FORMAT, "group_size"},
      {"rows_per_chunk 0", [&](auto& b) { poke<uint32_t>(b, rec + 36, 0); }, WOQ_ERR_FORMAT, "rows_per_chunk"},
      {"bits 9", [&](auto& b) { b[rec + 6] = 9; }, WOQ_ERR_FORMAT, "bits"},
      {"bits 0", [&](auto& b) { b[rec + 6] = 0; }, WOQ_ERR_FORMAT, "bits"},
      {"unknown scheme", [&](auto& b) { b[rec + 7] = 7; }, WOQ_ERR_FORMAT, "scheme"},
      {"unknown packing", [&](auto& b) { b[rec + 12] = 1; }, WOQ_ERR_FORMAT, "packing"},
      {"name length 0", [&](auto& b) { poke<uint16_t>(b, rec + 4, 0); }, WOQ_ERR_FORMAT, "name_length"},
      {"name past record", [&](auto& b) { poke<uint16_t>(b, rec + 4, 1000); }, WOQ_ERR_FORMAT, "directory ends"},
      {"NUL in name", [&](auto& b) { b[rec + 64] = 0; }, WOQ_ERR_FORMAT, "NUL"},
      {"record_size huge", [&](auto& b) { poke<uint32_t>(b, rec, 0xfffffff0u); }, WOQ_ERR_FORMAT, "record_size"},
      {"record_size small", [&](auto& b) { poke<uint32_t>(b, rec, 8); }, WOQ_ERR_FORMAT, "record_size"},
      {"tensor_count huge", [&](auto& b) { poke<uint32_t>(b, directory_offset(b), 0xffffffffu); }, WOQ_ERR_LIMIT, "limit"},
      {"tensor_count too many", [&](auto& b) { poke<uint32_t>(b, directory_offset(b), 5000); }, WOQ_ERR_FORMAT, "cannot hold"},
      {"metadata_count huge", [&](auto& b) { poke<uint32_t>(b, directory_offset(b) + 4, 1u << 30); }, WOQ_ERR_LIMIT, "limit"},
      {"section kind unknown", [&](auto& b) { b[section0] = 9; }, WOQ_ERR_FORMAT, "unknown section kind"},
      {"section repeated", [&](auto& b) { b[section0 + 8 + 40] = 0; }, WOQ_ERR_FORMAT, "repeated"},
      {"chunk_count wrong", [&](auto& b) { poke<uint32_t>(b, section0 + 4, 2); }, WOQ_ERR_FORMAT, "chunks, expected"},
      {"chunk_count huge", [&](auto& b) { poke<uint32_t>(b, rec + 36, 1); poke<uint32_t>(b, section0 + 4, 16); },
       WOQ_ERR_FORMAT, "runs past"},
      {"chunk offset past data", [&](auto& b) { poke<uint64_t>(b, chunk0, directory_offset(b)); }, WOQ_ERR_FORMAT, "outside"},
      {"chunk offset unaligned", [&](auto& b) { poke<uint64_t>(b, chunk0, 257); }, WOQ_ERR_FORMAT, "unaligned"},
      {"chunk offset overflows", [&](auto& b) { poke<uint64_t>(b, chunk0, ~0ull - 255); }, WOQ_ERR_FORMAT, "outside"},
      {"chunk into header", [&](auto& b) { poke<uint64_t>(b, chunk0, 0); }, WOQ_ERR_FORMAT, "outside"},
      {"chunks overlap", [&](auto& b) { uint64_t o; std::memcpy(&o, b.data() + chunk0, 8); poke<uint64_t>(b, scales_chunk0, o); },
       WOQ_ERR_FORMAT, "overlap"},
      {"raw_size lies", [&](auto& b) { poke<uint64_t>(b, chunk0 + 16, 1ull << 40); }, WOQ_ERR_FORMAT, "raw_size"},
      {"unknown codec", [&](auto& b) { b[chunk0 + 32] = 5; }, WOQ_ERR_FORMAT, "codec"},
      {"raw chunk with stored != raw", [&](auto& b) { poke<uint64_t>(b, chunk0 + 8, 100); }, WOQ_ERR_FORMAT, "stored_size"},
      {"has-bias flag without section", [&](auto& b) { b[rec + 13] = 0; }, WOQ_ERR_FORMAT, "bias"},
      {"directory_offset unaligned", [&](auto& b) { poke<uint64_t>(b, 16, directory_offset(b) + 1); }, WOQ_ERR_FORMAT, "directory"},
      {"reserved header byte", [&](auto& b) { b[11] = 1; }, WOQ_ERR_FORMAT, "reserved"},
      {"endianness 2", [&](auto& b) { b[8] = 2; }, WOQ_ERR_FORMAT, "endianness"},
  };
  for (const Forgery& f : forgeries) {
    std::vector<uint8_t> bad = good;
    f.apply(bad);
    if (directory_offset(bad) % 256 == 0 && directory_offset(bad) < bad.size()) reseal(bad);
    std::string msg;
    EXPECT_EQ(open_and_use(dir, bad, &msg), f.expect) << f.what << ": " << msg;
    EXPECT_NE(msg.find(f.message), std::string::npos) << f.what << ": " << msg;
  }
}

TEST(FileFormat, ZstdChunksThatLieAboutTheirSizeAreRejected) {
  // A chunk of zeros compresses well; declare a smaller raw size than the
  // frame decodes to (a decompression bomb) and a larger one.
  TempDir dir;
  const uint64_t rows = 64, cols = 256;
  std::vector<uint32_t> codes(rows * cols / 8, 0);
  std::vector<uint16_t> scales(rows * 2, 0x3c00);
  std::vector<uint8_t> zeros(rows * 2, 0);
  const std::string path = dir.file("z.woq");
  {
    woq::format::Writer w(path);
    woq::format::TensorRecord rec;
    rec.name = "z";
    rec.bits = 4;
    rec.rows = rows;
    rec.cols = cols;
    rec.group_size = 128;
    w.add_tensor(rec, {codes.data(), scales.data(), zeros.data(), nullptr});
    w.finish();
  }
  std::vector<uint8_t> img = woq::test::read_file(path);
  auto reader = woq::format::Reader::from_memory(img);
  const auto& chunk = reader->tensors()[0].sections[0][0];
  ASSERT_EQ(chunk.codec, woq::format::Codec::Zstd);
  ASSERT_EQ(open_and_use(dir, img), WOQ_OK);
  // Replace the codes chunk by a frame of 64x more zeros, same stored size budget.
  std::vector<uint8_t> big(chunk.raw_size * 64, 0);
  std::vector<uint8_t> frame(ZSTD_compressBound(big.size()));
  frame.resize(ZSTD_compress(frame.data(), frame.size(), big.data(), big.size(), 19));
  ASSERT_LE(frame.size(), 256u);  // fits the aligned slot without touching the next chunk
  const uint64_t rec = first_record(img);
  const uint64_t ref = rec + 64 + 1 + 8;
  // Place the frame in the gap before the directory if it fits, else fail the test setup.
  std::vector<uint8_t> bomb = img;
  std::copy(frame.begin(), frame.end(), bomb.begin() + chunk.offset);
  if (frame.size() < chunk.raw_size && chunk.offset + frame.size() <= directory_offset(img)) {
    poke<uint64_t>(bomb, ref + 8, frame.size());
    poke<uint64_t>(bomb, ref + 24, XXH3_64bits(frame.data(), frame.size()));
    reseal(bomb);
    std::string msg;
    EXPECT_EQ(open_and_use(dir, bomb, &msg), WOQ_ERR_FORMAT);
    EXPECT_NE(msg.find("zstd"), std::string::npos) << msg;
  } else {
    FAIL() << "test setup: bomb frame does not fit";
  }
}

TEST(FileFormat, DecodedValuesAreValidated) {
  TempDir dir;
  const uint64_t rows = 4, cols = 64;
  std::vector<uint32_t> codes(rows * cols / 8, 0x11111111u);
  std::vector<uint16_t> scales(rows * 2, 0x3c00);
  std::vector<uint8_t> zeros(rows * 2, 3);
  auto write = [&](uint8_t bits, uint8_t scheme) {
    woq::format::Writer w(dir.file("v.woq"));
    woq::format::TensorRecord rec;
    rec.name = "v";
    rec.bits = bits;
    rec.scheme = scheme;
    rec.rows = rows;
    rec.cols = cols;
    rec.group_size = 32;
    w.add_tensor(rec, {codes.data(), scales.data(), zeros.data(), nullptr});
    w.finish();
    return woq::test::read_file(dir.file("v.woq"));
  };
  std::string msg;
  EXPECT_EQ(open_and_use(dir, write(4, 0), &msg), WOQ_OK) << msg;
  zeros[5] = 16;
  EXPECT_EQ(open_and_use(dir, write(4, 0), &msg), WOQ_ERR_FORMAT);
  EXPECT_NE(msg.find("row 2 group 1"), std::string::npos) << msg;
  zeros[5] = 3;
  EXPECT_EQ(open_and_use(dir, write(4, 1), &msg), WOQ_ERR_FORMAT);  // symmetric needs z = 8
  EXPECT_NE(msg.find("symmetric"), std::string::npos) << msg;
  scales[1] = 0x7c00;  // +inf
  EXPECT_EQ(open_and_use(dir, write(4, 0), &msg), WOQ_ERR_FORMAT);
  scales[1] = 0xbc00;  // -1
  EXPECT_EQ(open_and_use(dir, write(4, 0), &msg), WOQ_ERR_FORMAT);
  EXPECT_NE(msg.find("scale"), std::string::npos) << msg;
}

TEST(FileFormat, NotAWoqFile) {
  TempDir dir;
  std::string msg;
  EXPECT_EQ(open_and_use(dir, std::vector<uint8_t>(4096, 'x'), &msg), WOQ_ERR_FORMAT);
  EXPECT_NE(msg.find("magic"), std::string::npos) << msg;
  woq_file* f = nullptr;
  EXPECT_EQ(woq_file_open(dir.file("missing.woq").c_str(), &f), WOQ_ERR_IO);
  EXPECT_NE(std::string(woq_last_error()).find("missing.woq"), std::string::npos);
  EXPECT_EQ(woq_file_open(dir.path().c_str(), &f), WOQ_ERR_IO);  // a directory
  EXPECT_EQ(f, nullptr);
}

namespace {
woq_tensor* load_tensor(woq_context* ctx, woq_file* f, const char* name) {
  woq_tensor* t = nullptr;
  EXPECT_EQ(woq_tensor_load(ctx, f, name, &t), WOQ_OK) << woq_last_error();
  return t;
}
}  // namespace

TEST(FileFormat, MemoryImagesOpenAsTheFileDoes) {
  TempDir dir;
  const std::vector<uint8_t> bytes = small_file(dir);
  Ctx ctx;
  woq_file* f = nullptr;
  ASSERT_EQ(woq_file_open(dir.file("a.woq").c_str(), &f), WOQ_OK);
  woq_tensor* t = load_tensor(ctx.p, f, "layer.weight");
  const std::vector<float> from_path = dequantize(ctx.p, t);
  woq_tensor_destroy(t);
  woq_file_close(f);

  // Copied: the caller's bytes are garbage and gone before anything is read.
  std::vector<uint8_t> scratch = bytes;
  ASSERT_EQ(woq_file_open_memory(scratch.data(), scratch.size(), WOQ_MEMORY_COPY, nullptr, &f), WOQ_OK)
      << woq_last_error();
  std::fill(scratch.begin(), scratch.end(), 0xA5);
  std::vector<uint8_t>().swap(scratch);
  EXPECT_EQ(woq_file_verify(f), WOQ_OK) << woq_last_error();
  const char* text = nullptr;
  uint64_t length = 0;
  ASSERT_EQ(woq_file_metadata_string(f, "model.name", &text, &length), WOQ_OK);
  EXPECT_EQ(std::string(text, length), "tiny");
  t = load_tensor(ctx.p, f, "layer.weight");
  EXPECT_EQ(dequantize(ctx.p, t), from_path);
  woq_tensor_destroy(t);
  woq_file_close(f);

  // Borrowed, at an odd address: the tensor keeps working once the file is
  // closed and the bytes are overwritten.
  std::vector<uint8_t> unaligned(bytes.size() + 1);
  std::copy(bytes.begin(), bytes.end(), unaligned.begin() + 1);
  ASSERT_EQ(woq_file_open_memory(unaligned.data() + 1, bytes.size(), WOQ_MEMORY_BORROW, nullptr, &f), WOQ_OK)
      << woq_last_error();
  EXPECT_EQ(woq_file_verify(f), WOQ_OK) << woq_last_error();
  t = load_tensor(ctx.p, f, "layer.weight");
  woq_file_close(f);
  std::fill(unaligned.begin(), unaligned.end(), 0xA5);
  EXPECT_EQ(dequantize(ctx.p, t), from_path);
  woq_tensor_destroy(t);
}

TEST(FileFormat, BorrowedImagesAreReadInPlaceAndCopiesAreNot) {
  TempDir dir;
  std::vector<uint8_t> bytes = small_file(dir);
  woq_file* borrowed = nullptr;
  woq_file* copied = nullptr;
  ASSERT_EQ(woq_file_open_memory(bytes.data(), bytes.size(), WOQ_MEMORY_BORROW, nullptr, &borrowed), WOQ_OK);
  ASSERT_EQ(woq_file_open_memory(bytes.data(), bytes.size(), WOQ_MEMORY_COPY, nullptr, &copied), WOQ_OK);
  bytes[woq::format::kDataStart] ^= 0x40;  // the first chunk's first byte
  EXPECT_EQ(woq_file_verify(borrowed), WOQ_ERR_CHECKSUM);
  EXPECT_NE(std::string(woq_last_error()).find("checksum"), std::string::npos) << woq_last_error();
  Ctx ctx;
  woq_tensor* t = nullptr;
  EXPECT_EQ(woq_tensor_load(ctx.p, borrowed, "layer.weight", &t), WOQ_ERR_CHECKSUM);
  EXPECT_EQ(t, nullptr);
  EXPECT_EQ(woq_file_verify(copied), WOQ_OK) << woq_last_error();
  woq_file_close(borrowed);
  woq_file_close(copied);
}

TEST(FileFormat, MemoryOpenArgumentsAndLimitsAreChecked) {
  TempDir dir;
  const std::vector<uint8_t> bytes = small_file(dir);
  woq_file* f = nullptr;
  auto expect = [&](woq_status got, woq_status want, const char* word) {
    EXPECT_EQ(got, want) << word << ": " << woq_last_error();
    EXPECT_NE(std::string(woq_last_error()).find(word), std::string::npos) << woq_last_error();
    EXPECT_EQ(f, nullptr);
  };
  expect(woq_file_open_memory(nullptr, bytes.size(), WOQ_MEMORY_COPY, nullptr, &f), WOQ_ERR_INVALID_ARGUMENT, "data");
  expect(woq_file_open_memory(bytes.data(), bytes.size(), WOQ_MEMORY_BORROW, nullptr, nullptr),
         WOQ_ERR_INVALID_ARGUMENT, "out_file");
  for (int mode : {2, 1000})
    expect(woq_file_open_memory(bytes.data(), bytes.size(), static_cast<woq_memory_mode>(mode), nullptr, &f),
           WOQ_ERR_INVALID_ARGUMENT, "is not a woq_memory_mode");
  expect(woq_file_open_memory(nullptr, 0, WOQ_MEMORY_BORROW, nullptr, &f), WOQ_ERR_FORMAT,
         "in-memory image is 0 bytes, shorter than the 64-byte .woq header");
  for (woq_memory_mode mode : {WOQ_MEMORY_COPY, WOQ_MEMORY_BORROW}) {
    expect(woq_file_open_memory(bytes.data(), bytes.size() - 1, mode, nullptr, &f), WOQ_ERR_FORMAT,
           "in-memory image: header says file_size");
    woq_open_options o;
    woq_open_options_init(&o);
    o.max_tensors = 0;
    expect(woq_file_open_memory(bytes.data(), bytes.size(), mode, &o, &f), WOQ_ERR_LIMIT, "limit");
    o.struct_size = 3;
    expect(woq_file_open_memory(bytes.data(), bytes.size(), mode, &o, &f), WOQ_ERR_INVALID_ARGUMENT,
           "woq_open_options->struct_size");
  }
}

using woq::test::list_dir;

TEST(Writer, ExistingFileSurvivesUntilFinishAndAbandonedWritesLeaveNothing) {
  TempDir dir;
  const std::vector<uint8_t> original = small_file(dir, "model.woq");
  woq_qmatrix* q = make_qmatrix(8, 64, 8, 64, WOQ_SCHEME_SYMMETRIC);
  woq_writer* w = nullptr;
  ASSERT_EQ(woq_writer_create(dir.file("model.woq").c_str(), &w), WOQ_OK);
  ASSERT_EQ(woq_writer_add_tensor(w, "other", q, nullptr), WOQ_OK);
  EXPECT_EQ(woq::test::read_file(dir.file("model.woq")), original) << "final file touched before finish";
  EXPECT_EQ(list_dir(dir.path()).size(), 2u);  // the file and the temporary
  woq_writer_destroy(w);                        // abandoned: temporary removed
  EXPECT_EQ(list_dir(dir.path()), std::vector<std::string>{"model.woq"});
  EXPECT_EQ(woq::test::read_file(dir.file("model.woq")), original);

  ASSERT_EQ(woq_writer_create(dir.file("model.woq").c_str(), &w), WOQ_OK);
  ASSERT_EQ(woq_writer_add_tensor(w, "other", q, nullptr), WOQ_OK);
  EXPECT_EQ(woq_writer_add_tensor(w, "other", q, nullptr), WOQ_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(woq_last_error()).find("duplicate"), std::string::npos);
  ASSERT_EQ(woq_writer_finish(w), WOQ_OK);
  EXPECT_EQ(woq_writer_finish(w), WOQ_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(woq_writer_add_tensor(w, "late", q, nullptr), WOQ_ERR_INVALID_ARGUMENT);
  woq_writer_destroy(w);
  EXPECT_EQ(list_dir(dir.path()), std::vector<std::string>{"model.woq"});
  woq_file* f = nullptr;
  ASSERT_EQ(woq_file_open(dir.file("model.woq").c_str(), &f), WOQ_OK);
  uint64_t n;
  woq_file_tensor_count(f, &n);
  EXPECT_EQ(n, 1u);
  woq_file_close(f);

  EXPECT_EQ(woq_writer_create(dir.file("no/such/dir/x.woq").c_str(), &w), WOQ_ERR_IO);
  EXPECT_NE(std::string(woq_last_error()).find("no/such/dir"), std::string::npos);
  woq_qmatrix_destroy(q);
}

TEST(Writer, MetadataIsTypedAndBounded) {
  TempDir dir;
  woq_qmatrix* q = make_qmatrix(8, 64, 4, 32, WOQ_SCHEME_ASYMMETRIC);
  woq_writer* w = nullptr;
  ASSERT_EQ(woq_writer_create(dir.file("m.woq").c_str(), &w), WOQ_OK);
  ASSERT_EQ(woq_writer_add_tensor(w, "t", q, nullptr), WOQ_OK);
  EXPECT_EQ(woq_writer_set_metadata_string(w, "model.name", "first"), WOQ_OK);
  EXPECT_EQ(woq_writer_set_metadata_string(w, "model.name", "second"), WOQ_OK);  // replaces
  EXPECT_EQ(woq_writer_set_metadata_int(w, "n", -42), WOQ_OK);
  EXPECT_EQ(woq_writer_set_metadata_float(w, "ratio", 0.25), WOQ_OK);
  EXPECT_EQ(woq_writer_set_metadata_string(w, "", "x"), WOQ_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(woq_writer_set_metadata_string(w, std::string(300, 'k').c_str(), "x"), WOQ_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(woq_writer_set_metadata_string(w, "big", std::string((1 << 20) + 1, 'v').c_str()), WOQ_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(woq_writer_set_metadata_string(w, "k", nullptr), WOQ_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(woq_writer_add_tensor(w, std::string(1025, 'n').c_str(), q, nullptr), WOQ_ERR_INVALID_ARGUMENT);
  ASSERT_EQ(woq_writer_finish(w), WOQ_OK);
  woq_writer_destroy(w);
  woq_file* f = nullptr;
  ASSERT_EQ(woq_file_open(dir.file("m.woq").c_str(), &f), WOQ_OK);
  const char* s = nullptr;
  uint64_t len = 0;
  EXPECT_EQ(woq_file_metadata_string(f, "model.name", &s, &len), WOQ_OK);
  EXPECT_STREQ(s, "second");
  EXPECT_EQ(len, 6u);
  int64_t i = 0;
  EXPECT_EQ(woq_file_metadata_int(f, "n", &i), WOQ_OK);
  EXPECT_EQ(i, -42);
  double d = 0;
  EXPECT_EQ(woq_file_metadata_float(f, "ratio", &d), WOQ_OK);
  EXPECT_EQ(d, 0.25);
  EXPECT_EQ(woq_file_metadata_int(f, "model.name", &i), WOQ_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(woq_file_metadata_float(f, "absent", &d), WOQ_ERR_NOT_FOUND);
  EXPECT_EQ(woq_file_metadata_string(f, "woq.writer", &s, nullptr), WOQ_OK);
  EXPECT_EQ(std::string(s), std::string("libwoq ") + woq_version_string());
  uint64_t count;
  EXPECT_EQ(woq_file_metadata_count(f, &count), WOQ_OK);
  EXPECT_EQ(count, 4u);
  const char* key;
  woq_metadata_type type;
  EXPECT_EQ(woq_file_metadata_key(f, 0, &key, &type), WOQ_OK);
  EXPECT_EQ(woq_file_metadata_key(f, 4, &key, &type), WOQ_ERR_NOT_FOUND);
  woq_file_close(f);
  woq_qmatrix_destroy(q);
}
