#include "format.h"

namespace woq::format {

const char* section_name(SectionKind kind) {
  switch (kind) {
    case SectionKind::Codes: return "codes";
    case SectionKind::Scales: return "scales";
    case SectionKind::Zeros: return "zero-points";
    case SectionKind::Bias: return "bias";
    case SectionKind::InputScales: return "input scales";
    case SectionKind::InputPermutation: return "input permutation";
  }
  return "unknown";
}

uint64_t TensorRecord::row_bytes(SectionKind kind) const {
  switch (kind) {
    case SectionKind::Codes: return words_per_row() * 4;
    case SectionKind::Scales: return groups_per_row() * 2;
    case SectionKind::Zeros: return groups_per_row();
    case SectionKind::Bias: return 4;
    case SectionKind::InputScales:
    case SectionKind::InputPermutation: return 0;
  }
  return 0;
}

uint64_t TensorRecord::chunk_rows(uint64_t chunk) const {
  uint64_t begin = chunk * rows_per_chunk;
  uint64_t end = begin + rows_per_chunk < rows ? begin + rows_per_chunk : rows;
  return end - begin;
}

uint64_t TensorRecord::stored_bytes() const {
  uint64_t total = 0;
  for (const auto& section : sections)
    for (const auto& chunk : section) total += chunk.stored_size;
  return total;
}

uint64_t TensorRecord::raw_bytes() const {
  uint64_t total = 0;
  for (const auto& section : sections)
    for (const auto& chunk : section) total += chunk.raw_size;
  return total;
}

void serial_for(size_t count, const std::function<void(size_t)>& body) {
  for (size_t i = 0; i < count; ++i) body(i);
}

uint64_t checked_add(uint64_t a, uint64_t b, const char* what) {
  uint64_t r;
  if (__builtin_add_overflow(a, b, &r))
    throw Error(ErrorKind::Format, std::string("size overflow computing ") + what);
  return r;
}

uint64_t checked_mul(uint64_t a, uint64_t b, const char* what) {
  uint64_t r;
  if (__builtin_mul_overflow(a, b, &r))
    throw Error(ErrorKind::Format, std::string("size overflow computing ") + what);
  return r;
}

}  // namespace woq::format
