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
in one file and in two shards, and float_gguf the same in a GGUF file, for
`woq quantize`. Case gguf_llama is a
llama.cpp GGUF file with Q4_0, Q5_0 and Q8_0 matrices (and tensors woq
skips); gguf_kquants holds only K-quants, which woq must refuse. The onnx_*
cases are ONNX models with ONNX Runtime's MatMulNBits weights
(write_onnx_cases says which).

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
import struct
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


# ------------------------------------------------------------------ GGUF
# GGUF v3 (llama.cpp): "GGUF", u32 version, u64 tensor count, u64 metadata
# count, metadata (u64-length string key, u32 value type, value), tensor
# table (name, u32 dimension count, u64 dimensions with the contiguous one
# first, u32 ggml type, u64 offset), then the data from the next multiple of
# general.alignment. Blocks of 32 inputs: Q4_0 = fp16 d + 16 bytes (input i
# in the low nibble of byte i, input 16 + i in its high nibble),
# w = d (q - 8); Q5_0 = fp16 d + u32 of fifth bits (bit i for input i) +
# nibbles as Q4_0, w = d (q - 16); Q8_0 = fp16 d + 32 int8, w = d q.
# Quantized as llama.cpp's reference quantizer does: d = max / -8 (-16) with
# max the block's weight of largest magnitude, q = min(qmax, trunc(w / d +
# mid + 0.5)); Q8_0: d = amax / 127, q = round(w / d).

GGUF_TYPES = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q5_0": 6, "Q5_1": 7, "Q8_0": 8, "Q2_K": 10, "Q3_K": 11,
              "Q4_K": 12, "Q5_K": 13, "Q6_K": 14, "BF16": 30}
GGUF_VALUE = {"u8": (0, "<B"), "i8": (1, "<b"), "u16": (2, "<H"), "i16": (3, "<h"), "u32": (4, "<I"),
              "i32": (5, "<i"), "f32": (6, "<f"), "bool": (7, "<?"), "u64": (10, "<Q"), "i64": (11, "<q"),
              "f64": (12, "<d")}


def gguf_string(text):
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def gguf_value(kind, value):
    """(type code, bytes) of a metadata value: kind is a GGUF_VALUE key,
    "str", or ("array", element kind)."""
    if kind == "str":
        return 8, gguf_string(value)
    if isinstance(kind, tuple):
        code = gguf_value(kind[1], value[0])[0] if value else GGUF_VALUE.get(kind[1], (8,))[0]
        body = b"".join(gguf_value(kind[1], v)[1] for v in value)
        return 9, struct.pack("<IQ", code, len(value)) + body
    code, fmt = GGUF_VALUE[kind]
    return code, struct.pack(fmt, value)


def gguf_quantize(w, kind):
    """(blocks as bytes per row, dequantized weights) of w [N, K]."""
    n, k = w.shape
    blocks = w.astype(np.float32).reshape(n, k // 32, 32)
    if kind == "Q8_0":
        amax = np.abs(blocks).max(axis=2, keepdims=True)
        d = (amax / 127).astype(np.float32)
        inv = np.where(d != 0, 1 / np.where(d != 0, d, 1), 0).astype(np.float32)
        q = np.round(blocks * inv).astype(np.int8)  # numpy rounds half to even, llama.cpp away: no halves here
        d16 = d.astype(np.float16)
        raw = np.concatenate([d16.view(np.uint8).reshape(n, k // 32, 2), q.view(np.uint8)], axis=2)
        return raw.reshape(n, -1), (d16.astype(np.float32) * q.astype(np.float32)).reshape(n, k)
    mid = 8 if kind == "Q4_0" else 16
    qmax = 2 * mid - 1
    at = np.abs(blocks).argmax(axis=2)[..., None]
    peak = np.take_along_axis(blocks, at, axis=2)
    d = (peak / np.float32(-mid)).astype(np.float32)
    inv = np.where(d != 0, 1 / np.where(d != 0, d, 1), 0).astype(np.float32)
    q = np.minimum(qmax, np.trunc(blocks * inv + np.float32(mid + 0.5))).astype(np.uint8)
    d16 = d.astype(np.float16)
    nibbles = (q[..., :16] & 15) | ((q[..., 16:] & 15) << 4)
    parts = [d16.view(np.uint8).reshape(n, k // 32, 2)]
    if kind == "Q5_0":
        high = ((q >> 4) & 1).astype(np.uint64) << np.arange(32, dtype=np.uint64)
        parts.append(high.sum(axis=2).astype("<u4").view(np.uint8).reshape(n, k // 32, 4))
    parts.append(nibbles.astype(np.uint8))
    raw = np.concatenate(parts, axis=2)
    return raw.reshape(n, -1), (d16.astype(np.float32) * (q.astype(np.float32) - mid)).reshape(n, k)


def write_gguf(path, metadata, tensors, alignment=64):
    """metadata: [(key, kind, value)]; tensors: [(name, ggml type name,
    dims with the contiguous one first, raw bytes)]."""
    out = [b"GGUF", struct.pack("<IQQ", 3, len(tensors), len(metadata) + 1)]
    out.append(gguf_string("general.alignment") + struct.pack("<II", 4, alignment))
    for key, kind, value in metadata:
        code, raw = gguf_value(kind, value)
        out.append(gguf_string(key) + struct.pack("<I", code) + raw)
    offset, blobs = 0, []
    for name, kind, dims, raw in tensors:
        out.append(gguf_string(name) + struct.pack("<I", len(dims)) + struct.pack("<%dQ" % len(dims), *dims) +
                   struct.pack("<IQ", GGUF_TYPES[kind], offset))
        pad = -len(raw) % alignment
        blobs.append(raw + b"\0" * pad)
        offset += len(raw) + pad
    head = b"".join(out)
    with open(path, "wb") as f:
        f.write(head + b"\0" * (-len(head) % alignment) + b"".join(blobs))


def write_gguf_cases(out, rng):
    d = os.path.join(out, "gguf_llama")
    os.makedirs(d, exist_ok=True)
    meta = [("general.architecture", "str", "llama"), ("general.name", "str", "woq test"),
            ("llama.context_length", "u32", 4096), ("llama.rope.freq_base", "f32", 10000.0),
            ("general.file_type", "u32", 2), ("tokenizer.ggml.add_bos_token", "bool", True),
            ("tokenizer.ggml.tokens", ("array", "str"), ["<s>", "</s>", "a", "b"]),
            ("tokenizer.ggml.scores", ("array", "f32"), [0.0, -1.0, -2.0, -3.0]),
            ("test.nested", ("array", ("array", "i64")), [[1, 2], [3]]), ("test.f64", "f64", 0.5)]
    tensors, expected = [], {}
    for name, kind, n, k in (("blk.0.attn_q.weight", "Q4_0", 48, 96), ("blk.0.ffn_down.weight", "Q5_0", 40, 160),
                             ("blk.0.attn_output.weight", "Q8_0", 32, 64)):
        w = layer_weights(rng, n, k)
        w[3, 32:64] = 0  # an all-zero block: d = -0.0
        w[5, :32] = -np.abs(w[5, :32])  # a block whose largest weight is negative: d > 0
        raw, w_hat = gguf_quantize(w, kind)
        tensors.append((name, kind, [k, n], raw.tobytes()))
        expected[name] = ("F32", w_hat.astype(np.float32))
    bias = (rng.standard_normal(48) * 0.1).astype(np.float32)
    tensors.append(("blk.0.attn_q.bias", "F32", [48], bias.tobytes()))
    expected["blk.0.attn_q.bias"] = ("F32", bias)
    tensors.append(("output_norm.weight", "F32", [96], np.ones(96, dtype=np.float32).tobytes()))
    tensors.append(("token_embd.weight", "F16", [96, 10], rng.standard_normal(960).astype(np.float16).tobytes()))
    tensors.append(("blk.0.ffn_up.weight", "Q4_K", [256, 4], rng.integers(0, 256, 4 * 144, dtype=np.uint8).tobytes()))
    write_gguf(os.path.join(d, "model.gguf"), meta, tensors)
    ref.write_safetensors(os.path.join(d, "expect.safetensors"), expected)
    # K-quants only: nothing woq can import exactly.
    d = os.path.join(out, "gguf_kquants")
    os.makedirs(d, exist_ok=True)
    write_gguf(os.path.join(d, "model.gguf"), [("general.architecture", "str", "llama")],
               [(n, "Q4_K", [256, 2], rng.integers(0, 256, 2 * 144, dtype=np.uint8).tobytes())
                for n in ("blk.0.attn_q.weight", "blk.0.attn_k.weight")], alignment=32)


# ONNX: protobuf written field by field (wire types 0 varint, 2 bytes, 5 fixed32).
def pb_varint(v):
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def pb_int(field, v):
    return pb_varint(field << 3) + pb_varint(v)


def pb_bytes(field, payload):
    if isinstance(payload, str):
        payload = payload.encode()
    return pb_varint(field << 3 | 2) + pb_varint(len(payload)) + payload


ONNX_TYPE = {np.float32: 1, np.uint8: 2, np.int32: 6, np.float16: 10}


def onnx_tensor(name, array, how="raw", external=None):
    """TensorProto: dims (1), data_type (2), name (8), and raw_data (9),
    the typed field (float_data 4 / int32_data 5), or external data (13, 14)
    at external = (location, offset) with the bytes written by the caller."""
    a = np.ascontiguousarray(array)
    out = b"".join(pb_int(1, d) for d in a.shape) + pb_int(2, ONNX_TYPE[a.dtype.type]) + pb_bytes(8, name)
    if external:
        location, offset = external
        for key, value in (("location", location), ("offset", str(offset)), ("length", str(a.nbytes))):
            out += pb_bytes(13, pb_bytes(1, key) + pb_bytes(2, value))
        return out + pb_int(14, 1)
    if how == "raw":
        return out + pb_bytes(9, a.tobytes())
    if a.dtype == np.float32:  # float_data, packed
        return out + pb_bytes(4, a.tobytes())
    values = a.view(np.uint16) if a.dtype == np.float16 else a  # int32_data holds fp16 as its bits
    return out + pb_bytes(5, b"".join(pb_varint(int(v)) for v in values.ravel()))


def onnx_node(op, inputs, outputs, name, domain="", ints=()):
    out = b"".join(pb_bytes(1, i) for i in inputs) + b"".join(pb_bytes(2, o) for o in outputs)
    out += pb_bytes(3, name) + pb_bytes(4, op)
    for key, value in ints:  # AttributeProto: name (1), i (3), type INT (20: 2)
        out += pb_bytes(5, pb_bytes(1, key) + pb_int(3, value) + pb_int(20, 2))
    return out + (pb_bytes(7, domain) if domain else b"")


def write_onnx(path, nodes, initializers, metadata=()):
    graph = b"".join(pb_bytes(1, n) for n in nodes) + pb_bytes(2, "woq test")
    graph += b"".join(pb_bytes(5, t) for t in initializers)
    graph += pb_bytes(11, pb_bytes(1, "A")) + pb_bytes(12, pb_bytes(1, "Y"))
    model = pb_int(1, 9) + pb_bytes(2, "woq-test") + pb_bytes(3, "1")
    model += pb_bytes(8, pb_int(2, 21)) + pb_bytes(8, pb_bytes(1, "com.microsoft") + pb_int(2, 1))
    model += pb_bytes(7, graph)
    model += b"".join(pb_bytes(14, pb_bytes(1, k) + pb_bytes(2, v)) for k, v in metadata)
    with open(path, "wb") as f:
        f.write(model)


def pack_bytes_lsb(values, bits):
    """Rows of small codes packed LSB first into bytes (rows padded)."""
    v = np.asarray(values, dtype=np.uint32)
    per = 8 // bits
    pad = (-v.shape[-1]) % per
    v = np.concatenate([v, np.zeros(v.shape[:-1] + (pad,), dtype=np.uint32)], axis=-1)
    v = v.reshape(v.shape[:-1] + (-1, per))
    return sum(v[..., i] << (bits * i) for i in range(per)).astype(np.uint8)


def matmul_nbits(rng, prefix, n, k, bits, block, sym, zero_kind="packed", act_order=False, dtype=np.float32,
                 exact_scales=True, fp16_weights=False):
    """One MatMulNBits layer as ONNX Runtime's quantizer lays it out: B
    uint8 [N, blocks, block*bits/8] (codes LSB first per block, the last
    block zero-padded), scales [N*blocks], zero_points uint8 [N,
    ceil(blocks*bits/8)] packed the same way ("packed"), of A's type
    ("float"), or absent (2^(bits-1)); symmetric scales take the sign of
    the block's largest weight. Returns initializers, the node's inputs and
    attributes, and the dequantized weights (fp16_weights: from the scales
    rounded to fp16, as `woq import --round-scales` keeps them)."""
    w = layer_weights(rng, n, k)
    blocks = -(-k // block)
    g_idx = np.arange(k) // block
    if act_order:
        g_idx = g_idx[rng.permutation(k)]
    qmax, mid = (1 << bits) - 1, 1 << (bits - 1)
    scales = np.zeros((n, blocks))
    zeros = np.full((n, blocks), mid)
    for j in range(blocks):
        grp = w[:, g_idx == j]
        if sym:
            big = grp[np.arange(n), np.abs(grp).argmax(axis=1)]
            scales[:, j] = big / -mid
        else:
            lo, hi = np.minimum(grp.min(axis=1), 0), np.maximum(grp.max(axis=1), 0)
            scales[:, j] = (hi - lo) / qmax
    scales[1, 0] = 0.0  # an all-zero block
    w[1, g_idx == 0] = 0.0
    scales = scales.astype(dtype)
    if exact_scales:
        scales = scales.astype(np.float16).astype(dtype)
    s = scales.astype(np.float64)
    if not sym:
        lo = np.stack([np.minimum(w[:, g_idx == j].min(axis=1), 0) for j in range(blocks)], axis=1)
        zeros = np.clip(np.round(-lo / np.where(s == 0, 1, s)), 0, qmax).astype(np.int64)
    safe = np.where(s == 0, 1, s)
    codes = np.clip(np.round(w / safe[:, g_idx]) + zeros[:, g_idx], 0, qmax).astype(np.int64)
    padded = np.zeros((n, blocks * block), dtype=np.int64)
    padded[:, :k] = codes
    b = pack_bytes_lsb(padded.reshape(n, blocks, block), bits)
    inits = [(prefix + "_Q%d" % bits, b), (prefix + "_scales", scales.ravel())]
    inputs = ["A", prefix + "_Q%d" % bits, prefix + "_scales"]
    if zero_kind == "packed":
        inits.append((prefix + "_zero_points", pack_bytes_lsb(zeros, bits).ravel()))
    elif zero_kind == "float":
        inits.append((prefix + "_zero_points", zeros.astype(dtype).ravel()))
    if zero_kind != "none":
        inputs.append(prefix + "_zero_points")
    if act_order:
        inputs += [""] * (4 - len(inputs)) + [prefix + "_g_idx"]
        inits.append((prefix + "_g_idx", g_idx.astype(np.int32)))
    # The model's own dequantization, unpacked from B and the zero-points.
    q = np.stack([(b[:, :, (i * bits) // 8] >> ((i * bits) % 8)) & qmax for i in range(block)], axis=2)
    q = q.reshape(n, blocks * block)[:, :k].astype(np.int64)
    if zero_kind == "packed":
        zb = inits[2][1].reshape(n, -1)
        z = np.stack([(zb[:, (j * bits) // 8] >> ((j * bits) % 8)) & qmax for j in range(blocks)], axis=1)
    else:
        z = zeros if zero_kind == "float" else np.full((n, blocks), mid)
    if fp16_weights:
        s = np.abs(s).astype(np.float16).astype(np.float64) * np.sign(s)
    w_hat = s[:, g_idx] * (q - z[:, g_idx].astype(np.int64))
    attrs = (("K", k), ("N", n), ("bits", bits), ("block_size", block), ("accuracy_level", 4))
    return inits, inputs, attrs, w_hat


def write_onnx_cases(out, rng):
    """onnx_q4: an fp32 model with five MatMulNBits layers (4-bit
    asymmetric with per-row padded zero-points, 4-bit symmetric with
    negative scales in float_data, 8-bit, 2-bit, act-order g_idx; one with
    a bias) plus a float initializer and a MatMul that woq skips.
    onnx_q4f16_external: an fp16 model whose tensors lie in model.onnx_data
    (one padded block = a per-channel group, fp16 zero-points).
    onnx_fp32_scales, onnx_escape and onnx_truncated: refused (scales fp16
    cannot hold, which --round-scales rounds: expect_rounded.safetensors; an
    external data location outside the model's directory; the first 300
    bytes of onnx_q4's model)."""
    bias = (rng.standard_normal(48) * 0.1).astype(np.float32)
    layers = [("model.layers.0.attn.q_proj.weight", 48, 96, 4, 32, False, "packed", False),
              ("model.layers.0.mlp.up_proj.weight", 32, 256, 4, 64, True, "none", False),
              ("model.layers.0.mlp.down_proj.weight", 16, 128, 8, 128, False, "packed", False),
              ("model.layers.0.attn.k_proj.weight", 8, 64, 2, 32, False, "packed", False),
              ("model.layers.0.attn.v_proj.weight", 16, 128, 4, 32, False, "packed", True)]
    nodes, inits, expected = [], [], {}
    for i, (prefix, n, k, bits, block, sym, zk, act) in enumerate(layers):
        ts, inputs, attrs, w_hat = matmul_nbits(rng, prefix, n, k, bits, block, sym, zk, act)
        if i == 0:
            inputs += [""] * (5 - len(inputs)) + [prefix + ".bias"]
            ts.append((prefix + ".bias", bias))
            expected["model.layers.0.attn.q_proj.bias"] = ("F32", bias)
        how = "typed" if i == 1 else "raw"
        inits += [onnx_tensor(name, a, how) for name, a in ts]
        nodes.append(onnx_node("MatMulNBits", inputs, ["Y%d" % i], "/model/layer%d/MatMul_Q%d" % (i, bits),
                               "com.microsoft", attrs))
        expected[prefix] = ("F32", w_hat.astype(np.float32))
    inits.append(onnx_tensor("model.embed_tokens.weight", rng.standard_normal((10, 96)).astype(np.float32)))
    nodes.append(onnx_node("MatMul", ["A", "model.embed_tokens.weight"], ["E"], "/embed/MatMul"))
    d = os.path.join(out, "onnx_q4")
    os.makedirs(d, exist_ok=True)
    write_onnx(os.path.join(d, "model.onnx"), nodes, inits, [("model_type", "llama"), ("author", "woq test")])
    ref.write_safetensors(os.path.join(d, "expect.safetensors"), expected)

    d = os.path.join(out, "onnx_q4f16_external")
    os.makedirs(d, exist_ok=True)
    ts, inputs, attrs, w_hat = matmul_nbits(rng, "lm_head.weight", 24, 96, 4, 128, False, "float", dtype=np.float16)
    blob, inits = b"", []
    for name, a in ts:
        blob += b"\0" * (-len(blob) % 64)
        inits.append(onnx_tensor(name, a, external=("model.onnx_data", len(blob))))
        blob += np.ascontiguousarray(a).tobytes()
    with open(os.path.join(d, "model.onnx_data"), "wb") as f:
        f.write(blob)
    write_onnx(os.path.join(d, "model.onnx"), [onnx_node("MatMulNBits", inputs, ["Y"], "/lm_head/MatMul_Q4",
                                                         "com.microsoft", attrs)], inits)
    ref.write_safetensors(os.path.join(d, "expect.safetensors"), {"lm_head.weight": ("F32", w_hat.astype(np.float32))})

    d = os.path.join(out, "onnx_truncated")  # cut inside the graph: a length runs past the file
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(out, "onnx_q4", "model.onnx"), "rb") as f:
        head = f.read(300)
    with open(os.path.join(d, "model.onnx"), "wb") as f:
        f.write(head)
    for case, exact, location in (("onnx_fp32_scales", False, None), ("onnx_escape", True, "../model.onnx_data")):
        d = os.path.join(out, case)
        os.makedirs(d, exist_ok=True)
        ts, inputs, attrs, w_hat = matmul_nbits(rng, "proj.weight", 16, 64, 4, 32, False, exact_scales=exact,
                                                fp16_weights=True)
        inits = [onnx_tensor(name, a, external=(location, 0) if location and name.endswith("_Q4") else None)
                 for name, a in ts]
        write_onnx(os.path.join(d, "model.onnx"), [onnx_node("MatMulNBits", inputs, ["Y"], "/proj/MatMul_Q4",
                                                             "com.microsoft", attrs)], inits)
        if not exact:  # what `woq import --round-scales` makes of it
            ref.write_safetensors(os.path.join(d, "expect_rounded.safetensors"),
                                  {"proj.weight": ("F32", w_hat.astype(np.float32))})


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
    # The same in GGUF (dimensions listed contiguous first), with a Q4_0
    # matrix that quantize skips.
    d = os.path.join(out, "float_gguf")
    os.makedirs(d, exist_ok=True)
    q4, _ = gguf_quantize(layer_weights(rng, 16, 64), "Q4_0")
    # Two strings .woq metadata cannot hold (a 305-byte key, a NUL): left out.
    write_gguf(os.path.join(d, "model.gguf"), [("general.architecture", "str", "llama"),
                                               ("test." + "k" * 300, "str", "long key"), ("test.nul", "str", "a\0b")],
               [(name, kind, list(values.shape[::-1]), values.tobytes()) for name, (kind, values) in floats.items()] +
               [("model.layers.0.mlp.gate_proj.weight", "Q4_0", [64, 16], q4.tobytes())])
    ref.write_safetensors(os.path.join(d, "calibration.safetensors"),  # inputs for gptq / awq
                          {"model.layers.0.mlp.up_proj": ("F32", rng.standard_normal((64, 128)).astype(np.float32)),
                           "model.layers.0.mlp.down_proj": ("F32", rng.standard_normal((64, 256)).astype(np.float32))})
    write_gguf_cases(out, rng)
    write_onnx_cases(out, rng)
    write_wide_floats(out)
    print("wrote 21 checkpoint cases to", out)


def write_wide_floats(out):
    """float_wide: float matrices whose rows are whole 256-value super-blocks,
    for ggml's K-quants (tests/ggml): normal weights with outliers, a row of
    negative weights, a row of zeros, a row of one repeated value; an F16
    matrix with a bias; and a matrix of 128-wide rows that stays F32."""
    rng = np.random.default_rng(29)  # its own stream: the cases above keep theirs
    d = os.path.join(out, "float_wide")
    os.makedirs(d, exist_ok=True)
    gate = layer_weights(rng, 24, 1024)
    gate[2] = -np.abs(gate[2])
    gate[3] = 0
    gate[4] = 0.03
    gate[5, ::97] *= 40
    proj = layer_weights(rng, 16, 512)
    ref.write_safetensors(os.path.join(d, "model.safetensors"), {
        "model.layers.0.mlp.gate_proj.weight": ("F32", gate.astype(np.float32)),
        "model.layers.0.self_attn.o_proj.weight": ("F16", proj.astype(np.float16)),
        "model.layers.0.self_attn.o_proj.bias": ("F32", (rng.standard_normal(16) * 0.1).astype(np.float32)),
        "model.layers.0.mlp.down_proj.weight": ("F32", layer_weights(rng, 8, 128).astype(np.float32))},
        {"format": "pt"})


if __name__ == "__main__":
    main()
