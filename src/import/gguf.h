// Reads GGUF files, llama.cpp's model format (versions 2 and 3,
// little-endian): "GGUF", version, tensor and metadata counts, metadata
// key/value pairs, the tensor table (name, dimensions, ggml type, offset),
// then the tensors' data from an aligned start. Every count, string length,
// dimension, offset and size is validated before use.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "import/mapped_file.h"

namespace woq::import {

// ggml's tensor type numbers that woq names (the format has more).
enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15, BF16 = 30,
};

// "Q4_0", "F16", ...; "type N" for a number woq does not know.
std::string ggml_type_name(uint32_t type);

struct GgufTensor {
  std::string name;
  std::vector<uint64_t> dims;  // ggml order: dims[0] is the contiguous one (a matrix's inputs)
  uint32_t type = 0;           // a GgmlType value, or another ggml type
  const uint8_t* data = nullptr;  // nullptr for a type whose size woq does not know
  uint64_t bytes = 0;
};

// One metadata key/value pair as the file holds it: `raw` spans the whole
// entry (key length, key, value type, value), for copying it unchanged.
struct GgufEntry {
  std::string key;
  uint32_t type = 0;
  const uint8_t* raw = nullptr;
  uint64_t raw_bytes = 0;
};

class GgufFile {
 public:
  // Memory-maps and validates `path`; throws woq::Error (Io, Format, Version).
  static std::unique_ptr<GgufFile> open(const std::string& path);
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  uint32_t version() const { return version_; }
  const std::vector<GgufTensor>& tensors() const { return tensors_; }  // in table order
  const GgufTensor* find(const std::string& name) const;
  // The metadata values that are strings (general.architecture, ...).
  const std::map<std::string, std::string>& strings() const { return strings_; }
  const std::vector<GgufEntry>& entries() const { return entries_; }  // in file order
  uint64_t alignment() const { return alignment_; }  // of the tensor data

 private:
  GgufFile() = default;
  std::unique_ptr<MappedFile> file_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::vector<GgufEntry> entries_;
  std::vector<GgufTensor> tensors_;
  std::map<std::string, size_t> by_name_;
  std::map<std::string, std::string> strings_;
};

// Whether `path` is a regular file that starts with GGUF's magic.
bool looks_like_gguf(const std::string& path);

// Q4_0, Q5_0 and Q8_0: the types whose blocks are a scale and an integer
// zero-point per group, which `woq import` brings in exactly.
bool ggml_type_imports_exactly(uint32_t type);
// F32, F16 and BF16.
bool ggml_type_is_float(uint32_t type);
// Whether gguf_floats decodes tensors of `type`: F32, F16, BF16, and the
// block types Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and Q2_K .. Q6_K.
bool gguf_has_floats(uint32_t type);
// The tensor's values as fp32 (gguf_floats.cpp): block types dequantized
// exactly as ggml's dequantize_row_* does. Throws Error(Format) naming it
// for a type gguf_has_floats refuses.
std::vector<float> gguf_floats(const GgufTensor& t);

// Bytes of a tensor of `type` with `dims` (ggml order); 0 for a type whose
// size woq does not know or dims[0] that is not a whole number of blocks.
uint64_t ggml_tensor_bytes(uint32_t type, const std::vector<uint64_t>& dims);

// One row of a woq matrix as llama.cpp's blocks of 32 inputs (Q4_0, Q5_0 or
// Q8_0, for 4-, 5- or 8-bit codes): `codes` its K codes, `scales` and
// `zeros` one per block. A block's zero-point must be 2^(b-1) (stored with
// d = scale) or 2^b - 1 - 2^(b-1) (what a GGUF block with a negative d
// imports as: stored with d = -scale and its codes mirrored), so the block
// holds exactly the same weights; any other zero-point throws
// Error(Unsupported) naming `where` and the block. `out` receives
// ggml_tensor_bytes(type, {K}) bytes.
void encode_gguf_row(GgmlType type, const uint8_t* codes, const uint16_t* scales, const int32_t* zeros, uint64_t k,
                     uint8_t* out, const std::string& where);

// A tensor that write_gguf puts in place of the template's tensor of that
// name: a new type with the same dimensions; `fill` writes its
// ggml_tensor_bytes(type, dims) bytes.
struct GgufReplacement {
  GgmlType type;
  std::function<void(uint8_t* out)> fill;
};

// Writes a GGUF v3 file (a temporary file renamed into place) holding the
// template's metadata, each entry copied byte for byte except a u32
// general.file_type, set to `file_type` when that is not negative, and the
// template's tensors in its order and alignment, those in `replace` taking
// their replacement's type and bytes. A template tensor of a type whose size
// woq does not know can only be replaced. Returns the bytes written.
uint64_t write_gguf(const std::string& path, const GgufFile& templ, const std::map<std::string, GgufReplacement>& replace,
                    int64_t file_type);

}  // namespace woq::import
