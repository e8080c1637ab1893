// Activations prepared once per call, before the blocks of a matmul are
// split among threads: for the fixed-point kernels of avx512vnni, amx and
// avx2, fixed-point digits and their group sums (fixed_point_prep.inl); for
// amx's bf16 tiles, X's bf16 values alone; for the fp32 kernels, x's own
// group sums. Rows of X are independent,
// so large calls prepare them on the pool's threads.
#include <atomic>
#include <cmath>

#include "kernels/cpu/packed.h"

namespace woq::kernels {
namespace {

bool all_finite(const float* x, uint64_t n) {
  for (uint64_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return false;
  return true;
}

// The FixedPoint form's layout and buffers (fixed_point_prep.inl fills them).
void reserve_fixed_point(const PackedMatrix& w, Activations& a) {
  const uint64_t D = uint64_t(a.digits);
  uint64_t B = 128;
  while (w.group_size % B) B /= 2;  // stops at >= codes per word, which divides the group size
  const uint64_t blocks = w.cols / B;
  a.block_inputs = B;
  // Planes of digits one 64-byte line longer than K / 4 words: with K a
  // multiple of 4096 the planes of a few rows of X would otherwise all start
  // in the same L1 set, and 4 rows x 3 digits overflow Zen 4's 8 ways (M = 4
  // on one 4096 x 4096 matrix took 1.54 instead of 0.97-1.00 ms, L3-resident).
  a.digit_words = w.cols / 4 + 16;
  a.row_words = D * a.digit_words;
  const uint64_t rows = a.m + kFixedPointPadRows;
  if (a.words.size < rows * a.row_words) a.words.allocate(rows * a.row_words);
  if (a.block_scale.size < a.m * blocks) a.block_scale.allocate(a.m * blocks);
  if (a.block_start.size < a.m * blocks * D) a.block_start.allocate(a.m * blocks * D);
  a.digit_xsum.resize(a.m * w.groups());
}

// The Bf16 form's layout and buffer (kernels_amx.cpp fills it).
void reserve_bf16(const PackedMatrix& w, Activations& a) {
  // Rows one 64-byte line longer than K bf16, as for the digits: a tile's 16
  // rows would otherwise share an L1 set whenever K is a multiple of 2048.
  a.row_words = w.cols / 2 + 16;
  const uint64_t rows = a.m + kFixedPointPadRows;
  if (a.words.size < rows * a.row_words) a.words.allocate(rows * a.row_words);
}

}  // namespace

void prepare_activations(Isa isa, const PackedMatrix& w, Activations& a, const OverRows& over_rows) {
  const uint64_t K = w.cols, G = w.groups();
  // avx2 has fixed-point kernels for 4-bit codes only (vpmaddubsw would
  // saturate on 8-bit ones) and for M <= kFixedPointMaxMAvx2. AMX runs fixed
  // point at any M where its tiles fit the blocks of inputs.
  const bool amx = isa >= Isa::Amx && w.group_size % kAmxMinInputs == 0;
  // With two digits (16-bit Y) fixed point beat the blocked fp32 GEMM at
  // every M measured, up to 1024 (docs/CPU_KERNELS.md); with three only up
  // to kFixedPointMaxM.
  const bool vnni = isa >= Isa::Avx512Vnni && (a.m <= kFixedPointMaxM || a.y_is_16bit || amx);
  const bool avx2 = isa == Isa::Avx2 && w.code_bits == 4 && a.m <= kFixedPointMaxMAvx2;
#if defined(WOQ_HAVE_X86_KERNELS)
  const bool fixed_point = vnni || avx2;
  const bool bf16 = isa >= Isa::Amx && a.x_is_bf16 && w.group_size % kAmxBf16Inputs == 0 &&
                    a.m >= (w.group_size == 32 ? kAmxBf16MinRows32 : kAmxBf16MinRows);
#else
  const bool fixed_point = false, bf16 = false;
#endif
  const auto over_all_rows = [&](const std::function<void(uint64_t, uint64_t)>& rows) {
    if (over_rows) over_rows(rows);
    else if (a.m) rows(0, a.m);
  };
  // Two digits for 16-bit Y, except on amx: its tiles take three, and its
  // rows must have the bits avx512vnni gives them below kAmxMinRows.
  a.digits = a.y_is_16bit && isa < Isa::Amx ? kFixedPointDigits16 : kFixedPointDigits;
  // Non-finite activations take the fp32 kernel, which propagates them as
  // IEEE arithmetic does; so do peaky ones (fixed_point_prep.inl) unless
  // they are bf16 for AMX-BF16, which multiplies them exactly.
  std::atomic<bool> bf16_ok{bf16}, fixed_ok{fixed_point && !bf16};
  if (bf16) reserve_bf16(w, a);
  else if (fixed_point) reserve_fixed_point(w, a);
  const auto group_sums = [&](uint64_t r0, uint64_t r1) {
    for (uint64_t r = r0; r < r1; ++r)
      for (uint64_t j = 0; j < G; ++j) {
        // The correction term multiplies this sum: keep it accurate (double;
        // four partial sums so that the adds need not wait for each other).
        const float* xg = a.x + r * K + j * w.group_size;
        double s[4] = {};
        uint64_t k = 0;
        for (; k + 4 <= w.group_size; k += 4)
          for (int t = 0; t < 4; ++t) s[t] += xg[k + uint64_t(t)];
        for (; k < w.group_size; ++k) s[0] += xg[k];
        a.xsum[r * G + j] = float((s[0] + s[1]) + (s[2] + s[3]));
      }
  };
  const auto fixed_point_rows = [&](uint64_t r0, uint64_t r1) {
    if (!fixed_ok.load(std::memory_order_relaxed)) return;
    bool ok = all_finite(a.x + r0 * K, (r1 - r0) * K);
#if defined(WOQ_HAVE_X86_KERNELS)
    if (ok) ok = vnni ? prepare_fixed_point_rows_avx512vnni(w, a, r0, r1) : prepare_fixed_point_rows_avx2(w, a, r0, r1);
#endif
    if (!ok) fixed_ok.store(false, std::memory_order_relaxed);
  };
  if (bf16 || fixed_point)
    over_all_rows([&](uint64_t r0, uint64_t r1) {
#if defined(WOQ_HAVE_X86_KERNELS)
      if (bf16_ok.load(std::memory_order_relaxed)) {
        if (prepare_bf16_rows_amx(w, a, r0, r1)) return;
        bf16_ok.store(false, std::memory_order_relaxed);
      }
#endif
      fixed_point_rows(r0, r1);
    });
  if (bf16 && !bf16_ok.load()) {  // a value the tiles cannot take: fixed point, if it can, for every row
    fixed_ok.store(fixed_point);
    if (fixed_point) {
      reserve_fixed_point(w, a);
      over_all_rows(fixed_point_rows);
    }
  }
  a.form = bf16_ok.load()    ? Activations::Form::Bf16
           : fixed_ok.load() ? Activations::Form::FixedPoint
                             : Activations::Form::Fp32;
  // Only the fp32 kernels read x's own group sums: the tiles multiply by
  // q - z, fixed point takes the sums of its digits (digit_xsum).
  if (a.form == Activations::Form::Fp32) {
    a.xsum.resize(a.m * G);
    over_all_rows(group_sums);
  }
}

}  // namespace woq::kernels
