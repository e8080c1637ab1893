// Reads the parts of an ONNX model (protobuf ModelProto) that the importer
// needs: the main graph's nodes (op type, domain, inputs, integer
// attributes), its initializers (raw_data, the typed data fields, or
// external data in a file next to the model) and the model's metadata.
// Every varint, length, dimension and offset is validated before use.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "import/mapped_file.h"

namespace woq::import {

// TensorProto.DataType values woq reads.
enum class OnnxType : int32_t {
  Float = 1, Uint8 = 2, Int8 = 3, Uint16 = 4, Int16 = 5, Int32 = 6, Int64 = 7,
  Float16 = 10, Double = 11, Uint32 = 12, Uint64 = 13, Bfloat16 = 16,
};

struct OnnxTensor {
  std::string name;
  int32_t type = 0;  // an OnnxType value, or another ONNX type
  std::vector<uint64_t> dims;
  uint64_t elements = 0;
  const uint8_t* data = nullptr;  // little-endian elements, elements * element size bytes
  std::vector<uint8_t> decoded;   // holds data when the file has typed fields instead of raw bytes

  // Element i as a number (float / integer types); throws Error(Format)
  // for other types or i out of range.
  double number_at(uint64_t i) const;
  bool is_float() const;
};

struct OnnxNode {
  std::string name, op_type, domain;
  std::vector<std::string> inputs;  // "" for an omitted optional input
  std::map<std::string, int64_t> ints;  // the node's integer attributes
};

class OnnxModel {
 public:
  // Maps and parses `path`; throws Error (Io, Format, Unsupported).
  static std::unique_ptr<OnnxModel> open(const std::string& path);
  OnnxModel(const OnnxModel&) = delete;
  OnnxModel& operator=(const OnnxModel&) = delete;

  const std::vector<OnnxNode>& nodes() const { return nodes_; }
  const std::vector<std::unique_ptr<OnnxTensor>>& initializers() const { return initializers_; }
  const OnnxTensor* find(const std::string& name) const;
  // producer_name, producer_version and metadata_props.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  int64_t ir_version() const { return ir_version_; }

 private:
  explicit OnnxModel(std::string path);
  std::string path_;
  std::unique_ptr<MappedFile> file_;
  std::map<std::string, std::unique_ptr<MappedFile>> external_;  // by location
  std::vector<OnnxNode> nodes_;
  std::vector<std::unique_ptr<OnnxTensor>> initializers_;
  std::map<std::string, const OnnxTensor*> by_name_;
  std::map<std::string, std::string> metadata_;
  int64_t ir_version_ = 0;

  friend class OnnxParser;
};

// True when `path` names an .onnx file (by its extension: protobuf has no magic).
bool looks_like_onnx(const std::string& path);

}  // namespace woq::import
