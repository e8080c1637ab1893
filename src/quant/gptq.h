// GPTQ (Frantar et al., 2022): quantizes one input column at a time and
// spreads each column's rounding error over the columns not yet quantized,
// weighted by the inverse Hessian of the layer's output error on
// calibration activations X. See fileformat/SPEC.md 5.6.
#pragma once

#include <cstdint>
#include <vector>

#include "quant/rtn.h"

namespace woq {

// Calibration activations X[rows, cols] (row-major) of one weight's input.
struct Calibration {
  const void* x = nullptr;
  DType dtype = DType::F32;
  uint64_t rows = 0;
};

// X as fp32 after checking it is present, not too large and finite; `method`
// names the caller in messages.
std::vector<float> load_calibration(const Calibration& calib, uint64_t cols, const char* method);

// W[rows, cols] widened to double after checking every weight is finite.
std::vector<double> load_weights(const void* weights, DType dtype, uint64_t rows, uint64_t cols);

// What GPTQ reports about its Hessian.
struct GptqReport {
  double damp = 0;           // dampening used, as a fraction of mean diag(H)
  uint64_t dead_columns = 0; // inputs that are zero in every calibration row
  bool keep_fake_quant = false;  // set by the caller to get fake_quant
  std::vector<float> fake_quant; // W_hat[rows, cols] as GPTQ computed it
};

// Quantizes W[rows, cols] with GPTQ on X[calib.rows, cols]: H = 2 X^T X / S,
// dampened by 1% of its mean diagonal (raised up to 10% until the Cholesky
// factorization succeeds), lazy block updates of 128 columns, each group's
// grid taken when its first column is reached; with config.act_order the
// columns go by decreasing diag(H), and either the grids come from the
// unmodified weights first (static groups), so the stored layout stays plain
// grouped, or groups are runs of that order, stored in that order with the
// order as the matrix's input permutation (format 1.2).
QuantizedMatrix quantize_gptq(const void* weights, DType dtype, uint64_t rows, uint64_t cols,
                              const QuantConfig& config, const Calibration& calib, GptqReport* report = nullptr);

}  // namespace woq
