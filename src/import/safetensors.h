// Reads safetensors files (https://github.com/huggingface/safetensors):
// 8-byte little-endian header length, JSON header, raw little-endian data.
// Every offset and size is validated before use.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace woq::import {

struct SafeTensor {
  std::string name;
  std::string dtype;            // "F32", "F16", "BF16", "U8", "I32", ...
  std::vector<uint64_t> shape;
  const uint8_t* data = nullptr;
  uint64_t bytes = 0;
  uint64_t count = 0;  // the product of shape

  uint64_t elements() const { return count; }
  // Throws Error(Internal) naming the tensor unless i < elements().
  void check_index(uint64_t i) const;
  // Element i of an F32 / F16 / BF16 tensor as fp32 (exact; the mapping
  // may be unaligned). Throws Error(Format) naming the tensor for another
  // dtype, Error(Internal) for an index past its end.
  float float_at(uint64_t i) const;
  // All elements as fp32 (same rules).
  std::vector<float> to_f32() const;
};

// Bytes per element of a safetensors dtype, 0 if unknown.
uint64_t safetensors_dtype_size(const std::string& dtype);

class SafetensorsFile {
 public:
  // Memory-maps and validates `path`; throws woq::Error (Io / Format).
  static std::unique_ptr<SafetensorsFile> open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::vector<SafeTensor>& tensors() const { return tensors_; }  // in file order
  const SafeTensor* find(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  SafetensorsFile() = default;
  void* mapping_ = nullptr;
  uint64_t size_ = 0;
  std::vector<SafeTensor> tensors_;
  std::map<std::string, size_t> by_name_;  // index into tensors_
  std::map<std::string, std::string> metadata_;
};

// One tensor to write: dtype string, shape and its little-endian bytes.
struct SafeTensorOut {
  std::string name;
  std::string dtype;
  std::vector<uint64_t> shape;
  std::vector<uint8_t> bytes;
};

// Writes a safetensors file (tensors in the given order) to a temporary file
// and renames it into place. Throws woq::Error (Io, InvalidArgument).
void write_safetensors(const std::string& path, const std::vector<SafeTensorOut>& tensors,
                       const std::map<std::string, std::string>& metadata);

}  // namespace woq::import
