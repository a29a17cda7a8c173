#!/usr/bin/env python3
"""Checks GGUF files written by Baleen's HF folder conversion (app/ui/hf-convert.c)
with the gguf Python package, the reference reader and quantiser.

  check_hf_gguf.py compare OUT.gguf REF.gguf TYPE FOLDER_NAME
      OUT must hold the metadata of REF (a tiny model's model.gguf, written in
      llama.cpp's converter layout from the same HF folder) and the same tensors
      in the same order, each stored as the type the conversion rule gives and
      byte-identical to gguf.quants.quantize() of REF's F32 data.
  check_hf_gguf.py make-wide DIR TOKENIZER_DIR
      writes a one-layer llama HF folder with rows of 256 values (so k-quants
      apply) and random F32 weights, taking the tokenizer files from
      TOKENIZER_DIR.
  check_hf_gguf.py make-fused DIR SRC_DIR
      writes a copy of the DeepSeek HF folder SRC_DIR with each MoE layer's
      experts fused the way transformers 5 saves them: one
      mlp.experts.gate_up_proj [experts, 2 x ff, hidden] (each expert's gate
      rows, then its up rows) and one mlp.experts.down_proj [experts, hidden,
      ff].
  check_hf_gguf.py make-fp8 DIR REF_DIR BAD_DIR SRC_DIR
      writes DIR, a copy of the DeepSeek HF folder SRC_DIR in the FP8 layout
      DeepSeek-V3 / R1 are published in: each projection weight of the layers
      as float8 e4m3 (rounded by ml_dtypes, the reference implementation of the
      format) with a float32 <name>_scale_inv per 16 x 32 block (amax / 448;
      quantization_config.weight_block_size [16, 32]); REF_DIR, the same model
      with those weights decoded by ml_dtypes (value x its block's scale) in
      float32; BAD_DIR, DIR with one scale tensor left out.
  check_hf_gguf.py wide OUT.gguf DIR TYPE
      OUT's tensors, dequantised by gguf.quants.dequantize(), must match DIR's
      safetensors (query/key rows in GGUF's rotary order) within TYPE's
      quantisation error.

Exit 0 when good, 1 with a message when not, 77 when numpy/gguf/safetensors are
missing.
"""
import json
import os
import shutil
import sys

try:
    import numpy as np
    import gguf
    from gguf import GGMLQuantizationType as T
    from safetensors.numpy import load_file, save_file
except ImportError as e:  # pragma: no cover
    print(f"SKIP: {e}")
    sys.exit(77)

TYPES = {"f32": T.F32, "f16": T.F16, "bf16": T.BF16, "q8_0": T.Q8_0, "q4_0": T.Q4_0,
         "q4_K": T.Q4_K, "q6_K": T.Q6_K}
# llama.cpp's general.file_type for a model mostly of each type
FILE_TYPE = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 7, "q4_K": 14, "q6_K": 18, "bf16": 32}
OWN_KEYS = {"general.name", "general.file_type", "general.quantization_version"}


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def field_value(f):
    vt = f.types[0]
    if vt == gguf.GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode()
    if vt == gguf.GGUFValueType.ARRAY:
        if f.types[1] == gguf.GGUFValueType.STRING:
            return [bytes(f.parts[i]).decode() for i in f.data]
        return [f.parts[i][0].item() for i in f.data]
    return f.parts[f.data[0]][0].item()


def metadata(reader):
    return {k: field_value(f) for k, f in reader.fields.items() if not k.startswith("GGUF.")}


def stored_type(want, shape):
    """The conversion rule: 1-D tensors F32; 2-D rows that the type's blocks do
    not divide fall back to Q8_0, or F16 when 32 does not divide them either."""
    if len(shape) < 2:
        return T.F32
    block = gguf.GGML_QUANT_SIZES[want][0]
    if shape[-1] % block == 0:
        return want
    return T.Q8_0 if shape[-1] % 32 == 0 else T.F16


def expected_bytes(data, t):
    if t == T.F32:
        return data.astype(np.float32).tobytes()
    if t == T.F16:
        return data.astype(np.float16).tobytes()
    return gguf.quants.quantize(data, t).tobytes()


def torch_shape(t):
    """GGUFReader gives ne order (row length first); numpy wants it reversed."""
    return tuple(int(x) for x in reversed(t.shape))


def compare(out_path, ref_path, type_name, folder_name):
    want = TYPES[type_name]
    out = gguf.GGUFReader(out_path)
    ref = gguf.GGUFReader(ref_path)
    mo, mr = metadata(out), metadata(ref)
    if mo.get("general.name") != folder_name:
        fail(f"general.name {mo.get('general.name')!r}, expected {folder_name!r}")
    if mo.get("general.file_type") != FILE_TYPE[type_name]:
        fail(f"general.file_type {mo.get('general.file_type')}")
    if (want != T.F32) != ("general.quantization_version" in mo):
        fail("general.quantization_version present/absent wrongly")
    ko, kr = set(mo) - OWN_KEYS, set(mr) - OWN_KEYS
    if ko != kr:
        fail(f"metadata keys differ: extra {sorted(ko - kr)}, missing {sorted(kr - ko)}")
    for k in sorted(kr):
        a, b = mo[k], mr[k]
        if isinstance(b, float):
            same = np.float32(a) == np.float32(b)
        else:
            same = a == b
        if not same:
            fail(f"metadata {k}: {str(a)[:80]!r} != reference {str(b)[:80]!r}")
    names_o = [t.name for t in out.tensors]
    names_r = [t.name for t in ref.tensors]
    if names_o != names_r:
        fail(f"tensor names/order differ:\n{names_o}\n{names_r}")
    for to, tr in zip(out.tensors, ref.tensors):
        shape = torch_shape(tr)
        if torch_shape(to) != shape:
            fail(f"{to.name}: shape {torch_shape(to)} != {shape}")
        if tr.tensor_type != T.F32:
            fail(f"reference {tr.name} is not F32")
        t = stored_type(want, shape)
        if to.tensor_type != t:
            fail(f"{to.name}: stored as {to.tensor_type.name}, expected {t.name}")
        data = np.asarray(tr.data, dtype=np.float32).reshape(shape)
        if np.asarray(to.data).tobytes() != expected_bytes(data, t):
            fail(f"{to.name}: data differs from gguf.quants.quantize({t.name})")
    print(f"ok: {len(names_o)} tensors, {len(kr)} metadata keys as the reference, {type_name}")


def make_wide(folder, tok_dir):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(11)
    n_embd, n_head, n_kv, n_ff, vocab = 256, 4, 2, 512, 320
    hd = n_embd // n_head
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": n_embd,
           "intermediate_size": n_ff, "num_attention_heads": n_head,
           "num_key_value_heads": n_kv, "num_hidden_layers": 1, "rms_norm_eps": 1e-5,
           "rope_theta": 10000.0, "max_position_embeddings": 128, "vocab_size": vocab,
           "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": False}
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(tok_dir, name), folder)

    def mat(rows, cols):
        return rng.normal(0, 1 / np.sqrt(cols), (rows, cols)).astype(np.float32)
    w = {"model.embed_tokens.weight": mat(vocab, n_embd),
         "model.norm.weight": rng.normal(1, 0.2, n_embd).astype(np.float32),
         "lm_head.weight": mat(vocab, n_embd),
         "model.layers.0.input_layernorm.weight": rng.normal(1, 0.2, n_embd).astype(np.float32),
         "model.layers.0.post_attention_layernorm.weight":
             rng.normal(1, 0.2, n_embd).astype(np.float32),
         "model.layers.0.self_attn.q_proj.weight": mat(n_head * hd, n_embd),
         "model.layers.0.self_attn.k_proj.weight": mat(n_kv * hd, n_embd),
         "model.layers.0.self_attn.v_proj.weight": mat(n_kv * hd, n_embd),
         "model.layers.0.self_attn.o_proj.weight": mat(n_embd, n_head * hd),
         "model.layers.0.mlp.gate_proj.weight": mat(n_ff, n_embd),
         "model.layers.0.mlp.up_proj.weight": mat(n_ff, n_embd),
         "model.layers.0.mlp.down_proj.weight": mat(n_embd, n_ff)}
    save_file(w, os.path.join(folder, "model.safetensors"))
    print(f"ok: wrote {folder}")


def make_fused(folder, src_dir):
    import re
    os.makedirs(folder, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(src_dir, name), folder)
    src = load_file(os.path.join(src_dir, "model.safetensors"))
    out, experts = {}, {}
    pat = re.compile(r"model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(gate|up|down)_proj\.weight$")
    for name, t in src.items():
        m = pat.match(name)
        if m:
            experts.setdefault(int(m.group(1)), {}).setdefault(m.group(3), {})[int(m.group(2))] = t
        else:
            out[name] = t
    for layer, projs in experts.items():
        n = len(projs["gate"])
        gate_up = [np.concatenate([projs["gate"][e], projs["up"][e]], axis=0) for e in range(n)]
        out[f"model.layers.{layer}.mlp.experts.gate_up_proj"] = np.stack(gate_up)
        out[f"model.layers.{layer}.mlp.experts.down_proj"] = np.stack(
            [projs["down"][e] for e in range(n)])
    save_file(out, os.path.join(folder, "model.safetensors"))
    print(f"ok: wrote {folder} with {len(experts)} fused expert layers")


def write_safetensors(path, tensors):
    # tensors: name -> (safetensors dtype name, shape, raw bytes); the file
    # layout: 8-byte little-endian header length, JSON header, data
    header, blobs, off = {}, [], 0
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for raw in blobs:
            f.write(raw)


def make_fp8(folder, ref_folder, bad_folder, src_dir):
    try:
        import ml_dtypes
    except ImportError as e:
        print(f"SKIP: {e}")
        sys.exit(77)
    br, bc = 16, 32
    with open(os.path.join(src_dir, "config.json")) as f:
        cfg = json.load(f)
    src = load_file(os.path.join(src_dir, "model.safetensors"))
    st_name = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16"}
    fp8, ref = {}, {}
    n_fp8 = 0
    for name, w in src.items():
        if name.startswith("model.layers.") and name.endswith("_proj.weight") and w.ndim == 2:
            w = w.astype(np.float32)
            rows, cols = w.shape
            nr, nc = -(-rows // br), -(-cols // bc)
            scale = np.zeros((nr, nc), np.float32)
            q = np.zeros((rows, cols), ml_dtypes.float8_e4m3fn)
            for i in range(nr):
                for j in range(nc):
                    blk = w[i * br:(i + 1) * br, j * bc:(j + 1) * bc]
                    sc = np.float32(np.abs(blk).max() / 448.0) or np.float32(1.0)
                    scale[i, j] = sc
                    q[i * br:(i + 1) * br, j * bc:(j + 1) * bc] = (blk / sc).astype(
                        ml_dtypes.float8_e4m3fn)
            full = np.repeat(np.repeat(scale, br, axis=0), bc, axis=1)[:rows, :cols]
            ref[name] = q.astype(np.float32) * full
            fp8[name] = ("F8_E4M3", q.shape, q.view(np.uint8).tobytes())
            fp8[name + "_scale_inv"] = ("F32", scale.shape, scale.tobytes())
            n_fp8 += 1
        else:
            ref[name] = w
            fp8[name] = (st_name[w.dtype], w.shape, np.ascontiguousarray(w).tobytes())
    if n_fp8 == 0:
        fail("no projection weights to store as FP8")
    for d in (folder, ref_folder, bad_folder):
        os.makedirs(d, exist_ok=True)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(src_dir, name), d)
    with open(os.path.join(ref_folder, "config.json"), "w") as f:
        json.dump(cfg, f)
    cfg["quantization_config"] = {"activation_scheme": "dynamic", "fmt": "e4m3",
                                  "quant_method": "fp8", "weight_block_size": [br, bc]}
    for d in (folder, bad_folder):
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f)
    write_safetensors(os.path.join(folder, "model.safetensors"), fp8)
    save_file(ref, os.path.join(ref_folder, "model.safetensors"))
    bad = dict(fp8)
    del bad[next(n for n in fp8 if n.endswith("_scale_inv"))]
    write_safetensors(os.path.join(bad_folder, "model.safetensors"), bad)
    print(f"ok: wrote {folder} with {n_fp8} FP8 weights, {ref_folder}, {bad_folder}")


HF_OF = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
         "output.weight": "lm_head.weight", "attn_norm": "input_layernorm",
         "ffn_norm": "post_attention_layernorm", "attn_q": "self_attn.q_proj",
         "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
         "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
         "ffn_down": "mlp.down_proj"}


def permute(w, n_head):
    # llama.cpp's convert_hf_to_gguf LlamaModel.permute: HF rotate-half rows to
    # GGUF adjacent pairs, per head
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


# Largest RMS error relative to the weights' RMS each type may show.
TOLERANCE = {T.Q4_K: 0.12, T.Q6_K: 0.03, T.Q8_0: 0.01, T.Q4_0: 0.15}


def wide(out_path, folder, type_name):
    want = TYPES[type_name]
    src = load_file(os.path.join(folder, "model.safetensors"))
    cfg = json.load(open(os.path.join(folder, "config.json")))
    out = gguf.GGUFReader(out_path)
    seen = set()
    for t in out.tensors:
        if t.name in HF_OF:
            hf = HF_OF[t.name]
        else:
            _, blk, role, suffix = t.name.split(".")
            hf = f"model.layers.{blk}.{HF_OF[role]}.{suffix}"
        ref = src[hf]
        if hf.endswith("q_proj.weight"):
            ref = permute(ref, cfg["num_attention_heads"])
        elif hf.endswith("k_proj.weight"):
            ref = permute(ref, cfg["num_key_value_heads"])
        shape = torch_shape(t)
        if shape != ref.shape:
            fail(f"{t.name}: shape {shape} != {ref.shape}")
        st = stored_type(want, shape)
        if t.tensor_type != st:
            fail(f"{t.name}: stored as {t.tensor_type.name}, expected {st.name}")
        got = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(shape)
        if st == T.F32:
            if not np.array_equal(got, ref):
                fail(f"{t.name}: F32 data differs")
        else:
            err = np.sqrt(np.mean((got - ref) ** 2)) / np.sqrt(np.mean(ref ** 2))
            if err > TOLERANCE[st]:
                fail(f"{t.name}: relative RMS error {err:.4f} above {TOLERANCE[st]} for {st.name}")
        seen.add(hf)
    if seen != set(src):
        fail(f"tensors missing from the GGUF: {sorted(set(src) - seen)}")
    print(f"ok: {len(seen)} tensors within the {type_name} error of the source")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "compare":
        compare(*sys.argv[2:6])
    elif cmd == "make-wide":
        make_wide(*sys.argv[2:4])
    elif cmd == "make-fused":
        make_fused(*sys.argv[2:4])
    elif cmd == "make-fp8":
        make_fp8(*sys.argv[2:6])
    elif cmd == "wide":
        wide(*sys.argv[2:5])
    else:
        fail(f"unknown command {cmd}")
