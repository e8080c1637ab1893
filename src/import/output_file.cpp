#include "import/output_file.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "fileformat/writer.h"
#include "runtime/error.h"

namespace woq::import {
namespace {
std::atomic<unsigned> g_temp_counter{0};  // two writers of one path in a process get distinct temporaries
}

OutputFile::OutputFile(std::string path) : path_(std::move(path)) {
  temp_ = path_ + ".tmp." + std::to_string(getpid()) + "." + std::to_string(g_temp_counter++);
  file_ = std::fopen(temp_.c_str(), "wbx");
  if (!file_) fail(Status::Io, "cannot create '" + temp_ + "': " + std::strerror(errno));
}

OutputFile::~OutputFile() {
  if (file_) {
    std::fclose(file_);
    std::remove(temp_.c_str());
  }
}

void OutputFile::failed(const std::string& what) {
  const std::string why = std::strerror(errno);
  std::fclose(file_);
  file_ = nullptr;
  std::remove(temp_.c_str());
  fail(Status::Io, "cannot " + what + " '" + path_ + "': " + why);
}

void OutputFile::write(const void* bytes, uint64_t size) {
  if (!file_) fail(Status::Internal, "write to '" + path_ + "' after it was committed or failed");
  if (size && std::fwrite(bytes, 1, size, file_) != size) failed("write");
  written_ += size;
}

void OutputFile::zeros(uint64_t size) {
  static const char kZeros[4096] = {};
  while (size) {
    const uint64_t n = size < sizeof kZeros ? size : sizeof kZeros;
    write(kZeros, n);
    size -= n;
  }
}

void OutputFile::commit() {
  if (!file_) fail(Status::Internal, "'" + path_ + "' was already committed or failed");
  if (std::fflush(file_) != 0 || ::fsync(fileno(file_)) != 0) failed("write");
  if (std::fclose(file_) != 0) {
    file_ = nullptr;  // closed either way
    const std::string why = std::strerror(errno);
    std::remove(temp_.c_str());
    fail(Status::Io, "cannot write '" + path_ + "': " + why);
  }
  file_ = nullptr;
  if (std::rename(temp_.c_str(), path_.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    std::remove(temp_.c_str());
    fail(Status::Io, "cannot rename '" + temp_ + "' to '" + path_ + "': " + why);
  }
  woq::format::fsync_parent_directory(path_);
}

}  // namespace woq::import
