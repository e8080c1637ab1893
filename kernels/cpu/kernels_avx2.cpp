// Packed kernels for AVX2 + FMA: 16 lanes as two 8-lane halves. Compiled
// with -mavx2 -mfma and only called after detect_isa() allows it.
#include <immintrin.h>

#include "kernels/cpu/packed.h"

namespace woq::kernels {
namespace {

struct S {
  struct F {
    __m256 lo, hi;
  };
  struct I {
    __m256i lo, hi;
  };
  // Blocked GEMM micro-kernel: rows of X x blocks of 16 outputs (accumulators
  // in registers: 12 of 16 ymm).
  static constexpr int kGemmRows = 6, kGemmBlocks = 1;
  static F zero() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
  static F load(const float* p) { return {_mm256_load_ps(p), _mm256_load_ps(p + 8)}; }
  static void store(float* p, F v) {
    _mm256_store_ps(p, v.lo);
    _mm256_store_ps(p + 8, v.hi);
  }
  static F load_half(const uint16_t* p) {
    const __m256i h = _mm256_load_si256(reinterpret_cast<const __m256i*>(p));
    return {_mm256_cvtph_ps(_mm256_castsi256_si128(h)), _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1))};
  }
  static F load_i8(const int8_t* p) {
    const __m128i b = _mm_load_si128(reinterpret_cast<const __m128i*>(p));
    return {_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)), _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(b, 8)))};
  }
  static F set1(float v) {
    const __m256 b = _mm256_set1_ps(v);
    return {b, b};
  }
  static F fma(F a, F b, F c) { return {_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)}; }
  static F fnma(F a, F b, F c) { return {_mm256_fnmadd_ps(a.lo, b.lo, c.lo), _mm256_fnmadd_ps(a.hi, b.hi, c.hi)}; }
  static F fms(F a, F b, F c) { return {_mm256_fmsub_ps(a.lo, b.lo, c.lo), _mm256_fmsub_ps(a.hi, b.hi, c.hi)}; }
  static F add(F a, F b) { return {_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)}; }
  static F mul(F a, F b) { return {_mm256_mul_ps(a.lo, b.lo), _mm256_mul_ps(a.hi, b.hi)}; }
  static I loadi(const uint32_t* p) {
    return {_mm256_load_si256(reinterpret_cast<const __m256i*>(p)),
            _mm256_load_si256(reinterpret_cast<const __m256i*>(p + 8))};
  }
  // The signed field of Bits bits at bit Shift, as float.
  template <int Shift, int Bits>
  static __m256 field(__m256i d) {
    const __m256i up = Shift + Bits == 32 ? d : _mm256_slli_epi32(d, 32 - Bits - Shift);
    return _mm256_cvtepi32_ps(_mm256_srai_epi32(up, 32 - Bits));
  }
  template <int T>
  static F nibble(I d) { return {field<4 * T, 4>(d.lo), field<4 * T, 4>(d.hi)}; }
  template <int T>
  static F byte(I d) { return {field<8 * T, 8>(d.lo), field<8 * T, 8>(d.hi)}; }
};

}  // namespace
}  // namespace woq::kernels

#include "kernels/cpu/packed_kernels.inl"

namespace woq::kernels {

void packed_matmul_avx2(const PackedMatrix& w, const Activations& a, uint64_t bb, uint64_t be, float* y) {
  packed_matmul_impl(w, a, bb, be, y);
}

}  // namespace woq::kernels
