// Fuzz target: one stored chunk. The first 8 bytes choose the declared raw
// size (bounded) and codec; the rest is the payload, checksummed so that the
// decoder itself is exercised, as when a hostile file carries a valid
// checksum over a hostile zstd frame.
#include <xxhash.h>

#include <cstring>
#include <vector>

#include "fileformat/reader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 8) return 0;
  uint64_t head;
  std::memcpy(&head, data, 8);
  woq::format::ChunkRef ref;
  ref.raw_size = (head & 0xfffff) + 1;  // up to 1 MiB
  ref.codec = static_cast<woq::format::Codec>((head >> 20) & 3);
  ref.stored_size = size - 8;
  ref.checksum = XXH3_64bits(data + 8, size - 8);
  std::vector<uint8_t> out(ref.raw_size);
  try {
    woq::format::decode_chunk_payload(data + 8, ref, out.data(), "fuzz");
  } catch (const woq::format::Error&) {
  }
  return 0;
}
