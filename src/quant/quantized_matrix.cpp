#include "quant/quantized_matrix.h"

#include <cmath>
#include <string>
#include <vector>

#include "kernels/cpu/numeric.h"
#include "runtime/error.h"

namespace woq {

void validate_quantized(const QuantizedMatrix& m, const char* name) {
  const uint32_t qmax = (1u << m.bits) - 1;
  const uint64_t groups = m.groups_per_row();
  for (uint64_t i = 0; i < m.scales.size(); ++i) {
    const float s = kernels::half_to_float(m.scales[i]);
    const auto where = [&] {
      return std::string("tensor '") + name + "' row " + std::to_string(i / groups) + " group " +
             std::to_string(i % groups) + ": ";
    };
    if (!std::isfinite(s) || s < 0) fail(Status::Format, where() + "scale " + std::to_string(s) + " is not finite and >= 0");
    if (m.zeros[i] > qmax)
      fail(Status::Format, where() + "zero-point " + std::to_string(m.zeros[i]) + " exceeds 2^bits - 1 = " +
                               std::to_string(qmax));
    if (m.scheme == Scheme::Symmetric && m.zeros[i] != (1u << (m.bits - 1)))
      fail(Status::Format, where() + "symmetric tensor has zero-point " + std::to_string(m.zeros[i]));
  }
  for (uint64_t k = 0; k < m.input_scales.size(); ++k)
    if (!std::isfinite(m.input_scales[k]) || !(m.input_scales[k] > 0))
      fail(Status::Format, std::string("tensor '") + name + "' input scale " + std::to_string(k) + " = " +
                               std::to_string(m.input_scales[k]) + " is not finite and > 0");
  if (m.input_permutation.empty()) return;
  const std::string tensor = std::string("tensor '") + name + "'";
  if (!m.input_scales.empty()) fail(Status::Format, tensor + " has both input scales and an input permutation");
  if (m.input_permutation.size() != m.cols)
    fail(Status::Format, tensor + " has an input permutation of " + std::to_string(m.input_permutation.size()) +
                             " entries for " + std::to_string(m.cols) + " inputs");
  std::vector<bool> seen(m.cols, false);
  for (uint64_t k = 0; k < m.cols; ++k) {
    const uint32_t to = m.input_permutation[k];
    if (to >= m.cols || seen[to])
      fail(Status::Format, tensor + " input permutation entry " + std::to_string(k) + " = " + std::to_string(to) +
                               (to >= m.cols ? " is not below cols = " + std::to_string(m.cols) : " repeats an earlier entry"));
    seen[to] = true;
  }
}

QuantizedMatrix row_block(const QuantizedMatrix& m, uint64_t row_begin, uint64_t row_end) {
  QuantizedMatrix b;
  b.rows = row_end - row_begin;
  b.cols = m.cols;
  b.bits = m.bits;
  b.group_size = m.group_size;
  b.scheme = m.scheme;
  b.method = m.method;
  b.source_dtype = m.source_dtype;
  b.stats = m.stats;
  const uint64_t words = m.words_per_row(), groups = m.groups_per_row();
  b.codes.assign(m.codes.begin() + row_begin * words, m.codes.begin() + row_end * words);
  b.scales.assign(m.scales.begin() + row_begin * groups, m.scales.begin() + row_end * groups);
  b.zeros.assign(m.zeros.begin() + row_begin * groups, m.zeros.begin() + row_end * groups);
  if (!m.bias.empty()) b.bias.assign(m.bias.begin() + row_begin, m.bias.begin() + row_end);
  b.input_scales = m.input_scales;
  return b;
}

}  // namespace woq
