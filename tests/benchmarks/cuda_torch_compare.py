#!/usr/bin/env python3
"""woq on CUDA against PyTorch's own kernels, in one process on one GPU:
torch's int4 weight-only matmul (torch._weight_int4pack_mm, bf16 activations,
group 128) and cuBLAS fp16/bf16 through torch.nn.functional.linear.

  cuda_torch_compare.py LIBWOQ [--quick] [--m M ...]
  cuda_torch_compare.py LIBWOQ --cpu-selftest     (no GPU, no torch: checks the
                                                   ctypes layer on a CPU context)

libwoq is driven through ctypes with woq_matmul on torch's device pointers
and torch's current stream as the context's stream (woq_context_options.
cuda_stream), so CUDA events on that stream time woq, torch int4 and cuBLAS
alike. Weights of every kernel rotate through copies filling twice the L2;
the time of one matmul is the median over repetitions of a pass over all
copies, divided by the copies. Before timing, each kernel's result is
checked against a float64 product of its own dequantized weights.
"""
import ctypes
import statistics
import sys

import numpy as np

F32, F16, BF16 = 0, 1, 2
BACKEND_CPU, BACKEND_CUDA = 1, 2


class ContextOptions(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("backend", ctypes.c_int32), ("threads", ctypes.c_int32),
                ("device_index", ctypes.c_int32), ("cuda_stream", ctypes.c_void_p)]


class QuantOptions(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("bits", ctypes.c_uint32), ("group_size", ctypes.c_uint32),
                ("scheme", ctypes.c_int32), ("method", ctypes.c_int32), ("calibration", ctypes.c_void_p),
                ("calibration_dtype", ctypes.c_int32), ("calibration_rows", ctypes.c_uint64),
                ("act_order", ctypes.c_int32), ("fold_input_scales", ctypes.c_int32)]


class Woq:
    """The few libwoq calls this script needs; every status is checked."""

    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        self.lib.woq_last_error.restype = ctypes.c_char_p
        self.lib.woq_version_string.restype = ctypes.c_char_p
        vp = ctypes.c_void_p
        self.lib.woq_quantize.argtypes = [vp, ctypes.c_int32, ctypes.c_uint64, ctypes.c_uint64,
                                          ctypes.POINTER(QuantOptions), ctypes.POINTER(vp)]
        self.lib.woq_context_create.argtypes = [ctypes.POINTER(ContextOptions), ctypes.POINTER(vp)]
        self.lib.woq_tensor_from_qmatrix.argtypes = [vp, vp, vp, ctypes.POINTER(vp)]
        self.lib.woq_matmul.argtypes = [vp, vp, vp, ctypes.c_int32, ctypes.c_uint64, vp, ctypes.c_int32]
        self.lib.woq_dequantize.argtypes = [vp, vp, vp, ctypes.c_int32, ctypes.c_uint64]
        self.lib.woq_context_synchronize.argtypes = [vp]
        for f in ("woq_tensor_destroy", "woq_qmatrix_destroy", "woq_context_destroy"):
            getattr(self.lib, f).argtypes = [vp]
            getattr(self.lib, f).restype = None

    def check(self, status, what):
        if status != 0:
            raise RuntimeError("%s: status %d: %s" % (what, status, self.lib.woq_last_error().decode()))

    def context(self, backend, stream=None):
        o = ContextOptions()
        self.check(self.lib.woq_context_options_init(ctypes.byref(o)), "woq_context_options_init")
        o.backend = backend
        o.cuda_stream = stream
        ctx = ctypes.c_void_p()
        self.check(self.lib.woq_context_create(ctypes.byref(o), ctypes.byref(ctx)), "woq_context_create")
        return ctx

    def quantize(self, w, bits, group):
        o = QuantOptions()
        self.check(self.lib.woq_quant_options_init(ctypes.byref(o)), "woq_quant_options_init")
        o.bits, o.group_size = bits, group
        w = np.ascontiguousarray(w, dtype=np.float32)
        q = ctypes.c_void_p()
        self.check(self.lib.woq_quantize(w.ctypes.data, F32, w.shape[0], w.shape[1], ctypes.byref(o),
                                         ctypes.byref(q)), "woq_quantize")
        return q

    def tensor(self, ctx, qmatrix):
        t = ctypes.c_void_p()
        self.check(self.lib.woq_tensor_from_qmatrix(ctx, qmatrix, None, ctypes.byref(t)), "woq_tensor_from_qmatrix")
        return t

    def dequantize(self, ctx, t, n, k):
        out = np.empty((n, k), dtype=np.float32)
        self.check(self.lib.woq_dequantize(ctx, t, out.ctypes.data, F32, out.nbytes), "woq_dequantize")
        return out

    def matmul(self, ctx, t, x_ptr, x_dtype, m, y_ptr, y_dtype):
        self.check(self.lib.woq_matmul(ctx, t, x_ptr, x_dtype, m, y_ptr, y_dtype), "woq_matmul")


def rel_error(y, ref):
    y, ref = np.asarray(y, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return float(np.linalg.norm(y - ref) / np.linalg.norm(ref))


def cpu_selftest(woq):
    """The ctypes structs and calls against a CPU context (runs in ctest)."""
    rng = np.random.default_rng(7)
    n, k, m = 48, 256, 3
    w = rng.standard_normal((n, k)).astype(np.float32) * 0.05
    ctx = woq.context(BACKEND_CPU)
    q = woq.quantize(w, 4, 128)
    t = woq.tensor(ctx, q)
    w_hat = woq.dequantize(ctx, t, n, k)
    x = rng.standard_normal((m, k)).astype(np.float32)
    y = np.full((m, n), np.nan, dtype=np.float32)
    woq.matmul(ctx, t, x.ctypes.data, F32, m, y.ctypes.data, F32)
    err = rel_error(y, x.astype(np.float64) @ w_hat.astype(np.float64).T)
    quant_err = rel_error(w_hat, w)
    woq.lib.woq_tensor_destroy(t)
    woq.lib.woq_qmatrix_destroy(q)
    woq.lib.woq_context_destroy(ctx)
    ok = err < 1e-5 and 0.0 < quant_err < 0.2
    print("cpu selftest: matmul rel. error %.2e, 4-bit weight rel. error %.3f: %s" %
          (err, quant_err, "ok" if ok else "FAILED"))
    return 0 if ok else 1


def median_us(torch, fn, copies, reps):
    fn(0)  # warm-up
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for i in range(copies):
            fn(i)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / copies)
    return statistics.median(times)


def torch_int4_weights(torch, w, group):
    """w (N x K, fp32 on the GPU) in the tinygemm format of
    torch._weight_int4pack_mm: codes 0..15 two per byte, and per group a bf16
    scale and offset with w = (q - 8) s + zero. Also returns those weights
    dequantized (fp32), for the correctness check."""
    n, k = w.shape
    wg = w.reshape(n, k // group, group)
    lo, hi = wg.amin(dim=2), wg.amax(dim=2)
    s = ((hi - lo) / 15).clamp(min=1e-8).to(torch.bfloat16)
    zero = (lo + 8 * s.float()).to(torch.bfloat16)
    q = ((wg - lo[..., None]) / s.float()[..., None]).round().clamp(0, 15).to(torch.int32)
    deq = ((q.float() - 8) * s.float()[..., None] + zero.float()[..., None]).reshape(n, k)
    q = q.reshape(n, k)
    packed = torch._convert_weight_to_int4pack(((q[:, ::2] << 4) | q[:, 1::2]).to(torch.uint8), 8)
    scales_zeros = torch.stack([s, zero], dim=2).transpose(0, 1).contiguous()  # [K / group, N, 2]
    return packed, scales_zeros, deq


def gpu_compare(woq, ms, quick):
    import torch
    import torch.nn.functional as F

    dev = torch.device("cuda")
    props = torch.cuda.get_device_properties(dev)
    l2 = props.L2_cache_size
    print("woq vs torch on %s (L2 %d MiB), torch %s, libwoq %s" %
          (props.name, l2 >> 20, torch.__version__, woq.lib.woq_version_string().decode()))
    # A stream of torch's own, current for everything below: its handle is
    # not NULL (the legacy default stream's is, and woq would then queue on a
    # stream of its own, outside the events' timing).
    stream = torch.cuda.Stream()
    torch.cuda.set_stream(stream)
    ctx = woq.context(BACKEND_CUDA, ctypes.c_void_p(stream.cuda_stream))
    shapes = [(4096, 4096), (11008, 4096), (4096, 11008), (14336, 4096), (8192, 8192), (8192, 28672)]
    if quick:
        shapes = [(4096, 4096)]
    group = 128
    print("\n| shape N x K | M | woq bf16 X us | torch int4 us | cuBLAS bf16 us | cuBLAS fp16 us | "
          "woq / torch int4 | woq / cuBLAS fp16 |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|")
    rng = np.random.default_rng(1)
    for n, k in shapes:
        w = (rng.standard_normal((n, k), dtype=np.float32) * 0.02)
        q = woq.quantize(w, 4, group)
        packed_bytes = n * k * (0.5 + 3.0 / group)
        copies = max(1, int(2 * l2 / packed_bytes) + 1)
        tensors = [woq.tensor(ctx, q) for _ in range(copies)]
        w_hat = torch.from_numpy(woq.dequantize(ctx, tensors[0], n, k)).to(dev)
        woq.lib.woq_qmatrix_destroy(q)
        w_dev = torch.from_numpy(w).to(dev)
        int4 = None
        try:
            packed, sz, deq4 = torch_int4_weights(torch, w_dev, group)
            int4 = [(packed.clone(), sz.clone()) for _ in range(copies)]
        except Exception as e:  # an API change in this torch: say so, time the rest
            print("torch int4 unavailable: %s" % e)
        dense_copies = max(1, int(2 * l2 / (n * k * 2)) + 1)
        w16 = [w_dev.to(torch.float16) for _ in range(dense_copies)]
        wb16 = [w_dev.to(torch.bfloat16) for _ in range(dense_copies)]
        del w_dev
        for m in ms:
            x = torch.randn(m, k, device=dev)
            xb, xh = x.to(torch.bfloat16), x.to(torch.float16)
            y = torch.empty((m, n), device=dev, dtype=torch.bfloat16)  # timed: bf16 out, as torch's int4
            # Correctness first: each kernel against float64 on its own weights
            # (woq's Y in fp32 here, so the check sees the kernel, not bf16 rounding).
            y32 = torch.full((m, n), float("nan"), device=dev, dtype=torch.float32)
            woq.matmul(ctx, tensors[0], xb.data_ptr(), BF16, m, y32.data_ptr(), F32)
            torch.cuda.synchronize()
            ref = (xb.double() @ w_hat.double().T)
            notes = ["woq err %.1e" % (torch.linalg.norm(y32.double() - ref) / torch.linalg.norm(ref)).item()]
            del y32
            reps = 5 if m >= 1024 else 20
            t_int4 = float("nan")
            if int4 is not None:
                try:  # torch's kernel may refuse some shapes: note it, time the rest
                    y4 = torch._weight_int4pack_mm(xb, int4[0][0], group, int4[0][1])
                    ref4 = xb.double() @ deq4.double().T
                    notes.append("int4 err %.1e" %
                                 (torch.linalg.norm(y4.double() - ref4) / torch.linalg.norm(ref4)).item())
                    t_int4 = median_us(torch, lambda i: torch._weight_int4pack_mm(xb, int4[i][0], group, int4[i][1]),
                                       copies, reps)
                except Exception as e:
                    notes.append("torch int4 failed: %s" % str(e).splitlines()[0][:80])
            t_woq = median_us(torch, lambda i: woq.matmul(ctx, tensors[i], xb.data_ptr(), BF16, m, y.data_ptr(),
                                                         BF16), copies, reps)
            t_bf16 = median_us(torch, lambda i: F.linear(xb, wb16[i]), dense_copies, reps)
            t_fp16 = median_us(torch, lambda i: F.linear(xh, w16[i]), dense_copies, reps)
            print("| %dx%d | %d | %.1f | %.1f | %.1f | %.1f | %.2fx | %.2fx |  %s" %
                  (n, k, m, t_woq, t_int4, t_bf16, t_fp16, t_int4 / t_woq, t_fp16 / t_woq, ", ".join(notes)))
            sys.stdout.flush()
        for t in tensors:
            woq.lib.woq_tensor_destroy(t)
        del int4, w16, wb16, w_hat
        torch.cuda.empty_cache()
    woq.check(woq.lib.woq_context_synchronize(ctx), "woq_context_synchronize")
    woq.lib.woq_context_destroy(ctx)
    return 0


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    woq = Woq(argv[1])
    if "--cpu-selftest" in argv:
        return cpu_selftest(woq)
    ms = [int(argv[i + 1]) for i in range(len(argv) - 1) if argv[i] == "--m"]
    quick = "--quick" in argv
    return gpu_compare(woq, ms or ([1, 16, 256] if quick else [1, 4, 16, 64, 128, 256, 1024, 4096]), quick)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
