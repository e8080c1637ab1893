#include "runtime/context.h"

#include "runtime/error.h"

namespace woq {

Context::Context(BackendKind kind, int threads, int device_index, void* cuda_stream)
    : pool_(kind == BackendKind::CpuReference ? 1 : (threads > 0 ? threads : hardware_threads())) {
  switch (kind) {
    case BackendKind::CpuReference:
    case BackendKind::Cpu:
      backend_ = make_cpu_backend(kind, pool_);
      break;
    case BackendKind::Cuda:
#if defined(WOQ_HAVE_CUDA)
      backend_ = make_cuda_backend(device_index, cuda_stream, memory_);
#else
      (void)cuda_stream;
      fail(Status::Unsupported, "the CUDA backend is not part of this build of libwoq (device " +
                                    std::to_string(device_index) + " requested); use WOQ_BACKEND_CPU");
#endif
      break;
  }
}

void MemoryAccount::add(uint64_t bytes) {
  const uint64_t now = in_use_.fetch_add(bytes) + bytes;
  uint64_t peak = peak_.load();
  while (now > peak && !peak_.compare_exchange_weak(peak, now)) {
  }
}

format::ParallelFor Context::parallel_for() {
  return [this](size_t count, const std::function<void(size_t)>& body) { pool_.parallel_for(count, body); };
}

[[noreturn]] void rethrow_format_error(const format::Error& e) {
  Status s = Status::Format;
  switch (e.kind()) {
    case format::ErrorKind::Io: s = Status::Io; break;
    case format::ErrorKind::Format: s = Status::Format; break;
    case format::ErrorKind::Checksum: s = Status::Checksum; break;
    case format::ErrorKind::Version: s = Status::Version; break;
    case format::ErrorKind::Limit: s = Status::Limit; break;
    case format::ErrorKind::OutOfMemory: s = Status::OutOfMemory; break;
    case format::ErrorKind::Argument: s = Status::InvalidArgument; break;
    case format::ErrorKind::NotFound: s = Status::NotFound; break;
  }
  throw Error(s, e.what());
}

void check_row_range(const format::TensorRecord& rec, uint64_t row_begin, uint64_t row_end) {
  if (!(row_begin < row_end && row_end <= rec.rows))
    fail(Status::Shape, "row range [" + std::to_string(row_begin) + ", " + std::to_string(row_end) +
                            ") is empty or outside tensor '" + rec.name + "' with " + std::to_string(rec.rows) + " rows");
}

QuantizedMatrix read_quantized(const format::Reader& file, const format::TensorRecord& rec, uint64_t row_begin,
                               uint64_t row_end, const format::ParallelFor& parallel) {
  check_row_range(rec, row_begin, row_end);
  if (rec.scheme > 1 || rec.source_dtype > 2)
    fail(Status::Format, "tensor '" + rec.name + "' has an unknown scheme or source dtype");
  QuantizedMatrix m;
  m.rows = row_end - row_begin;
  m.cols = rec.cols;
  m.bits = rec.bits;
  m.group_size = rec.group_size;
  m.scheme = static_cast<Scheme>(rec.scheme);
  m.method = static_cast<Method>(rec.method);
  m.source_dtype = static_cast<DType>(rec.source_dtype);
  m.stats = {rec.max_abs_error, rec.rel_frobenius_error, rec.sqnr_db};
  m.codes.resize(m.rows * m.words_per_row());
  m.scales.resize(m.rows * m.groups_per_row());
  m.zeros.resize(m.rows * m.groups_per_row());
  if (rec.has_bias) m.bias.resize(m.rows);
  using format::SectionKind;
  try {
    file.read_rows(rec, SectionKind::Codes, row_begin, row_end, reinterpret_cast<uint8_t*>(m.codes.data()), parallel);
    file.read_rows(rec, SectionKind::Scales, row_begin, row_end, reinterpret_cast<uint8_t*>(m.scales.data()), parallel);
    file.read_rows(rec, SectionKind::Zeros, row_begin, row_end, m.zeros.data(), parallel);
    if (rec.has_bias)
      file.read_rows(rec, SectionKind::Bias, row_begin, row_end, reinterpret_cast<uint8_t*>(m.bias.data()), parallel);
    if (rec.has_input_scales) {
      m.input_scales.resize(m.cols);
      file.read_input_scales(rec, m.input_scales.data());
    }
    if (rec.has_input_permutation) {
      m.input_permutation.resize(m.cols);
      file.read_input_permutation(rec, m.input_permutation.data());
    }
  } catch (const format::Error& e) {
    rethrow_format_error(e);
  }
  validate_quantized(m, rec.name.c_str());
  return m;
}

void checked_matmul(Context& ctx, const Tensor& w, const void* x, DType x_dtype, uint64_t m, void* y, DType y_dtype,
                    bool caller_memory) {
  if (w.owner() != &ctx) fail(Status::InvalidArgument, "tensor was loaded into a different context");
  if (m == 0) fail(Status::Shape, "m = 0: X needs at least one row");
  uint64_t x_bytes, y_bytes;
  if (__builtin_mul_overflow(m, w.cols() * dtype_size(x_dtype), &x_bytes) ||
      __builtin_mul_overflow(m, w.rows() * dtype_size(y_dtype), &y_bytes))
    fail(Status::Shape, "m = " + std::to_string(m) + " rows of X or Y do not fit in memory");
  const auto* xb = static_cast<const uint8_t*>(x);
  const auto* yb = static_cast<const uint8_t*>(y);
  if (xb < yb + y_bytes && yb < xb + x_bytes) fail(Status::InvalidArgument, "x and y overlap");
  if (caller_memory) ctx.backend().matmul_caller_memory(w.impl(), x, x_dtype, m, y, y_dtype);
  else ctx.backend().matmul(w.impl(), x, x_dtype, m, y, y_dtype);
}

}  // namespace woq
