// Activations prepared once per call, before the blocks of a matmul are
// split among threads: per-group sums for every kernel and, for the small-M
// kernels of avx512vnni, fixed-point digits (kernels_avx512vnni.cpp).
#include <cmath>

#include "kernels/cpu/packed.h"

namespace woq::kernels {
namespace {

bool all_finite(const float* x, uint64_t n) {
  for (uint64_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return false;
  return true;
}

}  // namespace

void prepare_activations(Isa isa, const PackedMatrix& w, Activations& a) {
  const uint64_t K = w.cols, G = w.groups();
  a.xsum.resize(a.m * G);
  for (uint64_t r = 0; r < a.m; ++r)
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
  a.form = Activations::Form::Fp32;
  // Non-finite activations take the fp32 kernel, which propagates them as
  // IEEE arithmetic does.
  // avx2 has fixed-point kernels for 4-bit codes only (vpmaddubsw would
  // saturate on 8-bit ones) and for M <= kFixedPointMaxMAvx2.
  // AMX runs fixed point at any M where its tiles fit the blocks of inputs.
  const bool amx = isa >= Isa::Amx && w.group_size % kAmxInputs == 0;
  const bool vnni = isa >= Isa::Avx512Vnni && (a.m <= kFixedPointMaxM || amx);
  const bool avx2 = isa == Isa::Avx2 && w.code_bits == 4 && a.m <= kFixedPointMaxMAvx2;
  if (!(vnni || avx2) || !all_finite(a.x, a.m * K)) return;
#if defined(WOQ_HAVE_X86_KERNELS)
  if (vnni) prepare_fixed_point_avx512vnni(w, a);
  else prepare_fixed_point_avx2(w, a);
#endif
}

}  // namespace woq::kernels
