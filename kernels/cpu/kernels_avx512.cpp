// Packed kernels for AVX-512 (F, BW, VL). Compiled with -mavx512f -mavx512bw
// -mavx512vl and only called after detect_isa() says the CPU has them.
#include "kernels/cpu/simd_avx512.h"

#include "kernels/cpu/packed_kernels.inl"

namespace woq::kernels {

void packed_matmul_avx512(const PackedMatrix& w, const Activations& a, uint64_t bb, uint64_t be, float* y) {
  packed_matmul_impl(w, a, bb, be, y);
}

}  // namespace woq::kernels
