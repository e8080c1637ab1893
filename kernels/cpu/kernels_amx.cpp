// AMX (AMX-TILE, AMX-INT8, AMX-BF16): the fixed-point matmul of kernels_avx512vnni.cpp
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
// bf16 X from kAmxBf16MinRows rows takes AMX-BF16 instead (below): X as it
// is times the codes widened to bf16 q - z.
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

// The calling thread's tile configuration, saved on entry to a kernel and
// put back on exit: another library on the same thread that configures its
// tiles once per thread and keeps them (llama.cpp's ggml does) finds them
// configured as it left them, instead of released under it (its next tile
// load then faults). A thread that had none configured gets the tile state
// released, so that the OS need not save it at every switch. Tile data is
// not kept (no caller can expect it to be: the ABI does not preserve it).
class CallersTileConfig {
 public:
  CallersTileConfig() { __asm__ volatile("sttilecfg %0" : "=m"(saved_)::"memory"); }
  ~CallersTileConfig() {
    if (saved_.palette != 0) __asm__ volatile("ldtilecfg %0" ::"m"(saved_) : "memory");
    else __asm__ volatile("tilerelease" ::: "memory");
  }
  CallersTileConfig(const CallersTileConfig&) = delete;
  CallersTileConfig& operator=(const CallersTileConfig&) = delete;

 private:
  TileConfig saved_;
};

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
  static_assert(kFixedPointDigits == 3, "one sum tile per digit");  // amx always has three (prepare_activations)
  const uint64_t G = w.groups(), g = w.group_size, B = a.block_inputs, blocks = w.cols / B;
  const uint64_t chunk = std::min(B, kAmxInputs);  // inputs per tile of digits
  const uint8_t* digits = reinterpret_cast<const uint8_t*>(a.words.get() + m0 * a.row_words);
  const uint64_t row_stride = a.row_words * 4, digit_stride = a.digit_words * 4;
  const float* block_scale = a.block_scale.get() + m0 * blocks;
  const float* xsum = a.digit_xsum.data() + m0 * G;
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

// ---- bf16 X (AMX-BF16) ----
// tdpbf16ps multiplies a 16 x 32 tile of bf16 by a 16 x (16 x 2) tile of
// bf16 into 16 x 16 fp32 sums. Bf16 holds q - z exactly (widened per
// panel), so every product with bf16 X is exact in fp32 and the sums round
// as an fp32 GEMM's do; per group they are scaled by s. Tiles of 16 rows x
// 64 bytes: tmm0-3 the sums of row group r (16 rows of X) and output block
// o in tmm(2r + o), tmm4-5 row group r's X, tmm6-7 output block o's codes.
// A row group of fewer than 16 rows reads padding rows, whose sums are
// never combined (each row of a tile's sums depends on its row of X alone).
#define WOQ_TILE_DPBF16PS(c, a, b) __asm__ volatile("tdpbf16ps %%tmm" #b ", %%tmm" #a ", %%tmm" #c ::: "memory")

void configure_bf16_tiles() {
  TileConfig c;
  for (int t = 0; t < 8; ++t) {
    c.colsb[t] = 64;
    c.rows[t] = uint8_t(kAmxRows);
  }
  __asm__ volatile("ldtilecfg %0" ::"m"(c));
}

// Block b's codes as bf16 q - z, K / 2 lines of 64 bytes: line i holds, per
// output, inputs 2i and 2i + 1 (the low half the even one), so that the 16
// lines of a tile are 32 consecutive inputs. |q - z| <= 255 is exact in
// bf16, and the zero-point is then part of every product: the factored
// form's s (z - c) sum_k x would cancel a large part of the sum when a
// massive activation meets weights near zero (tests). The float of such an
// integer has 16 zero low bits: its top half is its bf16, and two of them
// are one or.
void widen_to_bf16(const PackedMatrix& w, uint64_t b, uint32_t* out) {
  const uint64_t cpw = w.codes_per_word(), words = w.cols / cpw, words_per_group = w.group_size / cpw;
  const int8_t* zero_offsets = w.zero_offsets.get() + b * w.groups() * kBlockRows;
  const uint32_t* codes = w.codes.get() + b * w.words_per_block;
  if (w.code_bits == 4) {
    // vpermps reads the low 4 bits of each index: the table sign-extends.
    const __m512 table = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, -8, -7, -6, -5, -4, -3, -2, -1);
    for (uint64_t i = 0; i < words; ++i) {
      const __m512 zc = S::load_i8(zero_offsets + i / words_per_group * kBlockRows);
      const __m512i d = _mm512_load_si512(codes + i * kBlockRows);
      const auto value = [&](int t) {
        return _mm512_castps_si512(_mm512_sub_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(d, unsigned(4 * t)), table), zc));
      };
      for (int p = 0; p < 4; ++p)
        _mm512_store_si512(out + (4 * i + uint64_t(p)) * kBlockRows,
                           _mm512_or_si512(_mm512_srli_epi32(value(2 * p), 16), value(2 * p + 1)));
    }
    return;
  }
  for (uint64_t i = 0; i < words; ++i) {
    const __m512 zc = S::load_i8(zero_offsets + i / words_per_group * kBlockRows);
    const __m512i d = _mm512_load_si512(codes + i * kBlockRows);
    const auto value = [&](int t) {
      const __m512i q_c = _mm512_srai_epi32(_mm512_slli_epi32(d, unsigned(24 - 8 * t)), 24);
      return _mm512_castps_si512(_mm512_sub_ps(_mm512_cvtepi32_ps(q_c), zc));
    };
    for (int p = 0; p < 2; ++p)
      _mm512_store_si512(out + (2 * i + uint64_t(p)) * kBlockRows,
                         _mm512_or_si512(_mm512_srli_epi32(value(2 * p), 16), value(2 * p + 1)));
  }
}

// The fp32 sums over `chunks` tiles of 32 inputs of R row groups x O output
// blocks into sums[2r + o] (16 x 16 each): row group r's X at
// x + r * 16 * row_stride, output block o's codes at codes + o * block_stride.
template <int R, int O>
void bf16_sums(const uint8_t* x, uint64_t row_stride, const uint8_t* codes, uint64_t block_stride, uint64_t chunks,
               float (*sums)[kAmxRows * kBlockRows]) {
  WOQ_TILE_ZERO(0);
  if constexpr (O > 1) WOQ_TILE_ZERO(1);
  if constexpr (R > 1) WOQ_TILE_ZERO(2);
  if constexpr (R > 1 && O > 1) WOQ_TILE_ZERO(3);
  const uint8_t* x1 = x + kAmxRows * row_stride;
  for (uint64_t c = 0; c < chunks; ++c) {
    // Every load before the products (a standalone loop: a tile load issued
    // after a product waited for it, 22 against 7.4 ns a product), X first
    // (5-9% faster than codes first, docs/CPU_KERNELS.md).
    const uint8_t* b = codes + c * kAmxRows * 64;
    WOQ_TILE_LOAD(4, x + c * 64, row_stride);
    if constexpr (R > 1) WOQ_TILE_LOAD(5, x1 + c * 64, row_stride);
    WOQ_TILE_LOAD(6, b, 64);
    if constexpr (O > 1) WOQ_TILE_LOAD(7, b + block_stride, 64);
    WOQ_TILE_DPBF16PS(0, 4, 6);
    if constexpr (O > 1) WOQ_TILE_DPBF16PS(1, 4, 7);
    if constexpr (R > 1) WOQ_TILE_DPBF16PS(2, 5, 6);
    if constexpr (R > 1 && O > 1) WOQ_TILE_DPBF16PS(3, 5, 7);
  }
  WOQ_TILE_STORE(0, sums[0], 64);
  if constexpr (O > 1) WOQ_TILE_STORE(1, sums[1], 64);
  if constexpr (R > 1) WOQ_TILE_STORE(2, sums[2], 64);
  if constexpr (R > 1 && O > 1) WOQ_TILE_STORE(3, sums[3], 64);
}

// Widened code bytes per panel: they stay in L2 while every pass of rows of
// X meets them.
uint64_t bf16_panel_blocks(uint64_t cols) { return std::clamp<uint64_t>((1024u << 10) / (cols * 32), 1, 16); }

// Rows of X per pass over a panel, in pairs of row groups that share each
// group's codes from L1 (loaded from L2 by the first pair).
constexpr uint64_t kBf16PassRows = 4 * kAmxRows;

void matmul_bf16(const PackedMatrix& w, const Activations& a, uint64_t bb, uint64_t be, float* y) {
  constexpr uint64_t T = kAmxRows * kBlockRows;  // floats of one tile of sums
  constexpr uint64_t kGroupsPerPass = kBf16PassRows / kAmxRows;
  const uint64_t K = w.cols, G = w.groups(), g = w.group_size;
  const uint64_t P = bf16_panel_blocks(K), block_words = K * kBlockRows / 2;
  thread_local AlignedArray<uint32_t> widened;
  thread_local AlignedArray<float> out;  // row groups of a pass x P blocks x 16 x 16
  if (widened.size < P * block_words) widened.allocate(P * block_words);
  if (out.size < kGroupsPerPass * P * T) out.allocate(kGroupsPerPass * P * T);
  alignas(64) float sums[2][4][T];  // one step's sums while the previous step's are combined
  const uint64_t row_stride = a.row_words * 4;
  const uint64_t block_bytes = block_words * 4, chunks = g / kAmxBf16Inputs;
  // A step: row groups [r, r + R) of the pass x blocks [p, p + O) of the panel, group j.
  struct Step {
    uint64_t r, p, j;
    int R, O;
  };
  const CallersTileConfig callers;
  configure_bf16_tiles();
  for (uint64_t b0 = bb; b0 < be; b0 += P) {
    const uint64_t nb = std::min(P, be - b0);
    for (uint64_t p = 0; p < nb; ++p)
      widen_to_bf16(w, b0 + p, widened.get() + p * block_words);
    const uint8_t* codes = reinterpret_cast<const uint8_t*>(widened.get());
    for (uint64_t m0 = 0; m0 < a.m; m0 += kBf16PassRows) {
      const uint64_t pass_rows = std::min(kBf16PassRows, a.m - m0);
      const uint64_t row_groups = (pass_rows + kAmxRows - 1) / kAmxRows;
      const uint8_t* x = reinterpret_cast<const uint8_t*>(a.words.get() + m0 * a.row_words);
      std::fill(out.get(), out.get() + row_groups * nb * T, 0.0f);
      // total += s * sum, per row of X and output.
      const auto combine = [&](const Step& st, float (*set)[T]) {
        for (int r = 0; r < st.R; ++r) {
          const uint64_t row0 = (st.r + uint64_t(r)) * kAmxRows, rows = std::min(kAmxRows, pass_rows - row0);
          for (int o = 0; o < st.O; ++o) {
            const __m512 s = S::load_half(w.scales.get() + ((b0 + st.p + uint64_t(o)) * G + st.j) * kBlockRows);
            const float* sum = set[2 * r + o];
            float* total = out.get() + ((st.r + uint64_t(r)) * nb + st.p + uint64_t(o)) * T;
            for (uint64_t i = 0; i < rows; ++i)
              _mm512_store_ps(total + i * kBlockRows,
                              _mm512_fmadd_ps(s, _mm512_load_ps(sum + i * kBlockRows), _mm512_load_ps(total + i * kBlockRows)));
          }
        }
      };
      Step pending{};
      bool has_pending = false;
      int set = 0;
      for (uint64_t j = 0; j < G; ++j)
        for (uint64_t p = 0; p < nb; p += 2)
          for (uint64_t r = 0; r < row_groups; r += 2) {
            const Step st{r, p, j, row_groups - r > 1 ? 2 : 1, nb - p > 1 ? 2 : 1};
            const uint8_t* xs = x + r * kAmxRows * row_stride + j * g * 2;
            const uint8_t* cs = codes + p * block_bytes + j * g * 32;
            float (*into)[T] = sums[set];
            if (st.R == 2 && st.O == 2) bf16_sums<2, 2>(xs, row_stride, cs, block_bytes, chunks, into);
            else if (st.R == 2) bf16_sums<2, 1>(xs, row_stride, cs, block_bytes, chunks, into);
            else if (st.O == 2) bf16_sums<1, 2>(xs, row_stride, cs, block_bytes, chunks, into);
            else bf16_sums<1, 1>(xs, row_stride, cs, block_bytes, chunks, into);
            // The previous step's sums are combined while this one's products run.
            if (has_pending) combine(pending, sums[set ^ 1]);
            pending = st;
            has_pending = true;
            set ^= 1;
          }
      if (has_pending) combine(pending, sums[set ^ 1]);
      for (uint64_t r = 0; r < row_groups; ++r) {
        const uint64_t row0 = r * kAmxRows;
        for (uint64_t p = 0; p < nb; ++p)
          store_rows(w, out.get() + (r * nb + p) * T, std::min(kAmxRows, pass_rows - row0), b0 + p,
                     y + (m0 + row0) * w.rows);
      }
    }
  }
}

}  // namespace

bool prepare_bf16_rows_amx(const PackedMatrix& w, Activations& a, uint64_t r0, uint64_t r1) {
  const uint64_t K = w.cols;
  // Every bf16 in [2^-96, 2^64) is a multiple of 2^-103 and normal, as is
  // every nonzero sum of their products with q - z: tdpbf16ps, which
  // flushes subnormals, never meets one, nor can its sums overflow.
  const __m512i magnitude = _mm512_set1_epi32(0x7fffffff), smallest = _mm512_set1_epi32(0x0f800000),
                limit = _mm512_set1_epi32(0x5f800000), low = _mm512_set1_epi32(0xffff);
  for (uint64_t r = r0; r < r1; ++r) {
    uint16_t* row = reinterpret_cast<uint16_t*>(a.words.get() + r * a.row_words);
    for (uint64_t k = 0; k < K; k += 16) {
      const __m512i v = _mm512_loadu_si512(a.x + r * K + k);
      const __m512i mag = _mm512_and_si512(v, magnitude);
      const __mmask16 zero = _mm512_cmpeq_epi32_mask(mag, _mm512_setzero_si512());
      const __mmask16 inside = _mm512_cmpge_epi32_mask(mag, smallest) & _mm512_cmplt_epi32_mask(mag, limit);
      const __mmask16 is_bf16 = _mm512_testn_epi32_mask(v, low);
      if (((zero | inside) & is_bf16) != 0xffff) return false;
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(row + k), _mm512_cvtepi32_epi16(_mm512_srli_epi32(v, 16)));
    }
  }
  return true;
}

void packed_matmul_amx(const PackedMatrix& w, const Activations& a, uint64_t bb, uint64_t be, float* y) {
  if (a.form == Activations::Form::Bf16) return matmul_bf16(w, a, bb, be, y);
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
  const CallersTileConfig callers;
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
}

#undef WOQ_TILE_ZERO
#undef WOQ_TILE_LOAD
#undef WOQ_TILE_STORE
#undef WOQ_TILE_DPBSSD
#undef WOQ_TILE_DPBF16PS

}  // namespace woq::kernels
