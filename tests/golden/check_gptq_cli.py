#!/usr/bin/env python3
"""End-to-end check of `woq quantize --method gptq`, judged by numpy and the
independent reader (woq_reference.py), not by libwoq:

  check_gptq_cli.py WOQ_CLI MODEL.safetensors WORK_DIR

Makes correlated activations with outlier channels for every *.weight of the
model (calibration and held-out sets from the same distribution; named by
the weight's prefix, so the CLI's prefix lookup is exercised), quantizes with
rtn, gptq, gptq --act-order (static groups, and with --act-order-groups
groups in that order, stored with an input permutation) and awq at 4 bits /
group 64, reads the files back
and compares the relative output MSE ||X (W_hat - W)^T||^2 / ||X W^T||^2 on
the held-out activations.
"""
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import woq_reference as ref  # noqa: E402


def activations(rng, mixing, scale, s):
    z = rng.standard_normal((s, mixing.shape[0]))
    x = z @ mixing / np.sqrt(mixing.shape[0]) + 0.3 * rng.standard_normal((s, mixing.shape[1]))
    return (x * scale).astype(np.float32)


def main(cli, model, work):
    os.makedirs(work, exist_ok=True)
    src, _ = ref.read_safetensors(model)
    weights = {n: w.astype(np.float64) for n, (dt, w) in src.items() if n.endswith(".weight") and w.ndim == 2}
    rng = np.random.default_rng(4)
    calib, held_out = {}, {}
    for name, w in sorted(weights.items()):
        k = w.shape[1]
        mixing = rng.standard_normal((k // 4, k))
        scale = np.ones(k)
        scale[::37] = 20.0
        base = name[:-len(".weight")]
        calib[base] = ("F32", activations(rng, mixing, scale, 256))
        held_out[name] = activations(rng, mixing, scale, 256).astype(np.float64)
    calib_path = os.path.join(work, "calibration.safetensors")
    ref.write_safetensors(calib_path, calib)

    runs = {"rtn": [], "gptq": ["--calibration", calib_path], "gptq-act-order": ["--calibration", calib_path, "--act-order"],
            "gptq-act-order-groups": ["--calibration", calib_path, "--act-order", "--act-order-groups"],
            "awq": ["--calibration", calib_path]}
    errors = {}
    for label, extra in runs.items():
        out = os.path.join(work, label + ".woq")
        method = label.split("-")[0]
        cmd = [cli, "quantize", model, out, "--bits", "4", "--group", "64", "--method", method] + extra
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit("%s failed:\n%s%s" % (" ".join(cmd), run.stdout, run.stderr))
        _, tensors = ref.read_woq(out)
        for t in tensors:
            w = weights[t["name"]]
            w_hat = ref.effective_weights(t)  # AWQ's input scales or the permutation applied
            x = held_out[t["name"]]
            e = np.sum((x @ (w_hat - w).T) ** 2) / np.sum((x @ w.T) ** 2)
            errors.setdefault(t["name"], {})[label] = e
            if not np.all(np.isfinite(w_hat)):
                sys.exit("%s: non-finite weights in %s" % (label, t["name"]))
            want_method = {"rtn": 0, "gptq": 4, "gptq-act-order": 4, "gptq-act-order-groups": 4, "awq": 3}[label]
            if t["method"] != want_method:
                sys.exit("%s: %s is stored with method %d, not %d" % (label, t["name"], t["method"], want_method))
            if (label == "awq") != (t.get("input_scales") is not None):
                sys.exit("%s: %s input scales %s" % (label, t["name"], "missing" if label == "awq" else "unexpected"))
            if (label == "gptq-act-order-groups") != (t.get("input_permutation") is not None):
                sys.exit("%s: %s input permutation %s" % (label, t["name"],
                                                          "missing" if label == "gptq-act-order-groups" else "unexpected"))

    print("%-22s %12s %12s %12s %12s %12s" % ("held-out rel. output MSE", "rtn", "gptq", "act-order", "+groups", "awq"))
    for name in sorted(errors):
        e = errors[name]
        print("%-22s %12.4g %12.4g %12.4g %12.4g %12.4g" % (name, e["rtn"], e["gptq"], e["gptq-act-order"],
                                                           e["gptq-act-order-groups"], e["awq"]))
    mean = {label: np.mean([errors[n][label] for n in errors]) for label in runs}
    cuts = {label: 1 - mean[label] / mean["rtn"] for label in runs if label != "rtn"}
    print("mean cut vs RTN: " + ", ".join("%s %.0f%%" % (label, 100 * c) for label, c in cuts.items()))
    for label, need in (("gptq", 0.25), ("gptq-act-order", 0.30), ("gptq-act-order-groups", 0.30), ("awq", 0.15)):
        worse = [n for n in errors if errors[n][label] >= errors[n]["rtn"]]
        if worse:
            sys.exit("%s is not better than RTN on %s" % (label, ", ".join(worse)))
        if cuts[label] < need:
            sys.exit("%s cuts the output error by %.0f%%, needs %.0f%%" % (label, 100 * cuts[label], 100 * need))
    print("gptq and awq OK")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
