// A whole file mapped read-only, for the importers' readers (safetensors,
// GGUF), which validate every offset into it before use.
#pragma once

#include <cstdint>
#include <string>

namespace woq::import {

class MappedFile {
 public:
  // Maps `path`; throws Error(Io) when it cannot be opened or mapped or is
  // not a regular file, Error(Format) with `too_short` when it holds fewer
  // than `min_bytes` bytes.
  MappedFile(const std::string& path, uint64_t min_bytes, const std::string& too_short);
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile& operator=(MappedFile&&) = delete;

  const uint8_t* data() const { return static_cast<const uint8_t*>(address_); }
  uint64_t size() const { return size_; }

 private:
  void* address_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace woq::import
