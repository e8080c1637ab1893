// The CUDA fragment layout (kernels/cuda/layout.h), checked on the CPU: the
// codes each lane extracts, read through the PTX ISA's table for the B
// operand of mma.m16n8k16 (.f16 / .bf16: lane = 4 * groupID + tid;
// b0, b1 at rows 2 tid, 2 tid + 1 and b2, b3 at rows 2 tid + 8, 2 tid + 9 of
// column groupID, low half first) and the documented column permutation,
// must be the canonical codes of the matching weights, and zero past the
// matrix. Independent of the repacking code: this side only knows the
// documented extraction, the permutation and the PTX table.
#include <gtest/gtest.h>

#include <algorithm>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/numeric.h"
#include "kernels/cuda/layout.h"
#include "quant/packing.h"

namespace {

namespace cu = woq::kernels::cuda;

struct Case {
  uint32_t bits;
  uint64_t rows, cols;
  uint32_t group;
};

// Named for gtest (which would otherwise print the struct's bytes, padding included).
void PrintTo(const Case& c, std::ostream* os) {
  *os << c.bits << "-bit " << c.rows << "x" << c.cols << " g" << c.group;
}

class FragmentLayout : public ::testing::TestWithParam<Case> {};

TEST_P(FragmentLayout, LanesHoldTheMmaOperandsOfTheirWeights) {
  const Case c = GetParam();
  std::mt19937 rng(uint32_t(c.bits * 1000 + c.rows + c.cols));
  const uint64_t words_per_row = (c.cols * c.bits + 31) / 32, groups = c.cols / c.group;
  std::vector<uint8_t> q(c.rows * c.cols);
  for (uint8_t& v : q) v = uint8_t(rng() % (1u << c.bits));
  std::vector<uint32_t> codes(c.rows * words_per_row, 0);
  for (uint64_t n = 0; n < c.rows; ++n) woq::pack_row(q.data() + n * c.cols, c.cols, c.bits, codes.data() + n * words_per_row);
  std::vector<uint16_t> scales(c.rows * groups);
  std::vector<uint8_t> zeros(c.rows * groups);
  for (size_t i = 0; i < scales.size(); ++i) {
    scales[i] = uint16_t(0x3000 + i % 4096);
    zeros[i] = uint8_t(rng() % (1u << c.bits));
  }

  const cu::FragmentMatrix f =
      cu::repack_fragments(codes.data(), words_per_row, scales.data(), zeros.data(), c.rows, c.cols, c.bits, c.group);
  const uint32_t field = c.bits <= 4 ? 4 : 8, width = field == 4 ? 64 : 32;
  ASSERT_EQ(f.shape.field, field);
  ASSERT_EQ(f.shape.slices, (c.rows + 15) / 16);
  ASSERT_EQ(f.shape.steps, (c.cols + width - 1) / width);
  ASSERT_EQ(f.units.size(), f.shape.slices * f.shape.steps * 128);
  for (uint64_t k = 0; k < c.cols; k += 32) {  // the kernels' group of each 32-column span
    const uint64_t group = f.shape.group_shift < 64 ? k >> f.shape.group_shift : k / c.group;
    ASSERT_EQ(group, k / c.group) << "column " << k;
  }

  uint64_t seen = 0;
  for (uint64_t slice = 0; slice < f.shape.slices; ++slice)
    for (uint64_t step = 0; step < f.shape.steps; ++step)
      for (uint32_t lane = 0; lane < 32; ++lane) {
        const uint32_t* w = f.units.data() + (slice * f.shape.steps + step) * 128 + lane * 4;
        const uint32_t group_id = lane / 4, tid = lane % 4;
        for (uint32_t block = 0; block < width / 16; ++block)
          for (uint32_t tile = 0; tile < 2; ++tile)
            for (uint32_t reg = 0; reg < 2; ++reg) {
              // The documented extraction of one B register's pair of codes.
              const uint32_t pair = field == 4 ? (w[block] >> (4 * (2 * tile + reg))) & 0x000F000Fu
                                               : (w[2 * block + tile] >> (8 * reg)) & 0x00FF00FFu;
              for (uint32_t half = 0; half < 2; ++half) {
                const uint32_t got = (pair >> (16 * half)) & 0xFFFFu;
                // PTX: B row (our k) 2 tid + half (+ 8 for b2, b3), column (our n) groupID.
                const uint64_t n = slice * 16 + 8 * tile + group_id;
                // Row 2 tid + half + 8 reg of block b is column 32 (b / 2) + 8 tid + 4 (b % 2) + 2 reg + half.
                const uint64_t k = step * width + 32 * (block / 2) + 8 * tid + 4 * (block % 2) + 2 * reg + half;
                const uint32_t want = n < c.rows && k < c.cols ? q[n * c.cols + k] : 0u;
                ASSERT_EQ(got, want) << "n " << n << " k " << k << " lane " << lane;
                seen += n < c.rows && k < c.cols;
              }
            }
      }
  EXPECT_EQ(seen, c.rows * c.cols);  // every weight is held by exactly one lane position

  const uint64_t stride = f.shape.slices * 16;
  for (uint64_t j = 0; j < groups; ++j)
    for (uint64_t n = 0; n < stride; ++n) {
      ASSERT_EQ(f.scales[j * stride + n], n < c.rows ? scales[n * groups + j] : 0u);
      ASSERT_EQ(f.zeros[j * stride + n], n < c.rows ? zeros[n * groups + j] : 0u);
    }
}

INSTANTIATE_TEST_SUITE_P(Shapes, FragmentLayout,
                         ::testing::Values(Case{4, 37, 3 * 128, 128}, Case{4, 16, 64, 32}, Case{4, 9, 77, 77},
                                           Case{4, 40, 1000, 1000}, Case{3, 30, 3 * 64, 64}, Case{2, 17, 256, 256},
                                           Case{8, 129, 3 * 128, 128}, Case{8, 20, 301, 301}, Case{5, 45, 9 * 32, 32},
                                           Case{6, 33, 96, 32}, Case{4, 8, 192, 96}),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           const Case& c = info.param;
                           return "b" + std::to_string(c.bits) + "_" + std::to_string(c.rows) + "x" +
                                  std::to_string(c.cols) + "_g" + std::to_string(c.group);
                         });

// The CUDA upload repacks a tensor in blocks of whole slices into staging
// memory and copies each to its place: units at slice offset, scales and
// zero-points as a 2-D copy (block columns into the tensor's group-major
// rows). Pieced together that way it must equal the whole repacking.
TEST(FragmentLayout, BlocksOfSlicesPieceTogether) {
  const uint64_t rows = 75, cols = 384, group = 128, groups = cols / group;
  const uint32_t bits = 4;
  std::mt19937 rng(11);
  const uint64_t wpr = cols * bits / 32;
  std::vector<uint32_t> codes(rows * wpr);
  for (uint32_t& v : codes) v = uint32_t(rng());
  std::vector<uint16_t> scales(rows * groups);
  std::vector<uint8_t> zeros(rows * groups);
  for (size_t i = 0; i < scales.size(); ++i) scales[i] = uint16_t(rng()), zeros[i] = uint8_t(rng() % 16);
  const cu::FragmentMatrix whole =
      cu::repack_fragments(codes.data(), wpr, scales.data(), zeros.data(), rows, cols, bits, group);
  const uint64_t stride = whole.shape.padded_rows(), unit_words = whole.shape.steps * 128;
  std::vector<uint32_t> units(whole.units.size(), 0xdeadbeefu);
  std::vector<uint16_t> sc(whole.scales.size(), 0xffff);
  std::vector<uint8_t> zr(whole.zeros.size(), 0xff);
  for (uint64_t b = 0; b < rows; b += 32) {  // blocks of two slices; the last one ragged
    const uint64_t e = std::min(b + 32, rows), block_stride = (e - b + 15) / 16 * 16;
    std::vector<uint32_t> bu(block_stride / 16 * unit_words);
    std::vector<uint16_t> bs(groups * block_stride);
    std::vector<uint8_t> bz(groups * block_stride);
    cu::repack_fragments_into(codes.data() + b * wpr, wpr, scales.data() + b * groups, zeros.data() + b * groups,
                              e - b, cols, bits, group, bu.data(), bs.data(), bz.data(), block_stride);
    std::copy(bu.begin(), bu.end(), units.begin() + b / 16 * unit_words);
    for (uint64_t j = 0; j < groups; ++j)
      for (uint64_t c = 0; c < block_stride; ++c) {
        sc[j * stride + b + c] = bs[j * block_stride + c];
        zr[j * stride + b + c] = bz[j * block_stride + c];
      }
  }
  EXPECT_EQ(units, whole.units);
  EXPECT_EQ(sc, whole.scales);
  EXPECT_EQ(zr, whole.zeros);
}

// Upload blocks: whole slices near the target size, whole file chunks
// where that costs at most a doubling, never past the padded rows.
TEST(FragmentLayout, UploadBlocksAreWholeSlicesAndChunks) {
  // A slice: 128 units of 512 bytes, 64 groups x 16 rows x 3 bytes = 68 608 bytes.
  const cu::FragmentShape s = cu::fragment_shape(3000, 8192, 4, 128);
  const uint64_t target = 8ull << 20;
  EXPECT_EQ(cu::upload_block_rows(s, 0, target), 122u * 16);    // 122 slices fit in 8 MiB: 1952 rows
  EXPECT_EQ(cu::upload_block_rows(s, 256, target), 7u * 256);   // whole chunks of 256 rows
  EXPECT_EQ(cu::upload_block_rows(s, 255, target), 122u * 16);  // lcm(16, 255) = 4080 > 2 x 1952
  EXPECT_EQ(cu::upload_block_rows(s, 244, target), 1952u);      // lcm(16, 244) = 976: two chunks
  EXPECT_EQ(cu::upload_block_rows(s, 3000, target), 122u * 16); // lcm 6000: too big
  EXPECT_EQ(cu::upload_block_rows(s, 0, 1), 16u);               // at least one slice
  EXPECT_EQ(cu::upload_block_rows(cu::fragment_shape(40, 64, 8, 32), 0, target), 48u);  // the padded rows
  for (uint64_t rpc : {0u, 1u, 7u, 16u, 100u, 256u, 3000u})
    EXPECT_EQ(cu::upload_block_rows(s, rpc, target) % 16, 0u) << rpc;
}

// The A operand: a lane loads X in 16-byte runs of 8 columns at 32 p + 8 tid
// (p: pair of blocks); word 2 (b % 2) + reg of run b / 2 is register reg
// (rows g, g + 8 alike) of block b. Those columns must be the ones the B
// side uses for the same mma row k (same lane position), and cover every
// column of a unit once.
TEST(FragmentLayout, OperandAColumnsMatchOperandB) {
  for (uint32_t blocks : {4u, 2u}) {
    std::vector<int> hits(16 * blocks, 0);
    for (uint32_t b = 0; b < blocks; ++b)
      for (uint32_t tid = 0; tid < 4; ++tid)
        for (uint32_t reg = 0; reg < 2; ++reg)
          for (uint32_t half = 0; half < 2; ++half) {
            const uint32_t a_column = 32 * (b / 2) + 8 * tid + 2 * (2 * (b % 2) + reg) + half;
            EXPECT_EQ(cu::fragment_column(b, tid, reg, half), a_column);
            ASSERT_LT(a_column, hits.size());
            ++hits[a_column];
          }
    for (int h : hits) EXPECT_EQ(h, 1);
  }
}

// The kernels OR a code into the mantissa of a 16-bit float whose exponent
// makes it offset + q: exact for every code they use it for.
TEST(FragmentDequantization, MagicNumbersGiveOffsetPlusCode) {
  for (uint32_t q = 0; q < 256; ++q) EXPECT_EQ(woq::kernels::half_to_float(uint16_t(0x6400 | q)), 1024.0f + float(q));
  for (uint32_t q = 0; q < 16; ++q) EXPECT_EQ(woq::kernels::bf16_to_float(uint16_t(0x4300 | q)), 128.0f + float(q));
  // 8-bit codes with bf16 go through fp32 instead: 2^23 + q.
  for (uint32_t q = 0; q < 256; ++q)
    EXPECT_EQ(woq::kernels::bits_float(0x4B000000u | q) - 8388608.0f, float(q));
}

}  // namespace
