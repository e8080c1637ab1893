#include "import/gguf.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <set>

#include "import/output_file.h"
#include "runtime/error.h"

namespace woq::import {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read little-endian
constexpr uint32_t kMaxDims = 4;          // ggml's GGML_MAX_DIMS
constexpr uint64_t kMaxTensors = 1u << 20;
constexpr uint64_t kMaxNameBytes = 4096;
constexpr int kMaxArrayDepth = 4;

struct TypeLayout {
  const char* name;
  uint32_t block;  // elements per block; 0: size unknown to woq
  uint32_t bytes;  // bytes per block
};

TypeLayout layout(uint32_t type) {
  switch (type) {
    case 0: return {"F32", 1, 4};
    case 1: return {"F16", 1, 2};
    case 2: return {"Q4_0", 32, 18};   // fp16 d, 16 bytes of nibbles
    case 3: return {"Q4_1", 32, 20};   // fp16 d, fp16 m, nibbles
    case 6: return {"Q5_0", 32, 22};   // fp16 d, 4 bytes of high bits, nibbles
    case 7: return {"Q5_1", 32, 24};
    case 8: return {"Q8_0", 32, 34};   // fp16 d, 32 int8
    case 9: return {"Q8_1", 32, 36};
    case 10: return {"Q2_K", 256, 84};
    case 11: return {"Q3_K", 256, 110};
    case 12: return {"Q4_K", 256, 144};
    case 13: return {"Q5_K", 256, 176};
    case 14: return {"Q6_K", 256, 210};
    case 15: return {"Q8_K", 256, 292};
    case 16: return {"IQ2_XXS", 0, 0};
    case 17: return {"IQ2_XS", 0, 0};
    case 18: return {"IQ3_XXS", 0, 0};
    case 19: return {"IQ1_S", 0, 0};
    case 20: return {"IQ4_NL", 0, 0};
    case 21: return {"IQ3_S", 0, 0};
    case 22: return {"IQ2_S", 0, 0};
    case 23: return {"IQ4_XS", 0, 0};
    case 24: return {"I8", 1, 1};
    case 25: return {"I16", 1, 2};
    case 26: return {"I32", 1, 4};
    case 27: return {"I64", 1, 8};
    case 28: return {"F64", 1, 8};
    case 29: return {"IQ1_M", 0, 0};
    case 30: return {"BF16", 1, 2};
    default: return {nullptr, 0, 0};
  }
}

// Bounds-checked little-endian reads from the mapped file.
class Cursor {
 public:
  Cursor(const uint8_t* begin, uint64_t size, std::string where) : begin_(begin), size_(size), where_(std::move(where)) {}
  uint64_t position() const { return at_; }
  template <class T>
  T get(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, begin_ + at_, sizeof(T));
    at_ += sizeof(T);
    return v;
  }
  void skip(uint64_t bytes, const std::string& what) {
    need(bytes, what);
    at_ += bytes;
  }
  std::string string(const std::string& what, uint64_t max_bytes = UINT64_MAX) {
    const uint64_t n = get<uint64_t>(what + "'s length");
    if (n > max_bytes)
      fail(Status::Format, where_ + what + " is " + std::to_string(n) + " bytes long, more than " +
                               std::to_string(max_bytes));
    need(n, what);
    std::string s(reinterpret_cast<const char*>(begin_ + at_), n);
    at_ += n;
    return s;
  }
  uint64_t left() const { return size_ - at_; }
  [[noreturn]] void bad(const std::string& what) const { fail(Status::Format, where_ + what); }

 private:
  void need(uint64_t bytes, const std::string& what) const {
    if (bytes > size_ - at_)
      fail(Status::Format, where_ + "the file ends inside " + what + " (at byte " + std::to_string(at_) + ")");
  }
  const uint8_t* begin_;
  uint64_t size_;
  uint64_t at_ = 0;
  std::string where_;
};

// Bytes of one fixed-size metadata value type; 0 for string, array, unknown.
uint64_t value_bytes(uint32_t type) {
  switch (type) {
    case 0: case 1: case 7: return 1;   // u8, i8, bool
    case 2: case 3: return 2;           // u16, i16
    case 4: case 5: case 6: return 4;   // u32, i32, f32
    case 10: case 11: case 12: return 8;  // u64, i64, f64
    default: return 0;
  }
}

constexpr uint32_t kString = 8, kArray = 9, kU32 = 4;

// Reads past one metadata value of `type`, checking every length.
void skip_value(Cursor& c, uint32_t type, const std::string& key, int depth) {
  if (const uint64_t n = value_bytes(type)) return c.skip(n, "the value of '" + key + "'");
  if (type == kString) {
    c.string("the value of '" + key + "'");
    return;
  }
  if (type != kArray) c.bad("metadata '" + key + "' has value type " + std::to_string(type) + ", which GGUF does not define");
  if (depth >= kMaxArrayDepth) c.bad("metadata '" + key + "' nests arrays deeper than " + std::to_string(kMaxArrayDepth));
  const uint32_t element = c.get<uint32_t>("the element type of '" + key + "'");
  const uint64_t count = c.get<uint64_t>("the length of '" + key + "'");
  if (const uint64_t n = value_bytes(element)) {
    if (count > c.left() / n) c.bad("array '" + key + "' of " + std::to_string(count) + " elements runs past the end of the file");
    return c.skip(count * n, "array '" + key + "'");
  }
  // Strings and arrays take at least 8 bytes each: a count the file cannot
  // hold is refused before it is looped over.
  if (count > c.left() / 8) c.bad("array '" + key + "' of " + std::to_string(count) + " elements runs past the end of the file");
  for (uint64_t i = 0; i < count; ++i) skip_value(c, element, key, depth + 1);
}

}  // namespace

std::string ggml_type_name(uint32_t type) {
  const char* name = layout(type).name;
  return name ? name : "type " + std::to_string(type);
}

bool looks_like_gguf(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  uint32_t magic = 0;
  const bool got = ::read(fd, &magic, 4) == 4;
  ::close(fd);
  return got && magic == kMagic;
}

std::unique_ptr<GgufFile> GgufFile::open(const std::string& path) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  const std::string where = "GGUF '" + path + "': ";
  f->file_ = std::make_unique<MappedFile>(path, 24, where + "file is shorter than GGUF's 24-byte header");
  const uint8_t* bytes = f->file_->data();
  const uint64_t file_size = f->file_->size();
  Cursor c(bytes, file_size, where);

  if (c.get<uint32_t>("the magic") != kMagic) c.bad("does not start with \"GGUF\"");
  f->version_ = c.get<uint32_t>("the version");
  if (f->version_ == 1) fail(Status::Version, where + "GGUF version 1 (32-bit counts) is not read; versions 2 and 3 are");
  if (f->version_ != 2 && f->version_ != 3) {
    const bool swapped = f->version_ == 0x02000000 || f->version_ == 0x03000000;
    fail(Status::Version, where + (swapped ? std::string("is a big-endian GGUF file; only little-endian ones are read")
                                           : "GGUF version " + std::to_string(f->version_) + " is not read (2 and 3 are)"));
  }
  const uint64_t tensor_count = c.get<uint64_t>("the tensor count");
  const uint64_t kv_count = c.get<uint64_t>("the metadata count");
  if (tensor_count > kMaxTensors) c.bad("claims " + std::to_string(tensor_count) + " tensors, more than " + std::to_string(kMaxTensors));
  // Each key/value pair takes at least 13 bytes (key length, type, a byte).
  if (kv_count > c.left() / 13) c.bad("claims " + std::to_string(kv_count) + " metadata entries, more than the file can hold");

  uint64_t alignment = 32;  // GGUF's default
  std::set<std::string> keys;
  for (uint64_t i = 0; i < kv_count; ++i) {
    const uint64_t entry_start = c.position();
    const std::string key = c.string("metadata key " + std::to_string(i), kMaxNameBytes);
    if (!keys.insert(key).second) c.bad("metadata key '" + key + "' is listed twice");
    const uint32_t type = c.get<uint32_t>("the value type of '" + key + "'");
    if (key == "general.alignment") {
      if (type != kU32) c.bad("general.alignment has value type " + std::to_string(type) + ", not uint32");
      alignment = c.get<uint32_t>("general.alignment");
      if (alignment == 0 || (alignment & (alignment - 1)) != 0)
        c.bad("general.alignment " + std::to_string(alignment) + " is not a power of two");
    } else if (type == kString) {
      f->strings_[key] = c.string("the value of '" + key + "'");
    } else {
      skip_value(c, type, key, 0);
    }
    f->entries_.push_back({key, type, bytes + entry_start, c.position() - entry_start});
  }
  f->alignment_ = alignment;

  std::vector<uint64_t> offsets;
  for (uint64_t i = 0; i < tensor_count; ++i) {
    GgufTensor t;
    t.name = c.string("the name of tensor " + std::to_string(i), kMaxNameBytes);
    const std::string tw = "tensor '" + t.name + "': ";
    const uint32_t dims = c.get<uint32_t>("the dimension count of '" + t.name + "'");
    if (dims == 0 || dims > kMaxDims) c.bad(tw + std::to_string(dims) + " dimensions, expected 1 to 4");
    uint64_t elements = 1;
    for (uint32_t d = 0; d < dims; ++d) {
      t.dims.push_back(c.get<uint64_t>("the dimensions of '" + t.name + "'"));
      if (__builtin_mul_overflow(elements, t.dims.back(), &elements)) c.bad(tw + "its dimensions overflow");
    }
    t.type = c.get<uint32_t>("the type of '" + t.name + "'");
    offsets.push_back(c.get<uint64_t>("the offset of '" + t.name + "'"));
    const TypeLayout l = layout(t.type);
    if (l.block) {
      if (t.dims[0] % l.block != 0)
        c.bad(tw + "its first dimension " + std::to_string(t.dims[0]) + " is not a multiple of " + l.name +
              "'s block of " + std::to_string(l.block));
      if (__builtin_mul_overflow(elements / l.block, uint64_t(l.bytes), &t.bytes)) c.bad(tw + "its size overflows");
    }
    if (!f->by_name_.emplace(t.name, f->tensors_.size()).second) c.bad("tensor '" + t.name + "' is listed twice");
    f->tensors_.push_back(std::move(t));
  }

  const uint64_t data_start = (c.position() + alignment - 1) / alignment * alignment;
  if (!f->tensors_.empty() && data_start > file_size)
    c.bad("the tensor data would start at byte " + std::to_string(data_start) + ", past the end of the file");
  const uint64_t data_size = file_size - std::min(data_start, file_size);
  for (size_t i = 0; i < f->tensors_.size(); ++i) {
    GgufTensor& t = f->tensors_[i];
    const uint64_t offset = offsets[i];
    if (offset % alignment != 0)
      c.bad("tensor '" + t.name + "': offset " + std::to_string(offset) + " is not a multiple of the alignment " +
            std::to_string(alignment));
    if (!layout(t.type).block) continue;  // never read
    if (offset > data_size || t.bytes > data_size - offset)
      c.bad("tensor '" + t.name + "': its " + std::to_string(t.bytes) + " bytes at offset " + std::to_string(offset) +
            " run past the " + std::to_string(data_size) + "-byte data section");
    t.data = bytes + data_start + offset;
  }
  return f;
}

const GgufTensor* GgufFile::find(const std::string& name) const {
  const auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

uint64_t ggml_tensor_bytes(uint32_t type, const std::vector<uint64_t>& dims) {
  const TypeLayout l = layout(type);
  if (!l.block || dims.empty() || dims[0] % l.block != 0) return 0;
  uint64_t elements = 1;
  for (uint64_t d : dims)
    if (__builtin_mul_overflow(elements, d, &elements)) return 0;
  uint64_t bytes;
  return __builtin_mul_overflow(elements / l.block, uint64_t(l.bytes), &bytes) ? 0 : bytes;
}

void encode_gguf_row(GgmlType type, const uint8_t* codes, const uint16_t* scales, const int32_t* zeros, uint64_t k,
                     uint8_t* out, const std::string& where) {
  const uint32_t bits = type == GgmlType::Q4_0 ? 4 : type == GgmlType::Q5_0 ? 5 : type == GgmlType::Q8_0 ? 8 : 0;
  if (!bits || k % 32 != 0) fail(Status::Internal, where + ": no GGUF blocks of " + ggml_type_name(uint32_t(type)));
  const uint32_t qmax = (1u << bits) - 1, middle = 1u << (bits - 1);
  const uint64_t block_bytes = layout(uint32_t(type)).bytes;
  for (uint64_t j = 0; j < k / 32; ++j, out += block_bytes) {
    const uint8_t* c = codes + 32 * j;
    const int32_t z = zeros[j];
    if (z != int32_t(middle) && z != int32_t(qmax - middle))
      fail(Status::Unsupported, where + ", inputs " + std::to_string(32 * j) + ".." + std::to_string(32 * j + 31) +
                                    ": zero-point " + std::to_string(z) + "; " + ggml_type_name(uint32_t(type)) +
                                    " holds only zero-point " + std::to_string(middle) + " (or " +
                                    std::to_string(qmax - middle) + " with a negative scale)");
    const bool mirrored = z != int32_t(middle);  // s (c - z) = -s ((qmax - c) - middle)
    const uint16_t d = uint16_t(scales[j] | (mirrored ? 0x8000 : 0));
    std::memcpy(out, &d, 2);
    uint8_t q[32];
    for (int i = 0; i < 32; ++i) {
      if (c[i] > qmax) fail(Status::Internal, where + ": code " + std::to_string(c[i]) + " exceeds " + std::to_string(qmax));
      q[i] = uint8_t(mirrored ? qmax - c[i] : c[i]);
    }
    if (type == GgmlType::Q8_0) {
      for (int i = 0; i < 32; ++i) out[2 + i] = uint8_t(int8_t(int(q[i]) - 128));
      continue;
    }
    uint8_t* nibbles = out + (type == GgmlType::Q4_0 ? 2 : 6);
    for (int i = 0; i < 16; ++i) nibbles[i] = uint8_t((q[i] & 15) | (q[i + 16] & 15) << 4);
    if (type == GgmlType::Q5_0) {
      uint32_t high = 0;
      for (int i = 0; i < 32; ++i) high |= uint32_t(q[i] >> 4 & 1) << i;
      std::memcpy(out + 2, &high, 4);
    }
  }
}

uint64_t write_gguf(const std::string& path, const GgufFile& templ, const std::map<std::string, GgufReplacement>& replace,
                    int64_t file_type) {
  const std::string where = "GGUF '" + path + "': ";
  for (const auto& [name, r] : replace) {
    const GgufTensor* t = templ.find(name);
    if (!t) fail(Status::NotFound, where + "the template has no tensor '" + name + "' to replace");
    if (!ggml_tensor_bytes(uint32_t(r.type), t->dims))
      fail(Status::InvalidArgument, where + "tensor '" + name + "' cannot be " + ggml_type_name(uint32_t(r.type)) +
                                        " (its first dimension is " + std::to_string(t->dims[0]) + ")");
  }
  std::vector<uint32_t> types;
  std::vector<uint64_t> sizes, offsets;
  uint64_t offset = 0;
  const uint64_t align = templ.alignment();
  for (const GgufTensor& t : templ.tensors()) {
    const auto r = replace.find(t.name);
    types.push_back(r == replace.end() ? t.type : uint32_t(r->second.type));
    if (r == replace.end() && !t.data)
      fail(Status::Unsupported, where + "the template's tensor '" + t.name + "' has type " + ggml_type_name(t.type) +
                                    ", whose size woq does not know, so it cannot be copied");
    sizes.push_back(r == replace.end() ? t.bytes : ggml_tensor_bytes(types.back(), t.dims));
    offsets.push_back(offset);
    offset += (sizes.back() + align - 1) / align * align;
  }

  OutputFile out(path);
  const auto u32 = [&](uint32_t v) { out.write(&v, 4); };
  const auto u64 = [&](uint64_t v) { out.write(&v, 8); };
  const auto str = [&](const std::string& v) {
    u64(v.size());
    out.write(v.data(), v.size());
  };
  u32(kMagic);
  u32(3);
  u64(templ.tensors().size());
  u64(templ.entries().size());
  for (const GgufEntry& e : templ.entries()) {
    if (e.key == "general.file_type" && e.type == kU32 && file_type >= 0) {
      str(e.key);
      u32(kU32);
      u32(uint32_t(file_type));
    } else {
      out.write(e.raw, e.raw_bytes);
    }
  }
  for (size_t i = 0; i < templ.tensors().size(); ++i) {
    const GgufTensor& t = templ.tensors()[i];
    str(t.name);
    u32(uint32_t(t.dims.size()));
    for (uint64_t d : t.dims) u64(d);
    u32(types[i]);
    u64(offsets[i]);
  }
  out.zeros((align - out.written() % align) % align);
  std::vector<uint8_t> buffer;
  for (size_t i = 0; i < templ.tensors().size(); ++i) {
    const GgufTensor& t = templ.tensors()[i];
    const auto r = replace.find(t.name);
    if (r == replace.end()) {
      out.write(t.data, sizes[i]);
    } else {
      buffer.assign(sizes[i], 0);
      r->second.fill(buffer.data());
      out.write(buffer.data(), buffer.size());
    }
    out.zeros((align - sizes[i] % align) % align);
  }
  out.commit();
  return out.written();
}

}  // namespace woq::import
