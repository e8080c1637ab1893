#!/usr/bin/env python3
"""Shared test vectors for the examples in every language (C, C#, Go, Rust),
made with numpy and the independent reference (woq_reference.py), never
with libwoq:

  examples/data/vectors.woq   proj.weight [48 x 256], 4-bit, group 128, bias
  examples/data/x.f32         X [3 x 256], little-endian fp32
  examples/data/expected.txt  Y = X . W_hat^T + b in float64, and the sum of
                              |x w_hat| + |b| per output (the error scale)

Every example prints Y as fp32 bit patterns; tests/check_examples.py checks
that all languages print the same bits and that they match expected.txt.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import woq_reference as ref  # noqa: E402

N, K, M, GROUP, BITS = 48, 256, 3, 128, 4


def main(out_dir):
    rng = np.random.default_rng(20261122)
    w = (0.05 * rng.standard_normal((N, K))).astype(np.float32)
    w[5, 17] = 0.9  # an outlier, so one group's grid is stretched
    bias = (0.1 * rng.standard_normal(N)).astype(np.float32)
    x = rng.standard_normal((M, K)).astype(np.float32)
    codes, scales, zeros = ref.quantize(w, BITS, GROUP, False)
    ref.write_woq(os.path.join(out_dir, "vectors.woq"),
                  [{"name": "proj.weight", "bits": BITS, "symmetric": False, "group": GROUP, "codes": codes,
                    "scales": scales, "zeros": zeros, "bias": bias, "source_dtype": 0}],
                  {"model.name": "woq example vectors"}, rows_per_chunk=16)
    x.astype("<f4").tofile(os.path.join(out_dir, "x.f32"))
    w_hat = ref.dequantize(codes, scales, zeros, GROUP)
    x64 = x.astype(np.float64)
    y = x64 @ w_hat.T + bias.astype(np.float64)
    scale = np.abs(x64) @ np.abs(w_hat).T + np.abs(bias.astype(np.float64))
    with open(os.path.join(out_dir, "expected.txt"), "w") as f:
        f.write("# row col y_float64 error_scale (tests/golden/make_example_vectors.py)\n")
        for r in range(M):
            for n in range(N):
                f.write("%d %d %.17g %.17g\n" % (r, n, y[r, n], scale[r, n]))
    print("wrote vectors.woq, x.f32, expected.txt to", out_dir)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..", "examples", "data"))
