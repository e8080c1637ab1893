// Fused dequantize + matmul on CUDA over the fragment layout (layout.h).
//
// Every output's K is summed as kParts interleaved K-parts (part p: units
// p, p + 8, ... of its slice), added in order p = 0 .. 7 then the bias. A
// lane turns its codes into pairs of exact integers (q - z) with one shift,
// one LOP3 and one fused subtract per pair (the code is OR-ed into the
// mantissa of a 16-bit float whose exponent makes it 1024 + q (fp16) or
// 128 + q (bf16)), and:
// - fp16 / bf16 X: feeds them as B to mma.m16n8k16 with X as A, into a
//   per-group fp32 accumulator that the group's scale then adds into the
//   part's sum. M <= 4: a block of 8 warps per slice, one K-part each, so
//   many 16-byte loads are in flight per output; beyond, 8 slices (a warp
//   each) per block share up to 64 rows of X staged in shared memory, one
//   K-part per block with the parts added by a second kernel (M <= 128),
//   or all 8 in turn. The same operations in the same order: a row's bits
//   do not depend on M.
// - fp32 X: multiplies them with X in fp32 FMAs (kSimtRows rows at a time)
//   and sums the four lanes of a row with shuffles, one K-part per warp.
// Written without a GPU at hand; tests/gpu checks it, docs/BENCHMARKS.md
// has what it measured.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

#include "kernels/cuda/launch.h"
#include "kernels/cuda/layout.h"

namespace woq::kernels::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kParts = 8;  // every output's K is summed as 8 interleaved parts, added in order
constexpr int kSimtRows = 8;
constexpr unsigned kMaxGridY = 65535;

// The few PTX instructions used, and how they are launched. With
// WOQ_CUDA_EMULATE (tests/emulator) the same kernels compile as host C++
// and run on a CPU emulation of warps: emu:: gives these operations.
__device__ __forceinline__ uint4 load_stream(const uint4* p) {
#if defined(WOQ_CUDA_EMULATE)
  return *p;
#else
  uint4 v;  // read-only for the kernel's life: not volatile, the compiler may schedule it early
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
#endif
}

template <class Kernel, class... Args>
cudaError_t launch_shared(Kernel kernel, dim3 grid, unsigned threads, size_t dynamic_shared_bytes, cudaStream_t stream,
                          Args... args) {
#if defined(WOQ_CUDA_EMULATE)
  return emu::launch_on(stream, kernel, grid, threads, dynamic_shared_bytes, args...);
#else
  kernel<<<grid, threads, dynamic_shared_bytes, stream>>>(args...);
  return cudaGetLastError();
#endif
}
template <class Kernel, class... Args>
cudaError_t launch(Kernel kernel, dim3 grid, unsigned threads, cudaStream_t stream, Args... args) {
  return launch_shared(kernel, grid, threads, 0, stream, args...);
}

__device__ __forceinline__ void store(void* y, Dtype t, uint64_t i, float v) {
  if (t == Dtype::F32) static_cast<float*>(y)[i] = v;
  else if (t == Dtype::F16) static_cast<__half*>(y)[i] = __float2half_rn(v);
  else static_cast<__nv_bfloat16*>(y)[i] = __float2bfloat16_rn(v);
}

// The 16-bit operand types of the tensor-core path.
struct F16 {
  static constexpr uint32_t kMagic = 0x64006400u;  // 1024.0 in both halves
  static constexpr float kOffset = 1024.0f;
  // a * 1 - b, exact for the small integers it sees.
  static __device__ __forceinline__ uint32_t sub(uint32_t a, uint32_t b) {
#if defined(WOQ_CUDA_EMULATE)
    return emu::fma_f16x2(a, 0x3C003C00u, b ^ 0x80008000u);
#else
    uint32_t d;
    asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(0x3C003C00u), "r"(b ^ 0x80008000u));
    return d;
#endif
  }
  static __device__ __forceinline__ uint32_t pair(float lo, float hi) {
    const __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
  static __device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(WOQ_CUDA_EMULATE)
    emu::mma_m16n8k16(false, c, a, b);
#else
    asm(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
  }
};

struct BF16 {
  static constexpr uint32_t kMagic = 0x43004300u;  // 128.0 in both halves: exact for q < 128
  static constexpr float kOffset = 128.0f;
  static __device__ __forceinline__ uint32_t sub(uint32_t a, uint32_t b) {
#if defined(WOQ_CUDA_EMULATE)
    return emu::fma_bf16x2(a, 0x3F803F80u, b ^ 0x80008000u);
#else
    uint32_t d;
    asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(0x3F803F80u), "r"(b ^ 0x80008000u));
    return d;
#endif
  }
  static __device__ __forceinline__ uint32_t pair(float lo, float hi) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
  static __device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(WOQ_CUDA_EMULATE)
    emu::mma_m16n8k16(true, c, a, b);
#else
    asm(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
  }
};

// The exact integers q - z of register `reg` of tile `tile` in k16 block
// `block` of a unit's four words (layout.h), as a pair of Op's 16-bit
// floats; offset_z is the pair (kOffset + z, kOffset + z).
template <class Op, int FIELD>
__device__ __forceinline__ uint32_t b_pair(const uint32_t (&words)[4], int block, int tile, int reg,
                                           uint32_t offset_z, float z) {
  if constexpr (FIELD == 4) {
    const uint32_t v = ((words[block] >> (4 * (2 * tile + reg))) & 0x000F000Fu) | Op::kMagic;
    return Op::sub(v, offset_z);
  } else if constexpr (Op::kOffset == 1024.0f) {  // fp16 holds 1024 + q exactly for q < 1024
    const uint32_t v = ((words[2 * block + tile] >> (8 * reg)) & 0x00FF00FFu) | Op::kMagic;
    return Op::sub(v, offset_z);
  } else {  // bf16 cannot hold 128 + q for q >= 128: through fp32 (2^23 + q)
    const uint32_t v = words[2 * block + tile] >> (8 * reg);
    const float lo = __uint_as_float(0x4B000000u | (v & 0xFFu)) - (8388608.0f + z);
    const float hi = __uint_as_float(0x4B000000u | ((v >> 16) & 0xFFu)) - (8388608.0f + z);
    return Op::pair(lo, hi);  // |q - z| <= 255: exact in bf16
  }
}

// The 8 columns [k, k + 8) of row `row` of X (k a multiple of 8): one
// 16-byte load where rows are 16-byte aligned, else element by element;
// zero past m and K. 16-bit X: four pairs; fp32 X: two float4.
template <class T>
struct XRun;
template <>
struct XRun<uint16_t> {
  uint4 v;
  __device__ __forceinline__ void load(const uint16_t* x, uint64_t row, uint64_t k, uint64_t m, uint64_t K,
                                       bool vector) {
    v = make_uint4(0, 0, 0, 0);
    if (row >= m || k >= K) return;
    const uint16_t* p = x + row * K + k;
    if (vector) {
      v = __ldg(reinterpret_cast<const uint4*>(p));
      return;
    }
    uint32_t w[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint32_t lo = k + 2 * i < K ? __ldg(p + 2 * i) : 0u, hi = k + 2 * i + 1 < K ? __ldg(p + 2 * i + 1) : 0u;
      w[i] = lo | hi << 16;
    }
    v = make_uint4(w[0], w[1], w[2], w[3]);
  }
  __device__ __forceinline__ uint32_t word(int i) const { return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w; }
};
template <>
struct XRun<float> {
  float4 lo, hi;
  __device__ __forceinline__ void load(const float* x, uint64_t row, uint64_t k, uint64_t m, uint64_t K,
                                       bool vector) {
    lo = hi = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (row >= m || k >= K) return;
    const float* p = x + row * K + k;
    if (vector) {
      lo = __ldg(reinterpret_cast<const float4*>(p));
      hi = __ldg(reinterpret_cast<const float4*>(p) + 1);
      return;
    }
    float f[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) f[i] = k + i < K ? __ldg(p + i) : 0.0f;
    lo = make_float4(f[0], f[1], f[2], f[3]);
    hi = make_float4(f[4], f[5], f[6], f[7]);
  }
  // Columns 4 q .. 4 q + 3 of the run.
  __device__ __forceinline__ float4 quad(int q) const { return q == 0 ? lo : hi; }
};

// Whether every run of X is 16-byte aligned (XRun's `vector`): whole runs
// per row and an aligned base.
template <class T>
__device__ __forceinline__ bool whole_runs(const DeviceMatrix& w, const T* x) {
  return w.cols % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
}

// Adds the COUNT values per lane of warps 1 .. kWarps - 1 into warp 0's, in
// warp order; true in warp 0.
template <int COUNT>
__device__ __forceinline__ bool reduce_warps(float (&v)[COUNT], float (*shared)[COUNT][32]) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (warp > 0) {
#pragma unroll
    for (int i = 0; i < COUNT; ++i) shared[warp - 1][i][lane] = v[i];
  }
  __syncthreads();
  if (warp > 0) return false;
  for (int w = 0; w < kWarps - 1; ++w)
#pragma unroll
    for (int i = 0; i < COUNT; ++i) v[i] += shared[w][i][lane];
  return true;
}

// A slice's units for one K-part (steps first, first + kParts, ...) in
// turn, AHEAD loads in flight beyond the one being used.
template <int AHEAD>
struct UnitStreamOf {
  const uint4* lane_units;
  uint64_t steps;
  uint4 ahead[AHEAD];
  __device__ __forceinline__ UnitStreamOf(const DeviceMatrix& w, uint64_t slice, uint64_t first) {
    lane_units = reinterpret_cast<const uint4*>(w.units) + slice * w.steps * 32 + threadIdx.x % 32;
    steps = w.steps;
#pragma unroll
    for (int a = 0; a < AHEAD; ++a) {
      const uint64_t s = first + uint64_t(a) * kParts;
      ahead[a] = s < steps ? load_stream(lane_units + s * 32) : make_uint4(0, 0, 0, 0);
    }
  }
  // The unit of `step`, which must follow the previous call's by kParts.
  __device__ __forceinline__ void next(uint64_t step, uint32_t (&words)[4]) {
    words[0] = ahead[0].x;
    words[1] = ahead[0].y;
    words[2] = ahead[0].z;
    words[3] = ahead[0].w;
#pragma unroll
    for (int a = 0; a + 1 < AHEAD; ++a) ahead[a] = ahead[a + 1];
    const uint64_t s = step + uint64_t(AHEAD) * kParts;
    if (s < steps) ahead[AHEAD - 1] = load_stream(lane_units + s * 32);
  }
};
using UnitStream = UnitStreamOf<2>;

// The group of columns starting at `span` (a multiple of 32).
__device__ __forceinline__ uint64_t group_of(const DeviceMatrix& w, uint64_t span) {
  return w.group_shift < 64 ? span >> w.group_shift : span / w.group_size;
}

// Zero-points of the lane's two B columns (n0 + 8 tile + g) for `group`.
template <class Op>
__device__ __forceinline__ void load_zeros(const DeviceMatrix& w, uint64_t group, uint64_t n, float (&z)[2],
                                           uint32_t (&offset_z)[2]) {
  const uint64_t stride = w.slices * kSliceRows;
#pragma unroll
  for (int tile = 0; tile < 2; ++tile) {
    z[tile] = float(__ldg(w.zeros + group * stride + n + 8 * tile));
    offset_z[tile] = Op::pair(Op::kOffset + z[tile], Op::kOffset + z[tile]);
  }
}

// One K-part of one slice times MT tiles of 16 rows of X (fp16 / bf16):
// what every tensor-core kernel computes for an output, in this order, so
// that its bits do not depend on which kernel (hence which M) ran. K-part
// p is steps p, p + kParts, ...; per group the mma sums go into `part`,
// which the group's scale then adds into `acc`.
// TOP: only rows 0 .. 7 of each 16-row tile of X. The mma's A rows 8 .. 15
// are zeros and its C rows 8 .. 15 zeros in, discarded out (an output's
// bits depend on its own row alone), which saves the GEMV kernel the
// registers of those rows: no spills at 64.
template <class Op, int FIELD, int MT, bool TOP = false>
struct PartAccumulator {
  static constexpr int kCols = FIELD == 4 ? 64 : 32, kPairs = kCols / 32;
  static constexpr int kHalves = TOP ? 1 : 2, kElements = 2 * kHalves;  // of a C fragment: rows g (, g + 8)
  float acc[MT][2][4], part[MT][2][4];
  uint64_t group;
  uint32_t offset_z[2];
  float z[2];

  __device__ __forceinline__ void reset() {
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[i][j][e] = part[i][j][e] = 0.0f;
    group = ~uint64_t(0);
    offset_z[0] = offset_z[1] = 0;
    z[0] = z[1] = 0.0f;
  }

  // acc += s * part for the current group, per output column 2t, 2t + 1.
  __device__ __forceinline__ void flush(const DeviceMatrix& w, uint64_t n0, int t) {
    if (group == ~uint64_t(0)) return;
    const uint64_t stride = w.slices * kSliceRows;
#pragma unroll
    for (int tile = 0; tile < 2; ++tile) {
      const float2 s =
          __half22float2(*reinterpret_cast<const __half2*>(w.scales + group * stride + n0 + 8 * tile + 2 * t));
#pragma unroll
      for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int e = 0; e < kElements; ++e) {  // columns 2t (even e), 2t + 1 (odd e)
          acc[i][tile][e] = fmaf(e % 2 ? s.y : s.x, part[i][tile][e], acc[i][tile][e]);
          part[i][tile][e] = 0.0f;
        }
    }
  }

  // The unit of `step` (its four words in this lane) against 16 MT rows of
  // X; load_x(run, r, c) fills `run` with row r (of the 16 MT) and columns
  // c .. c + 8 of the step.
  template <class LoadX>
  __device__ __forceinline__ void step(const DeviceMatrix& w, uint64_t n0, uint64_t step, const uint32_t (&words)[4],
                                       int g, int t, LoadX&& load_x) {
#pragma unroll
    for (int pair = 0; pair < kPairs; ++pair) {
      const uint64_t span = step * kCols + 32 * pair;  // blocks 2 pair, 2 pair + 1: one group
      if (span >= w.cols) break;
      if (group_of(w, span) != group) {
        flush(w, n0, t);
        group = group_of(w, span);
        load_zeros<Op>(w, group, n0 + g, z, offset_z);
      }
      XRun<uint16_t> run[MT][kHalves];  // rows g (, g + 8) of each tile; columns span + 8 t ..
#pragma unroll
      for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int h = 0; h < kHalves; ++h) load_x(run[i][h], 16 * i + 8 * h + g, 32 * pair + 8 * t);
#pragma unroll
      for (int q = 0; q < 2; ++q) {
        const int block = 2 * pair + q;
        uint32_t b[2][2];
#pragma unroll
        for (int tile = 0; tile < 2; ++tile)
#pragma unroll
          for (int reg = 0; reg < 2; ++reg)
            b[tile][reg] = b_pair<Op, FIELD>(words, block, tile, reg, offset_z[tile], z[tile]);
#pragma unroll
        for (int i = 0; i < MT; ++i) {
          if constexpr (TOP) {
            const uint32_t a[4] = {run[i][0].word(2 * q), 0u, run[i][0].word(2 * q + 1), 0u};
#pragma unroll
            for (int tile = 0; tile < 2; ++tile) {
              float c[4] = {part[i][tile][0], part[i][tile][1], 0.0f, 0.0f};
              Op::mma(c, a, b[tile]);
              part[i][tile][0] = c[0];
              part[i][tile][1] = c[1];
            }
          } else {
            const uint32_t a[4] = {run[i][0].word(2 * q), run[i][1].word(2 * q), run[i][0].word(2 * q + 1),
                                   run[i][1].word(2 * q + 1)};
            Op::mma(part[i][0], a, b[0]);
            Op::mma(part[i][1], a, b[1]);
          }
        }
      }
    }
  }

  // The whole K-part p of `slice`, AHEAD units in flight.
  template <int AHEAD>
  __device__ __forceinline__ void run_part(const DeviceMatrix& w, const uint16_t* x, uint64_t m, uint64_t m0,
                                           uint64_t slice, int p, bool vector, int g, int t) {
    reset();
    UnitStreamOf<AHEAD> units(w, slice, p);
    for (uint64_t s = p; s < w.steps; s += kParts) {
      uint32_t words[4];
      units.next(s, words);
      step(w, slice * kSliceRows, s, words, g, t, [&](XRun<uint16_t>& run, int r, int c) {
        run.load(x, m0 + r, s * kCols + c, m, w.cols, vector);
      });
    }
    flush(w, slice * kSliceRows, t);
  }
};

// C fragment of tile (i, tile), element e: rows g (+ 8 for e >= 2), columns 2t (+ 1 for odd e).
template <int MT>
__device__ __forceinline__ void store_tiles(const DeviceMatrix& w, const float (&v)[MT * 8], uint64_t m, uint64_t m0,
                                            uint64_t n0, void* y, Dtype y_type, int g, int t) {
#pragma unroll
  for (int i = 0; i < MT * 8; ++i) {
    const int tile = (i / 4) % 2, e = i % 4;
    const uint64_t row = m0 + 16 * (i / 8) + g + 8 * (e / 2), n = n0 + 8 * tile + 2 * t + (e % 2);
    if (row < m && n < w.rows) store(y, y_type, row * w.rows + n, v[i] + (w.bias ? w.bias[n] : 0.0f));
  }
}

// fp16 / bf16 X, small M: block = one slice x 8 rows of X (the top half
// of an mma tile); warp p computes K-part p, and warp 0 adds the parts in
// order p = 0 .. 7. Many warps per output row keep many loads in flight
// when the weights are all the traffic: at most 64 registers, so that 4
// blocks fit an SM (an 8192-row layer's 512 blocks are one wave on 132
// SMs, not 1.3), each warp with 2 units in flight beyond the one in use.
// DEEP, for grids of at most 2 blocks an SM (N <= 4224 rows on 132 SMs at
// M <= 8), where 4 could never meet: 128 registers and 6 units in flight,
// three times the bytes a warp waits for at once, the same bits.
constexpr int kGemvRows = 8;

template <class Op, int FIELD, bool DEEP>
__global__ void __launch_bounds__(kThreads, DEEP ? 2 : 4)
    mma_gemv_kernel(DeviceMatrix w, const uint16_t* __restrict__ x, uint64_t m, uint64_t m_first, void* y,
                    Dtype y_type) {
  static_assert(kParts == kWarps, "one warp per K-part");
  constexpr int kCount = 4;  // [tile][e]: row g, columns 8 tile + 2t + e
  __shared__ float shared[kWarps - 1][kCount][32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const uint64_t m0 = m_first + uint64_t(blockIdx.y) * kGemvRows, n0 = uint64_t(blockIdx.x) * kSliceRows;
  const bool vector = whole_runs(w, x);
  PartAccumulator<Op, FIELD, 1, true> a;
  a.template run_part<DEEP ? 6 : 2>(w, x, m, m0, blockIdx.x, warp, vector, g, t);
  float flat[kCount];
#pragma unroll
  for (int i = 0; i < kCount; ++i) flat[i] = a.acc[0][i / 2][i % 2];
  if (!reduce_warps<kCount>(flat, shared)) return;
  const uint64_t row = m0 + g;
  if (row >= m) return;
#pragma unroll
  for (int i = 0; i < kCount; ++i) {
    const uint64_t n = n0 + 8 * (i / 2) + 2 * t + i % 2;
    if (n < w.rows) store(y, y_type, row * w.rows + n, flat[i] + (w.bias ? w.bias[n] : 0.0f));
  }
}

// fp32 X: rows [m0, m0 + kSimtRows) of Y for slice blockIdx.x. Lane (g, t)
// keeps partial sums for outputs n0 + 8 tile + g over its columns.
template <int FIELD>
__global__ void __launch_bounds__(kThreads)
    simt_kernel(DeviceMatrix w, const float* __restrict__ x, uint64_t m, uint64_t m_first, void* y, Dtype y_type) {
  constexpr int kCols = FIELD == 4 ? 64 : 32, kPairs = kCols / 32, kCount = kSimtRows * 2;
  __shared__ float shared[kWarps - 1][kCount][32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const uint64_t n0 = uint64_t(blockIdx.x) * kSliceRows, m0 = m_first + uint64_t(blockIdx.y) * kSimtRows;
  const int rows = int(m - m0 < kSimtRows ? m - m0 : kSimtRows);
  const uint64_t K = w.cols, stride = w.slices * kSliceRows;
  const bool vector = whole_runs(w, x);

  float acc[kSimtRows][2], part[kSimtRows][2];
#pragma unroll
  for (int r = 0; r < kSimtRows; ++r) acc[r][0] = acc[r][1] = part[r][0] = part[r][1] = 0.0f;
  uint64_t group = ~uint64_t(0);
  uint32_t offset_z[2] = {0, 0};
  float z[2] = {0.0f, 0.0f};
  auto flush = [&]() {
#pragma unroll
    for (int tile = 0; tile < 2; ++tile) {
      const float s = __half2float(__ushort_as_half(__ldg(w.scales + group * stride + n0 + 8 * tile + g)));
#pragma unroll
      for (int r = 0; r < kSimtRows; ++r) {
        acc[r][tile] = fmaf(s, part[r][tile], acc[r][tile]);
        part[r][tile] = 0.0f;
      }
    }
  };

  UnitStream units(w, blockIdx.x, warp);
  for (uint64_t step = warp; step < w.steps; step += kWarps) {
    uint32_t words[4];
    units.next(step, words);
#pragma unroll
    for (int pair = 0; pair < kPairs; ++pair) {
      const uint64_t span = step * kCols + 32 * pair;
      if (span >= K) break;
      if (group_of(w, span) != group) {
        if (group != ~uint64_t(0)) flush();
        group = group_of(w, span);
        load_zeros<F16>(w, group, n0 + g, z, offset_z);
      }
      float2 dq[2][2][2];  // [block q][tile][reg]: (q - z) at columns 4 q + 2 reg (+1) of the run: exact
#pragma unroll
      for (int q = 0; q < 2; ++q)
#pragma unroll
        for (int tile = 0; tile < 2; ++tile)
#pragma unroll
          for (int reg = 0; reg < 2; ++reg) {
            const uint32_t h = b_pair<F16, FIELD>(words, 2 * pair + q, tile, reg, offset_z[tile], z[tile]);
            dq[q][tile][reg] = __half22float2(*reinterpret_cast<const __half2*>(&h));
          }
#pragma unroll
      for (int r = 0; r < kSimtRows; ++r) {
        if (r >= rows) break;
        XRun<float> run;
        run.load(x, m0 + r, span + 8 * t, m, K, vector);
#pragma unroll
        for (int tile = 0; tile < 2; ++tile) {
          float p = part[r][tile];
#pragma unroll
          for (int q = 0; q < 2; ++q) {
            const float4 v = run.quad(q);
            p = fmaf(dq[q][tile][0].x, v.x, p);
            p = fmaf(dq[q][tile][0].y, v.y, p);
            p = fmaf(dq[q][tile][1].x, v.z, p);
            p = fmaf(dq[q][tile][1].y, v.w, p);
          }
          part[r][tile] = p;
        }
      }
    }
  }
  if (group != ~uint64_t(0)) flush();

  float flat[kCount];
#pragma unroll
  for (int r = 0; r < kSimtRows; ++r)
#pragma unroll
    for (int tile = 0; tile < 2; ++tile) {
      float v = acc[r][tile];
      v += __shfl_xor_sync(0xffffffffu, v, 1);
      v += __shfl_xor_sync(0xffffffffu, v, 2);
      flat[r * 2 + tile] = v;
    }
  if (!reduce_warps<kCount>(flat, shared) || t != 0) return;
  for (int r = 0; r < rows; ++r)
#pragma unroll
    for (int tile = 0; tile < 2; ++tile) {
      const uint64_t n = n0 + 8 * tile + g;
      if (n < w.rows) store(y, y_type, (m0 + r) * w.rows + n, flat[r * 2 + tile] + (w.bias ? w.bias[n] : 0.0f));
    }
}

// fp16 / bf16 X, M > 4: block = kTileSlices slices (a warp each) x 16 MT
// rows of X, walking the steps in the K-parts' order. Each step's tile of X
// (16 MT rows x step_cols) is staged in shared memory for all the block's
// warps, double buffered: the next tile's global loads are in flight in
// registers while this one is used.
// SPLIT: the block does only K-part blockIdx.y (row blocks on blockIdx.z)
// and writes that part's sums to workspace[part][row][n]; reduce_parts
// then adds the parts in order. Without, the block adds all 8 itself. Both
// give the GEMV kernel's bits.
constexpr int kTileSlices = 8;

template <int FIELD, int MT, bool SPLIT>
constexpr int kTileAhead = !SPLIT ? 2 : MT != 2 ? 6 : FIELD == 4 ? 4 : 2;

template <class Op, int FIELD, int MT, bool SPLIT>
__global__ void __launch_bounds__(kTileSlices * 32, SPLIT && MT <= 2 ? 2 : 1)
    mma_tile_kernel(DeviceMatrix w, const uint16_t* __restrict__ x, uint64_t m, uint64_t m_first, void* y,
                    Dtype y_type, float* workspace) {
  constexpr int kCols = FIELD == 4 ? 64 : 32, kThreadsHere = kTileSlices * 32, kRows = 16 * MT;
  // Halves per staged row, padded so that a quarter-warp's 16-byte reads
  // (rows g, g + 1; columns 8t) fall in distinct banks.
  constexpr int kStride = kCols + (FIELD == 4 ? 32 : 0);
  constexpr int kRuns = kRows * kCols / 8;
  constexpr int kRunsPerThread = (kRuns + kThreadsHere - 1) / kThreadsHere;
  __shared__ uint4 staged[2][kRows * kStride / 8];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const uint64_t slice = uint64_t(blockIdx.x) * kTileSlices + warp;
  const uint64_t m0 = m_first + uint64_t(SPLIT ? blockIdx.z : blockIdx.y) * kRows;
  const int first_part = SPLIT ? int(blockIdx.y) : 0, end_part = SPLIT ? first_part + 1 : kParts;
  const bool active = slice < w.slices;  // idle warps still stage X and meet every barrier
  const bool vector = whole_runs(w, x);
  if (uint64_t(first_part) >= w.steps) {  // an empty K-part (K < 8 steps): zero sums
    if (SPLIT && active)
      for (int i = lane; i < kRows * int(kSliceRows); i += 32) {
        const uint64_t row = m0 + i / kSliceRows, n = slice * kSliceRows + i % kSliceRows;
        if (row < m && n < w.rows) workspace[(uint64_t(first_part) * m + row) * w.rows + n] = 0.0f;
      }
    return;  // uniform across the block
  }

  // This thread's j-th run of a tile: its row and column in the tile, or
  // false past the tile.
  auto place = [&](int j, int& r, int& c) {
    const int run = int(threadIdx.x) + j * kThreadsHere;
    r = run / (kCols / 8);
    c = 8 * (run % (kCols / 8));
    return run < kRuns;
  };
  XRun<uint16_t> pending[kRunsPerThread];
  auto fetch = [&](uint64_t step) {
#pragma unroll
    for (int j = 0; j < kRunsPerThread; ++j) {
      int r, c;
      if (place(j, r, c)) pending[j].load(x, m0 + r, step * kCols + c, m, w.cols, vector);
    }
  };
  auto put = [&](int buffer) {
#pragma unroll
    for (int j = 0; j < kRunsPerThread; ++j) {
      int r, c;
      if (place(j, r, c)) staged[buffer][(r * kStride + c) / 8] = pending[j].v;
    }
  };

  fetch(uint64_t(first_part));
  put(0);
  __syncthreads();
  int buffer = 0;
  float total[MT * 8];
  PartAccumulator<Op, FIELD, MT> a;
  for (int p = first_part; p < end_part; ++p) {
    a.reset();
    // Idle warps: no loads.
    UnitStreamOf<kTileAhead<FIELD, MT, SPLIT>> units(w, active ? slice : 0, active ? uint64_t(p) : w.steps);
    for (uint64_t step = p; step < w.steps; step += kParts) {
      // The step after this one: the next of this part, or the next part's first.
      const bool in_part = step + kParts < w.steps;
      const uint64_t next = in_part ? step + kParts : uint64_t(p + 1);
      const bool has_next = in_part || (p + 1 < end_part && next < w.steps);
      if (has_next) fetch(next);
      if (active) {
        uint32_t words[4];
        units.next(step, words);
        const uint16_t* tile = reinterpret_cast<const uint16_t*>(staged[buffer]);
        a.step(w, slice * kSliceRows, step, words, g, t, [&](XRun<uint16_t>& run, int r, int c) {
          run.v = *reinterpret_cast<const uint4*>(tile + r * kStride + c);
        });
      }
      if (has_next) put(buffer ^ 1);  // its readers finished before the last barrier
      __syncthreads();
      buffer ^= 1;
    }
    if (!active) continue;
    a.flush(w, slice * kSliceRows, t);
#pragma unroll
    for (int i = 0; i < MT * 8; ++i) {
      const float v = a.acc[i / 8][(i / 4) % 2][i % 4];
      total[i] = p == first_part ? v : total[i] + v;
    }
  }
  if (!active) return;
  if constexpr (!SPLIT) {
    store_tiles<MT>(w, total, m, m0, slice * kSliceRows, y, y_type, g, t);
  } else {
#pragma unroll
    for (int i = 0; i < MT * 8; ++i) {  // C fragment positions, as store_tiles
      const int tile = (i / 4) % 2, e = i % 4;
      const uint64_t row = m0 + 16 * (i / 8) + g + 8 * (e / 2), n = slice * kSliceRows + 8 * tile + 2 * t + (e % 2);
      if (row < m && n < w.rows) workspace[(uint64_t(first_part) * m + row) * w.rows + n] = total[i];
    }
  }
}

// ---- Hopper (sm_90a): wgmma ------------------------------------------------
// The tile kernel's sums from warpgroup MMAs: a warpgroup is 4 slices (a
// warp each, 64 rows of W) and wgmma.m64nNk16 takes W as A from registers
// (a lane's unit words are exactly its A fragment: rows g, g + 8 of its
// slice, k 2t, 2t + 1 and + 8, as for mma.m16n8k16) and NB rows of X as B
// from shared memory, with the accumulators, per k16 block, in the same
// order as every other kernel: per group into `d`, the group's scale then
// added into the part's sum, the parts added in order. B is K-major without
// swizzling: 8 x 8 "core matrices" of 128 contiguous bytes, the two k-halves
// of a block kCoreBytes apart (LBO), groups of 8 rows of X 2 kCoreBytes
// apart (SBO). The permuted columns of the layout are undone while staging:
// word i of a lane's 16-byte run of X (columns 8t' + 2i, + 1 of a 32-column
// span) holds k 2t' (+ 8 for odd i) of block i / 2 of the span.
constexpr int kGroupSlices = 4;  // a warpgroup: 4 warps, a slice each

// Where the wgmma kernel has code: sm_90a and the emulator (elsewhere its
// body is empty, and wgmma_supported says so).
#if defined(WOQ_CUDA_EMULATE) || defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define WOQ_WGMMA_CODE 1
constexpr int kCoreBytes = 128;  // 8 rows x 16 bytes

__device__ __forceinline__ uint32_t shared_address(const void* base, uint32_t offset) {
#if defined(WOQ_CUDA_EMULATE)
  return emu::shared_address(base, offset);
#else
  return uint32_t(__cvta_generic_to_shared(base)) + offset;
#endif
}

// A shared-memory matrix descriptor: no swizzle, base offset 0.
__device__ __forceinline__ uint64_t smem_descriptor(uint32_t address, uint32_t lbo, uint32_t sbo) {
  return uint64_t((address & 0x3FFFFu) >> 4) | uint64_t((lbo & 0x3FFFFu) >> 4) << 16 |
         uint64_t((sbo & 0x3FFFFu) >> 4) << 32;
}

__device__ __forceinline__ void wgmma_fence() {
#if !defined(WOQ_CUDA_EMULATE)
  asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_commit() {
#if defined(WOQ_CUDA_EMULATE)
  emu::wgmma_commit();
#else
  asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_wait_all() {
#if defined(WOQ_CUDA_EMULATE)
  emu::wgmma_wait(0);
#else
  asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
#endif
}
// Shared memory written by ordinary stores, read next by the tensor cores.
__device__ __forceinline__ void fence_shared_for_async() {
#if !defined(WOQ_CUDA_EMULATE)
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
#endif
}
// Keeps the compiler from moving uses of accumulators, or definitions of A
// registers, across a wait or a fence.
template <int N>
__device__ __forceinline__ void pin(float (&d)[N]) {
#if defined(WOQ_CUDA_EMULATE)
  (void)d;
#else
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
#endif
}
template <int N>
__device__ __forceinline__ void pin(uint32_t (&a)[N]) {
#if defined(WOQ_CUDA_EMULATE)
  (void)a;
#else
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+r"(a[i])::"memory");
#endif
}

// d = A B (+ d when `accumulate`) for one k16 block: m64n64k16, fp32
// accumulators. A group's first product overwrites d, rather than adding
// to a zeroed d: the same sums but for the sign of a zero sum, which the
// scale's fmaf into the part's sum (never -0) cannot see.
template <bool BF16>
__device__ __forceinline__ void wgmma_m64n64(float (&d)[32], const uint32_t (&a)[4], uint64_t b, bool accumulate) {
#if defined(WOQ_CUDA_EMULATE)
  emu::wgmma(BF16, d, a, b, accumulate);
#else
#define WOQ_WGMMA_ASM(TYPE)                                                                                          \
  asm volatile(                                                                                                      \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"                                                                   \
      "wgmma.mma_async.sync.aligned.m64n64k16.f32." TYPE "." TYPE                                                    \
      " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, " \
      "%23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 0;\n}\n"                   \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),  \
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),       \
        "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),      \
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])                    \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(uint32_t(accumulate)))
  if constexpr (BF16) WOQ_WGMMA_ASM("bf16");
  else WOQ_WGMMA_ASM("f16");
#undef WOQ_WGMMA_ASM
#endif
}
#endif  // WOQ_WGMMA_CODE

// fp16 / bf16 X on sm_90a: block = WG warpgroups (4 WG slices) x NB rows of
// X, walking all 8 K-parts in turn. Each step's NB x step_cols tile of X is
// copied as it is, 16 bytes a cp.async, kRawStages steps ahead into a ring
// of raw tiles (rows of 128 or 64 bytes); each thread then scatters the
// words it copied itself (no barrier between its wait and its reads) into
// the permuted B layout of one of two B tiles, for the next step while
// this step's wgmmas run. A 4-byte cp.async per word straight into the B
// layout cost 4x the instructions, each touching 8 rows' cache lines.
// Needs rows of whole 16-byte runs (wgmma_fits). Every warp of a warpgroup
// takes part in its wgmmas; warps past the last slice compute on zeros and
// store nothing. Dynamic shared memory: the raw ring, the two B tiles, the
// parts' running sums.
constexpr int kRawStages = 3;
constexpr int kWgmmaRows = 64;  // NB: rows of X a block
// A B tile's k16 blocks, kBlockPad bytes apart beyond their size: the two
// spans' blocks of a word then fall in different bank halves.
constexpr int kBlockPad = 32;

template <int FIELD>
constexpr int kWgmmaRawBytes = kWgmmaRows * 2 * (FIELD == 4 ? 64 : 32);  // a raw tile
template <int FIELD>
constexpr int kWgmmaBBytes = (FIELD == 4 ? 4 : 2) * (kWgmmaRows * 32 + kBlockPad);  // a B tile
template <int FIELD, int WG>
constexpr size_t kWgmmaSharedBytes = size_t(kRawStages) * kWgmmaRawBytes<FIELD> + 2 * size_t(kWgmmaBBytes<FIELD>) +
                                     size_t(kWgmmaRows / 2) * WG * 128 * sizeof(float);  // + the parts' running sums

#if defined(WOQ_WGMMA_CODE)
// 16 bytes to shared address `to`: `bytes` (0 or 16) of them from `from`,
// zeros for the rest.
__device__ __forceinline__ void cp_async16(uint32_t to, const void* from, uint32_t bytes) {
#if defined(WOQ_CUDA_EMULATE)
  emu::cp_async16(to, from, bytes);
#else
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(to), "l"(from), "r"(bytes) : "memory");
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if defined(WOQ_CUDA_EMULATE)
  emu::cp_async_commit();
#else
  asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}
template <int PENDING>
__device__ __forceinline__ void cp_async_wait() {
#if defined(WOQ_CUDA_EMULATE)
  emu::cp_async_wait(PENDING);
#else
  asm volatile("cp.async.wait_group %0;" ::"n"(PENDING) : "memory");
#endif
}

template <class T>
__device__ __forceinline__ T* dynamic_shared() {
#if defined(WOQ_CUDA_EMULATE)
  return reinterpret_cast<T*>(emu::dynamic_shared());
#else
  extern __shared__ uint4 woq_dynamic_shared[];  // 16-byte aligned, as descriptors need
  return reinterpret_cast<T*>(woq_dynamic_shared);
#endif
}

// The steps of a block in the order its K-parts walk them: part p is steps
// p, p + kParts, ...; parts past the last step are empty, and so are all
// after them.
struct StepCursor {
  int part;
  uint64_t step;
  __device__ __forceinline__ bool valid() const { return part < kParts; }
  __device__ __forceinline__ void advance(uint64_t steps) {
    step += kParts;
    if (step < steps) return;
    ++part;
    step = uint64_t(part);
    if (step >= steps) part = kParts;
  }
};
#endif  // WOQ_WGMMA_CODE

template <class Op, int FIELD, int WG>
__global__ void __launch_bounds__(WG * 128, WG == 1 ? 3 : 2)
    wgmma_kernel(DeviceMatrix w, const uint16_t* __restrict__ x, uint64_t m, uint64_t m_first, void* y,
                 Dtype y_type) {
#if defined(WOQ_WGMMA_CODE)
  constexpr int NB = kWgmmaRows, kCount = NB / 2;
  constexpr int kCols = FIELD == 4 ? 64 : 32, kSpans = kCols / 32, kThreadsHere = WG * 128;
  constexpr int kBlockBytes = NB * 32 + kBlockPad;  // NB rows x 16 k of 16-bit X, and the pad
  constexpr int kRawBytes = kWgmmaRawBytes<FIELD>, kBBytes = kWgmmaBBytes<FIELD>;
  constexpr int kRowRuns = kCols / 8;                   // 16-byte runs of X a row of a tile
  constexpr int kRuns = NB * kRowRuns;                  // a tile's
  constexpr int kRunsPerThread = kRuns / kThreadsHere;
  static_assert(kRuns % kThreadsHere == 0, "whole runs per thread");
  unsigned char* shared = dynamic_shared<unsigned char>();
  unsigned char* raw = shared;                             // [kRawStages][NB][kCols] halves
  const uint32_t b_offset = kRawStages * kRawBytes;        // two B tiles from here
  // The parts' running sum, [kCount][kThreadsHere]: touched once a part, so
  // out of registers (2 blocks of 2 warpgroups fit an SM, or 3 of 1).
  float* total = reinterpret_cast<float*>(shared + b_offset + 2 * kBBytes);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const uint64_t slice = uint64_t(blockIdx.x) * (kGroupSlices * WG) + warp, n0 = slice * kSliceRows;
  const uint64_t m0 = m_first + uint64_t(blockIdx.y) * NB, stride = w.slices * kSliceRows, K = w.cols;
  const bool active = slice < w.slices;
  const uint32_t shared_base = shared_address(shared, 0);

  // This thread's runs j of a tile: consecutive threads along a row (a
  // row's 128 or 64 bytes coalesced, and conflict-free in shared memory).
  auto run_row = [&](int j) { return (int(threadIdx.x) + j * kThreadsHere) / kRowRuns; };
  auto run_col = [&](int j) { return 8 * ((int(threadIdx.x) + j * kThreadsHere) % kRowRuns); };
  // Copies step `step`'s tile of X as it is into raw tile `slot`: zeros
  // past m and K (K a multiple of 8: whole runs, wgmma_fits).
  auto fetch = [&](uint64_t step, int slot) {
#pragma unroll
    for (int j = 0; j < kRunsPerThread; ++j) {
      const int r = run_row(j), c = run_col(j);
      const uint64_t row = m0 + r, col = step * kCols + c;
      const uint32_t bytes = row < m && col < K ? 16u : 0u;
      cp_async16(shared_base + uint32_t(slot * kRawBytes + (r * kCols + c) * 2), bytes ? x + row * K + col : x, bytes);
    }
  };
  // Scatters this thread's runs of raw tile `slot` (its own copies, landed)
  // into B tile `tile`: word i of a run (columns c + 2i, + 1 of a 32-column
  // span) is k 2 (c / 8 % 4) (+ 8 for odd i) of block 2 span + i / 2, row r.
  auto scatter = [&](int slot, int tile) {
#pragma unroll
    for (int j = 0; j < kRunsPerThread; ++j) {
      const int r = run_row(j), c = run_col(j), span = c / 32, tr = (c / 8) % 4;
      const uint4 v = *reinterpret_cast<const uint4*>(raw + slot * kRawBytes + (r * kCols + c) * 2);
      const uint32_t word[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int block = 2 * span + i / 2, k_half = i % 2;
        const uint32_t at = b_offset + uint32_t(tile * kBBytes + block * kBlockBytes + (r / 8) * 2 * kCoreBytes +
                                                k_half * kCoreBytes + (r % 8) * 16 + 4 * tr);
        *reinterpret_cast<uint32_t*>(shared + at) = word[i];
      }
    }
    fence_shared_for_async();  // for the wgmmas that read it after the next barrier
  };

  float d[kCount], acc[kCount];
#pragma unroll
  for (int i = 0; i < kCount; ++i) d[i] = acc[i] = 0.0f;
  uint64_t group = ~uint64_t(0);
  bool accumulate = false;  // d holds the current group's sums so far
  uint32_t offset_z[2] = {0, 0};
  float z[2] = {0.0f, 0.0f};
  // acc += s * d for the current group, per output row; d's wgmmas are done.
  auto flush = [&]() {
    pin(d);
    if (accumulate && active) {
      const float s0 = __half2float(__ushort_as_half(__ldg(w.scales + group * stride + n0 + g)));
      const float s1 = __half2float(__ushort_as_half(__ldg(w.scales + group * stride + n0 + 8 + g)));
#pragma unroll
      for (int i = 0; i < kCount; ++i) acc[i] = fmaf((i / 2) % 2 ? s1 : s0, d[i], acc[i]);
    }
    accumulate = false;
  };

  StepCursor issue{0, 0}, compute{0, 0};
#pragma unroll
  for (int i = 0; i < kRawStages; ++i) {  // the first kRawStages steps' tiles in flight
    if (issue.valid()) {
      fetch(issue.step, i);
      issue.advance(w.steps);
    }
    cp_async_commit();  // empty groups too: the waits count groups
  }
  cp_async_wait<kRawStages - 1>();  // this thread's copies of the first step's tile have landed
  scatter(0, 0);
  UnitStream units(w, active ? slice : 0, active ? 0 : w.steps);  // idle warps: no loads
  int tile = 0;
  for (uint64_t step_index = 0; compute.valid(); ++step_index) {
    // Everyone's B tile for this step is written; every warpgroup's
    // wgmmas of the last step (on the other tile) are done.
    __syncthreads();
    if (issue.valid()) {  // into the raw slot this step's tile came through (its owner scattered it)
      fetch(issue.step, int(step_index % kRawStages));
      issue.advance(w.steps);
    }
    cp_async_commit();

    const uint64_t step = compute.step;
    uint32_t words[4];
    units.next(step, words);
    uint32_t a[kSpans][2][4];
#pragma unroll
    for (int span = 0; span < kSpans; ++span) {
      const uint64_t first = step * kCols + 32 * span;
      if (span > 0 && first >= K) break;  // uniform for the block; span 0 is inside K (step < steps)
      if (group_of(w, first) != group) {
        if (span > 0) {  // span 0's: the last step's wgmmas were waited for at its end
          wgmma_commit();
          wgmma_wait_all();
        }
        flush();
        group = group_of(w, first);
        if (active) load_zeros<Op>(w, group, n0 + g, z, offset_z);
      }
#pragma unroll
      for (int q = 0; q < 2; ++q) {
        const int block = 2 * span + q;
        a[span][q][0] = b_pair<Op, FIELD>(words, block, 0, 0, offset_z[0], z[0]);
        a[span][q][1] = b_pair<Op, FIELD>(words, block, 1, 0, offset_z[1], z[1]);
        a[span][q][2] = b_pair<Op, FIELD>(words, block, 0, 1, offset_z[0], z[0]);
        a[span][q][3] = b_pair<Op, FIELD>(words, block, 1, 1, offset_z[1], z[1]);
        pin(a[span][q]);
      }
      wgmma_fence();
#pragma unroll
      for (int q = 0; q < 2; ++q) {
        const uint32_t address = shared_base + b_offset + uint32_t(tile * kBBytes + (2 * span + q) * kBlockBytes);
        wgmma_m64n64<Op::kOffset == 128.0f>(d, a[span][q], smem_descriptor(address, kCoreBytes, 2 * kCoreBytes),
                                            accumulate);
        accumulate = true;
      }
    }
    wgmma_commit();
    // While they run: the next step's tile, from this thread's own copies
    // (that step's group, the oldest but kRawStages - 1), into the other B
    // tile, which the last step's wgmmas are done with.
    cp_async_wait<kRawStages - 1>();
    scatter(int((step_index + 1) % kRawStages), tile ^ 1);
    wgmma_wait_all();  // this step's: its A registers are free again
    tile ^= 1;

    const int part = compute.part;
    compute.advance(w.steps);
    if (compute.valid() && compute.part == part) continue;
    // The part is done (the parts after the last nonempty one add zeros).
    flush();
#pragma unroll
    for (int i = 0; i < kCount; ++i) {
      float& sum = total[i * kThreadsHere + threadIdx.x];
      sum = part == 0 ? acc[i] : sum + acc[i];
      acc[i] = 0.0f;
    }
    group = ~uint64_t(0);
    if (compute.valid()) units = UnitStream(w, active ? slice : 0, active ? uint64_t(compute.part) : w.steps);
  }
  cp_async_wait<0>();  // nothing of this block's in flight at exit
  if (!active) return;
  // d[i]: row n0 + g (+ 8 for odd i / 2) of W, row m0 + 8 (i / 4) + 2t (+ 1 for odd i) of X.
#pragma unroll
  for (int i = 0; i < kCount; ++i) {
    const uint64_t row = m0 + 8 * (i / 4) + 2 * t + i % 2, n = n0 + g + 8 * ((i / 2) % 2);
    if (row < m && n < w.rows)
      store(y, y_type, row * w.rows + n, total[i * kThreadsHere + threadIdx.x] + (w.bias ? w.bias[n] : 0.0f));
  }
#else
  (void)w, (void)x, (void)m, (void)m_first, (void)y, (void)y_type;
#endif
}

// 1 when this binary's code for the device has the wgmma kernel (sm_90a).
[[maybe_unused]] __global__ void wgmma_probe_kernel(int* out) {
#if defined(WOQ_WGMMA_CODE)
  *out = 1;
#else
  *out = 0;
#endif
}

// Y = ((part 0 + part 1) + ... + part 7) + bias, the order every kernel adds in.
__global__ void reduce_parts_kernel(const float* __restrict__ workspace, uint64_t m, uint64_t n, const float* bias,
                                    void* y, Dtype y_type) {
  const uint64_t total = m * n;
  for (uint64_t i = uint64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += uint64_t(gridDim.x) * blockDim.x) {
    float v = workspace[i];
    for (int p = 1; p < kParts; ++p) v += workspace[uint64_t(p) * total + i];
    store(y, y_type, i, v + (bias ? bias[i % n] : 0.0f));
  }
}

// Launches `kernel` on blocks of `threads` over grid_x blocks of slices and
// the row blocks of `rows_per_block` rows of X, in launches of at most
// kMaxGridY row blocks.
template <class Kernel, class XT>
cudaError_t launch_rows(Kernel kernel, uint64_t grid_x, int threads, uint64_t rows_per_block, const DeviceMatrix& w,
                        const XT* x, uint64_t m, void* y, Dtype y_type, cudaStream_t stream) {
  const uint64_t row_blocks = (m + rows_per_block - 1) / rows_per_block;
  for (uint64_t first = 0; first < row_blocks; first += kMaxGridY) {
    const uint64_t count = row_blocks - first < kMaxGridY ? row_blocks - first : kMaxGridY;
    const cudaError_t e = launch(kernel, dim3(unsigned(grid_x), unsigned(count)), unsigned(threads), stream, w, x, m,
                                 first * rows_per_block, y, y_type);
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

unsigned grid_for(uint64_t total, unsigned block) {
  const uint64_t blocks = (total + block - 1) / block;
  return unsigned(blocks < 65535 * 16 ? (blocks ? blocks : 1) : 65535 * 16);
}

// The kernel that runs fp16 / bf16 X at M rows: the GEMV kernel while the
// weights are all the traffic; then X, shared by 8 slices in shared
// memory: K-parts across blocks (more blocks, a workspace of 8 M x N
// floats) up to kSplitMaxRows, in-block beyond. Guesses until measured
// (WOQ_CUDA_KERNEL forces one).
// Beyond, on sm_90a, the wgmma kernel instead of the tile kernel.
constexpr uint64_t kGemvMaxRows = 4, kSplitMaxRows = 128;

Kernel resolve(KernelChoice choice, uint64_t m) {
  if (choice.kernel != Kernel::Auto) return choice.kernel;
  if (m <= kGemvMaxRows) return Kernel::Gemv;
  if (m <= kSplitMaxRows) return Kernel::Split;
  return choice.wgmma ? Kernel::Wgmma : Kernel::Tile;
}

// Whether the GEMV kernel's grid is at most 2 blocks an SM: then its DEEP
// variant (more loads in flight, fewer blocks an SM) loses nothing.
bool gemv_is_deep(const DeviceMatrix& w, uint64_t m, KernelChoice choice) {
  const uint64_t blocks = w.slices * ((m + kGemvRows - 1) / kGemvRows);
  return choice.multiprocessors > 0 && blocks <= 2 * uint64_t(choice.multiprocessors);
}

// Whether the wgmma kernel takes this X: rows of whole 16-byte runs (its
// cp.async pieces); else the tile kernel runs (the same bits).
bool wgmma_fits(const DeviceMatrix& w, const void* x) {
  return w.cols % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
}

template <class Op, int FIELD, int WG>
cudaError_t launch_wgmma(const DeviceMatrix& w, const uint16_t* x, uint64_t m, void* y, Dtype y_type,
                         cudaStream_t stream) {
  constexpr uint64_t kSlices = kGroupSlices * WG;
  constexpr size_t kShared = kWgmmaSharedBytes<FIELD, WG>;
  const auto kernel = wgmma_kernel<Op, FIELD, WG>;
#if !defined(WOQ_CUDA_EMULATE)
  // Beyond 48 KiB only once raised (per function and device; cheap to repeat).
  cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kShared));
  if (e != cudaSuccess) return e;
#endif
  const uint64_t grid_x = (w.slices + kSlices - 1) / kSlices, row_blocks = (m + kWgmmaRows - 1) / kWgmmaRows;
  for (uint64_t first = 0; first < row_blocks; first += kMaxGridY) {
    const unsigned count = unsigned(row_blocks - first < kMaxGridY ? row_blocks - first : kMaxGridY);
    const cudaError_t le = launch_shared(kernel, dim3(unsigned(grid_x), count), unsigned(WG * 128), kShared, stream,
                                         w, x, m, first * kWgmmaRows, y, y_type);
    if (le != cudaSuccess) return le;
  }
  return cudaSuccess;
}

// Blocks of two warpgroups (128 rows of W share each tile of X), unless
// that leaves multiprocessors idle: then one (the same bits either way).
template <class Op, int FIELD>
cudaError_t launch_wgmma(const DeviceMatrix& w, const uint16_t* x, uint64_t m, void* y, Dtype y_type,
                         cudaStream_t stream, int multiprocessors) {
  const uint64_t pairs = (w.slices + 2 * kGroupSlices - 1) / (2 * kGroupSlices) * ((m + kWgmmaRows - 1) / kWgmmaRows);
  if (multiprocessors > 0 && pairs < 2 * uint64_t(multiprocessors))
    return launch_wgmma<Op, FIELD, 1>(w, x, m, y, y_type, stream);
  return launch_wgmma<Op, FIELD, 2>(w, x, m, y, y_type, stream);
}

template <int MT, bool SPLIT, class Op, int FIELD>
cudaError_t launch_tiles(const DeviceMatrix& w, const uint16_t* x, uint64_t m, void* y, Dtype y_type, float* workspace,
                         cudaStream_t stream) {
  const auto kernel = mma_tile_kernel<Op, FIELD, MT, SPLIT>;
  const unsigned grid_x = unsigned((w.slices + kTileSlices - 1) / kTileSlices);
  const uint64_t row_blocks = (m + 16 * MT - 1) / (16 * MT);
  for (uint64_t first = 0; first < row_blocks; first += kMaxGridY) {
    const unsigned count = unsigned(row_blocks - first < kMaxGridY ? row_blocks - first : kMaxGridY);
    const dim3 grid = SPLIT ? dim3(grid_x, kParts, count) : dim3(grid_x, count);
    const cudaError_t e =
        launch(kernel, grid, kTileSlices * 32, stream, w, x, m, first * 16 * MT, y, y_type, workspace);
    if (e != cudaSuccess) return e;
  }
  if (!SPLIT) return cudaSuccess;
  return launch(reduce_parts_kernel, dim3(grid_for(m * w.rows, 256)), 256u, stream, static_cast<const float*>(workspace),
                m, w.rows, w.bias, y, y_type);
}

template <class Op, int FIELD>
cudaError_t matmul_16bit(const DeviceMatrix& w, const uint16_t* x, uint64_t m, void* y, Dtype y_type,
                         cudaStream_t stream, KernelChoice choice, float* workspace) {
  switch (resolve(choice, m)) {
    case Kernel::Auto:
    case Kernel::Gemv:
      if (gemv_is_deep(w, m, choice))
        return launch_rows(mma_gemv_kernel<Op, FIELD, true>, w.slices, kThreads, kGemvRows, w, x, m, y, y_type, stream);
      return launch_rows(mma_gemv_kernel<Op, FIELD, false>, w.slices, kThreads, kGemvRows, w, x, m, y, y_type, stream);
    case Kernel::Split:
      if (!workspace) return cudaErrorInvalidValue;
      if (m <= 16) return launch_tiles<1, true, Op, FIELD>(w, x, m, y, y_type, workspace, stream);
      if (m <= 32) return launch_tiles<2, true, Op, FIELD>(w, x, m, y, y_type, workspace, stream);
      return launch_tiles<4, true, Op, FIELD>(w, x, m, y, y_type, workspace, stream);
    case Kernel::Tile:
      return launch_tiles<4, false, Op, FIELD>(w, x, m, y, y_type, nullptr, stream);
    case Kernel::Wgmma:
      if (!choice.wgmma) return cudaErrorInvalidDeviceFunction;  // no sm_90a code for this device
      if (!wgmma_fits(w, x)) return launch_tiles<4, false, Op, FIELD>(w, x, m, y, y_type, nullptr, stream);
      return launch_wgmma<Op, FIELD>(w, x, m, y, y_type, stream, choice.multiprocessors);
  }
  return cudaErrorInvalidValue;
}

template <class Op>
cudaError_t matmul_16bit(const DeviceMatrix& w, const void* x, uint64_t m, void* y, Dtype y_type,
                         cudaStream_t stream, KernelChoice choice, float* workspace) {
  const auto* xt = static_cast<const uint16_t*>(x);
  return w.field == 4 ? matmul_16bit<Op, 4>(w, xt, m, y, y_type, stream, choice, workspace)
                      : matmul_16bit<Op, 8>(w, xt, m, y, y_type, stream, choice, workspace);
}

template <class XT>
__global__ void scale_inputs_kernel(const XT* __restrict__ x, uint64_t total, uint64_t k, const float* scales,
                                    float* out) {
  for (uint64_t i = uint64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += uint64_t(gridDim.x) * blockDim.x)
    out[i] = float(x[i]) * scales[i % k];
}

// A gather moves 2- or 4-byte elements unchanged, so one kernel serves
// every dtype by its width.
template <class E>
__global__ void permute_inputs_kernel(const E* __restrict__ x, uint64_t total, uint64_t k,
                                      const uint32_t* __restrict__ columns, E* __restrict__ out) {
  for (uint64_t i = uint64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += uint64_t(gridDim.x) * blockDim.x)
    out[i] = x[i - i % k + columns[i % k]];
}

// W_hat's rows [16 first_slice, end_row), row-major from row 16
// first_slice, as OUT (float, __half, __nv_bfloat16). A warp takes
// one unit at a time, one coalesced 16-byte load a lane; a lane then holds
// 8-column runs (columns 32 p + 8 t.. of rows g and g + 8, layout.h) and
// writes each with one 16-byte store (32 for fp32) where `vectors` (rows
// of whole 16-byte pieces), a warp's stores covering 64-byte pieces of 8
// rows. Where a code sits within its lane's words is the same for every
// lane, so code_place of lane 0 gives it, at compile time.
constexpr int kDequantizeWarps = 8;

template <class OUT>
__device__ __forceinline__ void store_run(OUT* out, const float (&v)[8], bool vector, int count) {
  if constexpr (sizeof(OUT) == 4) {
    if (vector) {
      reinterpret_cast<float4*>(out)[0] = make_float4(v[0], v[1], v[2], v[3]);
      reinterpret_cast<float4*>(out)[1] = make_float4(v[4], v[5], v[6], v[7]);
      return;
    }
    for (int j = 0; j < count; ++j) out[j] = v[j];
  } else {
    uint16_t h[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      if constexpr (std::is_same_v<OUT, __half>) h[j] = __half_as_ushort(__float2half_rn(v[j]));
      else h[j] = __bfloat16_as_ushort(__float2bfloat16_rn(v[j]));
    }
    if (vector) {
      uint4 packed;
      packed.x = h[0] | uint32_t(h[1]) << 16, packed.y = h[2] | uint32_t(h[3]) << 16;
      packed.z = h[4] | uint32_t(h[5]) << 16, packed.w = h[6] | uint32_t(h[7]) << 16;
      *reinterpret_cast<uint4*>(out) = packed;
      return;
    }
    for (int j = 0; j < count; ++j) reinterpret_cast<uint16_t*>(out)[j] = h[j];
  }
}

template <int FIELD, class OUT>
__global__ void __launch_bounds__(kDequantizeWarps * 32)
    dequantize_kernel(DeviceMatrix w, uint64_t first_slice, uint64_t slices, uint64_t end_row, OUT* out,
                      bool vectors) {
  constexpr int kSpans = FIELD == 4 ? 2 : 1;
  constexpr uint32_t kCols = FIELD == 4 ? 64 : 32, kMask = (1u << FIELD) - 1u;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const uint64_t stride = w.slices * kSliceRows, units = slices * w.steps, first_row = first_slice * kSliceRows;
  for (uint64_t u = uint64_t(blockIdx.x) * kDequantizeWarps + warp; u < units;
       u += uint64_t(gridDim.x) * kDequantizeWarps) {
    const uint64_t slice = first_slice + u / w.steps, step = u % w.steps;
    const uint4 v = load_stream(reinterpret_cast<const uint4*>(w.units + (slice * w.steps + step) * kUnitWords) + lane);
    const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int tile = 0; tile < 2; ++tile) {
      const uint64_t n = slice * kSliceRows + 8 * tile + g;
#pragma unroll
      for (int p = 0; p < kSpans; ++p) {
        const uint64_t col = step * kCols + 32 * p + 8 * t;
        if (n >= end_row || col >= w.cols) continue;
        const uint64_t at = group_of(w, col) * stride + n;  // 8 columns of one group
        const float s = __half2float(__ushort_as_half(w.scales[at])), offset = 8388608.0f + float(w.zeros[at]);
        float run[8];
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const CodePlace place = code_place(FIELD, 8 * tile, 32 * p + j);
          const uint32_t q = (words[place.word] >> place.shift) & kMask;
          run[j] = s * (__uint_as_float(0x4B000000u | q) - offset);  // s (q - z): the reference's exact product
        }
        const uint64_t left = w.cols - col;
        store_run(out + (n - first_row) * w.cols + col, run, vectors && left >= 8, left < 8 ? int(left) : 8);
      }
    }
  }
}

template <class OUT>
cudaError_t launch_dequantize(const DeviceMatrix& w, uint64_t first_row, uint64_t rows, void* out,
                              cudaStream_t stream) {
  const uint64_t first_slice = first_row / kSliceRows, slices = (rows + kSliceRows - 1) / kSliceRows;
  // 16-byte pieces: rows of whole pieces from a 16-byte aligned start.
  const bool vectors = (w.cols * sizeof(OUT)) % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0;
  const dim3 grid(grid_for(slices * w.steps, kDequantizeWarps));
  const auto kernel = w.field == 4 ? dequantize_kernel<4, OUT> : dequantize_kernel<8, OUT>;
  return launch(kernel, grid, kDequantizeWarps * 32, stream, w, first_slice, slices, first_row + rows,
                static_cast<OUT*>(out), vectors);
}

__device__ __forceinline__ float load(const void* y, Dtype t, uint64_t i) {
  if (t == Dtype::F32) return static_cast<const float*>(y)[i];
  if (t == Dtype::F16) return __half2float(static_cast<const __half*>(y)[i]);
  return __bfloat162float(static_cast<const __nv_bfloat16*>(y)[i]);
}

__global__ void add_bias_kernel(void* y, Dtype y_type, uint64_t m, uint64_t n, const float* __restrict__ bias) {
  const uint64_t total = m * n;
  for (uint64_t i = uint64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += uint64_t(gridDim.x) * blockDim.x)
    store(y, y_type, i, load(y, y_type, i) + bias[i % n]);
}

}  // namespace

uint64_t matmul_workspace_floats(const DeviceMatrix& w, Dtype x_type, uint64_t m, KernelChoice choice) {
  return x_type != Dtype::F32 && resolve(choice, m) == Kernel::Split ? uint64_t(kParts) * m * w.rows : 0;
}

cudaError_t wgmma_supported(int device, bool* out) {
  *out = false;
#if defined(WOQ_CUDA_EMULATE)
  (void)device;
  *out = true;
  return cudaSuccess;
#else
  cudaDeviceProp prop{};
  cudaError_t e = cudaGetDeviceProperties(&prop, device);
  if (e != cudaSuccess || prop.major != 9 || prop.minor != 0) return e;  // sm_90a code runs on 9.0 only
  // On a stream of its own, stream-ordered memory: waits for nothing the
  // host has queued elsewhere.
  cudaStream_t stream = nullptr;
  if ((e = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking)) != cudaSuccess) return e;
  int* flag = nullptr;
  int host = 0;
  e = cudaMallocAsync(&flag, sizeof(int), stream);
  if (e == cudaSuccess) {
    wgmma_probe_kernel<<<1, 1, 0, stream>>>(flag);
    e = cudaGetLastError();
    if (e == cudaSuccess) e = cudaMemcpyAsync(&host, flag, sizeof(int), cudaMemcpyDeviceToHost, stream);
    const cudaError_t freed = cudaFreeAsync(flag, stream);
    if (e == cudaSuccess) e = freed;
  }
  const cudaError_t done = cudaStreamSynchronize(stream);
  if (e == cudaSuccess) e = done;
  cudaStreamDestroy(stream);
  *out = e == cudaSuccess && host == 1;
  return e;
#endif
}

cudaError_t matmul(const DeviceMatrix& w, const void* x, Dtype x_type, uint64_t m, void* y, Dtype y_type,
                   cudaStream_t stream, KernelChoice choice, float* workspace) {
  switch (x_type) {
    case Dtype::F32: {
      const auto* xf = static_cast<const float*>(x);
      return w.field == 4 ? launch_rows(simt_kernel<4>, w.slices, kThreads, kSimtRows, w, xf, m, y, y_type, stream)
                          : launch_rows(simt_kernel<8>, w.slices, kThreads, kSimtRows, w, xf, m, y, y_type, stream);
    }
    case Dtype::F16: return matmul_16bit<F16>(w, x, m, y, y_type, stream, choice, workspace);
    case Dtype::BF16: return matmul_16bit<BF16>(w, x, m, y, y_type, stream, choice, workspace);
  }
  return cudaErrorInvalidValue;
}

cudaError_t scale_inputs(const void* x, Dtype x_type, uint64_t m, uint64_t k, const float* scales, float* out,
                         cudaStream_t stream) {
  const unsigned block = 256, grid = grid_for(m * k, block);
  switch (x_type) {
    case Dtype::F32:
      return launch(scale_inputs_kernel<float>, dim3(grid), block, stream, static_cast<const float*>(x), m * k, k,
                    scales, out);
    case Dtype::F16:
      return launch(scale_inputs_kernel<__half>, dim3(grid), block, stream, static_cast<const __half*>(x), m * k, k,
                    scales, out);
    case Dtype::BF16:
      return launch(scale_inputs_kernel<__nv_bfloat16>, dim3(grid), block, stream,
                    static_cast<const __nv_bfloat16*>(x), m * k, k, scales, out);
  }
  return cudaErrorInvalidValue;
}

cudaError_t permute_inputs(const void* x, Dtype x_type, uint64_t m, uint64_t k, const uint32_t* columns, void* out,
                           cudaStream_t stream) {
  const unsigned block = 256, grid = grid_for(m * k, block);
  if (x_type == Dtype::F32)
    return launch(permute_inputs_kernel<uint32_t>, dim3(grid), block, stream, static_cast<const uint32_t*>(x), m * k,
                  k, columns, static_cast<uint32_t*>(out));
  if (x_type == Dtype::F16 || x_type == Dtype::BF16)
    return launch(permute_inputs_kernel<uint16_t>, dim3(grid), block, stream, static_cast<const uint16_t*>(x), m * k,
                  k, columns, static_cast<uint16_t*>(out));
  return cudaErrorInvalidValue;
}

cudaError_t dequantize_rows(const DeviceMatrix& w, uint64_t first_row, uint64_t rows, Dtype out_type, void* out,
                            cudaStream_t stream) {
  if (first_row % kSliceRows != 0 || first_row + rows > w.rows) return cudaErrorInvalidValue;
  switch (out_type) {
    case Dtype::F32: return launch_dequantize<float>(w, first_row, rows, out, stream);
    case Dtype::F16: return launch_dequantize<__half>(w, first_row, rows, out, stream);
    case Dtype::BF16: return launch_dequantize<__nv_bfloat16>(w, first_row, rows, out, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t add_bias(void* y, Dtype y_type, uint64_t m, uint64_t n, const float* bias, cudaStream_t stream) {
  const unsigned block = 256;
  return launch(add_bias_kernel, dim3(grid_for(m * n, block)), block, stream, y, y_type, m, n, bias);
}

}  // namespace woq::kernels::cuda
