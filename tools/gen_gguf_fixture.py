#!/usr/bin/env python3
"""Writes tests/golden/gguf/fixture.gguf with the gguf package's GGUFWriter,
and tests/golden/gguf/fixture.json describing it as the package's GGUFReader
reads it back. tests/test-gguf.c checks that engine/gguf.c reads the same.

The file holds one metadata key of every value type (and typed arrays of each,
an array of strings, a nested array), a custom alignment, and tensors of
several types and ranks.

fixture.json: {"version", "alignment", "kv": [...], "tensors": [...]}. Each kv
has "key", "type" (GGUF value type id) and, for scalars, "value": integers as
decimal strings (uint64 does not fit a JSON number everywhere), floats as
numbers, bools as true/false, strings as "hex" of their UTF-8 bytes; arrays
have "elem_type", "n" and "values" (same encoding; absent for nested arrays).
Each tensor has "name", "type", "ne" (fastest-varying first), "offset" (from
the data section), "nbytes" and "sha256" of its bytes.

It also writes the seed corpus of the GGUF fuzzer, tests/fuzz/corpus/gguf/:
the fixture, a few tiny hand-packed files (valid and slightly broken) and a
vocabulary-like file from GGUFWriter.

Usage: tools/gen_gguf_fixture.py [output dir]   (needs: pip install gguf numpy)
"""
import hashlib
import json
import os
import struct
import sys

import numpy as np
from gguf import GGUFReader, GGUFValueType as V, GGUFWriter, GGMLQuantizationType as T
from gguf import quants

SEED = 4242


def write_fixture(path):
    rng = np.random.default_rng(SEED)
    w = GGUFWriter(path, "llama")
    w.add_custom_alignment(64)
    w.add_name("baleen fixture")
    w.add_key_value("test.u8", 200, V.UINT8)
    w.add_key_value("test.i8", -100, V.INT8)
    w.add_key_value("test.u16", 60000, V.UINT16)
    w.add_key_value("test.i16", -30000, V.INT16)
    w.add_key_value("test.u32", 4000000000, V.UINT32)
    w.add_key_value("test.i32", -2000000000, V.INT32)
    w.add_key_value("test.f32", 3.14159, V.FLOAT32)
    w.add_key_value("test.bool_true", True, V.BOOL)
    w.add_key_value("test.bool_false", False, V.BOOL)
    w.add_key_value("test.string", "Grüße, 世界 🐋", V.STRING)
    w.add_key_value("test.string_nul", "a\x00b", V.STRING)
    w.add_key_value("test.string_empty", "", V.STRING)
    w.add_key_value("test.u64", 18000000000000000000, V.UINT64)
    w.add_key_value("test.i64", -9000000000000000000, V.INT64)
    w.add_key_value("test.f64", 2.718281828459045, V.FLOAT64)
    w.add_key_value("test.arr_u8", [1, 2, 255], V.ARRAY, sub_type=V.UINT8)
    w.add_key_value("test.arr_i8", [-128, 0, 127], V.ARRAY, sub_type=V.INT8)
    w.add_key_value("test.arr_u16", [0, 65535], V.ARRAY, sub_type=V.UINT16)
    w.add_key_value("test.arr_i16", [-32768, 32767], V.ARRAY, sub_type=V.INT16)
    w.add_key_value("test.arr_u32", [7, 4294967295], V.ARRAY, sub_type=V.UINT32)
    w.add_key_value("test.arr_i32", [-5, 5, 100000], V.ARRAY, sub_type=V.INT32)
    w.add_key_value("test.arr_f32", [0.5, -1.25, 1e-30], V.ARRAY, sub_type=V.FLOAT32)
    w.add_key_value("test.arr_bool", [True, False, True], V.ARRAY, sub_type=V.BOOL)
    w.add_key_value("test.arr_u64", [0, 18446744073709551615], V.ARRAY, sub_type=V.UINT64)
    w.add_key_value("test.arr_i64", [-1, 9223372036854775807], V.ARRAY, sub_type=V.INT64)
    w.add_key_value("test.arr_f64", [1e300, -0.1], V.ARRAY, sub_type=V.FLOAT64)
    w.add_key_value("test.arr_str", ["alpha", "", "ß", "x y"], V.ARRAY, sub_type=V.STRING)
    w.add_key_value("test.arr_nested", [[1, 2], [3], [4, 5, 6]], V.ARRAY, sub_type=V.ARRAY)

    w.add_tensor("f32.vec", rng.standard_normal(7).astype(np.float32))
    w.add_tensor("f16.mat", rng.standard_normal((3, 5)).astype(np.float16))
    bf = quants.quantize(rng.standard_normal((2, 8)).astype(np.float32), T.BF16)
    w.add_tensor("bf16.mat", bf, raw_dtype=T.BF16)
    q8 = quants.quantize(rng.standard_normal((2, 3, 64)).astype(np.float32), T.Q8_0)
    w.add_tensor("q8_0.t3", q8, raw_dtype=T.Q8_0)
    q4k = rng.integers(0, 256, (2, 144), dtype=np.uint16).astype(np.uint8)
    q4k[:, 0:4] = np.array([0.01, 0.002], dtype=np.float16).view(np.uint8)
    w.add_tensor("blk.0.q4_K.weight", q4k, raw_dtype=T.Q4_K)
    w.add_tensor("i32.t4", rng.integers(-9, 9, (1, 2, 3, 4)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def encode_scalar(vtype, value):
    if vtype == V.STRING:
        return {"hex": bytes(value).hex()}
    if vtype in (V.FLOAT32, V.FLOAT64):
        return {"value": float(value)}
    if vtype == V.BOOL:
        return {"value": bool(value)}
    return {"value": str(int(value))}


def describe(path):
    r = GGUFReader(path)
    kvs = []
    alignment = 32
    version = None
    for field in r.fields.values():
        if field.name.startswith("GGUF."):
            if field.name == "GGUF.version":
                version = int(field.parts[field.data[0]][0])
            continue
        t = field.types[0]
        entry = {"key": field.name, "type": int(t)}
        if t == V.ARRAY:
            et = field.types[1] if len(field.types) > 1 else V.ARRAY
            entry["elem_type"] = int(et)
            entry["n"] = len(field.data)   # nested arrays: fixed up in main()
            if et != V.ARRAY:
                vals = []
                for i in field.data:
                    part = field.parts[i]
                    vals.append(encode_scalar(et, part if et == V.STRING else part[0]))
                entry["values"] = vals
        else:
            part = field.parts[field.data[0]]
            entry.update(encode_scalar(t, part if t == V.STRING else part[0]))
        if field.name == "general.alignment":
            alignment = int(field.parts[field.data[0]][0])
        kvs.append(entry)
    tensors = []
    for t in r.tensors:
        raw = np.asarray(t.data).view(np.uint8).tobytes()
        tensors.append({
            "name": t.name,
            "type": int(t.tensor_type),
            "ne": [int(x) for x in t.shape],
            "offset": int(t.data_offset - r.data_offset),
            "nbytes": int(t.n_bytes),
            "sha256": hashlib.sha256(raw).hexdigest(),
        })
    return {"version": version, "alignment": alignment, "kv": kvs, "tensors": tensors}


def hdr(version, n_tensors, n_kv):
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def tensor_info(name, ne, ttype, offset):
    return gstr(name) + struct.pack("<I", len(ne)) + struct.pack("<%dQ" % len(ne), *ne) + \
        struct.pack("<IQ", ttype, offset)


def pad(b, align=32):
    return b + b"\0" * (-len(b) % align)


def write_corpus(fixture_path, corpus):
    os.makedirs(corpus, exist_ok=True)
    fixture = open(fixture_path, "rb").read()
    files = {
        "fixture.gguf": fixture,
        "fixture-cut.gguf": fixture[:len(fixture) // 2],
        "empty-v3.gguf": hdr(3, 0, 0),
        "one-tensor-v2.gguf": pad(hdr(2, 1, 0) + tensor_info("w", [8, 2], 0, 0)) + b"\1" * 64,
        "q4k-tensor.gguf": pad(hdr(3, 1, 0) + tensor_info("q", [256], 12, 0)) + b"\2" * 144,
        "nested.gguf": hdr(3, 0, 1) + gstr("n") + struct.pack("<IIQ", 9, 9, 2)
        + struct.pack("<IQ", 4, 1) + struct.pack("<I", 7) + struct.pack("<IQ", 8, 1) + gstr("x"),
        "version1.gguf": b"GGUF" + struct.pack("<III", 1, 0, 0),
        "bad-align.gguf": hdr(3, 0, 1) + gstr("general.alignment") + struct.pack("<II", 4, 48),
        "overlap.gguf": pad(hdr(3, 2, 0) + tensor_info("a", [16], 0, 0)
                            + tensor_info("b", [8], 0, 32)) + b"\0" * 64,
        "bad-type.gguf": pad(hdr(3, 1, 0) + tensor_info("t", [8], 5, 0)) + b"\0" * 32,
        "scalars.gguf": hdr(3, 0, 4) + gstr("u") + struct.pack("<IB", 0, 7)
        + gstr("f") + struct.pack("<Id", 12, 0.5) + gstr("b") + struct.pack("<IB", 7, 1)
        + gstr("s") + struct.pack("<I", 8) + gstr("hi"),
    }
    for name, data in files.items():
        with open(os.path.join(corpus, name), "wb") as f:
            f.write(data)
    w = GGUFWriter(os.path.join(corpus, "vocab-like.gguf"), "llama")
    w.add_tokenizer_model("gpt2")
    w.add_token_list(["a", "b", "ab", "<s>"])
    w.add_token_types([1, 1, 1, 3])
    w.add_token_merges(["a b"])
    w.add_bos_token_id(3)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "tests", "golden", "gguf")
    os.makedirs(outdir, exist_ok=True)
    path = os.path.join(outdir, "fixture.gguf")
    write_fixture(path)
    desc = describe(path)
    # the nested array's count: the reader does not expose it plainly, so we
    # state what was written (3 inner arrays)
    for kv in desc["kv"]:
        if kv["key"] == "test.arr_nested":
            kv["n"] = 3
    with open(os.path.join(outdir, "fixture.json"), "w") as f:
        json.dump(desc, f, indent=1, ensure_ascii=True)
        f.write("\n")
    write_corpus(path, os.path.join(root, "tests", "fuzz", "corpus", "gguf"))


if __name__ == "__main__":
    main()
