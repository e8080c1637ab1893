// AMX (AMX-TILE + AMX-INT8): the fixed-point matmul of kernels_avx512vnni.cpp
// for 16 rows of X at a time on tile instructions. tdpbssd multiplies a
// 16 x 64 tile of signed bytes by a 16 x (16 x 4) tile of signed bytes into
// 16 x 16 int32 sums: 16384 multiply-adds per instruction where vpdpbusd
// does 64. The signed bytes are the activations' fixed-point digits (one
// tile per digit: 16 rows of X x 64 inputs, read in place with the stride of
// a row of X) and the centred codes q - c (the packed layout's 64-byte lines
// are the tile's rows as they stand for 8-bit codes; 4-bit lines are widened
// into two lines of bytes, once per panel of blocks for all rows of X).
// Per block of inputs the three digits' sums are the integers vpdpbusd
// computes, combined in fp32 by the same operations in the same order, so
// every row of Y has the bits the avx512vnni kernel gives it alone (tests).
// A last tile of fewer than 16 rows of X reads the padding rows of digits
// (kFixedPointPadRows) and combines only its own rows. From 8 rows of X
// (16 for groups of 32): below, the avx512vnni kernel was faster.
#include <algorithm>

#include "kernels/cpu/simd_avx512.h"

namespace woq::kernels {
namespace {

// Tile operations with the tile number spelled in the instruction (tiles
// are not allocatable registers) and a memory clobber: GCC 12's intrinsics
// tell the compiler of no memory access, so it could move the surrounding
// loads and stores across them.
#define WOQ_TILE_ZERO(t) __asm__ volatile("tilezero %%tmm" #t ::: "memory")
#define WOQ_TILE_LOAD(t, base, stride) \
  __asm__ volatile("tileloadd (%0,%1,1), %%tmm" #t ::"r"(base), "r"(uint64_t(stride)) : "memory")
#define WOQ_TILE_STORE(t, base, stride) \
  __asm__ volatile("tilestored %%tmm" #t ", (%0,%1,1)" ::"r"(base), "r"(uint64_t(stride)) : "memory")
// C[t] += A[a] . B[b] over signed bytes.
#define WOQ_TILE_DPBSSD(c, a, b) __asm__ volatile("tdpbssd %%tmm" #b ", %%tmm" #a ", %%tmm" #c ::: "memory")

// Palette 1: tmm0-2 the digits' int32 sums (16 rows of X x 16 outputs),
// tmm3 the codes (chunk / 4 quads of inputs x 16 outputs), tmm4-6 the digits
// (16 rows of X x chunk inputs); chunk = 64 inputs, or 32 for blocks of 32
// inputs (groups of 32).
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};
static_assert(sizeof(TileConfig) == 64);

void configure_tiles(uint64_t chunk) {
  TileConfig c;
  for (int t = 0; t < 7; ++t) {
    c.colsb[t] = t >= 4 ? uint16_t(chunk) : uint16_t(64);
    c.rows[t] = t == 3 ? uint8_t(chunk / 4) : uint8_t(kAmxRows);
  }
  __asm__ volatile("ldtilecfg %0" ::"m"(c));
}

// Block b's 4-bit codes as signed bytes, two 64-byte lines per packed line:
// the even inputs' nibbles, then the odd inputs' (the digits' order), each
// sign-extended from its centred field.
void widen_nibbles(const uint32_t* codes, uint64_t lines, int8_t* out) {
  const __m512i low = _mm512_set1_epi8(0x0f), eight = _mm512_set1_epi8(8);
  for (uint64_t i = 0; i < lines; ++i) {
    const __m512i d = _mm512_load_si512(codes + i * kBlockRows);
    // (field & 0xf) ^ 8 - 8 sign-extends a 4-bit two's complement field.
    const __m512i even = _mm512_sub_epi8(_mm512_ternarylogic_epi32(d, low, eight, 0x6a), eight);
    const __m512i odd = _mm512_sub_epi8(_mm512_ternarylogic_epi32(_mm512_srli_epi32(d, 4), low, eight, 0x6a), eight);
    _mm512_store_si512(out + i * 128, even);
    _mm512_store_si512(out + i * 128 + 64, odd);
  }
}

// Blocks of outputs per panel: their code bytes stay in L2 (at most 768 KiB,
// at most 16 blocks) while every 16 rows of X meet them, and the rows'
// digits of one block of inputs stay in L1 while they meet every block of
// the panel. (Block after block, each block re-read every row's digits from
// L3: M = 256 took 246 instead of 141 ms a block, docs/CPU_KERNELS.md.)
uint64_t panel_blocks(uint64_t cols) { return std::clamp<uint64_t>((768u << 10) / (cols * kBlockRows), 1, 16); }

// Rows [m0, m0 + rows) of X (rows <= 16) times blocks [b0, b0 + nb), block
// b0 + p's codes at code_bytes + p * block_bytes (one 64-byte line per 4
// inputs); out is nb x 16 x 16, no bias. The tiles always take 16 rows of
// digits (the planes are padded for it); only `rows` are combined.
void panel_rows16(const PackedMatrix& w, const Activations& a, const int8_t* code_bytes, uint64_t block_bytes,
                  uint64_t m0, uint64_t rows, uint64_t b0, uint64_t nb, float* out) {
  static_assert(kFixedPointDigits == 3, "one sum tile per digit");
  const uint64_t G = w.groups(), g = w.group_size, B = a.block_inputs, blocks = w.cols / B;
  const uint64_t chunk = std::min(B, kAmxInputs);  // inputs per tile of digits
  const uint8_t* digits = reinterpret_cast<const uint8_t*>(a.words.get() + m0 * a.row_words);
  const uint64_t row_stride = a.row_words * 4, digit_stride = a.digit_words * 4;
  const float* block_scale = a.block_scale.get() + m0 * blocks;
  const float* xsum = a.xsum.data() + m0 * G;
  alignas(64) int32_t sums[kFixedPointDigits][kAmxRows * kBlockRows];
  std::fill(out, out + nb * kAmxRows * kBlockRows, 0.0f);
  for (uint64_t xb = 0; xb < blocks; ++xb) {
    const uint64_t j = xb * B / g;                  // group
    const bool group_ends = (xb + 1) * B % g == 0;  // then its zero-point term follows
    for (uint64_t p = 0; p < nb; ++p) {
      const int8_t* codes = code_bytes + p * block_bytes;
      WOQ_TILE_ZERO(0);
      WOQ_TILE_ZERO(1);
      WOQ_TILE_ZERO(2);
      for (uint64_t k = xb * B; k < (xb + 1) * B; k += chunk) {
        WOQ_TILE_LOAD(3, codes + k * kBlockRows, 64);
        WOQ_TILE_LOAD(4, digits + k, row_stride);
        WOQ_TILE_LOAD(5, digits + digit_stride + k, row_stride);
        WOQ_TILE_LOAD(6, digits + 2 * digit_stride + k, row_stride);
        WOQ_TILE_DPBSSD(0, 4, 3);
        WOQ_TILE_DPBSSD(1, 5, 3);
        WOQ_TILE_DPBSSD(2, 6, 3);
      }
      WOQ_TILE_STORE(0, sums[0], 64);
      WOQ_TILE_STORE(1, sums[1], 64);
      WOQ_TILE_STORE(2, sums[2], 64);
      // As fixed_point_small_m: sum_d 256^d sum[d], highest digit first,
      // times the block's 2^(e - 22), then the group scale; after a group's
      // last block of inputs its zero-point term.
      const uint64_t at = ((b0 + p) * G + j) * kBlockRows;
      const __m512 s = S::load_half(w.scales.get() + at), s_z = _mm512_mul_ps(s, S::load_i8(w.zero_offsets.get() + at));
      const __m512 base = _mm512_set1_ps(256.0f);
      float* total = out + p * kAmxRows * kBlockRows;
#pragma GCC unroll 16
      for (uint64_t r = 0; r < kAmxRows; ++r) {
        if (r == rows) break;
        __m512 v = _mm512_cvtepi32_ps(_mm512_load_si512(sums[2] + r * kBlockRows));
        v = _mm512_fmadd_ps(v, base, _mm512_cvtepi32_ps(_mm512_load_si512(sums[1] + r * kBlockRows)));
        v = _mm512_fmadd_ps(v, base, _mm512_cvtepi32_ps(_mm512_load_si512(sums[0] + r * kBlockRows)));
        v = _mm512_mul_ps(v, _mm512_set1_ps(block_scale[r * blocks + xb]));
        __m512 t = _mm512_fmadd_ps(s, v, _mm512_load_ps(total + r * kBlockRows));
        if (group_ends) t = _mm512_fnmadd_ps(s_z, _mm512_set1_ps(xsum[r * G + j]), t);
        _mm512_store_ps(total + r * kBlockRows, t);
      }
    }
  }
}

}  // namespace

void packed_matmul_amx(const PackedMatrix& w, const Activations& a, uint64_t bb, uint64_t be, float* y) {
  const uint64_t min_rows = a.block_inputs % kAmxInputs == 0 ? kAmxMinRows : kAmxMinRows32;
  if (a.form != Activations::Form::FixedPoint || a.block_inputs % kAmxMinInputs != 0 || a.m < min_rows)
    return packed_matmul_avx512vnni(w, a, bb, be, y);
  const uint64_t P = panel_blocks(w.cols);
  const uint64_t block_bytes = w.cols * kBlockRows;  // code bytes of one block
  // One thread's widened 4-bit codes of one panel and its partial outputs,
  // reused across calls.
  thread_local AlignedArray<int8_t> widened;
  thread_local AlignedArray<float> out;
  if (w.code_bits == 4 && widened.size < P * block_bytes) widened.allocate(P * block_bytes);
  if (out.size < P * kAmxRows * kBlockRows) out.allocate(P * kAmxRows * kBlockRows);
  configure_tiles(std::min(a.block_inputs, kAmxInputs));
  for (uint64_t b0 = bb; b0 < be; b0 += P) {
    const uint64_t nb = std::min(P, be - b0);
    const int8_t* code_bytes = reinterpret_cast<const int8_t*>(w.codes.get() + b0 * w.words_per_block);
    if (w.code_bits == 4) {
      for (uint64_t p = 0; p < nb; ++p)
        widen_nibbles(w.codes.get() + (b0 + p) * w.words_per_block, w.cols / 8, widened.get() + p * block_bytes);
      code_bytes = widened.get();
    }
    for (uint64_t m0 = 0; m0 < a.m; m0 += kAmxRows) {
      const uint64_t rows = std::min(kAmxRows, a.m - m0);
      panel_rows16(w, a, code_bytes, block_bytes, m0, rows, b0, nb, out.get());
      for (uint64_t p = 0; p < nb; ++p)
        store_rows(w, out.get() + p * kAmxRows * kBlockRows, rows, b0 + p, y + m0 * w.rows);
    }
  }
  // Tile state off again, so that the OS need not save it at every switch.
  __asm__ volatile("tilerelease" ::: "memory");
}

#undef WOQ_TILE_ZERO
#undef WOQ_TILE_LOAD
#undef WOQ_TILE_STORE
#undef WOQ_TILE_DPBSSD

}  // namespace woq::kernels
