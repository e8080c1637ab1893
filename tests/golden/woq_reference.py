#!/usr/bin/env python3
"""An independent implementation of fileformat/SPEC.md in Python + numpy.

It shares no code with libwoq: it quantizes (SPEC 5.4), packs codes (5.1),
writes and reads .woq files (2-4, 6, 7) and computes float64 matmuls. The
tests use it to make golden vectors and to check files in both directions.

  woq_reference.py check FILE.woq SOURCE.safetensors
      parse and validate FILE.woq completely, verify every checksum, decode
      every chunk and check that codes/scales/zero-points/bias equal this
      script's own quantization of SOURCE's weights (bits, group and scheme
      taken from the file).
  woq_reference.py check-export FILE.woq EXPORTED.safetensors f16|bf16|f32
      check that `woq export` wrote FILE's dequantized weights (rounded to
      the dtype) and biases.
  woq_reference.py dequantized FILE.woq EXPECT.safetensors
      read FILE.woq and check that each tensor's weights (input scales or
      permutation applied) equal EXPECT's tensor of its name.
  woq_reference.py same GOT.safetensors EXPECT.safetensors
      every tensor of EXPECT is in GOT with exactly the same values.
  woq_reference.py gguf OUT.gguf TEMPLATE.gguf EXPECT.safetensors
      check a `woq export --format gguf` file: TEMPLATE's metadata (but
      general.file_type) and tensors in its order, each tensor of EXPECT's
      names dequantized from llama.cpp's Q4_0 / Q5_0 / Q8_0 blocks equal to
      EXPECT's values, every other tensor byte for byte TEMPLATE's.
  woq_reference.py write SOURCE.safetensors OUT.woq EXPECT.safetensors BITS GROUP sym|asym
      quantize SOURCE's *.weight tensors, write OUT.woq (several chunks per
      tensor, zstd and raw codecs) and EXPECT.safetensors holding each
      tensor's dequantized weights as F32 for the C++ side to compare.

Needs Debian's python3-numpy, python3-xxhash and python3-zstandard.
"""
import json
import math
import struct
import sys

import numpy as np

MAGIC = b"\x89WOQ\r\n\x1a\n"
ALIGN = 256

# ----------------------------------------------------------------- numerics


def up16(x):
    """Smallest float16 value >= x (x >= 0), as a numpy float16."""
    if x > 65504.0:
        raise ValueError("scale %r exceeds fp16" % x)
    h = np.float16(x)
    while float(h) < x:
        h = np.nextafter(h, np.float16(np.inf))
    while float(h) > 0 and float(np.nextafter(h, np.float16(0))) >= x:
        h = np.nextafter(h, np.float16(0))
    return np.float16(h)


def grid(lo, hi, amax, shrink, bits, symmetric):
    """SPEC 5.4 on a range shrunk by `shrink`: (fp16 scale, its value, zero)."""
    qmax = float(2 ** bits - 1)
    half = float(2 ** (bits - 1))
    lo, hi, amax = lo * shrink, hi * shrink, amax * shrink
    ideal = amax / (half - 1.0) if symmetric else (hi - lo) / qmax
    s16 = up16(ideal)
    s = float(s16)
    if s == 0.0:
        return np.float16(1.0), 1.0, (half if symmetric else 0.0)
    z = half if symmetric else min(qmax, max(0.0, float(np.rint(-lo / s))))
    return s16, s, z


def shrink_lp(x, beta):
    """The l_0.5 generalized soft threshold of SPEC 5.8."""
    a = abs(x)
    if a == 0.0:
        return 0.0
    v = a - 1.0 / (beta * math.sqrt(a))
    return math.copysign(v, x) if v > 0 else 0.0


def hqq_candidates(wg, s16, s, z0, bits, symmetric):
    """SPEC 5.8: the grids HQQ proposes, starting from the RTN grid."""
    qmax = float(2 ** bits - 1)
    ws = wg.tolist()
    n = len(ws)
    z, beta = z0, 10.0
    for _ in range(20):
        q = [min(qmax, max(0.0, float(np.rint(wi / s + z)))) for wi in ws]
        t = [wi - shrink_lp(wi - s * (qi - z), beta) for wi, qi in zip(ws, q)]
        mq = mt = 0.0
        for qi, ti in zip(q, t):
            mq += qi
            mt += ti
        mq /= n
        mt /= n
        num = den = 0.0
        for qi, ti in zip(q, t):
            dq = qi - z if symmetric else qi - mq
            num += dq * (ti if symmetric else ti - mt)
            den += dq * dq
        if den > 0 and num > 0:
            s = num / den
            if not symmetric:
                z = mq - mt / s
        beta *= 1.01
    if not symmetric:
        z = min(qmax, max(0.0, float(np.rint(z))))
    out = []

    def push(scale):
        if 0 < scale <= 65504.0:
            h = np.float16(np.float32(scale))
            if float(h) > 0:
                out.append((h, float(h), z))
    push(s)
    num = den = 0.0
    for wi in ws:
        d = min(qmax, max(0.0, float(np.rint(wi / s + z)))) - z
        num += wi * d
        den += d * d
    if den > 0:
        push(num / den)
    return out


def quantize(w, bits, group, symmetric, method="rtn"):
    """SPEC 5.4 (method rtn), 5.5 (mse) or 5.8 (hqq) on W[N, K] (any float
    dtype). Returns codes u8 [N, K], scales f16 [N, G], zeros u8 [N, G]."""
    w = np.asarray(w, dtype=np.float64)
    n, k = w.shape
    g = k if group == 0 else group
    groups = k // g
    qmax = float(2 ** bits - 1)
    codes = np.zeros((n, k), dtype=np.uint8)
    scales = np.zeros((n, groups), dtype=np.float16)
    zeros = np.zeros((n, groups), dtype=np.uint8)
    steps = 11 if method == "mse" else 1
    for r in range(n):
        for j in range(groups):
            wg = w[r, j * g:(j + 1) * g]
            lo, hi, amax = min(0.0, float(wg.min())), max(0.0, float(wg.max())), float(np.max(np.abs(wg)))
            candidates = [grid(lo, hi, amax, (20 - step) / 20.0, bits, symmetric) for step in range(steps)]
            if method == "hqq":
                candidates += hqq_candidates(wg, *candidates[0], bits, symmetric)
            best = None
            for s16, s, z in candidates:
                q = np.clip(np.rint(wg / s + z), 0, qmax).astype(np.uint8)
                # Squared error of the stored fp32 values, summed in order.
                w_hat = np.float32(s) * (q.astype(np.int64) - int(z)).astype(np.float32)
                err = 0.0
                for a, b in zip(w_hat.tolist(), wg.tolist()):
                    err += (a - b) * (a - b)
                if best is None or err < best[0]:
                    best = (err, s16, z, q)
            _, s16, z, q = best
            scales[r, j] = s16
            zeros[r, j] = int(z)
            codes[r, j * g:(j + 1) * g] = q
    return codes, scales, zeros


def dequantize(codes, scales, zeros, group):
    n, k = codes.shape
    g = k if group == 0 else group
    s = np.repeat(scales.astype(np.float64), g, axis=1)
    z = np.repeat(zeros.astype(np.float64), g, axis=1)
    return s * (codes.astype(np.float64) - z)


def matmul_exact(x, w_hat, bias):
    """Y = X W_hat^T + bias in float64, each element the correctly rounded sum
    (math.fsum) of exact products: an fp32 x times an fp16 s (q - z) fits in
    53 bits. The same bytes on every machine, which a BLAS-backed `@` (its
    kernel and summation order chosen per CPU) does not give."""
    x64, b = x.astype(np.float64), bias.astype(np.float64)
    y = np.empty((x.shape[0], w_hat.shape[0]))
    for i in range(x.shape[0]):
        products = x64[i][None, :] * w_hat  # elementwise, exact
        for j in range(w_hat.shape[0]):
            y[i, j] = math.fsum(list(products[j]) + [b[j]])
    return y


def pack(codes, bits):
    """SPEC 5.1: each row a little-endian bitstream in u32 words."""
    n, k = codes.shape
    words = (k * bits + 31) // 32
    out = np.zeros((n, words), dtype=np.uint32)
    for r in range(n):
        acc = 0
        for i in range(k):
            acc |= int(codes[r, i]) << (i * bits)
        for wi in range(words):
            out[r, wi] = (acc >> (32 * wi)) & 0xFFFFFFFF
    return out


def unpack(words, k, bits):
    n = words.shape[0]
    codes = np.zeros((n, k), dtype=np.uint8)
    mask = (1 << bits) - 1
    for r in range(n):
        acc = 0
        for wi in range(words.shape[1]):
            acc |= int(words[r, wi]) << (32 * wi)
        for i in range(k):
            codes[r, i] = (acc >> (i * bits)) & mask
        if acc >> (k * bits):
            raise ValueError("row %d has non-zero padding bits" % r)
    return codes


# ----------------------------------------------------------------- safetensors

ST_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "U8": np.uint8,
             "U32": np.uint32, "U16": np.uint16, "I32": np.int32}


def read_safetensors(path):
    data = open(path, "rb").read()
    (hlen,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8:8 + hlen])
    meta = header.pop("__metadata__", {})
    base = 8 + hlen
    out = {}
    for name, t in header.items():
        b, e = t["data_offsets"]
        if t["dtype"] == "BF16":
            raw = np.frombuffer(data[base + b:base + e], dtype=np.uint16).astype(np.uint32) << 16
            arr = raw.view(np.float32)
        else:
            arr = np.frombuffer(data[base + b:base + e], dtype=ST_DTYPES[t["dtype"]])
        out[name] = (t["dtype"], arr.reshape(t["shape"]))
    return out, meta


def write_safetensors(path, tensors, meta=None):
    """tensors: {name: (dtype_string, ndarray)}"""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        dtype, arr = tensors[name]
        raw = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if meta:
        header["__metadata__"] = meta
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def to_bf16_bits(arr_f32):
    """Round-to-nearest-even float32 -> bfloat16 bit patterns (no NaNs here)."""
    u = np.ascontiguousarray(arr_f32, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


# ----------------------------------------------------------------- .woq files


def xxh3(b):
    import xxhash
    return xxhash.xxh3_64_intdigest(b)


class Fail(Exception):
    pass


def read_woq(path):
    """Parse and validate a .woq file per SPEC section 7; return (meta, tensors)
    where tensors is a list of dicts with decoded arrays."""
    import zstandard
    data = open(path, "rb").read()
    if len(data) < 64 or data[:8] != MAGIC:
        raise Fail("bad magic")
    endian, major, minor, _ = data[8:12]
    if endian != 1:
        raise Fail("endianness")
    if major != 1:
        raise Fail("version")
    header_size, dir_off, dir_size, file_size, flags, checksum, _ = struct.unpack_from("<IQQQQQQ", data, 12)
    if header_size != 64 or file_size != len(data) or dir_off % ALIGN or dir_off < 256 \
            or dir_off + dir_size != file_size or flags:
        raise Fail("header fields")
    if xxh3(data[:48] + data[dir_off:]) != checksum:
        raise Fail("header checksum")
    d = data[dir_off:]
    pos = 0

    def take(fmt):
        nonlocal pos
        vals = struct.unpack_from("<" + fmt, d, pos)
        pos += struct.calcsize("<" + fmt)
        return vals

    tensor_count, meta_count = take("II")
    meta = {}
    for _ in range(meta_count):
        start = pos
        size, klen, mtype, _ = take("IHBB")
        key = d[pos:pos + klen].decode()
        pos += klen
        (vlen,) = take("I")
        raw = d[pos:pos + vlen]
        pos += vlen
        meta[key] = raw.decode() if mtype == 1 else struct.unpack("<q" if mtype == 2 else "<d", raw)[0]
        if pos - start != size:
            raise Fail("metadata entry size")
    tensors, ranges = [], []
    for _ in range(tensor_count):
        start = pos
        (size, nlen, bits, scheme, method, src, sdt, zdt, packing, tflags, nsec, rows, cols, g, rpc,
         max_err, rel_err, sqnr) = take("IHBBBBBBBBHQQIIddd")
        name = d[pos:pos + nlen].decode()
        pos += nlen
        if not (1 <= bits <= 8) or sdt != 1 or zdt != 1 or packing != 0 or cols % g or rpc == 0 or tflags & ~7 \
                or tflags & 6 == 6 or (tflags & 4 and minor < 2):
            raise Fail("tensor fields of " + name)
        chunks = -(-rows // rpc)
        words = (cols * bits + 31) // 32
        row_bytes = {0: words * 4, 1: cols // g * 2, 2: cols // g, 3: 4}
        sections = {}
        for _ in range(nsec):
            kind, _, _, _, count = take("BBBBI")
            # kind 4 (format 1.1): the input scales, one chunk of cols fp32;
            # kind 5 (1.2): the input permutation, one chunk of cols u32
            if count != (1 if kind >= 4 else chunks) or kind in sections or kind > 5:
                raise Fail("section of " + name)
            parts = []
            for c in range(count):
                off, stored, raw_size, csum, codec = take("QQQQB")
                pos += 7
                nrows = min(rows, (c + 1) * rpc) - c * rpc
                want = cols * 4 if kind >= 4 else nrows * row_bytes[kind]
                if raw_size != want or off % ALIGN or off < 256 or off + stored > dir_off:
                    raise Fail("chunk ref of " + name)
                blob = data[off:off + stored]
                if xxh3(blob) != csum:
                    raise Fail("chunk checksum of " + name)
                if codec == 0:
                    if stored != raw_size:
                        raise Fail("raw chunk size")
                    out = blob
                elif codec == 1:
                    if not 0 < stored < raw_size:
                        raise Fail("zstd chunk size")
                    out = zstandard.ZstdDecompressor().decompress(blob, max_output_size=raw_size)
                    if len(out) != raw_size:
                        raise Fail("zstd decoded size")
                else:
                    raise Fail("codec")
                ranges.append((off, off + stored))
                parts.append(out)
            sections[kind] = b"".join(parts)
        want_kinds = [0, 1, 2] + ([3] if tflags & 1 else []) + ([4] if tflags & 2 else []) + \
            ([5] if tflags & 4 else [])
        if pos - start != size or sorted(sections) != want_kinds:
            raise Fail("record of " + name)
        t = {"name": name, "bits": bits, "symmetric": scheme == 1, "group": g, "rows": rows, "cols": cols,
             "source_dtype": src, "method": method,
             "words": np.frombuffer(sections[0], dtype="<u4").reshape(rows, words),
             "scales": np.frombuffer(sections[1], dtype="<f2").reshape(rows, cols // g),
             "zeros": np.frombuffer(sections[2], dtype=np.uint8).reshape(rows, cols // g),
             "bias": np.frombuffer(sections[3], dtype="<f4") if 3 in sections else None,
             "input_scales": np.frombuffer(sections[4], dtype="<f4") if 4 in sections else None,
             "input_permutation": np.frombuffer(sections[5], dtype="<u4") if 5 in sections else None,
             "stats": (max_err, rel_err, sqnr)}
        t["codes"] = unpack(t["words"], cols, bits)
        perm = t["input_permutation"]
        if perm is not None and not np.array_equal(np.sort(perm), np.arange(cols)):
            raise Fail("input permutation of %s is not a permutation of 0..cols-1" % name)
        tensors.append(t)
    if pos != len(d):
        raise Fail("directory has trailing bytes")
    ranges.sort()
    for a, b in zip(ranges, ranges[1:]):
        if b[0] < a[1]:
            raise Fail("overlapping chunks")
    return meta, tensors


def write_woq(path, tensors, meta, rows_per_chunk):
    """tensors: list of dicts name, bits, symmetric, group, codes, scales,
    zeros, bias (or None), source_dtype. Small rows_per_chunk gives several
    chunks; chunks of codes are zstd-compressed when that saves >= 3%."""
    import zstandard
    body = bytearray(b"\0" * 256)
    directory = bytearray(struct.pack("<II", len(tensors), len(meta)))
    for key in sorted(meta):
        v = meta[key]
        if isinstance(v, str):
            mtype, raw = 1, v.encode()
        elif isinstance(v, int):
            mtype, raw = 2, struct.pack("<q", v)
        else:
            mtype, raw = 3, struct.pack("<d", v)
        k = key.encode()
        entry = struct.pack("<HBB", len(k), mtype, 0) + k + struct.pack("<I", len(raw)) + raw
        directory += struct.pack("<I", 4 + len(entry)) + entry
    for t in tensors:
        rows, cols = t["codes"].shape
        words = pack(t["codes"], t["bits"])
        arrays = [words.astype("<u4"), t["scales"].astype("<f2"), t["zeros"].astype(np.uint8)]
        if t["bias"] is not None:
            arrays.append(np.asarray(t["bias"], dtype="<f4").reshape(rows, 1))
        sections = b""
        for kind, arr in enumerate(arrays):
            chunks = -(-rows // rows_per_chunk)
            sections += struct.pack("<BBBBI", kind, 0, 0, 0, chunks)
            for c in range(chunks):
                raw = arr[c * rows_per_chunk:(c + 1) * rows_per_chunk].tobytes()
                packed = zstandard.ZstdCompressor(level=9).compress(raw)
                codec, stored = (1, packed) if len(packed) < len(raw) - len(raw) // 33 else (0, raw)
                body += b"\0" * (-len(body) % ALIGN)
                off = len(body)
                body += stored
                sections += struct.pack("<QQQQB7x", off, len(stored), len(raw), xxh3(stored), codec)
        name = t["name"].encode()
        fixed = struct.pack("<HBBBBBBBBHQQIIddd", len(name), t["bits"], 1 if t["symmetric"] else 0, 0,
                            t.get("source_dtype", 0), 1, 1, 0, 1 if t["bias"] is not None else 0,
                            len(arrays), rows, cols, t["group"] or cols, rows_per_chunk, 0.0, 0.0, 0.0)
        record = fixed + name + sections
        directory += struct.pack("<I", 4 + len(record)) + record
    body += b"\0" * (-len(body) % ALIGN)
    dir_off = len(body)
    head = MAGIC + struct.pack("<BBBBIQQQQ", 1, 1, 0, 0, 64, dir_off, len(directory), dir_off + len(directory), 0)
    head += struct.pack("<QQ", xxh3(head + bytes(directory)), 0)
    body[:64] = head
    with open(path + ".tmp", "wb") as f:
        f.write(bytes(body) + bytes(directory))
    import os
    os.replace(path + ".tmp", path)


# ----------------------------------------------------------------- commands


def source_weights(path):
    tensors, _ = read_safetensors(path)
    return {n: (dt, a.astype(np.float64)) for n, (dt, a) in tensors.items()}


def cmd_check(woq_path, source_path):
    src = source_weights(source_path)
    meta, tensors = read_woq(woq_path)
    if not tensors:
        raise Fail("no tensors")
    for t in tensors:
        dt, w = src[t["name"]]
        codes, scales, zeros = quantize(w, t["bits"], t["group"], t["symmetric"],
                                        {0: "rtn", 1: "mse", 2: "hqq"}[t["method"]])
        if not np.array_equal(codes, t["codes"]):
            raise Fail("codes of %s differ from the reference quantizer" % t["name"])
        if not np.array_equal(scales.view(np.uint16), t["scales"].view(np.uint16)):
            raise Fail("scales of %s differ" % t["name"])
        if not np.array_equal(zeros, t["zeros"]):
            raise Fail("zero-points of %s differ" % t["name"])
        bias_name = t["name"][:-len(".weight")] + ".bias"
        if bias_name in src:
            if t["bias"] is None or not np.array_equal(t["bias"], src[bias_name][1].astype(np.float32)):
                raise Fail("bias of %s differs" % t["name"])
        w_hat = dequantize(t["codes"], t["scales"], t["zeros"], t["group"])
        err = np.abs(w_hat - w)
        bound = np.repeat(t["scales"].astype(np.float64), t["group"], axis=1) / 2
        if t["method"] == 0 and np.any(err > bound * (1 + 1e-12)):  # clipping (mse) may exceed it
            raise Fail("|w_hat - w| > s/2 in %s" % t["name"])
        if abs(t["stats"][0] - err.max()) > 1e-6 * max(1.0, err.max()):
            raise Fail("max_abs_error of %s is %r, reference %r" % (t["name"], t["stats"][0], err.max()))
    print("check OK: %d tensors in %s match the reference quantizer; metadata %s"
          % (len(tensors), woq_path, sorted(meta)))


def cmd_write(source_path, out_path, expect_path, bits, group, scheme):
    src = source_weights(source_path)
    tensors, expect = [], {}
    for name in sorted(src):
        if not name.endswith(".weight"):
            continue
        dt, w = src[name]
        codes, scales, zeros = quantize(w, bits, group, scheme == "sym")
        bias = src.get(name[:-len(".weight")] + ".bias")
        tensors.append({"name": name, "bits": bits, "symmetric": scheme == "sym", "group": group,
                        "codes": codes, "scales": scales, "zeros": zeros,
                        "bias": None if bias is None else bias[1].astype(np.float32),
                        "source_dtype": {"F32": 0, "F16": 1, "BF16": 2}[dt]})
        expect[name] = ("F32", dequantize(codes, scales, zeros, group).astype(np.float32))
    write_woq(out_path, tensors, {"model.name": "python reference writer", "quant.bits": bits,
                                  "ratio": 0.5}, rows_per_chunk=5)
    write_safetensors(expect_path, expect)
    print("wrote %s (%d tensors) and %s" % (out_path, len(tensors), expect_path))


def effective_weights(t):
    """A tensor read by read_woq as the model's weights [N, K] (float64): s (q - z)
    times the input scales (5.7), or with stored input k at model input
    input_permutation[k] (1.2)."""
    w_hat = dequantize(t["codes"], t["scales"], t["zeros"], t["group"])
    if t["input_scales"] is not None:
        w_hat = (w_hat.astype(np.float32) * t["input_scales"]).astype(np.float64)
    if t["input_permutation"] is not None:
        model = np.empty_like(w_hat)
        model[:, t["input_permutation"]] = w_hat
        w_hat = model
    return w_hat


def cmd_dequantized(woq_path, expect_path):
    """Read by this module, every tensor of the .woq file has EXPECT's weights."""
    _, tensors = read_woq(woq_path)
    expect, _ = read_safetensors(expect_path)
    for t in tensors:
        if t["name"] not in expect:
            raise Fail("%s lacks %s" % (expect_path, t["name"]))
        if not np.array_equal(effective_weights(t).astype(np.float32), expect[t["name"]][1]):
            raise Fail("%s read by the Python reader differs from %s" % (t["name"], expect_path))
    permuted = sum(t["input_permutation"] is not None for t in tensors)
    print("dequantized OK: %d tensors of %s (%d with an input permutation) equal %s"
          % (len(tensors), woq_path, permuted, expect_path))


def cmd_check_export(woq_path, export_path, dtype):
    """The exported safetensors holds each tensor's dequantized weights,
    rounded to dtype (round to nearest even), and its bias."""
    _, tensors = read_woq(woq_path)
    exported, _ = read_safetensors(export_path)
    for t in tensors:
        w_hat = effective_weights(t).astype(np.float32)
        st_dtype, got = exported[t["name"]]
        if dtype == "f16":
            want, got_ok = w_hat.astype(np.float16), st_dtype == "F16"
            same = np.array_equal(got.view(np.uint16), want.view(np.uint16))
        elif dtype == "bf16":
            want, got_ok = to_bf16_bits(w_hat), st_dtype == "BF16"
            same = np.array_equal(to_bf16_bits(got), want)
        else:
            got_ok, same = st_dtype == "F32", np.array_equal(got, w_hat)
        if not got_ok or not same:
            raise Fail("exported %s differs from the dequantized weights (%s)" % (t["name"], st_dtype))
        if t["bias"] is not None:
            base = t["name"][:-len(".weight")] if t["name"].endswith(".weight") else t["name"]
            if not np.array_equal(exported[base + ".bias"][1], t["bias"]):
                raise Fail("exported bias of %s differs" % t["name"])
    print("export OK: %d tensors of %s match, as %s" % (len(tensors), woq_path, dtype))


GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
GGUF_BLOCKS = {0: (1, 4), 1: (1, 2), 2: (32, 18), 6: (32, 22), 8: (32, 34), 12: (256, 144), 30: (1, 2)}


def read_gguf(path):
    """(metadata {key: value}, [(name, dims, type, raw bytes)]) of a GGUF
    v2/v3 file, for the types in GGUF_BLOCKS."""
    with open(path, "rb") as f:
        data = f.read()
    at = 0

    def take(fmt):
        nonlocal at
        values = struct.unpack_from(fmt, data, at)
        at += struct.calcsize(fmt)
        return values[0] if len(values) == 1 else values

    def text():
        nonlocal at
        n = take("<Q")
        at += n
        return data[at - n:at].decode()

    def value(kind):
        if kind == 8:
            return text()
        if kind == 9:
            element, count = take("<IQ")
            return [value(element) for _ in range(count)]
        return take(GGUF_SCALARS[kind])

    if data[:4] != b"GGUF":
        raise Fail("%s is not a GGUF file" % path)
    at = 4
    version, n_tensors, n_meta = take("<IQQ")
    if version not in (2, 3):
        raise Fail("%s: GGUF version %d" % (path, version))
    meta = {}
    for _ in range(n_meta):
        key = text()
        meta[key] = value(take("<I"))
    infos = []
    for _ in range(n_tensors):
        name = text()
        dims = [take("<Q") for _ in range(take("<I"))]
        kind, offset = take("<IQ")
        infos.append((name, dims, kind, offset))
    align = meta.get("general.alignment", 32)
    start = -(-at // align) * align
    tensors = []
    for name, dims, kind, offset in infos:
        block, size = GGUF_BLOCKS[kind]
        nbytes = int(np.prod(dims)) // block * size
        if offset % align or start + offset + nbytes > len(data):
            raise Fail("%s: tensor %s lies outside the data" % (path, name))
        tensors.append((name, dims, kind, data[start + offset:start + offset + nbytes]))
    return meta, tensors


def gguf_dequantize(dims, kind, raw):
    """llama.cpp's weights of a Q4_0 / Q5_0 / Q8_0 matrix [dims[1], dims[0]]
    as float32: d (q - 8), d (q - 16), d q per block of 32."""
    k, n = dims
    size = {2: 18, 6: 22, 8: 34}[kind]
    b = np.frombuffer(raw, dtype=np.uint8).reshape(n, k // 32, size)
    d = b[..., :2].copy().view(np.float16).astype(np.float32)  # [n, k/32, 1]
    if kind == 8:
        q = b[..., 2:].view(np.int8).astype(np.float32)
    else:
        nib = b[..., -16:]
        q = np.concatenate([nib & 15, nib >> 4], axis=2).astype(np.uint32)
        if kind == 6:
            high = b[..., 2:6].copy().view("<u4")  # [n, k/32, 1]
            q |= ((high >> np.arange(32, dtype=np.uint32)) & 1) << 4
        q = q.astype(np.float32) - (8 if kind == 2 else 16)
    return (d * q).astype(np.float32).reshape(n, k)


def cmd_gguf(out_path, template_path, expect_path):
    meta, tensors = read_gguf(out_path)
    tmeta, ttensors = read_gguf(template_path)
    expect, _ = read_safetensors(expect_path)
    strip = lambda m: {k: v for k, v in m.items() if k != "general.file_type"}  # noqa: E731
    if strip(meta) != strip(tmeta):
        raise Fail("%s's metadata differs from the template's" % out_path)
    if [(t[0], t[1]) for t in tensors] != [(t[0], t[1]) for t in ttensors]:
        raise Fail("%s's tensors (names, order, dimensions) differ from the template's" % out_path)
    replaced = 0
    for (name, dims, kind, raw), (_, _, tkind, traw) in zip(tensors, ttensors):
        weight = name in expect and len(dims) == 2 and kind in (2, 6, 8)
        if name in expect and not name.endswith(".bias"):
            if not weight:
                raise Fail("%s: %s is ggml type %d, not Q4_0, Q5_0 or Q8_0" % (out_path, name, kind))
            want = expect[name][1].astype(np.float32)
            if not np.array_equal(gguf_dequantize(dims, kind, raw), want):
                raise Fail("%s: %s's blocks do not hold the expected weights" % (out_path, name))
            replaced += 1
        elif (kind, raw) != (tkind, traw):
            raise Fail("%s: %s is not the template's tensor byte for byte" % (out_path, name))
    print("gguf OK: %d tensors hold the expected weights, %d are the template's, metadata kept (file_type %s)" %
          (replaced, len(tensors) - replaced, meta.get("general.file_type", "absent")))


def cmd_same_tensors(got_path, expect_path):
    """Every tensor of EXPECT is in GOT with identical values."""
    got, _ = read_safetensors(got_path)
    expect, _ = read_safetensors(expect_path)
    for name, (_, want) in expect.items():
        if name not in got:
            raise Fail("%s lacks %s" % (got_path, name))
        if not np.array_equal(got[name][1].astype(np.float64), want.astype(np.float64)):
            diff = np.abs(got[name][1].astype(np.float64) - want.astype(np.float64)).max()
            raise Fail("%s differs from the expected values (max difference %g)" % (name, diff))
    print("same OK: %d tensors of %s equal %s" % (len(expect), expect_path, got_path))


def main(argv):
    try:
        if len(argv) == 4 and argv[1] == "check":
            cmd_check(argv[2], argv[3])
        elif len(argv) == 4 and argv[1] == "same":
            cmd_same_tensors(argv[2], argv[3])
        elif len(argv) == 4 and argv[1] == "dequantized":
            cmd_dequantized(argv[2], argv[3])
        elif len(argv) == 5 and argv[1] == "gguf":
            cmd_gguf(argv[2], argv[3], argv[4])
        elif len(argv) == 5 and argv[1] == "check-export":
            cmd_check_export(argv[2], argv[3], argv[4])
        elif len(argv) == 8 and argv[1] == "write":
            cmd_write(argv[2], argv[3], argv[4], int(argv[5]), int(argv[6]), argv[7])
        else:
            print(__doc__)
            return 2
    except Fail as e:
        print("FAIL:", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
