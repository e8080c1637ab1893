// SIMD traits for packed_kernels.inl on AVX-512 (F, BW, VL): 16 fp32 lanes
// in one zmm register. Included only by files compiled with AVX-512 flags.
#pragma once

#include <immintrin.h>

#include "kernels/cpu/packed.h"

namespace woq::kernels {
namespace {

struct S {
  using F = __m512;
  using I = __m512i;
  // Blocked GEMM micro-kernel: rows of X x blocks of 16 outputs (accumulators
  // in registers: 24 of 32 zmm).
  static constexpr int kGemmRows = 12, kGemmBlocks = 2;
  static F zero() { return _mm512_setzero_ps(); }
  static F load(const float* p) { return _mm512_load_ps(p); }
  static void store(float* p, F v) { _mm512_store_ps(p, v); }
  static F load_half(const uint16_t* p) { return _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(p))); }
  static F load_i8(const int8_t* p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(p))));
  }
  static F set1(float v) { return _mm512_set1_ps(v); }
  static F fma(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static F fnma(F a, F b, F c) { return _mm512_fnmadd_ps(a, b, c); }
  static F fms(F a, F b, F c) { return _mm512_fmsub_ps(a, b, c); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static I loadi(const uint32_t* p) { return _mm512_load_si512(p); }
  // vpermps reads only the low 4 bits of each index: a 16-entry table
  // turns a signed nibble into its float without masking or converting.
  template <int T>
  static F nibble(I d) {
    const F table = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, -8, -7, -6, -5, -4, -3, -2, -1);
    if constexpr (T == 0) return _mm512_permutexvar_ps(d, table);
    else return _mm512_permutexvar_ps(_mm512_srli_epi32(d, 4 * T), table);
  }
  template <int T>
  static F byte(I d) {
    if constexpr (T == 3) return _mm512_cvtepi32_ps(_mm512_srai_epi32(d, 24));
    else return _mm512_cvtepi32_ps(_mm512_srai_epi32(_mm512_slli_epi32(d, 24 - 8 * T), 24));
  }
};

}  // namespace
}  // namespace woq::kernels

