#include "import/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "runtime/error.h"

namespace woq::import {

MappedFile::MappedFile(const std::string& path, uint64_t min_bytes, const std::string& too_short) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(Status::Io, "cannot open '" + path + "': " + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(Status::Io, "'" + path + "' is not a readable regular file");
  }
  const auto size = static_cast<uint64_t>(st.st_size);
  if (size < min_bytes || size == 0) {  // (mmap refuses an empty file)
    ::close(fd);
    fail(Status::Format, too_short);
  }
  void* m = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (m == MAP_FAILED) fail(Status::Io, "cannot map '" + path + "': " + std::strerror(errno));
  address_ = m;
  size_ = size;
}

MappedFile::MappedFile(MappedFile&& other) noexcept : address_(other.address_), size_(other.size_) {
  other.address_ = nullptr;
  other.size_ = 0;
}

MappedFile::~MappedFile() {
  if (address_) ::munmap(address_, size_);
}

}  // namespace woq::import
