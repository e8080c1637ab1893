// Fuzz target: a .woq file image. Parse it, and if it opens, verify every
// chunk and load every tensor (decode + validate) as woq_tensor_load does.
// Each input runs twice: as is, and with checksums ignored, so that mutated
// bytes reach the parser and decoders that checksums normally guard. The
// image is read in place, as woq_file_open_memory(WOQ_MEMORY_BORROW) does:
// any read past libFuzzer's exactly-sized buffer is a sanitizer report.
#include <cstddef>
#include <cstdint>
#include <memory>

#include "fileformat/reader.h"
#include "runtime/context.h"
#include "runtime/error.h"

static void exercise(const uint8_t* data, size_t size, bool skip_checksums) {
  woq::format::ReaderLimits limits;
  limits.max_tensor_bytes = 64u << 20;  // keep a run's memory small
  limits.fuzzing_skip_checksums = skip_checksums;
  std::unique_ptr<woq::format::Reader> reader;
  try {
    reader = woq::format::Reader::borrow(data, size, limits);
  } catch (const woq::format::Error&) {
    return;
  }
  try {
    reader->verify();
  } catch (const woq::format::Error&) {
  }
  for (const auto& t : reader->tensors()) {
    try {
      woq::read_quantized(*reader, t, 0, t.rows, woq::format::serial_for);
      if (t.rows > 1) woq::read_quantized(*reader, t, t.rows / 2, t.rows, woq::format::serial_for);
    } catch (const woq::Error&) {
    }
  }
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  exercise(data, size, false);
  exercise(data, size, true);
  return 0;
}
