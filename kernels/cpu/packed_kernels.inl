// The packed-layout matmul, written once over a SIMD traits struct `S` with
// 16 fp32 lanes (one per row of a block). kernels_<isa>.cpp define S for
// their instruction set and include this file. See packed.h for the layout.
//
// S provides: F (16 floats), I (16 u32), zero(), load(p) (64-byte aligned),
// load_half(p) (16 fp16, 32-byte aligned), load_i8(p) (16 int8, 16-byte
// aligned), set1(v), fma(a,b,c) = a*b+c, fnma(a,b,c) = c-a*b,
// fms(a,b,c) = a*b-c, add(a,b), mul(a,b), loadi(p), store(p,v), and the
// signed fields as floats:
// nibble<T>(d) = bits 4T..4T+3 of d, byte<T>(d) = bits 8T..8T+7.

#include <algorithm>
#include <array>
#include <utility>

namespace woq::kernels {
namespace {

using F = S::F;
using I = S::I;

template <class Body, int... T>
inline void unrolled(Body&& body, std::integer_sequence<int, T...>) {
  (body(std::integral_constant<int, T>{}), ...);
}

// Storage for one thread's scratch buffers, reused across calls.
struct Scratch {
  AlignedArray<float> weights;  // kPanel blocks x kKc x 16 dequantized weights
  AlignedArray<float> tile;     // kPanel blocks x M x 16 partial outputs
  float* ensure(AlignedArray<float>& a, uint64_t n) {
    if (a.size < n) a.allocate(n);
    return a.get();
  }
};

// Blocked GEMM: a panel of kPanel blocks is dequantized kKc inputs at a time
// (kPanel x 16 x kKc floats = 64 KiB, in L2); each S::kGemmRows rows of X
// (S::kGemmRows x kKc floats, in L1) then meet every S::kGemmBlocks blocks
// of the panel in turn, so X is read from outer caches once per panel.
constexpr uint64_t kKc = 128;
constexpr uint64_t kPanel = 8;
// GEMV streams codes from DRAM. On top of the hardware prefetchers, each
// 64-byte line is prefetched twice: into L1 2 KiB ahead of its load and into
// L2 12 KiB ahead. One thread on Zen 4 read 18 GB/s with neither, 23-25 with
// the first and 28-32 with both (docs/CPU_KERNELS.md); the one-row 8-bit
// avx512vnni loop goes faster without them and skips them.
constexpr uint64_t kPrefetchL1Words = 16 * 32;
constexpr uint64_t kPrefetchL2Words = 16 * 192;

inline void prefetch_codes(const uint32_t* codes) {
  __builtin_prefetch(codes + kPrefetchL1Words, 0, 3);
  __builtin_prefetch(codes + kPrefetchL2Words, 0, 2);
}

// The largest tile of MC, MC/2, .., 1 rows of X that `left` rows fill:
// tile(integral_constant<MC>, m0, b, out); returns its rows.
template <int MC, class Tile>
uint64_t run_row_tile(uint64_t left, uint64_t m0, uint64_t b, float* out, Tile& tile) {
  if constexpr (MC > 1)
    if (left < MC) return run_row_tile<MC / 2>(left, m0, b, out, tile);
  tile(std::integral_constant<int, MC>{}, m0, b, out);
  return MC;
}

// The small-M kernels' loop, block by block over [bb, be): the rows of X in
// tiles of up to MaxTile (a power of two) rows, each into Y.
template <int MaxTile, class Tile>
void over_row_tiles(const PackedMatrix& w, uint64_t m, uint64_t bb, uint64_t be, float* y, Tile&& tile) {
  alignas(64) float out[MaxTile * kBlockRows];
  for (uint64_t b = bb; b < be; ++b)
    for (uint64_t m0 = 0; m0 < m;) {
      const uint64_t mc = run_row_tile<MaxTile>(m - m0, m0, b, out, tile);
      store_rows(w, out, mc, b, y + m0 * w.rows);
      m0 += mc;
    }
}

template <int CPW>  // codes per u32 word: 8 (4-bit) or 4 (8-bit)
struct Kernel {
  template <int T>
  static F code(I d) {
    if constexpr (CPW == 8) return S::template nibble<T>(d);
    else return S::template byte<T>(d);
  }

  // MC rows of X (starting at x) times block b; out is MC x 16, no bias.
  template <int MC>
  static void small_m(const PackedMatrix& w, const float* x, const float* xsum, uint64_t b, float* out) {
    constexpr int C = MC >= 4 ? 1 : 4 / MC;  // independent FMA chains per row
    const uint64_t K = w.cols, G = w.groups(), g = w.group_size;
    const uint32_t* codes = w.codes.get() + b * w.words_per_block;
    const uint16_t* sc = w.scales.get() + b * G * kBlockRows;
    const int8_t* zo = w.zero_offsets.get() + b * G * kBlockRows;
    F total[MC];
    for (int r = 0; r < MC; ++r) total[r] = S::zero();
    uint64_t k = 0;
    for (uint64_t j = 0; j < G; ++j) {
      F acc[MC][C];
      for (int r = 0; r < MC; ++r)
        for (int c = 0; c < C; ++c) acc[r][c] = S::zero();
      for (const uint64_t end = k + g; k < end; k += CPW, codes += kBlockRows) {
        prefetch_codes(codes);
        const I d = S::loadi(codes);
        unrolled(
            [&](auto t) {
              const F q = code<decltype(t)::value>(d);
              for (int r = 0; r < MC; ++r)
                acc[r][t % C] = S::fma(q, S::set1(x[r * K + k + t]), acc[r][t % C]);
            },
            std::make_integer_sequence<int, CPW>{});
      }
      const F s = S::load_half(sc + j * kBlockRows), s_z = S::mul(s, S::load_i8(zo + j * kBlockRows));  // exact
      for (int r = 0; r < MC; ++r) {
        F a = acc[r][0];
        for (int c = 1; c < C; ++c) a = S::add(a, acc[r][c]);
        total[r] = S::fma(s, a, total[r]);
        total[r] = S::fnma(s_z, S::set1(xsum[r * G + j]), total[r]);
      }
    }
    for (int r = 0; r < MC; ++r) S::store(out + r * kBlockRows, total[r]);
  }

  // tile[nb][r] (+)= chunk[nb]^T x[r] for MR rows of X and NB blocks; the
  // chunks are kc x 16 each, kKc x 16 apart; the tiles tile_stride apart.
  template <int MR, int NB>
  static void micro(const float* chunk, uint64_t kc, const float* x, uint64_t K, float* tile, uint64_t tile_stride,
                    bool first) {
    F acc[MR][NB];
    for (int r = 0; r < MR; ++r)
      for (int nb = 0; nb < NB; ++nb)
        acc[r][nb] = first ? S::zero() : S::load(tile + nb * tile_stride + r * kBlockRows);
    for (uint64_t kk = 0; kk < kc; ++kk) {
      F wv[NB];
      for (int nb = 0; nb < NB; ++nb) wv[nb] = S::load(chunk + nb * kKc * kBlockRows + kk * kBlockRows);
      for (int r = 0; r < MR; ++r) {
        const F xv = S::set1(x[r * K + kk]);
        for (int nb = 0; nb < NB; ++nb) acc[r][nb] = S::fma(wv[nb], xv, acc[r][nb]);
      }
    }
    for (int r = 0; r < MR; ++r)
      for (int nb = 0; nb < NB; ++nb) S::store(tile + nb * tile_stride + r * kBlockRows, acc[r][nb]);
  }

  static constexpr int kMr = S::kGemmRows, kNb = S::kGemmBlocks;
  using MicroFn = void (*)(const float*, uint64_t, const float*, uint64_t, float*, uint64_t, bool);
  template <int NB, int... R>
  static constexpr std::array<MicroFn, sizeof...(R)> micro_table(std::integer_sequence<int, R...>) {
    return {micro<R + 1, NB>...};
  }
  // [0] for one block, [1] for kNb blocks; then [rows of X - 1], up to kMr.
  static constexpr std::array<std::array<MicroFn, kMr>, 2> kMicro = {
      micro_table<1>(std::make_integer_sequence<int, kMr>{}), micro_table<kNb>(std::make_integer_sequence<int, kMr>{})};

  // Dequantizes inputs [k0, k0 + kc) of block b into chunk (kc x 16).
  static void dequantize_chunk(const PackedMatrix& w, uint64_t b, uint64_t k0, uint64_t kc, float* chunk) {
    const uint64_t G = w.groups(), g = w.group_size;
    const uint32_t* codes = w.codes.get() + b * w.words_per_block + k0 / CPW * kBlockRows;
    const uint16_t* sc = w.scales.get() + b * G * kBlockRows;
    const int8_t* zo = w.zero_offsets.get() + b * G * kBlockRows;
    F s = S::zero(), s_z = S::zero();
    for (uint64_t k = k0; k < k0 + kc; k += CPW, codes += kBlockRows) {
      const I d = S::loadi(codes);
      if (k == k0 || k % g == 0) {  // a new group: its scale and s (z - c), exact
        const uint64_t j = k / g;
        s = S::load_half(sc + j * kBlockRows);
        s_z = S::mul(s, S::load_i8(zo + j * kBlockRows));
      }
      unrolled([&](auto t) { S::store(chunk + (k - k0 + t) * kBlockRows, S::fms(code<decltype(t)::value>(d), s, s_z)); },
               std::make_integer_sequence<int, CPW>{});
    }
  }

  // All M rows of X times blocks [b0, b0 + blocks) (blocks <= kPanel) into
  // tile (blocks x M x 16), no bias.
  static void large_m(const PackedMatrix& w, const float* x, uint64_t M, uint64_t b0, uint64_t blocks, float* tile,
                      float* chunk) {
    const uint64_t K = w.cols;
    for (uint64_t k0 = 0; k0 < K; k0 += kKc) {
      const uint64_t kc = std::min(kKc, K - k0);
      for (uint64_t p = 0; p < blocks; ++p) dequantize_chunk(w, b0 + p, k0, kc, chunk + p * kKc * kBlockRows);
      for (uint64_t m0 = 0; m0 < M; m0 += kMr) {
        const uint64_t rows = std::min<uint64_t>(kMr, M - m0);
        for (uint64_t p = 0; p < blocks;) {
          const uint64_t n = p + kNb <= blocks ? kNb : 1;
          kMicro[n == 1 ? 0 : 1][rows - 1](chunk + p * kKc * kBlockRows, kc, x + m0 * K + k0, K,
                                           tile + (p * M + m0) * kBlockRows, M * kBlockRows, k0 == 0);
          p += n;
        }
      }
    }
  }

  static void run(const PackedMatrix& w, const Activations& a, uint64_t bb, uint64_t be, float* y) {
    thread_local Scratch scratch;
    const float* x = a.x;
    const float* xsum = a.xsum.data();
    const uint64_t M = a.m;
    const uint64_t K = w.cols, G = w.groups();
    if (M <= kSmallM) {
      over_row_tiles<4>(w, M, bb, be, y, [&](auto mc, uint64_t m0, uint64_t b, float* out) {
        small_m<decltype(mc)::value>(w, x + m0 * K, xsum + m0 * G, b, out);
      });
      return;
    }
    float* chunk = scratch.ensure(scratch.weights, kPanel * kKc * kBlockRows);
    float* tile = scratch.ensure(scratch.tile, kPanel * M * kBlockRows);
    for (uint64_t b0 = bb; b0 < be; b0 += kPanel) {
      const uint64_t blocks = std::min(kPanel, be - b0);
      large_m(w, x, M, b0, blocks, tile, chunk);
      for (uint64_t p = 0; p < blocks; ++p) store_rows(w, tile + p * M * kBlockRows, M, b0 + p, y);
    }
  }
};

// What each kernels_<isa>.cpp exports under its own name: the kernel for
// the matrix's code width.
void packed_matmul_impl(const PackedMatrix& w, const Activations& a, uint64_t bb, uint64_t be, float* y) {
  if (w.code_bits == 4) Kernel<8>::run(w, a, bb, be, y);
  else Kernel<4>::run(w, a, bb, be, y);
}

}  // namespace
}  // namespace woq::kernels
