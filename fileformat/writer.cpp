#include "writer.h"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "bytes.h"

namespace woq::format {
namespace {

std::atomic<unsigned> g_temp_counter{0};

std::string errno_text() { return std::strerror(errno); }

struct EncodedChunk {
  std::vector<uint8_t> bytes;
  ChunkRef ref;
};

EncodedChunk encode_chunk(const uint8_t* raw, size_t size, int level) {
  EncodedChunk out;
  out.ref.raw_size = size;
  size_t bound = ZSTD_compressBound(size);
  out.bytes.resize(bound);
  size_t n = ZSTD_compress(out.bytes.data(), bound, raw, size, level);
  // Keep zstd only when it saves at least 3% (SPEC.md section 6).
  if (!ZSTD_isError(n) && n > 0 && n < size - size / 33) {
    out.bytes.resize(n);
    out.ref.codec = Codec::Zstd;
  } else {
    out.bytes.assign(raw, raw + size);
    out.ref.codec = Codec::Raw;
  }
  out.ref.stored_size = out.bytes.size();
  out.ref.checksum = XXH3_64bits(out.bytes.data(), out.bytes.size());
  return out;
}

}  // namespace

// The default target of 1 MiB per chunk of codes is large enough for zstd to
// work well and small enough that big tensors split for parallel decoding.
Writer::Writer(std::string path, int zstd_level, uint64_t target_chunk_bytes)
    : path_(std::move(path)), zstd_level_(zstd_level), target_chunk_bytes_(target_chunk_bytes) {
  if (path_.empty()) throw Error(ErrorKind::Argument, "output path is empty");
  temp_path_ = path_ + ".tmp." + std::to_string(getpid()) + "." + std::to_string(g_temp_counter++);
  fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error(ErrorKind::Io, "cannot create '" + temp_path_ + "': " + errno_text());
}

Writer::~Writer() {
  if (!done_) fail_cleanup();
}

void Writer::fail_cleanup() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  if (!temp_path_.empty()) ::unlink(temp_path_.c_str());
  done_ = true;
}

void Writer::write_at(uint64_t offset, const void* data, size_t size) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  while (size > 0) {
    ssize_t n = ::pwrite(fd_, p, size, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      std::string msg = "write to '" + temp_path_ + "' at byte " + std::to_string(offset) +
                        " failed: " + errno_text();
      fail_cleanup();
      throw Error(ErrorKind::Io, msg);
    }
    p += n;
    offset += static_cast<uint64_t>(n);
    size -= static_cast<size_t>(n);
  }
}

void Writer::add_tensor(TensorRecord record, const TensorArrays& arrays, const ParallelFor& parallel) {
  if (done_) throw Error(ErrorKind::Argument, "writer is already finished or failed");
  if (record.name.empty() || record.name.size() > kMaxNameLength ||
      record.name.find('\0') != std::string::npos)
    throw Error(ErrorKind::Argument, "tensor name must be 1.." + std::to_string(kMaxNameLength) +
                                         " bytes without NUL");
  if (names_.count(record.name)) throw Error(ErrorKind::Argument, "duplicate tensor name '" + record.name + "'");
  if (record.rows == 0 || record.cols == 0 || record.rows > kMaxDim || record.cols > kMaxDim ||
      record.rows * record.cols > kMaxElements || record.bits < 1 || record.bits > 8 ||
      record.group_size == 0 || record.cols % record.group_size != 0)
    throw Error(ErrorKind::Argument, "tensor '" + record.name + "' has an invalid shape or bit width");
  if (!arrays.codes || !arrays.scales || !arrays.zeros)
    throw Error(ErrorKind::Argument, "tensor '" + record.name + "' is missing codes, scales or zero-points");

  record.has_bias = arrays.bias != nullptr;
  record.has_input_scales = arrays.input_scales != nullptr;
  record.has_input_permutation = arrays.input_permutation != nullptr;
  if (record.has_input_scales && record.has_input_permutation)
    throw Error(ErrorKind::Argument, "tensor '" + record.name + "' has both input scales and an input permutation");
  uint64_t code_row = record.row_bytes(SectionKind::Codes);
  uint64_t rpc = target_chunk_bytes_ / code_row;
  record.rows_per_chunk = static_cast<uint32_t>(std::max<uint64_t>(1, std::min<uint64_t>(rpc, record.rows)));
  const uint64_t chunks = record.chunk_count();

  const uint8_t* base[kSectionKinds] = {reinterpret_cast<const uint8_t*>(arrays.codes),
                                        reinterpret_cast<const uint8_t*>(arrays.scales), arrays.zeros,
                                        reinterpret_cast<const uint8_t*>(arrays.bias)};
  const int kinds = record.has_bias ? 4 : 3;
  std::vector<EncodedChunk> encoded(chunks * kinds);
  parallel(encoded.size(), [&](size_t i) {
    auto kind = static_cast<SectionKind>(i % kinds);
    uint64_t chunk = i / kinds;
    uint64_t row_bytes = record.row_bytes(kind);
    encoded[i] = encode_chunk(base[i % kinds] + chunk * record.rows_per_chunk * row_bytes,
                              record.chunk_rows(chunk) * row_bytes, zstd_level_);
  });
  for (int k = 0; k < kSectionKinds; ++k) record.sections[k].clear();
  for (size_t i = 0; i < encoded.size(); ++i) {
    record.sections[i % kinds].push_back(append_chunk(encoded[i].ref, encoded[i].bytes));
    std::vector<uint8_t>().swap(encoded[i].bytes);
  }
  const auto add_per_column = [&](SectionKind kind, const void* values) {
    EncodedChunk c = encode_chunk(static_cast<const uint8_t*>(values), record.cols * 4, zstd_level_);
    record.sections[int(kind)].push_back(append_chunk(c.ref, c.bytes));
  };
  if (record.has_input_scales) add_per_column(SectionKind::InputScales, arrays.input_scales);
  if (record.has_input_permutation) add_per_column(SectionKind::InputPermutation, arrays.input_permutation);
  names_.insert(record.name);
  records_.push_back(std::move(record));
}

ChunkRef Writer::append_chunk(ChunkRef ref, const std::vector<uint8_t>& bytes) {
  ref.offset = end_;
  write_at(end_, bytes.data(), bytes.size());
  end_ = align_up(end_ + bytes.size());
  return ref;
}

void Writer::set_metadata(const MetadataEntry& entry) {
  if (done_) throw Error(ErrorKind::Argument, "writer is already finished or failed");
  if (entry.key.empty() || entry.key.size() > kMaxKeyLength || entry.key.find('\0') != std::string::npos)
    throw Error(ErrorKind::Argument, "metadata key must be 1.." + std::to_string(kMaxKeyLength) +
                                         " bytes without NUL");
  if (entry.type == MetadataType::String &&
      (entry.string_value.size() > kMaxStringValue || entry.string_value.find('\0') != std::string::npos))
    throw Error(ErrorKind::Argument, "metadata '" + entry.key + "': string values are at most 1 MiB, without NUL");
  metadata_[entry.key] = entry;
}

std::vector<uint8_t> encode_directory(const std::vector<TensorRecord>& records,
                                      const std::vector<MetadataEntry>& metadata) {
  ByteWriter w;
  w.u32(static_cast<uint32_t>(records.size()));
  w.u32(static_cast<uint32_t>(metadata.size()));
  for (const MetadataEntry& m : metadata) {
    size_t start = w.size();
    w.u32(0);  // entry_size, patched below
    w.u16(static_cast<uint16_t>(m.key.size()));
    w.u8(static_cast<uint8_t>(m.type));
    w.u8(0);
    w.bytes(m.key.data(), m.key.size());
    switch (m.type) {
      case MetadataType::String:
        w.u32(static_cast<uint32_t>(m.string_value.size()));
        w.bytes(m.string_value.data(), m.string_value.size());
        break;
      case MetadataType::Int:
        w.u32(8);
        w.u64(static_cast<uint64_t>(m.int_value));
        break;
      case MetadataType::Float:
        w.u32(8);
        w.f64(m.float_value);
        break;
    }
    w.patch_u32(start, static_cast<uint32_t>(w.size() - start));
  }
  for (const TensorRecord& r : records) {
    size_t start = w.size();
    w.u32(0);  // record_size, patched below
    w.u16(static_cast<uint16_t>(r.name.size()));
    w.u8(r.bits);
    w.u8(r.scheme);
    w.u8(r.method);
    w.u8(r.source_dtype);
    w.u8(1);  // scale_dtype f16
    w.u8(1);  // zero_dtype u8
    w.u8(0);  // packing: row bitstream
    w.u8(static_cast<uint8_t>((r.has_bias ? 1 : 0) | (r.has_input_scales ? 2 : 0) | (r.has_input_permutation ? 4 : 0)));
    w.u16(static_cast<uint16_t>(3 + r.has_bias + r.has_input_scales + r.has_input_permutation));
    w.u64(r.rows);
    w.u64(r.cols);
    w.u32(r.group_size);
    w.u32(r.rows_per_chunk);
    w.f64(r.max_abs_error);
    w.f64(r.rel_frobenius_error);
    w.f64(r.sqnr_db);
    w.bytes(r.name.data(), r.name.size());
    for (int k = 0; k < kSectionKinds; ++k) {
      if (r.sections[k].empty()) continue;
      w.u8(static_cast<uint8_t>(k));
      w.u8(0);
      w.u8(0);
      w.u8(0);
      w.u32(static_cast<uint32_t>(r.sections[k].size()));
      for (const ChunkRef& c : r.sections[k]) {
        w.u64(c.offset);
        w.u64(c.stored_size);
        w.u64(c.raw_size);
        w.u64(c.checksum);
        w.u8(static_cast<uint8_t>(c.codec));
        for (int i = 0; i < 7; ++i) w.u8(0);
      }
    }
    w.patch_u32(start, static_cast<uint32_t>(w.size() - start));
  }
  return w.take();
}

std::vector<uint8_t> encode_header(uint64_t directory_offset, const std::vector<uint8_t>& directory,
                                   uint8_t version_minor) {
  ByteWriter w;
  w.bytes(kMagic, sizeof kMagic);
  w.u8(kEndianLittle);
  w.u8(kVersionMajor);
  w.u8(version_minor);
  w.u8(0);
  w.u32(kHeaderSize);
  w.u64(directory_offset);
  w.u64(directory.size());
  w.u64(directory_offset + directory.size());
  w.u64(0);  // flags
  XXH3_state_t* state = XXH3_createState();
  if (!state) throw Error(ErrorKind::OutOfMemory, "cannot allocate checksum state");
  XXH3_64bits_reset(state);
  XXH3_64bits_update(state, w.data(), w.size());
  XXH3_64bits_update(state, directory.data(), directory.size());
  uint64_t checksum = XXH3_64bits_digest(state);
  XXH3_freeState(state);
  w.u64(checksum);
  w.u64(0);
  return w.take();
}

void Writer::finish() {
  if (done_) throw Error(ErrorKind::Argument, "writer is already finished or failed");
  std::vector<MetadataEntry> metadata;
  for (const auto& kv : metadata_) metadata.push_back(kv.second);
  std::vector<uint8_t> directory = encode_directory(records_, metadata);
  uint64_t directory_offset = end_;
  // The oldest minor version that can describe the content.
  uint8_t minor = kVersionMinorBase;
  for (const TensorRecord& r : records_) {
    if (r.has_input_scales) minor = std::max(minor, kVersionMinorInputScales);
    if (r.has_input_permutation) minor = std::max(minor, kVersionMinorInputPermutation);
  }
  std::vector<uint8_t> header = encode_header(directory_offset, directory, minor);
  write_at(directory_offset, directory.data(), directory.size());
  write_at(0, header.data(), header.size());
  // Gaps between chunks were never written: they read back as zero bytes.
  if (::fsync(fd_) != 0 || ::close(fd_) != 0) {
    fd_ = -1;
    std::string msg = "cannot flush '" + temp_path_ + "': " + errno_text();
    fail_cleanup();
    throw Error(ErrorKind::Io, msg);
  }
  fd_ = -1;
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    std::string msg = "cannot rename '" + temp_path_ + "' to '" + path_ + "': " + errno_text();
    fail_cleanup();
    throw Error(ErrorKind::Io, msg);
  }
  fsync_parent_directory(path_);
  done_ = true;
}

}  // namespace woq::format
