#include "import/checkpoint.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <nlohmann/json.hpp>

#include "import/gguf.h"
#include "import/onnx.h"
#include "import/safetensors.h"
#include "kernels/cpu/numeric.h"
#include "quant/packing.h"
#include "runtime/error.h"

namespace woq::import {
namespace {

using nlohmann::json;

// What the checkpoint's config says (any field may be missing).
struct Config {
  Flavor flavor = Flavor::Auto;
  int bits = 0;
  bool act_order = false;
  std::string source;
};

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

json read_json(const std::string& path) {
  std::ifstream f(path);
  if (!f) return json();
  try {
    return json::parse(f);
  } catch (const std::exception& e) {
    fail(Status::Format, "'" + path + "' is not valid JSON: " + e.what());
  }
}

// The typed fields of one JSON object of a config file: a missing or null
// field takes the fallback, one of another type is an error naming the
// file and the key.
class Fields {
 public:
  Fields(const json& object, std::string where) : object_(object), where_(std::move(where)) {
    if (!object_.is_object()) fail(Status::Format, where_ + " is not a JSON object");
  }
  const json* find(const char* key) const {
    const auto it = object_.find(key);
    return it == object_.end() || it->is_null() ? nullptr : &*it;
  }
  std::string text(const char* key, const std::string& fallback) const {
    const json* v = find(key);
    if (!v) return fallback;
    if (!v->is_string()) wrong(key, "a string");
    return v->get<std::string>();
  }
  bool flag(const char* key, bool fallback) const {
    const json* v = find(key);
    if (!v) return fallback;
    if (!v->is_boolean()) wrong(key, "true or false");
    return v->get<bool>();
  }
  int count(const char* key, int fallback) const {  // (JSON parses non-negative integers as unsigned)
    const json* v = find(key);
    if (!v) return fallback;
    if (!v->is_number_unsigned() || v->get<uint64_t>() > 65536) wrong(key, "an integer from 0 to 65536");
    return int(v->get<uint64_t>());
  }

 private:
  [[noreturn]] void wrong(const char* key, const char* what) const {
    fail(Status::Format, where_ + ": \"" + key + "\" is " + object_.at(key).dump() + ", expected " + what);
  }
  const json& object_;
  std::string where_;
};

// AutoGPTQ's fields, in quantize_config.json or config.json alike.
void read_gptq_fields(const Fields& f, Config& c) {
  c.flavor = f.text("checkpoint_format", "gptq") == "gptq_v2" ? Flavor::GptqV2 : Flavor::GptqV1;
  c.bits = f.count("bits", 0);
  c.act_order = f.flag("desc_act", false);
}

Config read_config(const std::string& checkpoint) {
  const std::string dir = checkpoint.find('/') == std::string::npos ? "." : checkpoint.substr(0, checkpoint.rfind('/'));
  Config c;
  const std::string quantize_config = dir + "/quantize_config.json";
  const json q = read_json(quantize_config);
  if (!q.is_null()) {
    const Fields f(q, "'" + quantize_config + "'");
    c.source = "quantize_config.json";
    read_gptq_fields(f, c);
    return c;
  }
  const std::string config = dir + "/config.json";
  const json cfg = read_json(config);
  if (!cfg.is_object() || !cfg.contains("quantization_config")) return c;
  const Fields f(cfg["quantization_config"], "'" + config + "' quantization_config");
  c.source = "config.json quantization_config";
  const std::string method = f.text("quant_method", "");
  if (method == "gptq") {
    read_gptq_fields(f, c);
  } else if (method == "awq") {
    c.flavor = Flavor::Awq;
    c.bits = f.count("bits", f.count("w_bit", 0));
  } else if (method == "compressed-tensors") {
    c.flavor = Flavor::CompressedTensors;
  }
  return c;
}

// Element i of an integer tensor of any width, as int64 (mmap: unaligned).
int64_t int_at(const SafeTensor& t, uint64_t i) {
  t.check_index(i);
  if (t.dtype == "I32" || t.dtype == "U32") {
    int32_t v;
    std::memcpy(&v, t.data + 4 * i, 4);
    return t.dtype == "U32" ? int64_t(uint32_t(v)) : v;
  }
  if (t.dtype == "I64") {
    int64_t v;
    std::memcpy(&v, t.data + 8 * i, 8);
    return v;
  }
  if (t.dtype == "I8") return int8_t(t.data[i]);
  if (t.dtype == "U8") return t.data[i];
  if (t.dtype == "I16") {
    int16_t v;
    std::memcpy(&v, t.data + 2 * i, 2);
    return v;
  }
  fail(Status::Format, "tensor '" + t.name + "' has dtype " + t.dtype + ", expected an integer type");
}

uint32_t word_at(const SafeTensor& t, uint64_t i) { return uint32_t(int_at(t, i)); }

// woq stores fp16 scales. A scale must convert exactly, or the import would
// change the weights, unless the caller asked for rounding: then it becomes
// the nearest fp16 and the change is counted (ImportResult).
class Fp16Scales {
 public:
  explicit Fp16Scales(bool round) : round_(round) {}
  uint16_t operator()(double v, uint64_t i, const std::string& tensor) {
    const uint16_t h = kernels::float_to_half(float(v));
    const double got = double(kernels::half_to_float(h));
    ++read;
    if (got == v && std::isfinite(v)) return h;
    const std::string where = "scale " + std::to_string(v) + " at index " + std::to_string(i) + " of '" + tensor + "'";
    if (!std::isfinite(v) || !std::isfinite(got) || got == 0)
      fail(Status::Unsupported, where + (!std::isfinite(v) ? " is not finite (woq keeps finite fp16 scales)"
                                         : got == 0        ? " is below fp16's range (it would round to zero)"
                                                           : " is beyond fp16's range"));
    if (!round_)
      fail(Status::Unsupported, where + " is not exactly representable in fp16 (rounding it would change the "
                                        "weights; `woq import --round-scales` allows that)");
    ++rounded;
    largest_change = std::max(largest_change, std::fabs(got - v) / std::fabs(v));
    return h;
  }
  uint16_t operator()(const SafeTensor& t, uint64_t i) { return (*this)(t.float_at(i), i, t.name); }
  uint64_t read = 0, rounded = 0;
  double largest_change = 0;

 private:
  bool round_;
};

const SafeTensor& need(const Safetensors& f, const std::string& name) {
  const SafeTensor* t = f.find(name);
  if (!t) fail(Status::Format, "checkpoint lacks tensor '" + name + "'");
  return *t;
}

void need_shape(const SafeTensor& t, std::vector<uint64_t> shape) {
  if (t.shape != shape) {
    std::string want, got;
    for (uint64_t d : shape) want += (want.empty() ? "" : ", ") + std::to_string(d);
    for (uint64_t d : t.shape) got += (got.empty() ? "" : ", ") + std::to_string(d);
    fail(Status::Format, "tensor '" + t.name + "' has shape [" + got + "], expected [" + want + "]");
  }
}

// The stored input order that makes each group of an act-order g_idx (the
// group of every model input) a run of `group` consecutive inputs: stored
// input i is model input order[i], in increasing model order within a group.
// Empty when g_idx is already the plain k / group map. A g_idx whose groups
// do not all hold `group` inputs cannot be stored and is refused.
// g_idx(i) is the group of model input i.
template <class GroupOf>
std::vector<uint32_t> group_order(GroupOf g_idx, const std::string& g_idx_name, uint64_t k, uint32_t group,
                                  const std::string& layer) {
  const uint64_t groups = k / group;
  std::vector<uint64_t> next(groups);
  for (uint64_t i = 0; i < k; ++i) {
    const int64_t g = g_idx(i);
    if (g < 0 || uint64_t(g) >= groups)
      fail(Status::Format, "layer '" + layer + "': " + g_idx_name + "[" + std::to_string(i) + "] = " +
                               std::to_string(g) + " is not a group in 0.." + std::to_string(groups - 1));
    ++next[g];
  }
  bool plain = true;
  for (uint64_t g = 0; g < groups; ++g) {
    if (next[g] != group)
      fail(Status::Unsupported, "layer '" + layer + "': " + g_idx_name + " puts " + std::to_string(next[g]) +
                                    " inputs in group " + std::to_string(g) + ", not " + std::to_string(group) +
                                    ": groups of unequal size cannot be stored");
    next[g] = g * group;
  }
  std::vector<uint32_t> order(k);
  for (uint64_t i = 0; i < k; ++i) {
    const uint64_t g = uint64_t(g_idx(i));
    plain = plain && g == i / group;
    order[next[g]++] = uint32_t(i);
  }
  if (plain) order.clear();
  return order;
}
std::vector<uint32_t> group_order(const SafeTensor& g_idx, uint64_t k, uint32_t group, const std::string& layer) {
  return group_order([&](uint64_t i) { return int_at(g_idx, i); }, g_idx.name, k, group, layer);
}

// "<prefix>.bias" as fp32 when the checkpoint has it, else empty.
std::vector<float> bias_of(const Safetensors& f, const std::string& prefix, uint64_t n_rows) {
  const SafeTensor* b = f.find(prefix + ".bias");
  if (!b) return {};
  need_shape(*b, {n_rows});
  return b->to_f32();
}

// Shared tail of every flavour: fill a canonical matrix from q(n, k),
// zero(n, j) and scale bits(n, j), with `bias` (empty or n_rows). With an
// input order (act-order), stored input i takes the code of model input
// order[i].
template <class Q, class Z, class S>
QuantizedMatrix assemble(std::vector<float> bias, const std::string& prefix, uint64_t n_rows, uint64_t k_cols,
                         uint32_t bits, uint32_t group, Method method, Q code, Z zero, S scale,
                         std::vector<uint32_t> order = {}) {
  if (n_rows == 0 || k_cols == 0 || group == 0 || k_cols % group != 0)
    fail(Status::Format, "layer '" + prefix + "': group size " + std::to_string(group) + " does not divide " +
                             std::to_string(k_cols) + " inputs");
  QuantizedMatrix m;
  m.rows = n_rows;
  m.cols = k_cols;
  m.bits = bits;
  m.group_size = group;
  m.method = method;
  m.source_dtype = DType::F16;
  const uint64_t groups = k_cols / group;
  const uint32_t qmax = (1u << bits) - 1;
  m.codes.assign(n_rows * m.words_per_row(), 0);
  m.scales.resize(n_rows * groups);
  m.zeros.resize(n_rows * groups);
  std::vector<uint8_t> row(k_cols);
  bool symmetric = true;
  for (uint64_t n = 0; n < n_rows; ++n) {
    if (order.empty())
      for (uint64_t k = 0; k < k_cols; ++k) row[k] = uint8_t(code(n, k));
    else
      for (uint64_t k = 0; k < k_cols; ++k) row[k] = uint8_t(code(n, order[k]));
    pack_row(row.data(), k_cols, bits, m.codes.data() + n * m.words_per_row());
    for (uint64_t j = 0; j < groups; ++j) {
      const int64_t z = zero(n, j);
      if (z < 0 || z > int64_t(qmax))
        fail(Status::Unsupported, "layer '" + prefix + "' row " + std::to_string(n) + " group " + std::to_string(j) +
                                      ": zero-point " + std::to_string(z) + " does not fit " + std::to_string(bits) +
                                      " bits");
      m.zeros[n * groups + j] = uint8_t(z);
      m.scales[n * groups + j] = scale(n, j);
      symmetric = symmetric && z == int64_t(1u << (bits - 1));
    }
  }
  m.scheme = symmetric ? Scheme::Symmetric : Scheme::Asymmetric;
  const double unknown = std::numeric_limits<double>::quiet_NaN();  // no source weights to compare with
  m.stats = {unknown, unknown, unknown};
  m.bias = std::move(bias);
  m.input_permutation = std::move(order);
  validate_quantized(m, prefix.c_str());
  return m;
}

// AutoGPTQ: qweight [K*b/32, N] packed along K; qzeros [G, N*b/32] packed
// along N (v1 stores zero - 1); scales [G, N]; g_idx [K].
QuantizedMatrix import_gptq(const Safetensors& f, const std::string& p, const Config& c, bool v1, Fp16Scales& scales) {
  const SafeTensor& qw = need(f, p + ".qweight");
  const SafeTensor& qz = need(f, p + ".qzeros");
  const SafeTensor& sc = need(f, p + ".scales");
  const SafeTensor* gi = f.find(p + ".g_idx");
  if (qw.shape.size() != 2 || sc.shape.size() != 2) fail(Status::Format, "layer '" + p + "': qweight and scales must be 2-D");
  const uint64_t n_rows = qw.shape[1];
  const uint64_t k_cols = gi ? gi->elements() : 0;
  const uint32_t bits = c.bits ? uint32_t(c.bits) : (k_cols ? uint32_t(qw.shape[0] * 32 / k_cols) : 0);
  if (bits != 2 && bits != 4 && bits != 8)
    fail(Status::Unsupported, "layer '" + p + "': " + std::to_string(bits) +
                                  "-bit GPTQ packing is not supported (2, 4 and 8 are)");
  const uint64_t per_word = 32 / bits, k = gi ? k_cols : qw.shape[0] * per_word;
  if (k == 0) fail(Status::Format, "layer '" + p + "' has no inputs: " + (gi ? "g_idx is empty" : "qweight has no rows"));
  if (k % per_word != 0)
    fail(Status::Format, "layer '" + p + "': " + std::to_string(k) + " inputs" + (gi ? " (g_idx's length)" : "") +
                             " do not fill whole int32 words of " + std::to_string(bits) + "-bit codes");
  if (gi) need_shape(*gi, {k});
  need_shape(qw, {k / per_word, n_rows});
  const uint64_t groups = sc.shape[0];
  if (groups == 0 || k % groups != 0) fail(Status::Format, "layer '" + p + "': scales has no whole number of groups");
  need_shape(sc, {groups, n_rows});
  need_shape(qz, {groups, (n_rows + per_word - 1) / per_word});
  const uint32_t group = uint32_t(k / groups);
  std::vector<uint32_t> order = gi ? group_order(*gi, k, group, p) : std::vector<uint32_t>{};
  const uint32_t mask = (1u << bits) - 1;
  return assemble(
      bias_of(f, p, n_rows), p, n_rows, k, bits, group, Method::Gptq,
      [&](uint64_t n, uint64_t kk) { return (word_at(qw, (kk / per_word) * n_rows + n) >> (bits * (kk % per_word))) & mask; },
      [&](uint64_t n, uint64_t j) {
        const int64_t stored = (word_at(qz, j * qz.shape[1] + n / per_word) >> (bits * (n % per_word))) & mask;
        return v1 ? stored + 1 : stored;
      },
      [&](uint64_t n, uint64_t j) { return scales(sc, j * n_rows + n); }, std::move(order));
}

// AutoAWQ GEMM: qweight [K, N/8] and qzeros [G, N/8] packed along N with
// nibble order 0,2,4,6,1,3,5,7; scales [G, N].
QuantizedMatrix import_awq(const Safetensors& f, const std::string& p, const Config& c, Fp16Scales& scales) {
  const SafeTensor& qw = need(f, p + ".qweight");
  const SafeTensor& qz = need(f, p + ".qzeros");
  const SafeTensor& sc = need(f, p + ".scales");
  if (c.bits && c.bits != 4) fail(Status::Unsupported, "layer '" + p + "': AWQ GEMM packing is 4-bit only");
  if (qw.shape.size() != 2 || sc.shape.size() != 2) fail(Status::Format, "layer '" + p + "': qweight and scales must be 2-D");
  const uint64_t k = qw.shape[0], n_rows = sc.shape[1], groups = sc.shape[0];
  if (groups == 0 || k % groups != 0 || n_rows == 0)
    fail(Status::Format, "layer '" + p + "': scales has no whole number of groups");
  need_shape(qw, {k, (n_rows + 7) / 8});
  need_shape(qz, {groups, (n_rows + 7) / 8});
  // Output n sits in nibble position kPosition[n % 8] of its word.
  static constexpr uint32_t kPosition[8] = {0, 4, 1, 5, 2, 6, 3, 7};
  const uint64_t words = qw.shape[1];
  return assemble(
      bias_of(f, p, n_rows), p, n_rows, k, 4, uint32_t(k / groups), Method::Awq,
      [&](uint64_t n, uint64_t kk) { return (word_at(qw, kk * words + n / 8) >> (4 * kPosition[n % 8])) & 15u; },
      [&](uint64_t n, uint64_t j) { return int64_t((word_at(qz, j * words + n / 8) >> (4 * kPosition[n % 8])) & 15u); },
      [&](uint64_t n, uint64_t j) { return scales(sc, j * n_rows + n); });
}

// compressed-tensors pack-quantized: weight_packed [N, K*b/32] packed along
// K, values offset by 2^(b-1) to unsigned; weight_scale [N, G];
// weight_zero_point (signed) [N, G], or packed along N as I32 [N*b/32, G];
// weight_shape [2] = (N, K).
QuantizedMatrix import_compressed(const Safetensors& f, const std::string& p, Fp16Scales& scales) {
  const SafeTensor& wp = need(f, p + ".weight_packed");
  const SafeTensor& sc = need(f, p + ".weight_scale");
  const SafeTensor& ws = need(f, p + ".weight_shape");
  const SafeTensor* zp = f.find(p + ".weight_zero_point");
  if (ws.elements() != 2 || wp.shape.size() != 2 || sc.shape.size() != 2)
    fail(Status::Format, "layer '" + p + "': weight_shape must hold 2 values; weight_packed and weight_scale must be 2-D");
  const uint64_t n_rows = uint64_t(int_at(ws, 0)), k = uint64_t(int_at(ws, 1));
  if (n_rows == 0 || k == 0 || wp.shape[0] != n_rows || wp.shape[1] == 0)
    fail(Status::Format, "layer '" + p + "': weight_packed does not match weight_shape");
  const uint32_t bits = uint32_t(wp.shape[1] * 32 / k);
  if ((bits != 2 && bits != 4 && bits != 8) || wp.shape[1] * 32 / bits != k)
    fail(Status::Unsupported, "layer '" + p + "': packing of " + std::to_string(wp.shape[1]) + " words for " +
                                  std::to_string(k) + " inputs is not 2, 4 or 8 bits");
  const uint64_t per_word = 32 / bits, groups = sc.shape[1];
  if (groups == 0 || k % groups != 0) fail(Status::Format, "layer '" + p + "': weight_scale has no whole number of groups");
  need_shape(sc, {n_rows, groups});
  const int64_t offset = int64_t(1) << (bits - 1);
  const uint32_t mask = (1u << bits) - 1;
  const bool packed_zeros = zp && (zp->dtype == "I32" || zp->dtype == "U32");
  if (zp) need_shape(*zp, packed_zeros ? std::vector<uint64_t>{(n_rows + per_word - 1) / per_word, groups}
                                       : std::vector<uint64_t>{n_rows, groups});
  // actorder "group" stores the group of every input (as GPTQ's g_idx).
  const SafeTensor* gi = f.find(p + ".weight_g_idx");
  if (gi) need_shape(*gi, {k});
  std::vector<uint32_t> order = gi ? group_order(*gi, k, uint32_t(k / groups), p) : std::vector<uint32_t>{};
  return assemble(
      bias_of(f, p, n_rows), p, n_rows, k, bits, uint32_t(k / groups), Method::Rtn,
      [&](uint64_t n, uint64_t kk) { return (word_at(wp, n * wp.shape[1] + kk / per_word) >> (bits * (kk % per_word))) & mask; },
      [&](uint64_t n, uint64_t j) -> int64_t {
        if (!zp) return offset;
        if (!packed_zeros) return int_at(*zp, n * groups + j) + offset;
        // Packed zero-points are stored offset to unsigned like the weights.
        return int64_t((word_at(*zp, (n / per_word) * groups + j) >> (bits * (n % per_word))) & mask);
      },
      [&](uint64_t n, uint64_t j) { return scales(sc, n * groups + j); }, std::move(order));
}

// llama.cpp's Q4_0, Q5_0 and Q8_0 matrices are blocks of 32 inputs, each
// with an fp16 scale d and codes q: w = d (q - 2^(b-1)) for Q4_0 / Q5_0
// (unsigned q), w = d q for Q8_0 (signed q). That is woq's group of 32 with
// scale d and zero-point 2^(b-1) (Q8_0: code q + 128). llama.cpp's quantizer
// gives d the sign of the block's largest weight, and woq's scales are
// >= 0, so a block with a negative d is stored with -d and its codes and
// zero-point mirrored (c -> 2^b - 1 - c): the same weights.
QuantizedMatrix import_gguf_matrix(const GgufFile& f, const GgufTensor& t) {
  const auto type = GgmlType(t.type);
  const uint32_t bits = type == GgmlType::Q4_0 ? 4 : type == GgmlType::Q5_0 ? 5 : 8;
  const uint64_t block_bytes = type == GgmlType::Q4_0 ? 18 : type == GgmlType::Q5_0 ? 22 : 34;
  const uint64_t k = t.dims[0], n = t.dims[1], blocks = k / 32;
  const uint32_t qmax = (1u << bits) - 1, middle = 1u << (bits - 1);
  const auto block = [&](uint64_t row, uint64_t j) { return t.data + (row * blocks + j) * block_bytes; };
  const auto d_bits = [&](uint64_t row, uint64_t j) {
    uint16_t h;
    std::memcpy(&h, block(row, j), 2);
    return h;
  };
  const auto code = [&](uint64_t row, uint64_t kk) -> uint32_t {
    const uint8_t* b = block(row, kk / 32);
    const uint32_t i = kk % 32;
    uint32_t q;
    if (type == GgmlType::Q8_0) {
      q = uint32_t(int32_t(int8_t(b[2 + i])) + 128);
    } else {
      const uint8_t* nibbles = b + (type == GgmlType::Q4_0 ? 2 : 6);  // Q5_0: after d and 32 high bits
      q = i < 16 ? nibbles[i] & 15u : nibbles[i - 16] >> 4;
      if (type == GgmlType::Q5_0) {
        uint32_t high;
        std::memcpy(&high, b + 2, 4);
        q |= ((high >> i) & 1u) << 4;
      }
    }
    return d_bits(row, kk / 32) & 0x8000 ? qmax - q : q;
  };
  std::string base = t.name;
  if (ends_with(base, ".weight")) base.erase(base.size() - 7);
  std::vector<float> bias;
  if (const GgufTensor* b = f.find(base + ".bias")) {
    if (b->dims != std::vector<uint64_t>{n})
      fail(Status::Format, "tensor '" + b->name + "' does not have the " + std::to_string(n) + " entries of '" + t.name + "'");
    bias = gguf_floats(*b);
  }
  return assemble(
      std::move(bias), t.name, n, k, bits, 32, Method::Rtn, code,
      [&](uint64_t row, uint64_t j) -> int64_t { return d_bits(row, j) & 0x8000 ? qmax - middle : middle; },
      [&](uint64_t row, uint64_t j) { return uint16_t(d_bits(row, j) & 0x7fff); });
}

// Hands each converted layer to ImportOptions::on_layer and counts it.
class LayerSink {
 public:
  LayerSink(ImportResult& result, const ImportOptions& options, size_t total)
      : result_(result), options_(options), total_(total) {}
  void operator()(ImportedLayer&& layer) {
    options_.on_layer(std::move(layer), result_.layer_count, total_);
    ++result_.layer_count;
  }

 private:
  ImportResult& result_;
  const ImportOptions& options_;
  size_t total_;
};

ImportResult import_gguf(const std::string& path, const ImportOptions& options) {
  auto file = GgufFile::open(path);
  ImportResult r;
  r.flavor = Flavor::Gguf;
  r.how = "GGUF version " + std::to_string(file->version());
  r.metadata = file->strings();
  const auto arch = file->strings().find("general.architecture");
  if (arch != file->strings().end()) r.how += ", architecture " + arch->second;
  std::set<std::string> used;
  std::map<std::string, int> others;  // "<type>" or "<type> <d>-D" -> count, for the error below
  std::vector<const GgufTensor*> matrices;
  for (const GgufTensor& t : file->tensors()) {
    if (!ggml_type_imports_exactly(t.type) || t.dims.size() != 2) {
      if (t.dims.size() >= 2) ++others[ggml_type_name(t.type) + (t.dims.size() == 2 ? "" : " " + std::to_string(t.dims.size()) + "-D")];
      continue;
    }
    matrices.push_back(&t);
    used.insert(t.name);
    if (ends_with(t.name, ".weight")) used.insert(t.name.substr(0, t.name.size() - 7) + ".bias");
  }
  if (matrices.empty()) {
    std::string held;
    for (const auto& [what, count] : others) held += (held.empty() ? "" : ", ") + std::to_string(count) + " " + what;
    fail(Status::Unsupported, "'" + path + "' has no 2-D Q4_0, Q5_0 or Q8_0 tensors, the GGUF types that woq imports "
                              "exactly (its matrices: " + (held.empty() ? "none" : held) +
                              "); K-quants and the others do not map onto a scale and integer zero-point per group");
  }
  for (const GgufTensor& t : file->tensors())
    if (!used.count(t.name)) r.skipped.push_back(t.name + " (" + ggml_type_name(t.type) + ")");
  LayerSink sink(r, options, matrices.size());
  for (const GgufTensor* t : matrices) sink({t->name, import_gguf_matrix(*file, *t)});
  return r;
}

// ONNX Runtime's MatMulNBits (domain com.microsoft): Y = A B^T with B
// uint8 [N, blocks, block_size * bits / 8], each block's codes packed
// LSB first (4-bit: input 2i in the low nibble of byte i); scales [N *
// blocks] of A's type; zero_points uint8 [N, ceil(blocks * bits / 8)]
// packed the same way, or of A's type, else 2^(bits-1); g_idx int32 [K],
// the block of every input (act-order); bias [N]. w = scale (q - zero).
// ONNX Runtime's symmetric quantizer gives a scale the sign of its
// block's largest weight (as llama.cpp does); woq's scales are >= 0, so
// a block with a negative scale is stored with its codes and zero-point
// mirrored (c -> 2^b - 1 - c): the same weights.
QuantizedMatrix import_matmul_nbits(const OnnxModel& model, const OnnxNode& node, const std::string& layer,
                                    Fp16Scales& scales) {
  const std::string where = "MatMulNBits node '" + node.name + "'";
  const auto attribute = [&](const char* key, int64_t fallback) {
    const auto it = node.ints.find(key);
    if (it == node.ints.end() && fallback < 0) fail(Status::Format, where + " lacks attribute " + key);
    return it == node.ints.end() ? fallback : it->second;
  };
  const int64_t k = attribute("K", -1), n_rows = attribute("N", -1), bits = attribute("bits", 4),
                block = attribute("block_size", -1);
  if (k <= 0 || n_rows <= 0 || k > (int64_t(1) << 31) || n_rows > (int64_t(1) << 31) ||
      uint64_t(k) * uint64_t(n_rows) > (uint64_t(1) << 48))
    fail(Status::Format, where + ": K = " + std::to_string(k) + " and N = " + std::to_string(n_rows) +
                             " must be in 1..2^31, with at most 2^48 weights");
  if (bits != 2 && bits != 4 && bits != 8)
    fail(Status::Unsupported, where + ": " + std::to_string(bits) + "-bit MatMulNBits is not read (2, 4 and 8 are)");
  if (block < 16 || block > 4096 || (block & (block - 1)))
    fail(Status::Format, where + ": block_size " + std::to_string(block) + " is not a power of two from 16");
  const uint64_t blocks = uint64_t((k + block - 1) / block), blob = uint64_t(block * bits / 8);
  // One padded block covering all of K is a per-channel group; else the
  // blocks must tile K as woq's groups do.
  const uint32_t group = blocks == 1 ? uint32_t(k) : uint32_t(block);
  if (blocks > 1 && k % block != 0)
    fail(Status::Unsupported, where + ": K = " + std::to_string(k) + " is not a multiple of block_size " +
                                  std::to_string(block) + " (woq's groups tile the inputs)");
  const auto input = [&](size_t i, const char* what) -> const OnnxTensor* {
    if (i >= node.inputs.size() || node.inputs[i].empty()) return nullptr;
    const OnnxTensor* t = model.find(node.inputs[i]);
    if (!t) fail(Status::Unsupported, where + ": its " + what + " '" + node.inputs[i] + "' is not an initializer");
    return t;
  };
  const OnnxTensor* b = input(1, "weights B");
  const OnnxTensor* sc = input(2, "scales");
  const OnnxTensor* zp = input(3, "zero_points");
  const OnnxTensor* gi = input(4, "g_idx");
  const OnnxTensor* bias = input(5, "bias");
  if (!b || !sc) fail(Status::Format, where + " lacks its weights B or scales");
  const auto need = [&](const OnnxTensor& t, uint64_t elements, bool floats, const char* what) {
    if (t.elements != elements || !t.data || (floats ? !t.is_float() : OnnxType(t.type) != OnnxType::Uint8 &&
                                                                          OnnxType(t.type) != OnnxType::Int32))
      fail(Status::Format, where + ": " + what + " '" + t.name + "' has " + std::to_string(t.elements) +
                               " elements of ONNX type " + std::to_string(t.type) + ", expected " +
                               std::to_string(elements) + (floats ? " floats" : " integers"));
  };
  if (OnnxType(b->type) != OnnxType::Uint8) fail(Status::Format, where + ": B '" + b->name + "' is not uint8");
  need(*b, uint64_t(n_rows) * blocks * blob, false, "B");
  need(*sc, uint64_t(n_rows) * blocks, true, "scales");
  const bool float_zeros = zp && zp->is_float();
  const uint64_t zp_row = (blocks * uint64_t(bits) + 7) / 8;
  if (zp) need(*zp, float_zeros ? uint64_t(n_rows) * blocks : uint64_t(n_rows) * zp_row, float_zeros, "zero_points");
  if (zp && !float_zeros && OnnxType(zp->type) != OnnxType::Uint8)
    fail(Status::Format, where + ": zero_points '" + zp->name + "' is neither uint8 nor of A's type");
  if (gi) need(*gi, uint64_t(k), false, "g_idx");
  if (bias) need(*bias, uint64_t(n_rows), true, "bias");
  const uint32_t mask = (1u << bits) - 1;
  const auto negative = [&](uint64_t n, uint64_t j) { return std::signbit(sc->number_at(n * blocks + j)); };
  const auto packed = [&](const uint8_t* row, uint64_t i) { return (row[i * bits / 8] >> (i * bits % 8)) & mask; };
  std::vector<uint32_t> order;
  if (gi) order = group_order([&](uint64_t i) { return int64_t(gi->number_at(i)); }, gi->name, uint64_t(k), group, layer);
  std::vector<float> bias_values;
  if (bias)
    for (uint64_t n = 0; n < uint64_t(n_rows); ++n) bias_values.push_back(float(bias->number_at(n)));
  return assemble(
      std::move(bias_values), layer, uint64_t(n_rows), uint64_t(k), uint32_t(bits), group, Method::Rtn,
      [&](uint64_t n, uint64_t kk) {
        // B holds input kk at its own place; with g_idx its scale is that of block g_idx[kk].
        const uint32_t q = packed(b->data + (n * blocks + kk / block) * blob, kk % block);
        return negative(n, gi ? uint64_t(gi->number_at(kk)) : kk / block) ? mask - q : q;
      },
      [&](uint64_t n, uint64_t j) -> int64_t {
        int64_t z = int64_t(1) << (bits - 1);
        if (float_zeros) {
          const double v = zp->number_at(n * blocks + j);
          if (v != std::floor(v) || v < 0 || v > mask)
            fail(Status::Unsupported, where + ": zero-point " + std::to_string(v) + " at index " +
                                          std::to_string(n * blocks + j) + " of '" + zp->name +
                                          "' is not an integer code");
          z = int64_t(v);
        } else if (zp) {
          z = packed(zp->data + n * zp_row, j);
        }
        return negative(n, j) ? int64_t(mask) - z : z;
      },
      [&](uint64_t n, uint64_t j) {
        return scales(std::fabs(sc->number_at(n * blocks + j)), n * blocks + j, sc->name);
      },
      std::move(order));
}

// The tensor name woq gives a MatMulNBits weight: its B initializer's name
// without the "_Q<bits>" ONNX Runtime's quantizer appends.
std::string onnx_layer_name(const std::string& b_name, int64_t bits) {
  const std::string tail = "_Q" + std::to_string(bits);
  return ends_with(b_name, tail) && b_name.size() > tail.size() ? b_name.substr(0, b_name.size() - tail.size()) : b_name;
}

ImportResult import_onnx(const std::string& path, Fp16Scales& scales, const ImportOptions& options) {
  auto model = OnnxModel::open(path);
  ImportResult r;
  r.flavor = Flavor::Onnx;
  r.how = "ONNX IR version " + std::to_string(model->ir_version());
  const auto producer = model->metadata().find("producer_name");
  if (producer != model->metadata().end() && !producer->second.empty()) r.how += ", produced by " + producer->second;
  r.metadata = model->metadata();
  std::set<std::string> used, names;
  int other_matmuls = 0;
  std::vector<std::pair<const OnnxNode*, std::string>> weights;  // a node and its layer's name
  for (const OnnxNode& node : model->nodes()) {
    if (node.op_type != "MatMulNBits" || node.domain != "com.microsoft") {
      other_matmuls += node.op_type == "MatMul" || node.op_type == "Gemm";
      continue;
    }
    if (node.inputs.size() < 3) fail(Status::Format, "MatMulNBits node '" + node.name + "' has fewer than 3 inputs");
    if (used.count(node.inputs[1])) continue;  // one weight shared by two nodes: imported once
    const auto bits = node.ints.find("bits");
    const std::string layer = onnx_layer_name(node.inputs[1], bits == node.ints.end() ? 4 : bits->second);
    if (!names.insert(layer).second) fail(Status::Format, "two MatMulNBits weights of '" + path + "' are named '" + layer + "'");
    weights.emplace_back(&node, layer);
    for (size_t i = 1; i < node.inputs.size() && i <= 5; ++i) used.insert(node.inputs[i]);
  }
  if (weights.empty())
    fail(Status::Unsupported, "'" + path + "' has no MatMulNBits nodes (ONNX Runtime's block-quantized weights), the "
                              "ONNX weights that woq imports exactly (" + std::to_string(other_matmuls) +
                              " float MatMul / Gemm nodes)");
  for (const auto& t : model->initializers())
    if (!used.count(t->name)) r.skipped.push_back(t->name);
  LayerSink sink(r, options, weights.size());
  for (const auto& [node, layer] : weights) sink({layer, import_matmul_nbits(*model, *node, layer, scales)});
  return r;
}

ImportResult import_flavor(const std::string& path, Flavor flavor, Fp16Scales& scales, const ImportOptions& options) {
  const bool gguf = looks_like_gguf(path);
  if (flavor == Flavor::Gguf || (flavor == Flavor::Auto && gguf)) return import_gguf(path, options);
  if (gguf)
    fail(Status::InvalidArgument, "'" + path + "' is a GGUF file, not format " + flavor_name(flavor) + " (use auto or gguf)");
  if (flavor == Flavor::Onnx || (flavor == Flavor::Auto && looks_like_onnx(path))) return import_onnx(path, scales, options);
  auto file = Safetensors::open(path);
  Config config = read_config(file->path());  // the config lies next to the file or the shards' index
  ImportResult r;
  r.metadata = file->metadata();
  if (flavor != Flavor::Auto) {
    r.flavor = flavor;
    r.how = "given by the caller";
  } else if (config.flavor != Flavor::Auto) {
    r.flavor = config.flavor;
    r.how = "from " + config.source;
  } else {
    // No config: recognise the tensor names.
    bool qweight = false, g_idx = false, packed = false;
    for (const SafeTensor& t : file->tensors()) {
      qweight = qweight || ends_with(t.name, ".qweight");
      g_idx = g_idx || ends_with(t.name, ".g_idx");
      packed = packed || ends_with(t.name, ".weight_packed");
    }
    if (packed) r.flavor = Flavor::CompressedTensors;
    else if (qweight && g_idx) r.flavor = Flavor::GptqV1;
    else if (qweight) r.flavor = Flavor::Awq;
    else fail(Status::Format, "'" + path + "' holds no qweight or weight_packed tensors: not a GPTQ, AWQ or compressed-tensors checkpoint");
    r.how = std::string("detected from tensor names (no quantize_config.json or config.json)") +
            (r.flavor == Flavor::GptqV1 ? "; zero-points assumed stored minus one (GPTQ v1)" : "");
  }
  if (config.act_order && (r.flavor == Flavor::GptqV1 || r.flavor == Flavor::GptqV2))
    r.how += "; desc_act is set: act-order layers keep their input order";
  const char* marker = r.flavor == Flavor::CompressedTensors ? ".weight_packed" : ".qweight";
  std::set<std::string> used;
  std::vector<std::string> prefixes;
  for (const SafeTensor& t : file->tensors()) {
    if (!ends_with(t.name, marker)) continue;
    const std::string prefix = t.name.substr(0, t.name.size() - std::strlen(marker));
    prefixes.push_back(prefix);
    for (const char* part : {".qweight", ".qzeros", ".scales", ".g_idx", ".bias", ".weight_packed", ".weight_scale",
                             ".weight_zero_point", ".weight_shape", ".weight_g_idx"})
      used.insert(prefix + part);
  }
  if (prefixes.empty()) fail(Status::Format, "'" + path + "' has no quantized layers of format " + flavor_name(r.flavor));
  for (const SafeTensor& t : file->tensors())
    if (!used.count(t.name)) r.skipped.push_back(t.name);
  LayerSink sink(r, options, prefixes.size());
  for (const std::string& prefix : prefixes) {
    ImportedLayer layer;
    layer.name = prefix + ".weight";
    switch (r.flavor) {
      case Flavor::GptqV1: layer.matrix = import_gptq(*file, prefix, config, true, scales); break;
      case Flavor::GptqV2: layer.matrix = import_gptq(*file, prefix, config, false, scales); break;
      case Flavor::Awq: layer.matrix = import_awq(*file, prefix, config, scales); break;
      case Flavor::CompressedTensors: layer.matrix = import_compressed(*file, prefix, scales); break;
      case Flavor::Auto:
      case Flavor::Gguf:
      case Flavor::Onnx: break;
    }
    sink(std::move(layer));
  }
  return r;
}

}  // namespace

const char* flavor_name(Flavor f) {
  switch (f) {
    case Flavor::Auto: return "auto";
    case Flavor::GptqV1: return "gptq";
    case Flavor::GptqV2: return "gptq_v2";
    case Flavor::Awq: return "awq";
    case Flavor::CompressedTensors: return "compressed-tensors";
    case Flavor::Gguf: return "gguf";
    case Flavor::Onnx: return "onnx";
  }
  return "?";
}

Flavor parse_flavor(const std::string& name) {
  for (Flavor f : {Flavor::Auto, Flavor::GptqV1, Flavor::GptqV2, Flavor::Awq, Flavor::CompressedTensors, Flavor::Gguf,
                   Flavor::Onnx})
    if (name == flavor_name(f)) return f;
  fail(Status::InvalidArgument,
       "unknown checkpoint format '" + name + "' (auto, gptq, gptq_v2, awq, compressed-tensors, gguf, onnx)");
}

ImportResult import_checkpoint(const std::string& path, Flavor flavor, const ImportOptions& options) {
  if (!options.on_layer) fail(Status::Internal, "import_checkpoint needs ImportOptions::on_layer");
  Fp16Scales scales(options.round_scales);
  ImportResult r = import_flavor(path, flavor, scales, options);
  r.scales_read = scales.read;
  r.scales_rounded = scales.rounded;
  r.largest_scale_change = scales.largest_change;
  return r;
}

}  // namespace woq::import
