// AWQ (Lin et al., 2023): activation-aware per-input-channel scaling.
// Input channels that carry large activations get their weights scaled up
// before quantization (so their rounding error shrinks) and the activations
// scaled down by the same factor at run time. See fileformat/SPEC.md 5.7.
#pragma once

#include <cstdint>
#include <vector>

#include "quant/gptq.h"

namespace woq {

struct AwqReport {
  double alpha = 0;             // the exponent the search chose (0 = plain RTN)
  double calib_error = 0;       // relative output MSE on the calibration rows
  double calib_error_rtn = 0;   // the same for RTN (alpha = 0, no clipping)
  std::vector<float> folded;    // with fold: the factors the host applies to X
};

// Quantizes W[rows, cols] with AWQ on X[calib.rows, cols]: s = mean|x|^alpha
// (normalized to geometric mean 1 of its extremes) for alpha in 0, 0.05, ..,
// 1 chosen by output error on (up to 256 of) the calibration rows, then a
// per-group clipping search (shrink 1 .. 0.5) by output error. The result
// stores codes of W diag(s) and input_scales = 1/s; with `fold` it stores no
// input scales and report->folded holds 1/s for the host to multiply into
// whatever produces X (the tensor then expects X already scaled).
QuantizedMatrix quantize_awq(const void* weights, DType dtype, uint64_t rows, uint64_t cols, const QuantConfig& config,
                             const Calibration& calib, bool fold, AwqReport* report = nullptr);

}  // namespace woq
