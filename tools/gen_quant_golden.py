#!/usr/bin/env python3
"""Writes the quantisation test vectors under tests/golden/quant/.

The reference is the gguf Python package (gguf.quants): for every type it can
dequantise we store random valid blocks and the floats the package decodes them
to; for every type it can quantise we store random float rows and the bytes the
package encodes them to. tests/test-quant.c checks that engine/quant.c gives
the very same bits.

One file per type, <type name>.bin, little-endian:
    char[4]  "BQG1"
    uint32   ggml type id
    uint32   block_size (values per block), uint32 type_size (bytes per block)
    uint32   nd: blocks in the dequantisation section (0: package has none)
    uint32   nq: blocks in the quantisation section (0: package has none)
    nd * type_size bytes   raw blocks
    nd * block_size f32    package's dequantisation of them
    nq * block_size f32    float inputs
    nq * type_size bytes   package's quantisation of them

half.bin holds the float <-> half / bfloat16 conversions:
    char[4] "BQH1", uint32 n, then n f32 inputs, n uint16 as numpy's float16,
    n uint16 as the package's BF16 quantiser; then char[64] the hex sha256 of
    the 65536 float32 values (little-endian bytes) numpy gives for every half.

Usage: tools/gen_quant_golden.py [output dir]   (needs: pip install gguf numpy)
"""
import hashlib
import os
import struct
import sys

import numpy as np
from gguf import GGMLQuantizationType as T, GGML_QUANT_SIZES
from gguf import quants

SEED = 20240611

# (type, blocks to dequantise, blocks to quantise); 0 where the package lacks it.
TYPES = [
    (T.F32, 64, 64),
    (T.F16, 256, 256),
    (T.BF16, 256, 256),
    (T.Q4_0, 8, 12),
    (T.Q4_1, 8, 12),
    (T.Q5_0, 8, 12),
    (T.Q5_1, 8, 12),
    (T.Q8_0, 8, 12),
    (T.Q2_K, 4, 0),
    (T.Q3_K, 4, 0),
    (T.Q4_K, 4, 0),
    (T.Q5_K, 4, 0),
    (T.Q6_K, 4, 0),
]

# Byte offsets of the half-precision scale fields inside each block, which the
# generator overwrites with finite values so that blocks are valid.
HALF_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}


def random_blocks(rng, qtype, nblocks):
    bs, ts = GGML_QUANT_SIZES[qtype]
    if qtype == T.F32:
        vals = rng.standard_normal(nblocks).astype(np.float32) * 100
        return vals.view(np.uint8)
    if qtype in (T.F16, T.BF16):
        # any 16-bit pattern except NaNs (NaN payload handling is checked in half.bin)
        raw = rng.integers(0, 65536, nblocks, dtype=np.uint32).astype(np.uint16)
        if qtype == T.F16:
            nan = (raw & 0x7c00) == 0x7c00
        else:
            nan = ((raw & 0x7f80) == 0x7f80) & ((raw & 0x7f) != 0)
        raw[nan] &= 0x3fff
        return raw.view(np.uint8)
    raw = rng.integers(0, 256, (nblocks, ts), dtype=np.uint16).astype(np.uint8)
    for off in HALF_FIELDS[qtype]:
        scale = (rng.standard_normal(nblocks) * 0.05).astype(np.float16)
        raw[:, off:off + 2] = scale.view(np.uint8).reshape(nblocks, 2)
    return raw.reshape(-1)


def random_inputs(rng, qtype, nblocks):
    bs, _ = GGML_QUANT_SIZES[qtype]
    x = rng.standard_normal((nblocks, bs)).astype(np.float32)
    x *= np.float32(10.0) ** rng.integers(-3, 3, (nblocks, 1)).astype(np.float32)
    if bs == 32 and nblocks >= 6:
        x[0] = 0.0                        # all zero: d = 0
        x[1] = 0.75                       # constant
        x[2, 5], x[2, 9] = 3.0, -3.0      # a tie for the largest magnitude
        x[3] = np.abs(x[3])               # all positive (min > 0)
        x[4] = -np.abs(x[4])              # all negative
        x[5] = np.linspace(-1, 1, 32, dtype=np.float32)
    if bs == 1:
        x = x.reshape(-1)
        # include values that overflow, underflow and sit on halfway points
        special = np.array([65504, 65520, 65519.99, 1e6, -1e6, 6e-8, 3e-8, 2.9e-8, 1e-10,
                            2.0 ** -24, 2.0 ** -25, 1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11,
                            0.0, -0.0, np.inf, -np.inf], dtype=np.float32)
        x[:len(special)] = special
    return x.reshape(-1)


def quantize(qtype, x):
    if qtype == T.F32:
        return x.astype(np.float32).view(np.uint8)
    if qtype == T.F16:
        return x.astype(np.float16).view(np.uint8)
    return quants.quantize(x.reshape(1, -1), qtype).reshape(-1)


def write_type(outdir, rng, qtype, nd, nq):
    bs, ts = GGML_QUANT_SIZES[qtype]
    parts = [b"BQG1", struct.pack("<5I", int(qtype), bs, ts, nd, nq)]
    if nd:
        raw = random_blocks(rng, qtype, nd)
        deq = quants.dequantize(raw, qtype).astype(np.float32).reshape(-1)
        assert raw.size == nd * ts and deq.size == nd * bs
        parts += [raw.tobytes(), deq.astype("<f4").tobytes()]
    if nq:
        x = random_inputs(rng, qtype, nq)
        q = np.asarray(quantize(qtype, x)).view(np.uint8).reshape(-1)
        assert x.size == nq * bs and q.size == nq * ts
        parts += [x.astype("<f4").tobytes(), q.tobytes()]
    name = qtype.name.lower().replace("_k", "_K")
    with open(os.path.join(outdir, name + ".bin"), "wb") as f:
        f.write(b"".join(parts))


def write_half(outdir):
    # every exponent, both signs, and mantissas around the rounding points of
    # half (13 dropped bits) and bfloat16 (16 dropped bits)
    mants = [0, 1, 0x0fff, 0x1000, 0x1001, 0x2000, 0x3000, 0x5000, 0x7fff, 0x8000, 0x8001,
             0x18000, 0x400000, 0x7fe000, 0x7ff000, 0x7fffff]
    bits = np.array([(s << 31) | (e << 23) | m for s in (0, 1) for e in range(256) for m in mants],
                    dtype=np.uint32)
    f = bits.view(np.float32)
    h = f.astype(np.float16).view(np.uint16)
    b = quants.quantize(f, T.BF16).view(np.uint16)
    allh = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16)
    digest = hashlib.sha256(allh.astype(np.float32).astype("<f4").tobytes()).hexdigest()
    with open(os.path.join(outdir, "half.bin"), "wb") as out:
        out.write(b"BQH1" + struct.pack("<I", bits.size))
        out.write(bits.astype("<u4").tobytes())
        out.write(h.astype("<u2").tobytes())
        out.write(b.astype("<u2").tobytes())
        out.write(digest.encode("ascii"))


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "tests", "golden", "quant")
    os.makedirs(outdir, exist_ok=True)
    rng = np.random.default_rng(SEED)
    with np.errstate(all="ignore"):
        for qtype, nd, nq in TYPES:
            write_type(outdir, rng, qtype, nd, nq)
        write_half(outdir)


if __name__ == "__main__":
    main()
