// Reads safetensors files (https://github.com/huggingface/safetensors):
// 8-byte little-endian header length, JSON header, raw little-endian data;
// and sharded checkpoints made of several such files and a JSON index.
// Every offset, size and shard name is validated before use.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "import/mapped_file.h"

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

// One safetensors checkpoint: a single file, or the shards that a sharded
// checkpoint's index names (what Hugging Face writes for large models:
// model-00001-of-00004.safetensors ... plus model.safetensors.index.json).
class Safetensors {
 public:
  // `path` is one of:
  //  - a .safetensors file;
  //  - a sharded checkpoint's index (a name ending in ".json"), whose
  //    "weight_map" maps each tensor to a shard file in the index's directory;
  //  - a directory holding model.safetensors.index.json or model.safetensors,
  //    or else exactly one *.safetensors.index.json, or else exactly one
  //    *.safetensors.
  // Each shard is memory-mapped and validated; a tensor that the index puts
  // in a shard that does not hold it, or that two shards hold, is refused.
  // Throws woq::Error (Io / Format) naming the file.
  static std::unique_ptr<Safetensors> open(const std::string& path);
  Safetensors(const Safetensors&) = delete;
  Safetensors& operator=(const Safetensors&) = delete;

  // Shards in name order, each shard's tensors in file order.
  const std::vector<SafeTensor>& tensors() const { return tensors_; }
  const SafeTensor* find(const std::string& name) const;
  // Every shard's __metadata__ strings (the first shard's where they differ).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // The file that was read: the .safetensors file or the index.
  const std::string& path() const { return path_; }
  size_t shard_count() const { return mappings_.size(); }

 private:
  Safetensors() = default;
  // Maps one file and appends its tensors; returns its shard number.
  size_t add_shard(const std::string& file);
  void open_index(const std::string& index);

  std::string path_;
  std::vector<MappedFile> mappings_;  // one per shard
  std::vector<SafeTensor> tensors_;
  std::vector<size_t> shard_of_;  // per tensor
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
