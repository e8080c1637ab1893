// The GGUF reader: a file written byte by byte here opens with the tensors
// and metadata it holds; every truncation and each corrupted field is
// refused with a message that names what is wrong.
#include <gtest/gtest.h>

#include <dirent.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <random>

#include "import/gguf.h"
#include "kernels/cpu/numeric.h"
#include "runtime/error.h"
#include "test_util.h"

namespace {

using woq::import::GgufFile;

void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(uint8_t(v >> (8 * i)));
}
void put_u64(std::vector<uint8_t>& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(uint8_t(v >> (8 * i)));
}
void put_string(std::vector<uint8_t>& out, const std::string& s) {
  put_u64(out, s.size());
  out.insert(out.end(), s.begin(), s.end());
}

// One metadata entry: key, value type and the value's bytes.
std::vector<uint8_t> entry(const std::string& key, uint32_t type, const std::vector<uint8_t>& value) {
  std::vector<uint8_t> out;
  put_string(out, key);
  put_u32(out, type);
  out.insert(out.end(), value.begin(), value.end());
  return out;
}
std::vector<uint8_t> u32_value(uint32_t v) {
  std::vector<uint8_t> out;
  put_u32(out, v);
  return out;
}
std::vector<uint8_t> string_value(const std::string& s) {
  std::vector<uint8_t> out;
  put_string(out, s);
  return out;
}
// An array header (element type, count) followed by `body`.
std::vector<uint8_t> array_value(uint32_t element, uint64_t count, const std::vector<uint8_t>& body) {
  std::vector<uint8_t> out;
  put_u32(out, element);
  put_u64(out, count);
  out.insert(out.end(), body.begin(), body.end());
  return out;
}

struct TensorEntry {
  std::string name;
  std::vector<uint64_t> dims;
  uint32_t type;
  uint64_t offset;
};

// A small valid file, which each case then breaks in one place: a Q8_0
// matrix of 2 rows x 32 inputs (68 bytes) at offset 0 and an F32 vector of
// 2 at offset 96 (the next multiple of the alignment, 32).
struct Spec {
  uint32_t magic = 0x46554747, version = 3;
  int64_t claimed_tensors = -1, claimed_entries = -1;  // -1: the true counts
  std::vector<std::vector<uint8_t>> entries = {
      entry("general.alignment", 4, u32_value(32)), entry("general.architecture", 8, string_value("llama")),
      entry("tokenizer.ggml.tokens", 9, array_value(8, 2, [] {
              std::vector<uint8_t> b;
              put_string(b, "<s>");
              put_string(b, "a");
              return b;
            }()))};
  std::vector<TensorEntry> tensors = {{"blk.0.attn_q.weight", {32, 2}, 8, 0}, {"blk.0.attn_q.bias", {2}, 0, 96}};
  uint64_t alignment = 32;
  uint64_t data_bytes = 104;

  std::vector<uint8_t> bytes() const {
    std::vector<uint8_t> out;
    put_u32(out, magic);
    put_u32(out, version);
    put_u64(out, claimed_tensors < 0 ? tensors.size() : uint64_t(claimed_tensors));
    put_u64(out, claimed_entries < 0 ? entries.size() : uint64_t(claimed_entries));
    for (const auto& e : entries) out.insert(out.end(), e.begin(), e.end());
    for (const auto& t : tensors) {
      put_string(out, t.name);
      put_u32(out, uint32_t(t.dims.size()));
      for (uint64_t d : t.dims) put_u64(out, d);
      put_u32(out, t.type);
      put_u64(out, t.offset);
    }
    out.resize((out.size() + alignment - 1) / alignment * alignment, 0);
    for (uint64_t i = 0; i < data_bytes; ++i) out.push_back(uint8_t(i * 7 + 1));
    return out;
  }
};

struct Failure {
  woq::Status status;
  std::string message;
};

Failure open_failure(const std::vector<uint8_t>& bytes) {
  static const woq::test::TempDir dir;  // one for every case: the truncation test writes hundreds
  woq::test::write_file(dir.file("m.gguf"), bytes);
  try {
    GgufFile::open(dir.file("m.gguf"));
  } catch (const woq::Error& e) {
    return {e.status(), e.what()};
  }
  return {woq::Status::Ok, ""};
}

}  // namespace

TEST(Gguf, ReadsAFileWrittenByteByByte) {
  woq::test::TempDir dir;
  const std::vector<uint8_t> bytes = Spec().bytes();
  woq::test::write_file(dir.file("m.gguf"), bytes);
  EXPECT_TRUE(woq::import::looks_like_gguf(dir.file("m.gguf")));
  auto f = GgufFile::open(dir.file("m.gguf"));
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->strings().at("general.architecture"), "llama");
  EXPECT_EQ(f->strings().count("tokenizer.ggml.tokens"), 0u);  // arrays are skipped
  ASSERT_EQ(f->tensors().size(), 2u);
  const woq::import::GgufTensor* w = f->find("blk.0.attn_q.weight");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->dims, (std::vector<uint64_t>{32, 2}));
  EXPECT_EQ(woq::import::ggml_type_name(w->type), "Q8_0");
  EXPECT_EQ(w->bytes, 68u);
  const uint64_t data_start = bytes.size() - 104;
  EXPECT_EQ(w->data[0], bytes[data_start]);
  const woq::import::GgufTensor* b = f->find("blk.0.attn_q.bias");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->bytes, 8u);
  EXPECT_EQ(std::memcmp(b->data, bytes.data() + data_start + 96, 8), 0);
  EXPECT_EQ(woq::import::ggml_type_name(99), "type 99");
}

TEST(Gguf, RefusesEveryTruncation) {
  const std::vector<uint8_t> bytes = Spec().bytes();
  for (size_t size = 0; size < bytes.size(); ++size) {
    const Failure f = open_failure(std::vector<uint8_t>(bytes.begin(), bytes.begin() + size));
    EXPECT_EQ(f.status, woq::Status::Format) << size << " bytes: " << f.message;
    EXPECT_NE(f.message.find("m.gguf"), std::string::npos) << f.message;
  }
}

TEST(Gguf, RefusesCorruptedFields) {
  const struct {
    const char* what;
    void (*corrupt)(Spec&);
    woq::Status status;
    const char* message;
  } cases[] = {
      {"magic", [](Spec& s) { s.magic = 0x46554746; }, woq::Status::Format, "does not start with \"GGUF\""},
      {"version 1", [](Spec& s) { s.version = 1; }, woq::Status::Version, "GGUF version 1 (32-bit counts) is not read"},
      {"version 4", [](Spec& s) { s.version = 4; }, woq::Status::Version, "GGUF version 4 is not read"},
      {"big-endian", [](Spec& s) { s.version = 0x03000000; }, woq::Status::Version, "big-endian"},
      {"tensor count", [](Spec& s) { s.claimed_tensors = int64_t(1) << 40; }, woq::Status::Format,
       "claims 1099511627776 tensors"},
      {"metadata count", [](Spec& s) { s.claimed_entries = int64_t(1) << 40; }, woq::Status::Format,
       "metadata entries, more than the file can hold"},
      {"key length", [](Spec& s) { s.entries[1] = entry(std::string(5000, 'k'), 8, string_value("x")); },
       woq::Status::Format, "is 5000 bytes long, more than 4096"},
      {"string length", [](Spec& s) {
         std::vector<uint8_t> v;
         put_u64(v, uint64_t(1) << 62);
         s.entries[1] = entry("general.name", 8, v);
       }, woq::Status::Format, "the file ends inside the value of 'general.name'"},
      {"value type", [](Spec& s) { s.entries[1] = entry("x", 13, {}); }, woq::Status::Format,
       "metadata 'x' has value type 13, which GGUF does not define"},
      {"array count", [](Spec& s) { s.entries[2] = entry("t", 9, array_value(6, uint64_t(1) << 61, {})); },
       woq::Status::Format, "array 't' of 2305843009213693952 elements runs past the end of the file"},
      {"string array count", [](Spec& s) { s.entries[2] = entry("t", 9, array_value(8, uint64_t(1) << 40, {})); },
       woq::Status::Format, "array 't' of 1099511627776 elements runs past the end of the file"},
      {"nested arrays", [](Spec& s) {
         std::vector<uint8_t> v = array_value(0, 0, {});
         for (int i = 0; i < 5; ++i) v = array_value(9, 1, v);
         s.entries[2] = entry("deep", 9, v);
       }, woq::Status::Format, "metadata 'deep' nests arrays deeper than 4"},
      {"duplicate key", [](Spec& s) { s.entries[2] = s.entries[1]; }, woq::Status::Format,
       "metadata key 'general.architecture' is listed twice"},
      {"alignment type", [](Spec& s) { s.entries[0] = entry("general.alignment", 8, string_value("32")); },
       woq::Status::Format, "general.alignment has value type 8, not uint32"},
      {"alignment", [](Spec& s) { s.entries[0] = entry("general.alignment", 4, u32_value(24)); },
       woq::Status::Format, "general.alignment 24 is not a power of two"},
      {"no dimensions", [](Spec& s) { s.tensors[0].dims = {}; }, woq::Status::Format,
       "tensor 'blk.0.attn_q.weight': 0 dimensions, expected 1 to 4"},
      {"five dimensions", [](Spec& s) { s.tensors[0].dims = {32, 1, 1, 1, 2}; }, woq::Status::Format,
       "5 dimensions, expected 1 to 4"},
      {"dimensions overflow", [](Spec& s) { s.tensors[0].dims = {32, uint64_t(1) << 40, uint64_t(1) << 40}; },
       woq::Status::Format, "its dimensions overflow"},
      {"ragged block", [](Spec& s) { s.tensors[0].dims = {48, 2}; }, woq::Status::Format,
       "its first dimension 48 is not a multiple of Q8_0's block of 32"},
      {"duplicate tensor", [](Spec& s) { s.tensors[1].name = s.tensors[0].name; }, woq::Status::Format,
       "tensor 'blk.0.attn_q.weight' is listed twice"},
      {"unaligned offset", [](Spec& s) { s.tensors[1].offset = 72; }, woq::Status::Format,
       "offset 72 is not a multiple of the alignment 32"},
      {"offset past the data", [](Spec& s) { s.tensors[1].offset = 128; }, woq::Status::Format,
       "tensor 'blk.0.attn_q.bias': its 8 bytes at offset 128 run past the 104-byte data section"},
      {"huge offset", [](Spec& s) { s.tensors[1].offset = ~uint64_t(31); }, woq::Status::Format,
       "run past the 104-byte data section"},
      {"matrix too big", [](Spec& s) { s.tensors[0].dims = {32, 4}; }, woq::Status::Format,
       "its 136 bytes at offset 0 run past"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    Spec spec;
    c.corrupt(spec);
    const Failure f = open_failure(spec.bytes());
    EXPECT_EQ(f.status, c.status) << f.message;
    EXPECT_NE(f.message.find(c.message), std::string::npos) << f.message;
  }
}

TEST(Gguf, SkipsTheDataOfTypesItDoesNotKnow) {
  Spec spec;
  spec.tensors.push_back({"experts", {1u << 20, 1u << 20}, 23 /* IQ4_XS */, 0});
  woq::test::TempDir dir;
  woq::test::write_file(dir.file("m.gguf"), spec.bytes());
  auto f = GgufFile::open(dir.file("m.gguf"));
  const woq::import::GgufTensor* t = f->find("experts");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->data, nullptr);
  EXPECT_EQ(woq::import::ggml_type_name(t->type), "IQ4_XS");
}

namespace {

// Files in `dir` (the writers must leave no temporary file behind).
size_t files_in(const std::string& dir) {
  size_t n = 0;
  if (DIR* d = opendir(dir.c_str())) {
    while (const dirent* e = readdir(d)) n += e->d_name[0] != '.';
    closedir(d);
  }
  return n;
}

}  // namespace

TEST(Gguf, WritesTheTemplateBackByteForByte) {
  Spec spec;
  spec.entries.push_back(entry("general.file_type", 4, u32_value(1)));
  spec.data_bytes = 128;  // the last tensor padded to the alignment, as the writer pads it
  woq::test::TempDir dir;
  std::vector<uint8_t> bytes = spec.bytes();
  const size_t data_start = bytes.size() - 128;
  std::fill(bytes.begin() + data_start + 68, bytes.begin() + data_start + 96, 0);  // padding: zeros
  std::fill(bytes.begin() + data_start + 104, bytes.end(), 0);
  woq::test::write_file(dir.file("in.gguf"), bytes);
  auto f = GgufFile::open(dir.file("in.gguf"));
  EXPECT_EQ(f->alignment(), 32u);
  ASSERT_EQ(f->entries().size(), 4u);
  EXPECT_EQ(f->entries()[1].key, "general.architecture");
  EXPECT_EQ(woq::import::write_gguf(dir.file("same.gguf"), *f, {}, -1), bytes.size());
  EXPECT_EQ(woq::test::read_file(dir.file("same.gguf")), bytes);
  // Only general.file_type's value changes.
  woq::import::write_gguf(dir.file("typed.gguf"), *f, {}, 7);
  const std::vector<uint8_t> typed = woq::test::read_file(dir.file("typed.gguf"));
  ASSERT_EQ(typed.size(), bytes.size());
  std::vector<size_t> differ;
  for (size_t i = 0; i < bytes.size(); ++i)
    if (typed[i] != bytes[i]) differ.push_back(i);
  ASSERT_EQ(differ.size(), 1u);
  EXPECT_EQ(bytes[differ[0]], 1);
  EXPECT_EQ(typed[differ[0]], 7);
  EXPECT_EQ(files_in(dir.path()), 3u);
}

// Each encoded block holds llama.cpp's weights d (q - 2^(b-1)) (Q8_0: d q
// for signed q) equal to woq's s (c - z), for both zero-points it takes.
TEST(Gguf, EncodedBlocksHoldTheSameWeights) {
  using woq::import::GgmlType;
  std::mt19937 rng(5);
  for (GgmlType type : {GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q8_0}) {
    const uint32_t bits = type == GgmlType::Q4_0 ? 4 : type == GgmlType::Q5_0 ? 5 : 8;
    const uint32_t qmax = (1u << bits) - 1, middle = 1u << (bits - 1);
    const uint64_t k = 128, blocks = k / 32;
    std::vector<uint8_t> codes(k);
    for (uint8_t& c : codes) c = uint8_t(rng() % (qmax + 1));
    codes[0] = 0, codes[1] = uint8_t(qmax);  // both ends
    std::vector<uint16_t> scales(blocks);
    std::vector<int32_t> zeros(blocks);
    for (uint64_t j = 0; j < blocks; ++j) {
      scales[j] = woq::kernels::float_to_half(0.001f * float(1 + rng() % 1000));
      zeros[j] = int32_t(j % 2 ? qmax - middle : middle);
    }
    const uint64_t block_bytes = woq::import::ggml_tensor_bytes(uint32_t(type), {32});
    std::vector<uint8_t> out(blocks * block_bytes);
    woq::import::encode_gguf_row(type, codes.data(), scales.data(), zeros.data(), k, out.data(), "row");
    for (uint64_t i = 0; i < k; ++i) {
      const uint8_t* b = out.data() + i / 32 * block_bytes;
      const uint32_t at = i % 32;
      uint16_t d_bits;
      std::memcpy(&d_bits, b, 2);
      float q;
      if (type == GgmlType::Q8_0) {
        q = float(int8_t(b[2 + at]));
      } else {
        const uint8_t* nibbles = b + (type == GgmlType::Q4_0 ? 2 : 6);
        uint32_t v = at < 16 ? nibbles[at] & 15u : nibbles[at - 16] >> 4;
        if (type == GgmlType::Q5_0) {
          uint32_t high;
          std::memcpy(&high, b + 2, 4);
          v |= (high >> at & 1u) << 4;
        }
        q = float(v) - float(middle);
      }
      const float llama = woq::kernels::half_to_float(d_bits) * q;
      const float woq_w = woq::kernels::half_to_float(scales[i / 32]) * float(int32_t(codes[i]) - zeros[i / 32]);
      ASSERT_EQ(llama, woq_w) << woq::import::ggml_type_name(uint32_t(type)) << " input " << i;
    }
  }
}

TEST(Gguf, WriterRefusesWhatItCannotWrite) {
  using woq::import::GgmlType;
  woq::test::TempDir dir;
  Spec spec;
  spec.tensors.push_back({"experts", {256, 4}, 23 /* IQ4_XS: size unknown to woq */, 128});
  woq::test::write_file(dir.file("in.gguf"), spec.bytes());
  auto f = GgufFile::open(dir.file("in.gguf"));
  const auto status_of = [&](const std::map<std::string, woq::import::GgufReplacement>& replace, std::string* what) {
    try {
      woq::import::write_gguf(dir.file("out.gguf"), *f, replace, -1);
    } catch (const woq::Error& e) {
      *what = e.what();
      return e.status();
    }
    return woq::Status::Ok;
  };
  std::string what;
  EXPECT_EQ(status_of({}, &what), woq::Status::Unsupported);
  EXPECT_NE(what.find("'experts' has type IQ4_XS"), std::string::npos) << what;
  const auto zeros_fill = [](uint8_t*) {};
  EXPECT_EQ(status_of({{"missing", {GgmlType::Q8_0, zeros_fill}}}, &what), woq::Status::NotFound);
  EXPECT_NE(what.find("no tensor 'missing'"), std::string::npos) << what;
  EXPECT_EQ(status_of({{"blk.0.attn_q.bias", {GgmlType::Q8_0, zeros_fill}}}, &what), woq::Status::InvalidArgument);
  EXPECT_NE(what.find("cannot be Q8_0 (its first dimension is 2)"), std::string::npos) << what;
  // A fill that fails midway leaves nothing behind.
  const auto throwing = [](uint8_t*) { woq::fail(woq::Status::Unsupported, "zero-point 5"); };
  EXPECT_EQ(status_of({{"blk.0.attn_q.weight", {GgmlType::Q8_0, throwing}}, {"experts", {GgmlType::Q8_0, zeros_fill}}}, &what),
            woq::Status::Unsupported);
  EXPECT_EQ(what, "zero-point 5");
  EXPECT_EQ(files_in(dir.path()), 1u);  // in.gguf only
  // Zero-points other than 2^(b-1) and 2^b - 1 - 2^(b-1) are refused by name.
  std::vector<uint8_t> codes(32, 3), out(34);
  const uint16_t scale = 0x3c00;
  const int32_t zero = 5;
  try {
    woq::import::encode_gguf_row(GgmlType::Q8_0, codes.data(), &scale, &zero, 32, out.data(), "tensor 'w', row 0");
    ADD_FAILURE() << "zero-point 5 was encoded";
  } catch (const woq::Error& e) {
    EXPECT_EQ(e.status(), woq::Status::Unsupported);
    EXPECT_NE(std::string(e.what()).find("tensor 'w', row 0, inputs 0..31: zero-point 5; Q8_0 holds only zero-point 128 (or 127"),
              std::string::npos)
        << e.what();
  }
}
