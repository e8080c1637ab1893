// A quantized weight matrix in the canonical layout of fileformat/SPEC.md:
// row bitstream codes, fp16 scales and u8 zero-points per group, optional
// fp32 bias. What the quantizer produces, the writer stores, the reader
// returns and backends repack.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/cpu/reference.h"
#include "runtime/dtype.h"

namespace woq {

enum class Scheme { Asymmetric = 0, Symmetric = 1 };
// Values mirror woq_method (and the file's method byte).
enum class Method { Rtn = 0, Mse = 1, Hqq = 2, Awq = 3, Gptq = 4 };

struct QuantStats {
  double max_abs_error = 0;
  double rel_frobenius_error = 0;
  double sqnr_db = 0;
};

struct QuantizedMatrix {
  uint64_t rows = 0;  // N outputs
  uint64_t cols = 0;  // K inputs
  uint32_t bits = 0;
  uint32_t group_size = 0;  // == cols for per-channel
  Scheme scheme = Scheme::Asymmetric;
  Method method = Method::Rtn;
  DType source_dtype = DType::F32;
  std::vector<uint32_t> codes;   // rows * words_per_row()
  std::vector<uint16_t> scales;  // rows * groups_per_row(), fp16 bits
  std::vector<uint8_t> zeros;    // rows * groups_per_row()
  std::vector<float> bias;       // empty or rows
  // Empty, or cols factors the activations are multiplied by before the
  // matmul (AWQ): Y = (X diag(input_scales)) W_q^T, so the effective weights
  // are W_q diag(input_scales). Finite and > 0.
  std::vector<float> input_scales;
  // Empty, or cols input indices (a permutation of 0..cols-1, never with
  // input_scales): stored input k multiplies X's column input_permutation[k],
  // Y = X[:, input_permutation] W_q^T, so that an act-order checkpoint's
  // groups are runs of consecutive stored inputs. The effective weight of
  // model input input_permutation[k] is W_q[n][k].
  std::vector<uint32_t> input_permutation;
  QuantStats stats;

  uint64_t groups_per_row() const { return cols / group_size; }
  uint64_t words_per_row() const { return (cols * bits + 31) / 32; }
  uint64_t bytes() const {
    return codes.size() * sizeof(uint32_t) + scales.size() * sizeof(uint16_t) + zeros.size() +
           (bias.size() + input_scales.size()) * sizeof(float) + input_permutation.size() * sizeof(uint32_t);
  }
  kernels::QuantView view() const {
    return {codes.data(), scales.data(), zeros.data(), bias.empty() ? nullptr : bias.data(),
            rows, cols, bits, group_size, words_per_row(), input_scales.empty() ? nullptr : input_scales.data(),
            input_permutation.empty() ? nullptr : input_permutation.data()};
  }
};

// Rows [row_begin, row_end) of m as a matrix of their own (with their bias
// and all of m's input scales or permutation).
QuantizedMatrix row_block(const QuantizedMatrix& m, uint64_t row_begin, uint64_t row_end);

// Checks that decoded data obeys SPEC.md 5.3 (finite non-negative scales,
// zero-points <= 2^bits - 1, symmetric zero-points == 2^(bits-1), input
// scales finite and > 0, an input permutation a permutation of 0..cols-1 and
// not together with input scales).
// Throws Error(Format) naming the tensor, row and group.
void validate_quantized(const QuantizedMatrix& m, const char* name);

}  // namespace woq
