#include "kernels/cpu/packed.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#include "kernels/cpu/numeric.h"

#if defined(__x86_64__)
#include <cpuid.h>
#endif
#if defined(__linux__) && defined(__x86_64__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace woq::kernels {

// Aligned operator new (not aligned_alloc) so that allocation failures are
// std::bad_alloc like every other allocation, and testable by replacing it.
template <class T>
void AlignedArray<T>::Free::operator()(T* p) const {
  ::operator delete(p, std::align_val_t(64));
}

template <class T>
void AlignedArray<T>::allocate(uint64_t n) {
  const uint64_t bytes = (n * sizeof(T) + 63) / 64 * 64;
  T* p = static_cast<T*>(::operator new(bytes ? bytes : 64, std::align_val_t(64)));
  std::memset(p, 0, bytes);
  data.reset(p);
  size = n;
}

template struct AlignedArray<uint32_t>;
template struct AlignedArray<float>;
template struct AlignedArray<int32_t>;
template struct AlignedArray<uint16_t>;
template struct AlignedArray<int8_t>;

namespace {

bool all_at_zero_point(const QuantView& w, uint64_t n, uint64_t j) {
  const uint32_t z = w.zeros[n * (w.cols / w.group_size) + j];
  const uint32_t* row = w.codes + n * w.words_per_row;
  const uint64_t k0 = j * w.group_size;
  if ((w.bits == 4 || w.bits == 8) && k0 * w.bits % 32 == 0 && w.group_size * w.bits % 32 == 0) {
    const uint32_t repeated = w.bits == 4 ? z * 0x11111111u : z * 0x01010101u;
    for (uint64_t i = k0 * w.bits / 32; i < (k0 + w.group_size) * w.bits / 32; ++i)
      if (row[i] != repeated) return false;
    return true;
  }
  for (uint64_t k = k0; k < k0 + w.group_size; ++k)
    if (unpack_code(row, k, w.bits) != z) return false;
  return true;
}

}  // namespace

bool packable(const QuantView& w) {
  const uint32_t per_word = w.bits == 4 ? 8 : 4;
  return w.cols % per_word == 0 && w.group_size % per_word == 0;
}

PackedMatrix repack(const QuantView& w) {
  PackedMatrix p;
  p.rows = w.rows;
  p.cols = w.cols;
  p.group_size = w.group_size;
  p.code_bits = w.bits == 4 ? 4 : 8;
  p.center = 1u << (w.bits - 1);
  p.blocks = (w.rows + kBlockRows - 1) / kBlockRows;
  const uint64_t cpw = p.codes_per_word();
  const uint64_t word_runs = w.cols / cpw;
  p.words_per_block = word_runs * kBlockRows;
  const uint64_t groups = p.groups();
  p.codes.allocate(p.blocks * p.words_per_block);
  p.scales.allocate(p.blocks * groups * kBlockRows);
  p.zero_offsets.allocate(p.blocks * groups * kBlockRows);
  if (w.bias) p.bias.assign(w.bias, w.bias + w.rows);
  // Block by block, writing each block's words in order (a row-at-a-time
  // loop would store with a 64-byte stride and run several times slower).
  const uint32_t flip = w.bits == 4 ? 0x88888888u : 0x80808080u;  // q -> q - c per field
  for (uint64_t block = 0; block < p.blocks; ++block) {
    const uint64_t lanes = std::min(kBlockRows, w.rows - block * kBlockRows);
    uint32_t* dst = p.codes.get() + block * p.words_per_block;
    const uint32_t* src = w.codes + block * kBlockRows * w.words_per_row;
    for (uint64_t r = 0; r < word_runs; ++r, dst += kBlockRows) {
      for (uint64_t lane = 0; lane < lanes; ++lane) {
        const uint32_t* row = src + lane * w.words_per_row;
        if (w.bits == 4 || w.bits == 8) {
          // Canonical rows already hold 8 nibbles / 4 bytes per word in this order.
          dst[lane] = row[r] ^ flip;
        } else {
          uint32_t word = 0;
          for (uint64_t t = 0; t < 4; ++t) {
            const int32_t centred = int32_t(unpack_code(row, r * 4 + t, w.bits)) - int32_t(p.center);
            word |= (uint32_t(centred) & 0xffu) << (8 * t);
          }
          dst[lane] = word;
        }
      }
    }
  }
  for (uint64_t n = 0; n < w.rows; ++n) {
    const uint64_t block = n / kBlockRows, lane = n % kBlockRows;
    for (uint64_t j = 0; j < groups; ++j) {
      // A group whose codes all equal its zero-point is all zeros; give it
      // scale 0 so that the factored sum adds exactly nothing instead of two
      // large cancelling terms (an all-zero group has s = 1, z = 0).
      const uint64_t at = (block * groups + j) * kBlockRows + lane;
      p.scales.get()[at] = all_at_zero_point(w, n, j) ? uint16_t(0) : w.scales[n * groups + j];
      p.zero_offsets.get()[at] = int8_t(int(w.zeros[n * groups + j]) - int(p.center));  // within -c..c-1
    }
  }
  return p;
}

void packed_dequantize_row(const PackedMatrix& w, uint64_t n, float* out) {
  const uint64_t block = n / kBlockRows, lane = n % kBlockRows, groups = w.groups(), cpw = w.codes_per_word();
  const uint32_t* codes = w.codes.get() + block * w.words_per_block + lane;
  for (uint64_t k = 0; k < w.cols; ++k) {
    // Sign-extend field k % cpw of the word: q - c.
    const uint32_t word = codes[(k / cpw) * kBlockRows];
    const int32_t centred = int32_t(word << (32 - w.code_bits * (k % cpw + 1))) >> (32 - w.code_bits);
    const uint64_t at = (block * groups + k / w.group_size) * kBlockRows + lane;
    const float s = half_to_float(w.scales.get()[at]);
    out[k] = s * float(centred) - s * float(w.zero_offsets.get()[at]);  // both products exact
  }
}

void store_rows(const PackedMatrix& w, const float* tile, uint64_t rows_of_x, uint64_t b, float* y) {
  const uint64_t n0 = b * kBlockRows, lanes = std::min(kBlockRows, w.rows - n0);
  float bias[kBlockRows] = {};
  if (!w.bias.empty()) std::copy(w.bias.begin() + long(n0), w.bias.begin() + long(n0 + lanes), bias);
  for (uint64_t r = 0; r < rows_of_x; ++r)
    for (uint64_t i = 0; i < lanes; ++i) y[r * w.rows + n0 + i] = tile[r * kBlockRows + i] + bias[i];
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Portable: return "portable";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
    case Isa::Avx512Vnni: return "avx512vnni";
    case Isa::Amx: return "amx";
  }
  return "unknown";
}

namespace {

// Linux keeps the 8 KiB of tile data out of a process's state until it asks
// (arch_prctl ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA, once per process,
// for all its threads); a tile instruction before that is a SIGILL. Refused
// by kernels before 5.16 and by hosts that disable the state.
bool amx_permitted() {
#if defined(__linux__) && defined(__x86_64__)
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  static const bool permitted = syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  return permitted;
#else
  return false;
#endif
}

// AMX-TILE, AMX-INT8 and AMX-BF16 (CPUID leaf 7, EDX bits 24, 25, 22), read
// directly: clang 14's __builtin_cpu_supports does not know these names.
bool cpu_has_amx() {
#if defined(__x86_64__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
  constexpr unsigned kAmxBf16 = 1u << 22, kAmxTile = 1u << 24, kAmxInt8 = 1u << 25;
  return (edx & (kAmxBf16 | kAmxTile | kAmxInt8)) == (kAmxBf16 | kAmxTile | kAmxInt8);
#else
  return false;
#endif
}

}  // namespace

Isa detect_isa() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")) {
    if (!__builtin_cpu_supports("avx512vnni")) return Isa::Avx512;
    const bool amx = cpu_has_amx() && amx_permitted();
    return amx ? Isa::Amx : Isa::Avx512Vnni;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::Avx2;
#endif
  return Isa::Portable;
}

PackedMatmulFn packed_matmul_for(Isa isa) {
  switch (isa) {
    case Isa::Portable: return packed_matmul_portable;
#if defined(WOQ_HAVE_X86_KERNELS)
    case Isa::Avx2: return packed_matmul_avx2;
    case Isa::Avx512: return packed_matmul_avx512;
    case Isa::Avx512Vnni: return packed_matmul_avx512vnni;
    case Isa::Amx: return packed_matmul_amx;
#else
    default: return nullptr;
#endif
  }
  return nullptr;
}

}  // namespace woq::kernels
