// AVX-512 + VNNI: small-M (GEMV) kernels on vpdpbusd, which multiplies 64
// unsigned bytes by 64 signed bytes and adds them in groups of four into 16
// int32 lanes: 64 multiply-adds per instruction where vfmadd231ps does 16.
//
// The codes are the unsigned bytes: a 4-bit word (8 nibbles of one row) gives
// two byte vectors, the even and the odd inputs, with one shift and two
// vpternlogd; an 8-bit word is one vpxord away. The activations are the
// signed bytes: fixed-point digits of the values (prepare_fixed_point_...
// below), so one value costs three vpdpbusd per 64 weights (two where Y is
// fp16 / bf16) where fp32 costs four FMAs per 16 plus the decoding. Every
// product and sum inside a block of inputs is exact in int32; per block the
// digit sums are converted and combined in fp32.
// Larger M and non-finite activations use the fp32 kernels (compiled here too).
// An earlier kernel on vdpbf16ps (AVX512-BF16, bf16 terms of the activations)
// was measured slower and removed (docs/CPU_KERNELS.md).
#include "kernels/cpu/simd_avx512.h"

#include "kernels/cpu/packed_kernels.inl"

namespace woq::kernels {
namespace {

// Unsigned code bytes of phase P of a packed word: for 4-bit words the
// nibbles of the even (P = 0) or odd (P = 1) inputs with the centring undone
// (bit 3 flipped: q - 8 -> q), for 8-bit words every byte with bit 7 flipped.
// With kInPlace the odd nibbles stay in place, as 16 q: no shift, and sums
// exactly 16 times too large, which the caller shifts back.
template <int CPW, int P, bool kInPlace>
__m512i code_bytes(__m512i d) {
  if constexpr (CPW == 4) {
    return _mm512_xor_si512(d, _mm512_set1_epi32(int(0x80808080u)));
  } else if constexpr (P == 1 && kInPlace) {
    const __m512i flip = _mm512_set1_epi32(int(0x80808080u)), high = _mm512_set1_epi32(int(0xf0f0f0f0u));
    return _mm512_ternarylogic_epi32(d, flip, high, 0x28);  // (d ^ flip) & high
  } else {
    const __m512i flip = _mm512_set1_epi32(0x08080808), low = _mm512_set1_epi32(0x0f0f0f0f);
    const __m512i v = P == 0 ? d : _mm512_srli_epi32(d, 4);
    return _mm512_ternarylogic_epi32(v, flip, low, 0x28);  // (v ^ flip) & low
  }
}

// acc + the dot products of u's bytes with the four bytes at p, broadcast.
// Written in assembly because GCC emits a separate vpbroadcastd; on Zen 4
// the embedded broadcast took one thread's 4-bit GEMV from DRAM from
// 21.5-21.7 to 22.4-24.2 GB/s (docs/CPU_KERNELS.md).
inline __m512i dpbusd_broadcast(__m512i acc, __m512i u, const uint32_t* p) {
  __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(u), "m"(*p));
  return acc;
}

// Code words per step of the fixed-point loop: C chains over a word's P =
// CPW / 4 phases, so 8-bit words (P = 1) on two chains go in pairs.
constexpr int words_per_step(int CPW, int C) { return C / (CPW / 4) > 1 ? C / (CPW / 4) : 1; }

// One row of 8-bit codes is three vpdpbusd per line, and there the software
// prefetches slowed one thread's DRAM stream on Zen 4 (18.8-20.8 GB/s with
// them, mostly 24-27 without) but sped it up on an Intel Xeon (13.4-13.9
// without, 14.3-15.0 with; two threads 25.5-26.4 against 28.4-29.0): AMD
// CPUs run that tile without them, every other tile and CPU keeps them
// (docs/CPU_KERNELS.md).
bool one_row_of_bytes_prefetches() {
  static const bool prefetch = [] {
    __builtin_cpu_init();
    return !__builtin_cpu_is("amd");
  }();
  return prefetch;
}

// Rows [m0, m0 + MC) of X times block b, D digits, each digit's sums on C
// chains (words_per_step(CPW, C) must divide the words of a block of inputs).
template <int MC, int CPW, int D, int C, bool kPrefetch>
void fixed_point_small_m(const PackedMatrix& w, const Activations& a, uint64_t m0, uint64_t b, float* out) {
  constexpr int P = CPW / 4;          // byte vectors (phases) per code word
  constexpr int kWordsPerStep = words_per_step(CPW, C);
  constexpr bool kInPlace = CPW == 8 && C == 2;  // odd nibbles on a chain of their own (code_bytes)
  const uint64_t G = w.groups(), g = w.group_size, B = a.block_inputs, K = w.cols;
  const uint64_t blocks = K / B, words_per_block = B / CPW;
  const uint32_t* codes = w.codes.get() + b * w.words_per_block;
  const uint16_t* sc = w.scales.get() + b * G * kBlockRows;
  const int8_t* zo = w.zero_offsets.get() + b * G * kBlockRows;
  const uint32_t* digits = a.words.get() + m0 * a.row_words;
  const float* block_scale = a.block_scale.get() + m0 * blocks;
  const int32_t* block_start = a.block_start.get() + m0 * blocks * D;
  const float* xsum = a.digit_xsum.data() + m0 * G;
  __m512 total[MC];
  for (int r = 0; r < MC; ++r) total[r] = _mm512_setzero_ps();
  uint64_t xb = 0;  // block of inputs
  for (uint64_t j = 0; j < G; ++j) {
    const __m512 s = S::load_half(sc + j * kBlockRows), s_z = _mm512_mul_ps(s, S::load_i8(zo + j * kBlockRows));
    for (const uint64_t end = (j + 1) * g / B; xb < end; ++xb) {
      __m512i acc[MC][D][C];
      for (int r = 0; r < MC; ++r)
        for (int d = 0; d < D; ++d) {
          acc[r][d][0] = _mm512_set1_epi32(block_start[(uint64_t(r) * blocks + xb) * D + d]);
          for (int c = 1; c < C; ++c) acc[r][d][c] = _mm512_setzero_si512();
        }
      const uint32_t* dg = digits + xb * words_per_block * P;
      // Word i's phase p goes to chain (i P + p) mod C.
      const auto word_step = [&](auto first_chain) {
        if constexpr (kPrefetch) prefetch_codes(codes);
        const __m512i word = _mm512_load_si512(codes);
        unrolled(
            [&](auto pc) {
              constexpr int p = decltype(pc)::value, c = (decltype(first_chain)::value + p) % C;
              const __m512i u = code_bytes<CPW, p, kInPlace>(word);
              for (int r = 0; r < MC; ++r)
                for (int d = 0; d < D; ++d)
                  acc[r][d][c] = dpbusd_broadcast(acc[r][d][c], u, dg + r * a.row_words + d * a.digit_words + p);
            },
            std::make_integer_sequence<int, P>{});
        codes += kBlockRows;
        dg += P;
      };
      // Inlined by force: otherwise GCC kept the two-digit 8-bit variants'
      // accumulators in memory, stored after every word (M = 4 0.93 ms
      // against 0.66 with three digits; docs/CPU_KERNELS.md).
      const auto step = [&](auto index) __attribute__((always_inline)) {
        word_step(std::integral_constant<int, decltype(index)::value * P>{});
      };
      for (uint64_t i = 0; i < words_per_block; i += kWordsPerStep)
        unrolled(step, std::make_integer_sequence<int, kWordsPerStep>{});
      for (int r = 0; r < MC; ++r) {
        __m512i sum[D];
        for (int d = 0; d < D; ++d) {
          sum[d] = acc[r][d][0];
          for (int c = 1; c < C; ++c)
            sum[d] = _mm512_add_epi32(sum[d], kInPlace ? _mm512_srai_epi32(acc[r][d][c], 4) : acc[r][d][c]);
        }
        // sum_d 256^d * sum[d], highest digit first; each sum[d] is exact.
        const __m512 base = _mm512_set1_ps(256.0f);
        __m512 v = _mm512_cvtepi32_ps(sum[D - 1]);
        for (int d = D - 2; d >= 0; --d) v = _mm512_fmadd_ps(v, base, _mm512_cvtepi32_ps(sum[d]));
        v = _mm512_mul_ps(v, _mm512_set1_ps(block_scale[uint64_t(r) * blocks + xb]));
        total[r] = _mm512_fmadd_ps(s, v, total[r]);
      }
    }
    for (int r = 0; r < MC; ++r) total[r] = _mm512_fnmadd_ps(s_z, _mm512_set1_ps(xsum[uint64_t(r) * G + j]), total[r]);
  }
  for (int r = 0; r < MC; ++r) _mm512_store_ps(out + r * kBlockRows, total[r]);
}

template <int CPW, int D>
void fixed_point_run(const PackedMatrix& w, const Activations& a, uint64_t bb, uint64_t be, float* y) {
  const uint64_t words_per_block = a.block_inputs / CPW;
  over_row_tiles<4>(w, a.m, bb, be, y, [&](auto mc, uint64_t m0, uint64_t b, float* out) {
    constexpr int MC = decltype(mc)::value;
    // Independent chains per digit and row: two, so that vpdpbusd's latency
    // (4 cycles on Zen 4) is hidden, except for three digits of four rows,
    // which are 12 chains already (two each spilled: M = 4 0.55 -> 0.69-0.81
    // ms, Zen 5, docs/CPU_KERNELS.md). A 4-bit word's phases take one each;
    // 8-bit words alternate, in pairs: a lone word (blocks of 4 inputs) has
    // one chain.
    constexpr int C = MC >= 4 && D == 3 ? 1 : 2;
    if (words_per_block % words_per_step(CPW, C)) fixed_point_small_m<MC, CPW, D, 1, true>(w, a, m0, b, out);
    else if (MC == 1 && CPW == 4 && !one_row_of_bytes_prefetches())
      fixed_point_small_m<MC, CPW, D, C, false>(w, a, m0, b, out);
    else fixed_point_small_m<MC, CPW, D, C, true>(w, a, m0, b, out);
  });
}

}  // namespace

namespace {

// Lane operations prepare_fixed_point (fixed_point_prep.inl) runs on.
struct PrepLanes {
  static constexpr int kLanes = 16;
  using V = __m512;
  using Vi = __m512i;
  using Mask = __mmask16;
  static Mask mask(uint64_t n) { return Mask(n >= 16 ? 0xffff : (1u << n) - 1); }
  static V load(const float* p, Mask m) { return _mm512_maskz_loadu_ps(m, p); }
  static V abs(V v) { return _mm512_abs_ps(v); }
  static V max(V a, V b) { return _mm512_max_ps(a, b); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static float reduce_max(V v) { return _mm512_reduce_max_ps(v); }
  static float reduce_add(V v) { return _mm512_reduce_add_ps(v); }
  static V set1(float v) { return _mm512_set1_ps(v); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  // Rounding to nearest even whatever the caller's MXCSR says.
  static Vi round(V v) { return _mm512_cvt_roundps_epi32(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static Vi izero() { return _mm512_setzero_si512(); }
  static Vi low_byte(Vi v) { return _mm512_srai_epi32(_mm512_slli_epi32(v, 24), 24); }
  static Vi carry(Vi v, Vi digit) { return _mm512_srai_epi32(_mm512_sub_epi32(v, digit), 8); }
  static Vi iadd(Vi a, Vi b) { return _mm512_add_epi32(a, b); }
  static int32_t reduce_iadd(Vi v) { return _mm512_reduce_add_epi32(v); }
  // The low bytes of the lanes, in the order of `order` (16 bytes).
  static void store_bytes(uint8_t* dst, Vi digit, Mask m, __m128i order) {
    _mm_mask_storeu_epi8(dst, m, _mm_shuffle_epi8(_mm512_cvtepi32_epi8(digit), order));
  }
};

}  // namespace
}  // namespace woq::kernels

#include "kernels/cpu/fixed_point_prep.inl"

namespace woq::kernels {

bool prepare_fixed_point_rows_avx512vnni(const PackedMatrix& w, Activations& a, uint64_t r0, uint64_t r1) {
  return prepare_fixed_point_rows<PrepLanes>(w, a, r0, r1);
}

void packed_matmul_avx512vnni(const PackedMatrix& w, const Activations& a, uint64_t bb, uint64_t be, float* y) {
  if (a.form != Activations::Form::FixedPoint) return packed_matmul_impl(w, a, bb, be, y);
  with_digits(a, [&](auto d) {
    if (w.code_bits == 4) fixed_point_run<8, decltype(d)::value>(w, a, bb, be, y);
    else fixed_point_run<4, decltype(d)::value>(w, a, bb, be, y);
  });
}

}  // namespace woq::kernels
