// Packed kernels for AVX2 + FMA: 16 lanes as two 8-lane halves. Compiled
// with -mavx2 -mfma and only called after detect_isa() allows it.
#include <immintrin.h>

#include <cstring>

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
namespace {

// Lane operations prepare_fixed_point (fixed_point_prep.inl) runs on.
struct PrepLanes {
  static constexpr int kLanes = 8;
  using V = __m256;
  using Vi = __m256i;
  using Mask = uint32_t;  // lanes in use, from the first
  static Mask mask(uint64_t n) { return n >= 8 ? 8u : uint32_t(n); }
  static V load(const float* p, Mask m) {
    if (m == 8) return _mm256_loadu_ps(p);
    const __m256i lanes = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(m)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    return _mm256_maskload_ps(p, lanes);
  }
  static V abs(V v) { return _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff))); }
  static V max(V a, V b) { return _mm256_max_ps(a, b); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static float reduce_max(V v) {
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_max_ss(h, _mm_movehdup_ps(h)));
  }
  static float reduce_add(V v) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
  }
  static V set1(float v) { return _mm256_set1_ps(v); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  // Rounded to an integral float first, so MXCSR's rounding mode plays no part.
  static Vi round(V v) { return _mm256_cvtps_epi32(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)); }
  static Vi izero() { return _mm256_setzero_si256(); }
  static Vi low_byte(Vi v) { return _mm256_srai_epi32(_mm256_slli_epi32(v, 24), 24); }
  static Vi carry(Vi v, Vi digit) { return _mm256_srai_epi32(_mm256_sub_epi32(v, digit), 8); }
  static Vi iadd(Vi a, Vi b) { return _mm256_add_epi32(a, b); }
  static int32_t reduce_iadd(Vi v) {
    __m128i h = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4e));
    return _mm_cvtsi128_si32(_mm_add_epi32(h, _mm_shuffle_epi32(h, 0xb1)));
  }
  // The low bytes of the lanes in use, in the order of the first 8 entries
  // of `order` (one 4-bit word, or two 8-bit words, per 8 lanes).
  static void store_bytes(uint8_t* dst, Vi digit, Mask m, __m128i order) {
    const __m128i words = _mm_packs_epi32(_mm256_castsi256_si128(digit), _mm256_extracti128_si256(digit, 1));
    const __m128i bytes = _mm_shuffle_epi8(_mm_packs_epi16(words, words), order);  // digits fit: no saturation
    alignas(16) uint8_t tmp[16];
    _mm_store_si128(reinterpret_cast<__m128i*>(tmp), bytes);
    std::memcpy(dst, tmp, m);
  }
};

// 4-bit codes on fixed-point activations without VNNI: vpmaddubsw multiplies
// code bytes (unsigned) with digit bytes (signed) and adds pairs into int16
// (at most 2 x 15 x 128 = 3840: no saturation), which add up over four code
// words (8 x 3840 < 32767) before vpmaddwd widens them to int32, once per
// chunk of four words (widening after each word's test spilled with two
// rows of X). Rows 0-7 and 8-15 of a block are done one after the other
// (16 ymm registers).
constexpr uint64_t kInt16Words = 4;  // code words per int16 accumulation

// Keeps GCC from reassociating a chain of int16 adds into a tree, which
// computes all of a chunk's products first and spills them
// (docs/CPU_KERNELS.md, Zen 3).
inline void in_order(__m256i& v) { __asm__("" : "+x"(v)); }

// `count` code words (from `codes`, kBlockRows words apart; word index
// `first` of the block's digits `dg`, one pointer per row of X and digit)
// into int16 sums, then widened into acc.
template <int MC, int D>
inline void fixed_point_words(const uint32_t*& codes, const uint32_t* const (&dg)[MC][D], uint64_t first,
                              uint64_t count, __m256i (&acc)[MC][D]) {
  // Bit 3 of every nibble flipped undoes the centring: q - 8 -> q, unsigned.
  const __m256i low = _mm256_set1_epi32(0x0f0f0f0f), flip = _mm256_set1_epi32(int(0x88888888u));
  __m256i part[MC][D];
  for (int r = 0; r < MC; ++r)
    for (int d = 0; d < D; ++d) part[r][d] = _mm256_setzero_si256();
  for (uint64_t n = 0; n < count; ++n, codes += kBlockRows) {
    prefetch_codes(codes);
    const __m256i word = _mm256_xor_si256(_mm256_load_si256(reinterpret_cast<const __m256i*>(codes)), flip);
    const __m256i u0 = _mm256_and_si256(word, low), u1 = _mm256_and_si256(_mm256_srli_epi32(word, 4), low);
    const uint64_t at = 2 * (first + n);
    for (int r = 0; r < MC; ++r)
      for (int d = 0; d < D; ++d) {
        const uint32_t* digit = dg[r][d] + at;
        part[r][d] = _mm256_add_epi16(part[r][d], _mm256_maddubs_epi16(u0, _mm256_set1_epi32(int(digit[0]))));
        part[r][d] = _mm256_add_epi16(part[r][d], _mm256_maddubs_epi16(u1, _mm256_set1_epi32(int(digit[1]))));
        in_order(part[r][d]);
      }
  }
  const __m256i ones = _mm256_set1_epi16(1);
  for (int r = 0; r < MC; ++r)
    for (int d = 0; d < D; ++d) acc[r][d] = _mm256_add_epi32(acc[r][d], _mm256_madd_epi16(part[r][d], ones));
}

template <int MC, int D>
void fixed_point_small_m(const PackedMatrix& w, const Activations& a, uint64_t m0, uint64_t b, float* out) {
  const uint64_t G = w.groups(), g = w.group_size, B = a.block_inputs, K = w.cols;
  const uint64_t blocks = K / B, words_per_block = B / 8;
  const uint32_t* dg[MC][D];
  for (int r = 0; r < MC; ++r)
    for (int d = 0; d < D; ++d) dg[r][d] = a.words.get() + (m0 + r) * a.row_words + d * a.digit_words;
  for (int half = 0; half < 2; ++half) {
    const uint32_t* codes = w.codes.get() + b * w.words_per_block + half * 8;
    const uint16_t* sc = w.scales.get() + b * G * kBlockRows + half * 8;
    const int8_t* zo = w.zero_offsets.get() + b * G * kBlockRows + half * 8;
    __m256 total[MC];
    for (int r = 0; r < MC; ++r) total[r] = _mm256_setzero_ps();
    uint64_t xb = 0;
    for (uint64_t j = 0; j < G; ++j) {
      const __m256 s = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(sc + j * kBlockRows)));
      for (const uint64_t end = (j + 1) * g / B; xb < end; ++xb) {
        __m256i acc[MC][D];
        for (int r = 0; r < MC; ++r)
          for (int d = 0; d < D; ++d) acc[r][d] = _mm256_set1_epi32(a.block_start.get()[((m0 + r) * blocks + xb) * D + d]);
        uint64_t i = xb * words_per_block;
        const uint64_t block_end = i + words_per_block;
        for (; i + kInt16Words <= block_end; i += kInt16Words) fixed_point_words<MC, D>(codes, dg, i, kInt16Words, acc);
        if (i < block_end) fixed_point_words<MC, D>(codes, dg, i, block_end - i, acc);
        for (int r = 0; r < MC; ++r) {
          // sum_d 256^d * acc[d], highest digit first; each acc[d] is exact.
          __m256 v = _mm256_cvtepi32_ps(acc[r][D - 1]);
          for (int d = D - 2; d >= 0; --d)
            v = _mm256_fmadd_ps(v, _mm256_set1_ps(256.0f), _mm256_cvtepi32_ps(acc[r][d]));
          v = _mm256_mul_ps(v, _mm256_set1_ps(a.block_scale.get()[(m0 + r) * blocks + xb]));
          total[r] = _mm256_fmadd_ps(s, v, total[r]);
        }
      }
      const __m256 z = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(zo + j * kBlockRows))));
      const __m256 s_z = _mm256_mul_ps(s, z);  // exact
      for (int r = 0; r < MC; ++r)
        total[r] = _mm256_fnmadd_ps(s_z, _mm256_set1_ps(a.digit_xsum[(m0 + r) * G + j]), total[r]);
    }
    for (int r = 0; r < MC; ++r) _mm256_store_ps(out + r * kBlockRows + half * 8, total[r]);
  }
}

template <int D>
void fixed_point_run(const PackedMatrix& w, const Activations& a, uint64_t bb, uint64_t be, float* y) {
  over_row_tiles<2>(w, a.m, bb, be, y, [&](auto mc, uint64_t m0, uint64_t b, float* out) {
    fixed_point_small_m<decltype(mc)::value, D>(w, a, m0, b, out);
  });
}

}  // namespace
}  // namespace woq::kernels

#include "kernels/cpu/fixed_point_prep.inl"

namespace woq::kernels {

bool prepare_fixed_point_rows_avx2(const PackedMatrix& w, Activations& a, uint64_t r0, uint64_t r1) {
  return prepare_fixed_point_rows<PrepLanes>(w, a, r0, r1);
}

void packed_matmul_avx2(const PackedMatrix& w, const Activations& a, uint64_t bb, uint64_t be, float* y) {
  // Fixed point for 4-bit codes only (prepare_activations never gives it
  // for others; the fp32 kernels read only x and the group sums).
  if (a.form != Activations::Form::FixedPoint || w.code_bits != 4) return packed_matmul_impl(w, a, bb, be, y);
  with_digits(a, [&](auto d) { fixed_point_run<decltype(d)::value>(w, a, bb, be, y); });
}

}  // namespace woq::kernels
