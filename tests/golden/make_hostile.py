#!/usr/bin/env python3
"""Make the hostile-file corpus: .woq files that lie in every way SPEC.md
section 7 lists, each with the status a reader must return.

  make_hostile.py OUT_DIR

writes OUT_DIR/<case>.woq and OUT_DIR/EXPECTED, one line per case:
"<case> <WOQ_STATUS> <word the error message must contain>". Files are built
field by field here (not by libwoq), so every lie is deliberate. The output
is deterministic; a test checks that the checked-in corpus is current.
"""
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import woq_reference as ref  # noqa: E402

ALIGN = 256


def base_tensor():
    rng = np.random.default_rng(7)
    w = rng.standard_normal((8, 64)) * 0.05
    codes, scales, zeros = ref.quantize(w, 4, 32, False)
    return {"name": "w", "bits": 4, "scheme": 0, "group": 32, "rows": 8, "cols": 64, "rpc": 4,
            "codes": codes, "scales": scales, "zeros": zeros,
            "bias": rng.standard_normal(8).astype(np.float32)}


def build(t=None, meta=None, mutate_record=None, mutate_chunk=None, mutate_header=None,
          extra_record=b"", sections_override=None, minor=0, payload_override=None, counts=None,
          input_scales=None, input_chunks=1, input_permutation=None):
    """Encode one tensor file; the mutate_* hooks receive the fields as a
    dict (or bytes) and may change them to forge a lie."""
    import zstandard
    t = t or base_tensor()
    meta = {"model.name": "hostile"} if meta is None else meta
    body = bytearray(b"\0" * 256)
    rows, cols, rpc = t["rows"], t["cols"], t["rpc"]
    arrays = [ref.pack(t["codes"], t["bits"]).astype("<u4"), t["scales"].astype("<f2"),
              t["zeros"].astype(np.uint8), t["bias"].astype("<f4").reshape(rows, 1)]
    sections = []
    for kind, arr in enumerate(arrays):
        chunks = []
        for c in range(-(-rows // rpc)):
            raw = arr[c * rpc:(c + 1) * rpc].tobytes()
            stored, codec = raw, 0
            if kind == 1:  # scales: compress, to have zstd chunks too
                packed = zstandard.ZstdCompressor(level=19).compress(raw)
                if len(packed) < len(raw):
                    stored, codec = packed, 1
            if payload_override and (kind, c) in payload_override:
                stored, codec = payload_override[(kind, c)]
            body += b"\0" * (-len(body) % ALIGN)
            ch = {"offset": len(body), "stored": len(stored), "raw": len(raw), "sum": ref.xxh3(stored),
                  "codec": codec}
            body += stored
            if mutate_chunk:
                mutate_chunk(kind, c, ch)
            chunks.append(ch)
        sections.append((kind, chunks))
    if input_scales is not None:  # format 1.1: one chunk of cols fp32 (input_chunks forges more)
        raw = np.asarray(input_scales, dtype="<f4").tobytes()
        chunks = []
        for _ in range(input_chunks):
            body += b"\0" * (-len(body) % ALIGN)
            chunks.append({"offset": len(body), "stored": len(raw), "raw": len(raw), "sum": ref.xxh3(raw), "codec": 0})
            body += raw
        sections.append((4, chunks))
    if input_permutation is not None:  # format 1.2: one chunk of cols u32
        raw = np.asarray(input_permutation, dtype="<u4").tobytes()
        body += b"\0" * (-len(body) % ALIGN)
        sections.append((5, [{"offset": len(body), "stored": len(raw), "raw": len(raw), "sum": ref.xxh3(raw),
                              "codec": 0}]))
        body += raw
    if sections_override:
        sections = sections_override(sections)
    rec = {"name": t["name"].encode(), "name_length": None, "bits": t["bits"], "scheme": t["scheme"], "method": 0,
           "src": 0, "sdt": 1, "zdt": 1, "packing": 0,
           "flags": 1 | (2 if input_scales is not None else 0) | (4 if input_permutation is not None else 0),
           "rows": rows, "cols": cols,
           "group": t["group"], "rpc": rpc, "nsec": len(sections), "record_size": None}
    if mutate_record:
        mutate_record(rec)
    name = rec["name"]
    secbytes = b""
    for kind, chunks in sections:
        secbytes += struct.pack("<BBBBI", kind, 0, 0, 0, len(chunks))
        for ch in chunks:
            secbytes += struct.pack("<QQQQB7x", ch["offset"] % 2**64, ch["stored"] % 2**64, ch["raw"] % 2**64,
                                    ch["sum"], ch["codec"])
    fixed = struct.pack("<HBBBBBBBBHQQIIddd", rec["name_length"] if rec["name_length"] is not None else len(name),
                        rec["bits"], rec["scheme"], rec["method"], rec["src"], rec["sdt"], rec["zdt"],
                        rec["packing"], rec["flags"], rec["nsec"], rec["rows"] % 2**64, rec["cols"] % 2**64,
                        rec["group"] % 2**32, rec["rpc"] % 2**32, 0.0, 0.0, 0.0)
    record = fixed + name + secbytes + extra_record
    size = rec["record_size"] if rec["record_size"] is not None else 4 + len(record)
    tensor_count, meta_count = counts if counts else (1, len(meta))  # meta: dict or list of pairs
    directory = struct.pack("<II", tensor_count, meta_count)
    for key, value in (meta.items() if isinstance(meta, dict) else meta):
        k = key if isinstance(key, bytes) else key.encode()
        v = value if isinstance(value, bytes) else value.encode()
        entry = struct.pack("<HBB", len(k), 1, 0) + k + struct.pack("<I", len(v)) + v
        directory += struct.pack("<I", 4 + len(entry)) + entry
    directory += struct.pack("<I", size) + record
    body += b"\0" * (-len(body) % ALIGN)
    dir_off = len(body)
    h = {"magic": ref.MAGIC, "endian": 1, "major": 1, "minor": minor, "header_size": 64, "dir_off": dir_off,
         "dir_size": len(directory), "file_size": dir_off + len(directory), "flags": 0}
    if mutate_header:
        mutate_header(h)
    head = h["magic"] + struct.pack("<BBBBIQQQQ", h["endian"], h["major"], h["minor"], 0, h["header_size"],
                                    h["dir_off"] % 2**64, h["dir_size"] % 2**64, h["file_size"] % 2**64, h["flags"])
    head += struct.pack("<QQ", ref.xxh3(head + bytes(directory)), 0)
    body[:64] = head
    return bytes(body) + bytes(directory)


def set_(d, **kw):
    return lambda x: x.update(kw)


def cases():
    good = build()
    bomb = np.zeros(1 << 20, dtype=np.uint8).tobytes()
    import zstandard
    bomb_frame = zstandard.ZstdCompressor(level=19).compress(bomb)  # decodes to 1 MiB
    short_frame = zstandard.ZstdCompressor(level=19).compress(b"\0" * 8)  # decodes to 8 bytes
    t_bad_zero = base_tensor()
    t_bad_zero["zeros"] = t_bad_zero["zeros"].copy()
    t_bad_zero["zeros"][5, 1] = 16
    t_nan_scale = base_tensor()
    t_nan_scale["scales"] = t_nan_scale["scales"].copy()
    t_nan_scale["scales"][2, 0] = np.float16("nan")
    flipped_chunk = bytearray(good)
    flipped_chunk[256 + 3] ^= 0x10
    flipped_dir = bytearray(good)
    flipped_dir[-5] ^= 0x01

    def huge_declared(rec):
        rec.update(rows=1 << 24, cols=1 << 14, bits=8, group=1 << 14, rpc=1 << 24)

    def huge_declared_sections(sections):
        frame = zstandard.ZstdCompressor().compress(b"\0" * 64)
        out = []
        for kind, row_bytes in ((0, 1 << 14), (1, 2), (2, 1), (3, 4)):
            out.append((kind, [{"offset": 256 + kind * 256, "stored": len(frame), "raw": (1 << 24) * row_bytes,
                                "sum": 0, "codec": 1}]))
        return out

    yield "ok_baseline", good, "WOQ_OK", ""
    yield "ok_newer_minor_with_extra_fields", build(minor=3, extra_record=b"\xaa" * 12), "WOQ_OK", ""
    scales = np.linspace(0.5, 2.0, 64)
    yield "ok_input_scales", build(minor=1, input_scales=scales), "WOQ_OK", ""
    yield "input_scales_flag_without_section", build(minor=1, mutate_record=set_(None, flags=3)), \
        "WOQ_ERR_FORMAT", "flag bit 1"
    yield "input_scales_section_without_flag", build(minor=1, input_scales=scales, mutate_record=set_(None, flags=1)), \
        "WOQ_ERR_FORMAT", "flag bit 1"
    yield "input_scales_nan", build(minor=1, input_scales=np.where(np.arange(64) == 9, np.nan, scales)), \
        "WOQ_ERR_FORMAT", "input scale 9"
    yield "input_scales_zero", build(minor=1, input_scales=np.where(np.arange(64) == 3, 0.0, scales)), \
        "WOQ_ERR_FORMAT", "input scale 3"
    yield "input_scales_two_chunks", build(minor=1, input_scales=scales, input_chunks=2), \
        "WOQ_ERR_FORMAT", "expected 1"
    yield "input_scales_short", build(minor=1, input_scales=scales[:63]), "WOQ_ERR_FORMAT", "raw_size"
    yield "unknown_tensor_flag", build(minor=3, mutate_record=set_(None, flags=9)), "WOQ_ERR_FORMAT", "unknown flags"
    perm = np.random.default_rng(3).permutation(64)
    yield "ok_input_permutation", build(minor=2, input_permutation=perm), "WOQ_OK", ""
    yield "input_permutation_in_a_1_1_file", build(minor=1, input_permutation=perm), "WOQ_ERR_FORMAT", "needs format version 1.2"
    yield "input_permutation_flag_without_section", build(minor=2, mutate_record=set_(None, flags=5)), \
        "WOQ_ERR_FORMAT", "flag bit 2"
    yield "input_permutation_with_input_scales", build(minor=2, input_scales=scales, input_permutation=perm), \
        "WOQ_ERR_FORMAT", "both input scales"
    yield "input_permutation_repeats", build(minor=2, input_permutation=np.where(perm == 5, perm[0], perm)), \
        "WOQ_ERR_FORMAT", "repeats an earlier entry"
    yield "input_permutation_out_of_range", build(minor=2, input_permutation=np.where(perm == 5, 64, perm)), \
        "WOQ_ERR_FORMAT", "is not below cols = 64"
    yield "input_permutation_short", build(minor=2, input_permutation=perm[:60]), "WOQ_ERR_FORMAT", "raw_size"
    yield "empty_file", b"", "WOQ_ERR_FORMAT", "shorter"
    yield "truncated_header", good[:40], "WOQ_ERR_FORMAT", "shorter"
    yield "truncated_file", good[:-7], "WOQ_ERR_FORMAT", "truncated"
    yield "bad_magic", b"GGUF" + good[4:], "WOQ_ERR_FORMAT", "magic"
    yield "big_endian_flag", build(mutate_header=set_(None, endian=2)), "WOQ_ERR_FORMAT", "endianness"
    yield "version_major_2", build(mutate_header=set_(None, major=2)), "WOQ_ERR_VERSION", "version"
    yield "version_major_255", build(mutate_header=set_(None, major=255)), "WOQ_ERR_VERSION", "version"
    yield "header_checksum_bad", bytes(flipped_dir), "WOQ_ERR_CHECKSUM", "checksum"
    yield "chunk_checksum_bad", bytes(flipped_chunk), "WOQ_ERR_CHECKSUM", "checksum mismatch"
    yield "file_size_lies", build(mutate_header=lambda h: h.update(file_size=h["file_size"] + 4096)), \
        "WOQ_ERR_FORMAT", "file_size"
    yield "directory_offset_past_end", build(mutate_header=lambda h: h.update(dir_off=h["dir_off"] + 1 << 40)), \
        "WOQ_ERR_FORMAT", "directory"
    yield "directory_size_overflows", build(mutate_header=lambda h: h.update(dir_size=2**64 - 1)), \
        "WOQ_ERR_FORMAT", "directory"
    yield "rows_zero", build(mutate_record=set_(None, rows=0)), "WOQ_ERR_FORMAT", "dimension"
    yield "cols_zero", build(mutate_record=set_(None, cols=0)), "WOQ_ERR_FORMAT", "dimension"
    yield "rows_huge", build(mutate_record=set_(None, rows=1 << 40)), "WOQ_ERR_FORMAT", "dimension"
    yield "rows_times_cols_overflows", build(mutate_record=set_(None, rows=2**32 - 1, cols=2**32 - 1)), \
        "WOQ_ERR_FORMAT", "2^40"
    yield "group_zero", build(mutate_record=set_(None, group=0)), "WOQ_ERR_FORMAT", "group_size"
    yield "bits_zero", build(mutate_record=set_(None, bits=0)), "WOQ_ERR_FORMAT", "bits"
    yield "bits_nine", build(mutate_record=set_(None, bits=9)), "WOQ_ERR_FORMAT", "bits"
    yield "rows_per_chunk_zero", build(mutate_record=set_(None, rpc=0)), "WOQ_ERR_FORMAT", "rows_per_chunk"
    yield "name_unterminated", build(mutate_record=set_(None, name_length=60000)), "WOQ_ERR_FORMAT", "name"
    yield "name_with_nul", build(mutate_record=set_(None, name=b"w\0x")), "WOQ_ERR_FORMAT", "NUL"
    yield "record_size_past_directory", build(mutate_record=set_(None, record_size=2**32 - 1)), \
        "WOQ_ERR_FORMAT", "record_size"
    yield "tensor_count_huge", build(counts=(2**32 - 1, 1)), "WOQ_ERR_LIMIT", "limit"
    yield "tensor_count_lies", build(counts=(50000, 1)), "WOQ_ERR_FORMAT", "cannot hold"
    yield "metadata_count_huge", build(counts=(1, 2**31)), "WOQ_ERR_LIMIT", "limit"
    yield "metadata_key_empty", build(meta={"": "x"}), "WOQ_ERR_FORMAT", "key_length"
    yield "metadata_key_with_nul", build(meta={b"a\0b": "x"}), "WOQ_ERR_FORMAT", "NUL"
    yield "metadata_duplicate_key", build(meta=[("k", "1"), ("k", "2")]), "WOQ_ERR_FORMAT", "duplicate"
    yield "chunk_offset_past_end", build(mutate_chunk=lambda k, c, ch: ch.update(offset=1 << 40) if k == 0 and c == 1 else None), \
        "WOQ_ERR_FORMAT", "outside"
    yield "chunk_offset_overflows", build(mutate_chunk=lambda k, c, ch: ch.update(offset=2**64 - 256) if k == 0 and c == 0 else None), \
        "WOQ_ERR_FORMAT", "outside"
    yield "chunk_offset_in_header", build(mutate_chunk=lambda k, c, ch: ch.update(offset=0) if k == 2 else None), \
        "WOQ_ERR_FORMAT", "outside"
    yield "chunks_overlap", build(mutate_chunk=lambda k, c, ch: ch.update(offset=256) if (k, c) == (2, 0) else None), \
        "WOQ_ERR_FORMAT", "overlap"
    yield "chunk_runs_into_directory", build(mutate_chunk=lambda k, c, ch: ch.update(stored=ch["stored"] + 100000, raw=ch["raw"]) if (k, c) == (3, 1) else None), \
        "WOQ_ERR_FORMAT", "stored_size"
    yield "raw_size_lies", build(mutate_chunk=lambda k, c, ch: ch.update(raw=ch["raw"] * 1000) if (k, c) == (0, 0) else None), \
        "WOQ_ERR_FORMAT", "raw_size"
    yield "unknown_codec", build(mutate_chunk=lambda k, c, ch: ch.update(codec=7) if (k, c) == (0, 0) else None), \
        "WOQ_ERR_FORMAT", "codec"
    yield "unknown_section_kind", build(sections_override=lambda s: s[:3] + [(9, s[3][1])]), "WOQ_ERR_FORMAT", "section"
    yield "missing_codes_section", build(sections_override=lambda s: s[1:]), "WOQ_ERR_FORMAT", "missing"
    good_scales_frame = zstandard.ZstdCompressor(level=19).compress(
        base_tensor()["scales"][:4].astype("<f2").tobytes())
    yield "zstd_frame_truncated", build(payload_override={(1, 0): (good_scales_frame[:-6], 1)}), \
        "WOQ_ERR_FORMAT", "zstd"
    yield "decompression_bomb", build(payload_override={(1, 0): (bomb_frame, 1)}), "WOQ_ERR_FORMAT", "zstd"
    yield "zstd_frame_too_short", build(payload_override={(1, 1): (short_frame, 1)}), "WOQ_ERR_FORMAT", "decoded"
    yield "declared_size_beyond_limit", build(mutate_record=huge_declared, sections_override=huge_declared_sections), \
        "WOQ_ERR_LIMIT", "limit"
    yield "zero_point_above_qmax", build(t=t_bad_zero), "WOQ_ERR_FORMAT", "zero-point"
    yield "scale_nan", build(t=t_nan_scale), "WOQ_ERR_FORMAT", "scale"


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    lines = []
    for name, data, status, word in cases():
        with open(os.path.join(out, name + ".woq"), "wb") as f:
            f.write(data)
        lines.append("%s %s %s" % (name, status, word))
    with open(os.path.join(out, "EXPECTED"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote %d hostile files to %s" % (len(lines), out))


if __name__ == "__main__":
    main()
