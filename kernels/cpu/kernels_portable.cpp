// Packed kernels in plain C++: the path for CPUs without AVX2 (and a third
// implementation of the same algorithm that the tests compare).
#include "kernels/cpu/numeric.h"
#include "kernels/cpu/packed.h"

namespace woq::kernels {
namespace {

struct S {
  struct F {
    float v[16];
  };
  struct I {
    uint32_t v[16];
  };
  // Blocked GEMM micro-kernel: rows of X x blocks of 16 outputs (accumulators
  // in registers: an array).
  static constexpr int kGemmRows = 4, kGemmBlocks = 1;
  static F zero() { return F{}; }
  static F load(const float* p) {
    F r;
    for (int i = 0; i < 16; ++i) r.v[i] = p[i];
    return r;
  }
  static void store(float* p, const F& a) {
    for (int i = 0; i < 16; ++i) p[i] = a.v[i];
  }
  static F load_half(const uint16_t* p) {
    F r;
    for (int i = 0; i < 16; ++i) r.v[i] = half_to_float(p[i]);
    return r;
  }
  static F load_i8(const int8_t* p) {
    F r;
    for (int i = 0; i < 16; ++i) r.v[i] = float(p[i]);
    return r;
  }
  static F set1(float x) {
    F r;
    for (float& v : r.v) v = x;
    return r;
  }
  static F fma(const F& a, const F& b, const F& c) {
    F r;
    for (int i = 0; i < 16; ++i) r.v[i] = a.v[i] * b.v[i] + c.v[i];
    return r;
  }
  static F fnma(const F& a, const F& b, const F& c) {
    F r;
    for (int i = 0; i < 16; ++i) r.v[i] = c.v[i] - a.v[i] * b.v[i];
    return r;
  }
  static F fms(const F& a, const F& b, const F& c) {
    F r;
    for (int i = 0; i < 16; ++i) r.v[i] = a.v[i] * b.v[i] - c.v[i];  // exact here: s*q and s*z are exact
    return r;
  }
  static F mul(const F& a, const F& b) {
    F r;
    for (int i = 0; i < 16; ++i) r.v[i] = a.v[i] * b.v[i];
    return r;
  }
  static F add(const F& a, const F& b) {
    F r;
    for (int i = 0; i < 16; ++i) r.v[i] = a.v[i] + b.v[i];
    return r;
  }
  static I loadi(const uint32_t* p) {
    I r;
    for (int i = 0; i < 16; ++i) r.v[i] = p[i];
    return r;
  }
  template <int T>
  static F nibble(const I& d) {
    F r;
    for (int i = 0; i < 16; ++i) r.v[i] = float(int32_t(d.v[i] << (28 - 4 * T)) >> 28);
    return r;
  }
  template <int T>
  static F byte(const I& d) {
    F r;
    for (int i = 0; i < 16; ++i) r.v[i] = float(int32_t(d.v[i] << (24 - 8 * T)) >> 24);
    return r;
  }
};

}  // namespace
}  // namespace woq::kernels

#include "kernels/cpu/packed_kernels.inl"

namespace woq::kernels {

void packed_matmul_portable(const PackedMatrix& w, const Activations& a, uint64_t bb, uint64_t be, float* y) {
  packed_matmul_impl(w, a, bb, be, y);
}

}  // namespace woq::kernels
