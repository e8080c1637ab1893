// Reads GGUF files, llama.cpp's model format (versions 2 and 3,
// little-endian): "GGUF", version, tensor and metadata counts, metadata
// key/value pairs, the tensor table (name, dimensions, ggml type, offset),
// then the tensors' data from an aligned start. Every count, string length,
// dimension, offset and size is validated before use.
#pragma once

#include <cstdint>
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

 private:
  GgufFile() = default;
  std::unique_ptr<MappedFile> file_;
  uint32_t version_ = 0;
  std::vector<GgufTensor> tensors_;
  std::map<std::string, size_t> by_name_;
  std::map<std::string, std::string> strings_;
};

// Whether `path` is a regular file that starts with GGUF's magic.
bool looks_like_gguf(const std::string& path);

}  // namespace woq::import
