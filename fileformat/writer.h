// Writes a .woq file (SPEC.md) to a temporary file and renames it into place.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "format.h"

namespace woq::format {

// Canonical arrays of one tensor, laid out as SPEC.md 5.1/5.2 for all rows.
struct TensorArrays {
  const uint32_t* codes = nullptr;
  const uint16_t* scales = nullptr;
  const uint8_t* zeros = nullptr;
  const float* bias = nullptr;          // optional: rows values
  const float* input_scales = nullptr;  // optional: cols values (format 1.1)
  // optional: cols input indices, a permutation of 0..cols-1 (format 1.2)
  const uint32_t* input_permutation = nullptr;
};

class Writer {
 public:
  // Creates "<path>.tmp.<pid>.<n>" at once; throws Error(Io) if it cannot.
  // Chunks of codes hold about target_chunk_bytes (whole rows, at least one).
  explicit Writer(std::string path, int zstd_level = 3, uint64_t target_chunk_bytes = 1u << 20);
  ~Writer();  // discards the temporary file unless finish() succeeded
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  // Compresses and appends one tensor's chunks. `record` supplies everything
  // but rows_per_chunk and sections, which the writer fills in.
  void add_tensor(TensorRecord record, const TensorArrays& arrays,
                  const ParallelFor& parallel = serial_for);
  void set_metadata(const MetadataEntry& entry);
  // Writes directory and header, syncs, renames into place.
  void finish();
  bool has_tensor(const std::string& name) const { return names_.count(name) != 0; }

 private:
  void write_at(uint64_t offset, const void* data, size_t size);
  // Writes a chunk's stored bytes at the next aligned position; returns ref
  // with that offset.
  ChunkRef append_chunk(ChunkRef ref, const std::vector<uint8_t>& bytes);
  void fail_cleanup();

  std::string path_;
  std::string temp_path_;
  int fd_ = -1;
  int zstd_level_;
  uint64_t target_chunk_bytes_;
  bool done_ = false;
  uint64_t end_ = kDataStart;  // next aligned write position
  std::vector<TensorRecord> records_;
  std::set<std::string> names_;
  std::map<std::string, MetadataEntry> metadata_;
};

// Serializes header / directory; shared with tests that forge files.
std::vector<uint8_t> encode_directory(const std::vector<TensorRecord>& records,
                                      const std::vector<MetadataEntry>& metadata);
std::vector<uint8_t> encode_header(uint64_t directory_offset, const std::vector<uint8_t>& directory,
                                   uint8_t version_minor = kVersionMinorBase);

// Makes a rename into `path` durable: fsyncs the directory that holds it
// (best effort: a directory that cannot be opened is left as it is). Inline
// so that the importers' writers (src/import/output_file.cpp) share it
// without linking the format library.
inline void fsync_parent_directory(const std::string& path) {
  const std::string dir = path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/') + 1);
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace woq::format
