// The CUDA backend: tensors and buffers in device memory of one GPU, kernels
// (kernels/cuda) on one stream, the context's own or one the host supplies.
// Matmuls are queued on the stream and return (woq_context_synchronize
// waits); buffer writes and reads go through the same stream, so they are
// ordered with the matmuls, and reads, dequantize and uploads wait for their
// own work. Uploads stream through pinned staging (upload_rows).
// cudart is linked statically, so libwoq.so loads on machines without CUDA;
// creating a CUDA context there fails with WOQ_ERR_UNSUPPORTED.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda_blas.h"
#include "kernels/cpu/numeric.h"
#include "kernels/cpu/reference.h"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/layout.h"
#include "runtime/error.h"

namespace woq {
namespace {

namespace cu = kernels::cuda;

[[noreturn]] void fail_cuda(cudaError_t e, const std::string& what) {
  fail(e == cudaErrorMemoryAllocation ? Status::OutOfMemory : Status::Internal,
       "CUDA " + what + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

void check(cudaError_t e, const std::string& what) {
  if (e != cudaSuccess) fail_cuda(e, what);
}

// Device memory freed with its owner.
class DeviceMemory {
 public:
  DeviceMemory() = default;
  explicit DeviceMemory(uint64_t bytes) : bytes_(bytes) {
    check(cudaMalloc(&ptr_, bytes ? bytes : 1), "allocation of " + std::to_string(bytes) + " bytes");
  }
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
  DeviceMemory(DeviceMemory&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr; }
  DeviceMemory& operator=(DeviceMemory&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  ~DeviceMemory() {
    if (ptr_) cudaFree(ptr_);
  }
  void* get() const { return ptr_; }
  uint64_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  uint64_t bytes_ = 0;
};

// Copies through the context's stream (a non-blocking stream does not wait
// for the legacy default stream that plain cudaMemcpy uses) and waits.
template <class T>
DeviceMemory upload_vector(const std::vector<T>& v, cudaStream_t stream, const char* what) {
  DeviceMemory d(v.size() * sizeof(T));
  if (!v.empty()) {
    check(cudaMemcpyAsync(d.get(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice, stream), what);
    check(cudaStreamSynchronize(stream), what);
  }
  return d;
}

// Page-locked host memory (so copies from it run asynchronously), or
// ordinary memory where the driver refuses to pin more.
class PinnedBuffer {
 public:
  explicit PinnedBuffer(uint64_t bytes) : bytes_(bytes) {
    if (cudaHostAlloc(&pinned_, bytes, cudaHostAllocDefault) != cudaSuccess) {
      cudaGetLastError();
      pinned_ = nullptr;
      pageable_.resize(bytes);
    }
  }
  ~PinnedBuffer() {
    if (pinned_) cudaFreeHost(pinned_);
  }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  uint8_t* data() { return pinned_ ? static_cast<uint8_t*>(pinned_) : pageable_.data(); }
  uint64_t size() const { return bytes_; }

 private:
  uint64_t bytes_;
  void* pinned_ = nullptr;
  std::vector<uint8_t> pageable_;
};

// Stream-ordered device memory for one call (cudaMallocAsync), freed in
// stream order when the call's scope ends, exception or not.
class StreamOrdered {
 public:
  explicit StreamOrdered(cudaStream_t stream) : stream_(stream) {}
  ~StreamOrdered() {
    if (ptr_) cudaFreeAsync(ptr_, stream_);
  }
  StreamOrdered(const StreamOrdered&) = delete;
  StreamOrdered& operator=(const StreamOrdered&) = delete;
  void allocate(uint64_t bytes, const char* what) { check(cudaMallocAsync(&ptr_, bytes ? bytes : 1, stream_), what); }
  void* get() const { return ptr_; }

 private:
  cudaStream_t stream_;
  void* ptr_ = nullptr;
};

// Device memory a context keeps from one call to the next, counted in its
// memory account; `captured`: a CUDA graph's kernels may point to it.
struct KeptMemory {
  DeviceMemory memory;
  std::unique_ptr<MemoryCharge> charge;
  bool captured = false;
};

class CudaTensor : public BackendTensor {
 public:
  cu::DeviceMatrix view;
  DeviceMemory codes, scales, zeros, bias, input_scales, input_permutation;
  // Host copies for woq_tensor_group / woq_tensor_bias (small).
  std::vector<uint16_t> host_scales;
  std::vector<uint8_t> host_zeros;
  std::vector<float> host_bias;
  std::vector<float> host_input_scales;
  std::vector<uint32_t> host_input_permutation;
  uint32_t group_size = 0;
  float max_abs_weight = 0;  // max |s (q - z)|: whether W_hat fits fp16
};

// Writes and reads are ordered with the context's matmuls on its stream and
// return when their copy is done (the host memory may then be reused).
class CudaBuffer : public BackendBuffer {
 public:
  CudaBuffer(int device, cudaStream_t stream, uint64_t bytes) : device_(device), stream_(stream), memory_(bytes) {
    check(cudaMemsetAsync(memory_.get(), 0, bytes, stream_), "buffer zero-fill");
    check(cudaStreamSynchronize(stream_), "buffer zero-fill");
  }
  uint64_t size() const override { return memory_.bytes(); }
  void write(uint64_t offset, const void* src, uint64_t bytes) override {
    check(cudaSetDevice(device_), "cudaSetDevice");
    check(cudaMemcpyAsync(static_cast<uint8_t*>(memory_.get()) + offset, src, bytes, cudaMemcpyHostToDevice, stream_),
          "buffer write");
    check(cudaStreamSynchronize(stream_), "buffer write (or a kernel queued before it)");
  }
  void read(uint64_t offset, void* dst, uint64_t bytes) const override {
    check(cudaSetDevice(device_), "cudaSetDevice");
    check(cudaMemcpyAsync(dst, static_cast<const uint8_t*>(memory_.get()) + offset, bytes, cudaMemcpyDeviceToHost,
                          stream_),
          "buffer read");
    check(cudaStreamSynchronize(stream_), "buffer read (or a kernel queued before it)");
  }
  void* data() override { return memory_.get(); }

 private:
  int device_;
  cudaStream_t stream_;
  DeviceMemory memory_;
};

class CudaBackend : public Backend {
 public:
  CudaBackend(int device, cudaStream_t host_stream, std::shared_ptr<MemoryAccount> account)
      : device_(device), owns_stream_(!host_stream), account_(std::move(account)) {
    int count = 0;
    const cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0)
      fail(Status::Unsupported,
           std::string("no usable CUDA device: cudaGetDeviceCount reported ") +
               (e != cudaSuccess ? std::string("'") + cudaGetErrorString(e) + "'" : std::string("no devices")) +
               (e == cudaErrorInsufficientDriver || e == cudaErrorNoDevice ? " (no NVIDIA driver or GPU here)" : "") +
               "; use WOQ_BACKEND_CPU");
    if (device < 0 || device >= count)
      fail(Status::InvalidArgument, "device_index " + std::to_string(device) + " is out of range: this machine has " +
                                        std::to_string(count) + " CUDA device(s)");
    check(cudaSetDevice(device_), "cudaSetDevice");
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, device_), "cudaGetDeviceProperties");
    name_ = "cuda-sm" + std::to_string(prop.major) + std::to_string(prop.minor);
    kernels_.multiprocessors = prop.multiProcessorCount;
    // A probe that cannot run (no memory pools, say) only means no wgmma kernel.
    const cudaError_t probe = cu::wgmma_supported(device_, &kernels_.wgmma);
    if (probe != cudaSuccess) cudaGetLastError();
    if (const char* forced = std::getenv("WOQ_CUDA_KERNEL")) {  // for benchmarks: one kernel at every M
      const std::string k = forced;
      if (k == "gemv") kernels_.kernel = cu::Kernel::Gemv;
      else if (k == "split") kernels_.kernel = cu::Kernel::Split;
      else if (k == "tile") kernels_.kernel = cu::Kernel::Tile;
      else if (k == "wgmma") kernels_.kernel = cu::Kernel::Wgmma;
      else if (k == "cublas") blas_forced_ = true;
      else if (k != "auto")
        fail(Status::InvalidArgument,
             "WOQ_CUDA_KERNEL=" + k + " is not one of auto, gemv, split, tile, wgmma, cublas");
      if (kernels_.kernel == cu::Kernel::Wgmma && !kernels_.wgmma) {
        std::string why = "this GPU is compute capability " + std::to_string(prop.major) + "." +
                          std::to_string(prop.minor);
        if (probe != cudaSuccess) why = std::string("the probe kernel failed: ") + cudaGetErrorString(probe);
        else if (prop.major == 9 && prop.minor == 0) why = "this build has no sm_90a code";
        fail(Status::Unsupported, "WOQ_CUDA_KERNEL=wgmma needs a compute capability 9.0 GPU and a build with 90a in "
                                  "CMAKE_CUDA_ARCHITECTURES (" + why + ")");
      }
      if (kernels_.kernel != cu::Kernel::Auto || blas_forced_) name_ += "-" + k;
    }
    const char* from = std::getenv("WOQ_CUDA_BLAS_MIN_ROWS");  // for benchmarks: Auto's switch to cuBLAS
    if (from) {
      if (kernels_.kernel != cu::Kernel::Auto || blas_forced_)
        fail(Status::InvalidArgument, std::string("WOQ_CUDA_BLAS_MIN_ROWS=") + from + " moves the automatic choice, "
                                      "but WOQ_CUDA_KERNEL=" + std::getenv("WOQ_CUDA_KERNEL") + " forces one path");
      blas_min_rows_ = parse_rows(from);
    }
    if (owns_stream_) check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "stream creation");
    else stream_ = host_stream;
    if (blas_forced_ || blas_min_rows_) {
      try {
        blas_ = std::make_unique<CudaBlas>(stream_);
      } catch (const Error& error) {
        if (blas_forced_ || from) {
          if (owns_stream_) cudaStreamDestroy(stream_);
          fail(error.status(), std::string(blas_forced_ ? "WOQ_CUDA_KERNEL=cublas: " : "WOQ_CUDA_BLAS_MIN_ROWS: ") +
                                   error.what());
        }
        blas_min_rows_ = 0;  // the built-in switch without cuBLAS here: the fused kernels at every M
      }
    }
    if (blas_min_rows_ && !blas_forced_) name_ += "-cublas-from-" + std::to_string(blas_min_rows_);
  }
  ~CudaBackend() override {
    cudaSetDevice(device_);
    blas_.reset();  // before its stream goes
    if (owns_stream_) cudaStreamDestroy(stream_);
  }

  BackendKind kind() const override { return BackendKind::Cuda; }
  const char* kernel_name() const override { return name_.c_str(); }

  std::unique_ptr<BackendTensor> upload(QuantizedMatrix&& matrix) override {
    RowSource source;
    source.rows = matrix.rows;
    source.cols = matrix.cols;
    source.bits = matrix.bits;
    source.group_size = matrix.group_size;
    source.read = [&](uint64_t b, uint64_t e) { return row_block(matrix, b, e); };
    return upload_rows(source);
  }

  // Blocks of rows go through two pinned staging buffers: while block i is
  // copied to the device, block i + 1 is read (its chunks decompressed on
  // the context's threads) and repacked into the other buffer.
  std::unique_ptr<BackendTensor> upload_rows(const RowSource& source) override {
    check(cudaSetDevice(device_), "cudaSetDevice");
    if (source.group_size % 32 != 0 && source.group_size != source.cols)
      fail(Status::Unsupported, "the CUDA backend needs groups of a multiple of 32 inputs or one group per row; "
                                "this tensor has groups of " + std::to_string(source.group_size) + " (cols " +
                                std::to_string(source.cols) + ")");
    const cu::FragmentShape shape = cu::fragment_shape(source.rows, source.cols, source.bits, source.group_size);
    const uint64_t stride = shape.padded_rows(), groups = shape.groups;
    const uint64_t slice_bytes = shape.steps * cu::kUnitBytes;
    auto t = std::make_unique<CudaTensor>();
    t->rows = source.rows;
    t->cols = source.cols;
    t->group_size = source.group_size;
    t->codes = DeviceMemory(shape.unit_count() * cu::kUnitBytes);
    t->scales = DeviceMemory(groups * stride * sizeof(uint16_t));
    t->zeros = DeviceMemory(groups * stride);
    t->host_scales.resize(source.rows * groups);
    t->host_zeros.resize(source.rows * groups);

    const uint64_t block_rows = cu::upload_block_rows(shape, source.rows_per_chunk, kStagingBytes);
    const uint64_t staging_bytes = block_rows / cu::kSliceRows * slice_bytes + groups * block_rows * 3;
    Staging staging(*this, staging_bytes);
    auto* d_codes = static_cast<uint8_t*>(t->codes.get());
    auto* d_scales = static_cast<uint16_t*>(t->scales.get());
    auto* d_zeros = static_cast<uint8_t*>(t->zeros.get());
    for (uint64_t b = 0, i = 0; b < source.rows; b += block_rows, ++i) {
      const uint64_t e = std::min(b + block_rows, source.rows), slices = (e - b + cu::kSliceRows - 1) / cu::kSliceRows;
      const QuantizedMatrix m = source.read(b, e);
      if (m.rows != e - b || m.cols != source.cols || m.bits != source.bits || m.group_size != source.group_size)
        fail(Status::Internal, "a block of rows read for upload does not match its tensor's shape");
      uint8_t* host = staging.wait(i % 2);  // its previous copy is done
      auto* units = reinterpret_cast<uint32_t*>(host);
      auto* scales = reinterpret_cast<uint16_t*>(host + slices * slice_bytes);
      auto* zeros = host + slices * slice_bytes + groups * slices * cu::kSliceRows * sizeof(uint16_t);
      const uint64_t block_stride = slices * cu::kSliceRows;
      cu::repack_fragments_into(m.codes.data(), m.words_per_row(), m.scales.data(), m.zeros.data(), m.rows, m.cols,
                                m.bits, m.group_size, units, scales, zeros, block_stride);
      check(cudaMemcpyAsync(d_codes + b / cu::kSliceRows * slice_bytes, units, slices * slice_bytes,
                            cudaMemcpyHostToDevice, stream_),
            "upload of codes");
      check(cudaMemcpy2DAsync(d_scales + b, stride * sizeof(uint16_t), scales, block_stride * sizeof(uint16_t),
                              block_stride * sizeof(uint16_t), groups, cudaMemcpyHostToDevice, stream_),
            "upload of scales");
      check(cudaMemcpy2DAsync(d_zeros + b, stride, zeros, block_stride, block_stride, groups, cudaMemcpyHostToDevice,
                              stream_),
            "upload of zero-points");
      staging.record(i % 2);
      std::copy(m.scales.begin(), m.scales.end(), t->host_scales.begin() + b * groups);
      std::copy(m.zeros.begin(), m.zeros.end(), t->host_zeros.begin() + b * groups);
      if (!m.bias.empty()) {
        t->host_bias.resize(source.rows);
        std::copy(m.bias.begin(), m.bias.end(), t->host_bias.begin() + b);
      }
      if (i == 0) {
        t->host_input_scales = m.input_scales;
        t->host_input_permutation = m.input_permutation;
      }
    }
    staging.finish();  // every copy done before the staging memory goes back to the pool
    if (!t->host_bias.empty()) t->bias = upload_vector(t->host_bias, stream_, "upload of bias");
    if (!t->host_input_scales.empty())
      t->input_scales = upload_vector(t->host_input_scales, stream_, "upload of input scales");
    if (!t->host_input_permutation.empty())
      t->input_permutation = upload_vector(t->host_input_permutation, stream_, "upload of the input permutation");
    t->view.rows = source.rows;
    t->view.cols = source.cols;
    t->view.group_size = source.group_size;
    t->view.group_shift = shape.group_shift;
    t->view.field = shape.field;
    t->view.slices = shape.slices;
    t->view.steps = shape.steps;
    t->view.units = static_cast<const uint32_t*>(t->codes.get());
    t->view.scales = static_cast<const uint16_t*>(t->scales.get());
    t->view.zeros = static_cast<const uint8_t*>(t->zeros.get());
    t->view.bias = t->host_bias.empty() ? nullptr : static_cast<const float*>(t->bias.get());
    t->bytes = t->codes.bytes() + t->scales.bytes() + t->zeros.bytes() + t->bias.bytes() + t->input_scales.bytes() +
               t->input_permutation.bytes();
    const float qmax = float((1u << source.bits) - 1);
    for (size_t i = 0; i < t->host_scales.size(); ++i) {
      const float z = float(t->host_zeros[i]);
      t->max_abs_weight = std::max(t->max_abs_weight,
                                   std::fabs(kernels::half_to_float(t->host_scales[i])) * std::max(z, qmax - z));
    }
    return t;
  }

  std::unique_ptr<BackendBuffer> allocate(uint64_t bytes) override {
    check(cudaSetDevice(device_), "cudaSetDevice");
    return std::make_unique<CudaBuffer>(device_, stream_, bytes);
  }

  void matmul(const BackendTensor& wt, const void* x, DType x_dtype, uint64_t m, void* y, DType y_dtype) override {
    const auto& t = static_cast<const CudaTensor&>(wt);
    check(cudaSetDevice(device_), "cudaSetDevice");
    auto x_type = static_cast<cu::Dtype>(static_cast<int>(x_dtype));
    StreamOrdered scaled(stream_), gathered(stream_);
    if (t.input_permutation.get()) {  // act-order: X's columns in the stored order, bit for bit
      gathered.allocate(m * t.cols * dtype_size(x_dtype), "allocation for the permuted X");
      check(cu::permute_inputs(x, x_type, m, t.cols, static_cast<const uint32_t*>(t.input_permutation.get()),
                               gathered.get(), stream_),
            "input-permutation kernel launch");
      x = gathered.get();
    }
    if (t.input_scales.get()) {  // AWQ: X diag(input scales) in fp32
      scaled.allocate(m * t.cols * sizeof(float), "allocation for AWQ-scaled X");
      check(cu::scale_inputs(x, x_type, m, t.cols, static_cast<const float*>(t.input_scales.get()),
                             static_cast<float*>(scaled.get()), stream_),
            "input-scale kernel launch");
      x = scaled.get();
      x_type = cu::Dtype::F32;
    }
    const auto y_type = static_cast<cu::Dtype>(static_cast<int>(y_dtype));
    if (blas_takes(t, x_type, m, y_type)) return blas_matmul(t, x, x_type, m, y, y_type, dtype_size(y_dtype));
    const uint64_t workspace = cu::matmul_workspace_floats(t.view, x_type, m, kernels_);
    if (!workspace) {
      check(cu::matmul(t.view, x, x_type, m, y, y_type, stream_, kernels_), "matmul kernel launch");
      return;
    }
    std::lock_guard<std::mutex> lock(workspace_mutex_);
    float* parts = static_cast<float*>(kept(workspace_, workspace * sizeof(float), "the split kernel's workspace"));
    check(cu::matmul(t.view, x, x_type, m, y, y_type, stream_, kernels_, parts), "matmul kernel launch");
  }

  // Device (or managed) pointers of this GPU run as woq_matmul_buffers does;
  // host X and Y are copied through stream-ordered device memory and the
  // call waits for Y. Anything else is refused by name.
  void matmul_caller_memory(const BackendTensor& wt, const void* x, DType x_dtype, uint64_t m, void* y,
                            DType y_dtype) override {
    check(cudaSetDevice(device_), "cudaSetDevice");
    const Where wx = where(x), wy = where(y);
    if (wx == Where::Device && wy == Where::Device) return matmul(wt, x, x_dtype, m, y, y_dtype);
    if (wx == Where::Host && wy == Where::Host && capturing())
      fail(Status::Unsupported, "x and y are host memory, which woq_matmul copies and waits for: that cannot be "
                                "captured into a CUDA graph; pass device memory of the context's GPU");
    if (wx != Where::Host || wy != Where::Host)
      fail(Status::InvalidArgument,
           std::string("x is ") + describe(wx) + " and y is " + describe(wy) + ": on CUDA device " +
               std::to_string(device_) + " woq_matmul takes both in its device memory (asynchronous) or both in "
               "host memory (copied, synchronous)");
    const uint64_t x_bytes = m * wt.cols * dtype_size(x_dtype), y_bytes = m * wt.rows * dtype_size(y_dtype);
    StreamOrdered dx(stream_), dy(stream_);
    dx.allocate(x_bytes, "allocation for X");
    dy.allocate(y_bytes, "allocation for Y");
    check(cudaMemcpyAsync(dx.get(), x, x_bytes, cudaMemcpyHostToDevice, stream_), "copy of X");
    matmul(wt, dx.get(), x_dtype, m, dy.get(), y_dtype);
    check(cudaMemcpyAsync(y, dy.get(), y_bytes, cudaMemcpyDeviceToHost, stream_), "copy of Y");
    check(cudaStreamSynchronize(stream_), "matmul");
  }

  void synchronize() override {
    check(cudaSetDevice(device_), "cudaSetDevice");
    check(cudaStreamSynchronize(stream_), "queued work");
  }

  void dequantize(const BackendTensor& wt, void* out, DType out_dtype) override {
    const auto& t = static_cast<const CudaTensor&>(wt);
    check(cudaSetDevice(device_), "cudaSetDevice");
    DeviceMemory d(t.rows * t.cols * sizeof(float));
    std::vector<float> host(t.rows * t.cols);
    check(cu::dequantize_rows(t.view, 0, t.rows, cu::Dtype::F32, d.get(), stream_), "dequantize kernel launch");
    check(cudaMemcpyAsync(host.data(), d.get(), d.bytes(), cudaMemcpyDeviceToHost, stream_), "dequantize copy");
    check(cudaStreamSynchronize(stream_), "dequantize");
    const float* is = t.host_input_scales.empty() ? nullptr : t.host_input_scales.data();
    const uint32_t* perm = t.host_input_permutation.empty() ? nullptr : t.host_input_permutation.data();
    std::vector<float> row(t.cols);
    for (uint64_t n = 0; n < t.rows; ++n) {
      kernels::to_model_order(host.data() + n * t.cols, is, perm, t.cols, row.data());
      for (uint64_t k = 0; k < t.cols; ++k) store_as(out, out_dtype, n * t.cols + k, row[k]);
    }
  }

  uint32_t group_size_of(const BackendTensor& wt) const override {
    return static_cast<const CudaTensor&>(wt).group_size;
  }

  void group(const BackendTensor& wt, uint64_t row, uint64_t j, float* scale, int32_t* zero) override {
    const auto& t = static_cast<const CudaTensor&>(wt);
    const uint64_t at = row * (t.cols / t.group_size) + j;
    *scale = kernels::half_to_float(t.host_scales[at]);
    *zero = t.host_zeros[at];
  }

  bool bias(const BackendTensor& wt, float* out) override {
    const auto& t = static_cast<const CudaTensor&>(wt);
    if (t.host_bias.empty()) return false;
    if (out) std::copy(t.host_bias.begin(), t.host_bias.end(), out);
    return true;
  }

 private:
  // Two pinned buffers of the pool and an event each; finish() (or the
  // destructor, when a read throws) waits for the copies before they return.
  class Staging {
   public:
    Staging(CudaBackend& owner, uint64_t bytes) : owner_(owner) {
      for (int i = 0; i < 2; ++i) {
        buffers_[i] = owner_.acquire_pinned(bytes);
        check(cudaEventCreateWithFlags(&done_[i], cudaEventDisableTiming), "upload event");
      }
    }
    ~Staging() {
      cudaStreamSynchronize(owner_.stream_);
      for (int i = 0; i < 2; ++i) {
        if (done_[i]) cudaEventDestroy(done_[i]);
        owner_.release_pinned(std::move(buffers_[i]));
      }
    }
    uint8_t* wait(int i) {
      if (used_[i]) check(cudaEventSynchronize(done_[i]), "upload copy");
      return buffers_[i]->data();
    }
    void record(int i) {
      check(cudaEventRecord(done_[i], owner_.stream_), "upload event");
      used_[i] = true;
    }
    void finish() { check(cudaStreamSynchronize(owner_.stream_), "upload"); }

   private:
    CudaBackend& owner_;
    std::unique_ptr<PinnedBuffer> buffers_[2];
    cudaEvent_t done_[2] = {nullptr, nullptr};
    bool used_[2] = {false, false};
  };

  std::unique_ptr<PinnedBuffer> acquire_pinned(uint64_t bytes) {
    {
      std::lock_guard<std::mutex> lock(pinned_mutex_);
      for (auto it = pinned_.begin(); it != pinned_.end(); ++it)
        if ((*it)->size() >= bytes) {
          std::unique_ptr<PinnedBuffer> b = std::move(*it);
          pinned_.erase(it);
          return b;
        }
    }
    return std::make_unique<PinnedBuffer>(std::max(bytes, kStagingBytes));
  }
  void release_pinned(std::unique_ptr<PinnedBuffer> b) {
    std::lock_guard<std::mutex> lock(pinned_mutex_);
    if (b && b->size() <= 4 * kStagingBytes && pinned_.size() < kPinnedKept) pinned_.push_back(std::move(b));
  }

  enum class Where { Device, OtherDevice, Host };
  Where where(const void* p) const {
    cudaPointerAttributes a{};
    if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
      cudaGetLastError();  // not CUDA's: ordinary host memory
      return Where::Host;
    }
    if (a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged)
      return a.device == device_ ? Where::Device : Where::OtherDevice;
    return Where::Host;  // unregistered or page-locked host memory
  }
  static const char* describe(Where w) {
    return w == Where::Device ? "device memory" : w == Where::OtherDevice ? "memory of another GPU" : "host memory";
  }

  // Whether the context's stream is capturing work into a CUDA graph (or
  // cannot say, which only a capture elsewhere in another mode causes).
  bool capturing() const {
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(stream_, &status) != cudaSuccess) {
      cudaGetLastError();
      return true;
    }
    return status != cudaStreamCaptureStatusNone;
  }

  // Memory kept for the next call (counted): replaced when a call needs
  // more. Called with workspace_mutex_ held, which keeps it from being
  // replaced between getting it and queueing the kernels that use it.
  // Memory that a captured graph's kernels point to is never freed before
  // the context: replaced, it is retired (and still counted). It cannot
  // grow during a capture (that needs a synchronize and an allocation).
  void* kept(KeptMemory& held, uint64_t bytes, const char* what) {
    const bool in_capture = capturing();
    if (held.memory.bytes() < bytes) {
      if (in_capture)
        fail(Status::Unsupported,
             std::string(what) + " must grow to " + std::to_string(bytes) + " bytes (it has " +
                 std::to_string(held.memory.bytes()) + "), which cannot happen while the stream is captured into "
                 "a CUDA graph: run one woq_matmul of this tensor and M outside the capture first");
      check(cudaStreamSynchronize(stream_), "queued work");  // kernels still using the old one
      if (held.captured) retired_.push_back(std::move(held));
      held = KeptMemory();
      held.memory = DeviceMemory(bytes);
      held.charge = std::make_unique<MemoryCharge>(account_, held.memory.bytes());
    }
    held.captured = held.captured || in_capture;
    return held.memory.get();
  }

  // WOQ_CUDA_BLAS_MIN_ROWS: a row count >= 1, or 0 for never.
  static uint64_t parse_rows(const std::string& text) {
    uint64_t rows = 0;
    const bool digits = !text.empty() && text.size() <= 9 &&
                        std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (!digits)
      fail(Status::InvalidArgument, "WOQ_CUDA_BLAS_MIN_ROWS=" + text + " is not a row count (0 .. 999999999)");
    for (char c : text) rows = rows * 10 + uint64_t(c - '0');
    return rows;
  }

  // Dequantize + cuBLAS (WOQ_CUDA_KERNEL=cublas, or Auto from
  // blas_min_rows_ rows) takes 16-bit X whose type cuBLAS pairs with Y's,
  // and weights that fit that type; AWQ tensors (fp32 X by then) and the
  // rest run the fused kernels.
  bool blas_takes(const CudaTensor& t, cu::Dtype x_type, uint64_t m, cu::Dtype y_type) const {
    if (!blas_ || (!blas_forced_ && m < blas_min_rows_)) return false;
    if (x_type == cu::Dtype::F32 || (y_type != x_type && y_type != cu::Dtype::F32)) return false;
    return x_type == cu::Dtype::BF16 || t.max_abs_weight <= 65504.0f;
  }

  // W_hat in X's type, a chunk of rows at a time into memory kept by the
  // context, each chunk's product by cuBLAS into its columns of Y (in stream
  // order, so the next chunk's dequantization waits for the product).
  void blas_matmul(const CudaTensor& t, const void* x, cu::Dtype x_type, uint64_t m, void* y, cu::Dtype y_type,
                   uint64_t y_size) {
    if (m == 0) return;
    const uint64_t chunk = blas_chunk_rows(t.rows, t.cols);
    std::lock_guard<std::mutex> lock(workspace_mutex_);
    void* w16 = kept(blas_weights_, chunk * t.cols * 2, "dequantize + cuBLAS's weights");
    for (uint64_t first = 0; first < t.rows; first += chunk) {
      const uint64_t rows = std::min(chunk, t.rows - first);
      check(cu::dequantize_rows(t.view, first, rows, x_type, w16, stream_), "dequantize kernel launch");
      blas_->gemm(rows, m, t.cols, w16, x, x_type, static_cast<uint8_t*>(y) + first * y_size, y_type, t.rows);
    }
    if (t.view.bias) check(cu::add_bias(y, y_type, m, t.rows, t.view.bias, stream_), "bias kernel launch");
  }

  // Rows of W_hat a chunk: whole slices, at least kBlasChunkBytes' worth
  // (cache-sized, for small layers) or a quarter of the rows (few products
  // of cuBLAS's favourite sizes, for large ones).
  static uint64_t blas_chunk_rows(uint64_t rows, uint64_t cols) {
    const auto slices = [](uint64_t r) { return (r + cu::kSliceRows - 1) / cu::kSliceRows * cu::kSliceRows; };
    const uint64_t cached = std::max<uint64_t>(cu::kSliceRows, kBlasChunkBytes / (2 * cols) / cu::kSliceRows *
                                                                   cu::kSliceRows);
    return std::min(slices(rows), std::max(cached, slices((rows + 3) / 4)));
  }

  static constexpr uint64_t kBlasChunkBytes = 32ull << 20;
  static constexpr uint64_t kStagingBytes = 8ull << 20;
  static constexpr size_t kPinnedKept = 4;  // two concurrent uploads
  int device_;
  bool owns_stream_;
  std::string name_;
  cu::KernelChoice kernels_;  // the forced kernel, if any, and whether the wgmma kernel runs here
  std::shared_ptr<MemoryAccount> account_;
  std::mutex workspace_mutex_;
  KeptMemory workspace_;  // the split kernel's per-part sums
  bool blas_forced_ = false;     // WOQ_CUDA_KERNEL=cublas
  // Auto hands 16-bit X of at least this many rows to dequantize + cuBLAS
  // (0: never). Not the fused kernels' bits: rows then depend on the batch
  // across this M. 0 until a GPU's numbers show cuBLAS winning there
  // (docs/CUDA.md); WOQ_CUDA_BLAS_MIN_ROWS sets it for a context.
  static constexpr uint64_t kAutoBlasMinRows = 0;
  uint64_t blas_min_rows_ = kAutoBlasMinRows;
  std::unique_ptr<CudaBlas> blas_;  // loaded when forced or from a row count
  KeptMemory blas_weights_;      // a chunk of W_hat in 16 bits
  std::vector<KeptMemory> retired_;  // replaced, but a captured graph may still use it
  cudaStream_t stream_ = nullptr;
  std::mutex pinned_mutex_;
  std::vector<std::unique_ptr<PinnedBuffer>> pinned_;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(int device_index, void* stream, std::shared_ptr<MemoryAccount> account) {
  return std::make_unique<CudaBackend>(device_index, static_cast<cudaStream_t>(stream), std::move(account));
}

}  // namespace woq
