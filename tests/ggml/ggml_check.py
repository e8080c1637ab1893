#!/usr/bin/env python3
"""Checks woq's GGUF files against llama.cpp's own code: libggml-base.so as
node-llama-cpp ships it prebuilt (npm @node-llama-cpp/linux-x64, fetched by
.ci/setup into build/ggml), called through ctypes.

  ggml_check.py LIB dequantized FILE.gguf EXPECT.safetensors
      ggml's GGUF reader (gguf_init_from_file) opens FILE.gguf, and each
      tensor of EXPECT's names, dequantized by ggml (dequantize_row_<type>),
      equals EXPECT's values bit for bit.
  ggml_check.py LIB quantize SOURCE.safetensors TYPE OUT.gguf EXPECT.safetensors
      llama.cpp's reference quantizer (quantize_row_<type>_ref) turns
      SOURCE's 2-D *.weight tensors into TYPE (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
      Q2_K .. Q6_K) blocks in OUT.gguf (their *.bias as F32; a matrix whose
      rows are not whole blocks as F32); EXPECT receives ggml's
      dequantization of those blocks, as F32.

LIB is libggml-base.so's path.
"""
import ctypes
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "golden"))
import make_checkpoints as ckpt  # noqa: E402  (its numpy GGUF writer)
import woq_reference as ref  # noqa: E402

# ggml type number, values and bytes per block
TYPES = {"Q4_0": (2, 32, 18), "Q4_1": (3, 32, 20), "Q5_0": (6, 32, 22), "Q5_1": (7, 32, 24), "Q8_0": (8, 32, 34),
         "Q2_K": (10, 256, 84), "Q3_K": (11, 256, 110), "Q4_K": (12, 256, 144), "Q5_K": (13, 256, 176),
         "Q6_K": (14, 256, 210)}


def symbol(kind):
    """The type as ggml's function names spell it: q4_0, q4_K."""
    return kind[0].lower() + kind[1:]


class GgufInitParams(ctypes.Structure):
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.c_void_p)]


def load(lib_path):
    lib = ctypes.CDLL(lib_path)
    lib.gguf_init_from_file.restype = ctypes.c_void_p
    lib.gguf_init_from_file.argtypes = [ctypes.c_char_p, GgufInitParams]
    lib.gguf_free.argtypes = [ctypes.c_void_p]
    lib.gguf_get_version.restype = ctypes.c_uint32
    lib.gguf_get_version.argtypes = [ctypes.c_void_p]
    lib.gguf_get_data_offset.restype = ctypes.c_size_t
    lib.gguf_get_data_offset.argtypes = [ctypes.c_void_p]
    lib.gguf_get_n_tensors.restype = ctypes.c_int64
    lib.gguf_get_n_tensors.argtypes = [ctypes.c_void_p]
    for name, restype in (("gguf_get_tensor_name", ctypes.c_char_p), ("gguf_get_tensor_type", ctypes.c_int),
                          ("gguf_get_tensor_offset", ctypes.c_size_t), ("gguf_get_tensor_size", ctypes.c_size_t)):
        getattr(lib, name).restype = restype
        getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.c_int64]
    for kind in TYPES:
        t = symbol(kind)
        getattr(lib, "dequantize_row_" + t).argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        getattr(lib, "quantize_row_%s_ref" % t).argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    return lib


def ggml_tensors(lib, path):
    """{name: (ggml type, raw bytes)} as ggml's own GGUF reader finds them."""
    ctx = lib.gguf_init_from_file(path.encode(), GgufInitParams(True, None))
    if not ctx:
        raise ref.Fail("ggml's gguf_init_from_file refuses %s" % path)
    try:
        with open(path, "rb") as f:
            data = f.read()
        start = lib.gguf_get_data_offset(ctx)
        out = {}
        for i in range(lib.gguf_get_n_tensors(ctx)):
            at, size = start + lib.gguf_get_tensor_offset(ctx, i), lib.gguf_get_tensor_size(ctx, i)
            out[lib.gguf_get_tensor_name(ctx, i).decode()] = (lib.gguf_get_tensor_type(ctx, i), data[at:at + size])
        return out, lib.gguf_get_version(ctx)
    finally:
        lib.gguf_free(ctx)


def dequantize(lib, kind, raw, n, k):
    blocks = np.frombuffer(raw, dtype=np.uint8)
    _, per_block, block_bytes = TYPES[kind]
    if k % per_block or blocks.size != n * (k // per_block) * block_bytes:
        raise ref.Fail("%d bytes are not %d x %d %s weights" % (blocks.size, n, k, kind))
    out = np.empty(n * k, dtype=np.float32)
    getattr(lib, "dequantize_row_" + symbol(kind))(blocks.ctypes.data, out.ctypes.data, n * k)
    return out.reshape(n, k)


def cmd_dequantized(lib, path, expect_path):
    tensors, version = ggml_tensors(lib, path)
    expect, _ = ref.read_safetensors(expect_path)
    kinds = {code: kind for kind, (code, _, _) in TYPES.items()}
    checked = 0
    for name, (_, want) in expect.items():
        if name.endswith(".bias"):
            continue
        if name not in tensors:
            raise ref.Fail("ggml finds no tensor %s in %s" % (name, path))
        code, raw = tensors[name]
        if code not in kinds:
            raise ref.Fail("%s is ggml type %d, not one of %s" % (name, code, ", ".join(TYPES)))
        got = dequantize(lib, kinds[code], raw, *want.shape)
        if not np.array_equal(got, want.astype(np.float32)):
            diff = np.abs(got.astype(np.float64) - want).max()
            raise ref.Fail("%s: ggml's dequantization differs (max difference %g)" % (name, diff))
        checked += 1
    print("ggml OK: GGUF v%d with %d tensors read by ggml; %d tensors dequantized by ggml equal %s" %
          (version, len(tensors), checked, os.path.basename(expect_path)))


def cmd_quantize(lib, source_path, kind, out_path, expect_path):
    source, _ = ref.read_safetensors(source_path)
    tensors, expected = [], {}
    _, per_block, block_bytes = TYPES[kind]
    for name, (_, w) in source.items():
        if name.endswith(".weight") and w.ndim == 2:
            n, k = w.shape
            x = np.ascontiguousarray(w, dtype=np.float32)
            if k % per_block:  # as llama.cpp does for such rows: left in float
                tensors.append((name, "F32", [k, n], x.tobytes()))
                expected[name] = ("F32", x)
                continue
            raw = np.empty(n * (k // per_block) * block_bytes, dtype=np.uint8)
            getattr(lib, "quantize_row_%s_ref" % symbol(kind))(x.ctypes.data, raw.ctypes.data, n * k)
            tensors.append((name, kind, [k, n], raw.tobytes()))
            expected[name] = ("F32", dequantize(lib, kind, raw.tobytes(), n, k))
    for name, (_, b) in source.items():
        if name.endswith(".bias") and name[:-5] + ".weight" in expected:
            tensors.append((name, "F32", [b.size], b.astype(np.float32).tobytes()))
            expected[name] = ("F32", b.astype(np.float32))
    ckpt.write_gguf(out_path, [("general.architecture", "str", "llama")], tensors, alignment=32)
    ref.write_safetensors(expect_path, expected)
    print("ggml quantized %d tensors of %s to %s" % (len(tensors), os.path.basename(source_path), kind))


def main(argv):
    try:
        if len(argv) == 5 and argv[2] == "dequantized":
            cmd_dequantized(load(argv[1]), argv[3], argv[4])
        elif len(argv) == 7 and argv[2] == "quantize" and argv[4] in TYPES:
            cmd_quantize(load(argv[1]), argv[3], argv[4], argv[5], argv[6])
        else:
            print(__doc__)
            return 2
    except ref.Fail as e:
        print("FAIL:", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
