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
  AlignedArray<float> weights;  // kKc x 16 dequantized weights
  AlignedArray<float> tile;     // M x 16 partial outputs
  float* ensure(AlignedArray<float>& a, uint64_t n) {
    if (a.size < n) a.allocate(n);
    return a.get();
  }
};

// A k-chunk of dequantized weights (16 x kKc floats = 16 KiB) stays in L1.
constexpr uint64_t kKc = 256;
// GEMV streams codes from DRAM: prefetching 2 KiB ahead of the loads was
// measured to add 10-16% on top of the hardware prefetcher (docs/CPU_KERNELS.md).
constexpr uint64_t kPrefetchWords = 16 * 32;

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
        __builtin_prefetch(codes + kPrefetchWords);
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

  // tile[r] (+)= chunk^T x[r] for MR rows of X; chunk is kc x 16.
  template <int MR>
  static void micro(const float* chunk, uint64_t kc, const float* x, uint64_t K, float* tile, bool first) {
    F acc[MR];
    for (int r = 0; r < MR; ++r) acc[r] = first ? S::zero() : S::load(tile + r * kBlockRows);
    for (uint64_t kk = 0; kk < kc; ++kk) {
      const F wv = S::load(chunk + kk * kBlockRows);
      for (int r = 0; r < MR; ++r) acc[r] = S::fma(wv, S::set1(x[r * K + kk]), acc[r]);
    }
    for (int r = 0; r < MR; ++r) S::store(tile + r * kBlockRows, acc[r]);
  }

  using MicroFn = void (*)(const float*, uint64_t, const float*, uint64_t, float*, bool);
  static constexpr int kMr = 8;

  // All M rows of X times block b into tile (M x 16), no bias.
  static void large_m(const PackedMatrix& w, const float* x, uint64_t M, uint64_t b, float* tile, float* chunk) {
    static constexpr MicroFn tails[kMr] = {nullptr, micro<1>, micro<2>, micro<3>, micro<4>, micro<5>, micro<6>, micro<7>};
    const uint64_t K = w.cols, G = w.groups(), g = w.group_size;
    const uint32_t* codes = w.codes.get() + b * w.words_per_block;
    const uint16_t* sc = w.scales.get() + b * G * kBlockRows;
    const int8_t* zo = w.zero_offsets.get() + b * G * kBlockRows;
    for (uint64_t k0 = 0; k0 < K; k0 += kKc) {
      const uint64_t kc = std::min(kKc, K - k0);
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
      uint64_t m0 = 0;
      for (; m0 + kMr <= M; m0 += kMr) micro<kMr>(chunk, kc, x + m0 * K + k0, K, tile + m0 * kBlockRows, k0 == 0);
      if (m0 < M) tails[M - m0](chunk, kc, x + m0 * K + k0, K, tile + m0 * kBlockRows, k0 == 0);
    }
  }

  static void store_rows(const PackedMatrix& w, const float* tile, uint64_t rows_of_x, uint64_t b, float* y) {
    const uint64_t n0 = b * kBlockRows, lanes = std::min(kBlockRows, w.rows - n0);
    for (uint64_t r = 0; r < rows_of_x; ++r)
      for (uint64_t i = 0; i < lanes; ++i)
        y[r * w.rows + n0 + i] = tile[r * kBlockRows + i] + (w.bias.empty() ? 0.0f : w.bias[n0 + i]);
  }

  static void run(const PackedMatrix& w, const Activations& a, uint64_t bb, uint64_t be, float* y) {
    thread_local Scratch scratch;
    const float* x = a.x;
    const float* xsum = a.xsum.data();
    const uint64_t M = a.m;
    const uint64_t K = w.cols, G = w.groups();
    if (M <= kSmallM) {
      alignas(64) float out[4 * kBlockRows];
      for (uint64_t b = bb; b < be; ++b) {
        for (uint64_t m0 = 0; m0 < M;) {
          const uint64_t left = M - m0;
          const float* xs = x + m0 * K;
          const float* ss = xsum + m0 * G;
          uint64_t mc;
          if (left >= 4) small_m<4>(w, xs, ss, b, out), mc = 4;
          else if (left >= 2) small_m<2>(w, xs, ss, b, out), mc = 2;
          else small_m<1>(w, xs, ss, b, out), mc = 1;
          store_rows(w, out, mc, b, y + m0 * w.rows);
          m0 += mc;
        }
      }
      return;
    }
    float* chunk = scratch.ensure(scratch.weights, kKc * kBlockRows);
    float* tile = scratch.ensure(scratch.tile, M * kBlockRows);
    for (uint64_t b = bb; b < be; ++b) {
      large_m(w, x, M, b, tile, chunk);
      store_rows(w, tile, M, b, y);
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
