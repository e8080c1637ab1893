// The fixed-point form of the activations (packed.h, Activations), written
// once over a lane traits struct P (kernels_avx512vnni.cpp: 16 lanes,
// kernels_avx2.cpp: 8) that kernels_<isa>.cpp define before including this.
//
// Per row of X and block of B inputs (B a power of two dividing the group
// size), with e such that every |x| in the block is below 2^e and D digits
// (a.digits: 3, or 2 where Y is 16-bit), bits = 8 D - 2:
//   v = round(x * 2^(bits - e)) = d0 + 256 d1 (+ 65536 d2),
// each digit in -128..127 (the top one within -65..65). Scaling by a power
// of two is exact and the conversion rounds to nearest, so the only error
// is that rounding: at most 2^-bits of the block's largest |x| per value
// (2^-22 with three digits; fp32 rounds that largest value itself to 2^-24
// of it; 2^-14 with two, where Y is rounded to 2^-11 or 2^-8 of itself).
// Blocks whose largest |x| exceeds kFixedPointPeak times their mean |x|
// send the call to the fp32 kernels, so that this is also at most
// 2^(4 - bits) of the block's mean |x| (docs/CPU_KERNELS.md).
#include <algorithm>
#include <cmath>

namespace woq::kernels {
namespace {

// Rows [r0, r1) of X into a's fixed-point buffers (laid out by
// reserve_fixed_point) as D digits, with their group sums; false when a
// block of them is too peaky for fixed point (the call then runs the fp32
// kernels).
template <class P, int D>
bool prepare_fixed_point_digits(const PackedMatrix& w, Activations& a, uint64_t r0, uint64_t r1) {
  constexpr int kBits = fixed_point_bits(D);
  constexpr uint64_t L = P::kLanes;
  const uint64_t K = w.cols, cpw = w.codes_per_word(), B = a.block_inputs, blocks = K / B;
  // The kernel reads c' = (q - c) + offset: start each accumulator at
  // -offset * (sum of the digit) to leave sum (q - c) * digit.
  const int32_t offset = int32_t(1u << (w.code_bits - 1));
  // Byte order of 16 inputs (two 4-bit words): per word the even inputs'
  // phase, then the odd inputs'. 8-bit words keep their order.
  const __m128i order = cpw == 8 ? _mm_setr_epi8(0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15)
                                 : _mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const uint64_t blocks_per_group = w.group_size / B;
  for (uint64_t r = r0; r < r1; ++r) {
    double group_sum = 0.0;  // of the values the digits stand for
    for (uint64_t b = 0; b < blocks; ++b) {
      const float* xb = a.x + r * K + b * B;
      typename P::V largest = P::set1(0.0f), total = P::set1(0.0f);
      for (uint64_t i = 0; i < B; i += L) {
        const typename P::V v = P::abs(P::load(xb + i, P::mask(B - i)));
        largest = P::max(largest, v);
        total = P::add(total, v);
      }
      const float top = P::reduce_max(largest);
      // A block dominated by a few large values would leave the others few
      // significant bits: such calls run the fp32 kernels instead.
      if (double(top) * double(B) > kFixedPointPeak * double(P::reduce_add(total))) return false;
      int e = 0;
      if (top > 0.0f) std::frexp(top, &e);  // top < 2^e
      a.block_scale.get()[r * blocks + b] = top > 0.0f ? std::ldexp(1.0f, e - kBits) : 0.0f;
      // 2^(kBits - e) as two normal floats (it reaches 2^171 for subnormal
      // blocks); both products are exact.
      const int up = kBits - e, first = std::min(up, 127);
      const typename P::V scale1 = P::set1(std::ldexp(1.0f, first)), scale2 = P::set1(std::ldexp(1.0f, up - first));
      typename P::Vi digit_sum[D];
      for (int d = 0; d < D; ++d) digit_sum[d] = P::izero();
      for (uint64_t i = 0; i < B; i += L) {
        const typename P::Mask m = P::mask(B - i);
        typename P::Vi v = P::round(P::mul(P::mul(P::load(xb + i, m), scale1), scale2));
        uint8_t* dst = reinterpret_cast<uint8_t*>(a.words.get() + r * a.row_words) + b * B + i;
        for (int d = 0; d < D; ++d) {
          // Balanced base-256 digits: the low byte sign-extended, the rest carried.
          const typename P::Vi digit = d + 1 < D ? P::low_byte(v) : v;
          v = P::carry(v, digit);
          digit_sum[d] = P::iadd(digit_sum[d], digit);
          P::store_bytes(dst + uint64_t(d) * a.digit_words * 4, digit, m, order);
        }
      }
      int64_t value_sum = 0;  // sum of v over the block: exact
      for (int d = D - 1; d >= 0; --d) {
        const int32_t sum = P::reduce_iadd(digit_sum[d]);
        a.block_start.get()[(r * blocks + b) * D + uint64_t(d)] = -offset * sum;
        value_sum = value_sum * 256 + sum;
      }
      group_sum += std::ldexp(double(value_sum), e - kBits);
      if ((b + 1) % blocks_per_group == 0) {
        a.digit_xsum[r * w.groups() + b / blocks_per_group] = float(group_sum);
        group_sum = 0.0;
      }
    }
  }
  return true;
}

template <class P>
bool prepare_fixed_point_rows(const PackedMatrix& w, Activations& a, uint64_t r0, uint64_t r1) {
  return with_digits(a, [&](auto d) { return prepare_fixed_point_digits<P, decltype(d)::value>(w, a, r0, r1); });
}

}  // namespace
}  // namespace woq::kernels
