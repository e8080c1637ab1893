// Element types of activations and source weights (values mirror woq_dtype).
#pragma once

#include <cstdint>
#include <string>

#include "kernels/cpu/reference.h"

namespace woq {

enum class DType { F32 = 0, F16 = 1, BF16 = 2 };

inline uint64_t dtype_size(DType t) { return t == DType::F32 ? 4 : 2; }
inline const char* dtype_name(DType t) {
  return t == DType::F32 ? "f32" : t == DType::F16 ? "f16" : "bf16";
}
inline bool dtype_valid(int v) { return v >= 0 && v <= 2; }
inline kernels::ActType to_act(DType t) { return static_cast<kernels::ActType>(static_cast<int>(t)); }

// Element i of an array of dtype t, as fp32 (exact for all three types).
inline float load_as_float(const void* base, DType t, uint64_t i) { return kernels::load_act(base, to_act(t), i); }

// Stores v as element i of an array of dtype t (round to nearest even).
inline void store_as(void* base, DType t, uint64_t i, float v) { kernels::store_act(base, to_act(t), i, v); }

}  // namespace woq
