// extern "C" shims: validate every argument, call the C++ core, turn every
// exception into a woq_status plus a thread-local message. Nothing C++ leaves.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "capi/woq.h"
#include "fileformat/reader.h"
#include "fileformat/writer.h"
#include "import/checkpoint.h"
#include "quant/awq.h"
#include "quant/gptq.h"
#include "quant/rtn.h"
#include "runtime/context.h"
#include "runtime/error.h"

using woq::fail;
using woq::Status;

static_assert(int(Status::Internal) == WOQ_ERR_INTERNAL && int(Status::Limit) == WOQ_ERR_LIMIT &&
                  int(Status::Shape) == WOQ_ERR_SHAPE && int(Status::NotFound) == WOQ_ERR_NOT_FOUND,
              "woq::Status mirrors woq_status");
static_assert(int(woq::DType::BF16) == WOQ_DTYPE_BF16 && int(woq::DType::F16) == WOQ_DTYPE_F16, "dtype mirror");

// Every handle starts with a tag so that a wrong or destroyed handle passed
// by a host is reported instead of being used (best effort: the memory of a
// destroyed handle may have been reused).
enum HandleTag : uint32_t {
  kContextTag = 0x574f4301,
  kQMatrixTag = 0x574f4302,
  kWriterTag = 0x574f4303,
  kFileTag = 0x574f4304,
  kTensorTag = 0x574f4305,
  kBufferTag = 0x574f4306,
  kDeadTag = 0xdeadbeef,
};

struct woq_context {
  uint32_t tag = kContextTag;
  std::unique_ptr<woq::Context> impl;
};
struct woq_qmatrix {
  uint32_t tag = kQMatrixTag;
  woq::QuantizedMatrix impl;
  std::vector<float> folded_input_scales;  // AWQ with fold_input_scales: for the host
};
struct woq_writer {
  uint32_t tag = kWriterTag;
  std::unique_ptr<woq::format::Writer> impl;
  bool finished = false;
};
struct woq_file {
  uint32_t tag = kFileTag;
  std::unique_ptr<woq::format::Reader> impl;
};
struct woq_tensor {
  uint32_t tag = kTensorTag;
  std::unique_ptr<woq::Tensor> impl;
};
struct woq_buffer {
  uint32_t tag = kBufferTag;
  std::unique_ptr<woq::Buffer> impl;
};

namespace {

thread_local std::string t_last_error;

woq_status record(woq_status status, const char* message) {
  try {
    t_last_error = message;
  } catch (...) {
    // No memory even for the message: the status still tells the story.
  }
  return status;
}

// Runs body, mapping any exception onto a status code and message.
template <class Body>
woq_status guarded(Body&& body) {
  t_last_error.clear();
  try {
    body();
    return WOQ_OK;
  } catch (const woq::Error& e) {
    return record(static_cast<woq_status>(e.status()), e.what());
  } catch (const woq::format::Error& e) {
    try {
      woq::rethrow_format_error(e);
    } catch (const woq::Error& mapped) {
      return record(static_cast<woq_status>(mapped.status()), mapped.what());
    }
  } catch (const std::bad_alloc&) {
    return record(WOQ_ERR_OUT_OF_MEMORY, "out of memory");
  } catch (const std::exception& e) {
    return record(WOQ_ERR_INTERNAL, e.what());
  } catch (...) {
    return record(WOQ_ERR_INTERNAL, "unknown internal error");
  }
  return WOQ_ERR_INTERNAL;
}

void need(const void* p, const char* name) {
  if (!p) fail(Status::InvalidArgument, std::string(name) + " is NULL");
}

template <class Handle>
void need_handle(const Handle* h, uint32_t tag, const char* name) {
  need(h, name);
  if (h->tag != tag) fail(Status::InvalidArgument, std::string(name) + " is not a live handle of its type (destroyed, or another handle type)");
}

woq::DType need_dtype(int v, const char* name) {
  if (!woq::dtype_valid(v)) fail(Status::InvalidArgument, std::string(name) + " = " + std::to_string(v) + " is not a woq_dtype");
  return static_cast<woq::DType>(v);
}

// Copies a caller's size-prefixed options over our defaults.
template <class Options>
void read_options(const Options* in, Options* out, const char* name) {
  if (!in) return;
  const size_t size = in->struct_size;
  if (size < sizeof(size_t) || size > (1u << 16))
    fail(Status::InvalidArgument, std::string(name) + "->struct_size = " + std::to_string(size) +
                                      " is invalid; initialise it with " + name + "_init()");
  std::memcpy(reinterpret_cast<char*>(out) + sizeof(size_t), reinterpret_cast<const char*>(in) + sizeof(size_t),
              std::min<size_t>(size, sizeof(Options)) - sizeof(size_t));
}

void fill_tensor_info(const woq::format::TensorRecord& rec, woq_tensor_info* info) {
  if (info->struct_size < sizeof(size_t))
    fail(Status::InvalidArgument, "info->struct_size must be set to sizeof(woq_tensor_info)");
  woq_tensor_info full;
  std::memset(&full, 0, sizeof full);
  full.struct_size = info->struct_size;
  full.name = rec.name.c_str();
  full.rows = rec.rows;
  full.cols = rec.cols;
  full.bits = rec.bits;
  full.group_size = rec.group_size;
  full.scheme = static_cast<woq_scheme>(rec.scheme);
  full.method = static_cast<woq_method>(rec.method);
  full.source_dtype = static_cast<woq_dtype>(rec.source_dtype);
  full.has_bias = rec.has_bias ? 1 : 0;
  full.stored_bytes = rec.stored_bytes();
  full.raw_bytes = rec.raw_bytes();
  const uint64_t groups = rec.rows * rec.groups_per_row();
  full.bits_per_weight = double(rec.rows * rec.words_per_row() * 32 + groups * 16 + groups * 8) /
                         double(rec.rows * rec.cols);
  full.max_abs_error = rec.max_abs_error;
  full.rel_frobenius_error = rec.rel_frobenius_error;
  full.sqnr_db = rec.sqnr_db;
  full.has_input_scales = rec.has_input_scales ? 1 : 0;
  full.has_input_permutation = rec.has_input_permutation ? 1 : 0;
  std::memcpy(info, &full, std::min<size_t>(info->struct_size, sizeof full));
}

// Compresses and appends one canonical matrix to a writer.
void add_matrix(woq::format::Writer& writer, const std::string& name, const woq::QuantizedMatrix& m,
                const float* bias) {
  woq::format::TensorRecord rec;
  rec.name = name;
  rec.bits = static_cast<uint8_t>(m.bits);
  rec.scheme = static_cast<uint8_t>(m.scheme);
  rec.method = static_cast<uint8_t>(m.method);
  rec.source_dtype = static_cast<uint8_t>(m.source_dtype);
  rec.rows = m.rows;
  rec.cols = m.cols;
  rec.group_size = m.group_size;
  rec.max_abs_error = m.stats.max_abs_error;
  rec.rel_frobenius_error = m.stats.rel_frobenius_error;
  rec.sqnr_db = m.stats.sqnr_db;
  writer.add_tensor(std::move(rec), {m.codes.data(), m.scales.data(), m.zeros.data(), bias,
                                     m.input_scales.empty() ? nullptr : m.input_scales.data(),
                                     m.input_permutation.empty() ? nullptr : m.input_permutation.data()});
}

// Checks both handles and that the tensor belongs to the context.
void need_tensor_of(const woq_context* context, const woq_tensor* tensor) {
  need_handle(context, kContextTag, "context");
  need_handle(tensor, kTensorTag, "tensor");
  if (tensor->impl->owner() != context->impl.get())
    fail(Status::InvalidArgument, "tensor was loaded into a different context");
}

const woq::format::TensorRecord& need_tensor_record(const woq_file* file, const char* name) {
  need(name, "name");
  const woq::format::TensorRecord* rec = file->impl->find(name);
  if (!rec) fail(Status::NotFound, std::string("no tensor named '") + name + "' in the file");
  return *rec;
}

const woq::format::MetadataEntry& need_metadata(const woq_file* file, const char* key, woq::format::MetadataType type) {
  need_handle(file, kFileTag, "file");
  need(key, "key");
  const woq::format::MetadataEntry* m = file->impl->find_metadata(key);
  if (!m) fail(Status::NotFound, std::string("no metadata key '") + key + "'");
  if (m->type != type) fail(Status::InvalidArgument, std::string("metadata '") + key + "' has another type");
  return *m;
}

woq_tensor* wrap_tensor(woq::Context* ctx, std::unique_ptr<woq::BackendTensor> uploaded) {
  auto t = std::make_unique<woq_tensor>();
  t->impl = std::make_unique<woq::Tensor>(ctx, std::move(uploaded));
  return t.release();
}

template <class Handle>
void destroy(Handle* h, uint32_t tag) {
  if (!h || h->tag != tag) return;
  h->tag = kDeadTag;
  delete h;
}

}  // namespace

extern "C" {

WOQ_API uint32_t woq_version(void) { return WOQ_VERSION_NUMBER; }

WOQ_API const char* woq_version_string(void) {
#define WOQ_STR2(x) #x
#define WOQ_STR(x) WOQ_STR2(x)
  return WOQ_STR(WOQ_VERSION_MAJOR) "." WOQ_STR(WOQ_VERSION_MINOR) "." WOQ_STR(WOQ_VERSION_PATCH);
}

WOQ_API const char* woq_status_string(woq_status status) {
  switch (status) {
    case WOQ_OK: return "WOQ_OK";
    case WOQ_ERR_INVALID_ARGUMENT: return "WOQ_ERR_INVALID_ARGUMENT";
    case WOQ_ERR_SHAPE: return "WOQ_ERR_SHAPE";
    case WOQ_ERR_OUT_OF_MEMORY: return "WOQ_ERR_OUT_OF_MEMORY";
    case WOQ_ERR_IO: return "WOQ_ERR_IO";
    case WOQ_ERR_FORMAT: return "WOQ_ERR_FORMAT";
    case WOQ_ERR_CHECKSUM: return "WOQ_ERR_CHECKSUM";
    case WOQ_ERR_VERSION: return "WOQ_ERR_VERSION";
    case WOQ_ERR_NOT_FOUND: return "WOQ_ERR_NOT_FOUND";
    case WOQ_ERR_UNSUPPORTED: return "WOQ_ERR_UNSUPPORTED";
    case WOQ_ERR_LIMIT: return "WOQ_ERR_LIMIT";
    case WOQ_ERR_INTERNAL: return "WOQ_ERR_INTERNAL";
    case WOQ_STATUS_MAX_ENUM: break;
  }
  return "WOQ_ERR_UNKNOWN_STATUS";
}

WOQ_API const char* woq_last_error(void) { return t_last_error.c_str(); }

/* ---- context */

WOQ_API woq_status woq_context_options_init(woq_context_options* options) {
  return guarded([&] {
    need(options, "options");
    std::memset(options, 0, sizeof *options);
    options->struct_size = sizeof *options;
    options->backend = WOQ_BACKEND_CPU;
  });
}

WOQ_API woq_status woq_context_create(const woq_context_options* options, woq_context** out_context) {
  return guarded([&] {
    need(out_context, "out_context");
    woq_context_options o;
    woq_context_options_init(&o);
    read_options(options, &o, "woq_context_options");
    if (o.backend < WOQ_BACKEND_CPU_REFERENCE || o.backend > WOQ_BACKEND_CUDA)
      fail(Status::InvalidArgument, "options->backend = " + std::to_string(int(o.backend)) + " is not a woq_backend");
    if (o.threads < 0 || o.threads > 4096)
      fail(Status::InvalidArgument, "options->threads = " + std::to_string(o.threads) + " is not in 0..4096");
    if (o.device_index < 0) fail(Status::InvalidArgument, "options->device_index is negative");
    if (o.cuda_stream && o.backend != WOQ_BACKEND_CUDA)
      fail(Status::InvalidArgument, "options->cuda_stream is set, but it applies to WOQ_BACKEND_CUDA only");
    auto c = std::make_unique<woq_context>();
    c->impl = std::make_unique<woq::Context>(static_cast<woq::BackendKind>(o.backend), o.threads, o.device_index,
                                             o.cuda_stream);
    *out_context = c.release();
  });
}

WOQ_API void woq_context_destroy(woq_context* context) { destroy(context, kContextTag); }

WOQ_API woq_status woq_context_info(const woq_context* context, woq_backend* out_backend, int32_t* out_threads) {
  return guarded([&] {
    need_handle(context, kContextTag, "context");
    if (out_backend) *out_backend = static_cast<woq_backend>(context->impl->kind());
    if (out_threads) *out_threads = context->impl->threads();
  });
}

WOQ_API woq_status woq_context_kernel(const woq_context* context, const char** out_name) {
  return guarded([&] {
    need_handle(context, kContextTag, "context");
    need(out_name, "out_name");
    *out_name = context->impl->backend().kernel_name();
  });
}

WOQ_API woq_status woq_context_memory(const woq_context* context, uint64_t* out_in_use_bytes,
                                      uint64_t* out_peak_bytes) {
  return guarded([&] {
    need_handle(context, kContextTag, "context");
    need(out_in_use_bytes, "out_in_use_bytes");
    need(out_peak_bytes, "out_peak_bytes");
    const woq::MemoryAccount& account = *context->impl->memory();
    const uint64_t in_use = account.in_use();
    *out_in_use_bytes = in_use;
    *out_peak_bytes = std::max(account.peak(), in_use);  // a concurrent upload may not have raised the peak yet
  });
}

WOQ_API woq_status woq_context_synchronize(woq_context* context) {
  return guarded([&] {
    need_handle(context, kContextTag, "context");
    context->impl->backend().synchronize();
  });
}

/* ---- quantize */

WOQ_API woq_status woq_quant_options_init(woq_quant_options* options) {
  return guarded([&] {
    need(options, "options");
    std::memset(options, 0, sizeof *options);
    options->struct_size = sizeof *options;
    options->bits = 4;
    options->group_size = 128;
    options->scheme = WOQ_SCHEME_ASYMMETRIC;
    options->method = WOQ_METHOD_RTN;
  });
}

WOQ_API woq_status woq_quantize(const void* weights, woq_dtype w_dtype, uint64_t rows, uint64_t cols,
                                const woq_quant_options* options, woq_qmatrix** out_qmatrix) {
  return guarded([&] {
    need(weights, "weights");
    need(out_qmatrix, "out_qmatrix");
    woq::DType dtype = need_dtype(w_dtype, "w_dtype");
    woq_quant_options o;
    woq_quant_options_init(&o);
    read_options(options, &o, "woq_quant_options");
    woq::QuantConfig config;
    config.bits = o.bits;
    config.group_size = o.group_size;
    config.scheme = static_cast<woq::Scheme>(o.scheme);
    config.method = static_cast<woq::Method>(o.method);
    if (o.act_order < 0 || o.act_order > 2)
      fail(Status::InvalidArgument, "act_order " + std::to_string(o.act_order) +
                                        " is not 0 (off), 1 (static groups) or 2 (permuted groups)");
    config.act_order = static_cast<woq::ActOrder>(o.act_order);
    auto q = std::make_unique<woq_qmatrix>();
    if (o.fold_input_scales && config.method != woq::Method::Awq)
      fail(Status::InvalidArgument, "fold_input_scales applies to AWQ only");
    if (config.method == woq::Method::Gptq || config.method == woq::Method::Awq) {
      woq::Calibration calib;
      calib.x = o.calibration;
      calib.dtype = need_dtype(o.calibration_dtype, "calibration_dtype");
      calib.rows = o.calibration_rows;
      if (config.method == woq::Method::Gptq) {
        q->impl = woq::quantize_gptq(weights, dtype, rows, cols, config, calib);
      } else {
        woq::AwqReport report;
        q->impl = woq::quantize_awq(weights, dtype, rows, cols, config, calib, o.fold_input_scales != 0, &report);
        q->folded_input_scales = std::move(report.folded);
      }
    } else {
      if (o.calibration)
        fail(Status::InvalidArgument, "calibration activations given to a method that takes none (RTN, MSE, HQQ)");
      q->impl = woq::quantize_rtn(weights, dtype, rows, cols, config);
    }
    *out_qmatrix = q.release();
  });
}

WOQ_API void woq_qmatrix_destroy(woq_qmatrix* qmatrix) { destroy(qmatrix, kQMatrixTag); }

WOQ_API woq_status woq_qmatrix_input_scales(const woq_qmatrix* qmatrix, float* out, uint64_t out_capacity_bytes,
                                            uint64_t* out_count) {
  return guarded([&] {
    need_handle(qmatrix, kQMatrixTag, "qmatrix");
    need(out_count, "out_count");
    const std::vector<float>& v =
        qmatrix->impl.input_scales.empty() ? qmatrix->folded_input_scales : qmatrix->impl.input_scales;
    *out_count = v.size();
    if (!out || v.empty()) return;
    if (out_capacity_bytes / sizeof(float) < v.size())
      fail(Status::Shape, "out holds " + std::to_string(out_capacity_bytes) + " bytes, the " + std::to_string(v.size()) +
                              " input scales need " + std::to_string(v.size() * sizeof(float)));
    std::memcpy(out, v.data(), v.size() * sizeof(float));
  });
}

WOQ_API woq_status woq_qmatrix_shape(const woq_qmatrix* qmatrix, uint64_t* out_rows, uint64_t* out_cols) {
  return guarded([&] {
    need_handle(qmatrix, kQMatrixTag, "qmatrix");
    need(out_rows, "out_rows");
    need(out_cols, "out_cols");
    *out_rows = qmatrix->impl.rows;
    *out_cols = qmatrix->impl.cols;
  });
}

WOQ_API woq_status woq_qmatrix_stats(const woq_qmatrix* qmatrix, double* out_max_abs_error,
                                     double* out_rel_frobenius_error, double* out_sqnr_db) {
  return guarded([&] {
    need_handle(qmatrix, kQMatrixTag, "qmatrix");
    if (out_max_abs_error) *out_max_abs_error = qmatrix->impl.stats.max_abs_error;
    if (out_rel_frobenius_error) *out_rel_frobenius_error = qmatrix->impl.stats.rel_frobenius_error;
    if (out_sqnr_db) *out_sqnr_db = qmatrix->impl.stats.sqnr_db;
  });
}

/* ---- import */

WOQ_API woq_status woq_import_options_init(woq_import_options* options) {
  return guarded([&] {
    need(options, "options");
    std::memset(options, 0, sizeof *options);
    options->struct_size = sizeof *options;
  });
}

WOQ_API woq_status woq_import_checkpoint(const char* checkpoint_path, const char* format, const char* woq_path,
                                         const char** out_report) {
  return woq_import_checkpoint_ex(checkpoint_path, format, woq_path, nullptr, out_report);
}

WOQ_API woq_status woq_import_checkpoint_ex(const char* checkpoint_path, const char* format, const char* woq_path,
                                            const woq_import_options* options, const char** out_report) {
  return guarded([&] {
    need(checkpoint_path, "checkpoint_path");
    need(woq_path, "woq_path");
    woq_import_options o;
    woq_import_options_init(&o);
    read_options(options, &o, "woq_import_options");
    if (o.round_scales != 0 && o.round_scales != 1)
      fail(Status::InvalidArgument, "woq_import_options.round_scales = " + std::to_string(o.round_scales) +
                                        " is neither 0 nor 1");
    const woq::import::Flavor flavor = woq::import::parse_flavor(format ? format : "auto");
    // Each layer is written as soon as it is converted, so the import holds
    // one converted layer at a time; the directory and metadata come last.
    // The file is created with the first layer: a checkpoint that cannot be
    // read is reported as such.
    std::unique_ptr<woq::format::Writer> output;
    woq::import::ImportOptions import_options;
    import_options.round_scales = o.round_scales == 1;
    import_options.on_layer = [&](woq::import::ImportedLayer&& layer, size_t index, size_t total) {
      if (!output) output = std::make_unique<woq::format::Writer>(woq_path);
      add_matrix(*output, layer.name, layer.matrix, layer.matrix.bias.empty() ? nullptr : layer.matrix.bias.data());
      if (o.progress) o.progress(o.progress_user_data, index + 1, total, layer.name.c_str());
    };
    woq::import::ImportResult r = woq::import::import_checkpoint(checkpoint_path, flavor, import_options);
    char change[32];
    std::snprintf(change, sizeof change, "%.2g", r.largest_scale_change);
    const std::string rounded = std::to_string(r.scales_rounded) + " of " + std::to_string(r.scales_read) +
                                " scales rounded to fp16, largest relative change " + change;
    if (!output) fail(Status::Internal, "the import converted no layer and did not fail");
    woq::format::Writer& writer = *output;
    std::string source = checkpoint_path;  // a file's or a directory's name
    while (source.size() > 1 && source.back() == '/') source.pop_back();
    writer.set_metadata({"woq.writer", woq::format::MetadataType::String, std::string("libwoq ") + woq_version_string()});
    writer.set_metadata({"import.format", woq::format::MetadataType::String, woq::import::flavor_name(r.flavor)});
    writer.set_metadata({"import.format_source", woq::format::MetadataType::String, r.how});
    writer.set_metadata({"import.checkpoint", woq::format::MetadataType::String, source.substr(source.rfind('/') + 1)});
    if (r.scales_rounded) writer.set_metadata({"import.scales_rounded", woq::format::MetadataType::String, rounded});
    size_t left_out = 0;  // entries longer than (or with a NUL that) .woq metadata holds
    for (const auto& [key, value] : r.metadata) {
      if (!woq::format::fits_string_metadata("source." + key, value)) {
        ++left_out;
        continue;
      }
      writer.set_metadata({"source." + key, woq::format::MetadataType::String, value});
    }
    writer.finish();
    if (out_report) {
      thread_local std::string t_report;
      t_report = "format " + std::string(woq::import::flavor_name(r.flavor)) + " (" + r.how + "); " +
                 std::to_string(r.layer_count) + " layers converted";
      if (r.scales_rounded) t_report += "; " + rounded;
      if (left_out)
        t_report += "; " + std::to_string(left_out) + " of the checkpoint's metadata strings left out (.woq keys are at most " +
                    std::to_string(woq::format::kMaxKeyLength) + " bytes, values 1 MiB, without NUL)";
      if (!r.skipped.empty()) {
        t_report += "; skipped " + std::to_string(r.skipped.size()) + " other tensors:";
        for (const auto& name : r.skipped) t_report += " " + name;
      }
      *out_report = t_report.c_str();
    }
  });
}

/* ---- writer */

WOQ_API woq_status woq_writer_create(const char* path, woq_writer** out_writer) {
  return guarded([&] {
    need(path, "path");
    need(out_writer, "out_writer");
    auto w = std::make_unique<woq_writer>();
    w->impl = std::make_unique<woq::format::Writer>(path);
    w->impl->set_metadata({"woq.writer", woq::format::MetadataType::String, std::string("libwoq ") + woq_version_string()});
    *out_writer = w.release();
  });
}

static void need_open_writer(const woq_writer* writer) {
  need_handle(writer, kWriterTag, "writer");
  if (writer->finished) fail(Status::InvalidArgument, "writer is finished (or failed); create a new one");
}

WOQ_API woq_status woq_writer_add_tensor(woq_writer* writer, const char* name, const woq_qmatrix* qmatrix,
                                         const float* bias) {
  return guarded([&] {
    need_open_writer(writer);
    need(name, "name");
    need_handle(qmatrix, kQMatrixTag, "qmatrix");
    const woq::QuantizedMatrix& m = qmatrix->impl;
    if (bias)
      for (uint64_t i = 0; i < m.rows; ++i)
        if (!std::isfinite(bias[i])) fail(Status::InvalidArgument, "bias[" + std::to_string(i) + "] is not finite");
    try {
      add_matrix(*writer->impl, name, m, bias);
    } catch (const woq::format::Error& e) {
      if (e.kind() == woq::format::ErrorKind::Io) writer->finished = true;
      throw;
    }
  });
}

static woq_status set_metadata(woq_writer* writer, const char* key, woq::format::MetadataEntry entry) {
  return guarded([&] {
    need_open_writer(writer);
    need(key, "key");
    entry.key = key;
    writer->impl->set_metadata(entry);
  });
}

WOQ_API woq_status woq_writer_set_metadata_string(woq_writer* writer, const char* key, const char* value) {
  if (!value) return guarded([] { fail(Status::InvalidArgument, "value is NULL"); });
  woq::format::MetadataEntry e;
  e.type = woq::format::MetadataType::String;
  try {
    e.string_value = value;
  } catch (...) {
    return record(WOQ_ERR_OUT_OF_MEMORY, "out of memory");
  }
  return set_metadata(writer, key, std::move(e));
}

WOQ_API woq_status woq_writer_set_metadata_int(woq_writer* writer, const char* key, int64_t value) {
  woq::format::MetadataEntry e;
  e.type = woq::format::MetadataType::Int;
  e.int_value = value;
  return set_metadata(writer, key, std::move(e));
}

WOQ_API woq_status woq_writer_set_metadata_float(woq_writer* writer, const char* key, double value) {
  woq::format::MetadataEntry e;
  e.type = woq::format::MetadataType::Float;
  e.float_value = value;
  return set_metadata(writer, key, std::move(e));
}

WOQ_API woq_status woq_writer_finish(woq_writer* writer) {
  return guarded([&] {
    need_open_writer(writer);
    writer->finished = true;
    writer->impl->finish();
  });
}

WOQ_API void woq_writer_destroy(woq_writer* writer) { destroy(writer, kWriterTag); }

/* ---- file */

WOQ_API woq_status woq_open_options_init(woq_open_options* options) {
  return guarded([&] {
    need(options, "options");
    const woq::format::ReaderLimits defaults;
    std::memset(options, 0, sizeof *options);
    options->struct_size = sizeof *options;
    options->max_directory_bytes = defaults.max_directory_bytes;
    options->max_tensors = defaults.max_tensors;
    options->max_metadata = defaults.max_metadata;
    options->max_tensor_bytes = defaults.max_tensor_bytes;
  });
}

namespace {
woq::format::ReaderLimits reader_limits(const woq_open_options* options) {
  woq_open_options o;
  woq_open_options_init(&o);
  read_options(options, &o, "woq_open_options");
  woq::format::ReaderLimits limits;
  limits.max_directory_bytes = o.max_directory_bytes;
  limits.max_tensors = o.max_tensors;
  limits.max_metadata = o.max_metadata;
  limits.max_tensor_bytes = o.max_tensor_bytes;
  return limits;
}
}  // namespace

WOQ_API woq_status woq_file_open_ex(const char* path, const woq_open_options* options, woq_file** out_file) {
  return guarded([&] {
    need(path, "path");
    need(out_file, "out_file");
    auto f = std::make_unique<woq_file>();
    f->impl = woq::format::Reader::open(path, reader_limits(options));
    *out_file = f.release();
  });
}

WOQ_API woq_status woq_file_open_memory(const void* data, uint64_t size, woq_memory_mode mode,
                                        const woq_open_options* options, woq_file** out_file) {
  return guarded([&] {
    if (size > 0) need(data, "data");  // an empty image is refused as too short, below
    need(out_file, "out_file");
    if (mode != WOQ_MEMORY_COPY && mode != WOQ_MEMORY_BORROW)
      fail(Status::InvalidArgument, "mode = " + std::to_string(int(mode)) + " is not a woq_memory_mode");
    const woq::format::ReaderLimits limits = reader_limits(options);
    const auto* bytes = static_cast<const uint8_t*>(data);
    auto f = std::make_unique<woq_file>();
    if (mode == WOQ_MEMORY_BORROW) {
      f->impl = woq::format::Reader::borrow(bytes, size, limits);
    } else {
      std::vector<uint8_t> copy;
      try {
        if (size > copy.max_size()) throw std::bad_alloc();
        copy.assign(bytes, bytes + size);
      } catch (const std::bad_alloc&) {
        fail(Status::OutOfMemory, "cannot copy the in-memory image (" + std::to_string(size) + " bytes): out of memory");
      }
      f->impl = woq::format::Reader::from_memory(std::move(copy), limits);
    }
    *out_file = f.release();
  });
}

WOQ_API woq_status woq_file_open(const char* path, woq_file** out_file) {
  return woq_file_open_ex(path, nullptr, out_file);
}

WOQ_API void woq_file_close(woq_file* file) { destroy(file, kFileTag); }

WOQ_API woq_status woq_file_verify(const woq_file* file) {
  return guarded([&] {
    need_handle(file, kFileTag, "file");
    file->impl->verify();
  });
}

WOQ_API woq_status woq_file_format_version(const woq_file* file, uint32_t* out_major, uint32_t* out_minor) {
  return guarded([&] {
    need_handle(file, kFileTag, "file");
    if (out_major) *out_major = file->impl->version_major();
    if (out_minor) *out_minor = file->impl->version_minor();
  });
}

WOQ_API woq_status woq_file_tensor_count(const woq_file* file, uint64_t* out_count) {
  return guarded([&] {
    need_handle(file, kFileTag, "file");
    need(out_count, "out_count");
    *out_count = file->impl->tensors().size();
  });
}

WOQ_API woq_status woq_file_tensor_info(const woq_file* file, uint64_t index, woq_tensor_info* info) {
  return guarded([&] {
    need_handle(file, kFileTag, "file");
    need(info, "info");
    const auto& tensors = file->impl->tensors();
    if (index >= tensors.size())
      fail(Status::NotFound, "tensor index " + std::to_string(index) + " is out of range (file has " +
                                 std::to_string(tensors.size()) + " tensors)");
    fill_tensor_info(tensors[index], info);
  });
}

WOQ_API woq_status woq_file_tensor_info_by_name(const woq_file* file, const char* name, woq_tensor_info* info) {
  return guarded([&] {
    need_handle(file, kFileTag, "file");
    need(info, "info");
    fill_tensor_info(need_tensor_record(file, name), info);
  });
}

WOQ_API woq_status woq_file_metadata_count(const woq_file* file, uint64_t* out_count) {
  return guarded([&] {
    need_handle(file, kFileTag, "file");
    need(out_count, "out_count");
    *out_count = file->impl->metadata().size();
  });
}

WOQ_API woq_status woq_file_metadata_key(const woq_file* file, uint64_t index, const char** out_key,
                                         woq_metadata_type* out_type) {
  return guarded([&] {
    need_handle(file, kFileTag, "file");
    need(out_key, "out_key");
    const auto& md = file->impl->metadata();
    if (index >= md.size())
      fail(Status::NotFound, "metadata index " + std::to_string(index) + " is out of range (file has " +
                                 std::to_string(md.size()) + " entries)");
    *out_key = md[index].key.c_str();
    if (out_type) *out_type = static_cast<woq_metadata_type>(md[index].type);
  });
}

WOQ_API woq_status woq_file_metadata_string(const woq_file* file, const char* key, const char** out_value,
                                            uint64_t* out_length) {
  return guarded([&] {
    need(out_value, "out_value");
    const auto& m = need_metadata(file, key, woq::format::MetadataType::String);
    *out_value = m.string_value.c_str();
    if (out_length) *out_length = m.string_value.size();
  });
}

WOQ_API woq_status woq_file_metadata_int(const woq_file* file, const char* key, int64_t* out_value) {
  return guarded([&] {
    need(out_value, "out_value");
    *out_value = need_metadata(file, key, woq::format::MetadataType::Int).int_value;
  });
}

WOQ_API woq_status woq_file_metadata_float(const woq_file* file, const char* key, double* out_value) {
  return guarded([&] {
    need(out_value, "out_value");
    *out_value = need_metadata(file, key, woq::format::MetadataType::Float).float_value;
  });
}

/* ---- tensor */

static void load_rows(woq_context* context, const woq_file* file, const char* name, bool whole, uint64_t row_begin,
                      uint64_t row_end, woq_tensor** out_tensor) {
  need_handle(context, kContextTag, "context");
  need_handle(file, kFileTag, "file");
  need(out_tensor, "out_tensor");
  const auto& rec = need_tensor_record(file, name);
  if (whole) row_begin = 0, row_end = rec.rows;
  woq::Context* ctx = context->impl.get();
  woq::check_row_range(rec, row_begin, row_end);  // before the backend asks for any block
  const woq::format::Reader& reader = *file->impl;
  const woq::format::ParallelFor parallel = ctx->parallel_for();
  woq::RowSource source;
  source.rows = row_end - row_begin;
  source.cols = rec.cols;
  source.bits = rec.bits;
  source.group_size = rec.group_size;
  source.rows_per_chunk = rec.rows_per_chunk;
  source.read = [&](uint64_t b, uint64_t e) {
    return woq::read_quantized(reader, rec, row_begin + b, row_begin + e, parallel);
  };
  *out_tensor = wrap_tensor(ctx, ctx->backend().upload_rows(source));
}

WOQ_API woq_status woq_tensor_load_rows(woq_context* context, const woq_file* file, const char* name,
                                        uint64_t row_begin, uint64_t row_end, woq_tensor** out_tensor) {
  return guarded([&] { load_rows(context, file, name, false, row_begin, row_end, out_tensor); });
}

WOQ_API woq_status woq_tensor_load(woq_context* context, const woq_file* file, const char* name,
                                   woq_tensor** out_tensor) {
  return guarded([&] { load_rows(context, file, name, true, 0, 0, out_tensor); });
}

WOQ_API woq_status woq_tensor_from_qmatrix(woq_context* context, const woq_qmatrix* qmatrix, const float* bias,
                                           woq_tensor** out_tensor) {
  return guarded([&] {
    need_handle(context, kContextTag, "context");
    need_handle(qmatrix, kQMatrixTag, "qmatrix");
    need(out_tensor, "out_tensor");
    woq::QuantizedMatrix copy = qmatrix->impl;
    if (bias) copy.bias.assign(bias, bias + copy.rows);
    *out_tensor = wrap_tensor(context->impl.get(), context->impl->backend().upload(std::move(copy)));
  });
}

WOQ_API void woq_tensor_destroy(woq_tensor* tensor) { destroy(tensor, kTensorTag); }

WOQ_API woq_status woq_tensor_shape(const woq_tensor* tensor, uint64_t* out_rows, uint64_t* out_cols) {
  return guarded([&] {
    need_handle(tensor, kTensorTag, "tensor");
    need(out_rows, "out_rows");
    need(out_cols, "out_cols");
    *out_rows = tensor->impl->rows();
    *out_cols = tensor->impl->cols();
  });
}

WOQ_API woq_status woq_matmul(woq_context* context, const woq_tensor* tensor, const void* x, woq_dtype x_dtype,
                              uint64_t m, void* y, woq_dtype y_dtype) {
  return guarded([&] {
    need_handle(context, kContextTag, "context");
    need_handle(tensor, kTensorTag, "tensor");
    need(x, "x");
    need(y, "y");
    woq::checked_matmul(*context->impl, *tensor->impl, x, need_dtype(x_dtype, "x_dtype"), m, y,
                        need_dtype(y_dtype, "y_dtype"), /*caller_memory=*/true);
  });
}

WOQ_API woq_status woq_dequantize(woq_context* context, const woq_tensor* tensor, void* out, woq_dtype out_dtype,
                                  uint64_t out_capacity_bytes) {
  return guarded([&] {
    need_tensor_of(context, tensor);
    need(out, "out");
    woq::DType dtype = need_dtype(out_dtype, "out_dtype");
    const uint64_t needed = tensor->impl->rows() * tensor->impl->cols() * woq::dtype_size(dtype);
    if (out_capacity_bytes < needed)
      fail(Status::Shape, "out holds " + std::to_string(out_capacity_bytes) + " bytes; the " +
                              std::to_string(tensor->impl->rows()) + " x " + std::to_string(tensor->impl->cols()) +
                              " tensor needs " + std::to_string(needed));
    context->impl->backend().dequantize(tensor->impl->impl(), out, dtype);
  });
}

WOQ_API woq_status woq_tensor_bias(woq_context* context, const woq_tensor* tensor, float* out,
                                   uint64_t out_capacity_bytes, int32_t* out_has_bias) {
  return guarded([&] {
    need_tensor_of(context, tensor);
    need(out_has_bias, "out_has_bias");
    const bool has = context->impl->backend().bias(tensor->impl->impl(), nullptr);
    if (has && out) {
      const uint64_t needed = tensor->impl->rows() * sizeof(float);
      if (out_capacity_bytes < needed)
        fail(Status::Shape, "out holds " + std::to_string(out_capacity_bytes) + " bytes; the bias needs " +
                                std::to_string(needed));
      context->impl->backend().bias(tensor->impl->impl(), out);
    }
    *out_has_bias = has ? 1 : 0;
  });
}

WOQ_API woq_status woq_tensor_group(woq_context* context, const woq_tensor* tensor, uint64_t row, uint64_t group,
                                    float* out_scale, int32_t* out_zero_point) {
  return guarded([&] {
    need_tensor_of(context, tensor);
    need(out_scale, "out_scale");
    need(out_zero_point, "out_zero_point");
    woq::Backend& b = context->impl->backend();
    const uint64_t groups = b.groups_of(tensor->impl->impl());
    if (row >= tensor->impl->rows() || group >= groups)
      fail(Status::Shape, "(row " + std::to_string(row) + ", group " + std::to_string(group) + ") is outside the " +
                              std::to_string(tensor->impl->rows()) + " rows x " + std::to_string(groups) + " groups");
    b.group(tensor->impl->impl(), row, group, out_scale, out_zero_point);
  });
}

/* ---- buffers */

WOQ_API woq_status woq_buffer_create(woq_context* context, uint64_t bytes, woq_buffer** out_buffer) {
  return guarded([&] {
    need_handle(context, kContextTag, "context");
    need(out_buffer, "out_buffer");
    if (bytes == 0) fail(Status::InvalidArgument, "bytes = 0: a buffer needs at least one byte");
    if (bytes > (1ull << 46)) fail(Status::OutOfMemory, "buffer of " + std::to_string(bytes) + " bytes is too large");
    auto b = std::make_unique<woq_buffer>();
    b->impl = std::make_unique<woq::Buffer>(context->impl.get(), context->impl->backend().allocate(bytes));
    *out_buffer = b.release();
  });
}

WOQ_API void woq_buffer_destroy(woq_buffer* buffer) { destroy(buffer, kBufferTag); }

WOQ_API woq_status woq_buffer_size(const woq_buffer* buffer, uint64_t* out_bytes) {
  return guarded([&] {
    need_handle(buffer, kBufferTag, "buffer");
    need(out_bytes, "out_bytes");
    *out_bytes = buffer->impl->impl().size();
  });
}

static void check_range(const woq_buffer* buffer, uint64_t offset, uint64_t bytes) {
  const uint64_t size = buffer->impl->impl().size();
  if (offset > size || bytes > size - offset)
    fail(Status::Shape, "range [" + std::to_string(offset) + ", +" + std::to_string(bytes) + ") exceeds the buffer's " +
                            std::to_string(size) + " bytes");
}

WOQ_API woq_status woq_buffer_write(woq_buffer* buffer, uint64_t offset, const void* src, uint64_t bytes) {
  return guarded([&] {
    need_handle(buffer, kBufferTag, "buffer");
    need(src, "src");
    check_range(buffer, offset, bytes);
    buffer->impl->impl().write(offset, src, bytes);
  });
}

WOQ_API woq_status woq_buffer_read(const woq_buffer* buffer, uint64_t offset, void* dst, uint64_t bytes) {
  return guarded([&] {
    need_handle(buffer, kBufferTag, "buffer");
    need(dst, "dst");
    check_range(buffer, offset, bytes);
    buffer->impl->impl().read(offset, dst, bytes);
  });
}

WOQ_API woq_status woq_matmul_buffers(woq_context* context, const woq_tensor* tensor, const woq_buffer* x_buffer,
                                      woq_dtype x_dtype, uint64_t m, woq_buffer* y_buffer, woq_dtype y_dtype) {
  return guarded([&] {
    need_handle(context, kContextTag, "context");
    need_handle(tensor, kTensorTag, "tensor");
    need_handle(x_buffer, kBufferTag, "x_buffer");
    need_handle(y_buffer, kBufferTag, "y_buffer");
    woq::DType xt = need_dtype(x_dtype, "x_dtype"), yt = need_dtype(y_dtype, "y_dtype");
    if (x_buffer == y_buffer) fail(Status::InvalidArgument, "x_buffer and y_buffer are the same buffer");
    if (x_buffer->impl->owner() != context->impl.get() || y_buffer->impl->owner() != context->impl.get())
      fail(Status::InvalidArgument, "a buffer belongs to a different context");
    const woq::Tensor& t = *tensor->impl;
    if (m == 0) fail(Status::Shape, "m = 0: X needs at least one row");
    uint64_t x_need, y_need;
    if (__builtin_mul_overflow(m, t.cols() * woq::dtype_size(xt), &x_need) ||
        __builtin_mul_overflow(m, t.rows() * woq::dtype_size(yt), &y_need))
      fail(Status::Shape, "m = " + std::to_string(m) + " rows of X or Y do not fit in memory");
    if (x_buffer->impl->impl().size() < x_need)
      fail(Status::Shape, "x_buffer holds " + std::to_string(x_buffer->impl->impl().size()) + " bytes; X[" +
                              std::to_string(m) + ", " + std::to_string(t.cols()) + "] needs " + std::to_string(x_need));
    if (y_buffer->impl->impl().size() < y_need)
      fail(Status::Shape, "y_buffer holds " + std::to_string(y_buffer->impl->impl().size()) + " bytes; Y[" +
                              std::to_string(m) + ", " + std::to_string(t.rows()) + "] needs " + std::to_string(y_need));
    woq::checked_matmul(*context->impl, t, x_buffer->impl->impl().data(), xt, m, y_buffer->impl->impl().data(), yt,
                        /*caller_memory=*/false);
  });
}

}  // extern "C"
