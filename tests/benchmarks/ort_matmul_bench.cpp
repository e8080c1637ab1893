// CPU benchmark against ONNX Runtime: woq_matmul and ONNX Runtime's own
// MatMulNBits operator (com.microsoft; the CPU execution provider's MLAS
// kernels, from the libonnxruntime.so.1 that onnxruntime-node ships and
// .ci/setup fetches) on the same weights and fp32 activations, measured in
// the same run.
//
//   woq_ort_bench [--quick] [--bits 4|8] [--block B] [--sym] [--fp32-scales] [--m M]...
//                 [--threads T] [--copies N] [--ort-lib PATH] [--work DIR]
//
// The weights: this benchmark quantizes normal random values into
// MatMulNBits' layout (B uint8 [N, blocks, B * bits / 8], fp32 scales that
// fp16 holds exactly, uint8 zero-points packed per row; --sym: none, the
// midpoint) and writes one ONNX model holding every matrix; ONNX Runtime
// runs that model and woq_import_checkpoint converts the same bytes, so
// both libraries multiply by the same weights: an ONNX Runtime user's
// model, in woq. --fp32-scales keeps the scales as computed, in fp32, as
// ONNX Runtime's quantizer writes them for fp32 models; woq then imports
// with round_scales (woq_import_checkpoint_ex), so its weights are those
// of the scales rounded to fp16, and it is checked against those.
//
// ONNX Runtime runs twice: accuracy_level 0 (MLAS multiplies fp32
// activations by dequantized weights) and 4 (it rounds the activations to
// int8 blocks first, its fastest CPU path). Before timing, both are
// checked: ONNX Runtime's output for rows of the identity (one input per
// block of every matrix) is its dequantized weights, compared with this
// benchmark's own s * (q - z) and with woq's import of the model; then
// every output of a timed pass is compared with woq's (largest difference
// relative to the largest output: under 1e-4 at level 0, 5% at level 4),
// and the first matrix's with float64.
//
// Shapes and passes as woq_cpu_bench: a Llama-7B block plus Llama-3-8B's up
// projection, every matrix once per pass, cycled through enough copies to
// fill twice the last-level cache (each copy's codes differ, so every byte
// is read every pass); ONNX Runtime runs them as one graph (one Run a
// pass), as it runs a model. GB/s count the MatMulNBits tensors'
// bytes (B, scales, zero-points) for both libraries.
#include <dlfcn.h>
#include <unistd.h>
#include <woq.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <random>

#include "bench_util.h"

#ifndef WOQ_ORT_LIB
#define WOQ_ORT_LIB ""
#endif

namespace {

using namespace woq_bench;

[[noreturn]] void die(const std::string& what) {
  std::fflush(stdout);  // what was printed so far comes first
  std::fprintf(stderr, "woq_ort_bench: %s\n", what.c_str());
  std::exit(1);
}

// ONNX Runtime's C API (onnxruntime_c_api.h): a table of function pointers
// whose order is part of its stable ABI; these are the entries used here,
// at their places in that table. Its objects are opaque pointers.
using Status = void*;
struct OrtApiBase {
  const void* const* (*get_api)(uint32_t version);
  const char* (*get_version_string)();
};
struct Ort {
  Status (*create_status)(int code, const char* msg);                                                     // 0
  int (*get_error_code)(const void* status);                                                              // 1
  const char* (*get_error_message)(const void* status);                                                   // 2
  Status (*create_env)(int log_level, const char* log_id, void** env);                                    // 3
  Status (*create_session_from_array)(const void* env, const void* data, size_t size, const void* options,
                                      void** session);  // 8
  Status (*run)(void* session, const void* run_options, const char* const* input_names, const void* const* inputs,
                size_t input_count, const char* const* output_names, size_t output_count, void** outputs);  // 9
  Status (*create_session_options)(void** options);                                                      // 10
  Status (*set_graph_optimization_level)(void* options, int level);                                      // 23
  Status (*set_intra_op_threads)(void* options, int threads);                                            // 24
  Status (*set_inter_op_threads)(void* options, int threads);                                            // 25
  Status (*create_tensor_with_data)(const void* info, void* data, size_t bytes, const int64_t* shape, size_t rank,
                                    int element_type, void** value);  // 49
  Status (*create_cpu_memory_info)(int allocator_type, int mem_type, void** info);                      // 69
  void (*release_env)(void*);                                                                            // 92
  void (*release_status)(void*);                                                                         // 93
  void (*release_memory_info)(void*);                                                                    // 94
  void (*release_session)(void*);                                                                        // 95
  void (*release_value)(void*);                                                                          // 96
  void (*release_session_options)(void*);                                                                // 100
  std::string version;
};
constexpr uint32_t kOrtApiVersion = 8;  // every entry above is in version 8's table (ONNX Runtime 1.8)
constexpr int kOrtFloat = 1, kOrtLogWarning = 2, kOrtArenaAllocator = 1, kOrtMemTypeDefault = 0,
              kOrtEnableAll = 99;

Ort load_ort(const std::string& path) {
  void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lib) die(std::string("cannot load ONNX Runtime: ") + dlerror() + " (run .ci/npm_fetch.sh tests/ort build/ort)");
  using GetBase = const OrtApiBase* (*)();
  auto get_base = reinterpret_cast<GetBase>(dlsym(lib, "OrtGetApiBase"));
  if (!get_base) die(path + " has no OrtGetApiBase (not ONNX Runtime)");
  const OrtApiBase* base = get_base();
  const void* const* t = base->get_api(kOrtApiVersion);
  if (!t) die(path + " does not offer the C API version " + std::to_string(kOrtApiVersion));
  Ort o{};
  auto at = [&](auto& f, int index) { f = reinterpret_cast<std::remove_reference_t<decltype(f)>>(t[index]); };
  at(o.create_status, 0), at(o.get_error_code, 1), at(o.get_error_message, 2), at(o.create_env, 3);
  at(o.create_session_from_array, 8), at(o.run, 9), at(o.create_session_options, 10);
  at(o.set_graph_optimization_level, 23), at(o.set_intra_op_threads, 24), at(o.set_inter_op_threads, 25);
  at(o.create_tensor_with_data, 49), at(o.create_cpu_memory_info, 69);
  at(o.release_env, 92), at(o.release_status, 93), at(o.release_memory_info, 94), at(o.release_session, 95);
  at(o.release_value, 96), at(o.release_session_options, 100);
  o.version = base->get_version_string();
  // The table's first entries, round-tripped: a library whose table is not
  // laid out as above fails here rather than calling the wrong functions.
  Status probe = o.create_status(5, "woq probe");
  const bool laid_out = probe && o.get_error_code(probe) == 5 && std::strcmp(o.get_error_message(probe), "woq probe") == 0;
  if (probe) o.release_status(probe);
  if (!laid_out) die(path + ": its C API table is not laid out as this benchmark expects");
  return o;
}

void check(const Ort& o, Status s, const std::string& what) {
  if (!s) return;
  const std::string message = o.get_error_message(s);
  o.release_status(s);
  die("ONNX Runtime: " + what + ": " + message);
}

// A protobuf message being written: varints and length-delimited fields.
struct Pb {
  std::string bytes;
  void varint(uint64_t v) {
    do {
      bytes.push_back(char((v & 0x7f) | (v > 0x7f ? 0x80 : 0)));
      v >>= 7;
    } while (v);
  }
  Pb& num(int field, uint64_t v) {
    varint(uint64_t(field) << 3);
    varint(v);
    return *this;
  }
  Pb& str(int field, const std::string& payload) {
    varint(uint64_t(field) << 3 | 2);
    varint(payload.size());
    bytes += payload;
    return *this;
  }
  Pb& msg(int field, const Pb& m) { return str(field, m.bytes); }
};

// onnx.proto's TensorProto (dims 1, data_type 2, name 8, raw_data 9).
Pb onnx_tensor(const std::string& name, std::vector<int64_t> dims, int type, const std::string& raw) {
  Pb t;
  for (int64_t d : dims) t.num(1, uint64_t(d));
  return t.num(2, uint64_t(type)).str(8, name).str(9, raw);
}
// ValueInfoProto of a float [M, cols] tensor, M symbolic.
Pb float_rows(const std::string& name, uint64_t cols) {
  Pb shape;
  shape.msg(1, Pb().str(2, "M")).msg(1, Pb().num(1, cols));
  return Pb().str(1, name).msg(2, Pb().msg(1, Pb().num(1, kOrtFloat).msg(2, shape)));
}

// One matrix in MatMulNBits' layout, and its weights s * (q - z).
struct Quantized {
  std::string b, scales, zero_points;  // raw_data; zero_points empty when symmetric
  std::vector<float> w_hat;            // [N, K], s * (q - z)
  std::vector<float> w_hat_fp16;       // the same from the scales rounded to fp16 (woq's with --fp32-scales)
};

Quantized quantize(const Shape& s, uint32_t bits, uint32_t block, bool sym, bool fp32_scales, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 0.02f);
  const uint64_t blocks = s.k / block, blob = block * bits / 8, zp_row = (blocks * bits + 7) / 8;
  const int qmax = (1 << bits) - 1, mid = 1 << (bits - 1);
  Quantized q;
  q.b.assign(s.n * blocks * blob, '\0');
  q.zero_points.assign(sym ? 0 : s.n * zp_row, '\0');
  q.w_hat.resize(s.n * s.k);
  q.w_hat_fp16.resize(s.n * s.k);
  std::vector<float> scales(s.n * blocks), w(block);
  for (uint64_t n = 0; n < s.n; ++n)
    for (uint64_t bl = 0; bl < blocks; ++bl) {
      float lo = 0, hi = 0, amax = 0;
      for (float& v : w) {
        v = dist(rng);
        lo = std::min(lo, v), hi = std::max(hi, v), amax = std::max(amax, std::fabs(v));
      }
      // Never zero; one fp16 holds exactly (woq keeps fp16 scales) unless
      // fp32_scales.
      float scale = std::max(sym ? amax / float(mid - 1) : (hi - lo) / float(qmax), 1e-6f);
      const float scale16 = float(static_cast<_Float16>(scale));
      if (!fp32_scales) scale = scale16;
      const int zp = sym ? mid : std::clamp(int(std::lround(-lo / scale)), 0, qmax);
      scales[n * blocks + bl] = scale;
      if (!sym) q.zero_points[n * zp_row + bl * bits / 8] |= char(zp << (bl * bits % 8));
      for (uint32_t i = 0; i < block; ++i) {
        const int code = std::clamp(int(std::lround(w[i] / scale)) + zp, 0, qmax);
        const uint64_t bit = i * bits;
        q.b[(n * blocks + bl) * blob + bit / 8] |= char(code << (bit % 8));
        q.w_hat[n * s.k + bl * block + i] = scale * float(code - zp);
        q.w_hat_fp16[n * s.k + bl * block + i] = scale16 * float(code - zp);
      }
    }
  q.scales.assign(reinterpret_cast<const char*>(scales.data()), scales.size() * 4);
  return q;
}

struct Args {
  bool quick = false, sym = false, fp32_scales = false;
  uint32_t bits = 4, block = 32;
  std::vector<uint64_t> ms;  // empty: the default list
  std::vector<int> threads = {1, 2};
  int copies = 0;  // 0: enough to fill twice the last-level cache
  std::string ort_lib = WOQ_ORT_LIB;
  std::string work = "/tmp";
};

constexpr int kLevels[] = {0, 4};  // MatMulNBits' accuracy_level: fp32, int8 activations

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress shows in a log as it comes
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string s = argv[i];
    if (s == "--quick") a.quick = true;
    else if (s == "--sym") a.sym = true;
    else if (s == "--fp32-scales") a.fp32_scales = true;
    else if (s == "--bits" && i + 1 < argc) a.bits = uint32_t(std::atoi(argv[++i]));
    else if (s == "--block" && i + 1 < argc) a.block = uint32_t(std::atoi(argv[++i]));
    else if (s == "--m" && i + 1 < argc) a.ms.push_back(uint64_t(std::atoll(argv[++i])));
    else if (s == "--threads" && i + 1 < argc) a.threads = {std::atoi(argv[++i])};
    else if (s == "--copies" && i + 1 < argc) a.copies = std::atoi(argv[++i]);
    else if (s == "--ort-lib" && i + 1 < argc) a.ort_lib = argv[++i];
    else if (s == "--work" && i + 1 < argc) a.work = argv[++i];
    else {
      std::fprintf(stderr,
                   "usage: woq_ort_bench [--quick] [--bits 4|8] [--block B] [--sym] [--fp32-scales] [--m M]... [--threads T] "
                   "[--copies N] [--ort-lib PATH] [--work DIR]\n");
      return 2;
    }
  }
  if (a.bits != 4 && a.bits != 8) die("--bits must be 4 or 8");
  if (a.block < 32 || a.block > 256 || (a.block & (a.block - 1))) die("--block must be 32, 64, 128 or 256");
  if (a.ort_lib.empty()) die("no --ort-lib given and none built in");
  for (int t : a.threads)
    if (t < 1) die("--threads must be at least 1");
  for (uint64_t m : a.ms)
    if (m < 1) die("--m must be at least 1");

  std::vector<Shape> distinct = {{"4096x4096", 4096, 4096}, {"11008x4096", 11008, 4096}, {"4096x11008", 4096, 11008},
                                  {"14336x4096", 14336, 4096}};
  std::vector<int> block = {0, 0, 0, 0, 1, 1, 2, 3};
  std::vector<uint64_t> ms = {1, 4, 16, 64, 256};
  if (a.quick) {  // an odd N, and a K of an odd number of blocks (a padded zero-point per row)
    const uint64_t odd_k = 31 * a.block;
    distinct = {{"1000x" + std::to_string(odd_k), 1000, odd_k}, {"2048x1024", 2048, 1024}, {"512x2048", 512, 2048}};
    block = {0, 1, 2};
    ms = {1, 5};
  }
  if (!a.ms.empty()) ms = a.ms;
  for (const Shape& s : distinct)
    if (s.k % a.block) die("K = " + std::to_string(s.k) + " of " + s.name + " is not a multiple of --block");

  Ort ort = load_ort(a.ort_lib);
  std::printf("woq vs ONNX Runtime's MatMulNBits: %u-bit %s, block %u, %s scales, fp32 activations; libwoq %s; ONNX "
              "Runtime %s (%s); %u hardware threads\n",
              a.bits, a.sym ? "symmetric" : "asymmetric (uint8 zero-points)", a.block,
              a.fp32_scales ? "fp32 (woq: rounded to fp16)" : "fp16-exact", woq_version_string(),
              ort.version.c_str(), a.ort_lib.c_str(), std::thread::hardware_concurrency());

  // 1. The weights, and the models: one MatMulNBits node per matrix of
  //    every copy, each with its own initializers (a copy's codes are the
  //    first copy's, flipped), and one input per distinct K.
  std::mt19937 rng(7);
  std::vector<Quantized> weights;
  for (const Shape& s : distinct) weights.push_back(quantize(s, a.bits, a.block, a.sym, a.fp32_scales, rng));
  uint64_t block_weights = 0, kmax = 0, nmax = 0;
  double block_bytes = 0;
  for (int idx : block) {
    const Quantized& q = weights[idx];
    block_weights += distinct[idx].n * distinct[idx].k;
    block_bytes += double(q.b.size() + q.scales.size() + q.zero_points.size());
  }
  for (const Shape& s : distinct) kmax = std::max(kmax, s.k), nmax = std::max(nmax, s.n);
  const double l3 = double(last_level_cache_bytes());
  const int copies = a.copies > 0 ? a.copies : a.quick ? 1 : std::max(1, int(std::ceil(2 * l3 / block_bytes)));
  const size_t entries = block.size() * size_t(copies);
  auto x_name = [&](uint64_t k) { return "X" + std::to_string(k); };
  auto y_name = [&](size_t e) { return "Y" + std::to_string(e); };
  auto tensor_name = [&](size_t e) { return "blk." + std::to_string(e) + ".weight"; };
  std::vector<uint64_t> ks;  // the graph's inputs, one per distinct K
  for (const Shape& s : distinct)
    if (std::find(ks.begin(), ks.end(), s.k) == ks.end()) ks.push_back(s.k);
  auto model_bytes = [&](int level) {
    Pb graph;
    for (size_t e = 0; e < entries; ++e) {
      const Shape& s = distinct[block[e % block.size()]];
      const std::string w = tensor_name(e), q = w + "_Q" + std::to_string(a.bits);
      Pb node;
      node.str(1, x_name(s.k)).str(1, q).str(1, w + "_scales");
      if (!a.sym) node.str(1, w + "_zero_points");
      node.str(2, y_name(e)).str(3, "MatMulNBits_" + std::to_string(e)).str(4, "MatMulNBits");
      const std::pair<const char*, uint64_t> attributes[] = {
          {"K", s.k}, {"N", s.n}, {"bits", a.bits}, {"block_size", a.block}, {"accuracy_level", uint64_t(level)}};
      for (const auto& [key, value] : attributes) node.msg(5, Pb().str(1, key).num(3, value).num(20, 2));  // INT
      graph.msg(1, node.str(7, "com.microsoft"));
    }
    graph.str(2, "woq_ort_bench");
    for (size_t e = 0; e < entries; ++e) {
      const int idx = block[e % block.size()];
      const Shape& s = distinct[idx];
      const Quantized& q = weights[idx];
      const uint64_t blocks = s.k / a.block;
      const std::string w = tensor_name(e);
      // Each copy's codes differ (its B is the first copy's with every byte
      // XORed with a number of its own), so that neither library can serve
      // one copy's weights for another's: every pass reads every byte.
      std::string b = q.b;
      if (const char flip = char(e / block.size() * 0x25))
        for (char& byte : b) byte ^= flip;
      graph.msg(5, onnx_tensor(w + "_Q" + std::to_string(a.bits),
                               {int64_t(s.n), int64_t(blocks), int64_t(a.block * a.bits / 8)}, 2, b));
      graph.msg(5, onnx_tensor(w + "_scales", {int64_t(s.n * blocks)}, kOrtFloat, q.scales));
      if (!a.sym)
        graph.msg(5, onnx_tensor(w + "_zero_points", {int64_t(s.n), int64_t((blocks * a.bits + 7) / 8)}, 2,
                                 q.zero_points));
    }
    for (uint64_t k : ks) graph.msg(11, float_rows(x_name(k), k));
    for (size_t e = 0; e < entries; ++e) graph.msg(12, float_rows(y_name(e), distinct[block[e % block.size()]].n));
    Pb model;
    model.num(1, 9).str(2, "woq_ort_bench").str(3, "1");  // ir_version, producer
    model.msg(8, Pb().num(2, 21)).msg(8, Pb().str(1, "com.microsoft").num(2, 1));  // opsets
    return model.msg(7, graph).bytes;
  };

  // 2. woq imports the level-0 model's file.
  const std::string stem = a.work + "/woq_ort_bench." + std::to_string(getpid());
  const std::string onnx_path = stem + ".onnx", woq_path = stem + ".woq";
  std::vector<std::string> models;
  for (int level : kLevels) models.push_back(model_bytes(level));
  {
    std::ofstream f(onnx_path, std::ios::binary);
    f.write(models[0].data(), std::streamsize(models[0].size()));
    if (!f.flush()) die("cannot write " + onnx_path);
  }
  const char* report = nullptr;
  auto t0 = Clock::now();
  woq_import_options import_options;
  woq_import_options_init(&import_options);
  import_options.round_scales = a.fp32_scales ? 1 : 0;
  const woq_status imported =
      woq_import_checkpoint_ex(onnx_path.c_str(), "onnx", woq_path.c_str(), &import_options, &report);
  std::remove(onnx_path.c_str());
  check(imported, "woq_import_checkpoint_ex");
  std::printf("wrote a %.1f MiB model of %zu MatMulNBits nodes; woq imported it in %.2f s (%s)\n",
              models[0].size() / 1048576.0, entries, seconds_since(t0), report);
  woq_file* file = nullptr;
  const woq_status opened = woq_file_open(woq_path.c_str(), &file);
  std::remove(woq_path.c_str());  // an open file stays readable
  check(opened, "woq_file_open");
  std::printf("block: %zu matrices, %.1f M weights, %.1f MiB of MatMulNBits tensors; last-level cache %.0f MiB: %d "
              "cop%s in turn (times below are per block)\n\n",
              block.size(), block_weights / 1e6, block_bytes / 1048576.0, l3 / 1048576.0, copies,
              copies == 1 ? "y" : "ies");

  void* env = nullptr;
  check(ort, ort.create_env(kOrtLogWarning, "woq_ort_bench", &env), "CreateEnv");
  void* memory = nullptr;
  check(ort, ort.create_cpu_memory_info(kOrtArenaAllocator, kOrtMemTypeDefault, &memory), "CreateCpuMemoryInfo");
  // A float [rows, cols] tensor over the caller's buffer.
  auto tensor = [&](float* data, uint64_t rows, uint64_t cols) {
    const int64_t shape[2] = {int64_t(rows), int64_t(cols)};
    void* v = nullptr;
    check(ort, ort.create_tensor_with_data(memory, data, rows * cols * 4, shape, 2, kOrtFloat, &v),
          "CreateTensorWithDataAsOrtValue");
    return v;
  };
  // One Run over the whole graph: xs (one per ks) in, outputs into ys (per
  // entry, the first `count` entries), all over the caller's buffers.
  struct Feed {
    const Ort& ort;
    void* session;
    std::vector<std::string> in_names, out_names;
    std::vector<const char*> in_c, out_c;
    std::vector<void*> in_v, out_v;
    void operator()() {
      check(ort, ort.run(session, nullptr, in_c.data(), in_v.data(), in_v.size(), out_c.data(), out_c.size(), out_v.data()),
            "Run");
    }
    ~Feed() {
      for (void* v : in_v) ort.release_value(v);
      for (void* v : out_v) ort.release_value(v);
    }
  };
  auto feed = [&](Feed& f, uint64_t m, std::vector<std::vector<float>>& xs, std::vector<std::vector<float>>& ys,
                  size_t count) {
    for (size_t i = 0; i < ks.size(); ++i)
      f.in_names.push_back(x_name(ks[i])), f.in_v.push_back(tensor(xs[i].data(), m, ks[i]));
    for (size_t e = 0; e < count; ++e)
      f.out_names.push_back(y_name(e)), f.out_v.push_back(tensor(ys[e].data(), m, distinct[block[e % block.size()]].n));
    for (const std::string& n : f.in_names) f.in_c.push_back(n.c_str());
    for (const std::string& n : f.out_names) f.out_c.push_back(n.c_str());
  };
  auto make_session = [&](int level_index, int threads) {
    void* options = nullptr;
    check(ort, ort.create_session_options(&options), "CreateSessionOptions");
    check(ort, ort.set_intra_op_threads(options, threads), "SetIntraOpNumThreads");
    check(ort, ort.set_inter_op_threads(options, 1), "SetInterOpNumThreads");
    check(ort, ort.set_graph_optimization_level(options, kOrtEnableAll), "SetSessionGraphOptimizationLevel");
    void* session = nullptr;
    const std::string& bytes = models[size_t(level_index)];
    check(ort, ort.create_session_from_array(env, bytes.data(), bytes.size(), options, &session),
          "CreateSessionFromArray (accuracy_level " + std::to_string(kLevels[level_index]) + ")");
    ort.release_session_options(options);
    return session;
  };

  // 3. The weights check: one identity row per block of every distinct
  //    matrix (at a different place in each block), through ONNX Runtime
  //    at level 0 and through woq, against s * (q - z).
  {
    woq_context* ctx = cpu_context(0);
    void* session = make_session(0, a.threads.back());
    double worst = 0;
    bool identical = true;
    for (size_t idx = 0; idx < distinct.size(); ++idx) {
      const Shape& s = distinct[idx];
      const size_t e = size_t(std::find(block.begin(), block.end(), int(idx)) - block.begin());
      const uint64_t rows = s.k / a.block;
      std::vector<std::vector<float>> xs;
      for (uint64_t k : ks) xs.emplace_back(rows * k, 0.0f);
      std::vector<float>& x = xs[size_t(std::find(ks.begin(), ks.end(), s.k) - ks.begin())];
      std::vector<uint64_t> picked(rows);
      for (uint64_t r = 0; r < rows; ++r) {
        picked[r] = r * a.block + (r * 7 + 3) % a.block;
        x[r * s.k + picked[r]] = 1.0f;
      }
      std::vector<std::vector<float>> ys;
      for (size_t i = 0; i <= e; ++i) ys.emplace_back(rows * distinct[block[i % block.size()]].n, NAN);
      {
        Feed f{ort, session};
        feed(f, rows, xs, ys, e + 1);
        f();
      }
      std::vector<float> mine(rows * s.n, NAN);
      woq_tensor* t = nullptr;
      check(woq_tensor_load(ctx, file, tensor_name(e).c_str(), &t), "woq_tensor_load");
      check(woq_matmul(ctx, t, x.data(), WOQ_DTYPE_F32, rows, mine.data(), WOQ_DTYPE_F32), "woq_matmul");
      woq_tensor_destroy(t);
      double amax = 0;
      for (float v : weights[idx].w_hat) amax = std::max(amax, double(std::fabs(v)));
      for (uint64_t r = 0; r < rows; ++r)
        for (uint64_t n = 0; n < s.n; ++n) {
          const uint64_t at = n * s.k + picked[r];
          const float want = weights[idx].w_hat[at], want_woq = (a.fp32_scales ? weights[idx].w_hat_fp16 : weights[idx].w_hat)[at],
                      theirs = ys[e][r * s.n + n], ours = mine[r * s.n + n];
          identical = identical && theirs == want && ours == want_woq;
          worst = std::max({worst, double(std::fabs(theirs - want)) / amax, double(std::fabs(ours - want_woq)) / amax});
          if (!(std::fabs(theirs - want) <= 1e-6 * amax) || !(std::fabs(ours - want_woq) <= 1e-6 * amax))
            die("the weights differ on " + s.name + " at row " + std::to_string(n) + ", input " +
                std::to_string(picked[r]) + ": s * (q - z) = " + std::to_string(want) + ", ONNX Runtime " +
                std::to_string(theirs) + "; woq " + std::to_string(ours) + " for " + std::to_string(want_woq));
        }
    }
    ort.release_session(session);
    woq_context_destroy(ctx);
    std::printf("weights check: ONNX Runtime's dequantized weights and woq's import of them %s s * (q - z)%s on one "
                "input of every block of the %zu matrices\n\n",
                identical ? "equal" : ("match (largest difference " + std::to_string(worst) + " of the largest weight)").c_str(),
                a.fp32_scales ? " (woq's: s rounded to fp16)" : "", distinct.size());
  }

  // 4. Per thread count and M: woq, then ONNX Runtime at each level, one
  //    right after the other (this VM's speed drifts over minutes). The
  //    outputs of every matrix in the first copy are compared.
  std::normal_distribution<float> xdist(0.0f, 1.0f);
  const Shape& s0 = distinct[block[0]];
  // The first matrix's error on X's first rows, against s * (q - z).
  auto reference_error = [&](const std::vector<float>& y, const std::vector<float>& x, uint64_t m) {
    return woq_bench::reference_error(y.data(), x.data(), m, s0.n, s0.k, weights[block[0]].w_hat.data());
  };
  auto min_seconds = [&](uint64_t m) { return a.quick ? 0.05 : (m >= 64 ? 1.0 : 2.0); };
  auto min_reps = [](uint64_t m) { return m >= 64 ? 2 : 5; };
  const size_t levels = std::size(kLevels);
  std::vector<std::vector<double>> woq_time(a.threads.size(), std::vector<double>(ms.size()));
  std::vector<std::vector<std::vector<double>>> ort_time(
      levels, std::vector<std::vector<double>>(a.threads.size(), std::vector<double>(ms.size())));
  std::vector<double> woq_error(ms.size()), bandwidth, worst_difference(levels);
  std::vector<std::vector<double>> ort_error(levels, std::vector<double>(ms.size()));
  std::string woq_kernel;
  for (int threads : a.threads) bandwidth.push_back(read_bandwidth(threads, a.quick ? (256u << 20) : (1u << 30)));
  for (size_t ti = 0; ti < a.threads.size(); ++ti) {
    woq_context* ctx = cpu_context(a.threads[ti], &woq_kernel);
    const std::vector<woq_tensor*> tensors = load_tensors(ctx, file, entries, tensor_name);
    std::vector<void*> sessions;
    for (size_t li = 0; li < levels; ++li) sessions.push_back(make_session(int(li), a.threads[ti]));
    for (size_t mi = 0; mi < ms.size(); ++mi) {
      const uint64_t m = ms[mi];
      std::mt19937 xrng{uint32_t(m)};
      std::vector<std::vector<float>> xs;  // one per K; a K's rows are the first m * K of X
      std::vector<float> x(m * kmax);
      for (float& v : x) v = xdist(xrng);
      for (uint64_t k : ks) xs.emplace_back(x.begin(), x.begin() + ptrdiff_t(m * k));
      auto x_for = [&](uint64_t k) { return xs[size_t(std::find(ks.begin(), ks.end(), k) - ks.begin())].data(); };
      std::vector<std::vector<float>> woq_y;  // per block entry
      for (size_t e = 0; e < block.size(); ++e) {
        woq_y.emplace_back(m * distinct[block[e]].n, NAN);
        check(woq_matmul(ctx, tensors[e], x_for(distinct[block[e]].k), WOQ_DTYPE_F32, m, woq_y.back().data(),
                         WOQ_DTYPE_F32),
              "woq_matmul");
      }
      woq_error[mi] = reference_error(woq_y[0], xs[0], m);
      std::vector<float> y(m * nmax);
      woq_time[ti][mi] = time_pass(
                             [&] {
                               for (size_t e = 0; e < entries; ++e)
                                 check(woq_matmul(ctx, tensors[e], x_for(distinct[block[e % block.size()]].k),
                                                  WOQ_DTYPE_F32, m, y.data(), WOQ_DTYPE_F32),
                                       "woq_matmul");
                             },
                             min_seconds(m) * copies, min_reps(m)) /
                         copies;
      for (size_t li = 0; li < levels; ++li) {
        std::vector<std::vector<float>> ys;
        for (size_t e = 0; e < entries; ++e) ys.emplace_back(m * distinct[block[e % block.size()]].n, NAN);
        Feed pass{ort, sessions[li]};
        feed(pass, m, xs, ys, entries);
        ort_time[li][ti][mi] = time_pass(pass, min_seconds(m) * copies, min_reps(m)) / copies;
        // Level 0 computes in fp32 as woq does, on the same weights unless
        // woq's scales were rounded (each weight then differs by <= 2^-11).
        const double limit = kLevels[li] != 0 ? 0.05 : a.fp32_scales ? 2e-3 : 1e-4;
        for (size_t e = 0; e < block.size(); ++e) {
          double diff = 0, scale = 0;
          for (size_t i = 0; i < woq_y[e].size(); ++i) {
            diff = std::max(diff, double(std::fabs(ys[e][i] - woq_y[e][i])));
            scale = std::max(scale, double(std::fabs(woq_y[e][i])));
          }
          const double rel = diff / std::max(scale, 1e-30);
          worst_difference[li] = std::max(worst_difference[li], rel);
          if (!(rel <= limit))
            die("ONNX Runtime (accuracy_level " + std::to_string(kLevels[li]) + ") and woq differ on " +
                distinct[block[e]].name + " at M = " + std::to_string(m) + ": largest difference " +
                std::to_string(rel) + " of the largest output");
        }
        ort_error[li][mi] = reference_error(ys[0], xs[0], m);
      }
      std::printf("threads %d, M = %llu: woq %.2f ms, ONNX Runtime %.2f ms (level 0), %.2f ms (level 4)\n",
                  a.threads[ti], static_cast<unsigned long long>(m), woq_time[ti][mi] * 1e3,
                  ort_time[0][ti][mi] * 1e3, ort_time[1][ti][mi] * 1e3);
    }
    for (void* session : sessions) ort.release_session(session);
    for (woq_tensor* t : tensors) woq_tensor_destroy(t);
    woq_context_destroy(ctx);
  }
  woq_file_close(file);
  ort.release_memory_info(memory);
  ort.release_env(env);

  // 5. The tables: ms per block, GB/s of the MatMulNBits tensors' bytes,
  //    woq's speedup over ONNX Runtime's faster level.
  std::printf("\nwoq kernels: %s\n\n", woq_kernel.c_str());
  std::printf("| threads | read BW GB/s | M | woq ms | woq GB/s | ORT level 0 ms | ORT level 4 ms | best ORT GB/s | woq "
              "speedup |\n|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
  for (size_t ti = 0; ti < a.threads.size(); ++ti)
    for (size_t mi = 0; mi < ms.size(); ++mi) {
      const double woq_s = woq_time[ti][mi], best = std::min(ort_time[0][ti][mi], ort_time[1][ti][mi]);
      std::printf("| %d | %.1f | %llu | %.2f | %.1f | %.2f | %.2f | %.1f | %.2fx |\n", a.threads[ti], bandwidth[ti],
                  static_cast<unsigned long long>(ms[mi]), woq_s * 1e3, block_bytes / woq_s / 1e9,
                  ort_time[0][ti][mi] * 1e3, ort_time[1][ti][mi] * 1e3, block_bytes / best / 1e9, best / woq_s);
    }
  std::printf("\n| M | woq error | ORT level 0 error | ORT level 4 error |\n|--:|--:|--:|--:|\n");
  for (size_t mi = 0; mi < ms.size(); ++mi)
    std::printf("| %llu | %.2e | %.2e | %.2e |\n", static_cast<unsigned long long>(ms[mi]), woq_error[mi],
                ort_error[0][mi], ort_error[1][mi]);
  std::printf("(error: ||Y - Y64|| / ||Y64|| of %s on X's first rows, Y64 in float64 from s * (q - z))\n",
              s0.name.c_str());
  std::printf("\noutputs agree: largest difference from woq's %.2g (level 0), %.2g (level 4) of the largest output\n",
              worst_difference[0], worst_difference[1]);
  return 0;
}
