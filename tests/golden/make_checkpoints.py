#!/usr/bin/env python3
"""Make small quantized checkpoints in other tools' formats, from known
weights, with numpy only (no libwoq code), for `woq import` tests.

  make_checkpoints.py OUT_DIR

Each OUT_DIR/<case>/ holds model.safetensors (plus the config file that
flavour ships with, except case gptq_noconfig) and expect.safetensors: the
checkpoint's own dequantization, computed here by unpacking the checkpoint's
packed tensors with that format's formula, as F32 "<prefix>.weight" (and
"<prefix>.bias"). The act-order cases have a permuted g_idx (groups of
inputs scattered over the layer), which woq stores with an input
permutation; case gptq_unequal_groups has a g_idx whose groups differ in
size and no expect file: woq must refuse it. Cases gptq_sharded and
awq_sharded are split over shards with an index (Hugging Face's layout for
large models); float_single and float_sharded hold the same float weights
in one file and in two shards, for `woq quantize`.

Layouts (N outputs, K inputs, G = K / group):
  AutoGPTQ   qweight I32 [K*b/32, N] packed along K, LSB first; qzeros I32
             [G, N*b/32] packed along N, v1 stores zero - 1, gptq_v2 the
             zero; scales F16 [G, N]; g_idx I32 [K];
             w[n,k] = scales[g_idx[k], n] * (q - zero)
  AutoAWQ    qweight I32 [K, N/8] and qzeros I32 [G, N/8] packed along N,
             nibble position p holds output 8c + (0,2,4,6,1,3,5,7)[p];
             scales F16 [G, N]; w = scales * (q - zero)
  compressed-tensors pack-quantized: weight_packed I32 [N, K*b/32] packed
             along K of values + 2^(b-1); weight_scale F16 [N, G];
             weight_zero_point I8 [N, G] (signed) when asymmetric;
             weight_shape I64 [2]; w = scale * (signed value - zero_point);
             actorder "group": weight_g_idx I32 [K], w[n,k] uses group
             weight_g_idx[k]
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import woq_reference as ref  # noqa: E402

AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]


def pack_along(values, bits, axis):
    """Pack small unsigned ints along `axis`, LSB first, into int32."""
    v = np.moveaxis(np.asarray(values, dtype=np.uint64), axis, -1)
    per = 32 // bits
    pad = (-v.shape[-1]) % per
    if pad:
        v = np.concatenate([v, np.zeros(v.shape[:-1] + (pad,), dtype=np.uint64)], axis=-1)
    v = v.reshape(v.shape[:-1] + (-1, per))
    words = np.zeros(v.shape[:-1], dtype=np.uint64)
    for i in range(per):
        words |= v[..., i] << np.uint64(bits * i)
    return np.moveaxis(words.astype(np.uint32).view(np.int32), -1, axis)


def unpack_along(words, bits, axis, count):
    w = np.moveaxis(np.asarray(words).view(np.uint32).astype(np.uint64), axis, -1)
    per = 32 // bits
    parts = [(w >> np.uint64(bits * i)) & np.uint64((1 << bits) - 1) for i in range(per)]
    v = np.stack(parts, axis=-1).reshape(w.shape[:-1] + (-1,))[..., :count]
    return np.moveaxis(v.astype(np.int64), -1, axis)


def layer_weights(rng, n, k):
    return rng.standard_normal((n, k)) * 0.05


def gptq(w, bits, group, sym, v2, bias=None, act_order=False, rng=None):
    codes, scales, zeros = ref.quantize(w, bits, group, sym)   # [N,K], [N,G], [N,G]
    n, k = codes.shape
    g_idx = np.arange(k) // group
    if act_order:
        g_idx = g_idx[rng.permutation(k)]
    stored_zero = zeros.astype(np.int64) - (0 if v2 else 1)
    t = {"qweight": ("I32", pack_along(codes.T, bits, 0)),
         "qzeros": ("I32", pack_along(stored_zero.T & ((1 << bits) - 1), bits, 1)),
         "scales": ("F16", np.ascontiguousarray(scales.T)),
         "g_idx": ("I32", g_idx.astype(np.int32))}
    if bias is not None:
        t["bias"] = ("F16", bias.astype(np.float16))
    # The checkpoint's own dequantization, from its packed tensors.
    q = unpack_along(t["qweight"][1], bits, 0, k)                     # [K, N]
    z = unpack_along(t["qzeros"][1], bits, 1, n) + (0 if v2 else 1)   # [G, N]
    s = t["scales"][1].astype(np.float64)
    w_hat = (s[g_idx] * (q - z[g_idx])).T
    return t, w_hat


def awq(w, group, bias=None):
    codes, scales, zeros = ref.quantize(w, 4, group, False)
    n, k = codes.shape

    def pack_awq(values):  # values [rows, N] -> [rows, N/8]
        rows = values.shape[0]
        v = values.reshape(rows, n // 8, 8).astype(np.uint64)
        words = np.zeros((rows, n // 8), dtype=np.uint64)
        for pos, col in enumerate(AWQ_ORDER):
            words |= v[:, :, col] << np.uint64(4 * pos)
        return words.astype(np.uint32).view(np.int32)

    def unpack_awq(words):
        w64 = words.view(np.uint32).astype(np.uint64)
        out = np.zeros((words.shape[0], n), dtype=np.int64)
        for pos, col in enumerate(AWQ_ORDER):
            out[:, col::8] = (w64 >> np.uint64(4 * pos)) & np.uint64(15)
        return out

    t = {"qweight": ("I32", pack_awq(codes.T)), "qzeros": ("I32", pack_awq(zeros.T)),
         "scales": ("F16", np.ascontiguousarray(scales.T))}
    if bias is not None:
        t["bias"] = ("F32", bias.astype(np.float32))
    q, z = unpack_awq(t["qweight"][1]), unpack_awq(t["qzeros"][1])    # [K, N], [G, N]
    s = t["scales"][1].astype(np.float64)
    gi = np.arange(k) // group
    return t, (s[gi] * (q - z[gi])).T


def compressed(w, bits, group, sym, act_order=False, rng=None):
    codes, scales, zeros = ref.quantize(w, bits, group, sym)
    n, k = codes.shape
    g_idx = np.arange(k) // group
    if act_order:
        g_idx = g_idx[rng.permutation(k)]
    offset = 1 << (bits - 1)
    signed = codes.astype(np.int64) - offset
    t = {"weight_packed": ("I32", pack_along(signed + offset, bits, 1)),
         "weight_scale": ("F16", scales),
         "weight_shape": ("I64", np.array([n, k], dtype=np.int64))}
    if not sym:
        t["weight_zero_point"] = ("I8", (zeros.astype(np.int64) - offset).astype(np.int8))
    if act_order:
        t["weight_g_idx"] = ("I32", g_idx.astype(np.int32))
    vals = unpack_along(t["weight_packed"][1], bits, 1, k) - offset
    zp = t["weight_zero_point"][1].astype(np.int64) if not sym else np.zeros_like(zeros, dtype=np.int64)
    s = t["weight_scale"][1].astype(np.float64)
    return t, s[:, g_idx] * (vals - zp[:, g_idx])


def write_shards(d, tensors, shards):
    """Hugging Face's sharded layout: tensors dealt out in name order over
    model-0000i-of-0000n.safetensors (so one layer's parts lie in different
    shards), and model.safetensors.index.json mapping each to its shard."""
    names = sorted(tensors)
    weight_map = {}
    for i in range(shards):
        shard = "model-%05d-of-%05d.safetensors" % (i + 1, shards)
        part = {n: tensors[n] for n in names[i::shards]}
        ref.write_safetensors(os.path.join(d, shard), part, {"format": "pt"})
        weight_map.update({n: shard for n in part})
    total = sum(a.nbytes for _, a in tensors.values())
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def write_case(out, name, layers, config_name=None, config=None, expect=True, shards=0):
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    tensors, expected = {}, {}
    for prefix, (t, w_hat) in layers.items():
        for key, value in t.items():
            tensors[prefix + "." + key] = value
        if w_hat is not None:
            expected[prefix + ".weight"] = ("F32", w_hat.astype(np.float32))
        if "bias" in t:
            expected[prefix + ".bias"] = ("F32", t["bias"][1].astype(np.float32))
    tensors["model.norm.weight"] = ("F16", np.ones(64, dtype=np.float16))  # not quantized: skipped
    if shards:
        write_shards(d, tensors, shards)
    else:
        ref.write_safetensors(os.path.join(d, "model.safetensors"), tensors)
    if config_name:
        with open(os.path.join(d, config_name), "w") as f:
            json.dump(config, f, indent=1, sort_keys=True)
    if expect:
        ref.write_safetensors(os.path.join(d, "expect.safetensors"), expected)


def main():
    out = sys.argv[1]
    rng = np.random.default_rng(11)
    w1, w2 = layer_weights(rng, 64, 128), layer_weights(rng, 32, 256)
    bias = rng.standard_normal(64) * 0.1
    write_case(out, "gptq_v1_sym", {"model.layers.0.mlp.up_proj": gptq(w1, 4, 32, True, False, bias),
                                    "model.layers.0.mlp.down_proj": gptq(w2, 4, 32, True, False)},
               "quantize_config.json", {"bits": 4, "group_size": 32, "desc_act": False, "sym": True,
                                        "checkpoint_format": "gptq"})
    write_case(out, "gptq_v2_asym", {"model.layers.0.self_attn.q_proj": gptq(w1, 4, 64, False, True, bias),
                                     "model.layers.0.self_attn.o_proj": gptq(w2, 4, 128, False, True)},
               "config.json", {"quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 64,
                                                       "checkpoint_format": "gptq_v2"}})
    write_case(out, "gptq_noconfig", {"layer.proj": gptq(w2, 4, 128, True, False)})
    write_case(out, "gptq_actorder", {"model.layers.0.mlp.up_proj": gptq(w1, 4, 32, False, False, bias,
                                                                         act_order=True, rng=rng),
                                      "model.layers.0.mlp.down_proj": gptq(w2, 4, 64, True, False,
                                                                           act_order=True, rng=rng)},
               "quantize_config.json", {"bits": 4, "group_size": 32, "desc_act": True, "sym": False})
    unequal, _ = gptq(w1, 4, 32, True, False)
    unequal["g_idx"] = ("I32", np.minimum(np.arange(128) // 24, 3).astype(np.int32))  # 24, 24, 24, 56 inputs
    write_case(out, "gptq_unequal_groups", {"layer.proj": (unequal, None)},
               "quantize_config.json", {"bits": 4, "group_size": 32, "desc_act": True, "sym": True}, expect=False)
    write_case(out, "awq_gemm", {"model.layers.0.mlp.gate_proj": awq(w1, 32, bias),
                                 "model.layers.0.mlp.down_proj": awq(w2, 64)},
               "config.json", {"quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 32,
                                                       "version": "gemm", "zero_point": True}})
    write_case(out, "compressed_tensors", {"model.layers.0.mlp.up_proj": compressed(w1, 4, 32, True),
                                           "model.layers.0.mlp.down_proj": compressed(w2, 8, 128, False)},
               "config.json", {"quantization_config": {"quant_method": "compressed-tensors",
                                                       "format": "pack-quantized"}})
    write_case(out, "compressed_actorder", {"model.layers.0.mlp.up_proj": compressed(w1, 4, 32, False, True, rng),
                                            "model.layers.0.mlp.down_proj": compressed(w2, 4, 64, True, True, rng)},
               "config.json", {"quantization_config": {"quant_method": "compressed-tensors",
                                                       "format": "pack-quantized"}})
    # Sharded checkpoints: GPTQ with a config (imported through its
    # directory) and AWQ (through its index).
    write_case(out, "gptq_sharded", {"model.layers.0.self_attn.q_proj": gptq(w1, 4, 64, False, True, bias),
                                     "model.layers.0.self_attn.o_proj": gptq(w2, 4, 128, False, True)},
               "config.json", {"quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 64,
                                                       "checkpoint_format": "gptq_v2"}}, shards=3)
    write_case(out, "awq_sharded", {"model.layers.0.mlp.gate_proj": awq(w1, 32, bias),
                                    "model.layers.0.mlp.down_proj": awq(w2, 64)},
               "config.json", {"quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 32,
                                                       "version": "gemm", "zero_point": True}}, shards=2)
    # A float model for `woq quantize`, once in one file and once in shards
    # (each bias in a shard apart from its weight).
    floats = {"model.layers.0.mlp.up_proj.weight": ("F16", w1.astype(np.float16)),
              "model.layers.0.mlp.up_proj.bias": ("F32", bias.astype(np.float32)),
              "model.layers.0.mlp.down_proj.weight": ("BF16", ref.to_bf16_bits(w2.astype(np.float32))),
              "model.norm.weight": ("F32", np.ones(64, dtype=np.float32))}
    for case, shards in (("float_single", 0), ("float_sharded", 2)):
        d = os.path.join(out, case)
        os.makedirs(d, exist_ok=True)
        if shards:
            write_shards(d, floats, shards)
        else:
            ref.write_safetensors(os.path.join(d, "model.safetensors"), floats, {"format": "pt"})
    print("wrote 12 checkpoint cases to", out)


if __name__ == "__main__":
    main()
