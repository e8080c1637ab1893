// Reads and validates a .woq file (SPEC.md). open() checks the header, the
// header+directory checksum and every field, offset and size in the
// directory before anything else trusts them; chunk checksums are checked
// before a chunk is decoded. A Reader is immutable after open(): all const
// methods may run concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "format.h"

namespace woq::format {

struct ReaderLimits {
  uint64_t max_directory_bytes = 256ull << 20;
  uint64_t max_tensors = 1u << 20;
  uint64_t max_metadata = 65536;
  uint64_t max_tensor_bytes = 16ull << 30;  // decoded bytes of one tensor
  // Fuzzing only: skip checksums so mutated inputs reach the parser and
  // decoders behind them. Never exposed through the C API.
  bool fuzzing_skip_checksums = false;
};

// Verifies the checksum of one stored chunk (src, ref.stored_size bytes) and
// decodes it into dst, which holds exactly ref.raw_size bytes. Throws Error
// prefixed with `where`.
void decode_chunk_payload(const uint8_t* src, const ChunkRef& ref, uint8_t* dst, const std::string& where,
                          bool check_sum = true);

class Reader {
 public:
  // Memory-maps `path`. Throws Error.
  static std::unique_ptr<Reader> open(const std::string& path, const ReaderLimits& limits = {});
  // Takes ownership of an in-memory image. Throws Error.
  static std::unique_ptr<Reader> from_memory(std::vector<uint8_t> image, const ReaderLimits& limits = {});
  // Reads size bytes at data in place; they must outlive the Reader and not
  // change. Throws Error.
  static std::unique_ptr<Reader> borrow(const uint8_t* data, uint64_t size, const ReaderLimits& limits = {});
  ~Reader();
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  uint8_t version_major() const { return major_; }
  uint8_t version_minor() const { return minor_; }
  uint64_t file_size() const { return size_; }
  const std::vector<TensorRecord>& tensors() const { return tensors_; }
  const TensorRecord* find(const std::string& name) const;
  const std::vector<MetadataEntry>& metadata() const { return metadata_; }
  const MetadataEntry* find_metadata(const std::string& key) const;

  // The tensor's cols fp32 input scales (Argument error if it has none).
  void read_input_scales(const TensorRecord& tensor, float* dst) const;
  // The tensor's cols input indices (Argument error if it has none); not
  // checked to be a permutation here (the caller validates decoded data).
  void read_input_permutation(const TensorRecord& tensor, uint32_t* dst) const;
  // Decodes rows [row_begin, row_end) of one section of `tensor` into dst,
  // which holds (row_end - row_begin) * tensor.row_bytes(kind) bytes. Only
  // the chunks overlapping the range are read; they decode in parallel.
  void read_rows(const TensorRecord& tensor, SectionKind kind, uint64_t row_begin, uint64_t row_end,
                 uint8_t* dst, const ParallelFor& parallel = serial_for) const;

  // Checks every chunk's checksum and that it decodes to its raw size.
  void verify(const ParallelFor& parallel = serial_for) const;

 private:
  Reader() = default;
  void parse(const ReaderLimits& limits);
  void parse_image(const ReaderLimits& limits);
  void parse_directory(const uint8_t* dir, uint64_t size, uint64_t offset, const ReaderLimits& limits);
  void check_chunks();
  void decode_chunk(const TensorRecord& tensor, SectionKind kind, uint64_t chunk, uint8_t* dst) const;

  bool skip_checksums_ = false;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  void* mapping_ = nullptr;
  std::vector<uint8_t> owned_;
  uint8_t major_ = 0, minor_ = 0;
  uint64_t directory_offset_ = 0;
  std::vector<TensorRecord> tensors_;
  std::unordered_map<std::string, size_t> by_name_;
  std::vector<MetadataEntry> metadata_;
};

}  // namespace woq::format
