// A GGUF tensor's values as fp32: the float types converted, llama.cpp's
// block types dequantized. Each block type is decoded with the operations,
// in the order and precision, that ggml's dequantize_row_* uses (fp32, no
// fused multiply-add: -ffp-contract=off), so the values are ggml's bit for
// bit; ctest checks that against libggml-base.so (tests/ggml). Block
// layouts as ggml-common.h defines them; QK_K super-blocks hold 256 values.
#include <cstring>

#include "import/gguf.h"
#include "kernels/cpu/numeric.h"
#include "runtime/error.h"

namespace woq::import {
namespace {

constexpr uint64_t kSuper = 256;  // values per K-quant super-block

float half_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return kernels::half_to_float(h);
}

// Q4_0: fp16 d, 16 bytes of nibbles (low: values 0..15, high: 16..31).
void q4_0(const uint8_t* b, float* y) {
  const float d = half_at(b);
  for (int j = 0; j < 16; ++j) {
    y[j] = float((b[2 + j] & 0x0F) - 8) * d;
    y[j + 16] = float((b[2 + j] >> 4) - 8) * d;
  }
}

// Q4_1: fp16 d, fp16 m, nibbles; y = q d + m.
void q4_1(const uint8_t* b, float* y) {
  const float d = half_at(b), m = half_at(b + 2);
  for (int j = 0; j < 16; ++j) {
    y[j] = float(b[4 + j] & 0x0F) * d + m;
    y[j + 16] = float(b[4 + j] >> 4) * d + m;
  }
}

// Q5_0 / Q5_1: the fifth bit of value j is bit j of a 32-bit word.
template <bool kWithMin>
void q5(const uint8_t* b, float* y) {
  const float d = half_at(b), m = kWithMin ? half_at(b + 2) : 0.0f;
  const uint8_t* p = b + (kWithMin ? 4 : 2);
  uint32_t high;
  std::memcpy(&high, p, 4);
  const uint8_t* qs = p + 4;
  for (int j = 0; j < 16; ++j) {
    const int lo = (qs[j] & 0x0F) | int(((high >> j) << 4) & 0x10);
    const int hi = (qs[j] >> 4) | int((high >> (j + 12)) & 0x10);
    if (kWithMin) {
      y[j] = float(lo) * d + m;
      y[j + 16] = float(hi) * d + m;
    } else {
      y[j] = float(lo - 16) * d;
      y[j + 16] = float(hi - 16) * d;
    }
  }
}

// Q8_0: fp16 d, 32 int8.
void q8_0(const uint8_t* b, float* y) {
  const float d = half_at(b);
  for (int j = 0; j < 32; ++j) y[j] = float(int8_t(b[2 + j])) * d;
}

// Q2_K: 16 bytes of (4-bit scale, 4-bit min) per 16 values, 64 bytes of
// 2-bit codes, fp16 d, fp16 dmin. Codes of 128 values share 32 bytes, in
// four 2-bit planes of 32.
void q2_k(const uint8_t* b, float* y) {
  const uint8_t* scales = b;
  const uint8_t* q = b + 16;
  const float d = half_at(b + 80), dmin = half_at(b + 82);
  int is = 0;
  for (uint64_t half = 0; half < 2; ++half, q += 32) {
    for (int shift = 0; shift < 8; shift += 2) {
      for (int part = 0; part < 2; ++part) {
        const uint8_t sc = scales[is++];
        const float dl = d * float(sc & 0x0F), ml = dmin * float(sc >> 4);
        for (int l = 0; l < 16; ++l) *y++ = dl * float((q[16 * part + l] >> shift) & 3) - ml;
      }
    }
  }
}

// Q3_K: 32 bytes of high bits (bit n of byte i belongs to value 32 n + i),
// 64 bytes of 2-bit codes (as Q2_K's), 12 bytes of sixteen 6-bit scales
// (offset 32), fp16 d. A clear high bit subtracts 4 from the code.
void q3_k(const uint8_t* b, float* y) {
  const uint8_t* high = b;
  const uint8_t* q = b + 32;
  const uint8_t* packed = b + 96;
  const float d = half_at(b + 108);
  int scales[16];
  for (int j = 0; j < 16; ++j) {
    const int low = j < 8 ? packed[j] & 0x0F : packed[j - 8] >> 4;  // bytes 0..7: low nibbles of scales 0..15
    const int top = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;       // bytes 8..11: the top two bits
    scales[j] = (low | (top << 4)) - 32;
  }
  int is = 0;
  uint8_t bit = 1;
  for (uint64_t half = 0; half < 2; ++half, q += 32) {
    for (int shift = 0; shift < 8; shift += 2, bit = uint8_t(bit << 1)) {
      for (int part = 0; part < 2; ++part) {
        const float dl = d * float(scales[is++]);
        for (int l = 0; l < 16; ++l) {
          const int i = 16 * part + l;
          *y++ = dl * float(((q[i] >> shift) & 3) - ((high[i] & bit) ? 0 : 4));
        }
      }
    }
  }
}

// The 6-bit scale and min of sub-block j (of 8) in Q4_K / Q5_K's 12 bytes.
void scale_min(int j, const uint8_t* p, float* scale, float* min) {
  if (j < 4) {
    *scale = float(p[j] & 63);
    *min = float(p[j + 4] & 63);
  } else {
    *scale = float((p[j + 4] & 0x0F) | ((p[j - 4] >> 6) << 4));
    *min = float((p[j + 4] >> 4) | ((p[j] >> 6) << 4));
  }
}

// Q4_K / Q5_K: fp16 d, fp16 dmin, 12 bytes of scales and mins, (Q5_K: 32
// bytes of fifth bits,) 128 bytes of nibbles: 64 values per 32 bytes, the
// low nibbles first. y = (d scale) q - (dmin min).
template <bool kFifthBit>
void q45_k(const uint8_t* b, float* y) {
  const float d = half_at(b), dmin = half_at(b + 2);
  const uint8_t* packed = b + 4;
  const uint8_t* fifth = b + 16;
  const uint8_t* q = b + (kFifthBit ? 48 : 16);
  uint8_t bit = 1;
  for (int j = 0; j < 8; j += 2, q += 32, bit = uint8_t(bit << 2)) {
    float sc, m;
    scale_min(j, packed, &sc, &m);
    const float d1 = d * sc, m1 = dmin * m;
    scale_min(j + 1, packed, &sc, &m);
    const float d2 = d * sc, m2 = dmin * m;
    for (int l = 0; l < 32; ++l) {
      const int v = (q[l] & 0x0F) + (kFifthBit && (fifth[l] & bit) ? 16 : 0);
      *y++ = d1 * float(v) - m1;
    }
    for (int l = 0; l < 32; ++l) {
      const int v = (q[l] >> 4) + (kFifthBit && (fifth[l] & (bit << 1)) ? 16 : 0);
      *y++ = d2 * float(v) - m2;
    }
  }
}

// Q6_K: 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, sixteen
// int8 scales, fp16 d; codes offset 32. Per 128 values: 64 low-nibble
// bytes and 32 high bytes.
void q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = half_at(b + 208);
  for (uint64_t half = 0; half < 2; ++half, y += 128, ql += 64, qh += 32, sc += 8) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * float(sc[is]) * float(q1);
      y[l + 32] = d * float(sc[is + 2]) * float(q2);
      y[l + 64] = d * float(sc[is + 4]) * float(q3);
      y[l + 96] = d * float(sc[is + 6]) * float(q4);
    }
  }
}

struct BlockDecoder {
  uint64_t values;  // per block
  uint64_t bytes;
  void (*decode)(const uint8_t*, float*);
};

bool decoder(uint32_t type, BlockDecoder* out) {
  switch (GgmlType(type)) {
    case GgmlType::Q4_0: *out = {32, 18, q4_0}; return true;
    case GgmlType::Q4_1: *out = {32, 20, q4_1}; return true;
    case GgmlType::Q5_0: *out = {32, 22, q5<false>}; return true;
    case GgmlType::Q5_1: *out = {32, 24, q5<true>}; return true;
    case GgmlType::Q8_0: *out = {32, 34, q8_0}; return true;
    case GgmlType::Q2_K: *out = {kSuper, 84, q2_k}; return true;
    case GgmlType::Q3_K: *out = {kSuper, 110, q3_k}; return true;
    case GgmlType::Q4_K: *out = {kSuper, 144, q45_k<false>}; return true;
    case GgmlType::Q5_K: *out = {kSuper, 176, q45_k<true>}; return true;
    case GgmlType::Q6_K: *out = {kSuper, 210, q6_k}; return true;
    default: return false;
  }
}

}  // namespace

bool ggml_type_is_float(uint32_t type) {
  const auto t = GgmlType(type);
  return t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16;
}

bool ggml_type_imports_exactly(uint32_t type) {
  const auto t = GgmlType(type);
  return t == GgmlType::Q4_0 || t == GgmlType::Q5_0 || t == GgmlType::Q8_0;
}

bool gguf_has_floats(uint32_t type) {
  BlockDecoder unused;
  return ggml_type_is_float(type) || decoder(type, &unused);
}

std::vector<float> gguf_floats(const GgufTensor& t) {
  BlockDecoder block;
  if (ggml_type_is_float(t.type)) {
    const auto type = GgmlType(t.type);
    const uint64_t width = type == GgmlType::F32 ? 4 : 2;
    std::vector<float> out(t.bytes / width);
    for (uint64_t i = 0; i < out.size(); ++i) {
      if (type == GgmlType::F32) {
        std::memcpy(&out[i], t.data + 4 * i, 4);
      } else {
        uint16_t h;
        std::memcpy(&h, t.data + 2 * i, 2);
        out[i] = type == GgmlType::F16 ? kernels::half_to_float(h) : kernels::bf16_to_float(h);
      }
    }
    return out;
  }
  if (!decoder(t.type, &block))
    fail(Status::Format, "tensor '" + t.name + "' has type " + ggml_type_name(t.type) +
                             ", which woq does not decode (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, "
                             "Q3_K, Q4_K, Q5_K and Q6_K are decoded)");
  const uint64_t blocks = t.bytes / block.bytes;  // the reader sized and bounds-checked the data
  if (!t.data || blocks * block.bytes != t.bytes)
    fail(Status::Internal, "tensor '" + t.name + "': " + std::to_string(t.bytes) + " bytes are not whole " +
                               ggml_type_name(t.type) + " blocks");
  std::vector<float> out(blocks * block.values);
  for (uint64_t i = 0; i < blocks; ++i) block.decode(t.data + i * block.bytes, out.data() + i * block.values);
  return out;
}

}  // namespace woq::import
