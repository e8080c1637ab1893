// CPU benchmark: woq_matmul over a whole transformer block's weights
// (working set far beyond the 32 MiB L3), against the DRAM read bandwidth and
// OpenBLAS fp32 sgemv / sgemm measured in the same run.
//
//   woq_cpu_bench [--quick] [--resident] [--bits 4|8] [--group 128] [--m M]... [--threads T] [--bf16|--fp16]
//                 [--y16] [--copies N]
//
// --bf16 / --fp16 pass 16-bit activations to woq (OpenBLAS gets the same
// values in fp32); with --y16 woq writes Y in that type too, as a 16-bit
// model's layers do (and its fixed-point kernels take two digits).
// --resident runs one 4096x4096 matrix (8.4 MiB at 4 bits)
// over and over, so that its weights stay in L3: the kernels' own speed,
// not DRAM's (not a DRAM benchmark: its GB/s are not comparable with the
// read bandwidth). --copies sets how many copies of the block woq cycles
// through (default: enough to fill twice the last-level cache).
//
// Shapes (N outputs x K inputs): Llama-7B block q,k,v,o 4096x4096,
// gate/up 11008x4096, down 4096x11008, plus Llama-3-8B up 14336x4096.
// Each timed pass runs every matrix once, in order, so each weight comes
// from DRAM. Effective bandwidth = packed weight bytes (codes + fp16 scales
// + zero-points) / time.
#include <cblas.h>
#include <immintrin.h>
#include <woq.h>

#include "bench_util.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

extern "C" void openblas_set_num_threads(int);
extern "C" char* openblas_get_corename(void);  // the kernels it runs here (OPENBLAS_CORETYPE overrides)

namespace {

using namespace woq_bench;

struct Args {
  bool quick = false;
  uint32_t bits = 4;
  uint32_t group = 128;
  std::vector<uint64_t> ms;  // empty: the default list
  std::vector<int> threads = {1, 2};
  bool bf16_x = false;  // activations in bf16 instead of fp32
  bool fp16_x = false;  // activations in fp16 instead of fp32
  bool y16 = false;     // Y in X's 16-bit type instead of fp32
  bool resident = false;
  int copies = 0;  // 0: enough to fill twice the last-level cache
};

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string s = argv[i];
    if (s == "--quick") a.quick = true;
    else if (s == "--bits" && i + 1 < argc) a.bits = uint32_t(std::atoi(argv[++i]));
    else if (s == "--group" && i + 1 < argc) a.group = uint32_t(std::atoi(argv[++i]));
    else if (s == "--m" && i + 1 < argc) a.ms.push_back(uint64_t(std::atoll(argv[++i])));
    else if (s == "--threads" && i + 1 < argc) a.threads = {std::atoi(argv[++i])};
    else if (s == "--bf16") a.bf16_x = true;
    else if (s == "--fp16") a.fp16_x = true;
    else if (s == "--y16") a.y16 = true;
    else if (s == "--resident") a.resident = true;
    else if (s == "--copies" && i + 1 < argc) a.copies = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr,
                   "usage: woq_cpu_bench [--quick] [--resident] [--bits B] [--group G] [--m M]... [--threads T] "
                   "[--bf16|--fp16] [--y16] [--copies N]\n");
      return 2;
    }
  }
  if (a.y16 && !a.bf16_x && !a.fp16_x) {
    std::fprintf(stderr, "woq_cpu_bench: --y16 needs --bf16 or --fp16 (Y takes X's 16-bit type)\n");
    return 2;
  }
  // The block: q, k, v, o, gate, up, down (Llama-7B), then Llama-3-8B's up.
  std::vector<Shape> distinct = {{"4096x4096", 4096, 4096}, {"11008x4096", 11008, 4096}, {"4096x11008", 4096, 11008},
                                 {"14336x4096", 14336, 4096}};
  std::vector<int> block = {0, 0, 0, 0, 1, 1, 2, 3};
  std::vector<uint64_t> ms = {1, 4, 16, 64, 256};
  if (a.quick) {
    distinct = {{"1024x1024", 1024, 1024}, {"2048x1024", 2048, 1024}};
    block = {0, 1};
    ms = {1, 16};
  }
  if (a.resident) {
    distinct = {{"4096x4096", 4096, 4096}};
    block = {0};
  }
  if (!a.ms.empty()) ms = a.ms;
  const char* x_name = a.bf16_x ? "bf16" : a.fp16_x ? "fp16" : "fp32";
  std::printf("woq CPU benchmark: %u-bit, group %u, %s activations, %s Y, libwoq %s, %u hardware threads\n", a.bits,
              a.group, x_name, a.y16 ? x_name : "fp32", woq_version_string(), std::thread::hardware_concurrency());
  // OpenBLAS picks its kernels by CPU model: one it does not know gets
  // older ones (0.3.21 runs Haswell's AVX2 kernels on Zen 5), a weaker
  // baseline than the machine allows.
  std::printf("baseline: OpenBLAS %s kernels\n", openblas_get_corename());

  // Quantize one matrix per distinct shape; every block entry gets its own copy.
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0.0f, 0.02f);
  std::vector<woq_qmatrix*> qms;
  std::vector<std::vector<float>> fp32;  // OpenBLAS operands, one per block entry
  uint64_t block_weights = 0;
  for (const Shape& s : distinct) {
    std::vector<float> w(s.n * s.k);
    for (float& v : w) v = dist(rng);
    woq_quant_options q;
    woq_quant_options_init(&q);
    q.bits = a.bits;
    q.group_size = a.group;
    woq_qmatrix* qm = nullptr;
    auto t0 = Clock::now();
    check(woq_quantize(w.data(), WOQ_DTYPE_F32, s.n, s.k, &q, &qm), "quantize");
    std::printf("quantized %s in %.2f s\n", s.name.c_str(), seconds_since(t0));
    qms.push_back(qm);
  }
  for (int idx : block) {
    const Shape& s = distinct[idx];
    block_weights += s.n * s.k;
    std::vector<float> w(s.n * s.k);
    for (float& v : w) v = dist(rng);
    fp32.push_back(std::move(w));
  }
  const uint64_t groups_per_weight_inv = a.group;
  const double packed_bytes =
      double(block_weights) * (a.bits / 8.0 + 3.0 / double(groups_per_weight_inv));  // codes + f16 scale + u8 zero
  // woq cycles through enough copies of the block that they fill twice the
  // last-level cache, so that its weights come from DRAM however large the
  // cache (the fp32 block is 8x larger and needs no copies).
  const double l3 = double(last_level_cache_bytes());
  const int copies = a.copies > 0               ? a.copies
                     : a.resident || a.quick ? 1
                                             : std::max(1, int(std::ceil(2 * l3 / packed_bytes)));
  std::printf("block: %zu matrices, %.1f M weights, %.1f MiB packed, %.1f MiB as fp32\n", block.size(),
              block_weights / 1e6, packed_bytes / 1048576.0, block_weights * 4 / 1048576.0);
  std::printf("last-level cache %.0f MiB: woq runs %d cop%s of the block in turn (times below are per block)\n\n",
              l3 / 1048576.0, copies, copies == 1 ? "y" : "ies");

  // Activations for one M: normal values; rounded to bf16 with --bf16
  // (fp32 runs keep full fp32 values, so no kernel can take bf16 shortcuts).
  uint64_t kmax = 0, nmax = 0;
  for (const Shape& s : distinct) kmax = std::max(kmax, s.k), nmax = std::max(nmax, s.n);
  auto make_x = [&](uint64_t m, std::vector<float>& x, std::vector<uint16_t>& xb) {
    std::mt19937 xrng{uint32_t(m)};
    x.resize(m * kmax);
    for (float& v : x) v = dist(xrng) * 50;
    xb.assign(a.bf16_x || a.fp16_x ? x.size() : 0, 0);
    for (size_t i = 0; i < xb.size(); ++i) {
      if (a.fp16_x) {
        const _Float16 h = _Float16(x[i]);
        std::memcpy(&xb[i], &h, 2);
        x[i] = float(h);
        continue;
      }
      uint32_t u;
      std::memcpy(&u, &x[i], 4);
      xb[i] = uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
      u = uint32_t(xb[i]) << 16;
      std::memcpy(&x[i], &u, 4);
    }
  };
  auto min_seconds = [&](uint64_t m) { return a.quick ? 0.05 : (m >= 64 ? 1.0 : 2.0); };
  auto min_reps = [](uint64_t m) { return m >= 64 ? 2 : 5; };

  // 1. Read bandwidth, before OpenBLAS has run: its worker threads spin for
  //    a while after each call and would steal the cores from what follows.
  // OpenBLAS's own pool is held to one thread until its turn: its idle
  // workers were seen to halve the two-thread read bandwidth measured here.
  openblas_set_num_threads(1);
  std::vector<double> bandwidth;
  for (int threads : a.threads) bandwidth.push_back(read_bandwidth(threads, a.quick ? (256u << 20) : (1u << 30)));

  // 2. woq, every thread count and M.
  std::vector<std::vector<double>> woq_time(a.threads.size(), std::vector<double>(ms.size()));
  std::vector<std::string> repack_lines;
  for (size_t ti = 0; ti < a.threads.size(); ++ti) {
    const int threads = a.threads[ti];
    std::string kernel;
    woq_context* ctx = cpu_context(threads, &kernel);
    std::vector<woq_tensor*> tensors;
    double upload_s = 0;  // of the first copy
    for (int c = 0; c < copies; ++c) {
      auto t0 = Clock::now();
      for (int idx : block) {
        woq_tensor* t = nullptr;
        check(woq_tensor_from_qmatrix(ctx, qms[idx], nullptr, &t), "upload");
        tensors.push_back(t);
      }
      if (c == 0) upload_s = seconds_since(t0);
    }
    char line[256];
    std::snprintf(line, sizeof line,
                  "%d thread(s), %s kernels: copy + repack of the whole block %.1f ms (%.2f GB/s of packed weights)",
                  threads, kernel.c_str(), upload_s * 1e3, packed_bytes / upload_s / 1e9);
    repack_lines.push_back(line);
    for (size_t mi = 0; mi < ms.size(); ++mi) {
      const uint64_t m = ms[mi];
      std::vector<float> x, y(m * nmax);
      std::vector<uint16_t> xb;
      make_x(m, x, xb);
      const void* x_woq = xb.empty() ? static_cast<const void*>(x.data()) : xb.data();
      const woq_dtype x_type = a.bf16_x ? WOQ_DTYPE_BF16 : a.fp16_x ? WOQ_DTYPE_F16 : WOQ_DTYPE_F32;
      const woq_dtype y_type = a.y16 ? x_type : WOQ_DTYPE_F32;  // y has room for either
      woq_time[ti][mi] = time_pass(
                             [&] {
                               for (size_t i = 0; i < tensors.size(); ++i)
                                 check(woq_matmul(ctx, tensors[i], x_woq, x_type, m, y.data(), y_type),
                                       "matmul");
                             },
                             min_seconds(m) * copies, min_reps(m)) /
                         copies;
    }
    for (woq_tensor* t : tensors) woq_tensor_destroy(t);
    woq_context_destroy(ctx);
  }

  // 3. OpenBLAS fp32 on the same shapes and activation values.
  std::printf("| threads | read BW GB/s | M | woq ms/pass | woq GB/s eff. | %% of read BW | OpenBLAS ms/pass | woq speedup |\n");
  std::printf("|--:|--:|--:|--:|--:|--:|--:|--:|\n");
  for (size_t ti = 0; ti < a.threads.size(); ++ti) {
    const int threads = a.threads[ti];
    openblas_set_num_threads(threads);
    for (size_t mi = 0; mi < ms.size(); ++mi) {
      const uint64_t m = ms[mi];
      std::vector<float> x, y(m * nmax);
      std::vector<uint16_t> xb;
      make_x(m, x, xb);
      const double blas_s = time_pass(
          [&] {
            for (size_t i = 0; i < block.size(); ++i) {
              const Shape& s = distinct[block[i]];
              if (m == 1)
                cblas_sgemv(CblasRowMajor, CblasNoTrans, int(s.n), int(s.k), 1.0f, fp32[i].data(), int(s.k), x.data(), 1,
                            0.0f, y.data(), 1);
              else
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(s.n), int(s.k), 1.0f, x.data(), int(s.k),
                            fp32[i].data(), int(s.k), 0.0f, y.data(), int(s.n));
            }
          },
          min_seconds(m), min_reps(m));
      const double woq_s = woq_time[ti][mi], bw = bandwidth[ti];
      const double gbs = packed_bytes / woq_s / 1e9;
      std::printf("| %d | %.1f | %llu | %.2f | %.1f | %.0f%% | %.2f | %.2fx |\n", threads, bw,
                  static_cast<unsigned long long>(m), woq_s * 1e3, gbs, 100 * gbs / bw, blas_s * 1e3, blas_s / woq_s);
      std::fflush(stdout);
    }
  }
  std::printf("\n");
  for (const auto& l : repack_lines) std::printf("%s\n", l.c_str());
  for (woq_qmatrix* q : qms) woq_qmatrix_destroy(q);
  return 0;
}
