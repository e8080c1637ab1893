// Round-to-nearest quantization (SPEC.md 5.4), plain, with the per-group
// clipping search of Method::Mse (SPEC.md 5.5) or the calibration-free grid
// optimization of Method::Hqq (SPEC.md 5.8).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "quant/quantized_matrix.h"

namespace woq {

// GPTQ's column order (values mirror woq_quant_options.act_order): natural;
// by decreasing Hessian diagonal with each group's grid from the original
// weights (static groups, plain layout); or by decreasing diagonal with
// groups formed in that order, stored with an input permutation.
enum class ActOrder { Off = 0, StaticGroups = 1, Permuted = 2 };

struct QuantConfig {
  uint32_t bits = 4;         // 2..8
  uint32_t group_size = 128; // 32, 64, 128, 256, or 0 for per-channel
  Scheme scheme = Scheme::Asymmetric;
  Method method = Method::Rtn;
  ActOrder act_order = ActOrder::Off;  // GPTQ: the order columns are quantized in
};

// One group's grid: fp16 scale bits, its value, and the zero-point.
struct Grid {
  uint16_t s16;
  double s;
  double z;
};

// A group's range: [min(0, min w), max(0, max w)] and max |w|.
struct GroupRange {
  double lo = 0, hi = 0, amax = 0;
};
GroupRange group_range(const double* w, uint64_t n);

// SPEC.md 5.4 on a group's range shrunk by `shrink` (1 = plain RTN).
Grid make_grid(const GroupRange& range, double shrink, const QuantConfig& config);

// The RTN grid (SPEC.md 5.4) of w[0..n).
inline Grid rtn_grid(const double* w, uint64_t n, const QuantConfig& config) {
  return make_grid(group_range(w, n), 1.0, config);
}

// The clipping searches (MSE: SPEC.md 5.5, AWQ: 5.7) try the range shrunk by
// shrink_factor(step) = 1, 0.95, ..., 0.5 for step = 0 .. kShrinkSteps - 1.
inline constexpr int kShrinkSteps = 11;
inline double shrink_factor(int step) { return double(20 - step) / 20.0; }

// Code of one weight on grid g.
inline uint8_t quantize_value(double w, const Grid& g, uint32_t bits) {
  const double q = std::nearbyint(w / g.s + g.z);
  return static_cast<uint8_t>(std::min(double((1u << bits) - 1), std::max(0.0, q)));
}

// The value a code stands for, exactly as backends dequantize it (fp32).
inline float dequantize_value(uint8_t q, const Grid& g) { return float(g.s) * float(int(q) - int(g.z)); }

// An empty matrix of the config's shape, ready for codes, scales and zeros.
QuantizedMatrix make_quantized(uint64_t rows, uint64_t cols, DType dtype, const QuantConfig& config);

// Weight i of a row-major matrix with `cols` columns, widened; throws
// Error(InvalidArgument) naming its row and column if it is not finite.
double load_weight(const void* weights, DType dtype, uint64_t i, uint64_t cols);

// Validates the config against a K = cols matrix; throws Error naming the problem.
void check_quant_config(const QuantConfig& config, uint64_t rows, uint64_t cols);

// Quantizes row-major W[rows, cols] of dtype `dtype`. Every weight must be
// finite. Fills codes, scales, zeros and error statistics.
QuantizedMatrix quantize_rtn(const void* weights, DType dtype, uint64_t rows, uint64_t cols,
                             const QuantConfig& config);

// Smallest fp16 value >= x (x >= 0); throws Error if x > 65504.
uint16_t fp16_round_up(double x);

// Error statistics of `m` against the source weights.
QuantStats measure_error(const QuantizedMatrix& m, const void* weights, DType dtype);

}  // namespace woq
