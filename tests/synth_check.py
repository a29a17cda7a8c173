#!/usr/bin/env python3
"""Checks tools/synth-gguf's models against the gguf Python package (the reference
for llama.cpp's GGUF conventions) and loads them with baleen-cli.

For every model and type, a full-size file is written with --sparse (real shapes,
no weight data) and read with gguf.GGUFReader:
  * tensor names: those the package's tensor-name map gives for the Hugging Face
    checkpoint names of the model (built here from its config.json values), with
    kv_b_proj split into k_b/v_b and the experts stacked, as convert_hf_to_gguf.py does;
  * shapes: from the config, innermost first;
  * types: the converter's (--outtype bf16/q8_0: 1-D, norms and the router F32) and
    llama-quantize's Q4_K_M mixture;
  * metadata: keys spelled with the package's gguf.Keys constants, values from the config;
  * baleen-cli info must load each file.
Then small real-data files (--layers 1/2, --vocab 4096) are generated; the package
dequantises them (values in the expected ranges) and `baleen-cli run` must produce tokens.

usage: synth_check.py --synth PATH/synth-gguf --cli PATH/baleen-cli   (exit 77: no gguf)
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import gguf
    from gguf import quants
except ImportError as e:  # pragma: no cover
    print(f"gguf package unavailable: {e}", file=sys.stderr)
    sys.exit(77)

# config.json values of the public checkpoints
CONFIGS = {
    "r1-qwen-7b": dict(arch="qwen2", vocab_size=152064, hidden_size=3584, num_hidden_layers=28,
                       intermediate_size=18944, num_attention_heads=28, num_key_value_heads=4,
                       max_position_embeddings=131072, rope_theta=10000.0, rms_norm_eps=1e-6,
                       tie_word_embeddings=False),
    "r1-qwen-1.5b": dict(arch="qwen2", vocab_size=151936, hidden_size=1536, num_hidden_layers=28,
                         intermediate_size=8960, num_attention_heads=12, num_key_value_heads=2,
                         max_position_embeddings=131072, rope_theta=10000.0, rms_norm_eps=1e-6,
                         tie_word_embeddings=False),
    "v2-lite": dict(arch="deepseek2", vocab_size=102400, hidden_size=2048, num_hidden_layers=27,
                    intermediate_size=10944, moe_intermediate_size=1408, num_attention_heads=16,
                    num_key_value_heads=16, n_routed_experts=64, n_shared_experts=2,
                    num_experts_per_tok=6, first_k_dense_replace=1, kv_lora_rank=512,
                    q_lora_rank=None, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
                    max_position_embeddings=163840, rope_theta=10000.0, rms_norm_eps=1e-6,
                    routed_scaling_factor=1.0, n_group=1, topk_group=1, scoring_func="softmax",
                    tie_word_embeddings=False,
                    rope_scaling=dict(type="yarn", factor=40, original_max_position_embeddings=4096,
                                      beta_fast=32, beta_slow=1, mscale=0.707,
                                      mscale_all_dim=0.707)),
}
FILE_TYPES = {"bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
              "q4_k_m": gguf.LlamaFileType.MOSTLY_Q4_K_M}
T = gguf.GGMLQuantizationType

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print(f"not ok: {what}")


def hf_tensors(c, n_layer):
    """(HF name, torch shape) of the checkpoint, after the converter's rewrites."""
    E, out = c["hidden_size"], []
    out.append(("model.embed_tokens.weight", (c["vocab_size"], E)))
    out.append(("model.norm.weight", (E,)))
    if not c["tie_word_embeddings"]:
        out.append(("lm_head.weight", (c["vocab_size"], E)))
    for i in range(n_layer):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", (E,)), (p + "post_attention_layernorm.weight", (E,))]
        if c["arch"] == "qwen2":
            hd = E // c["num_attention_heads"]
            kv = hd * c["num_key_value_heads"]
            out += [(p + "self_attn.q_proj.weight", (E, E)), (p + "self_attn.q_proj.bias", (E,)),
                    (p + "self_attn.k_proj.weight", (kv, E)), (p + "self_attn.k_proj.bias", (kv,)),
                    (p + "self_attn.v_proj.weight", (kv, E)), (p + "self_attn.v_proj.bias", (kv,)),
                    (p + "self_attn.o_proj.weight", (E, E)),
                    (p + "mlp.gate_proj.weight", (c["intermediate_size"], E)),
                    (p + "mlp.up_proj.weight", (c["intermediate_size"], E)),
                    (p + "mlp.down_proj.weight", (E, c["intermediate_size"]))]
            continue
        H, nope, rope, v, r = (c["num_attention_heads"], c["qk_nope_head_dim"],
                               c["qk_rope_head_dim"], c["v_head_dim"], c["kv_lora_rank"])
        out += [(p + "self_attn.q_proj.weight", (H * (nope + rope), E)),
                (p + "self_attn.kv_a_proj_with_mqa.weight", (r + rope, E)),
                (p + "self_attn.kv_a_layernorm.weight", (r,)),
                # kv_b_proj (H*(nope+v), r) is split: k_b transposed per head, v_b as is
                (p + "self_attn.k_b_proj.weight", (H, r, nope)),
                (p + "self_attn.v_b_proj.weight", (H, v, r)),
                (p + "self_attn.o_proj.weight", (E, H * v))]
        if i < c["first_k_dense_replace"]:
            F = c["intermediate_size"]
            out += [(p + "mlp.gate_proj.weight", (F, E)), (p + "mlp.up_proj.weight", (F, E)),
                    (p + "mlp.down_proj.weight", (E, F))]
        else:
            X, F = c["n_routed_experts"], c["moe_intermediate_size"]
            S = F * c["n_shared_experts"]
            out += [(p + "mlp.gate.weight", (X, E)),
                    (p + "mlp.experts.gate_proj.weight", (X, F, E)),
                    (p + "mlp.experts.up_proj.weight", (X, F, E)),
                    (p + "mlp.experts.down_proj.weight", (X, E, F)),
                    (p + "mlp.shared_experts.gate_proj.weight", (S, E)),
                    (p + "mlp.shared_experts.up_proj.weight", (S, E)),
                    (p + "mlp.shared_experts.down_proj.weight", (E, S))]
    return out


def expected_tensors(c, n_layer):
    arch = gguf.MODEL_ARCH.QWEN2 if c["arch"] == "qwen2" else gguf.MODEL_ARCH.DEEPSEEK2
    tmap = gguf.get_tensor_name_map(arch, n_layer)
    res = {}
    for name, shape in hf_tensors(c, n_layer):
        new = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
        assert new is not None, name
        res[new] = list(reversed(shape))
    return res


def use_more_bits(i, n):
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def expected_types(c, n_layer, names_in_order, shapes, otype):
    """Converter types, then llama-quantize's Q4_K_M choices (llama_tensor_get_type)."""
    n_expert = c.get("n_routed_experts", 0)
    has_output = "output.weight" in shapes
    n_attn_v = sum(1 for n in names_in_order if "attn_v.weight" in n or "attn_kv_b.weight" in n)
    i_attn_v = i_ffn_down = 0
    res = {}
    for n in names_in_order:
        ne = shapes[n]
        if len(ne) == 1 or n.endswith("_norm.weight") or "ffn_gate_inp" in n:
            res[n] = T.F32
            continue
        if otype == "bf16":
            res[n] = T.BF16
            continue
        if otype == "q8_0":
            res[n] = T.Q8_0 if ne[0] % 32 == 0 else T.F16
            continue
        t = T.Q4_K
        if n == "output.weight" or (not has_output and n == "token_embd.weight"):
            t = T.Q8_0 if ne[0] % 256 else T.Q6_K
        elif n == "token_embd.weight":
            pass
        elif "attn_v.weight" in n:
            if use_more_bits(i_attn_v, n_attn_v):
                t = T.Q6_K
            if n_expert == 8:
                t = T.Q8_0
            i_attn_v += 1
        elif "attn_k.weight" in n:
            if n_expert == 8:
                t = T.Q8_0
        elif "ffn_down" in n:
            il = int(n.split(".")[1]) if n_expert > 1 else i_ffn_down
            if use_more_bits(il, n_layer):
                t = T.Q6_K
            i_ffn_down += 1
        elif "attn_output.weight" in n and n_expert == 8:
            t = T.Q5_K
        block = gguf.GGML_QUANT_SIZES[t][0]
        if ne[0] % block:
            t = {T.Q4_K: T.Q5_0, T.Q5_K: T.Q5_1, T.Q6_K: T.Q8_0}[t]
            if ne[0] % gguf.GGML_QUANT_SIZES[t][0]:
                t = T.F16
        res[n] = t
    return res


def field(r, key):
    f = r.get_field(key)
    if f is None:
        return None
    return f.contents()


def check_metadata(r, c, n_layer, otype, tag):
    arch = c["arch"]
    K = gguf.Keys
    want = {
        K.General.ARCHITECTURE: arch,
        K.General.FILE_TYPE: int(FILE_TYPES[otype]),
        K.LLM.BLOCK_COUNT.format(arch=arch): n_layer,
        K.LLM.CONTEXT_LENGTH.format(arch=arch): c["max_position_embeddings"],
        K.LLM.EMBEDDING_LENGTH.format(arch=arch): c["hidden_size"],
        K.LLM.FEED_FORWARD_LENGTH.format(arch=arch): c["intermediate_size"],
        K.Attention.HEAD_COUNT.format(arch=arch): c["num_attention_heads"],
        K.Rope.FREQ_BASE.format(arch=arch): c["rope_theta"],
        K.Attention.LAYERNORM_RMS_EPS.format(arch=arch): c["rms_norm_eps"],
        K.Tokenizer.MODEL: "gpt2",
        K.Tokenizer.PRE: "deepseek-r1-qwen" if arch == "qwen2" else "deepseek-llm",
    }
    if arch == "qwen2":
        want[K.Attention.HEAD_COUNT_KV.format(arch=arch)] = c["num_key_value_heads"]
    else:
        rs = c["rope_scaling"]
        want.update({
            # MLA is stored as MQA over the compressed latent (newer converters)
            K.Attention.HEAD_COUNT_KV.format(arch=arch): 1,
            K.Attention.KV_LORA_RANK.format(arch=arch): c["kv_lora_rank"],
            K.Attention.KEY_LENGTH.format(arch=arch): c["kv_lora_rank"] + c["qk_rope_head_dim"],
            K.Attention.VALUE_LENGTH.format(arch=arch): c["kv_lora_rank"],
            K.Attention.KEY_LENGTH_MLA.format(arch=arch): c["qk_nope_head_dim"] + c["qk_rope_head_dim"],
            K.Attention.VALUE_LENGTH_MLA.format(arch=arch): c["v_head_dim"],
            K.LLM.EXPERT_COUNT.format(arch=arch): c["n_routed_experts"],
            K.LLM.EXPERT_USED_COUNT.format(arch=arch): c["num_experts_per_tok"],
            K.LLM.EXPERT_SHARED_COUNT.format(arch=arch): c["n_shared_experts"],
            K.LLM.EXPERT_FEED_FORWARD_LENGTH.format(arch=arch): c["moe_intermediate_size"],
            K.LLM.LEADING_DENSE_BLOCK_COUNT.format(arch=arch): min(c["first_k_dense_replace"], n_layer),
            K.LLM.EXPERT_WEIGHTS_SCALE.format(arch=arch): c["routed_scaling_factor"],
            K.LLM.EXPERT_GATING_FUNC.format(arch=arch): int(gguf.ExpertGatingFuncType.SOFTMAX),
            K.LLM.VOCAB_SIZE.format(arch=arch): c["vocab_size"],
            K.Rope.DIMENSION_COUNT.format(arch=arch): c["qk_rope_head_dim"],
            K.Rope.SCALING_TYPE.format(arch=arch): gguf.RopeScalingType.YARN.value,
            K.Rope.SCALING_FACTOR.format(arch=arch): rs["factor"],
            K.Rope.SCALING_ORIG_CTX_LEN.format(arch=arch): rs["original_max_position_embeddings"],
            K.Rope.SCALING_YARN_LOG_MUL.format(arch=arch): 0.1 * rs["mscale_all_dim"],
        })
    for k, v in want.items():
        got = field(r, k)
        if isinstance(v, float):
            check(got is not None and abs(got - v) <= 1e-6 * max(1, abs(v)), f"{tag}: {k} = {got}, want {v}")
        else:
            check(got == v, f"{tag}: {k} = {got!r}, want {v!r}")
    tokens = field(r, K.Tokenizer.LIST)
    check(tokens is not None and len(tokens) == c["vocab_size"], f"{tag}: {len(tokens)} tokens")
    types = field(r, K.Tokenizer.TOKEN_TYPE)
    check(len(types) == len(tokens), f"{tag}: token_type length")
    bos, eos = field(r, K.Tokenizer.BOS_ID), field(r, K.Tokenizer.EOS_ID)
    check(tokens[bos] == "<｜begin▁of▁sentence｜>", f"{tag}: bos token {tokens[bos]!r}")
    check(tokens[eos] == "<｜end▁of▁sentence｜>", f"{tag}: eos token {tokens[eos]!r}")
    check(types[bos] == gguf.TokenType.CONTROL and types[eos] == gguf.TokenType.CONTROL,
          f"{tag}: bos/eos are CONTROL tokens")
    merges = field(r, K.Tokenizer.MERGES)
    check(merges and all(m.count(" ") == 1 for m in merges[:100]), f"{tag}: merges")
    check(isinstance(field(r, K.Tokenizer.CHAT_TEMPLATE), str), f"{tag}: chat template")


def check_file(path, model, otype, n_layer, vocab=None, data=False):
    c = dict(CONFIGS[model])
    if vocab:
        c["vocab_size"] = vocab
    tag = f"{model}/{otype}/L{n_layer}"
    r = gguf.GGUFReader(path)
    shapes = {t.name: [int(x) for x in t.shape] for t in r.tensors}
    order = [t.name for t in r.tensors]
    want = expected_tensors(c, n_layer)
    check(set(shapes) == set(want), f"{tag}: tensor names differ: "
          f"extra {sorted(set(shapes) - set(want))[:5]} missing {sorted(set(want) - set(shapes))[:5]}")
    for n, ne in want.items():
        check(shapes.get(n) == ne, f"{tag}: {n} shape {shapes.get(n)}, want {ne}")
    types = expected_types(c, n_layer, order, shapes, otype)
    for t in r.tensors:
        check(t.tensor_type == types[t.name],
              f"{tag}: {t.name} is {t.tensor_type.name}, want {types[t.name].name}")
    check(os.path.getsize(path) >= max(t.data_offset + t.n_bytes for t in r.tensors),
          f"{tag}: file too short")
    check_metadata(r, c, n_layer, otype, tag)
    if data:
        for t in r.tensors:
            if t.tensor_type in (T.F32,) and len(t.shape) == 1:
                continue
            rows = t.data.reshape(-1, t.data.shape[-1])[:4]
            vals = quants.dequantize(rows, t.tensor_type).reshape(-1)
            std = float(np.std(vals))
            want_std = (3.0 if "gate_inp" in t.name else 1.0) / np.sqrt(float(t.shape[0]))
            check(np.all(np.isfinite(vals)) and 0.7 * want_std < std < 1.3 * want_std,
                  f"{tag}: {t.name} values std {std:.4g}, want about {want_std:.4g}")
        norm = quants.dequantize(r.get_tensor(order.index("output_norm.weight")).data, T.F32)
        check(np.all(np.abs(norm - 1.0) <= 0.0201), f"{tag}: output_norm near 1")
    print(f"ok: {tag}{' (data)' if data else ''}: {len(order)} tensors")


def run(cmd, timeout=120):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        failures.append(" ".join(cmd))
        print(f"not ok: {' '.join(cmd)} -> {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--synth", required=True)
    ap.add_argument("--cli", required=True)
    a = ap.parse_args()
    have_cli = os.access(a.cli, os.X_OK)
    tmp = tempfile.mkdtemp(prefix="bln-synth-")
    try:
        # GGUFReader needs ~15 s for a 150k-token vocabulary, so the package reads
        # full-size files with --vocab 4096 (every other shape real); the real
        # vocabulary sizes are checked through baleen-cli info.
        for model, c in CONFIGS.items():
            for otype in FILE_TYPES:
                f = os.path.join(tmp, f"{model}-{otype}.gguf")
                run([a.synth, "--model", model, "--type", otype, "--sparse", "--vocab", "4096",
                     "--out", f])
                check_file(f, model, otype, c["num_hidden_layers"], vocab=4096)
                os.unlink(f)
            if have_cli:
                f = os.path.join(tmp, f"{model}-full.gguf")
                run([a.synth, "--model", model, "--sparse", "--out", f])
                p = run([a.cli, "info", "-m", f])
                check(f"vocabulary:      {c['vocab_size']}\n" in p.stdout
                      and f"architecture:    {c['arch']}\n" in p.stdout,
                      f"{model}: baleen-cli info reads the full-size file:\n{p.stdout}")
                os.unlink(f)
        small = [("r1-qwen-1.5b", "q4_k_m", 2), ("r1-qwen-7b", "q8_0", 1),
                 ("v2-lite", "q4_k_m", 2), ("r1-qwen-1.5b", "bf16", 1)]
        for model, otype, layers in small:
            f = os.path.join(tmp, f"{model}-{otype}-small.gguf")
            p = run([a.synth, "--model", model, "--type", otype, "--layers", str(layers),
                     "--vocab", "4096", "--threads", "2", "--seed", "7", "--out", f])
            check("weight_bytes_per_token" in p.stdout, f"{model}: prints bytes per token")
            check_file(f, model, otype, layers, vocab=4096, data=True)
            if have_cli:
                p = run([a.cli, "run", "-m", f, "-p", "hello world", "-n", "4", "--temp", "0",
                         "--device", "cpu", "-t", "2"])
                check(p.stdout.startswith("hello world") and len(p.stdout) > len("hello world"),
                      f"{model}: baleen-cli run produced tokens: {p.stdout!r}")
            os.unlink(f)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print(f"{len(failures)} failure(s)")
        sys.exit(1)
    print("all synth-gguf checks passed")


if __name__ == "__main__":
    main()
