// Scalar conversions between fp32 and the 16-bit float formats, round to
// nearest even, NaN preserved. Used by the reference kernel and the quantizer.
#pragma once

#include <cstdint>
#include <cstring>

namespace woq::kernels {

inline uint32_t float_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float bits_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

inline float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {  // zero or subnormal: mant * 2^-24, exact in fp32
    return bits_float(float_bits(float(mant) * (1.0f / 16777216.0f)) | sign);
  }
  if (exp == 31) return bits_float(sign | 0x7f800000u | (mant << 13));
  return bits_float(sign | ((exp + 112) << 23) | (mant << 13));
}

inline uint16_t float_to_half(float f) {
  const uint32_t x = float_bits(f);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000u);
  uint32_t a = x & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7e00u;  // NaN
  if (a >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 rounds to infinity
  if (a < 0x38800000u) {
    // Below 2^-14: adding 0.5 lines the value up so that the fp32 adder's
    // own round-to-nearest-even lands on a multiple of 2^-24 (a half ulp).
    float sum = bits_float(a) + 0.5f;
    return sign | uint16_t(float_bits(sum) - 0x3f000000u);
  }
  // Normal: rebias the exponent by -112 and round the 13 dropped bits to even.
  a += 0xc8000fffu + ((a >> 13) & 1u);
  return sign | uint16_t(a >> 13);
}

inline float bf16_to_float(uint16_t b) { return bits_float(uint32_t(b) << 16); }

inline uint16_t float_to_bf16(float f) {
  const uint32_t x = float_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return uint16_t((x >> 16) | 0x40u);  // quiet NaN
  return uint16_t((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

}  // namespace woq::kernels
