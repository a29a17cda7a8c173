#!/usr/bin/env python3
"""Prints, as JSON, what the gguf Python package (the reference reader) sees in a
GGUF file: every metadata key with its value type(s) and value, and every tensor
with its type, shape, absolute data offset, a SHA-256 of its raw bytes and the
first values the package's own dequantiser produces. Used by
tests/test-gguf-write.c to check files written by engine/gguf-write.c.

usage: gguf_dump.py FILE      (exit 77 when the gguf package is missing)
"""
import hashlib
import json
import sys

try:
    import numpy as np
    import gguf
    from gguf import quants
except ImportError as e:  # pragma: no cover
    print(f"gguf package unavailable: {e}", file=sys.stderr)
    sys.exit(77)


def field_value(f):
    types = [int(t) for t in f.types]
    if types[0] == gguf.GGUFValueType.ARRAY:
        if len(types) > 1 and types[1] == gguf.GGUFValueType.STRING:
            return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
        return [v.item() if hasattr(v, "item") else v for v in (f.parts[i][0] for i in f.data)]
    if types[0] == gguf.GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode("utf-8")
    v = f.parts[f.data[0]][0]
    return v.item()


def main():
    r = gguf.GGUFReader(sys.argv[1])
    out = {"alignment": int(r.alignment), "data_offset": int(r.data_offset), "kv": {},
           "tensors": []}
    for key, f in r.fields.items():
        if key.startswith("GGUF."):
            continue
        val = field_value(f)
        if isinstance(val, float) and not np.isfinite(val):
            val = str(val)
        out["kv"][key] = {"types": [int(t) for t in f.types], "value": val}
    for t in r.tensors:
        raw = np.ascontiguousarray(t.data).tobytes()
        deq = quants.dequantize(t.data, t.tensor_type).astype(np.float64).reshape(-1)
        out["tensors"].append({
            "name": t.name,
            "type": int(t.tensor_type),
            "shape": [int(x) for x in t.shape],
            "n_bytes": int(t.n_bytes),
            "data_offset": int(t.data_offset),
            "sha256": hashlib.sha256(raw).hexdigest(),
            "values": [float(x) for x in deq[:300]],
        })
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
