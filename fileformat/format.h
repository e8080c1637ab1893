// The .woq file format: constants and the in-memory form of the directory.
// See SPEC.md; section numbers below refer to it. Depends on nothing but the
// C++ standard library (the reader/writer add zstd and xxhash).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "woq's file reader/writer assume a little-endian host"
#endif

namespace woq::format {

inline constexpr uint8_t kMagic[8] = {0x89, 'W', 'O', 'Q', 0x0D, 0x0A, 0x1A, 0x0A};
inline constexpr uint8_t kEndianLittle = 1;
inline constexpr uint8_t kVersionMajor = 1;
inline constexpr uint8_t kVersionMinor = 2;
// A file is written with the oldest minor version that describes it: 1.0
// without input scales or permutations, 1.1 with input scales (AWQ), 1.2
// with input permutations (act-order checkpoints).
inline constexpr uint8_t kVersionMinorBase = 0;
inline constexpr uint8_t kVersionMinorInputScales = 1;
inline constexpr uint8_t kVersionMinorInputPermutation = 2;
inline constexpr uint32_t kHeaderSize = 64;
inline constexpr uint64_t kAlign = 256;
inline constexpr uint64_t kDataStart = 256;
inline constexpr uint32_t kTensorRecordFixedSize = 64;
inline constexpr uint32_t kChunkRefSize = 40;
inline constexpr uint32_t kMaxNameLength = 1024;
inline constexpr uint32_t kMaxKeyLength = 256;
inline constexpr uint32_t kMaxStringValue = 1u << 20;
inline constexpr uint64_t kMaxDim = (1ull << 32) - 1;
inline constexpr uint64_t kMaxElements = 1ull << 40;

// Whether a string entry fits the metadata of a .woq file (what
// Writer::set_metadata accepts): other formats' keys and values may not.
inline bool fits_string_metadata(const std::string& key, const std::string& value) {
  return !key.empty() && key.size() <= kMaxKeyLength && key.find('\0') == std::string::npos &&
         value.size() <= kMaxStringValue && value.find('\0') == std::string::npos;
}

// Kinds of failure; the C API maps them onto woq_status.
enum class ErrorKind { Io, Format, Checksum, Version, Limit, OutOfMemory, Argument, NotFound };

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

// Kinds 0-3 are split into row-range chunks; the per-column kinds are one
// chunk of cols * 4 bytes each: InputScales (fp32 factors, format 1.1) and
// InputPermutation (u32 input indices, format 1.2).
enum class SectionKind : uint8_t { Codes = 0, Scales = 1, Zeros = 2, Bias = 3, InputScales = 4, InputPermutation = 5 };
inline constexpr int kSectionKinds = 6;
inline bool is_per_column(SectionKind kind) {
  return kind == SectionKind::InputScales || kind == SectionKind::InputPermutation;
}
const char* section_name(SectionKind kind);

enum class Codec : uint8_t { Raw = 0, Zstd = 1 };

enum class MetadataType : uint8_t { String = 1, Int = 2, Float = 3 };

struct MetadataEntry {
  std::string key;
  MetadataType type = MetadataType::String;
  std::string string_value;
  int64_t int_value = 0;
  double float_value = 0;
};

struct ChunkRef {
  uint64_t offset = 0;
  uint64_t stored_size = 0;
  uint64_t raw_size = 0;
  uint64_t checksum = 0;
  Codec codec = Codec::Raw;
};

// One tensor record (4.2) with its sections (4.3).
struct TensorRecord {
  std::string name;
  uint8_t bits = 0;
  uint8_t scheme = 0;        // 0 asymmetric, 1 symmetric
  uint8_t method = 0;        // 0 RTN
  uint8_t source_dtype = 0;  // 0 f32, 1 f16, 2 bf16
  bool has_bias = false;
  bool has_input_scales = false;  // flags bit 1: X is multiplied by them first
  // flags bit 2: stored input k is the model's input perm[k] (act-order)
  bool has_input_permutation = false;
  uint64_t rows = 0;
  uint64_t cols = 0;
  uint32_t group_size = 0;
  uint32_t rows_per_chunk = 0;
  double max_abs_error = 0;
  double rel_frobenius_error = 0;
  double sqnr_db = 0;
  std::array<std::vector<ChunkRef>, kSectionKinds> sections;

  uint64_t groups_per_row() const { return cols / group_size; }
  uint64_t words_per_row() const { return (cols * bits + 31) / 32; }
  // Raw bytes one row occupies in a section (5.2); 0 for the per-column kinds.
  uint64_t row_bytes(SectionKind kind) const;
  uint64_t chunk_count() const { return (rows + rows_per_chunk - 1) / rows_per_chunk; }
  uint64_t chunk_rows(uint64_t chunk) const;
  uint64_t stored_bytes() const;
  uint64_t raw_bytes() const;
};

// Runs body(i) for i in [0, count), possibly in parallel. The default is serial.
using ParallelFor = std::function<void(size_t count, const std::function<void(size_t)>& body)>;
void serial_for(size_t count, const std::function<void(size_t)>& body);

// Overflow-checked arithmetic: throws Error(Format) naming `what`.
uint64_t checked_add(uint64_t a, uint64_t b, const char* what);
uint64_t checked_mul(uint64_t a, uint64_t b, const char* what);
inline uint64_t align_up(uint64_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

}  // namespace woq::format
