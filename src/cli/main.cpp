// woq: quantize safetensors weights into .woq files, inspect, verify and
// benchmark them. Uses only the public C API plus the safetensors importer.
#include <woq.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "cli/progress.h"
#include "cli/svg.h"
#include "fileformat/format.h"
#include "import/gguf.h"
#include "import/output_file.h"
#include "import/safetensors.h"
#include "import/weight_source.h"
#include "kernels/cpu/numeric.h"
#include "runtime/error.h"

namespace {

using woq::import::SafeTensor;
using woq::import::Safetensors;
using woq::import::WeightSource;

// Thrown to leave a command with a message and exit code 1.
struct CliError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void check(woq_status s, const std::string& what) {
  if (s != WOQ_OK) throw CliError(what + ": " + woq_status_string(s) + ": " + woq_last_error());
}

template <class T, void (*Free)(T*)>
struct Handle {
  T* p = nullptr;
  ~Handle() { Free(p); }
  T** out() { return &p; }
  T* get() const { return p; }
};
using File = Handle<woq_file, woq_file_close>;
using Context = Handle<woq_context, woq_context_destroy>;
using Tensor = Handle<woq_tensor, woq_tensor_destroy>;
using QMatrix = Handle<woq_qmatrix, woq_qmatrix_destroy>;
using Writer = Handle<woq_writer, woq_writer_destroy>;
using Buffer = Handle<woq_buffer, woq_buffer_destroy>;

// If name ends with suffix, stores the part before it in *base.
bool split_suffix(const std::string& name, const std::string& suffix, std::string* base) {
  if (name.size() <= suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
    return false;
  *base = name.substr(0, name.size() - suffix.size());
  return true;
}

bool float_dtype(const std::string& d) { return d == "F32" || d == "F16" || d == "BF16"; }

woq_dtype to_woq_dtype(const std::string& d) {
  return d == "F32" ? WOQ_DTYPE_F32 : d == "F16" ? WOQ_DTYPE_F16 : WOQ_DTYPE_BF16;
}

// A weight source's tensor as woq_quantize takes it: its own F32 / F16 /
// BF16 bytes (copied: the mapping may be unaligned), or a GGUF block
// type's values, dequantized, as F32.
struct NativeWeights {
  std::vector<uint8_t> bytes;
  woq_dtype dtype;
};
NativeWeights native_weights(const WeightSource& source, const SafeTensor& t) {
  if (float_dtype(t.dtype)) return {std::vector<uint8_t>(t.data, t.data + t.bytes), to_woq_dtype(t.dtype)};
  const std::vector<float> values = source.floats(t);
  NativeWeights n{std::vector<uint8_t>(values.size() * 4), WOQ_DTYPE_F32};
  std::memcpy(n.bytes.data(), values.data(), n.bytes.size());
  return n;
}

std::string human_bytes(double b) {
  char buf[64];
  const char* unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) b /= 1024, ++u;
  std::snprintf(buf, sizeof buf, u ? "%.2f %s" : "%.0f %s", b, unit[u]);
  return buf;
}

// The reference backend: the canonical layout, no repacking to read back.
void create_reference_context(Context& ctx) {
  woq_context_options co;
  woq_context_options_init(&co);
  co.backend = WOQ_BACKEND_CPU_REFERENCE;
  check(woq_context_create(&co, ctx.out()), "context");
}

// ---------------------------------------------------------------- quantize

struct QuantizeArgs {
  std::string in, out;
  uint32_t bits = 4;
  uint32_t group = 128;
  bool sym = false;
  std::string method = "rtn";
  bool act_order = false;
  bool act_order_groups = false;  // with act_order: groups formed in that order (input permutation)
  bool requantize = false;        // GGUF block-type matrices too, from their dequantized values
  std::string calibration;  // safetensors of activations, for gptq
};

// The calibration activations of weight "<base>.weight": the tensor named
// like the weight, or "<base>", or else the longest tensor name that is a
// dotted prefix of base (one input shared by several weights, e.g.
// "layer0.attn" for layer0.attn.q / .k / .v). Must be 2-D [S, cols].
const SafeTensor* find_calibration(const Safetensors& calib, const std::string& weight, uint64_t cols) {
  std::string base;
  split_suffix(weight, ".weight", &base);
  const SafeTensor* x = calib.find(weight);
  if (!x) x = calib.find(base);
  for (std::string prefix = base; !x && prefix.find('.') != std::string::npos;) {
    prefix.erase(prefix.rfind('.'));
    x = calib.find(prefix);
  }
  if (!x) throw CliError("calibration file has no activations for '" + weight + "' (looked for '" + weight + "', '" +
                         base + "' and its dotted prefixes)");
  if (x->shape.size() != 2 || x->shape[1] != cols || x->shape[0] == 0 || !float_dtype(x->dtype))
    throw CliError("calibration tensor '" + x->name + "' for '" + weight + "' must be a non-empty 2-D F32/F16/BF16 [S, " +
                   std::to_string(cols) + "] matrix");
  return x;
}

int cmd_quantize(const QuantizeArgs& a) {
  auto st = WeightSource::open(a.in);
  woq_quant_options q;
  woq_quant_options_init(&q);
  q.bits = a.bits;
  q.group_size = a.group;
  q.scheme = a.sym ? WOQ_SCHEME_SYMMETRIC : WOQ_SCHEME_ASYMMETRIC;
  q.method = a.method == "mse"    ? WOQ_METHOD_MSE
             : a.method == "hqq"  ? WOQ_METHOD_HQQ
             : a.method == "gptq" ? WOQ_METHOD_GPTQ
             : a.method == "awq"  ? WOQ_METHOD_AWQ
                                  : WOQ_METHOD_RTN;
  q.act_order = a.act_order_groups ? 2 : a.act_order ? 1 : 0;
  if (a.act_order && a.method != "gptq") throw CliError("--act-order applies to --method gptq only");
  if (a.act_order_groups && !a.act_order) throw CliError("--act-order-groups needs --act-order");
  const bool calibrated = a.method == "gptq" || a.method == "awq";
  if (calibrated != !a.calibration.empty())
    throw CliError(calibrated ? "--method " + a.method + " needs --calibration ACTIVATIONS.safetensors"
                              : "--calibration is used by --method gptq and awq only");
  std::unique_ptr<Safetensors> calib;
  if (!a.calibration.empty()) calib = Safetensors::open(a.calibration);

  std::vector<const SafeTensor*> weights;
  for (const SafeTensor& t : st->tensors()) {
    std::string base;
    const bool is_weight = split_suffix(t.name, ".weight", &base);
    if (is_weight && t.shape.size() == 2 && st->has_floats(t)) {
      const woq::import::GgufTensor* block = float_dtype(t.dtype) ? nullptr : st->gguf_tensor(t);  // a GGUF block type
      if (block && !a.requantize) {
        std::printf("skipping '%s' (%s, 2-D): already quantized; --requantize quantizes it from its dequantized values%s\n",
                    t.name.c_str(), t.dtype.c_str(),
                    woq::import::ggml_type_imports_exactly(block->type) ? ", `woq import` brings it in exactly" : "");
        continue;
      }
      if (block)
        std::printf("re-quantizing '%s' from its %s values: its own quantization error stays in them\n",
                    t.name.c_str(), t.dtype.c_str());
      weights.push_back(&t);
      continue;
    }
    const SafeTensor* owner = split_suffix(t.name, ".bias", &base) ? st->find(base + ".weight") : nullptr;
    if (owner && owner->shape.size() == 2 && t.shape.size() == 1 && t.shape[0] == owner->shape[0] &&
        st->has_floats(t))
      continue;  // stored with its weight
    std::printf("skipping '%s' (%s, %zu-D): only 2-D float *.weight tensors are quantized\n", t.name.c_str(),
                t.dtype.c_str(), t.shape.size());
  }
  if (weights.empty())
    throw CliError("'" + a.in + "' has no 2-D F32/F16/BF16 *.weight tensors to quantize" +
                   (st->is_gguf() ? std::string(" (a GGUF file's Q4_0, Q5_0 and Q8_0 matrices are brought in as they are by "
                                                "`woq import`; --requantize also quantizes Q4_0 .. Q8_0 and Q2_K .. Q6_K "
                                                "matrices from their dequantized values)")
                                  : std::string()));

  Writer w;
  check(woq_writer_create(a.out.c_str(), w.out()), "create '" + a.out + "'");
  std::string source = a.in;  // a file's or a directory's name
  while (source.size() > 1 && source.back() == '/') source.pop_back();
  check(woq_writer_set_metadata_string(w.get(), "model.source", source.substr(source.rfind('/') + 1).c_str()),
        "metadata");
  check(woq_writer_set_metadata_string(w.get(), "quant.method", a.method.c_str()), "metadata");
  if (a.act_order) check(woq_writer_set_metadata_int(w.get(), "quant.act_order", q.act_order), "metadata");
  check(woq_writer_set_metadata_int(w.get(), "quant.bits", a.bits), "metadata");
  check(woq_writer_set_metadata_int(w.get(), "quant.group_size", a.group), "metadata");
  check(woq_writer_set_metadata_string(w.get(), "quant.scheme", a.sym ? "symmetric" : "asymmetric"), "metadata");
  for (const auto& [key, value] : st->metadata()) {
    if (!woq::format::fits_string_metadata("source." + key, value)) {
      std::printf("leaving out metadata '%.60s': longer than (or with a NUL that) .woq metadata holds\n", key.c_str());
      continue;
    }
    check(woq_writer_set_metadata_string(w.get(), ("source." + key).c_str(), value.c_str()), "metadata");
  }

  woq::cli::Progress progress(weights.size(), "quantizing");
  double err2 = 0;
  for (const SafeTensor* t : weights) {
    const uint64_t rows = t->shape[0], cols = t->shape[1];
    const NativeWeights native = native_weights(*st, *t);
    QMatrix qm;
    std::vector<uint8_t> x;
    if (calib) {
      const SafeTensor* xt = find_calibration(*calib, t->name, cols);
      x.assign(xt->data, xt->data + xt->bytes);  // aligned copy in its dtype
      q.calibration = x.data();
      q.calibration_dtype = to_woq_dtype(xt->dtype);
      q.calibration_rows = xt->shape[0];
    }
    check(woq_quantize(native.bytes.data(), native.dtype, rows, cols, &q, qm.out()), "quantize '" + t->name + "'");
    std::string base;
    split_suffix(t->name, ".weight", &base);  // every entry of `weights` ends so
    const SafeTensor* b = st->find(base + ".bias");
    std::vector<float> bias;
    if (b && b->shape.size() == 1 && b->shape[0] == rows && st->has_floats(*b)) bias = st->floats(*b);
    check(woq_writer_add_tensor(w.get(), t->name.c_str(), qm.get(), bias.empty() ? nullptr : bias.data()),
          "write '" + t->name + "'");
    double rel;
    woq_qmatrix_stats(qm.get(), nullptr, &rel, nullptr);
    err2 += rel * rel;
    progress.step(t->name);
  }
  check(woq_writer_finish(w.get()), "finish '" + a.out + "'");
  progress.finish();
  std::printf("wrote %s: %zu tensors, %u-bit, group %s, %s, %s, mean rel. Frobenius error %.4g\n", a.out.c_str(),
              weights.size(), a.bits, a.group ? std::to_string(a.group).c_str() : "per-channel",
              a.sym ? "symmetric" : "asymmetric", a.method.c_str(), std::sqrt(err2 / weights.size()));
  return 0;
}

// ---------------------------------------------------------------- inspect

const char* dtype_name(woq_dtype d) { return d == WOQ_DTYPE_F32 ? "f32" : d == WOQ_DTYPE_F16 ? "f16" : "bf16"; }

// A GGUF file, for deciding how it comes into woq: each tensor with its
// ggml type and what `import` or `quantize` does with it.
int cmd_inspect_gguf(const std::string& path) {
  auto gguf = woq::import::GgufFile::open(path);
  const auto arch = gguf->strings().find("general.architecture");
  std::printf("%s: GGUF version %u, %zu tensors%s%s\n", path.c_str(), gguf->version(), gguf->tensors().size(),
              arch == gguf->strings().end() ? "" : ", architecture ", arch == gguf->strings().end() ? "" : arch->second.c_str());
  std::printf("\n%-60s %13s %8s %10s  %s\n", "tensor", "shape (NxK)", "type", "bytes", "in woq");
  std::map<std::string, uint64_t> counts;
  for (const woq::import::GgufTensor& t : gguf->tensors()) {
    const bool matrix = t.dims.size() == 2;
    std::string base;
    const bool weight = split_suffix(t.name, ".weight", &base);
    const woq::import::GgufTensor* owner = split_suffix(t.name, ".bias", &base) ? gguf->find(base + ".weight") : nullptr;
    const char* fate = !matrix ? (owner && owner->dims.size() == 2 ? "a bias: kept with its weight" : "not a matrix: skipped")
                       : woq::import::ggml_type_imports_exactly(t.type) ? "import: exact"
                       : !t.data || !woq::import::gguf_has_floats(t.type) ? "not decoded: skipped"
                       : !weight ? "not *.weight: skipped"
                       : woq::import::ggml_type_is_float(t.type) ? "quantize"
                                  : "quantize --requantize (from ggml's values)";
    ++counts[fate];
    std::string shape;
    for (size_t d = t.dims.size(); d-- > 0;) shape += std::to_string(t.dims[d]) + (d ? "x" : "");
    std::string name = t.name;
    if (name.size() > 60) name = "..." + name.substr(name.size() - 57);
    std::printf("%-60s %13s %8s %10s  %s\n", name.c_str(), shape.c_str(), woq::import::ggml_type_name(t.type).c_str(),
                t.data ? human_bytes(double(t.bytes)).c_str() : "?", fate);
  }
  std::printf("\n");
  for (const auto& [fate, count] : counts)
    std::printf("%llu tensors: %s\n", static_cast<unsigned long long>(count), fate.c_str());
  return 0;
}

int cmd_inspect(const std::string& path) {
  if (woq::import::looks_like_gguf(path)) return cmd_inspect_gguf(path);
  File f;
  check(woq_file_open(path.c_str(), f.out()), "open '" + path + "'");
  uint32_t major, minor;
  uint64_t count, md_count;
  check(woq_file_format_version(f.get(), &major, &minor), "version");
  check(woq_file_tensor_count(f.get(), &count), "tensor count");
  check(woq_file_metadata_count(f.get(), &md_count), "metadata count");
  FILE* fp = std::fopen(path.c_str(), "rb");
  long file_size = 0;
  if (fp) {
    std::fseek(fp, 0, SEEK_END);
    file_size = std::ftell(fp);
    std::fclose(fp);
  }
  std::printf("%s: .woq format %u.%u, %llu tensors, %s\n", path.c_str(), major, minor,
              static_cast<unsigned long long>(count), human_bytes(double(file_size)).c_str());
  std::printf("\n%-60s %13s %4s %5s %4s %5s %10s %6s %10s %10s %7s\n", "tensor", "shape (NxK)", "bits", "group", "sym",
              "src", "on disk", "bits/w", "max|err|", "rel.err", "SQNR dB");
  uint64_t params = 0, stored = 0;
  double weighted_bits = 0;
  for (uint64_t i = 0; i < count; ++i) {
    woq_tensor_info info;
    info.struct_size = sizeof info;
    check(woq_file_tensor_info(f.get(), i, &info), "tensor info");
    char shape[64];
    std::snprintf(shape, sizeof shape, "%llux%llu", static_cast<unsigned long long>(info.rows),
                  static_cast<unsigned long long>(info.cols));
    std::string name = info.name;
    if (name.size() > 60) name = "..." + name.substr(name.size() - 57);
    std::printf("%-60s %13s %4u %5u %4s %5s %10s %6.3f %10.4g %10.4g %7.2f%s%s%s\n", name.c_str(), shape, info.bits,
                info.group_size, info.scheme == WOQ_SCHEME_SYMMETRIC ? "yes" : "no", dtype_name(info.source_dtype),
                human_bytes(double(info.stored_bytes)).c_str(), info.bits_per_weight, info.max_abs_error,
                info.rel_frobenius_error, info.sqnr_db, info.has_bias ? "  +bias" : "",
                info.has_input_scales ? "  +input scales" : "", info.has_input_permutation ? "  +input permutation" : "");
    params += info.rows * info.cols;
    stored += info.stored_bytes;
    weighted_bits += info.bits_per_weight * double(info.rows * info.cols);
  }
  std::printf("\n%llu weights: fp32 %s, fp16 %s, .woq file %s (%.2fx smaller than fp32, %.2fx than fp16)\n",
              static_cast<unsigned long long>(params), human_bytes(4.0 * params).c_str(),
              human_bytes(2.0 * params).c_str(), human_bytes(double(file_size)).c_str(),
              4.0 * params / double(file_size), 2.0 * params / double(file_size));
  std::printf("effective bits per weight (codes + scales + zero-points): %.3f; stored chunks %s\n",
              params ? weighted_bits / double(params) : 0.0, human_bytes(double(stored)).c_str());
  if (md_count) std::printf("\nmetadata:\n");
  for (uint64_t i = 0; i < md_count; ++i) {
    const char* key;
    woq_metadata_type type;
    check(woq_file_metadata_key(f.get(), i, &key, &type), "metadata");
    if (type == WOQ_METADATA_STRING) {
      const char* v;
      check(woq_file_metadata_string(f.get(), key, &v, nullptr), "metadata");
      std::printf("  %s = \"%s\"\n", key, v);
    } else if (type == WOQ_METADATA_INT) {
      int64_t v;
      check(woq_file_metadata_int(f.get(), key, &v), "metadata");
      std::printf("  %s = %lld\n", key, static_cast<long long>(v));
    } else {
      double v;
      check(woq_file_metadata_float(f.get(), key, &v), "metadata");
      std::printf("  %s = %g\n", key, v);
    }
  }
  return 0;
}

// The picture for one tensor: needs the original weights (--source).
int cmd_inspect_svg(const std::string& path, const std::string& tensor, const std::string& source,
                    const std::string& svg_path) {
  if (source.empty()) throw CliError("--svg needs --source ORIGINAL (.safetensors or .gguf): the picture shows the original weights");
  File f;
  check(woq_file_open(path.c_str(), f.out()), "open '" + path + "'");
  woq_tensor_info info;
  info.struct_size = sizeof info;
  check(woq_file_tensor_info_by_name(f.get(), tensor.c_str(), &info), "tensor '" + tensor + "'");
  auto st = WeightSource::open(source);
  const SafeTensor* src = st->find(tensor);
  if (!src || src->shape.size() != 2 || src->shape[0] != info.rows || src->shape[1] != info.cols || !st->has_floats(*src))
    throw CliError("'" + source + "' has no 2-D float tensor '" + tensor + "' of the stored shape");
  Context ctx;
  create_reference_context(ctx);
  Tensor t;
  check(woq_tensor_load(ctx.get(), f.get(), info.name, t.out()), "load");
  float scale;
  int32_t zero;
  check(woq_tensor_group(ctx.get(), t.get(), 0, 0, &scale, &zero), "group");
  woq::cli::SvgPicture pic;
  pic.title = tensor + "  [" + std::to_string(info.rows) + " x " + std::to_string(info.cols) + "], stored at " +
              std::to_string(info.bits) + " bits, group " + std::to_string(info.group_size);
  pic.weights = st->floats(*src);
  for (int q = 0; q < (1 << info.bits); ++q) pic.levels.push_back(scale * float(q - zero));
  char label[160];
  std::snprintf(label, sizeof label, "the %d levels s(q - z) of row 0, group 0 (s = %.4g, z = %d)", 1 << info.bits,
                double(scale), zero);
  pic.levels_label = label;
  pic.stored_bits = int(info.bits);
  const NativeWeights native = native_weights(*st, *src);
  for (int bits = 8; bits >= 2; --bits) {
    woq_quant_options q;
    woq_quant_options_init(&q);
    q.bits = uint32_t(bits);
    q.group_size = info.group_size == info.cols ? 0 : info.group_size;
    q.scheme = info.scheme;
    QMatrix qm;
    check(woq_quantize(native.bytes.data(), native.dtype, info.rows, info.cols, &q, qm.out()), "re-quantize");
    double sqnr;
    woq_qmatrix_stats(qm.get(), nullptr, nullptr, &sqnr);
    pic.sqnr_bits.push_back(bits);
    pic.sqnr_db.push_back(sqnr);
  }
  const std::string svg = woq::cli::render_svg(pic);
  woq::import::OutputFile out(svg_path);
  out.write(svg.data(), svg.size());
  out.commit();
  std::printf("wrote %s: histogram of %zu weights, %zu levels, SQNR at 8..2 bits:", svg_path.c_str(), pic.weights.size(),
              pic.levels.size());
  for (size_t i = 0; i < pic.sqnr_db.size(); ++i) std::printf(" %d:%.1f", pic.sqnr_bits[i], pic.sqnr_db[i]);
  std::printf(" dB\n");
  return 0;
}

// ---------------------------------------------------------------- verify

int cmd_verify(const std::string& path) {
  File f;
  check(woq_file_open(path.c_str(), f.out()), "open '" + path + "'");
  check(woq_file_verify(f.get()), "verify '" + path + "'");
  uint64_t count;
  check(woq_file_tensor_count(f.get(), &count), "tensor count");
  std::printf("%s: OK (header, directory and every chunk of %llu tensors verified)\n", path.c_str(),
              static_cast<unsigned long long>(count));
  return 0;
}

// ---------------------------------------------------------------- export

// Writes every tensor's dequantized weights (and bias, as "<base>.bias") to
// a safetensors file, for checking in other tools.
int cmd_export(const std::string& in, const std::string& out, const std::string& dtype_name_arg) {
  woq_dtype dtype;
  std::string st_dtype;
  if (dtype_name_arg == "f16") dtype = WOQ_DTYPE_F16, st_dtype = "F16";
  else if (dtype_name_arg == "bf16") dtype = WOQ_DTYPE_BF16, st_dtype = "BF16";
  else if (dtype_name_arg == "f32") dtype = WOQ_DTYPE_F32, st_dtype = "F32";
  else throw CliError("--dtype must be f16, bf16 or f32, not '" + dtype_name_arg + "'");
  File f;
  check(woq_file_open(in.c_str(), f.out()), "open '" + in + "'");
  Context ctx;
  create_reference_context(ctx);
  uint64_t count;
  check(woq_file_tensor_count(f.get(), &count), "tensor count");
  std::vector<woq::import::SafeTensorOut> tensors;
  woq::cli::Progress progress(count, "exporting");
  for (uint64_t i = 0; i < count; ++i) {
    woq_tensor_info info;
    info.struct_size = sizeof info;
    check(woq_file_tensor_info(f.get(), i, &info), "tensor info");
    Tensor t;
    check(woq_tensor_load(ctx.get(), f.get(), info.name, t.out()), std::string("load '") + info.name + "'");
    woq::import::SafeTensorOut w{info.name, st_dtype, {info.rows, info.cols}, {}};
    w.bytes.resize(info.rows * info.cols * (dtype == WOQ_DTYPE_F32 ? 4 : 2));
    check(woq_dequantize(ctx.get(), t.get(), w.bytes.data(), dtype, w.bytes.size()), "dequantize");
    tensors.push_back(std::move(w));
    std::vector<float> bias(info.rows);
    int32_t has_bias = 0;
    check(woq_tensor_bias(ctx.get(), t.get(), bias.data(), bias.size() * 4, &has_bias), "bias");
    if (has_bias) {
      std::string base = info.name;
      split_suffix(info.name, ".weight", &base);
      woq::import::SafeTensorOut b{base + ".bias", "F32", {info.rows}, {}};
      b.bytes.resize(info.rows * 4);
      std::memcpy(b.bytes.data(), bias.data(), b.bytes.size());
      tensors.push_back(std::move(b));
    }
    progress.step(info.name);
  }
  progress.finish();
  std::map<std::string, std::string> metadata = {{"woq.exported_from", in.substr(in.rfind('/') + 1)}};
  woq::import::write_safetensors(out, tensors, metadata);
  std::printf("wrote %s: %zu tensors (dequantized weights as %s, biases as F32)\n", out.c_str(), tensors.size(),
              st_dtype.c_str());
  return 0;
}

// The .woq tensors as llama.cpp's Q4_0 / Q5_0 / Q8_0 blocks in a copy of a
// GGUF file (the template, e.g. the F16 file they were quantized from),
// which supplies everything else llama.cpp needs: metadata, tokenizer,
// norms, embeddings. Exact: each block holds the weights woq holds.
int cmd_export_gguf(const std::string& in, const std::string& out, const std::string& template_path) {
  using woq::import::GgmlType;
  if (template_path.empty())
    throw CliError("--format gguf needs --template MODEL.gguf: the GGUF file whose tensors the .woq tensors replace "
                   "(its metadata, tokenizer and other tensors are copied)");
  if (!woq::import::looks_like_gguf(template_path)) throw CliError("--template '" + template_path + "' is not a GGUF file");
  auto templ = woq::import::GgufFile::open(template_path);
  File f;
  check(woq_file_open(in.c_str(), f.out()), "open '" + in + "'");
  Context ctx;
  create_reference_context(ctx);
  uint64_t count;
  check(woq_file_tensor_count(f.get(), &count), "tensor count");
  std::map<std::string, woq::import::GgufReplacement> replace;
  std::set<GgmlType> types;
  woq::cli::Progress progress(count, "exporting");
  for (uint64_t i = 0; i < count; ++i) {
    woq_tensor_info info;
    info.struct_size = sizeof info;
    check(woq_file_tensor_info(f.get(), i, &info), "tensor info");
    const std::string name = info.name, what = "tensor '" + name + "'";
    const woq::import::GgufTensor* g = templ->find(name);
    if (!g) throw CliError("the template '" + template_path + "' has no tensor '" + name + "' for the .woq tensor to replace");
    if (g->dims != std::vector<uint64_t>{info.cols, info.rows})
      throw CliError(what + " is " + std::to_string(info.rows) + " x " + std::to_string(info.cols) +
                     " in the .woq file but not in the template (GGUF dimensions must be [" + std::to_string(info.cols) +
                     ", " + std::to_string(info.rows) + "])");
    if (info.bits != 4 && info.bits != 5 && info.bits != 8)
      throw CliError(what + " has " + std::to_string(info.bits) + "-bit codes; GGUF's Q4_0, Q5_0 and Q8_0 hold 4, 5 or 8");
    if (info.group_size != 32)
      throw CliError(what + " has groups of " + std::to_string(info.group_size) +
                     " inputs; GGUF's blocks are 32 (quantize with --group 32)");
    if (info.has_input_scales || info.has_input_permutation)
      throw CliError(what + " has " + (info.has_input_scales ? "AWQ input scales" : "an act-order input permutation") +
                     ", which GGUF's blocks cannot hold");
    // The template supplies every other tensor, biases included: the .woq
    // tensor's bias must be the one there.
    std::string base = name;
    split_suffix(name, ".weight", &base);
    const woq::import::GgufTensor* gb = templ->find(base + ".bias");
    if (info.has_bias) {
      Tensor t;
      check(woq_tensor_load(ctx.get(), f.get(), info.name, t.out()), "load '" + name + "'");
      std::vector<float> bias(info.rows);
      int32_t has_bias;
      check(woq_tensor_bias(ctx.get(), t.get(), bias.data(), bias.size() * 4, &has_bias), "bias");
      const std::vector<float> there = gb ? woq::import::gguf_floats(*gb) : std::vector<float>();
      if (there != bias)
        throw CliError(what + " has a bias that the template's '" + base + ".bias' " +
                       (gb ? "does not equal" : "does not hold (there is no such tensor)"));
    }
    const GgmlType type = info.bits == 4 ? GgmlType::Q4_0 : info.bits == 5 ? GgmlType::Q5_0 : GgmlType::Q8_0;
    types.insert(type);
    const uint64_t rows = info.rows, cols = info.cols;
    replace[name] = {type, [&, name, what, type, rows, cols](uint8_t* blocks) {
      Tensor t;
      check(woq_tensor_load(ctx.get(), f.get(), name.c_str(), t.out()), "load '" + name + "'");
      std::vector<float> w(rows * cols);
      check(woq_dequantize(ctx.get(), t.get(), w.data(), WOQ_DTYPE_F32, w.size() * 4), "dequantize '" + name + "'");
      const uint64_t groups = cols / 32, row_bytes = woq::import::ggml_tensor_bytes(uint32_t(type), {cols});
      std::vector<uint8_t> codes(cols);
      std::vector<uint16_t> scales(groups);
      std::vector<int32_t> zeros(groups);
      for (uint64_t r = 0; r < rows; ++r) {
        for (uint64_t j = 0; j < groups; ++j) {
          float scale;
          check(woq_tensor_group(ctx.get(), t.get(), r, j, &scale, &zeros[j]), "group of '" + name + "'");
          scales[j] = woq::kernels::float_to_half(scale);  // an fp16 value: exact
          // The codes back from w_hat = s (q - z), checked to give w_hat again.
          for (uint64_t c = r * cols + 32 * j, e = c + 32; c < e; ++c) {
            const long q = scale > 0 ? zeros[j] + std::lrint(w[c] / scale) : zeros[j];
            if (q < 0 || q > 255 || scale * float(q - zeros[j]) != w[c])
              throw CliError(what + ": weight " + std::to_string(c) + " is not its group's scale times an integer");
            codes[c - r * cols] = uint8_t(q);
          }
        }
        try {
          woq::import::encode_gguf_row(type, codes.data(), scales.data(), zeros.data(), cols, blocks + r * row_bytes,
                                       what + ", row " + std::to_string(r));
        } catch (const woq::Error& e) {
          throw CliError(std::string(e.what()) + " (tensors quantized with --sym --group 32 at 4, 5 or 8 bits always fit)");
        }
      }
      progress.step(name);
    }};
  }
  // llama.cpp's llama_ftype of a file that is mostly one of these types.
  const int64_t file_type = types.size() != 1                     ? -1
                            : *types.begin() == GgmlType::Q4_0 ? 2
                            : *types.begin() == GgmlType::Q8_0 ? 7
                                                               : 8;
  const uint64_t bytes = woq::import::write_gguf(out, *templ, replace, file_type);
  progress.finish();
  std::printf("wrote %s: %zu of the template's %zu tensors replaced by the .woq tensors (%s), %s\n", out.c_str(),
              replace.size(), templ->tensors().size(),
              [&] {
                std::string names;
                for (GgmlType t : types) names += (names.empty() ? "" : ", ") + woq::import::ggml_type_name(uint32_t(t));
                return names;
              }()
                  .c_str(),
              human_bytes(double(bytes)).c_str());
  return 0;
}

// ---------------------------------------------------------------- bench

struct BenchArgs {
  std::string file;
  std::string reference;
  std::string backend = "cpu";
  uint64_t m = 1;
  int threads = 0;
  double min_seconds = 0.2;
};

// ||a - b|| / ||b|| over n values.
double rel_error(const float* a, const std::vector<double>& b) {
  double e = 0, r = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    e += (a[i] - b[i]) * (a[i] - b[i]);
    r += b[i] * b[i];
  }
  return r > 0 ? std::sqrt(e / r) : std::sqrt(e);
}

// Y[m][n] = sum_k X[m][k] W[n][k] (+ bias) in float64.
std::vector<double> matmul_f64(const std::vector<float>& x, const std::vector<float>& w, const float* bias,
                               uint64_t m, uint64_t n, uint64_t k) {
  std::vector<double> y(m * n);
  for (uint64_t r = 0; r < m; ++r)
    for (uint64_t j = 0; j < n; ++j) {
      double acc = bias ? bias[j] : 0.0;
      for (uint64_t i = 0; i < k; ++i) acc += double(x[r * k + i]) * w[j * k + i];
      y[r * n + j] = acc;
    }
  return y;
}

// Y = X W^T for host X and Y, timed: woq_matmul on CPU contexts; on GPU
// contexts through woq_buffers, so that again() times the kernels and a
// synchronize, not woq_matmul's copies of host X and Y (X written once).
class HostMatmul {
 public:
  HostMatmul(woq_context* ctx, const woq_tensor* t, uint64_t m, uint64_t n, uint64_t k, bool on_gpu)
      : ctx_(ctx), t_(t), m_(m), n_(n), k_(k), on_gpu_(on_gpu) {
    if (!on_gpu_) return;
    check(woq_buffer_create(ctx_, m * k * 4, x_.out()), "X buffer");
    check(woq_buffer_create(ctx_, m * n * 4, y_.out()), "Y buffer");
  }
  void operator()(const float* x, float* y) {
    x_host_ = x;
    y_host_ = y;
    if (on_gpu_) check(woq_buffer_write(x_.get(), 0, x, m_ * k_ * 4), "X write");
    again();
    if (on_gpu_) check(woq_buffer_read(y_.get(), 0, y, m_ * n_ * 4), "Y read");
  }
  void again() {
    if (!on_gpu_) {
      check(woq_matmul(ctx_, t_, x_host_, WOQ_DTYPE_F32, m_, y_host_, WOQ_DTYPE_F32), "matmul");
      return;
    }
    check(woq_matmul_buffers(ctx_, t_, x_.get(), WOQ_DTYPE_F32, m_, y_.get(), WOQ_DTYPE_F32), "matmul");
    check(woq_context_synchronize(ctx_), "synchronize");
  }

 private:
  woq_context* ctx_;
  const woq_tensor* t_;
  uint64_t m_, n_, k_;
  bool on_gpu_;
  Buffer x_, y_;
  const float* x_host_ = nullptr;
  float* y_host_ = nullptr;
};

int cmd_bench(const BenchArgs& a) {
  File f;
  check(woq_file_open(a.file.c_str(), f.out()), "open '" + a.file + "'");
  std::unique_ptr<WeightSource> ref;
  if (!a.reference.empty()) ref = WeightSource::open(a.reference);
  woq_context_options co;
  woq_context_options_init(&co);
  if (a.backend == "cpu") co.backend = WOQ_BACKEND_CPU;
  else if (a.backend == "cpu-reference") co.backend = WOQ_BACKEND_CPU_REFERENCE;
  else if (a.backend == "cuda") co.backend = WOQ_BACKEND_CUDA;
  else throw CliError("unknown backend '" + a.backend + "' (cpu, cpu-reference, cuda)");
  co.threads = a.threads;
  Context ctx;
  check(woq_context_create(&co, ctx.out()), "create " + a.backend + " context");
  int32_t threads;
  const char* kernel = "";
  woq_context_info(ctx.get(), nullptr, &threads);
  woq_context_kernel(ctx.get(), &kernel);
  uint64_t count;
  check(woq_file_tensor_count(f.get(), &count), "tensor count");
  const bool on_gpu = co.backend == WOQ_BACKEND_CUDA;
  std::printf("backend %s (%s kernels), %d thread(s), M = %llu; time is the best of repeated runs (>= %.2fs per tensor)%s\n",
              a.backend.c_str(), kernel, threads, static_cast<unsigned long long>(a.m), a.min_seconds,
              on_gpu ? ", each a matmul and a synchronize on weights that may sit in the L2 (woq_cuda_bench rotates them)"
                     : "");
  std::printf("\n%-50s %12s %9s %9s %10s %11s%s\n", "tensor", "N x K", "load ms", "matmul us", "GB/s", "kernel err",
              ref ? "  err vs fp32 W" : "");
  std::mt19937 rng(1234);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  double total_time = 0, total_bytes = 0, sum_quant_err2 = 0, max_kernel_err = 0;
  uint64_t compared = 0, params = 0;
  for (uint64_t i = 0; i < count; ++i) {
    woq_tensor_info info;
    info.struct_size = sizeof info;
    check(woq_file_tensor_info(f.get(), i, &info), "tensor info");
    Tensor t;
    auto t0 = std::chrono::steady_clock::now();
    check(woq_tensor_load(ctx.get(), f.get(), info.name, t.out()), std::string("load '") + info.name + "'");
    double load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    const uint64_t n = info.rows, k = info.cols;
    std::vector<float> x(a.m * k), y(a.m * n);
    for (float& v : x) v = dist(rng);
    std::fill(y.begin(), y.end(), std::nanf(""));  // poison: every output must be written
    HostMatmul matmul(ctx.get(), t.get(), a.m, n, k, on_gpu);
    matmul(x.data(), y.data());
    double best = 1e30, spent = 0;
    for (int rep = 0; rep < 1000 && (rep < 3 || spent < a.min_seconds); ++rep) {
      auto s = std::chrono::steady_clock::now();
      matmul.again();
      double d = std::chrono::duration<double>(std::chrono::steady_clock::now() - s).count();
      best = std::min(best, d);
      spent += d;
    }
    // Kernel check: against float64 on the same dequantized weights.
    std::vector<float> w_hat(n * k);
    check(woq_dequantize(ctx.get(), t.get(), w_hat.data(), WOQ_DTYPE_F32, w_hat.size() * 4), "dequantize");
    // The stored bias: the output for an all-zero row of X.
    std::vector<float> zero_x(k, 0.0f), bias(n);
    check(woq_matmul(ctx.get(), t.get(), zero_x.data(), WOQ_DTYPE_F32, 1, bias.data(), WOQ_DTYPE_F32), "matmul");
    const float* bias_ptr = info.has_bias ? bias.data() : nullptr;
    const double kernel_err = rel_error(y.data(), matmul_f64(x, w_hat, bias_ptr, a.m, n, k));
    max_kernel_err = std::max(max_kernel_err, kernel_err);
    char quant_err[64] = "";
    if (ref) {
      const SafeTensor* src = ref->find(info.name);
      if (src && src->shape.size() == 2 && src->shape[0] == n && src->shape[1] == k && ref->has_floats(*src)) {
        double e = rel_error(y.data(), matmul_f64(x, ref->floats(*src), bias_ptr, a.m, n, k));
        std::snprintf(quant_err, sizeof quant_err, "  %14.4g", e);
        sum_quant_err2 += e * e;
        ++compared;
      }
    }
    const double bytes = double(info.raw_bytes - (info.has_bias ? 4 * n : 0));
    std::string name = info.name;
    if (name.size() > 50) name = "..." + name.substr(name.size() - 47);
    char shape[64];
    std::snprintf(shape, sizeof shape, "%llux%llu", static_cast<unsigned long long>(n), static_cast<unsigned long long>(k));
    std::printf("%-50s %12s %9.2f %9.1f %10.2f %11.3g%s\n", name.c_str(), shape, load_ms, best * 1e6,
                bytes / best / 1e9, kernel_err, quant_err);
    total_time += best;
    total_bytes += bytes;
    params += n * k;
  }
  std::printf("\nall %llu matrices: %.1f us per M=%llu pass, %.2f GB/s of packed weights, %llu weights\n",
              static_cast<unsigned long long>(count), total_time * 1e6, static_cast<unsigned long long>(a.m),
              total_bytes / total_time / 1e9, static_cast<unsigned long long>(params));
  std::printf("largest kernel error vs float64 on the dequantized weights: %.3g (must be < 1e-5)\n", max_kernel_err);
  if (compared)
    std::printf("RMS relative output error vs the original fp32 weights: %.4g over %llu matrices\n",
                std::sqrt(sum_quant_err2 / compared), static_cast<unsigned long long>(compared));
  if (max_kernel_err >= 1e-5) throw CliError("kernel error exceeds 1e-5");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"woq: weight-only quantization for linear layers"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("woq ") + woq_version_string());

  QuantizeArgs qa;
  auto* quantize = app.add_subcommand("quantize", "quantize the 2-D *.weight tensors of a safetensors checkpoint or a GGUF file");
  // Every safetensors argument may also be a sharded checkpoint (Safetensors::open).
  const std::string sharded = ", or a sharded checkpoint's .index.json, or a directory holding either";
  quantize->add_option("input", qa.in, "input .safetensors (F32, F16 or BF16 weights)" + sharded +
                           "; or a .gguf file (its F32, F16 and BF16 matrices)")
      ->required()
      ->check(CLI::ExistingPath);
  quantize->add_option("output", qa.out, "output .woq file")->required();
  quantize->add_option("--bits", qa.bits, "bits per weight (2..8)")->check(CLI::Range(2, 8));
  quantize->add_option("--group", qa.group, "inputs per group: 32, 64, 128, 256, or 0 for per-channel")
      ->check(CLI::IsMember({0, 32, 64, 128, 256}));
  quantize->add_flag("--sym", qa.sym, "symmetric (zero-point fixed at 2^(bits-1))");
  quantize->add_option("--method", qa.method,
                       "rtn (round to nearest), mse (per-group clipping search), hqq (half-quadratic grid "
                       "optimization), gptq or awq (these two need --calibration)")
      ->check(CLI::IsMember({"rtn", "mse", "hqq", "gptq", "awq"}));
  quantize->add_flag("--act-order", qa.act_order, "gptq: columns by decreasing Hessian diagonal (static groups)");
  quantize->add_flag("--act-order-groups", qa.act_order_groups,
                     "gptq with --act-order: groups formed in that order, stored with an input permutation (format 1.2)");
  quantize->add_flag("--requantize", qa.requantize,
                     "also quantize a GGUF file's Q4_0 .. Q8_0 and Q2_K .. Q6_K matrices, from their values as ggml "
                     "dequantizes them (their error and woq's add up)");
  quantize->add_option("--calibration", qa.calibration,
                       "safetensors of input activations X[S, K]: one per weight (named like it or its prefix) "
                       "or one per dotted prefix shared by several weights")
      ->check(CLI::ExistingPath);

  std::string inspect_file, verify_file, inspect_tensor, inspect_svg, inspect_source;
  auto* inspect = app.add_subcommand("inspect", "list tensors, sizes, bits per weight, errors and metadata");
  inspect->add_option("file", inspect_file, ".woq file, or a .gguf file (what import and quantize do with each tensor)")
      ->required();
  inspect->add_option("--tensor", inspect_tensor, "with --svg: the tensor to draw");
  inspect->add_option("--svg", inspect_svg, "write a picture of --tensor: weight histogram, levels, SQNR per bit width");
  inspect->add_option("--source", inspect_source, "with --svg: the original .safetensors or .gguf the file was quantized from");
  auto* verify = app.add_subcommand("verify", "check every checksum and that every chunk decodes");
  verify->add_option("file", verify_file, ".woq file")->required();

  std::string import_in, import_out, import_format = "auto";
  bool import_round_scales = false;
  auto* imp = app.add_subcommand("import", "convert a GPTQ / AWQ / compressed-tensors / GGUF / ONNX checkpoint to .woq (no re-quantization)");
  imp->add_option("checkpoint", import_in,
                  "quantized .safetensors" + sharded + " (quantize_config.json / config.json next to it are read); "
                  "or a .gguf file (its Q4_0, Q5_0 and Q8_0 matrices); or an .onnx model (its MatMulNBits weights)")
      ->required()
      ->check(CLI::ExistingPath);
  imp->add_option("output", import_out, "output .woq file")->required();
  imp->add_option("--format", import_format, "auto, gptq, gptq_v2, awq, compressed-tensors, gguf or onnx")
      ->check(CLI::IsMember({"auto", "gptq", "gptq_v2", "awq", "compressed-tensors", "gguf", "onnx"}));
  imp->add_flag("--round-scales", import_round_scales,
                "round scales that fp16 cannot hold exactly (fp32 ones) to the nearest fp16 instead of refusing the "
                "checkpoint; the report says how many and by how much");

  std::string export_in, export_out, export_dtype = "f16", export_format = "safetensors";
  auto* exp = app.add_subcommand("export", "write the dequantized weights (and biases) as safetensors, or the blocks as GGUF Q4_0 / Q5_0 / Q8_0");
  exp->add_option("file", export_in, ".woq file")->required();
  exp->add_option("output", export_out, "output file")->required();
  std::string export_template;
  exp->add_option("--format", export_format,
                  "safetensors (dequantized weights), or gguf: the stored blocks as llama.cpp's Q4_0 / Q5_0 / Q8_0 "
                  "in a copy of --template")
      ->check(CLI::IsMember({"safetensors", "gguf"}));
  exp->add_option("--template", export_template,
                  "with --format gguf: the GGUF file (e.g. the F16 model) whose tensors of those names are replaced")
      ->check(CLI::ExistingFile);
  auto* export_dtype_opt = exp->add_option("--dtype", export_dtype, "f16 (default), bf16 or f32")->check(CLI::IsMember({"f16", "bf16", "f32"}));

  BenchArgs ba;
  auto* bench = app.add_subcommand("bench", "time woq_matmul on every tensor of a .woq file");
  bench->add_option("file", ba.file, ".woq file")->required();
  bench->add_option("--m", ba.m, "rows of X (batch)")->check(CLI::Range(1, 1 << 16));
  bench->add_option("--backend", ba.backend, "cpu, cpu-reference or cuda");
  bench->add_option("--threads", ba.threads, "threads (0 = all CPUs)")->check(CLI::Range(0, 4096));
  bench->add_option("--reference", ba.reference, "original .safetensors or .gguf: also report error vs the float weights");
  bench->add_option("--min-seconds", ba.min_seconds, "minimum timing per tensor")->check(CLI::Range(0.0, 60.0));

  CLI11_PARSE(app, argc, argv);
  try {
    if (*quantize) return cmd_quantize(qa);
    if (*inspect && !inspect_svg.empty()) {
      if (inspect_tensor.empty()) throw CliError("--svg needs --tensor NAME");
      return cmd_inspect_svg(inspect_file, inspect_tensor, inspect_source, inspect_svg);
    }
    if (*inspect) return cmd_inspect(inspect_file);
    if (*verify) return cmd_verify(verify_file);
    if (*exp) {
      if (export_format == "gguf") {
        if (export_dtype_opt->count()) throw CliError("--dtype is for --format safetensors; GGUF gets the stored blocks");
        return cmd_export_gguf(export_in, export_out, export_template);
      }
      if (!export_template.empty()) throw CliError("--template is for --format gguf");
      if (export_out.size() >= 5 && export_out.compare(export_out.size() - 5, 5, ".gguf") == 0)
        throw CliError("'" + export_out + "' names a GGUF file; write one with --format gguf --template MODEL.gguf");
      return cmd_export(export_in, export_out, export_dtype);
    }
    if (*imp) {
      const char* report = nullptr;
      woq_import_options options;
      woq_import_options_init(&options);
      options.round_scales = import_round_scales ? 1 : 0;
      std::unique_ptr<woq::cli::Progress> progress;  // made at the first layer, when the total is known
      options.progress_user_data = &progress;
      options.progress = [](void* user, uint64_t done, uint64_t total, const char* layer) {
        auto& bar = *static_cast<std::unique_ptr<woq::cli::Progress>*>(user);
        if (!bar) bar = std::make_unique<woq::cli::Progress>(total, "importing");
        bar->step(layer);
        if (done == total) bar->finish();
      };
      check(woq_import_checkpoint_ex(import_in.c_str(), import_format.c_str(), import_out.c_str(), &options, &report),
            "import '" + import_in + "'");
      std::printf("wrote %s: %s\n", import_out.c_str(), report);
      return 0;
    }
    if (*bench) return cmd_bench(ba);
  } catch (const std::exception& e) {  // CliError, woq::Error from the readers and writers, and the rest
    std::fflush(stdout);  // what the command printed comes before why it stopped
    std::fprintf(stderr, "woq: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
