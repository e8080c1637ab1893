// Canonical code packing (SPEC.md 5.1): each row is a little-endian bitstream
// of `bits`-wide codes in u32 words, least significant bit first.
#pragma once

#include <cstdint>

#include "kernels/cpu/reference.h"

namespace woq {

// ORs codes[0..count) into a zeroed row of words.
inline void pack_row(const uint8_t* codes, uint64_t count, uint32_t bits, uint32_t* row) {
  for (uint64_t k = 0; k < count; ++k) {
    const uint64_t bit = k * bits;
    const uint32_t shift = uint32_t(bit % 32);
    const uint64_t v = uint64_t(codes[k]) << shift;
    row[bit / 32] |= uint32_t(v);
    if (shift + bits > 32) row[bit / 32 + 1] |= uint32_t(v >> 32);
  }
}

using kernels::unpack_code;

}  // namespace woq
