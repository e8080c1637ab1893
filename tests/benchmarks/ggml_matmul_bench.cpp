// CPU benchmark against llama.cpp: woq_matmul and ggml's own matmul
// (ggml_mul_mat on llama.cpp's CPU backend, the libggml-cpu-<variant>.so
// that node-llama-cpp ships and .ci/setup fetches) on the same weights and
// the same fp32 activations, measured in the same run.
//
//   woq_ggml_bench [--quick] [--bits 4|8] [--bf16] [--m M]... [--threads T] [--copies N]
//                  [--ggml-dir DIR] [--work DIR] [--ggml-buffer NAME]...
//
// The weights: ggml's quantizer (ggml_quantize_chunk) turns normal random
// values into Q4_0 (--bits 4) or Q8_0 blocks, ggml's GGUF writer puts them
// in a file, and woq_import_checkpoint converts that file exactly (no
// re-quantization), so both libraries multiply by the same weights: a
// llama.cpp user's model, in woq. ggml runs on every weight buffer type its
// CPU device offers: plain "CPU" and the extra ones llama.cpp puts weights
// in by default (CPU_REPACK's interleaved blocks; AMX tiles where the
// machine has them); one that does not take the matmul is listed as such.
// --ggml-buffer (repeatable) runs only the named ones.
// ggml loads the CPU variant it scores best for this machine, as llama.cpp
// does.
//
// ggml quantizes the activations to Q8_0 before its dot products; woq keeps
// them in fp32 (--bf16: woq gets them in bf16, ggml the same values in
// fp32, so that both start from 8 significant bits). The outputs are compared (largest difference relative to
// the largest output) to show both computed the same product; a difference
// over 5% fails the run.
//
// Shapes and passes as woq_cpu_bench: a Llama-7B block plus Llama-3-8B's up
// projection, every matrix once per pass, cycled through enough copies to
// fill twice the last-level cache. GB/s count the GGUF blocks' bytes
// (4.5 bits a weight for Q4_0, 8.5 for Q8_0) for both libraries.
#include <dlfcn.h>
#include <unistd.h>
#include <woq.h>

#include <cmath>
#include <cstring>
#include <random>

#include "bench_util.h"

#ifndef WOQ_GGML_DIR
#define WOQ_GGML_DIR ""
#endif

namespace {

using namespace woq_bench;

[[noreturn]] void die(const std::string& what) {
  std::fflush(stdout);  // what was printed so far comes first
  std::fprintf(stderr, "woq_ggml_bench: %s\n", what.c_str());
  std::exit(1);
}

// The slice of ggml's public C API (ggml.h, ggml-backend.h, gguf.h) used
// here, resolved at run time; its objects are opaque pointers.
struct GgmlInitParams {
  size_t mem_size;
  void* mem_buffer;
  bool no_alloc;
};
constexpr int kGgmlF32 = 0, kGgmlQ4_0 = 2, kGgmlQ8_0 = 8, kGgmlDeviceCpu = 0;

struct Ggml {
  void* (*init)(GgmlInitParams);
  void (*free)(void*);
  size_t (*tensor_overhead)();
  size_t (*graph_overhead)();
  void* (*new_tensor_2d)(void*, int, int64_t, int64_t);
  void* (*set_name)(void*, const char*);
  void* (*get_data)(void*);
  size_t (*nbytes)(const void*);
  void* (*mul_mat)(void*, void*, void*);
  void* (*new_graph)(void*);
  void (*build_forward_expand)(void*, void*);
  size_t (*quantize_chunk)(int, const float*, void*, int64_t, int64_t, int64_t, const float*);
  void (*dequantize_row)(const void*, float*, int64_t);  // of the benchmark's type
  void* (*gguf_init_empty)();
  void (*gguf_add_tensor)(void*, const void*);
  bool (*gguf_write_to_file)(const void*, const char*, bool);
  void (*gguf_free)(void*);
  void (*load_all_from_path)(const char*);
  void* (*dev_by_type)(int);
  const char* (*dev_description)(void*);
  void* (*dev_init)(void*, const char*);
  void* (*dev_buffer_type)(void*);
  void* (*dev_backend_reg)(void*);
  bool (*dev_supports_op)(void*, const void*);
  void* (*reg_get_proc_address)(void*, const char*);
  const char* (*buft_name)(void*);
  void* (*alloc_ctx_tensors_from_buft)(void*, void*);
  void* (*cpu_buffer_type)();
  void (*buffer_free)(void*);
  void (*tensor_set)(void*, const void*, size_t, size_t);
  void (*tensor_get)(const void*, void*, size_t, size_t);
  int (*graph_compute)(void*, void*);
  void (*backend_free)(void*);
};

template <class F>
void resolve(void* lib, const char* name, F& f, const std::string& path) {
  f = reinterpret_cast<F>(dlsym(lib, name));
  if (!f) die(path + " has no " + name + " (not the ggml this benchmark was written against)");
}

Ggml load_ggml(const std::string& dir, const char* dequantize_row) {
  const std::string base_path = dir + "/libggml-base.so";
  void* base = dlopen(base_path.c_str(), RTLD_NOW | RTLD_GLOBAL);
  if (!base) die(std::string("cannot load llama.cpp's ggml: ") + dlerror() + " (run .ci/npm_fetch.sh tests/ggml build/ggml)");
  std::string reg_path;
  for (const char* name : {"libggml.so", "libggml.v0.5.0.so"})
    if (access((dir + "/" + name).c_str(), R_OK) == 0) reg_path = dir + "/" + name;
  void* reg = reg_path.empty() ? nullptr : dlopen(reg_path.c_str(), RTLD_NOW | RTLD_GLOBAL);
  if (!reg) die("no loadable libggml.so (the backend registry) in " + dir);
  Ggml g{};
  resolve(base, "ggml_init", g.init, base_path);
  resolve(base, "ggml_free", g.free, base_path);
  resolve(base, "ggml_tensor_overhead", g.tensor_overhead, base_path);
  resolve(base, "ggml_graph_overhead", g.graph_overhead, base_path);
  resolve(base, "ggml_new_tensor_2d", g.new_tensor_2d, base_path);
  resolve(base, "ggml_set_name", g.set_name, base_path);
  resolve(base, "ggml_get_data", g.get_data, base_path);
  resolve(base, "ggml_nbytes", g.nbytes, base_path);
  resolve(base, "ggml_mul_mat", g.mul_mat, base_path);
  resolve(base, "ggml_new_graph", g.new_graph, base_path);
  resolve(base, "ggml_build_forward_expand", g.build_forward_expand, base_path);
  resolve(base, "ggml_quantize_chunk", g.quantize_chunk, base_path);
  resolve(base, dequantize_row, g.dequantize_row, base_path);
  resolve(base, "gguf_init_empty", g.gguf_init_empty, base_path);
  resolve(base, "gguf_add_tensor", g.gguf_add_tensor, base_path);
  resolve(base, "gguf_write_to_file", g.gguf_write_to_file, base_path);
  resolve(base, "gguf_free", g.gguf_free, base_path);
  resolve(reg, "ggml_backend_load_all_from_path", g.load_all_from_path, reg_path);
  resolve(reg, "ggml_backend_dev_by_type", g.dev_by_type, reg_path);
  resolve(base, "ggml_backend_dev_description", g.dev_description, base_path);
  resolve(base, "ggml_backend_dev_init", g.dev_init, base_path);
  resolve(base, "ggml_backend_dev_buffer_type", g.dev_buffer_type, base_path);
  resolve(base, "ggml_backend_dev_backend_reg", g.dev_backend_reg, base_path);
  resolve(base, "ggml_backend_dev_supports_op", g.dev_supports_op, base_path);
  resolve(base, "ggml_backend_reg_get_proc_address", g.reg_get_proc_address, base_path);
  resolve(base, "ggml_backend_buft_name", g.buft_name, base_path);
  resolve(base, "ggml_backend_alloc_ctx_tensors_from_buft", g.alloc_ctx_tensors_from_buft, base_path);
  resolve(base, "ggml_backend_cpu_buffer_type", g.cpu_buffer_type, base_path);
  resolve(base, "ggml_backend_buffer_free", g.buffer_free, base_path);
  resolve(base, "ggml_backend_tensor_set", g.tensor_set, base_path);
  resolve(base, "ggml_backend_tensor_get", g.tensor_get, base_path);
  resolve(base, "ggml_backend_graph_compute", g.graph_compute, base_path);
  resolve(base, "ggml_backend_free", g.backend_free, base_path);
  return g;
}

void* ggml_context(const Ggml& g, size_t tensors, bool with_graph) {
  GgmlInitParams p{tensors * g.tensor_overhead() + (with_graph ? g.graph_overhead() : 0) + 4096, nullptr, true};
  void* ctx = g.init(p);
  if (!ctx) die("ggml_init failed");
  return ctx;
}

struct Args {
  bool quick = false;
  bool bf16_x = false;
  uint32_t bits = 4;
  std::vector<uint64_t> ms;  // empty: the default list
  std::vector<int> threads = {1, 2};
  int copies = 0;  // 0: enough to fill twice the last-level cache
  std::string ggml_dir = WOQ_GGML_DIR;
  std::string work = "/tmp";
  std::vector<std::string> buffer_types;  // empty: every one ggml's CPU device offers
};

// One ggml weight buffer type that takes the matmul, and its times per
// thread count and M.
struct GgmlRun {
  std::string name;
  std::vector<std::vector<double>> seconds;
  std::vector<double> error;  // per M, against float64 (reference_error)
  void* context = nullptr;  // the weight tensors, in `buffer`
  void* buffer = nullptr;
  std::vector<void*> weights;
};

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string s = argv[i];
    if (s == "--quick") a.quick = true;
    else if (s == "--bf16") a.bf16_x = true;
    else if (s == "--bits" && i + 1 < argc) a.bits = uint32_t(std::atoi(argv[++i]));
    else if (s == "--m" && i + 1 < argc) a.ms.push_back(uint64_t(std::atoll(argv[++i])));
    else if (s == "--threads" && i + 1 < argc) a.threads = {std::atoi(argv[++i])};
    else if (s == "--copies" && i + 1 < argc) a.copies = std::atoi(argv[++i]);
    else if (s == "--ggml-dir" && i + 1 < argc) a.ggml_dir = argv[++i];
    else if (s == "--work" && i + 1 < argc) a.work = argv[++i];
    else if (s == "--ggml-buffer" && i + 1 < argc) a.buffer_types.push_back(argv[++i]);
    else {
      std::fprintf(stderr,
                   "usage: woq_ggml_bench [--quick] [--bits 4|8] [--bf16] [--m M]... [--threads T] [--copies N] "
                   "[--ggml-dir DIR] [--work DIR] [--ggml-buffer NAME]...\n");
      return 2;
    }
  }
  if (a.bits != 4 && a.bits != 8) die("--bits must be 4 (Q4_0) or 8 (Q8_0)");
  if (a.ggml_dir.empty()) die("no --ggml-dir given and none built in");
  for (int t : a.threads)
    if (t < 1) die("--threads must be at least 1");
  for (uint64_t m : a.ms)
    if (m < 1) die("--m must be at least 1");
  const int type = a.bits == 4 ? kGgmlQ4_0 : kGgmlQ8_0;
  const char* type_name = a.bits == 4 ? "Q4_0" : "Q8_0";
  const double bytes_per_weight = a.bits == 4 ? 18.0 / 32 : 34.0 / 32;

  std::vector<Shape> distinct = {{"4096x4096", 4096, 4096}, {"11008x4096", 11008, 4096}, {"4096x11008", 4096, 11008},
                                 {"14336x4096", 14336, 4096}};
  std::vector<int> block = {0, 0, 0, 0, 1, 1, 2, 3};
  std::vector<uint64_t> ms = {1, 4, 16, 64, 256};
  if (a.quick) {
    distinct = {{"1024x1024", 1024, 1024}, {"2048x1024", 2048, 1024}, {"512x2048", 512, 2048}};
    block = {0, 1, 2};
    ms = {1, 5};
  }
  if (!a.ms.empty()) ms = a.ms;

  Ggml g = load_ggml(a.ggml_dir, a.bits == 4 ? "dequantize_row_q4_0" : "dequantize_row_q8_0");
  g.load_all_from_path(a.ggml_dir.c_str());
  void* dev = g.dev_by_type(kGgmlDeviceCpu);
  if (!dev) die("ggml found no CPU backend in " + a.ggml_dir);
  std::printf("woq vs llama.cpp's ggml: %s weights, %s activations; libwoq %s; ggml CPU device: %s; %u hardware "
              "threads\n",
              type_name, a.bf16_x ? "bf16 (fp32 for ggml)" : "fp32", woq_version_string(), g.dev_description(dev),
              std::thread::hardware_concurrency());

  // 1. The weights, quantized by ggml, written by ggml's GGUF writer.
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0.0f, 0.02f);
  size_t host_bytes = 0;
  for (const Shape& s : distinct) host_bytes += size_t(s.n * s.k * bytes_per_weight);
  GgmlInitParams hp{host_bytes + distinct.size() * g.tensor_overhead() + 4096, nullptr, false};
  void* host_ctx = g.init(hp);
  if (!host_ctx) die("ggml_init could not hold the weights");
  std::vector<void*> host;  // one ggml tensor of blocks per distinct shape
  void* gguf = g.gguf_init_empty();
  for (size_t i = 0; i < distinct.size(); ++i) {
    const Shape& s = distinct[i];
    std::vector<float> w(s.n * s.k);
    for (float& v : w) v = dist(rng);
    void* t = g.new_tensor_2d(host_ctx, type, int64_t(s.k), int64_t(s.n));
    g.set_name(t, ("blk." + std::to_string(i) + ".weight").c_str());
    g.quantize_chunk(type, w.data(), g.get_data(t), 0, int64_t(s.n), int64_t(s.k), nullptr);
    g.gguf_add_tensor(gguf, t);
    host.push_back(t);
  }
  // The first matrix's weights as ggml dequantizes them, for the float64
  // reference both libraries' outputs are measured against.
  const Shape& s0 = distinct[block[0]];
  std::vector<float> w0(s0.n * s0.k);
  g.dequantize_row(g.get_data(host[block[0]]), w0.data(), int64_t(w0.size()));
  const std::string stem = a.work + "/woq_ggml_bench." + std::to_string(getpid());
  const std::string gguf_path = stem + ".gguf", woq_path = stem + ".woq";
  if (!g.gguf_write_to_file(gguf, gguf_path.c_str(), false)) die("ggml could not write " + gguf_path);
  g.gguf_free(gguf);
  const char* report = nullptr;
  auto t0 = Clock::now();
  const woq_status imported = woq_import_checkpoint(gguf_path.c_str(), "gguf", woq_path.c_str(), &report);
  std::remove(gguf_path.c_str());
  check(imported, "woq_import_checkpoint");
  std::printf("ggml quantized and wrote %s; woq imported it in %.2f s (%s)\n", gguf_path.c_str(), seconds_since(t0),
              report);
  woq_file* file = nullptr;
  const woq_status opened = woq_file_open(woq_path.c_str(), &file);
  std::remove(woq_path.c_str());  // an open file stays readable
  check(opened, "woq_file_open");

  uint64_t block_weights = 0, kmax = 0, nmax = 0;
  for (int idx : block) block_weights += distinct[idx].n * distinct[idx].k;
  for (const Shape& s : distinct) kmax = std::max(kmax, s.k), nmax = std::max(nmax, s.n);
  const double block_bytes = double(block_weights) * bytes_per_weight;
  const double l3 = double(last_level_cache_bytes());
  const int copies = a.copies > 0 ? a.copies : a.quick ? 1 : std::max(1, int(std::ceil(2 * l3 / block_bytes)));
  const size_t entries = block.size() * size_t(copies);
  std::printf("block: %zu matrices, %.1f M weights, %.1f MiB of %s blocks; last-level cache %.0f MiB: %d cop%s in turn "
              "(times below are per block)\n\n",
              block.size(), block_weights / 1e6, block_bytes / 1048576.0, type_name, l3 / 1048576.0, copies,
              copies == 1 ? "y" : "ies");

  // Activations for one M; with --bf16 rounded to bf16 (kept as fp32 for
  // ggml, whose bit patterns' top halves are woq's bf16 X).
  auto make_x = [&](uint64_t m) {
    std::mt19937 xrng{uint32_t(m)};
    std::vector<float> x(m * kmax);
    for (float& v : x) {
      v = dist(xrng) * 50;
      if (!a.bf16_x) continue;
      uint32_t u;
      std::memcpy(&u, &v, 4);
      u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
      std::memcpy(&v, &u, 4);
    }
    return x;
  };
  auto woq_x = [&](const std::vector<float>& x) {
    std::vector<uint16_t> b(a.bf16_x ? x.size() : 0);
    for (size_t i = 0; i < b.size(); ++i) {
      uint32_t u;
      std::memcpy(&u, &x[i], 4);
      b[i] = uint16_t(u >> 16);
    }
    return b;
  };
  const woq_dtype x_type = a.bf16_x ? WOQ_DTYPE_BF16 : WOQ_DTYPE_F32;
  // The first matrix's error on X's first rows, against ggml's dequantized
  // weights.
  auto reference_error = [&](const std::vector<float>& y, const std::vector<float>& x, uint64_t m) {
    return woq_bench::reference_error(y.data(), x.data(), m, s0.n, s0.k, w0.data());
  };
  std::vector<double> woq_error(ms.size());
  auto min_seconds = [&](uint64_t m) { return a.quick ? 0.05 : (m >= 64 ? 1.0 : 2.0); };
  auto min_reps = [](uint64_t m) { return m >= 64 ? 2 : 5; };

  std::vector<double> bandwidth;
  for (int threads : a.threads) bandwidth.push_back(read_bandwidth(threads, a.quick ? (256u << 20) : (1u << 30)));

  // 2. ggml's weights in each buffer type its CPU device offers, written
  //    once (a type's repacking happens here, as at llama.cpp's load).
  std::vector<void*> bufts = {g.dev_buffer_type(dev)};
  using ExtraBufts = void** (*)(void*);
  if (auto extra = reinterpret_cast<ExtraBufts>(
          g.reg_get_proc_address(g.dev_backend_reg(dev), "ggml_backend_dev_get_extra_bufts")))
    for (void** b = extra(dev); b && *b; ++b) bufts.push_back(*b);
  using SetThreads = void (*)(void*, int);
  auto set_threads =
      reinterpret_cast<SetThreads>(g.reg_get_proc_address(g.dev_backend_reg(dev), "ggml_backend_set_n_threads"));
  if (!set_threads) die("ggml's CPU backend has no ggml_backend_set_n_threads");
  void* backend = g.dev_init(dev, nullptr);
  if (!backend) die("ggml could not start its CPU backend");
  std::string offered;
  for (void* buft : bufts) offered += (offered.empty() ? "" : ", ") + std::string(g.buft_name(buft));
  for (const std::string& name : a.buffer_types)
    if (std::none_of(bufts.begin(), bufts.end(), [&](void* b) { return name == g.buft_name(b); }))
      die("ggml's CPU device has no buffer type " + name + " (it has " + offered + ")");
  std::vector<GgmlRun> runs;
  for (void* buft : bufts) {
    if (!a.buffer_types.empty() &&
        std::find(a.buffer_types.begin(), a.buffer_types.end(), g.buft_name(buft)) == a.buffer_types.end())
      continue;
    GgmlRun run{g.buft_name(buft), std::vector<std::vector<double>>(a.threads.size(), std::vector<double>(ms.size())),
                std::vector<double>(ms.size())};
    run.context = ggml_context(g, entries, false);
    for (size_t e = 0; e < entries; ++e) {
      const Shape& s = distinct[block[e % block.size()]];
      run.weights.push_back(g.new_tensor_2d(run.context, type, int64_t(s.k), int64_t(s.n)));
    }
    run.buffer = g.alloc_ctx_tensors_from_buft(run.context, buft);
    std::string refused;  // why this type is not run, if it is not
    if (!run.buffer) refused = "could not allocate the weights";
    // As llama.cpp asks before it puts a weight in a buffer type (a weight
    // an extra type cannot repack must not be written to it).
    if (run.buffer) {
      void* probe = ggml_context(g, 2 * block.size(), false);
      for (size_t e = 0; e < block.size(); ++e) {
        void* x = g.new_tensor_2d(probe, kGgmlF32, int64_t(distinct[block[e]].k), 1);
        if (!g.dev_supports_op(dev, g.mul_mat(probe, run.weights[e], x)))
          refused = "its CPU device does not take " + std::string(type_name) + " matmuls from it";
      }
      g.free(probe);
    }
    if (!refused.empty()) {
      std::printf("ggml buffer type %s: not run (%s)\n", run.name.c_str(), refused.c_str());
      if (run.buffer) g.buffer_free(run.buffer);
      g.free(run.context);
      continue;
    }
    for (size_t e = 0; e < entries; ++e) {
      void* src = host[block[e % block.size()]];
      g.tensor_set(run.weights[e], g.get_data(src), 0, g.nbytes(src));
    }
    runs.push_back(std::move(run));
  }
  if (runs.empty()) die("ggml ran on none of its buffer types");

  // 3. Per thread count and M: woq, then ggml on each buffer type, one
  //    right after the other (this VM's speed drifts over minutes). ggml
  //    runs one graph per pass holding every matmul in order, as llama.cpp
  //    computes a layer. The first copy's outputs are compared.
  std::vector<std::vector<double>> woq_time(a.threads.size(), std::vector<double>(ms.size()));
  std::string woq_kernel;
  double worst_difference = 0;
  for (size_t ti = 0; ti < a.threads.size(); ++ti) {
    woq_context* ctx = cpu_context(a.threads[ti], &woq_kernel);
    const std::vector<woq_tensor*> tensors = load_tensors(
        ctx, file, entries, [&](size_t e) { return "blk." + std::to_string(block[e % block.size()]) + ".weight"; });
    set_threads(backend, a.threads[ti]);
    for (size_t mi = 0; mi < ms.size(); ++mi) {
      const uint64_t m = ms[mi];
      const std::vector<float> x = make_x(m);
      const std::vector<uint16_t> xb = woq_x(x);
      const void* xw = xb.empty() ? static_cast<const void*>(x.data()) : xb.data();
      std::vector<std::vector<float>> woq_y;  // per block entry
      for (size_t e = 0; e < block.size(); ++e) {
        woq_y.emplace_back(m * distinct[block[e]].n);
        check(woq_matmul(ctx, tensors[e], xw, x_type, m, woq_y.back().data(), WOQ_DTYPE_F32), "woq_matmul");
      }
      woq_error[mi] = reference_error(woq_y[0], x, m);
      std::vector<float> y(m * nmax);
      woq_time[ti][mi] = time_pass(
                             [&] {
                               for (woq_tensor* t : tensors)
                                 check(woq_matmul(ctx, t, xw, x_type, m, y.data(), WOQ_DTYPE_F32), "woq_matmul");
                             },
                             min_seconds(m) * copies, min_reps(m)) /
                         copies;
      for (GgmlRun& run : runs) {
        void* cctx = ggml_context(g, 2 * entries + distinct.size(), true);
        std::vector<void*> xs(distinct.size()), outs;  // one activation tensor per shape (its K)
        for (size_t i = 0; i < distinct.size(); ++i)
          xs[i] = g.new_tensor_2d(cctx, kGgmlF32, int64_t(distinct[i].k), int64_t(m));
        void* graph = g.new_graph(cctx);
        for (size_t e = 0; e < entries; ++e) {
          outs.push_back(g.mul_mat(cctx, run.weights[e], xs[block[e % block.size()]]));
          g.build_forward_expand(graph, outs.back());
        }
        void* cbuf = g.alloc_ctx_tensors_from_buft(cctx, g.cpu_buffer_type());
        if (!cbuf) die("ggml could not allocate the activations");
        for (size_t i = 0; i < distinct.size(); ++i) g.tensor_set(xs[i], x.data(), 0, m * distinct[i].k * 4);
        auto compute = [&] {
          if (g.graph_compute(backend, graph) != 0) die("ggml_backend_graph_compute failed on " + run.name);
        };
        run.seconds[ti][mi] = time_pass(compute, min_seconds(m) * copies, min_reps(m)) / copies;
        for (size_t e = 0; e < block.size(); ++e) {
          const std::vector<float>& want = woq_y[e];
          std::vector<float> got(want.size());
          g.tensor_get(outs[e], got.data(), 0, got.size() * 4);
          double diff = 0, scale = 0;
          for (size_t i = 0; i < got.size(); ++i) {
            diff = std::max(diff, double(std::fabs(got[i] - want[i])));
            scale = std::max(scale, double(std::fabs(want[i])));
          }
          const double rel = diff / std::max(scale, 1e-30);
          worst_difference = std::max(worst_difference, rel);
          if (e == 0) run.error[mi] = reference_error(got, x, m);
          if (!(rel <= 0.05))
            die("ggml (" + run.name + ") and woq differ on " + distinct[block[e]].name + " at M = " + std::to_string(m) +
                ": largest difference " + std::to_string(rel) + " of the largest output");
        }
        g.buffer_free(cbuf);
        g.free(cctx);
      }
    }
    for (woq_tensor* t : tensors) woq_tensor_destroy(t);
    woq_context_destroy(ctx);
  }
  woq_file_close(file);
  for (GgmlRun& r : runs) {
    g.buffer_free(r.buffer);
    g.free(r.context);
  }
  g.backend_free(backend);
  g.free(host_ctx);

  // 4. The table: ms per block, GB/s of the blocks' bytes, woq's speedup
  //    over the fastest ggml buffer type.
  std::printf("woq kernels: %s\n\n", woq_kernel.c_str());
  std::printf("| threads | read BW GB/s | M | woq ms | woq GB/s |");
  for (const GgmlRun& r : runs) std::printf(" ggml %s ms |", r.name.c_str());
  std::printf(" best ggml GB/s | woq speedup |\n|--:|--:|--:|--:|--:|");
  for (size_t i = 0; i < runs.size(); ++i) std::printf("--:|");
  std::printf("--:|--:|\n");
  for (size_t ti = 0; ti < a.threads.size(); ++ti)
    for (size_t mi = 0; mi < ms.size(); ++mi) {
      const double woq_s = woq_time[ti][mi];
      std::printf("| %d | %.1f | %llu | %.2f | %.1f |", a.threads[ti], bandwidth[ti],
                  static_cast<unsigned long long>(ms[mi]), woq_s * 1e3, block_bytes / woq_s / 1e9);
      double best = 1e30;
      for (const GgmlRun& r : runs) {
        std::printf(" %.2f |", r.seconds[ti][mi] * 1e3);
        best = std::min(best, r.seconds[ti][mi]);
      }
      std::printf(" %.1f | %.2fx |\n", block_bytes / best / 1e9, best / woq_s);
    }
  std::printf("\n| M | woq error |");
  for (const GgmlRun& r : runs) std::printf(" ggml %s error |", r.name.c_str());
  std::printf("\n|--:|--:|");
  for (size_t i = 0; i < runs.size(); ++i) std::printf("--:|");
  std::printf("\n");
  for (size_t mi = 0; mi < ms.size(); ++mi) {
    std::printf("| %llu | %.2e |", static_cast<unsigned long long>(ms[mi]), woq_error[mi]);
    for (const GgmlRun& r : runs) std::printf(" %.2e |", r.error[mi]);
    std::printf("\n");
  }
  std::printf("(error: ||Y - Y64|| / ||Y64|| of %s on X's first rows, Y64 in float64 from ggml's dequantized weights)\n",
              s0.name.c_str());
  std::printf("\noutputs agree: largest difference %.2g of the largest output (ggml rounds X to Q8_0, woq keeps %s)\n",
              worst_difference, a.bf16_x ? "bf16" : "fp32");
  return 0;
}
