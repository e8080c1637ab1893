#!/usr/bin/env python3
"""Write the seed inputs of fuzz_import (tests/fuzz/fuzz_import.cpp) into
OUT_DIR: small checkpoints of every flavour that tests/golden's numpy
packers make, each with the config file that flavour ships with (or none),
in the target's input layout.

  make_import_seeds.py OUT_DIR
"""
import json
import os
import struct
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "golden"))
import make_checkpoints as mk  # noqa: E402
import woq_reference as ref  # noqa: E402

FORMATS = ["auto", "gptq", "gptq_v2", "awq", "compressed-tensors", "gguf", "onnx", "auto (m.onnx)"]
CONFIGS = {None: 0, "quantize_config.json": 1, "config.json": 2}


def seed(tensors, fmt="auto", config_name=None, config=None):
    """The fuzz input: selector byte, config length and text, safetensors."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.safetensors")
        ref.write_safetensors(path, tensors)
        with open(path, "rb") as f:
            body = f.read()
    head = bytes([FORMATS.index(fmt) | CONFIGS[config_name] << 3])
    if config_name:
        text = json.dumps(config, separators=(",", ":")).encode()
        head += struct.pack("<H", len(text)) + text
    return head + body


def gguf_seed(fmt, tensors, metadata=()):
    """A GGUF file (make_checkpoints.write_gguf) as the fuzz input."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.gguf")
        mk.write_gguf(path, list(metadata), tensors, alignment=32)
        with open(path, "rb") as f:
            body = f.read()
    return bytes([FORMATS.index(fmt)]) + body


def onnx_seed(fmt, layers, rng, external=b""):
    """An ONNX model of MatMulNBits layers (make_checkpoints.matmul_nbits:
    (prefix, n, k, bits, block, sym, zero_kind, act_order) each) as the
    fuzz input. With external, the first layer's B lies in config.json
    (written as the config), at offset 16 after `external`'s bytes."""
    nodes, inits, blob = [], [], external
    for i, (prefix, n, k, bits, block, sym, zk, act) in enumerate(layers):
        ts, inputs, attrs, _ = mk.matmul_nbits(rng, prefix, n, k, bits, block, sym, zk, act)
        for name, a in ts:
            if external and i == 0 and name.endswith("_Q%d" % bits):
                blob += b"\0" * (16 - len(blob) % 16)
                inits.append(mk.onnx_tensor(name, a, external=("config.json", len(blob))))
                blob += np.ascontiguousarray(a).tobytes()
            else:
                inits.append(mk.onnx_tensor(name, a))
        nodes.append(mk.onnx_node("MatMulNBits", inputs, ["Y%d" % i], "/l%d/MatMul_Q%d" % (i, bits), "com.microsoft",
                                  attrs))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.onnx")
        mk.write_onnx(path, nodes, inits, [("model_type", "llama")])
        with open(path, "rb") as f:
            body = f.read()
    if not external:
        return bytes([FORMATS.index(fmt)]) + body
    return bytes([FORMATS.index(fmt) | CONFIGS["config.json"] << 3]) + struct.pack("<H", len(blob)) + blob + body


def layer(prefix, t):
    return {prefix + "." + key: value for key, value in t.items()}


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(5)
    w = mk.layer_weights(rng, 16, 64)
    bias = rng.standard_normal(16) * 0.1
    gptq_sym, _ = mk.gptq(w, 4, 32, True, False, bias)
    gptq_asym, _ = mk.gptq(w, 4, 32, False, True)
    gptq_8, _ = mk.gptq(w, 8, 64, True, False)
    awq, _ = mk.awq(w, 32, bias)
    comp_4, _ = mk.compressed(w, 4, 32, True)
    comp_8, _ = mk.compressed(w, 8, 64, False)
    gptq_act, _ = mk.gptq(w, 4, 32, False, False, act_order=True, rng=rng)
    comp_act, _ = mk.compressed(w, 4, 16, True, act_order=True, rng=rng)
    seeds = {
        "gptq_quantize_config": seed(layer("l", gptq_sym), "auto", "quantize_config.json",
                                     {"bits": 4, "group_size": 32, "desc_act": False, "sym": True}),
        "gptq_v2_config_json": seed(layer("l", gptq_asym), "auto", "config.json",
                                    {"quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 32,
                                                             "checkpoint_format": "gptq_v2"}}),
        "gptq_8bit_noconfig": seed(layer("a.b", gptq_8)),
        "gptq_v2_given": seed(layer("l", gptq_asym), "gptq_v2"),
        "awq_config_json": seed(layer("l", awq), "auto", "config.json",
                                {"quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 32}}),
        "awq_given": seed(layer("l", awq), "awq"),
        "compressed_two_layers": seed({**layer("x", comp_4), **layer("y", comp_8)}, "auto", "config.json",
                                      {"quantization_config": {"quant_method": "compressed-tensors"}}),
        # act-order: g_idx / weight_g_idx scattered over the inputs (stored with an input permutation)
        "gptq_act_order": seed(layer("l", gptq_act), "auto", "quantize_config.json",
                               {"bits": 4, "group_size": 32, "desc_act": True, "sym": False}),
        "compressed_act_order": seed(layer("l", comp_act), "compressed-tensors"),
    }
    # GGUF: a matrix of each type woq imports, a bias, tensors it skips, and
    # metadata of several value types.
    gguf = []
    for name, kind in (("blk.0.attn_q.weight", "Q4_0"), ("blk.0.ffn_down.weight", "Q5_0"),
                       ("blk.0.attn_output.weight", "Q8_0")):
        raw, _ = mk.gguf_quantize(w, kind)
        gguf.append((name, kind, [64, 16], raw.tobytes()))
    gguf.append(("blk.0.attn_q.bias", "F32", [16], bias.astype(np.float32).tobytes()))
    gguf.append(("output_norm.weight", "F32", [64], np.ones(64, dtype=np.float32).tobytes()))
    meta = [("general.architecture", "str", "llama"), ("llama.block_count", "u32", 1),
            ("tokenizer.ggml.tokens", ("array", "str"), ["a", "b"]),
            ("test.nested", ("array", ("array", "i16")), [[1], [2, 3]])]
    seeds["gguf_three_types"] = gguf_seed("auto", gguf, meta)
    seeds["gguf_given"] = gguf_seed("gguf", gguf[:1])
    # Raw blocks of the other types woq decodes to floats (for `quantize
    # --requantize`; fuzz_import's reader pass dequantizes them), two rows
    # of one block each, beside a Q4_0 matrix that imports.
    blocks = np.random.default_rng(7)  # its own stream: the seeds above keep theirs
    decodable = (("Q4_1", 32, 20), ("Q5_1", 32, 24), ("Q2_K", 256, 84), ("Q3_K", 256, 110), ("Q4_K", 256, 144),
                 ("Q5_K", 256, 176), ("Q6_K", 256, 210))
    seeds["gguf_block_types"] = gguf_seed("auto", gguf[:1] + [
        ("blk.%d.ffn_up.weight" % i, kind, [k, 2], blocks.integers(0, 256, 2 * size, dtype=np.uint8).tobytes())
        for i, (kind, k, size) in enumerate(decodable)])
    # ONNX: MatMulNBits layers of each kind of zero-points, widths, act-order;
    # one whose B lies in external data (config.json).
    seeds["onnx_five_layers"] = onnx_seed("onnx", [("q.weight", 16, 64, 4, 32, False, "packed", False),
                                                   ("k.weight", 8, 96, 4, 32, True, "none", False),
                                                   ("v.weight", 8, 128, 8, 64, False, "float", False),
                                                   ("o.weight", 8, 64, 2, 32, False, "packed", False),
                                                   ("up.weight", 8, 64, 4, 32, False, "packed", True)], rng)
    seeds["onnx_by_name"] = onnx_seed("auto (m.onnx)", [("proj.weight", 24, 96, 4, 128, False, "packed", False)], rng)
    seeds["onnx_external"] = onnx_seed("onnx", [("proj.weight", 16, 64, 4, 32, False, "packed", False)], rng,
                                       external=b"{}")
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print("wrote", len(seeds), "seeds to", out)


if __name__ == "__main__":
    main()
