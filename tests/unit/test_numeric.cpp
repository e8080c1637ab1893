// fp16 / bf16 conversions checked against properties computed in float64.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "kernels/cpu/numeric.h"
#include "quant/rtn.h"
#include "runtime/error.h"

using namespace woq::kernels;

namespace {

// Value of half bits h computed independently with ldexp.
double half_value(uint16_t h) {
  const int sign = (h >> 15) ? -1 : 1;
  const int exp = (h >> 10) & 31;
  const int mant = h & 1023;
  if (exp == 0) return sign * std::ldexp(mant, -24);
  if (exp == 31) return mant ? NAN : sign * INFINITY;
  return sign * std::ldexp(1024 + mant, exp - 25);
}

}  // namespace

TEST(Numeric, HalfToFloatMatchesLdexpForAllPatterns) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const double expect = half_value(uint16_t(h));
    const float got = half_to_float(uint16_t(h));
    if (std::isnan(expect)) {
      EXPECT_TRUE(std::isnan(got)) << h;
    } else {
      EXPECT_EQ(double(got), expect) << "half bits " << h;
    }
  }
}

TEST(Numeric, FloatToHalfRoundTripsEveryHalf) {
  for (uint32_t h = 0; h < 65536; ++h) {
    if (((h >> 10) & 31) == 31 && (h & 1023)) continue;  // NaN payloads are not preserved
    EXPECT_EQ(float_to_half(half_to_float(uint16_t(h))), h);
  }
}

TEST(Numeric, FloatToHalfRoundsToNearestEven) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> bits(0, 0x477fffffu);  // finite, below fp16 overflow
  for (int i = 0; i < 200000; ++i) {
    const float f = bits_float(bits(rng));
    const uint16_t h = float_to_half(f);
    const double v = half_value(h), x = f;
    // No neighbour of h is closer; on a tie h is even.
    for (int d : {-1, 1}) {
      const uint16_t n = uint16_t(h + d);
      if ((n & 0x7fff) >= 0x7c00 || (d < 0 && h == 0)) continue;
      const double dn = std::fabs(half_value(n) - x), dh = std::fabs(v - x);
      ASSERT_LE(dh, dn) << "f=" << f;
      if (dh == dn) ASSERT_EQ(h & 1, 0) << "tie not to even, f=" << f;
    }
  }
  EXPECT_EQ(float_to_half(65520.0f), 0x7c00);  // rounds to infinity
  EXPECT_EQ(float_to_half(65519.0f), 0x7bff);
  EXPECT_EQ(float_to_half(-0.0f), 0x8000);
}

TEST(Numeric, Bf16RoundsToNearestEven) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(float_to_bf16(bits_float(0x3f808000u)), 0x3f80);  // tie, even stays
  EXPECT_EQ(float_to_bf16(bits_float(0x3f818000u)), 0x3f82);  // tie, odd rounds up
  EXPECT_EQ(float_to_bf16(bits_float(0x3f808001u)), 0x3f81);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(NAN))));
  for (uint32_t b = 0; b < 65536; ++b)
    if ((b & 0x7f80) != 0x7f80) EXPECT_EQ(float_to_bf16(bf16_to_float(uint16_t(b))), b);
}

TEST(Numeric, Fp16RoundUpIsSmallestHalfAtOrAbove) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<double> logx(-30, 15.9);
  for (int i = 0; i < 100000; ++i) {
    const double x = std::exp2(logx(rng));
    const uint16_t h = woq::fp16_round_up(x);
    ASSERT_GE(half_value(h), x);
    if (h > 0) ASSERT_LT(half_value(uint16_t(h - 1)), x);
  }
  EXPECT_EQ(woq::fp16_round_up(0.0), 0);
  EXPECT_EQ(woq::fp16_round_up(65504.0), 0x7bff);
  EXPECT_THROW(woq::fp16_round_up(65504.5), woq::Error);
}
