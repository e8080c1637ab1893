// A file written whole or not at all: bytes go to a temporary file next to
// the destination, which commit() flushes to disk and renames into place.
// Destroyed without commit() (an error on the way), the temporary file is
// removed and whatever was at the destination stays untouched.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace woq::import {

class OutputFile {
 public:
  // Throws Error(Io) naming the temporary file when it cannot be created.
  explicit OutputFile(std::string path);
  ~OutputFile();
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;

  // Throw Error(Io) naming the destination on a failed write.
  void write(const void* bytes, uint64_t size);
  void zeros(uint64_t size);
  uint64_t written() const { return written_; }
  // Flushes, fsyncs, renames into place and fsyncs the directory.
  void commit();

 private:
  [[noreturn]] void failed(const std::string& what);
  std::string path_, temp_;
  FILE* file_ = nullptr;
  uint64_t written_ = 0;
};

}  // namespace woq::import
