// The scalar reference fused dequantize + matmul: written for clarity, it is
// the oracle every other kernel is tested against. Depends on nothing but
// this directory.
#pragma once

#include <cstdint>
#include <cstring>

#include "kernels/cpu/numeric.h"

namespace woq::kernels {

enum class ActType { F32 = 0, F16 = 1, BF16 = 2 };

inline uint64_t act_size(ActType t) { return t == ActType::F32 ? 4 : 2; }

// Element i of an activation array as fp32 (exact for all three types).
inline float load_act(const void* base, ActType t, uint64_t i) {
  switch (t) {
    case ActType::F32: return static_cast<const float*>(base)[i];
    case ActType::F16: return half_to_float(static_cast<const uint16_t*>(base)[i]);
    case ActType::BF16: return bf16_to_float(static_cast<const uint16_t*>(base)[i]);
  }
  return 0.0f;
}

// Stores v as element i, rounding to nearest even for the 16-bit types.
inline void store_act(void* base, ActType t, uint64_t i, float v) {
  switch (t) {
    case ActType::F32: static_cast<float*>(base)[i] = v; break;
    case ActType::F16: static_cast<uint16_t*>(base)[i] = float_to_half(v); break;
    case ActType::BF16: static_cast<uint16_t*>(base)[i] = float_to_bf16(v); break;
  }
}

// Elements [begin, end) of an array of type t as fp32, and back (round to
// nearest even): load_act / store_act per element, the type chosen once so
// that the loops vectorize.
inline void load_acts(const void* base, ActType t, uint64_t begin, uint64_t end, float* out) {
  const auto* h = static_cast<const uint16_t*>(base);
  switch (t) {
    case ActType::F32: std::memcpy(out, static_cast<const float*>(base) + begin, (end - begin) * sizeof(float)); break;
    case ActType::F16: for (uint64_t i = begin; i < end; ++i) out[i - begin] = half_to_float(h[i]); break;
    case ActType::BF16: for (uint64_t i = begin; i < end; ++i) out[i - begin] = bf16_to_float(h[i]); break;
  }
}
// One row of `cols` activations at `row` as fp32 in the order `columns`
// gives (out[k] = row[columns[k]]): X gathered for an input permutation.
inline void load_acts_gathered(const void* row, ActType t, const uint32_t* columns, uint64_t cols, float* out) {
  const auto* h = static_cast<const uint16_t*>(row);
  switch (t) {
    case ActType::F32: for (uint64_t k = 0; k < cols; ++k) out[k] = static_cast<const float*>(row)[columns[k]]; break;
    case ActType::F16: for (uint64_t k = 0; k < cols; ++k) out[k] = half_to_float(h[columns[k]]); break;
    case ActType::BF16: for (uint64_t k = 0; k < cols; ++k) out[k] = bf16_to_float(h[columns[k]]); break;
  }
}
inline void store_acts(void* base, ActType t, uint64_t begin, uint64_t end, const float* in) {
  auto* h = static_cast<uint16_t*>(base);
  switch (t) {
    case ActType::F32: std::memcpy(static_cast<float*>(base) + begin, in, (end - begin) * sizeof(float)); break;
    case ActType::F16: for (uint64_t i = begin; i < end; ++i) h[i] = float_to_half(in[i - begin]); break;
    case ActType::BF16: for (uint64_t i = begin; i < end; ++i) h[i] = float_to_bf16(in[i - begin]); break;
  }
}

// A quantized matrix in the canonical layout (fileformat/SPEC.md 5.1-5.3).
struct QuantView {
  const uint32_t* codes;   // rows x words_per_row
  const uint16_t* scales;  // rows x (cols / group_size), fp16 bits
  const uint8_t* zeros;    // rows x (cols / group_size)
  const float* bias;       // rows, or null
  uint64_t rows;
  uint64_t cols;
  uint32_t bits;
  uint32_t group_size;
  uint64_t words_per_row;
  const float* input_scales = nullptr;  // cols factors X is multiplied by (AWQ), or null
  // cols indices: stored input k multiplies X's column input_permutation[k]
  // (act-order checkpoints), or null
  const uint32_t* input_permutation = nullptr;
};

// A row of s * (q - z) in the stored input order as the effective weights in
// the model's order: times the input scales, or placed at input_permutation[k]
// (either may be null; never both). `out` must not be `stored`.
inline void to_model_order(const float* stored, const float* input_scales, const uint32_t* input_permutation,
                           uint64_t cols, float* out) {
  if (input_permutation) {
    for (uint64_t k = 0; k < cols; ++k) out[input_permutation[k]] = stored[k];
  } else if (input_scales) {
    for (uint64_t k = 0; k < cols; ++k) out[k] = stored[k] * input_scales[k];
  } else {
    std::memcpy(out, stored, cols * sizeof(float));
  }
}

// Code k of one row of the canonical bitstream.
inline uint32_t unpack_code(const uint32_t* row, uint64_t k, uint32_t bits) {
  const uint64_t bit = k * bits;
  const uint64_t word = bit / 32;
  const uint32_t shift = uint32_t(bit % 32);
  uint64_t v = row[word] >> shift;
  if (shift + bits > 32) v |= uint64_t(row[word + 1]) << (32 - shift);
  return uint32_t(v) & ((1u << bits) - 1u);
}

// The effective weights of row n in the model's input order: s * (q - z)
// (exact in fp32), times the input scale, or placed at input_permutation[k].
void reference_dequantize_row(const QuantView& w, uint64_t n, float* out);

// Y[m][n] = sum_k X[m][k] * w_hat[n][k] + bias[n] for n in [row_begin,
// row_end), all m < M; fp32 accumulation in k order. Y is row-major M x rows.
void reference_matmul(const QuantView& w, const void* x, ActType x_type, uint64_t m, void* y,
                      ActType y_type, uint64_t row_begin, uint64_t row_end);

}  // namespace woq::kernels
