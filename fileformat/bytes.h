// Little-endian encoding helpers for the directory. ByteReader never reads
// past its end: every read is bounds-checked and throws Error(Format) naming
// the absolute file offset at fault.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "format.h"

namespace woq::format {

class ByteWriter {
 public:
  void u8(uint8_t v) { buf_.push_back(v); }
  void u16(uint16_t v) { bytes(&v, 2); }
  void u32(uint32_t v) { bytes(&v, 4); }
  void u64(uint64_t v) { bytes(&v, 8); }
  void f64(double v) { bytes(&v, 8); }
  void bytes(const void* p, size_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(p);
    buf_.insert(buf_.end(), b, b + n);
  }
  void patch_u32(size_t at, uint32_t v) { std::memcpy(buf_.data() + at, &v, 4); }
  size_t size() const { return buf_.size(); }
  const uint8_t* data() const { return buf_.data(); }
  std::vector<uint8_t> take() { return std::move(buf_); }

 private:
  std::vector<uint8_t> buf_;
};

class ByteReader {
 public:
  // `data` holds `size` bytes that start at absolute file offset `base`.
  ByteReader(const uint8_t* data, uint64_t size, uint64_t base) : data_(data), size_(size), base_(base) {}

  uint8_t u8(const char* what) { uint8_t v; read(&v, 1, what); return v; }
  uint16_t u16(const char* what) { uint16_t v; read(&v, 2, what); return v; }
  uint32_t u32(const char* what) { uint32_t v; read(&v, 4, what); return v; }
  uint64_t u64(const char* what) { uint64_t v; read(&v, 8, what); return v; }
  double f64(const char* what) { double v; read(&v, 8, what); return v; }
  std::string str(uint64_t n, const char* what) {
    need(n, what);
    std::string s(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return s;
  }
  void skip(uint64_t n, const char* what) { need(n, what); pos_ += n; }
  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }
  uint64_t file_offset() const { return base_ + pos_; }

 private:
  void need(uint64_t n, const char* what) const {
    if (n > size_ - pos_)
      throw Error(ErrorKind::Format, std::string("directory ends inside ") + what + " at byte " +
                                         std::to_string(base_ + pos_) + " (needs " + std::to_string(n) +
                                         " bytes, " + std::to_string(size_ - pos_) + " left)");
  }
  void read(void* out, uint64_t n, const char* what) {
    need(n, what);
    std::memcpy(out, data_ + pos_, n);
    pos_ += n;
  }

  const uint8_t* data_;
  uint64_t size_;
  uint64_t base_;
  uint64_t pos_ = 0;
};

}  // namespace woq::format
