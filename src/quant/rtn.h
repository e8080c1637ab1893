// Round-to-nearest quantization (SPEC.md 5.4), plain or with the per-group
// clipping search of Method::Mse (SPEC.md 5.5).
#pragma once

#include <cstdint>

#include "quant/quantized_matrix.h"

namespace woq {

struct QuantConfig {
  uint32_t bits = 4;         // 2..8
  uint32_t group_size = 128; // 32, 64, 128, 256, or 0 for per-channel
  Scheme scheme = Scheme::Asymmetric;
  Method method = Method::Rtn;
};

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
