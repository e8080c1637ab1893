#include "kernels/cuda/layout.h"

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

FragmentMatrix repack_fragments(const uint32_t* codes, uint64_t words_per_row, const uint16_t* scales,
                                const uint8_t* zeros, uint64_t rows, uint64_t cols, uint32_t code_bits,
                                uint32_t group_size) {
  FragmentMatrix f;
  f.shape = fragment_shape(rows, cols, code_bits, group_size);
  const FragmentShape& s = f.shape;
  const uint32_t width = step_cols(s.field);
  f.units.assign(s.unit_count() * kUnitWords, 0);
  for (uint64_t n = 0; n < rows; ++n) {
    const uint32_t* row = codes + n * words_per_row;
    uint32_t* slice = f.units.data() + (n / kSliceRows) * s.steps * kUnitWords;
    for (uint64_t k = 0; k < cols; ++k) {
      const CodePlace p = code_place(s.field, uint32_t(n % kSliceRows), uint32_t(k % width));
      slice[(k / width) * kUnitWords + p.word] |= unpack_code(row, k, code_bits) << p.shift;
    }
  }
  const uint64_t stride = s.padded_rows();
  f.scales.assign(s.groups * stride, 0);
  f.zeros.assign(s.groups * stride, 0);
  for (uint64_t n = 0; n < rows; ++n)
    for (uint64_t j = 0; j < s.groups; ++j) {
      f.scales[j * stride + n] = scales[n * s.groups + j];
      f.zeros[j * stride + n] = zeros[n * s.groups + j];
    }
  return f;
}

}  // namespace woq::kernels::cuda
