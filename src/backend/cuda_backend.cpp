// The CUDA backend: tensors and buffers in device memory of one GPU, kernels
// (kernels/cuda) on a stream of the context's own. Matmuls are queued on the
// stream and return (woq_context_synchronize waits); buffer writes and reads
// go through the same stream, so they are ordered with the matmuls, and
// reads, dequantize and uploads wait for their own work.
// cudart is linked statically, so libwoq.so loads on machines without CUDA;
// creating a CUDA context there fails with WOQ_ERR_UNSUPPORTED.
#include <cuda_runtime_api.h>

#include <string>
#include <vector>

#include "backend/backend.h"
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

class CudaTensor : public BackendTensor {
 public:
  cu::DeviceMatrix view;
  DeviceMemory codes, scales, zeros, bias, input_scales;
  // Host copies for woq_tensor_group / woq_tensor_bias (small).
  std::vector<uint16_t> host_scales;
  std::vector<uint8_t> host_zeros;
  std::vector<float> host_bias;
  std::vector<float> host_input_scales;
  uint32_t group_size = 0;
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
  CudaBackend(int device, cudaStream_t host_stream) : device_(device), owns_stream_(!host_stream) {
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
    if (owns_stream_) check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "stream creation");
    else stream_ = host_stream;
  }
  ~CudaBackend() override {
    if (!owns_stream_) return;
    cudaSetDevice(device_);
    cudaStreamDestroy(stream_);
  }

  BackendKind kind() const override { return BackendKind::Cuda; }
  const char* kernel_name() const override { return name_.c_str(); }

  std::unique_ptr<BackendTensor> upload(QuantizedMatrix&& matrix) override {
    check(cudaSetDevice(device_), "cudaSetDevice");
    auto t = std::make_unique<CudaTensor>();
    t->rows = matrix.rows;
    t->cols = matrix.cols;
    t->group_size = matrix.group_size;
    const kernels::QuantView v = matrix.view();
    if (v.group_size % 32 != 0 && v.group_size != v.cols)
      fail(Status::Unsupported, "the CUDA backend needs groups of a multiple of 32 inputs or one group per row; "
                                "this tensor has groups of " + std::to_string(v.group_size) + " (cols " +
                                std::to_string(v.cols) + ")");
    // GPU layout: kernels/cuda/layout.h (codes widened to 4- or 8-bit fields,
    // repacked into mma fragments; scales and zero-points group-major).
    const cu::FragmentMatrix f = cu::repack_fragments(v.codes, v.words_per_row, v.scales, v.zeros, v.rows, v.cols,
                                                      v.bits, v.group_size);
    t->codes = upload_vector(f.units, stream_, "upload of codes");
    t->scales = upload_vector(f.scales, stream_, "upload of scales");
    t->zeros = upload_vector(f.zeros, stream_, "upload of zero-points");
    if (!matrix.bias.empty()) t->bias = upload_vector(matrix.bias, stream_, "upload of bias");
    if (!matrix.input_scales.empty()) t->input_scales = upload_vector(matrix.input_scales, stream_, "upload of input scales");
    t->view.rows = v.rows;
    t->view.cols = v.cols;
    t->view.group_size = v.group_size;
    t->view.group_shift = f.shape.group_shift;
    t->view.field = f.shape.field;
    t->view.slices = f.shape.slices;
    t->view.steps = f.shape.steps;
    t->view.units = static_cast<const uint32_t*>(t->codes.get());
    t->view.scales = static_cast<const uint16_t*>(t->scales.get());
    t->view.zeros = static_cast<const uint8_t*>(t->zeros.get());
    t->view.bias = matrix.bias.empty() ? nullptr : static_cast<const float*>(t->bias.get());
    t->host_scales = std::move(matrix.scales);
    t->host_zeros = std::move(matrix.zeros);
    t->host_bias = std::move(matrix.bias);
    t->host_input_scales = std::move(matrix.input_scales);
    t->bytes = t->codes.bytes() + t->scales.bytes() + t->zeros.bytes() + t->bias.bytes() + t->input_scales.bytes();
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
    void* scaled = nullptr;
    if (t.input_scales.get()) {  // AWQ: X diag(input scales) in fp32, in stream-ordered memory
      check(cudaMallocAsync(&scaled, m * t.cols * sizeof(float), stream_), "allocation for AWQ-scaled X");
      check(cu::scale_inputs(x, x_type, m, t.cols, static_cast<const float*>(t.input_scales.get()),
                             static_cast<float*>(scaled), stream_),
            "input-scale kernel launch");
      x = scaled;
      x_type = cu::Dtype::F32;
    }
    const cudaError_t launched =
        cu::matmul(t.view, x, x_type, m, y, static_cast<cu::Dtype>(static_cast<int>(y_dtype)), stream_);
    if (scaled) cudaFreeAsync(scaled, stream_);
    check(launched, "matmul kernel launch");
  }

  void check_caller_memory(const void* x, const void* y) override {
    for (const auto& [name, p] : {std::pair<const char*, const void*>{"x", x}, {"y", y}}) {
      cudaPointerAttributes a{};
      const cudaError_t e = cudaPointerGetAttributes(&a, p);
      const bool device = e == cudaSuccess &&
                          (a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged) && a.device == device_;
      if (e != cudaSuccess) cudaGetLastError();  // clear the sticky-free error state of this thread
      if (!device)
        fail(Status::InvalidArgument,
             std::string(name) + " is not device memory of CUDA device " + std::to_string(device_) +
                 (e == cudaSuccess && a.type == cudaMemoryTypeDevice ? " (it belongs to device " + std::to_string(a.device) + ")"
                                                                     : " (host or unknown memory)") +
                 ": on a CUDA context woq_matmul takes device pointers; or use woq_buffer_create + woq_matmul_buffers");
    }
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
    check(cu::dequantize(t.view, static_cast<float*>(d.get()), stream_), "dequantize kernel launch");
    check(cudaMemcpyAsync(host.data(), d.get(), d.bytes(), cudaMemcpyDeviceToHost, stream_), "dequantize copy");
    check(cudaStreamSynchronize(stream_), "dequantize");
    const std::vector<float>& is = t.host_input_scales;
    for (uint64_t i = 0; i < host.size(); ++i)
      store_as(out, out_dtype, i, is.empty() ? host[i] : host[i] * is[i % t.cols]);
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
  int device_;
  bool owns_stream_;
  std::string name_;
  cudaStream_t stream_ = nullptr;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(int device_index, void* stream) {
  return std::make_unique<CudaBackend>(device_index, static_cast<cudaStream_t>(stream));
}

}  // namespace woq
