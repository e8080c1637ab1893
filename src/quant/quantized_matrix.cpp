#include "quant/quantized_matrix.h"

#include <cmath>
#include <string>

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
}

}  // namespace woq
