#!/usr/bin/env python3
"""Make the golden vectors under tests/data with the independent reference
implementation in woq_reference.py (numpy; no libwoq code).

  make_golden.py OUT_DIR

writes
  golden_rtn.safetensors   one case per (bits, group, scheme, source dtype):
      <case>.w       source weights W[N, K] (F32, F16 or BF16)
      <case>.codes   U8 [N, K] codes          <case>.packed  U32 packed rows
      <case>.scales  F16 [N, G]               <case>.zeros   U8 [N, G]
      <case>.x       F32 [M, K] activations   <case>.y       F64 [M, N] = X W_hat^T + bias
      <case>.bias    F32 [N]
    and __metadata__["cases"]: JSON list of {name, bits, group, symmetric, dtype,
    method (rtn, mse: SPEC.md 5.5, or hqq: 5.8)}
  model_small.safetensors  a tiny "model" (*.weight + *.bias, F32/F16/BF16)
      for CLI and file interop tests.
The output is deterministic: tests check that rerunning gives the same bytes.
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import woq_reference as ref  # noqa: E402


def weights(rng, n, k):
    """Gaussian weights with the hard cases planted: outliers, an all-zero
    group, one-signed groups and a group of tiny values (subnormal scales)."""
    w = rng.standard_normal((n, k)).astype(np.float32) * 0.05
    w[0, 3] = 1.7          # outlier stretching its group
    w[1, 5] = -2.3
    w[2, :32] = 0.0        # all-zero group
    w[3, :32] = np.abs(w[3, :32]) + 0.01   # positive-only
    w[4, 32:64] = -np.abs(w[4, 32:64]) - 0.01  # negative-only
    w[5, :32] *= 1e-5      # tiny: scale near fp16's subnormal range
    return w


def as_dtype(w, dtype):
    """Source weights in their storage dtype, plus their exact float64 values."""
    if dtype == "F32":
        return w, w.astype(np.float64)
    if dtype == "F16":
        h = w.astype(np.float16)
        return h, h.astype(np.float64)
    bits = ref.to_bf16_bits(w)
    return bits, (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def main():
    out_dir = sys.argv[1]
    rng = np.random.default_rng(20261122)
    n, k, m = 8, 256, 3
    tensors, cases = {}, []
    configs = [(b, g, s, "F32") for b in (2, 3, 4, 5, 8) for g in (32, 128, 0) for s in (False, True)]
    configs += [(4, 128, False, "F16"), (4, 64, True, "BF16"), (8, 256, False, "BF16"), (6, 32, False, "F16"),
                (7, 0, True, "F32")]
    configs = [c + ("rtn",) for c in configs]
    configs += [(b, g, s, "F32", "mse") for b in (2, 3, 4, 8) for g in (32, 0) for s in (False, True)]
    configs += [(4, 128, False, "BF16", "mse")]
    configs += [(b, g, s, "F32", "hqq") for b in (2, 3, 4, 8) for g in (32, 0) for s in (False, True)]
    configs += [(4, 128, False, "F16", "hqq")]
    # Weights x 20: rounding errors large enough for HQQ's l_0.5 shrink to act.
    configs += [(b, 32, s, "F32", "hqq_big") for b in (2, 3) for s in (False, True)]
    rng_hqq = np.random.default_rng(20261123)  # its own stream: earlier cases and model_small stay as they were
    for bits, group, sym, dtype, method in configs:
        name = "b%d_g%d_%s_%s" % (bits, group, "sym" if sym else "asym", dtype.lower())
        if method != "rtn":
            name += "_" + method
        r = rng_hqq if method.startswith("hqq") else rng
        stored, w = as_dtype(weights(r, n, k) * (20.0 if method == "hqq_big" else 1.0), dtype)
        method = "hqq" if method == "hqq_big" else method
        codes, scales, zeros = ref.quantize(w, bits, group, sym, method)
        w_hat = ref.dequantize(codes, scales, zeros, group)
        x = r.standard_normal((m, k)).astype(np.float32)
        bias = r.standard_normal(n).astype(np.float32)
        y = ref.matmul_exact(x, w_hat, bias)
        tensors[name + ".w"] = ("BF16" if dtype == "BF16" else dtype, stored)
        tensors[name + ".codes"] = ("U8", codes)
        tensors[name + ".packed"] = ("U32", ref.pack(codes, bits))
        tensors[name + ".scales"] = ("F16", scales)
        tensors[name + ".zeros"] = ("U8", zeros)
        tensors[name + ".x"] = ("F32", x)
        tensors[name + ".bias"] = ("F32", bias)
        tensors[name + ".y"] = ("F64", y)
        cases.append({"name": name, "bits": bits, "group": group, "symmetric": sym, "dtype": dtype,
                      "method": method})
    ref.write_safetensors(os.path.join(out_dir, "golden_rtn.safetensors"), tensors,
                          {"cases": json.dumps(cases), "generator": "tests/golden/make_golden.py"})

    model = {}
    for i, (n2, k2, dtype) in enumerate([(48, 256, "F32"), (40, 128, "F16"), (24, 512, "BF16")]):
        stored, _ = as_dtype(weights(rng, n2, k2), dtype)
        model["layer%d.proj.weight" % i] = (dtype, stored)
        model["layer%d.proj.bias" % i] = ("F32", rng.standard_normal(n2).astype(np.float32))
    model["norm.scale"] = ("F32", np.ones(64, dtype=np.float32))  # not a matrix: skipped by woq quantize
    ref.write_safetensors(os.path.join(out_dir, "model_small.safetensors"), model, {"name": "model_small"})
    print("wrote %d golden cases and model_small to %s" % (len(cases), out_dir))


if __name__ == "__main__":
    main()
