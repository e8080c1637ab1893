#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <new>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "kernels/cpu/numeric.h"
#include "kernels/cpu/packed.h"
#include "kernels/cpu/reference.h"
#include "runtime/error.h"
#include "runtime/thread_pool.h"

namespace woq {
namespace {

// A CPU tensor: repacked for the SIMD kernels when its shape allows
// (kernels/cpu/packed.h), else kept canonical for the reference kernel.
class CpuTensor : public BackendTensor {
 public:
  QuantizedMatrix canonical;  // used when !is_packed
  kernels::PackedMatrix packed;
  std::vector<float> input_scales;  // packed tensors: applied to X first
  std::vector<uint32_t> input_permutation;  // packed tensors: X's columns gathered first
  bool is_packed = false;
};

class CpuBuffer : public BackendBuffer {
 public:
  explicit CpuBuffer(uint64_t bytes) : size_(bytes) {
    // 64-byte alignment suits every SIMD load width.
    data_ = ::operator new((bytes + 63) / 64 * 64, std::align_val_t(64));
    std::memset(data_, 0, bytes);
  }
  ~CpuBuffer() override { ::operator delete(data_, std::align_val_t(64)); }
  uint64_t size() const override { return size_; }
  void write(uint64_t offset, const void* src, uint64_t bytes) override {
    std::memcpy(static_cast<uint8_t*>(data_) + offset, src, bytes);
  }
  void read(uint64_t offset, void* dst, uint64_t bytes) const override {
    std::memcpy(dst, static_cast<const uint8_t*>(data_) + offset, bytes);
  }
  void* data() override { return data_; }

 private:
  void* data_;
  uint64_t size_;
};

// The ISA a CPU context runs: the best the machine has, or WOQ_CPU_ISA
// (portable, avx2, avx512, avx512vnni, amx) when set, which tests use to cover
// every path.
kernels::Isa choose_isa() {
  const kernels::Isa best = kernels::detect_isa();
  const char* forced = std::getenv("WOQ_CPU_ISA");
  if (!forced || !*forced) return best;
  for (kernels::Isa isa : kernels::kAllIsas) {
    if (std::string(forced) != kernels::isa_name(isa)) continue;
    if (isa > best || !kernels::packed_matmul_for(isa))
      fail(Status::Unsupported, std::string("WOQ_CPU_ISA=") + forced + " is not supported by this CPU or build (best: " +
                                    kernels::isa_name(best) + ")");
    return isa;
  }
  fail(Status::InvalidArgument, std::string("WOQ_CPU_ISA=") + forced + " is not one of portable, avx2, avx512, avx512vnni, amx");
}

class CpuBackend : public Backend {
 public:
  CpuBackend(BackendKind kind, ThreadPool& pool) : kind_(kind), pool_(pool) {
    if (kind_ == BackendKind::Cpu) {
      isa_ = choose_isa();
      kernel_ = kernels::packed_matmul_for(isa_);
    }
  }
  BackendKind kind() const override { return kind_; }
  const char* kernel_name() const override {
    return kind_ == BackendKind::CpuReference ? "reference" : kernels::isa_name(isa_);
  }

  std::unique_ptr<BackendTensor> upload(QuantizedMatrix&& matrix) override {
    auto t = std::make_unique<CpuTensor>();
    t->rows = matrix.rows;
    t->cols = matrix.cols;
    const kernels::QuantView view = matrix.view();
    if (kind_ == BackendKind::Cpu && kernels::packable(view)) {
      t->packed = kernels::repack(view);
      t->input_scales = std::move(matrix.input_scales);
      t->input_permutation = std::move(matrix.input_permutation);
      t->is_packed = true;
      t->bytes = t->packed.bytes() + t->input_scales.size() * sizeof(float) +
                 t->input_permutation.size() * sizeof(uint32_t);
    } else {
      t->canonical = std::move(matrix);
      t->bytes = t->canonical.bytes();
    }
    return t;
  }

  std::unique_ptr<BackendBuffer> allocate(uint64_t bytes) override { return std::make_unique<CpuBuffer>(bytes); }

  void matmul(const BackendTensor& wt, const void* x, DType x_dtype, uint64_t m, void* y, DType y_dtype) override {
    const auto& t = static_cast<const CpuTensor&>(wt);
    if (!t.is_packed) {
      matmul_reference(t.canonical.view(), x, x_dtype, m, y, y_dtype);
      return;
    }
    const kernels::PackedMatrix& w = t.packed;
    const uint64_t K = w.cols, N = w.rows;
    // Row-wise work on X and Y (conversions, the activations' preparation):
    // more than kRowsPerTask rows are split over the pool, kRowsPerTask at a
    // time (a decode step's row stays on the calling thread).
    constexpr uint64_t kRowsPerTask = 8;
    const kernels::OverRows over_rows = [this, m](const std::function<void(uint64_t, uint64_t)>& rows) {
      const uint64_t tasks = (m + kRowsPerTask - 1) / kRowsPerTask;
      const auto task = [&](size_t i) { rows(i * kRowsPerTask, std::min(m, (i + 1) * kRowsPerTask)); };
      if (tasks > 1) pool_.parallel_for(tasks, task);
      else if (tasks == 1) task(0);
    };
    // Activations in fp32 (each calling thread keeps its buffers: no
    // allocation or zero-filling per call).
    thread_local std::vector<float> x_copy, y_copy;
    const float* xf = static_cast<const float*>(x);
    if (x_dtype != DType::F32 || !t.input_scales.empty() || !t.input_permutation.empty()) {
      if (x_copy.size() < m * K) x_copy.resize(m * K);
      float* xc = x_copy.data();
      const uint64_t row_bytes = K * dtype_size(x_dtype);
      over_rows([&](uint64_t r0, uint64_t r1) {
        if (!t.input_permutation.empty()) {
          for (uint64_t r = r0; r < r1; ++r)
            kernels::load_acts_gathered(static_cast<const uint8_t*>(x) + r * row_bytes, to_act(x_dtype),
                                        t.input_permutation.data(), K, xc + r * K);
          return;
        }
        kernels::load_acts(x, to_act(x_dtype), r0 * K, r1 * K, xc + r0 * K);
        if (!t.input_scales.empty())
          for (uint64_t r = r0; r < r1; ++r)
            for (uint64_t k = 0; k < K; ++k) xc[r * K + k] *= t.input_scales[k];
      });
      xf = xc;
    }
    // Per-group sums and the fixed-point kernels' form of X, once per call
    // (the rows of a large X on the pool's threads); each calling thread
    // keeps its own buffers.
    thread_local kernels::Activations this_threads;
    kernels::Activations& acts = this_threads;  // the pool's workers read the caller's, not their own
    acts.x = xf;
    acts.m = m;
    // AMX-BF16 can take X as it is (gathered is still exact; scaled is not)
    acts.x_is_bf16 = x_dtype == DType::BF16 && t.input_scales.empty();
    acts.y_is_16bit = y_dtype != DType::F32;
    kernels::prepare_activations(isa_, w, acts, over_rows);
    float* yf = static_cast<float*>(y);
    if (y_dtype != DType::F32) {
      if (y_copy.size() < m * N) y_copy.resize(m * N);
      yf = y_copy.data();
    }
    // A few tasks per thread balance the load without splitting blocks finely.
    const uint64_t tasks = std::min<uint64_t>(w.blocks, uint64_t(pool_.threads()) * 4);
    const uint64_t per_task = (w.blocks + tasks - 1) / tasks;
    pool_.parallel_for((w.blocks + per_task - 1) / per_task, [&](size_t i) {
      const uint64_t bb = i * per_task, be = std::min(w.blocks, bb + per_task);
      kernel_(w, acts, bb, be, yf);
    });
    if (y_dtype != DType::F32)
      over_rows([&](uint64_t r0, uint64_t r1) { kernels::store_acts(y, to_act(y_dtype), r0 * N, r1 * N, yf + r0 * N); });
    // Buffers of a large batch are not kept past the call.
    constexpr uint64_t kKeptFloats = uint64_t(16) << 20;
    for (std::vector<float>* v : {&x_copy, &y_copy})
      if (v->size() > kKeptFloats) std::vector<float>().swap(*v);
    if (acts.words.size > kKeptFloats) acts.words = {};  // digits or bf16 X, 4 bytes a word
  }

  void dequantize(const BackendTensor& wt, void* out, DType out_dtype) override {
    const auto& t = static_cast<const CpuTensor&>(wt);
    std::vector<float> row(t.cols), stored(t.cols);
    for (uint64_t n = 0; n < t.rows; ++n) {
      if (t.is_packed) {
        kernels::packed_dequantize_row(t.packed, n, stored.data());
        kernels::to_model_order(stored.data(), t.input_scales.empty() ? nullptr : t.input_scales.data(),
                                t.input_permutation.empty() ? nullptr : t.input_permutation.data(), t.cols, row.data());
      } else {
        kernels::reference_dequantize_row(t.canonical.view(), n, row.data());
      }
      for (uint64_t k = 0; k < t.cols; ++k) store_as(out, out_dtype, n * t.cols + k, row[k]);
    }
  }

  uint32_t group_size_of(const BackendTensor& wt) const override {
    const auto& t = static_cast<const CpuTensor&>(wt);
    return t.is_packed ? t.packed.group_size : t.canonical.group_size;
  }

  void group(const BackendTensor& wt, uint64_t row, uint64_t j, float* scale, int32_t* zero) override {
    const auto& t = static_cast<const CpuTensor&>(wt);
    if (!t.is_packed) {
      const uint64_t at = row * t.canonical.groups_per_row() + j;
      *scale = kernels::half_to_float(t.canonical.scales[at]);
      *zero = t.canonical.zeros[at];
      return;
    }
    // Packed: s and z - c are stored; an all-zero group was given s = 0.
    const kernels::PackedMatrix& p = t.packed;
    const uint64_t at = ((row / kernels::kBlockRows) * p.groups() + j) * kernels::kBlockRows + row % kernels::kBlockRows;
    *scale = kernels::half_to_float(p.scales.get()[at]);
    *zero = int32_t(p.center) + p.zero_offsets.get()[at];
  }

  bool bias(const BackendTensor& wt, float* out) override {
    const auto& t = static_cast<const CpuTensor&>(wt);
    const std::vector<float>& b = t.is_packed ? t.packed.bias : t.canonical.bias;
    if (b.empty()) return false;
    if (out) std::memcpy(out, b.data(), b.size() * sizeof(float));
    return true;
  }

 private:
  void matmul_reference(const kernels::QuantView& view, const void* x, DType x_dtype, uint64_t m, void* y,
                        DType y_dtype) {
    if (kind_ == BackendKind::CpuReference) {
      kernels::reference_matmul(view, x, to_act(x_dtype), m, y, to_act(y_dtype), 0, view.rows);
      return;
    }
    const uint64_t block = 64;
    pool_.parallel_for((view.rows + block - 1) / block, [&](size_t b) {
      const uint64_t begin = b * block, end = std::min(view.rows, begin + block);
      kernels::reference_matmul(view, x, to_act(x_dtype), m, y, to_act(y_dtype), begin, end);
    });
  }

  BackendKind kind_;
  ThreadPool& pool_;
  kernels::Isa isa_ = kernels::Isa::Portable;
  kernels::PackedMatmulFn kernel_ = nullptr;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(BackendKind kind, ThreadPool& pool) {
  return std::make_unique<CpuBackend>(kind, pool);
}

}  // namespace woq
