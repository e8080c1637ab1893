// An emulated CUDA runtime: the cudart calls the CUDA backend and the gpu
// tests make, on the CPU, so that the backend (src/backend/cuda_backend.cpp)
// and the kernels (on the warp emulator, cuda_emulator.h) run through the C
// API where there is no GPU: woq_gpu_tests_emulated. One device of compute
// capability 9.0 and kMultiprocessors SMs; "device memory" is host memory
// that this runtime hands out and tracks, so copies and fills into it are
// checked against the allocation they land in, and cudaPointerGetAttributes
// tells device from host memory as the driver does.
//
// Work on a stream runs at once, in order (a stream's order is all CUDA
// promises); on a stream being captured (cudaStreamBeginCapture) it is
// recorded instead, and a graph launch runs the records. Calls the
// runtime forbids during a global-mode capture (synchronizing the stream,
// allocating, synchronous copies) fail and invalidate the capture, as they
// do on a GPU. What is not emulated (stream-ordered allocation during a
// capture, other capture modes' relaxations) fails with
// cudaErrorNotSupported rather than passing unnoticed. Not emulated at
// all: concurrency between streams and the host, and timing.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "tests/emulator/cuda_emulator.h"

struct CUstream_st {
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  std::vector<std::function<void()>> recorded;  // the capture's work, in order
};
struct CUevent_st {};
struct CUgraph_st {
  std::vector<std::function<void()>> work;
};
struct CUgraphExec_st {
  std::vector<std::function<void()>> work;
};

namespace {

constexpr int kMultiprocessors = 4;  // few: grids of a few blocks already fill "the GPU"

struct Allocation {
  size_t bytes;
  cudaMemoryType type;
};

struct Runtime {
  std::recursive_mutex mutex;
  std::map<uintptr_t, Allocation> allocations;  // by start
  int global_captures = 0;                      // streams capturing in global mode
};
Runtime& runtime() {
  static Runtime r;
  return r;
}
thread_local cudaError_t last_error = cudaSuccess;
thread_local int current_device = 0;

cudaError_t failed(cudaError_t e) {
  if (e != cudaSuccess) last_error = e;
  return e;
}

bool is_legacy(cudaStream_t s) { return s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread; }

// The allocation [p, p + bytes) lies in, or null.
const Allocation* find(const void* p, size_t bytes) {
  auto& all = runtime().allocations;
  const auto at = reinterpret_cast<uintptr_t>(p);
  auto it = all.upper_bound(at);
  if (it == all.begin()) return nullptr;
  --it;
  if (at < it->first || at + bytes > it->first + std::max<size_t>(it->second.bytes, 1)) return nullptr;
  return &it->second;
}

// A copy's or fill's device side must lie in one live device allocation:
// the check the hardware makes only by faulting.
cudaError_t check_device_range(const void* p, size_t bytes, const char* what) {
  const Allocation* a = find(p, bytes);
  if (a && (a->type == cudaMemoryTypeDevice || a->type == cudaMemoryTypeManaged)) return cudaSuccess;
  std::fprintf(stderr, "emulated CUDA: %s of %zu bytes at %p is not within a device allocation\n", what, bytes, p);
  return cudaErrorInvalidValue;
}

cudaError_t check_kind(cudaMemcpyKind kind, void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return cudaSuccess;
  cudaError_t e = cudaSuccess;
  if (kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice) e = check_device_range(dst, bytes, "copy to");
  if (e == cudaSuccess && (kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice))
    e = check_device_range(src, bytes, "copy from");
  if (kind == cudaMemcpyHostToHost || kind == cudaMemcpyDefault) e = cudaErrorNotSupported;
  return e;
}

// Runs `work` on `stream` now, or records it when the stream is capturing.
cudaError_t submit(cudaStream_t stream, std::function<void()> work) {
  if (!is_legacy(stream)) {
    std::lock_guard<std::recursive_mutex> lock(runtime().mutex);
    if (stream->capture == cudaStreamCaptureStatusInvalidated) return failed(cudaErrorStreamCaptureInvalidated);
    if (stream->capture == cudaStreamCaptureStatusActive) {
      stream->recorded.push_back(std::move(work));
      return cudaSuccess;
    }
  } else if (runtime().global_captures > 0) {
    return failed(cudaErrorStreamCaptureImplicit);  // the legacy stream would wait for a capturing one
  }
  work();
  return cudaSuccess;
}

// Potentially unsafe calls while any stream captures in global mode: they
// fail and invalidate those captures.
bool refuse_during_capture() {
  std::lock_guard<std::recursive_mutex> lock(runtime().mutex);
  if (runtime().global_captures == 0) return false;
  last_error = cudaErrorStreamCaptureUnsupported;
  return true;
}

// Launches of the emulated kernels on a capturing stream (or on the legacy
// stream during a capture) go through submit; others run at once.
bool record_kernel(cudaStream_t stream, std::function<void()>& launch, cudaError_t& status) {
  {
    std::lock_guard<std::recursive_mutex> lock(runtime().mutex);
    if (is_legacy(stream) ? runtime().global_captures == 0 : stream->capture == cudaStreamCaptureStatusNone)
      return false;
  }
  status = submit(stream, std::move(launch));
  return true;
}
[[maybe_unused]] const bool hooked = (emu::record_launch = record_kernel, true);

void* allocate(size_t bytes, cudaMemoryType type) {
  void* p = std::aligned_alloc(256, (std::max<size_t>(bytes, 1) + 255) / 256 * 256);
  if (!p) return nullptr;
  std::lock_guard<std::recursive_mutex> lock(runtime().mutex);
  runtime().allocations[reinterpret_cast<uintptr_t>(p)] = Allocation{bytes, type};
  return p;
}
cudaError_t release(void* p, cudaMemoryType type) {
  if (!p) return cudaSuccess;
  std::lock_guard<std::recursive_mutex> lock(runtime().mutex);
  auto it = runtime().allocations.find(reinterpret_cast<uintptr_t>(p));
  if (it == runtime().allocations.end() || it->second.type != type) return failed(cudaErrorInvalidValue);
  runtime().allocations.erase(it);
  std::free(p);
  return cudaSuccess;
}

}  // namespace

// Visible to the emulated cuBLAS, which the backend dlopens.
#pragma GCC visibility push(default)
extern "C" {

const char* CUDARTAPI cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDeviceFunction: return "cudaErrorInvalidDeviceFunction";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureImplicit: return "cudaErrorStreamCaptureImplicit";
    default: return "cudaError (emulated runtime: unnamed)";
  }
}
const char* CUDARTAPI cudaGetErrorString(cudaError_t e) {
  return e == cudaSuccess ? "no error" : cudaGetErrorName(e);
}
cudaError_t CUDARTAPI cudaGetLastError(void) {
  const cudaError_t e = last_error;
  last_error = cudaSuccess;
  return e;
}

cudaError_t CUDARTAPI cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaSetDevice(int device) {
  if (device != 0) return failed(cudaErrorInvalidDevice);
  current_device = device;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device != 0) return failed(cudaErrorInvalidDevice);
  *prop = cudaDeviceProp{};
  std::snprintf(prop->name, sizeof prop->name, "woq CPU emulation of a CUDA device");
  prop->major = 9;
  prop->minor = 0;
  prop->multiProcessorCount = kMultiprocessors;
  prop->totalGlobalMem = size_t(1) << 34;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  prop->sharedMemPerBlockOptin = 227 * 1024;
  prop->l2CacheSize = 1 << 20;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaMalloc(void** p, size_t bytes) {
  *p = nullptr;
  if (refuse_during_capture()) return cudaErrorStreamCaptureUnsupported;
  *p = allocate(bytes, cudaMemoryTypeDevice);
  return *p ? cudaSuccess : failed(cudaErrorMemoryAllocation);
}
cudaError_t CUDARTAPI cudaFree(void* p) {
  if (refuse_during_capture()) return cudaErrorStreamCaptureUnsupported;
  return release(p, cudaMemoryTypeDevice);
}
cudaError_t CUDARTAPI cudaHostAlloc(void** p, size_t bytes, unsigned int /*flags*/) {
  *p = nullptr;
  if (refuse_during_capture()) return cudaErrorStreamCaptureUnsupported;
  *p = allocate(bytes, cudaMemoryTypeHost);
  return *p ? cudaSuccess : failed(cudaErrorMemoryAllocation);
}
cudaError_t CUDARTAPI cudaFreeHost(void* p) {
  if (refuse_during_capture()) return cudaErrorStreamCaptureUnsupported;
  return release(p, cudaMemoryTypeHost);
}
cudaError_t CUDARTAPI cudaMallocAsync(void** p, size_t bytes, cudaStream_t stream) {
  *p = nullptr;
  if (!is_legacy(stream) && stream->capture != cudaStreamCaptureStatusNone) return failed(cudaErrorNotSupported);
  *p = allocate(bytes, cudaMemoryTypeDevice);
  return *p ? cudaSuccess : failed(cudaErrorMemoryAllocation);
}
cudaError_t CUDARTAPI cudaFreeAsync(void* p, cudaStream_t stream) {
  if (!is_legacy(stream) && stream->capture != cudaStreamCaptureStatusNone) return failed(cudaErrorNotSupported);
  return release(p, cudaMemoryTypeDevice);
}

cudaError_t CUDARTAPI cudaPointerGetAttributes(cudaPointerAttributes* a, const void* p) {
  *a = cudaPointerAttributes{};
  std::lock_guard<std::recursive_mutex> lock(runtime().mutex);
  const Allocation* found = find(p, 1);
  a->type = found ? found->type : cudaMemoryTypeUnregistered;
  a->device = found ? 0 : -2;
  if (found && found->type != cudaMemoryTypeHost) a->devicePointer = const_cast<void*>(p);
  if (!found || found->type != cudaMemoryTypeDevice) a->hostPointer = const_cast<void*>(p);
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                                      cudaStream_t stream) {
  if (const cudaError_t e = check_kind(kind, dst, src, bytes); e != cudaSuccess) return failed(e);
  return submit(stream, [=] { std::memcpy(dst, src, bytes); });
}
cudaError_t CUDARTAPI cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width,
                                        size_t height, cudaMemcpyKind kind, cudaStream_t stream) {
  if (width > dpitch || width > spitch) return failed(cudaErrorInvalidPitchValue);
  if (height == 0 || width == 0) return cudaSuccess;
  const size_t dst_span = (height - 1) * dpitch + width, src_span = (height - 1) * spitch + width;
  if (kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice)
    if (const cudaError_t e = check_device_range(dst, dst_span, "2D copy to"); e != cudaSuccess) return failed(e);
  if (kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice)
    if (const cudaError_t e = check_device_range(src, src_span, "2D copy from"); e != cudaSuccess) return failed(e);
  return submit(stream, [=] {
    for (size_t r = 0; r < height; ++r)
      std::memcpy(static_cast<char*>(dst) + r * dpitch, static_cast<const char*>(src) + r * spitch, width);
  });
}
cudaError_t CUDARTAPI cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t stream) {
  if (bytes && check_device_range(p, bytes, "fill") != cudaSuccess) return failed(cudaErrorInvalidValue);
  return submit(stream, [=] { std::memset(p, value, bytes); });
}
cudaError_t CUDARTAPI cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (refuse_during_capture()) return cudaErrorStreamCaptureUnsupported;
  return cudaMemcpyAsync(dst, src, bytes, kind, nullptr);
}
cudaError_t CUDARTAPI cudaMemset(void* p, int value, size_t bytes) {
  if (refuse_during_capture()) return cudaErrorStreamCaptureUnsupported;
  return cudaMemsetAsync(p, value, bytes, nullptr);
}

cudaError_t CUDARTAPI cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int /*flags*/) {
  *stream = new CUstream_st;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaStreamDestroy(cudaStream_t stream) {
  if (is_legacy(stream)) return failed(cudaErrorInvalidResourceHandle);
  if (stream->capture != cudaStreamCaptureStatusNone) return failed(cudaErrorStreamCaptureUnsupported);
  delete stream;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaStreamSynchronize(cudaStream_t stream) {
  std::lock_guard<std::recursive_mutex> lock(runtime().mutex);
  if (!is_legacy(stream) && stream->capture != cudaStreamCaptureStatusNone) {
    if (stream->capture == cudaStreamCaptureStatusActive) --runtime().global_captures;
    stream->capture = cudaStreamCaptureStatusInvalidated;
    return failed(cudaErrorStreamCaptureUnsupported);
  }
  if (is_legacy(stream) && runtime().global_captures > 0) return failed(cudaErrorStreamCaptureImplicit);
  return cudaSuccess;  // its work has run already
}
cudaError_t CUDARTAPI cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus* status) {
  std::lock_guard<std::recursive_mutex> lock(runtime().mutex);
  *status = is_legacy(stream) ? cudaStreamCaptureStatusNone : stream->capture;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode) {
  if (is_legacy(stream)) return failed(cudaErrorStreamCaptureUnsupported);
  if (mode != cudaStreamCaptureModeGlobal) return failed(cudaErrorNotSupported);
  std::lock_guard<std::recursive_mutex> lock(runtime().mutex);
  if (stream->capture != cudaStreamCaptureStatusNone) return failed(cudaErrorIllegalState);
  stream->capture = cudaStreamCaptureStatusActive;
  stream->recorded.clear();
  ++runtime().global_captures;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  *graph = nullptr;
  if (is_legacy(stream)) return failed(cudaErrorIllegalState);
  std::lock_guard<std::recursive_mutex> lock(runtime().mutex);
  const cudaStreamCaptureStatus was = stream->capture;
  if (was == cudaStreamCaptureStatusNone) return failed(cudaErrorIllegalState);
  if (was == cudaStreamCaptureStatusActive) --runtime().global_captures;
  stream->capture = cudaStreamCaptureStatusNone;
  if (was == cudaStreamCaptureStatusInvalidated) return failed(cudaErrorStreamCaptureInvalidated);
  *graph = new CUgraph_st{std::move(stream->recorded)};
  stream->recorded.clear();
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long /*flags*/) {
  *exec = new CUgraphExec_st{graph->work};
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  if (!is_legacy(stream) && stream->capture != cudaStreamCaptureStatusNone) return failed(cudaErrorNotSupported);
  for (const auto& work : exec->work) work();
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}

cudaError_t CUDARTAPI cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int /*flags*/) {
  *event = new CUevent_st;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaEventRecord(cudaEvent_t /*event*/, cudaStream_t stream) {
  return submit(stream, [] {});  // what came before it on the stream has run
}
cudaError_t CUDARTAPI cudaEventSynchronize(cudaEvent_t /*event*/) {
  if (refuse_during_capture()) return cudaErrorStreamCaptureUnsupported;
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaEventDestroy(cudaEvent_t event) {
  delete event;
  return cudaSuccess;
}

}  // extern "C"
#pragma GCC visibility pop
