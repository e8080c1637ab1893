// An emulated CUDA runtime: the cudart calls the CUDA backend and the gpu
// tests make, on the CPU, so that the backend (src/backend/cuda_backend.cpp)
// and the kernels (on the warp emulator, cuda_emulator.h) run through the C
// API where there is no GPU: woq_gpu_tests_emulated. One device of compute
// capability 9.0 and kMultiprocessors SMs; "device memory" is host memory
// that this runtime hands out and tracks, so copies and fills into it are
// checked against the allocation they land in, and cudaPointerGetAttributes
// tells device from host memory as the driver does.
//
// Work queued on a stream runs in order but as late as CUDA allows: when
// the host waits for it (cudaStreamSynchronize, an event recorded after
// it, a synchronous copy to pageable memory, cudaFree's implicit device
// synchronization, the stream's destruction). So a host that reuses or
// reads memory a queued copy or kernel still uses, or frees it early,
// computes wrong numbers here as it could on a GPU. Copies from pageable
// host memory read it at the call (CUDA stages them), into pageable host
// memory they wait for the stream; pinned memory (cudaHostAlloc) is read
// and written when the copy runs. On a stream being captured
// (cudaStreamBeginCapture) work is recorded instead, and a graph launch
// queues the records. Calls the runtime forbids during a global-mode
// capture (synchronizing the stream, allocating, synchronous copies) fail
// and invalidate the capture, as they do on a GPU. What is not emulated
// (stream-ordered allocation during a capture, pageable copies in a
// capture, other capture modes' relaxations) fails with
// cudaErrorNotSupported rather than passing unnoticed. Not emulated at
// all: concurrency (one thing runs at a time) and timing.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <vector>

#include "tests/emulator/cuda_emulator.h"

struct CUstream_st {
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  std::vector<std::function<void()>> recorded;  // the capture's work, in order
  std::deque<std::function<void()>> queued;     // not run yet, oldest first
  uint64_t submitted = 0, completed = 0;        // counts of work queued, run
};
// When an event's place in its stream was reached (host time, for
// cudaEventElapsedTime); shared with the queued work that stamps it.
struct EventStamp {
  bool reached = false;
  std::chrono::steady_clock::time_point at;
};
struct CUevent_st {
  cudaStream_t stream = nullptr;  // where it was last recorded, and after how much work
  uint64_t after = 0;
  std::shared_ptr<EventStamp> stamp;
};
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
  std::set<cudaStream_t> streams;               // created, not destroyed
  int global_captures = 0;                      // streams capturing in global mode
};
Runtime& runtime() {
  static Runtime r;
  return r;
}
thread_local cudaError_t last_error = cudaSuccess;

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
  std::lock_guard<std::recursive_mutex> lock(runtime().mutex);
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

bool pinned(const void* p, size_t bytes) {
  std::lock_guard<std::recursive_mutex> lock(runtime().mutex);
  const Allocation* a = find(p, std::max<size_t>(bytes, 1));
  return a && a->type == cudaMemoryTypeHost;
}

// Runs `stream`'s queued work until `count` items have run.
void run_until(cudaStream_t stream, uint64_t count) {
  std::lock_guard<std::recursive_mutex> lock(runtime().mutex);
  while (stream->completed < count && !stream->queued.empty()) {
    std::function<void()> work = std::move(stream->queued.front());
    stream->queued.pop_front();
    work();
    ++stream->completed;
  }
}
void run_all(cudaStream_t stream) { run_until(stream, stream->submitted); }
void run_every_stream() {
  std::lock_guard<std::recursive_mutex> lock(runtime().mutex);
  for (cudaStream_t s : runtime().streams) run_all(s);
}

// Queues `work` on `stream`, or records it when the stream is capturing.
// The legacy stream (which the backend never uses) runs it at once.
cudaError_t submit(cudaStream_t stream, std::function<void()> work) {
  std::lock_guard<std::recursive_mutex> lock(runtime().mutex);
  if (is_legacy(stream)) {
    if (runtime().global_captures > 0)
      return failed(cudaErrorStreamCaptureImplicit);  // the legacy stream would wait for a capturing one
    work();
    return cudaSuccess;
  }
  if (stream->capture == cudaStreamCaptureStatusInvalidated) return failed(cudaErrorStreamCaptureInvalidated);
  if (stream->capture == cudaStreamCaptureStatusActive) {
    stream->recorded.push_back(std::move(work));
    return cudaSuccess;
  }
  stream->queued.push_back(std::move(work));
  ++stream->submitted;
  return cudaSuccess;
}

bool capturing(cudaStream_t stream) {
  std::lock_guard<std::recursive_mutex> lock(runtime().mutex);
  return !is_legacy(stream) && stream->capture != cudaStreamCaptureStatusNone;
}

// A host-to-device copy's source: pageable memory is read now (CUDA
// stages it before the call returns), pinned memory when the copy runs.
std::shared_ptr<const std::vector<char>> staged(const void* src, size_t bytes) {
  if (pinned(src, bytes)) return nullptr;
  const auto* p = static_cast<const char*>(src);
  return std::make_shared<const std::vector<char>>(p, p + bytes);
}

// Potentially unsafe calls while any stream captures in global mode: they
// fail and invalidate those captures.
bool refuse_during_capture() {
  std::lock_guard<std::recursive_mutex> lock(runtime().mutex);
  if (runtime().global_captures == 0) return false;
  last_error = cudaErrorStreamCaptureUnsupported;
  return true;
}

// Launches of the emulated kernels are queued like all stream work (submit),
// with their pointers checked.
bool is_device_pointer(const void* p) {
  std::lock_guard<std::recursive_mutex> lock(runtime().mutex);
  const Allocation* a = find(p, 1);
  return a && (a->type == cudaMemoryTypeDevice || a->type == cudaMemoryTypeManaged);
}
[[maybe_unused]] const bool hooked = (emu::queue_launch = submit, emu::device_pointer = is_device_pointer, true);

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
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorNotReady: return "cudaErrorNotReady";
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
  return device == 0 ? cudaSuccess : failed(cudaErrorInvalidDevice);
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
  prop->l2CacheSize = 256 << 10;  // small: few copies of a small tensor exceed it
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
  run_every_stream();  // cudaFree synchronizes the device
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
  run_every_stream();  // as cudaFree
  return release(p, cudaMemoryTypeHost);
}
cudaError_t CUDARTAPI cudaMallocAsync(void** p, size_t bytes, cudaStream_t stream) {
  *p = nullptr;
  if (capturing(stream)) return failed(cudaErrorNotSupported);
  *p = allocate(bytes, cudaMemoryTypeDevice);
  return *p ? cudaSuccess : failed(cudaErrorMemoryAllocation);
}
cudaError_t CUDARTAPI cudaFreeAsync(void* p, cudaStream_t stream) {
  if (capturing(stream)) return failed(cudaErrorNotSupported);
  if (!p) return cudaSuccess;
  {
    std::lock_guard<std::recursive_mutex> lock(runtime().mutex);
    const Allocation* a = find(p, 1);
    if (!a || a->type != cudaMemoryTypeDevice) return failed(cudaErrorInvalidValue);
  }
  return submit(stream, [p] { release(p, cudaMemoryTypeDevice); });  // after the work queued before it
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
  if (bytes == 0) return cudaSuccess;
  if (kind == cudaMemcpyHostToDevice) {
    const auto from = staged(src, bytes);
    if (from && capturing(stream)) return failed(cudaErrorNotSupported);
    return submit(stream, [=] { std::memcpy(dst, from ? from->data() : src, bytes); });
  }
  if (kind == cudaMemcpyDeviceToHost && !pinned(dst, bytes)) {  // synchronous: waits for the stream
    if (capturing(stream)) return failed(cudaErrorNotSupported);
    if (!is_legacy(stream)) run_all(stream);
    std::memcpy(dst, src, bytes);
    return cudaSuccess;
  }
  return submit(stream, [=] { std::memcpy(dst, src, bytes); });
}
cudaError_t CUDARTAPI cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width,
                                        size_t height, cudaMemcpyKind kind, cudaStream_t stream) {
  if (width > dpitch || width > spitch) return failed(cudaErrorInvalidPitchValue);
  if (height == 0 || width == 0) return cudaSuccess;
  if (kind != cudaMemcpyHostToDevice) return failed(cudaErrorNotSupported);  // the one kind the backend uses
  const size_t dst_span = (height - 1) * dpitch + width, src_span = (height - 1) * spitch + width;
  if (const cudaError_t e = check_device_range(dst, dst_span, "2D copy to"); e != cudaSuccess) return failed(e);
  const auto from = staged(src, src_span);
  if (from && capturing(stream)) return failed(cudaErrorNotSupported);
  return submit(stream, [=] {
    const char* base = from ? from->data() : static_cast<const char*>(src);
    for (size_t r = 0; r < height; ++r) std::memcpy(static_cast<char*>(dst) + r * dpitch, base + r * spitch, width);
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
  std::lock_guard<std::recursive_mutex> lock(runtime().mutex);
  *stream = new CUstream_st;
  runtime().streams.insert(*stream);
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaStreamDestroy(cudaStream_t stream) {
  std::lock_guard<std::recursive_mutex> lock(runtime().mutex);
  if (is_legacy(stream) || !runtime().streams.count(stream)) return failed(cudaErrorInvalidResourceHandle);
  if (stream->capture != cudaStreamCaptureStatusNone) return failed(cudaErrorStreamCaptureUnsupported);
  run_all(stream);  // its work still completes
  runtime().streams.erase(stream);
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
  if (is_legacy(stream)) return runtime().global_captures > 0 ? failed(cudaErrorStreamCaptureImplicit) : cudaSuccess;
  run_all(stream);
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaLaunchHostFunc(cudaStream_t stream, cudaHostFn_t fn, void* data) {
  return submit(stream, [fn, data] { fn(data); });
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
  if (capturing(stream)) return failed(cudaErrorNotSupported);
  const std::vector<std::function<void()>> work = exec->work;  // the exec may be destroyed before it runs
  return submit(stream, [work] {
    for (const auto& w : work) w();
  });
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
cudaError_t CUDARTAPI cudaEventCreate(cudaEvent_t* event) { return cudaEventCreateWithFlags(event, 0); }
cudaError_t CUDARTAPI cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  std::lock_guard<std::recursive_mutex> lock(runtime().mutex);
  if (capturing(stream)) return failed(cudaErrorNotSupported);
  event->stamp = std::make_shared<EventStamp>();
  std::shared_ptr<EventStamp> stamp = event->stamp;
  const cudaError_t e = submit(stream, [stamp] {
    stamp->reached = true;
    stamp->at = std::chrono::steady_clock::now();
  });
  event->stream = is_legacy(stream) ? nullptr : stream;
  event->after = is_legacy(stream) ? 0 : stream->submitted;
  return e;
}
cudaError_t CUDARTAPI cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  std::lock_guard<std::recursive_mutex> lock(runtime().mutex);
  if (!start->stamp || !end->stamp) return failed(cudaErrorInvalidResourceHandle);
  if (!start->stamp->reached || !end->stamp->reached) return failed(cudaErrorNotReady);
  *ms = std::chrono::duration<float, std::milli>(end->stamp->at - start->stamp->at).count();
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaEventSynchronize(cudaEvent_t event) {
  if (refuse_during_capture()) return cudaErrorStreamCaptureUnsupported;
  std::lock_guard<std::recursive_mutex> lock(runtime().mutex);
  if (event->stream && runtime().streams.count(event->stream)) run_until(event->stream, event->after);
  return cudaSuccess;
}
cudaError_t CUDARTAPI cudaEventDestroy(cudaEvent_t event) {
  delete event;
  return cudaSuccess;
}

}  // extern "C"
#pragma GCC visibility pop
