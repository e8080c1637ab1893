#include "kernels/cuda/layout.h"

#include <algorithm>
#include <numeric>

#include "kernels/cpu/reference.h"

namespace woq::kernels::cuda {

FragmentShape fragment_shape(uint64_t rows, uint64_t cols, uint32_t code_bits, uint32_t group_size) {
  FragmentShape s;
  s.rows = rows;
  s.cols = cols;
  s.field = field_bits(code_bits);
  s.slices = (rows + kSliceRows - 1) / kSliceRows;
  s.steps = (cols + step_cols(s.field) - 1) / step_cols(s.field);
  s.groups = cols / group_size;
  if (group_size == cols) s.group_shift = 63;  // cols < 2^32: every column is in group 0
  else if ((group_size & (group_size - 1)) == 0) s.group_shift = uint32_t(__builtin_ctz(group_size));
  return s;
}

void repack_fragments_into(const uint32_t* codes, uint64_t words_per_row, const uint16_t* scales,
                           const uint8_t* zeros, uint64_t rows, uint64_t cols, uint32_t code_bits,
                           uint32_t group_size, uint32_t* units_out, uint16_t* scales_out, uint8_t* zeros_out,
                           uint64_t stride) {
  const FragmentShape s = fragment_shape(rows, cols, code_bits, group_size);
  const uint32_t width = step_cols(s.field);
  std::fill(units_out, units_out + s.unit_count() * kUnitWords, 0u);
  for (uint64_t n = 0; n < rows; ++n) {
    const uint32_t* row = codes + n * words_per_row;
    uint32_t* slice = units_out + (n / kSliceRows) * s.steps * kUnitWords;
    for (uint64_t k = 0; k < cols; ++k) {
      const CodePlace p = code_place(s.field, uint32_t(n % kSliceRows), uint32_t(k % width));
      slice[(k / width) * kUnitWords + p.word] |= unpack_code(row, k, code_bits) << p.shift;
    }
  }
  std::fill(scales_out, scales_out + s.groups * stride, uint16_t(0));
  std::fill(zeros_out, zeros_out + s.groups * stride, uint8_t(0));
  for (uint64_t n = 0; n < rows; ++n)
    for (uint64_t j = 0; j < s.groups; ++j) {
      scales_out[j * stride + n] = scales[n * s.groups + j];
      zeros_out[j * stride + n] = zeros[n * s.groups + j];
    }
}

uint64_t upload_block_rows(const FragmentShape& s, uint64_t rows_per_chunk, uint64_t target_bytes) {
  const uint64_t per_slice = s.steps * kUnitBytes + s.groups * kSliceRows * 3;
  uint64_t rows = std::max<uint64_t>(1, target_bytes / per_slice) * kSliceRows;
  if (rows_per_chunk) {
    const uint64_t whole = std::lcm<uint64_t>(kSliceRows, rows_per_chunk);
    if (whole <= 2 * rows) rows = std::max(whole, rows / whole * whole);
  }
  return std::min(rows, s.padded_rows());
}

FragmentMatrix repack_fragments(const uint32_t* codes, uint64_t words_per_row, const uint16_t* scales,
                                const uint8_t* zeros, uint64_t rows, uint64_t cols, uint32_t code_bits,
                                uint32_t group_size) {
  FragmentMatrix f;
  f.shape = fragment_shape(rows, cols, code_bits, group_size);
  const uint64_t stride = f.shape.padded_rows();
  f.units.resize(f.shape.unit_count() * kUnitWords);
  f.scales.resize(f.shape.groups * stride);
  f.zeros.resize(f.shape.groups * stride);
  repack_fragments_into(codes, words_per_row, scales, zeros, rows, cols, code_bits, group_size, f.units.data(),
                        f.scales.data(), f.zeros.data(), stride);
  return f;
}

}  // namespace woq::kernels::cuda
