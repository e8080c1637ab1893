// The GPU weight layout ("fragment layout"), shared by the host repacking
// (layout.cpp), the kernels (matmul.cu) and the CPU test that checks it
// against the PTX ISA's fragment tables (tests/unit/test_cuda_layout.cpp).
// Plain C++: no CUDA header needed.
//
// Codes are 4-bit (widths 2..4 widened to nibbles) or 8-bit (5..8 widened to
// bytes). Output rows come in slices of 16, inputs in steps of 64 (4-bit) or
// 32 (8-bit) columns; one (slice, step) is a 512-byte unit, 16 bytes per lane
// of a warp, so a warp fetches a unit with one coalesced 16-byte load per
// lane and every lane then holds exactly the B operands (col-major K x N) of
// mma.m16n8k16 it needs for the unit's two n8 tiles and its k16 blocks
// (4 for 4-bit, 2 for 8-bit).
//
// An mma sums over its 16 k in any order, so the unit's columns are
// assigned to the (block, k) of the mma such that each lane's share of X is
// contiguous: the element at row k = 2t + h + 8 reg of block b (t: thread in
// group, h: low or high half, reg: operand register) is column
//   fragment_column(b, t, reg, h) = 32 (b / 2) + 8 t + 4 (b % 2) + 2 reg + h
// of the unit. A lane therefore reads X in 8-column (16-byte) runs at
// 32 p + 8 t, one per pair of blocks p, and every block lies within one
// aligned span of 32 columns, hence within one group (groups are multiples
// of 32, or the whole row).
//
// Lane 4 g + t holds rows n = 8 tile + g of the slice.
// 4-bit: word b of a lane is block b; nibble 2 tile + reg holds the
//   low-half code, nibble 2 tile + reg + 4 the high-half one, so
//   (word >> 4 (2 tile + reg)) & 0x000F000F isolates one register's pair.
// 8-bit: word 2 b + tile is block b of that tile; bytes 0 and 2 are register
//   0's pair, bytes 1 and 3 register 1's: word & 0x00FF00FF,
//   (word >> 8) & 0x00FF00FF.
// Past cols and past rows the codes are 0 (the kernels read no X there).
// Scales (fp16) and zero-points (u8) are stored group-major, [group][n] with
// n padded to whole slices, so a warp's scale loads for one group are
// adjacent.
#pragma once

#include <cstdint>
#include <vector>

#if defined(__CUDACC__)
#define WOQ_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define WOQ_HOST_DEVICE inline
#endif

namespace woq::kernels::cuda {

constexpr uint32_t kSliceRows = 16;
constexpr uint32_t kUnitBytes = 512;
constexpr uint32_t kUnitWords = kUnitBytes / 4;

WOQ_HOST_DEVICE uint32_t field_bits(uint32_t code_bits) { return code_bits <= 4 ? 4 : 8; }
WOQ_HOST_DEVICE uint32_t step_cols(uint32_t field) { return field == 4 ? 64 : 32; }

// The unit column an mma operand element stands for (see above).
WOQ_HOST_DEVICE uint32_t fragment_column(uint32_t block, uint32_t t, uint32_t reg, uint32_t high) {
  return 32 * (block / 2) + 8 * t + 4 * (block % 2) + 2 * reg + high;
}

// Where the code of row r (< 16) and column c (< step_cols) of a unit lives:
// word index within the unit (lane * 4 + word of lane) and bit shift. The
// inverse of fragment_column.
struct CodePlace {
  uint32_t word;
  uint32_t shift;
};

WOQ_HOST_DEVICE CodePlace code_place(uint32_t field, uint32_t r, uint32_t c) {
  const uint32_t g = r % 8, tile = r / 8;
  const uint32_t t = (c % 32) / 8, within = c % 8, block = 2 * (c / 32) + within / 4;
  const uint32_t reg = (within % 4) / 2, high = within % 2;
  const uint32_t lane = 4 * g + t;
  if (field == 4) return {lane * 4 + block, 4 * (2 * tile + reg) + 16 * high};
  return {lane * 4 + 2 * block + tile, 8 * reg + 16 * high};
}

// Shape of a tensor in the fragment layout.
struct FragmentShape {
  uint64_t rows = 0, cols = 0;
  uint32_t field = 0;   // 4 or 8
  uint64_t slices = 0;  // ceil(rows / 16)
  uint64_t steps = 0;   // ceil(cols / step_cols)
  uint64_t groups = 0;  // per row
  // column >> group_shift is the column's group: log2 of a power-of-two
  // group size, 63 for one group per row; 64 where kernels must divide.
  uint32_t group_shift = 64;
  uint64_t padded_rows() const { return slices * kSliceRows; }
  uint64_t unit_count() const { return slices * steps; }
};

FragmentShape fragment_shape(uint64_t rows, uint64_t cols, uint32_t code_bits, uint32_t group_size);

// Rows per block when a tensor is repacked and uploaded in blocks: whole
// slices holding about `target_bytes` of repacked data (at least one), and
// whole file chunks of rows_per_chunk rows (0: any) where that at most
// doubles the block; never more than the padded rows.
uint64_t upload_block_rows(const FragmentShape& shape, uint64_t rows_per_chunk, uint64_t target_bytes);

// The canonical layout (kernels/cpu/reference.h: rows of packed codes,
// scales and zero-points row-major per (row, group)) repacked into the
// fragment layout. units: unit (slice, step) at word (slice * steps + step)
// * kUnitWords.
struct FragmentMatrix {
  FragmentShape shape;
  std::vector<uint32_t> units;
  std::vector<uint16_t> scales;  // groups x padded_rows, fp16 bits
  std::vector<uint8_t> zeros;    // groups x padded_rows
};

FragmentMatrix repack_fragments(const uint32_t* codes, uint64_t words_per_row, const uint16_t* scales,
                                const uint8_t* zeros, uint64_t rows, uint64_t cols, uint32_t code_bits,
                                uint32_t group_size);

// The same into caller memory (a block of rows of a larger tensor, e.g. a
// pinned staging buffer): units_out holds fragment_shape(rows, ...)
// .unit_count() units, scales_out and zeros_out hold groups rows of
// `stride` (>= padded_rows()) entries. Everything is overwritten, padding
// with zeros.
void repack_fragments_into(const uint32_t* codes, uint64_t words_per_row, const uint16_t* scales,
                           const uint8_t* zeros, uint64_t rows, uint64_t cols, uint32_t code_bits,
                           uint32_t group_size, uint32_t* units_out, uint16_t* scales_out, uint8_t* zeros_out,
                           uint64_t stride);

}  // namespace woq::kernels::cuda
