// The CPU kernels' weight layout and entry points.
//
// Rows are taken 16 at a time ("blocks", one SIMD lane per row). Within a
// block, codes are stored k-major: for every run of codes_per_word
// consecutive inputs k, 16 u32 words, word i holding those codes of row i
// (nibble or byte t = input k + t). A kernel thus loads one 64-byte vector
// and gets the next 8 (4-bit) or 4 (8-bit) inputs of all 16 rows.
// Codes are stored centred, as the two's complement field q - c with
// c = 2^(bits-1), and per (block, group, row) the fp16 scale s and the
// int8 z - c are stored (as compact as the canonical layout: the GEMV
// streams them from DRAM with the codes), so that the zero-point factors out
// of the dot product without large cancelling terms:
//     sum_k s (q - z) x = s * sum_k (q - c) x - s (z - c) * sum_k x   (per group)
// (exactly zero correction for symmetric tensors). Bit widths other than 4
// and 8 are widened to 8-bit fields at repack.
// See docs/CPU_KERNELS.md.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <type_traits>
#include <vector>

#include "kernels/cpu/reference.h"

namespace woq::kernels {

inline constexpr uint64_t kBlockRows = 16;

// 64-byte aligned storage for SIMD loads.
template <class T>
struct AlignedArray {
  struct Free {
    void operator()(T* p) const;
  };
  std::unique_ptr<T, Free> data;
  uint64_t size = 0;
  void allocate(uint64_t n);  // zero-filled; throws std::bad_alloc
  T* get() const { return data.get(); }
};

struct PackedMatrix {
  uint64_t rows = 0, cols = 0;
  uint32_t group_size = 0;
  uint32_t code_bits = 0;   // 4 or 8: storage width of a code
  uint32_t center = 0;      // c = 2^(bits-1), subtracted from every stored code
  uint64_t blocks = 0;      // ceil(rows / 16)
  uint64_t words_per_block = 0;
  AlignedArray<uint32_t> codes;        // blocks x words_per_block
  AlignedArray<uint16_t> scales;       // blocks x groups x 16: fp16 s (0 for an all-zero group)
  AlignedArray<int8_t> zero_offsets;   // blocks x groups x 16: z - c
  std::vector<float> bias;             // empty or rows
  uint64_t groups() const { return cols / group_size; }
  uint64_t codes_per_word() const { return 32 / code_bits; }
  uint64_t bytes() const { return codes.size * 4 + scales.size * 2 + zero_offsets.size + bias.size() * 4; }
};

// Row n of W_hat = s * (q - z), exactly as the canonical reference computes it.
void packed_dequantize_row(const PackedMatrix& w, uint64_t n, float* out);

// Whether a canonical matrix can use the packed kernels (cols must fill
// whole words of the packed layout).
bool packable(const QuantView& w);

// Canonical (SPEC.md) -> packed. Rows past `rows` in the last block are zero.
PackedMatrix repack(const QuantView& w);

// Up to this many rows of X use the small-M kernels, which never
// materialize dequantized weights; beyond it the blocked kernel reuses each
// dequantized chunk for all rows of X.
inline constexpr uint64_t kSmallM = 4;
// Fixed-point activations: round(x * 2^(fixed_point_bits(D) - e)) per value,
// e per block of inputs, held as D signed base-256 digits: three (23 bits,
// fp32's own precision), or two where Y is fp16 / bf16 (15 bits, a third
// less integer work; Y's error 1.00-1.37 times its own rounding to 11 or 8
// bits), except on amx, whose tiles take three (docs/CPU_KERNELS.md).
inline constexpr int kFixedPointDigits = 3;
inline constexpr int kFixedPointDigits16 = 2;
constexpr int fixed_point_bits(int digits) { return 8 * digits - 2; }  // the top digit stays within -128..127
// Up to this many rows of X the avx512vnni kernel runs on three-digit
// fixed-point activations (beyond it, the blocked fp32 GEMM was as fast:
// same run, L3-resident 4096 x 4096, one thread, M = 64: 14.8 against 15.1
// ms); on two digits (16-bit Y) at every M (docs/CPU_KERNELS.md).
inline constexpr uint64_t kFixedPointMaxM = 32;
// The same for avx2 (4-bit codes only): the fp32 kernel won from M = 4
// (L3-resident 4096 x 4096, one thread: 1.97 against 2.24 ms).
inline constexpr uint64_t kFixedPointMaxMAvx2 = 3;
// Largest |x| / mean |x| of a block of inputs up to which fixed point is used.
inline constexpr double kFixedPointPeak = 16.0;

// AMX (kernels_amx.cpp) takes 16 rows of X at a time through tiles of 64
// inputs (32 for blocks of 32 inputs); it runs on fixed-point activations at
// every M when the blocks of inputs sharing an exponent hold whole tiles
// (every group size, and per-channel with K a multiple of 32), from
// kAmxMinRows rows of X (kAmxMinRows32 with tiles of 32 inputs; below, the
// avx512vnni kernel was faster: docs/BENCHMARKS.md).
inline constexpr uint64_t kAmxRows = 16;
inline constexpr uint64_t kAmxInputs = 64;
inline constexpr uint64_t kAmxMinInputs = 32;
inline constexpr uint64_t kAmxMinRows = 8;
inline constexpr uint64_t kAmxMinRows32 = 16;
// Rows of digits allocated past M: AMX reads whole tiles of 16 rows of X.
inline constexpr uint64_t kFixedPointPadRows = kAmxRows - 1;
// AMX-BF16 (kernels_amx.cpp): bf16 X times q - z (which bf16 holds
// exactly) on tdpbf16ps, accumulating in fp32 per group; from
// kAmxBf16MinRows rows of X (kAmxBf16MinRows32 for groups of 32, where the
// fixed-point kernels are slowest), when every group holds whole tiles of
// kAmxBf16Inputs inputs. (fp16 and fp32 X, as two or three exact bf16
// pieces, ran slower than fixed point: docs/CPU_KERNELS.md.)
inline constexpr uint64_t kAmxBf16Inputs = 32;
inline constexpr uint64_t kAmxBf16MinRows = 32;
inline constexpr uint64_t kAmxBf16MinRows32 = 12;

// Ordered: each ISA's machines can run every earlier one.
enum class Isa { Portable = 0, Avx2 = 1, Avx512 = 2, Avx512Vnni = 3, Amx = 4 };
inline constexpr Isa kAllIsas[] = {Isa::Portable, Isa::Avx2, Isa::Avx512, Isa::Avx512Vnni, Isa::Amx};
const char* isa_name(Isa isa);
// Best ISA this CPU and OS support (for AMX, after asking Linux for the
// tile state: ARCH_REQ_XCOMP_PERM).
Isa detect_isa();

// Activations of one call in the forms the kernels read, prepared once per
// call (prepare_activations) before the blocks are split among threads.
struct Activations {
  const float* x = nullptr;  // m x K fp32
  uint64_t m = 0;
  std::vector<float> xsum;   // m x groups: the sum of x over each group (the fp32 kernels' factored zero-point)

  // Fp32: x alone. FixedPoint (fixed_point_prep.inl): per row of X, digit d
  // and code word i, for each phase p (byte vector the kernel makes of the
  // word: 2 for 4-bit words, the even and odd inputs, 1 for 8-bit words)
  // one u32 of the digits of the four inputs that the phase's bytes multiply.
  enum class Form { Fp32, FixedPoint, Bf16 } form = Form::Fp32;
  AlignedArray<uint32_t> words;
  uint64_t row_words = 0;    // words per row of X
  uint64_t digit_words = 0;  // words per digit
  // FixedPoint: inputs sharing one exponent (divides the group size), and
  // per row of X and such block its scale 2^(e - fixed_point_bits(digits))
  // and, per digit, -offset * (sum of the digit over the block): the
  // accumulator's start, which turns the kernel's unsigned codes
  // (q - c + offset) back into q - c.
  uint64_t block_inputs = 0;
  int digits = kFixedPointDigits;  // kFixedPointDigits16 for y_is_16bit, but not on amx
  AlignedArray<float> block_scale;
  AlignedArray<int32_t> block_start;
  // m x groups: the sum over each group of the values the digits stand for,
  // which the zero-point term multiplies: with the exact sum (xsum) it would
  // take in the digits' rounding times (z - c) instead of (q - z) - up to 8
  // (4-bit) or 128 (8-bit) times more in groups whose z is far from c.
  std::vector<float> digit_xsum;

  // Bf16 (AMX): per row of X its K values as bf16 (two per word, in input
  // order), row_words apart. Only for values that are bf16 (x_is_bf16: the
  // caller's bf16 activations, not rescaled).
  bool x_is_bf16 = false;
  // Y is written as fp16 or bf16: rounded to 11 or 8 significant bits, next
  // to which two digits' error (about 2^-15 of a block's largest |x|) is
  // small.
  bool y_is_16bit = false;
};

// f(std::integral_constant<int, D>{}) for the FixedPoint form's digit count
// D, so that the kernels and the preparation are compiled for each.
template <class F>
decltype(auto) with_digits(const Activations& a, F&& f) {
  if (a.digits == kFixedPointDigits16) return f(std::integral_constant<int, kFixedPointDigits16>{});
  return f(std::integral_constant<int, kFixedPointDigits>{});
}

// Runs rows(r0, r1) over [0, M) of one call's rows of X, in pieces, possibly
// on several threads at once (the CPU backend's pool).
using OverRows = std::function<void(const std::function<void(uint64_t r0, uint64_t r1)>& rows)>;

// Sets a.form and fills its data (a.xsum for the Fp32 form only); the rows
// of X through `over_rows` when given, else in one piece.
void prepare_activations(Isa isa, const PackedMatrix& w, Activations& a, const OverRows& over_rows = {});
// Rows [r0, r1) of the FixedPoint form (finite x; false: a block too peaky
// for it), in kernels_avx512vnni.cpp and kernels_avx2.cpp (fixed_point_prep.inl).
bool prepare_fixed_point_rows_avx512vnni(const PackedMatrix& w, Activations& a, uint64_t r0, uint64_t r1);
bool prepare_fixed_point_rows_avx2(const PackedMatrix& w, Activations& a, uint64_t r0, uint64_t r1);
// Rows [r0, r1) of the Bf16 form, in kernels_amx.cpp; false when a value is
// not bf16, or (being zero) outside [2^-96, 2^64) in magnitude.
bool prepare_bf16_rows_amx(const PackedMatrix& w, Activations& a, uint64_t r0, uint64_t r1);

// Y[m][n] (fp32, row-major, ld = w.rows) for the rows of blocks
// [block_begin, block_end), all m. Adds the bias.
using PackedMatmulFn = void (*)(const PackedMatrix& w, const Activations& a, uint64_t block_begin,
                                uint64_t block_end, float* y);

// The kernel for an ISA; nullptr when this build lacks it.
PackedMatmulFn packed_matmul_for(Isa isa);

// Y rows [0, rows_of_x) for block b from tile (rows_of_x x 16, no bias),
// adding the bias.
void store_rows(const PackedMatrix& w, const float* tile, uint64_t rows_of_x, uint64_t b, float* y);

// Per ISA, defined in kernels_<isa>.cpp.
void packed_matmul_portable(const PackedMatrix&, const Activations&, uint64_t, uint64_t, float*);
void packed_matmul_avx2(const PackedMatrix&, const Activations&, uint64_t, uint64_t, float*);
void packed_matmul_avx512(const PackedMatrix&, const Activations&, uint64_t, uint64_t, float*);
void packed_matmul_avx512vnni(const PackedMatrix&, const Activations&, uint64_t, uint64_t, float*);
void packed_matmul_amx(const PackedMatrix&, const Activations&, uint64_t, uint64_t, float*);

}  // namespace woq::kernels
