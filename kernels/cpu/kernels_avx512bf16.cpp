// AVX-512 + AVX512-BF16: small-M (GEMV) 4-bit kernel on vdpbf16ps, which
// does 32 multiply-adds per instruction where vfmadd231ps does 16.
//
// Nibbles become exact bf16 integers -8..7 with one vpermw table lookup per
// 32 weights. Activations are split into bf16 terms whose sum is exactly the
// value (one term for bf16 inputs, two for fp16), so the result is as exact
// as the fp32 kernel: each product of a small integer and a bf16 term is
// exact and accumulates in fp32. General fp32 activations (three terms),
// larger M and 8-bit codes use the fp32 kernels of kernels_avx512.cpp.
#include "kernels/cpu/numeric.h"
#include "kernels/cpu/simd_avx512.h"

#include "kernels/cpu/packed_kernels.inl"

namespace woq::kernels {
namespace {

// X as bf16 pairs: for each row m, term t, octet o (inputs 8o..8o+7) and
// p in 0..3, one u32 holding term t of x[8o+p] (low half) and x[8o+p+4]
// (high half): the two inputs vdpbf16ps pairs with nibbles p and p+4.
struct PairedX {
  AlignedArray<uint32_t> pairs;
  int terms = 1;
  uint64_t row_stride = 0;   // u32 per row of X (all terms)
  uint64_t term_stride = 0;  // u32 per term
};

// How many bf16 terms make every value of x exact: 1 for bf16 data, 2 for
// fp16 data, 3 for general fp32.
int terms_needed(const float* x, uint64_t n) {
  int terms = 1;
  for (uint64_t i = 0; i < n && terms < 3; ++i) {
    const float r1 = x[i] - bf16_to_float(float_to_bf16(x[i]));
    if (r1 != 0.0f) terms = std::max(terms, r1 - bf16_to_float(float_to_bf16(r1)) != 0.0f ? 3 : 2);
  }
  return terms;
}

void pair_activations(const float* x, uint64_t m, uint64_t k, int terms, PairedX& out) {
  out.terms = terms;
  out.term_stride = k / 2;  // k/8 octets x 4 pairs
  out.row_stride = out.term_stride * terms;
  if (out.pairs.size < m * out.row_stride) out.pairs.allocate(m * out.row_stride);
  for (uint64_t r = 0; r < m; ++r)
    for (uint64_t i = 0; i < k; ++i) {
      float rest = x[r * k + i];
      const uint64_t octet = i / 8, within = i % 8, p = within % 4;
      for (int t = 0; t < terms; ++t) {
        const uint16_t term = float_to_bf16(rest);
        rest -= bf16_to_float(term);  // exact: the residual of a rounding to 8 bits
        uint32_t& slot = out.pairs.get()[r * out.row_stride + t * out.term_stride + octet * 4 + p];
        slot = within < 4 ? (slot & 0xffff0000u) | term : (slot & 0xffffu) | (uint32_t(term) << 16);
      }
    }
}

// bf16 bit patterns of the signed nibble values, indexed by the low 5 bits
// of a 16-bit lane (bit 4 belongs to the next nibble: entries repeat).
__m512i nibble_table() {
  alignas(64) uint16_t t[32];
  for (int i = 0; i < 32; ++i) t[i] = float_to_bf16(float((i & 15) < 8 ? (i & 15) : (i & 15) - 16));
  return _mm512_load_si512(t);
}

template <int MC, int TERMS>
void bf16_small_m(const PackedMatrix& w, const PairedX& xp, uint64_t m0, const float* xsum, uint64_t b, float* out) {
  constexpr int C = MC >= 4 ? 1 : 4 / MC;  // independent accumulation chains per row
  const uint64_t G = w.groups(), g = w.group_size;
  const __m512i table = nibble_table();
  const uint32_t* codes = w.codes.get() + b * w.words_per_block;
  const float* sc = w.scales.get() + b * G * kBlockRows;
  const float* sz = w.scaled_zeros.get() + b * G * kBlockRows;
  const uint32_t* xrow = xp.pairs.get() + m0 * xp.row_stride;
  __m512 total[MC];
  for (int r = 0; r < MC; ++r) total[r] = _mm512_setzero_ps();
  uint64_t octet = 0;
  for (uint64_t j = 0; j < G; ++j) {
    __m512 acc[MC][C];
    for (int r = 0; r < MC; ++r)
      for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
    for (const uint64_t end = octet + g / 8; octet < end; ++octet, codes += kBlockRows) {
      __builtin_prefetch(codes + kPrefetchWords);
      const __m512i d = _mm512_load_si512(codes);
      unrolled(
          [&](auto pc) {
            constexpr int p = decltype(pc)::value;
            const __m512i idx = p == 0 ? d : _mm512_srli_epi32(d, 4 * p);
            const __m512bh wv = (__m512bh)_mm512_permutexvar_epi16(idx, table);
            for (int r = 0; r < MC; ++r)
              for (int t = 0; t < TERMS; ++t) {
                const uint32_t pair = xrow[r * xp.row_stride + t * xp.term_stride + octet * 4 + p];
                acc[r][p % C] = _mm512_dpbf16_ps(acc[r][p % C], wv, (__m512bh)_mm512_set1_epi32(int(pair)));
              }
          },
          std::make_integer_sequence<int, 4>{});
    }
    const __m512 s = _mm512_load_ps(sc + j * kBlockRows), s_z = _mm512_load_ps(sz + j * kBlockRows);
    for (int r = 0; r < MC; ++r) {
      __m512 a = acc[r][0];
      for (int c = 1; c < C; ++c) a = _mm512_add_ps(a, acc[r][c]);
      total[r] = _mm512_fmadd_ps(s, a, total[r]);
      total[r] = _mm512_fnmadd_ps(s_z, _mm512_set1_ps(xsum[(m0 + r) * G + j]), total[r]);
    }
  }
  for (int r = 0; r < MC; ++r) _mm512_store_ps(out + r * kBlockRows, total[r]);
}

template <int MC>
void bf16_small_m_terms(const PackedMatrix& w, const PairedX& xp, uint64_t m0, const float* xsum, uint64_t b,
                        float* out) {
  if (xp.terms == 1) bf16_small_m<MC, 1>(w, xp, m0, xsum, b, out);
  else bf16_small_m<MC, 2>(w, xp, m0, xsum, b, out);
}

}  // namespace

void packed_matmul_avx512bf16(const PackedMatrix& w, const float* x, const float* xsum, uint64_t m, uint64_t bb,
                              uint64_t be, float* y) {
  // Three terms (general fp32 activations) cost more dot products than the
  // fp32 kernel's multiply-adds save: measured slower, so use that kernel.
  const int terms = w.code_bits == 4 && m <= kSmallM ? terms_needed(x, m * w.cols) : 3;
  if (terms == 3) {
    packed_matmul_impl(w, x, xsum, m, bb, be, y);  // the fp32 AVX-512 kernels, compiled into this file too
    return;
  }
  thread_local PairedX xp;
  pair_activations(x, m, w.cols, terms, xp);
  alignas(64) float out[4 * kBlockRows];
  for (uint64_t b = bb; b < be; ++b)
    for (uint64_t m0 = 0; m0 < m;) {
      const uint64_t left = m - m0;
      uint64_t mc;
      if (left >= 4) bf16_small_m_terms<4>(w, xp, m0, xsum, b, out), mc = 4;
      else if (left >= 2) bf16_small_m_terms<2>(w, xp, m0, xsum, b, out), mc = 2;
      else bf16_small_m_terms<1>(w, xp, m0, xsum, b, out), mc = 1;
      Kernel<8>::store_rows(w, out, mc, b, y + m0 * w.rows);
      m0 += mc;
    }
}

}  // namespace woq::kernels
