#include "reader.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "bytes.h"

namespace woq::format {
namespace {

[[noreturn]] void fail(ErrorKind kind, const std::string& msg) { throw Error(kind, msg); }

std::string at(uint64_t offset) { return " at byte " + std::to_string(offset); }

std::string hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// A name from the file as text safe to put in a message: control bytes,
// NUL included, become \xNN.
std::string printable(const std::string& name) {
  std::string out;
  for (unsigned char c : name) {
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += char(c);
    }
  }
  return out;
}

}  // namespace

std::unique_ptr<Reader> Reader::open(const std::string& path, const ReaderLimits& limits) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(ErrorKind::Io, "cannot open '" + path + "': " + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    std::string msg = "cannot stat '" + path + "': " + std::strerror(errno);
    ::close(fd);
    fail(ErrorKind::Io, msg);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(ErrorKind::Io, "'" + path + "' is not a regular file");
  }
  std::unique_ptr<Reader> r(new Reader());
  r->size_ = static_cast<uint64_t>(st.st_size);
  if (r->size_ < kHeaderSize) {
    ::close(fd);
    fail(ErrorKind::Format, "'" + path + "' is " + std::to_string(r->size_) +
                                " bytes, shorter than the 64-byte .woq header");
  }
  void* m = ::mmap(nullptr, r->size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (m == MAP_FAILED) fail(ErrorKind::Io, "cannot map '" + path + "': " + std::strerror(errno));
  r->mapping_ = m;
  r->data_ = static_cast<const uint8_t*>(m);
  try {
    r->parse(limits);
  } catch (const Error& e) {
    throw Error(e.kind(), "'" + path + "': " + e.what());
  }
  return r;
}

std::unique_ptr<Reader> Reader::from_memory(std::vector<uint8_t> image, const ReaderLimits& limits) {
  std::unique_ptr<Reader> r(new Reader());
  r->owned_ = std::move(image);
  r->data_ = r->owned_.data();
  r->size_ = r->owned_.size();
  r->parse_image(limits);
  return r;
}

std::unique_ptr<Reader> Reader::borrow(const uint8_t* data, uint64_t size, const ReaderLimits& limits) {
  std::unique_ptr<Reader> r(new Reader());
  r->data_ = data;
  r->size_ = size;
  r->parse_image(limits);
  return r;
}

// An image has no path to name, so its messages say what it is.
void Reader::parse_image(const ReaderLimits& limits) {
  if (size_ < kHeaderSize)
    fail(ErrorKind::Format, "in-memory image is " + std::to_string(size_) +
                                " bytes, shorter than the 64-byte .woq header");
  try {
    parse(limits);
  } catch (const Error& e) {
    throw Error(e.kind(), std::string("in-memory image: ") + e.what());
  }
}

Reader::~Reader() {
  if (mapping_) ::munmap(mapping_, size_);
}

void Reader::parse(const ReaderLimits& limits) {
  if (std::memcmp(data_, kMagic, sizeof kMagic) != 0) fail(ErrorKind::Format, "not a .woq file (bad magic at byte 0)");
  ByteReader h(data_ + 8, kHeaderSize - 8, 8);
  uint8_t endian = h.u8("endianness");
  if (endian != kEndianLittle)
    fail(ErrorKind::Format, "unknown endianness " + std::to_string(endian) + at(8) + " (only 1 = little)");
  major_ = h.u8("version_major");
  minor_ = h.u8("version_minor");
  if (major_ != kVersionMajor)
    fail(ErrorKind::Version, "file format version " + std::to_string(major_) + "." + std::to_string(minor_) +
                                 " is not readable by this reader (major version 1 only)");
  const bool newer = minor_ > kVersionMinor;
  uint8_t reserved = h.u8("reserved");
  uint32_t header_size = h.u32("header_size");
  uint64_t dir_offset = h.u64("directory_offset");
  uint64_t dir_size = h.u64("directory_size");
  uint64_t file_size = h.u64("file_size");
  uint64_t flags = h.u64("flags");
  uint64_t checksum = h.u64("checksum");
  uint64_t reserved2 = h.u64("reserved");
  if (newer ? (header_size < kHeaderSize || header_size > 4096) : header_size != kHeaderSize)
    fail(ErrorKind::Format, "header_size " + std::to_string(header_size) + at(12) + " is invalid");
  if (!newer && (reserved != 0 || flags != 0 || reserved2 != 0))
    fail(ErrorKind::Format, "reserved header fields are not zero (bytes 11, 40, 56)");
  if (file_size != size_)
    fail(ErrorKind::Format, "header says file_size " + std::to_string(file_size) + at(32) + " but the file has " +
                                std::to_string(size_) + " bytes (truncated or extended)");
  if (dir_offset % kAlign != 0 || dir_offset < kDataStart || dir_offset < header_size)
    fail(ErrorKind::Format, "directory_offset " + std::to_string(dir_offset) + at(16) + " is not a valid aligned offset");
  uint64_t dir_end;
  if (__builtin_add_overflow(dir_offset, dir_size, &dir_end) || dir_end != size_)
    fail(ErrorKind::Format, "directory [" + std::to_string(dir_offset) + ", +" + std::to_string(dir_size) +
                                ") does not end at the end of the file (" + std::to_string(size_) + ")");
  if (dir_size > limits.max_directory_bytes)
    fail(ErrorKind::Limit, "directory of " + std::to_string(dir_size) + " bytes exceeds the limit of " +
                               std::to_string(limits.max_directory_bytes));
  XXH3_state_t* state = XXH3_createState();
  if (!state) fail(ErrorKind::OutOfMemory, "cannot allocate checksum state");
  XXH3_64bits_reset(state);
  XXH3_64bits_update(state, data_, 48);
  XXH3_64bits_update(state, data_ + dir_offset, dir_size);
  uint64_t actual = XXH3_64bits_digest(state);
  XXH3_freeState(state);
  skip_checksums_ = limits.fuzzing_skip_checksums;
  if (actual != checksum && !skip_checksums_)
    fail(ErrorKind::Checksum, "header+directory checksum mismatch: stored " + hex(checksum) + at(48) +
                                  ", computed " + hex(actual));
  directory_offset_ = dir_offset;
  parse_directory(data_ + dir_offset, dir_size, dir_offset, limits);
  check_chunks();
}

void Reader::parse_directory(const uint8_t* dir, uint64_t size, uint64_t offset, const ReaderLimits& limits) {
  const bool newer = minor_ > kVersionMinor;
  ByteReader r(dir, size, offset);
  uint32_t tensor_count = r.u32("tensor_count");
  uint32_t metadata_count = r.u32("metadata_count");
  if (tensor_count > limits.max_tensors)
    fail(ErrorKind::Limit, std::to_string(tensor_count) + " tensors exceed the limit of " + std::to_string(limits.max_tensors));
  if (metadata_count > limits.max_metadata)
    fail(ErrorKind::Limit, std::to_string(metadata_count) + " metadata entries exceed the limit of " +
                               std::to_string(limits.max_metadata));
  // Each entry needs at least 8 bytes; refuse counts the directory cannot hold
  // before reserving memory for them.
  if ((uint64_t(tensor_count) + metadata_count) * 8 > r.remaining())
    fail(ErrorKind::Format, "directory of " + std::to_string(size) + " bytes cannot hold " +
                                std::to_string(tensor_count) + " tensors and " + std::to_string(metadata_count) +
                                " metadata entries");

  std::unordered_map<std::string, size_t> keys;
  for (uint32_t i = 0; i < metadata_count; ++i) {
    uint64_t start = r.file_offset();
    uint32_t entry_size = r.u32("metadata entry_size");
    if (entry_size < 12 || entry_size - 4 > r.remaining())
      fail(ErrorKind::Format, "metadata entry " + std::to_string(i) + at(start) + " has invalid entry_size " +
                                  std::to_string(entry_size));
    ByteReader e(dir + (start - offset) + 4, entry_size - 4, start + 4);
    r.skip(entry_size - 4, "metadata entry");
    uint16_t key_len = e.u16("metadata key_length");
    uint8_t type = e.u8("metadata type");
    e.u8("metadata reserved");
    if (key_len == 0 || key_len > kMaxKeyLength)
      fail(ErrorKind::Format, "metadata key_length " + std::to_string(key_len) + at(start + 4) + " is not in 1..256");
    MetadataEntry m;
    m.key = e.str(key_len, "metadata key");
    if (m.key.find('\0') != std::string::npos) fail(ErrorKind::Format, "metadata key" + at(start + 8) + " contains NUL");
    uint32_t value_len = e.u32("metadata value_length");
    if (type == uint8_t(MetadataType::String)) {
      if (value_len > kMaxStringValue)
        fail(ErrorKind::Format, "metadata '" + printable(m.key) + "' string of " + std::to_string(value_len) + " bytes exceeds 1 MiB");
      m.type = MetadataType::String;
      m.string_value = e.str(value_len, "metadata string value");
      if (m.string_value.find('\0') != std::string::npos)
        fail(ErrorKind::Format, "metadata '" + printable(m.key) + "' string contains NUL");
    } else if (type == uint8_t(MetadataType::Int) || type == uint8_t(MetadataType::Float)) {
      if (value_len != 8)
        fail(ErrorKind::Format, "metadata '" + printable(m.key) + "' number has value_length " + std::to_string(value_len));
      m.type = static_cast<MetadataType>(type);
      if (m.type == MetadataType::Int) m.int_value = static_cast<int64_t>(e.u64("metadata int"));
      else m.float_value = e.f64("metadata float");
    } else if (newer) {
      continue;  // a type from a newer minor version: skip the entry
    } else {
      fail(ErrorKind::Format, "metadata '" + printable(m.key) + "' has unknown type " + std::to_string(type) + at(start + 6));
    }
    if (!newer && e.remaining() != 0)
      fail(ErrorKind::Format, "metadata '" + printable(m.key) + "' entry_size" + at(start) + " exceeds its content");
    if (!keys.emplace(m.key, metadata_.size()).second)
      fail(ErrorKind::Format, "duplicate metadata key '" + printable(m.key) + "'" + at(start));
    metadata_.push_back(std::move(m));
  }

  tensors_.reserve(tensor_count);
  for (uint32_t i = 0; i < tensor_count; ++i) {
    uint64_t start = r.file_offset();
    uint32_t record_size = r.u32("tensor record_size");
    if (record_size < kTensorRecordFixedSize || record_size - 4 > r.remaining())
      fail(ErrorKind::Format, "tensor record " + std::to_string(i) + at(start) + " has invalid record_size " +
                                  std::to_string(record_size));
    ByteReader t(dir + (start - offset) + 4, record_size - 4, start + 4);
    r.skip(record_size - 4, "tensor record");
    TensorRecord rec;
    uint16_t name_len = t.u16("name_length");
    rec.bits = t.u8("bits");
    rec.scheme = t.u8("scheme");
    rec.method = t.u8("method");
    rec.source_dtype = t.u8("source_dtype");
    uint8_t scale_dtype = t.u8("scale_dtype");
    uint8_t zero_dtype = t.u8("zero_dtype");
    uint8_t packing = t.u8("packing");
    uint8_t flags = t.u8("flags");
    uint16_t section_count = t.u16("section_count");
    rec.rows = t.u64("rows");
    rec.cols = t.u64("cols");
    rec.group_size = t.u32("group_size");
    rec.rows_per_chunk = t.u32("rows_per_chunk");
    rec.max_abs_error = t.f64("max_abs_error");
    rec.rel_frobenius_error = t.f64("rel_frobenius_error");
    rec.sqnr_db = t.f64("sqnr_db");
    if (name_len == 0 || name_len > kMaxNameLength)
      fail(ErrorKind::Format, "tensor record " + std::to_string(i) + at(start) + ": name_length " +
                                  std::to_string(name_len) + " is not in 1..1024");
    rec.name = t.str(name_len, "tensor name");
    const std::string where = "tensor '" + printable(rec.name) + "' (record" + at(start) + "): ";
    if (rec.name.find('\0') != std::string::npos) fail(ErrorKind::Format, where + "name contains NUL");
    if (rec.bits < 1 || rec.bits > 8) fail(ErrorKind::Format, where + "bits " + std::to_string(rec.bits) + " not in 1..8");
    if (rec.scheme > 1) fail(ErrorKind::Format, where + "unknown scheme " + std::to_string(rec.scheme));
    if (rec.source_dtype > 2) fail(ErrorKind::Format, where + "unknown source_dtype " + std::to_string(rec.source_dtype));
    if (scale_dtype != 1 || zero_dtype != 1 || packing != 0)
      fail(ErrorKind::Format, where + "unknown scale_dtype/zero_dtype/packing " + std::to_string(scale_dtype) + "/" +
                                  std::to_string(zero_dtype) + "/" + std::to_string(packing));
    // Unknown flags are refused at any minor version: a flag may change what
    // the data means (bit 1: input scales must be applied; bit 2: X must be
    // permuted).
    if ((flags & ~7u) != 0) fail(ErrorKind::Format, where + "unknown flags " + std::to_string(flags));
    rec.has_bias = (flags & 1u) != 0;
    rec.has_input_scales = (flags & 2u) != 0;
    rec.has_input_permutation = (flags & 4u) != 0;
    if (rec.has_input_scales && rec.has_input_permutation)
      fail(ErrorKind::Format, where + "flags set both input scales (bit 1) and an input permutation (bit 2)");
    if (rec.has_input_permutation && minor_ < kVersionMinorInputPermutation)
      fail(ErrorKind::Format, where + "an input permutation (flags bit 2) needs format version 1.2, the file says 1." +
                                  std::to_string(minor_));
    if (rec.rows == 0 || rec.cols == 0 || rec.rows > kMaxDim || rec.cols > kMaxDim)
      fail(ErrorKind::Format, where + "shape " + std::to_string(rec.rows) + " x " + std::to_string(rec.cols) +
                                  " has a dimension outside 1..2^32-1");
    if (rec.rows * rec.cols > kMaxElements)
      fail(ErrorKind::Format, where + "shape " + std::to_string(rec.rows) + " x " + std::to_string(rec.cols) +
                                  " exceeds 2^40 elements");
    if (rec.group_size == 0 || rec.cols % rec.group_size != 0)
      fail(ErrorKind::Format, where + "group_size " + std::to_string(rec.group_size) + " does not divide cols " +
                                  std::to_string(rec.cols));
    if (rec.rows_per_chunk == 0) fail(ErrorKind::Format, where + "rows_per_chunk is 0");
    const uint64_t chunks = rec.chunk_count();
    bool seen[kSectionKinds] = {};
    for (uint16_t s = 0; s < section_count; ++s) {
      uint64_t section_at = t.file_offset();
      uint8_t kind = t.u8("section kind");
      t.skip(3, "section reserved");
      uint32_t chunk_count = t.u32("chunk_count");
      bool known = kind < kSectionKinds;
      if (!known && !newer) fail(ErrorKind::Format, where + "unknown section kind " + std::to_string(kind) + at(section_at));
      if (known && seen[kind])
        fail(ErrorKind::Format, where + "section " + section_name(SectionKind(kind)) + " repeated" + at(section_at));
      const bool per_column = known && is_per_column(SectionKind(kind));
      const uint64_t expect_chunks = per_column ? 1 : chunks;
      if (known && chunk_count != expect_chunks)
        fail(ErrorKind::Format, where + "section kind " + std::to_string(kind) + " has " + std::to_string(chunk_count) +
                                    " chunks, expected " + std::to_string(expect_chunks));
      if (uint64_t(chunk_count) * kChunkRefSize > t.remaining())
        fail(ErrorKind::Format, where + "section" + at(section_at) + " runs past its record");
      std::vector<ChunkRef> refs;
      if (known) refs.reserve(chunk_count);
      for (uint32_t c = 0; c < chunk_count; ++c) {
        uint64_t ref_at = t.file_offset();
        ChunkRef ref;
        ref.offset = t.u64("chunk offset");
        ref.stored_size = t.u64("chunk stored_size");
        ref.raw_size = t.u64("chunk raw_size");
        ref.checksum = t.u64("chunk checksum");
        uint8_t codec = t.u8("chunk codec");
        t.skip(7, "chunk reserved");
        if (!known) continue;
        auto sk = static_cast<SectionKind>(kind);
        const std::string chunk_where = where + section_name(sk) + " chunk " + std::to_string(c) + " (ref" + at(ref_at) + "): ";
        uint64_t expect = per_column ? rec.cols * 4 : rec.chunk_rows(c) * rec.row_bytes(sk);  // rows*cols <= 2^40
        if (ref.raw_size != expect)
          fail(ErrorKind::Format, chunk_where + "raw_size " + std::to_string(ref.raw_size) + " but the shape needs " +
                                      std::to_string(expect));
        if (codec > 1) fail(ErrorKind::Format, chunk_where + "unknown codec " + std::to_string(codec));
        ref.codec = static_cast<Codec>(codec);
        if (ref.codec == Codec::Raw && ref.stored_size != ref.raw_size)
          fail(ErrorKind::Format, chunk_where + "raw chunk stored_size " + std::to_string(ref.stored_size) +
                                      " != raw_size " + std::to_string(ref.raw_size));
        if (ref.codec == Codec::Zstd && (ref.stored_size == 0 || ref.stored_size >= ref.raw_size))
          fail(ErrorKind::Format, chunk_where + "zstd chunk stored_size " + std::to_string(ref.stored_size) +
                                      " is not in 1..raw_size-1");
        uint64_t end;
        if (ref.offset % kAlign != 0 || ref.offset < kDataStart ||
            __builtin_add_overflow(ref.offset, ref.stored_size, &end) || end > directory_offset_)
          fail(ErrorKind::Format, chunk_where + "range [" + std::to_string(ref.offset) + ", +" +
                                      std::to_string(ref.stored_size) + ") is unaligned or outside the data region [256, " +
                                      std::to_string(directory_offset_) + ")");
        refs.push_back(ref);
      }
      if (known) {
        seen[kind] = true;
        rec.sections[kind] = std::move(refs);
      }
    }
    if (!seen[0] || !seen[1] || !seen[2])
      fail(ErrorKind::Format, where + "codes, scales or zero-points section missing");
    if (seen[3] != rec.has_bias) fail(ErrorKind::Format, where + "bias section and has-bias flag disagree");
    if (seen[4] != rec.has_input_scales)
      fail(ErrorKind::Format, where + "input-scales section and flag bit 1 disagree");
    if (seen[5] != rec.has_input_permutation)
      fail(ErrorKind::Format, where + "input-permutation section and flag bit 2 disagree");
    if (!newer && t.remaining() != 0)
      fail(ErrorKind::Format, where + "record_size exceeds its content by " + std::to_string(t.remaining()) + " bytes");
    if (rec.raw_bytes() > limits.max_tensor_bytes)
      fail(ErrorKind::Limit, where + "decodes to " + std::to_string(rec.raw_bytes()) + " bytes, over the limit of " +
                                 std::to_string(limits.max_tensor_bytes));
    if (!by_name_.emplace(rec.name, tensors_.size()).second)
      fail(ErrorKind::Format, "duplicate tensor name '" + printable(rec.name) + "'" + at(start));
    tensors_.push_back(std::move(rec));
  }
  if (r.remaining() != 0)
    fail(ErrorKind::Format, "directory has " + std::to_string(r.remaining()) + " unused bytes" + at(r.file_offset()));
}

void Reader::check_chunks() {
  struct Range { uint64_t begin, end; const TensorRecord* tensor; };
  std::vector<Range> ranges;
  for (const TensorRecord& t : tensors_)
    for (const auto& section : t.sections)
      for (const ChunkRef& c : section) ranges.push_back({c.offset, c.offset + c.stored_size, &t});
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].begin < ranges[i - 1].end)
      fail(ErrorKind::Format, "chunks of tensors '" + ranges[i - 1].tensor->name + "' and '" + ranges[i].tensor->name +
                                  "' overlap" + at(ranges[i].begin));
}

const TensorRecord* Reader::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

const MetadataEntry* Reader::find_metadata(const std::string& key) const {
  for (const MetadataEntry& m : metadata_)
    if (m.key == key) return &m;
  return nullptr;
}

void decode_chunk_payload(const uint8_t* src, const ChunkRef& ref, uint8_t* dst, const std::string& where,
                          bool check_sum) {
  const uint64_t sum = check_sum ? XXH3_64bits(src, ref.stored_size) : ref.checksum;
  if (sum != ref.checksum)
    fail(ErrorKind::Checksum, where + ": checksum mismatch (stored " + hex(ref.checksum) + ", computed " + hex(sum) + ")");
  if (ref.codec == Codec::Raw) {
    if (ref.stored_size != ref.raw_size) fail(ErrorKind::Format, where + ": raw chunk size mismatch");
    std::memcpy(dst, src, ref.raw_size);
    return;
  }
  if (ref.codec != Codec::Zstd) fail(ErrorKind::Format, where + ": unknown codec");
  thread_local std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx*)> dctx(ZSTD_createDCtx(), ZSTD_freeDCtx);
  if (!dctx) fail(ErrorKind::OutOfMemory, "cannot allocate a zstd decompression context");
  // dst holds exactly raw_size bytes, so a frame that lies about its size
  // cannot make us write or allocate more.
  const size_t n = ZSTD_decompressDCtx(dctx.get(), dst, ref.raw_size, src, ref.stored_size);
  if (ZSTD_isError(n)) fail(ErrorKind::Format, where + ": zstd error: " + ZSTD_getErrorName(n));
  if (n != ref.raw_size)
    fail(ErrorKind::Format, where + ": decoded " + std::to_string(n) + " bytes, expected " + std::to_string(ref.raw_size));
}

void Reader::decode_chunk(const TensorRecord& tensor, SectionKind kind, uint64_t chunk, uint8_t* dst) const {
  const ChunkRef& ref = tensor.sections[static_cast<int>(kind)][chunk];
  decode_chunk_payload(data_ + ref.offset, ref, dst,
                       "tensor '" + printable(tensor.name) + "' " + section_name(kind) + " chunk " +
                           std::to_string(chunk) + at(ref.offset),
                       !skip_checksums_);
}

void Reader::read_rows(const TensorRecord& tensor, SectionKind kind, uint64_t row_begin, uint64_t row_end,
                       uint8_t* dst, const ParallelFor& parallel) const {
  if (row_begin >= row_end || row_end > tensor.rows)
    fail(ErrorKind::Argument, "row range [" + std::to_string(row_begin) + ", " + std::to_string(row_end) +
                                  ") is empty or outside tensor '" + tensor.name + "' with " +
                                  std::to_string(tensor.rows) + " rows");
  const uint64_t rpc = tensor.rows_per_chunk;
  const uint64_t row_bytes = tensor.row_bytes(kind);
  const uint64_t first = row_begin / rpc, last = (row_end - 1) / rpc;
  std::vector<std::string> errors(last - first + 1);
  std::vector<ErrorKind> kinds(last - first + 1, ErrorKind::Format);
  parallel(last - first + 1, [&](size_t i) {
    const uint64_t chunk = first + i;
    const uint64_t c_begin = chunk * rpc, c_end = c_begin + tensor.chunk_rows(chunk);
    const uint64_t lo = std::max(c_begin, row_begin), hi = std::min(c_end, row_end);
    try {
      uint8_t* out = dst + (lo - row_begin) * row_bytes;
      if (lo == c_begin && hi == c_end) {
        decode_chunk(tensor, kind, chunk, out);
      } else {
        std::vector<uint8_t> tmp(tensor.sections[static_cast<int>(kind)][chunk].raw_size);
        decode_chunk(tensor, kind, chunk, tmp.data());
        std::memcpy(out, tmp.data() + (lo - c_begin) * row_bytes, (hi - lo) * row_bytes);
      }
    } catch (const Error& e) {
      errors[i] = e.what();
      kinds[i] = e.kind();
    } catch (const std::bad_alloc&) {
      errors[i] = "out of memory decoding tensor '" + tensor.name + "'";
      kinds[i] = ErrorKind::OutOfMemory;
    }
  });
  for (size_t i = 0; i < errors.size(); ++i)
    if (!errors[i].empty()) throw Error(kinds[i], errors[i]);
}

void Reader::read_input_scales(const TensorRecord& tensor, float* dst) const {
  if (!tensor.has_input_scales)
    fail(ErrorKind::Argument, "tensor '" + tensor.name + "' has no input scales");
  decode_chunk(tensor, SectionKind::InputScales, 0, reinterpret_cast<uint8_t*>(dst));
}

void Reader::read_input_permutation(const TensorRecord& tensor, uint32_t* dst) const {
  if (!tensor.has_input_permutation)
    fail(ErrorKind::Argument, "tensor '" + tensor.name + "' has no input permutation");
  decode_chunk(tensor, SectionKind::InputPermutation, 0, reinterpret_cast<uint8_t*>(dst));
}

void Reader::verify(const ParallelFor& parallel) const {
  for (const TensorRecord& t : tensors_)
    for (int k = 0; k < kSectionKinds; ++k)
      if (is_per_column(SectionKind(k))) {
        if (t.sections[k].empty()) continue;
        std::vector<uint8_t> column(t.cols * 4);
        decode_chunk(t, SectionKind(k), 0, column.data());
      } else if (!t.sections[k].empty()) {
        // Decode in row slabs so memory stays bounded by a few chunks.
        const uint64_t slab = uint64_t(t.rows_per_chunk) * 16;
        for (uint64_t r = 0; r < t.rows; r += slab) {
          uint64_t end = std::min(t.rows, r + slab);
          std::vector<uint8_t> buf((end - r) * t.row_bytes(SectionKind(k)));
          read_rows(t, SectionKind(k), r, end, buf.data(), parallel);
        }
      }
}

}  // namespace woq::format
