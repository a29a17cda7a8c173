#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Build tiny random reference models and their goldens for Baleen's model tests.

For each architecture this writes, under tests/golden/models/<name>/:

  config.json, model.safetensors (F32)      an HF model directory, loadable by transformers
  tokenizer.json, tokenizer_config.json     a tiny byte-level BPE trained here, plus a chat template
  model.gguf (F32)                          the same weights laid out the way llama.cpp's converter
                                            lays them out (names, permutations, metadata keys)
  goldens.json                              transformers' F32 logits and greedy continuations

plus a few variants (sharded safetensors, F16 / Q8_0 GGUFs, the legacy DeepSeek2 GGUF layout).
See tools/README.md for the format facts the C engine relies on.

Everything is seeded; rerunning produces the same files on the same library versions.
Usage:  python3 tools/gen_tiny_models.py [--out tests/golden/models] [--shared-data DIR]
"""

import argparse
import base64
import gzip
import json
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

import gguf
import safetensors
import tokenizers
import transformers
from safetensors.torch import save_file
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

torch.set_num_threads(2)

VOCAB_SIZE = 320          # trained BPE size, special tokens included
N_GEN = 32                # greedy continuation length
ROUTER_GAP_MIN = 2e-4     # smallest allowed k-th vs (k+1)-th routing score gap

# ---------------------------------------------------------------------------------------------
# Training text for the tiny tokenizer (written for this project; any fixed text would do).

CORPUS = """\
The whale sings in the deep water, and the song travels for many miles.
Baleen whales filter small animals from the sea with long plates in their mouths.
A small model can still run fast when the kernels are simple and the memory is close.
The quick brown fox jumps over the lazy dog. The lazy dog does not mind at all.
We test every layer against a reference, one number at a time, until nothing differs.
Tokens are split first by a pattern, then merged pair by pair from the most common pair.
def add(a, b):
    return a + b

for i in range(10):
    print(i, i * i, "squares")

int main (void) { return 0; }
Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 123 2024 3.14159 1000000
Question: what is the capital of France? Answer: Paris is the capital of France.
User: hello there! Assistant: Hello! How can I help you today?
The weather is cold today, but tomorrow it will be warm and sunny again.
It's a test; they're here, we've seen it, I'll go, you'd know, she's right.
日本語のテキストも少し入れておきます。中文也有一点。
Ünïcödé wörds and emojis 🐋🐳 are rare but they should still encode to bytes.
"""


def corpus_lines():
  lines = CORPUS.splitlines(keepends=True)
  # repeat so that pair counts are large enough for a few hundred merges
  return lines * 8


# ---------------------------------------------------------------------------------------------
# Tokenizers

LLAMA_TEMPLATE = (
  "{% for message in messages %}"
  "{% if loop.first and message['role'] != 'system' %}"
  "{{ '<|im_start|>system\\nYou are a small test model.<|im_end|>\\n' }}"
  "{% endif %}"
  "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
  "{% endfor %}"
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

DS_BOS = "<\uff5cbegin\u2581of\u2581sentence\uff5c>"
DS_EOS = "<\uff5cend\u2581of\u2581sentence\uff5c>"
DS_USER = "<\uff5cUser\uff5c>"
DS_ASSISTANT = "<\uff5cAssistant\uff5c>"


def load_real_tokenizer_json(shared, family):
  with gzip.open(shared / "tokenizers" / family / "tokenizer.json.gz", "rt", encoding="utf-8") as f:
    return json.load(f)


def train_bpe(pre_tokenizer_json, specials_first, vocab_size):
  """Train a byte-level BPE with the given pre-tokenizer (as JSON) on the fixed corpus."""
  base = Tokenizer(models.BPE())
  doc = json.loads(base.to_str())
  doc["pre_tokenizer"] = pre_tokenizer_json
  tok = Tokenizer.from_str(json.dumps(doc))
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                special_tokens=[AddedToken(s, special=True, normalized=False)
                                                for s in specials_first],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(corpus_lines(), trainer)
  return tok


def build_tokenizer(family, shared):
  """Returns (Tokenizer, info dict with special token strings/ids and config fields)."""
  if family == "llama":
    # SmolLM2-like: ChatML specials at ids 0..2, GPT-2 byte-level regex.
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    pre = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    tok = train_bpe(pre, specials, VOCAB_SIZE)
    info = dict(bos="<|im_start|>", eos="<|im_end|>", pad=None, add_bos=False,
                chat_template=LLAMA_TEMPLATE, gguf_pre="gpt-2")
  elif family == "qwen2":
    # Qwen2-like: specials appended after the BPE vocabulary, Qwen2's pre-tokenizer regex.
    real = load_real_tokenizer_json(shared, "qwen2")
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = train_bpe(real["pre_tokenizer"], [], VOCAB_SIZE - len(specials))
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    template = (shared / "templates" / "Qwen-Qwen2.5-7B-Instruct.jinja").read_text(encoding="utf-8")
    info = dict(bos=None, bos_id_override="<|endoftext|>", eos="<|im_end|>", pad="<|endoftext|>",
                add_bos=False, chat_template=template, gguf_pre="qwen2")
  elif family == "deepseek":
    # DeepSeek-V3-like: BOS/EOS at ids 0/1, the V3 pre-tokenizer, BOS added by the post-processor,
    # User/Assistant markers as non-special added tokens (as in the real tokenizer.json).
    real = load_real_tokenizer_json(shared, "deepseek-v3")
    tok = train_bpe(real["pre_tokenizer"], [DS_BOS, DS_EOS], VOCAB_SIZE - 2)
    tok.add_tokens([AddedToken(DS_USER, special=False, normalized=False),
                    AddedToken(DS_ASSISTANT, special=False, normalized=False)])
    tok.post_processor = processors.TemplateProcessing(
      single=f"{DS_BOS}:0 $A:0", pair=f"{DS_BOS}:0 $A:0 {DS_BOS}:1 $B:1",
      special_tokens=[(DS_BOS, tok.token_to_id(DS_BOS))])
    cfg = json.loads((shared / "tokenizers" / "deepseek-v3" / "tokenizer_config.json")
                     .read_text(encoding="utf-8"))
    info = dict(bos=DS_BOS, eos=DS_EOS, pad=DS_EOS, add_bos=True,
                chat_template=cfg["chat_template"], gguf_pre="deepseek-v3")
  else:
    raise ValueError(family)
  n = tok.get_vocab_size(with_added_tokens=True)
  if n != VOCAB_SIZE:
    raise RuntimeError(f"{family}: tokenizer has {n} tokens, wanted {VOCAB_SIZE}")
  info["bos_id"] = tok.token_to_id(info["bos"] or info.get("bos_id_override"))
  info["eos_id"] = tok.token_to_id(info["eos"])
  info["pad_id"] = tok.token_to_id(info["pad"]) if info["pad"] else None
  return tok, info


def write_tokenizer_files(tok, info, outdir):
  tok.save(str(outdir / "tokenizer.json"))
  added = {}
  for tid, at in sorted(tok.get_added_tokens_decoder().items()):
    added[str(tid)] = {"content": at.content, "lstrip": at.lstrip, "normalized": at.normalized,
                       "rstrip": at.rstrip, "single_word": at.single_word, "special": at.special}
  cfg = {
    "add_bos_token": info["add_bos"],
    "add_eos_token": False,
    "added_tokens_decoder": added,
    "bos_token": info["bos"],
    "chat_template": info["chat_template"],
    "clean_up_tokenization_spaces": False,
    "eos_token": info["eos"],
    "model_max_length": 4096,
    "pad_token": info["pad"],
    "tokenizer_class": "PreTrainedTokenizerFast",
    "unk_token": None,
  }
  with open(outdir / "tokenizer_config.json", "w", encoding="utf-8") as f:
    json.dump(cfg, f, indent=2, ensure_ascii=False)
    f.write("\n")


# ---------------------------------------------------------------------------------------------
# Model configurations

def model_specs():
  yarn_v2 = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64,
             "beta_fast": 32, "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707}
  yarn_v3 = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64,
             "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0}
  return {
    "llama": dict(
      family="llama", arch="llama", cls="LlamaForCausalLM", model_type="llama", seed=1001,
      cfg=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
               rope_theta=10000.0, max_position_embeddings=256, tie_word_embeddings=False,
               hidden_act="silu", attention_bias=False, mlp_bias=False)),
    "llama-tied": dict(
      family="llama", arch="llama", cls="LlamaForCausalLM", model_type="llama", seed=1002,
      cfg=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
               rope_theta=100000.0, max_position_embeddings=256, tie_word_embeddings=True,
               hidden_act="silu", attention_bias=False, mlp_bias=False)),
    "qwen2": dict(
      family="qwen2", arch="qwen2", cls="Qwen2ForCausalLM", model_type="qwen2", seed=1003,
      cfg=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
               rope_theta=1000000.0, max_position_embeddings=256, tie_word_embeddings=False,
               hidden_act="silu", use_sliding_window=False)),
    "deepseek2-v2lite": dict(
      family="deepseek", arch="deepseek2", cls="DeepseekV2ForCausalLM", model_type="deepseek_v2",
      seed=1304,
      cfg=dict(hidden_size=48, intermediate_size=96, moe_intermediate_size=16,
               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
               q_lora_rank=None, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8,
               v_head_dim=16, n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1,
               first_k_dense_replace=1, norm_topk_prob=False, routed_scaling_factor=1.0,
               topk_method="greedy", n_group=1, topk_group=1, scoring_func="softmax",
               rms_norm_eps=1e-6, rope_theta=10000.0, rope_scaling=yarn_v2,
               max_position_embeddings=256, tie_word_embeddings=False, hidden_act="silu",
               attention_bias=False, moe_layer_freq=1, aux_loss_alpha=0.001)),
    "deepseek2-v3": dict(
      family="deepseek", arch="deepseek2", cls="DeepseekV3ForCausalLM", model_type="deepseek_v3",
      seed=1105,
      cfg=dict(hidden_size=48, intermediate_size=96, moe_intermediate_size=16,
               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
               q_lora_rank=32, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8,
               v_head_dim=16, n_routed_experts=16, num_experts_per_tok=4, n_shared_experts=1,
               first_k_dense_replace=1, norm_topk_prob=True, routed_scaling_factor=2.5,
               topk_method="noaux_tc", n_group=4, topk_group=2, scoring_func="sigmoid",
               rms_norm_eps=1e-6, rope_theta=10000.0, rope_scaling=yarn_v3,
               max_position_embeddings=256, tie_word_embeddings=False, hidden_act="silu",
               attention_bias=False, num_nextn_predict_layers=0, moe_layer_freq=1)),
  }


def hub_style_config(spec, info):
  """config.json the way model repositories on the hub write it (legacy rope_theta/rope_scaling
  keys, no transformers-5-only fields)."""
  c = dict(spec["cfg"])
  c["vocab_size"] = VOCAB_SIZE
  c["bos_token_id"] = info["bos_id"]
  c["eos_token_id"] = info["eos_id"]
  if spec["family"] != "deepseek":
    c["rope_scaling"] = None
  c.update({"architectures": [spec["cls"]], "model_type": spec["model_type"],
            "torch_dtype": "float32", "initializer_range": 0.02, "use_cache": True,
            "attention_dropout": 0.0, "transformers_version": transformers.__version__})
  return dict(sorted(c.items()))


# ---------------------------------------------------------------------------------------------
# Weights: transformers' default init is N(0, 0.02), which makes the logits of a 64-wide model
# almost flat.  Re-draw everything at a scale where activations stay O(1) and greedy tokens vary,
# and randomise the parts that init to constants (norm weights, the router correction bias) so
# that a bug in them shows.

def randomise(model, seed):
  g = torch.Generator().manual_seed(seed)
  # With tied embeddings the residual stream is dominated by the current token's own embedding,
  # which the tied output projection then scores highest: greedy decoding repeats one token.
  # Smaller embeddings and stronger layer outputs keep the continuation varied.
  tied = model.config.tie_word_embeddings
  embed_std = 0.3 if tied else 1.0
  out_gain = 2.0 if tied else 1.0

  def normal(shape, std, mean=0.0):
    return torch.randn(shape, generator=g, dtype=torch.float32) * std + mean

  with torch.no_grad():
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    for name in sorted(params):
      p = params[name]
      shape = tuple(p.shape)
      if "embed_tokens" in name:
        p.copy_(normal(shape, embed_std))
      elif name.endswith("norm.weight") or "layernorm" in name:
        p.copy_(normal(shape, 0.2, 1.0))
      elif name.endswith(".bias"):
        p.copy_(normal(shape, 0.3))
      elif name == "lm_head.weight":
        p.copy_(normal(shape, 3.0 / math.sqrt(shape[1])))
      elif name.endswith("mlp.gate.weight"):
        # router: wide spread so top-k choices are far from ties
        p.copy_(normal(shape, 3.0 / math.sqrt(shape[1])))
      elif p.dim() == 3:
        # stacked experts [E, out, in]
        p.copy_(normal(shape, 1.0 / math.sqrt(shape[2])))
      elif p.dim() == 2:
        gain = out_gain if name.endswith(("o_proj.weight", "down_proj.weight")) else 1.0
        p.copy_(normal(shape, gain / math.sqrt(shape[1])))
      else:
        raise RuntimeError(f"unhandled parameter {name} {shape}")
    for name in sorted(buffers):
      if name.endswith("e_score_correction_bias"):
        buffers[name].copy_(normal(tuple(buffers[name].shape), 0.1))


def load_model(path_or_cfg, from_dir):
  kw = dict(attn_implementation="eager", dtype=torch.float32)
  if from_dir:
    m = transformers.AutoModelForCausalLM.from_pretrained(path_or_cfg, **kw)
  else:
    m = transformers.AutoModelForCausalLM.from_config(path_or_cfg, **kw)
  return m.eval()


# ---------------------------------------------------------------------------------------------
# GGUF writing, following llama.cpp's convert_hf_to_gguf.py conventions

def llama_permute(w, n_head):
  """HF rotate-half row order -> GGML adjacent-pair row order, per head (q and k of 'llama')."""
  return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
          .swapaxes(1, 2).reshape(w.shape))


def gguf_tensors(spec, state, hf, mla_split):
  """Yields (gguf_name, float32 ndarray in torch row-major order)."""
  arch = gguf.MODEL_ARCH.DEEPSEEK2 if spec["arch"] == "deepseek2" else \
    gguf.MODEL_ARCH.QWEN2 if spec["arch"] == "qwen2" else gguf.MODEL_ARCH.LLAMA
  n_layer = hf["num_hidden_layers"]
  tmap = gguf.get_tensor_name_map(arch, n_layer)
  n_head = hf["num_attention_heads"]
  n_kv = hf.get("num_key_value_heads", n_head)
  experts = {}
  out = []
  for name in state:
    t = state[name].detach().to(torch.float32).clone()
    if spec["arch"] == "llama":
      if name.endswith("q_proj.weight"):
        t = llama_permute(t, n_head)
      elif name.endswith("k_proj.weight"):
        t = llama_permute(t, n_kv)
    if name.endswith("e_score_correction_bias"):
      name = name.replace("e_score_correction_bias", "e_score_correction.bias")
    if ".mlp.experts." in name:
      parts = name.split(".")
      bid, xid, proj = int(parts[2]), int(parts[5]), parts[6]
      experts.setdefault((bid, proj), {})[xid] = t
      continue
    if name.endswith("kv_b_proj.weight") and mla_split:
      nope, v = hf["qk_nope_head_dim"], hf["v_head_dim"]
      kv_b = t.view(n_head, nope + v, t.shape[-1])
      k_b, v_b = torch.split(kv_b, [nope, v], dim=1)
      out.append((name.replace("kv_b_proj", "k_b_proj"), k_b.transpose(1, 2).contiguous()))
      out.append((name.replace("kv_b_proj", "v_b_proj"), v_b.contiguous()))
      continue
    out.append((name, t))
  for (bid, proj), d in sorted(experts.items()):
    stacked = torch.stack([d[i] for i in range(len(d))], dim=0)
    out.append((f"model.layers.{bid}.mlp.experts.{proj}.weight", stacked))
  result = []
  for name, t in out:
    new = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
    if new is None:
      raise RuntimeError(f"no GGUF name for {name}")
    result.append((new, t.numpy()))
  # llama.cpp's loader wants a deterministic order; the converter writes in checkpoint order,
  # we sort by block then name for readability
  def key(item):
    n = item[0]
    if n.startswith("blk."):
      return (1, int(n.split(".")[1]), n)
    return (0 if n.startswith("token_embd") else 2, 0, n)
  return sorted(result, key=key)


def write_gguf(path, spec, hf, tok, info, state, ftype, mla_split=True):
  arch = spec["arch"]
  w = gguf.GGUFWriter(str(path), arch)
  w.add_type("model")
  w.add_name(f"baleen-tiny-{path.parent.name}")
  n_head = hf["num_attention_heads"]
  w.add_block_count(hf["num_hidden_layers"])
  w.add_context_length(hf["max_position_embeddings"])
  w.add_embedding_length(hf["hidden_size"])
  w.add_feed_forward_length(hf["intermediate_size"])
  w.add_head_count(n_head)
  w.add_rope_freq_base(hf["rope_theta"])
  w.add_layer_norm_rms_eps(hf["rms_norm_eps"])
  if arch == "deepseek2":
    if mla_split:
      w.add_head_count_kv(1)
    else:
      w.add_head_count_kv(hf["num_key_value_heads"])
    w.add_expert_count(hf["n_routed_experts"])
    w.add_expert_used_count(hf["num_experts_per_tok"])
    w.add_expert_group_count(hf["n_group"])
    w.add_expert_group_used_count(hf["topk_group"])
    w.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID if hf["scoring_func"] == "sigmoid"
                             else gguf.ExpertGatingFuncType.SOFTMAX)
    rs = hf["rope_scaling"]
    w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
    w.add_rope_scaling_factor(rs["factor"])
    w.add_rope_scaling_orig_ctx_len(rs["original_max_position_embeddings"])
    w.add_rope_scaling_yarn_beta_fast(rs["beta_fast"])
    w.add_rope_scaling_yarn_beta_slow(rs["beta_slow"])
    w.add_leading_dense_block_count(hf["first_k_dense_replace"])
    w.add_vocab_size(hf["vocab_size"])
    if hf["q_lora_rank"] is not None:
      w.add_q_lora_rank(hf["q_lora_rank"])
    w.add_kv_lora_rank(hf["kv_lora_rank"])
    if mla_split:
      w.add_key_length(hf["kv_lora_rank"] + hf["qk_rope_head_dim"])
      w.add_value_length(hf["kv_lora_rank"])
      w.add_key_length_mla(hf["qk_nope_head_dim"] + hf["qk_rope_head_dim"])
      w.add_value_length_mla(hf["v_head_dim"])
    else:
      w.add_key_length(hf["qk_nope_head_dim"] + hf["qk_rope_head_dim"])
      w.add_value_length(hf["v_head_dim"])
    w.add_expert_feed_forward_length(hf["moe_intermediate_size"])
    w.add_expert_shared_count(hf["n_shared_experts"])
    w.add_expert_weights_scale(hf["routed_scaling_factor"])
    if hf["norm_topk_prob"]:
      w.add_expert_weights_norm(True)
    w.add_rope_dimension_count(hf["qk_rope_head_dim"])
    w.add_rope_scaling_yarn_log_mul(0.1 * rs["mscale_all_dim"])
  else:
    w.add_head_count_kv(hf["num_key_value_heads"])
    if arch == "llama":
      w.add_vocab_size(hf["vocab_size"])
    w.add_rope_dimension_count(hf["hidden_size"] // n_head)
  w.add_file_type(ftype)
  if ftype != gguf.LlamaFileType.ALL_F32:
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)

  # tokenizer, as _set_vocab_gpt2 + SpecialVocab write it
  vocab = tok.get_vocab(with_added_tokens=True)
  by_id = {i: t for t, i in vocab.items()}
  added = tok.get_added_tokens_decoder()
  tokens, types = [], []
  for i in range(hf["vocab_size"]):
    tokens.append(by_id[i])
    if i in added:
      types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
    else:
      types.append(gguf.TokenType.NORMAL)
  merges = json.loads(tok.to_str())["model"]["merges"]
  merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
  w.add_tokenizer_model("gpt2")
  w.add_tokenizer_pre(info["gguf_pre"])
  w.add_token_list(tokens)
  w.add_token_types(types)
  w.add_token_merges(merges)
  w.add_bos_token_id(info["bos_id"])
  w.add_eos_token_id(info["eos_id"])
  if info["pad_id"] is not None:
    w.add_pad_token_id(info["pad_id"])
  w.add_add_bos_token(info["add_bos"])
  w.add_chat_template(info["chat_template"])

  for name, data in gguf_tensors(spec, state, hf, mla_split):
    data = np.ascontiguousarray(data.astype(np.float32))
    if data.ndim == 1 or ftype == gguf.LlamaFileType.ALL_F32:
      w.add_tensor(name, data)
    elif ftype == gguf.LlamaFileType.MOSTLY_F16:
      w.add_tensor(name, data.astype(np.float16))
    elif ftype == gguf.LlamaFileType.MOSTLY_Q8_0:
      if data.shape[-1] % 32 == 0:
        q = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
        w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
      else:
        w.add_tensor(name, data.astype(np.float16))
    else:
      raise ValueError(ftype)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()


# ---------------------------------------------------------------------------------------------
# Goldens

def f32_b64(t):
  return base64.b64encode(np.ascontiguousarray(t.detach().cpu().numpy().astype("<f4")).tobytes()) \
    .decode("ascii")


def margins(logits):
  top = torch.topk(logits, 2, dim=-1)
  return (top.values[..., 0] - top.values[..., 1]).tolist(), top.indices[..., 0].tolist()


def make_sequences(tok, info):
  texts = ["The whale sings in the deep water, and the song travels for many miles away.",
           "def add(a, b):\n    return a + b  # Numbers: 12 345 6789 and more words here"]
  bos = info["bos_id"]
  ids_a = tok.encode(texts[0], add_special_tokens=False).ids
  ids_b = tok.encode(texts[1], add_special_tokens=False).ids
  if len(ids_a) < 6 or len(ids_b) < 23:
    raise RuntimeError("golden texts too short for the tokenizer")
  return [
    {"name": "bos-only", "text": "", "ids": [bos]},
    {"name": "short", "text": texts[0], "ids": [bos] + ids_a[:6]},
    {"name": "long", "text": texts[1], "ids": [bos] + ids_b[:23]},
  ]


@torch.no_grad()
def compute_goldens(model, seqs, light=False):
  out = []
  gcfg = transformers.GenerationConfig(do_sample=False, max_new_tokens=N_GEN, min_new_tokens=0,
                                       eos_token_id=None, pad_token_id=0, bos_token_id=None,
                                       return_dict_in_generate=True, output_logits=True,
                                       use_cache=True)
  for s in seqs:
    ids = torch.tensor([s["ids"]], dtype=torch.long)
    logits = model(ids).logits[0]
    m, a = margins(logits)
    # explicit mask: the pad id may equal a token of the prompt (BOS 0 for DeepSeek)
    gen = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=gcfg)
    new = gen.sequences[0, ids.shape[1]:]
    if light:
      out.append({"ids": s["ids"], "generated": new.tolist()})
      continue
    step_logits = torch.stack([l[0] for l in gen.logits], dim=0)
    if new.shape[0] != N_GEN:
      raise RuntimeError("generation stopped early")
    if not torch.equal(step_logits.argmax(-1), new):
      raise RuntimeError("greedy tokens differ from argmax of logits")
    # cross-check the cached decode against a full recompute of the whole sequence
    full = model(gen.sequences).logits[0, ids.shape[1] - 1:-1]
    gm, _ = margins(step_logits)
    out.append({
      "name": s["name"], "text": s["text"], "ids": s["ids"],
      "logits_shape": list(logits.shape), "logits_f32_b64": f32_b64(logits),
      "argmax": a, "top1_margin": m,
      "generated": new.tolist(),
      "gen_logits_shape": list(step_logits.shape), "gen_logits_f32_b64": f32_b64(step_logits),
      "gen_top1_margin": gm,
      "gen_cache_vs_full_max_abs_diff": float((full - step_logits).abs().max()),
    })
  return out


def decode_b64(s, shape):
  return np.frombuffer(base64.b64decode(s), dtype="<f4").reshape(shape)


@torch.no_grad()
def router_min_gap(model, ids):
  """Smallest gap between the k-th and (k+1)-th routing score over all tokens and MoE layers
  (so a test can tell whether a routing decision is near a tie)."""
  gaps = []
  hooks = []

  def hook(mod, inp, outp):
    h = inp[0].reshape(-1, mod.weight.shape[1]).float()
    logits = torch.nn.functional.linear(h, mod.weight.float())
    if hasattr(mod, "e_score_correction_bias"):
      s = logits.sigmoid() + mod.e_score_correction_bias
    else:
      s = logits.softmax(-1)
    top = torch.topk(s, mod.top_k + 1, dim=-1).values
    gaps.append(float((top[:, -2] - top[:, -1]).min()))

  for name, mod in model.named_modules():
    if name.endswith("mlp.gate") and hasattr(mod, "top_k"):
      hooks.append(mod.register_forward_hook(hook))
  model(torch.tensor([ids]))
  for h in hooks:
    h.remove()
  return min(gaps) if gaps else None


# ---------------------------------------------------------------------------------------------

def versions():
  return {"transformers": transformers.__version__, "torch": torch.__version__,
          "gguf": getattr(gguf, "__version__", None) or _pkg_version("gguf"),
          "tokenizers": tokenizers.__version__, "safetensors": _pkg_version("safetensors"),
          "numpy": np.__version__, "python": sys.version.split()[0]}


def _pkg_version(name):
  from importlib.metadata import version
  return version(name)


def write_sharded_copy(src, dst):
  """Copy an HF dir with the weights split into two shards plus model.safetensors.index.json."""
  dst.mkdir(parents=True, exist_ok=True)
  for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
    shutil.copy(src / f, dst / f)
  tensors = {}
  with safetensors.safe_open(str(src / "model.safetensors"), "pt") as f:
    for k in f.keys():
      tensors[k] = f.get_tensor(k)
  keys = sorted(tensors)
  half = len(keys) // 2
  names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
  weight_map = {}
  total = 0
  for part, (fname, ks) in enumerate(zip(names, (keys[:half], keys[half:]))):
    save_file({k: tensors[k].contiguous() for k in ks}, str(dst / fname), metadata={"format": "pt"})
    os.chmod(dst / fname, 0o644)
    for k in ks:
      weight_map[k] = fname
      total += tensors[k].numel() * tensors[k].element_size()
  with open(dst / "model.safetensors.index.json", "w") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))},
              f, indent=2)
    f.write("\n")


def build_one(name, spec, outroot, shared):
  outdir = outroot / name
  if outdir.exists():
    shutil.rmtree(outdir)
  outdir.mkdir(parents=True)
  tok, info = build_tokenizer(spec["family"], shared)
  hf = hub_style_config(spec, info)

  # transformers reads the hub-style config and normalises it (rope_parameters etc.)
  with open(outdir / "config.json", "w") as f:
    json.dump(hf, f, indent=2)
    f.write("\n")
  config = transformers.AutoConfig.from_pretrained(outdir)
  seqs = make_sequences(tok, info)
  # For MoE models, pick the first seed whose routing decisions (on the golden prompts and their
  # greedy continuations) are all clear of ties, so that float rounding in another implementation
  # cannot flip an expert choice.
  seed = spec["seed"]
  for attempt in range(40):
    torch.manual_seed(seed)
    model = load_model(config, from_dir=False)
    randomise(model, seed)
    if spec["arch"] != "deepseek2":
      break
    gap = min(router_min_gap(model, g["ids"] + g["generated"])
              for g in compute_goldens(model, seqs, light=True))
    if gap >= ROUTER_GAP_MIN:
      break
    seed += 100
  else:
    raise RuntimeError(f"{name}: no seed with router gap >= {ROUTER_GAP_MIN}")
  spec = dict(spec, seed=seed)

  # weights: let transformers write the checkpoint (per-expert tensors, as on the hub), then put
  # the hub-style config back over the one save_pretrained wrote
  model.save_pretrained(outdir, safe_serialization=True)
  for extra in ("generation_config.json",):
    if (outdir / extra).exists():
      (outdir / extra).unlink()
  with open(outdir / "config.json", "w") as f:
    json.dump(hf, f, indent=2)
    f.write("\n")
  write_tokenizer_files(tok, info, outdir)

  os.chmod(outdir / "model.safetensors", 0o644)
  state = {}
  with safetensors.safe_open(str(outdir / "model.safetensors"), "pt") as f:
    for k in f.keys():
      state[k] = f.get_tensor(k)

  write_gguf(outdir / "model.gguf", spec, hf, tok, info, state, gguf.LlamaFileType.ALL_F32)
  files = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
           "model.gguf"]
  if spec["arch"] == "deepseek2":
    write_gguf(outdir / "model-legacy-kvb.gguf", spec, hf, tok, info, state,
               gguf.LlamaFileType.ALL_F32, mla_split=False)
    files.append("model-legacy-kvb.gguf")
  if name == "llama":
    write_gguf(outdir / "model-f16.gguf", spec, hf, tok, info, state,
               gguf.LlamaFileType.MOSTLY_F16)
    write_gguf(outdir / "model-q8_0.gguf", spec, hf, tok, info, state,
               gguf.LlamaFileType.MOSTLY_Q8_0)
    files += ["model-f16.gguf", "model-q8_0.gguf"]
    write_sharded_copy(outdir, outroot / "llama-sharded")

  # goldens from the model as transformers loads it back from disk
  model = load_model(outdir, from_dir=True)
  gold = {
    "model": name,
    "architecture": spec["cls"],
    "gguf_architecture": spec["arch"],
    "generator": "tools/gen_tiny_models.py",
    "versions": versions(),
    "seed": spec["seed"],
    "dtype": "float32",
    "attn_implementation": "eager",
    "vocab_size": VOCAB_SIZE,
    "bos_token_id": info["bos_id"],
    "eos_token_id": info["eos_id"],
    "n_generated": N_GEN,
    "files": files,
    "encoding": "logits are little-endian float32, base64, row-major [positions, vocab]",
    "sequences": compute_goldens(model, seqs),
  }
  if spec["arch"] == "deepseek2":
    gold["router_min_gap"] = min(router_min_gap(model, g["ids"] + g["generated"])
                                 for g in gold["sequences"])
  with open(outdir / "goldens.json", "w") as f:
    json.dump(gold, f, indent=1)
    f.write("\n")
  return outdir


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  root = Path(__file__).resolve().parent.parent
  ap.add_argument("--out", type=Path, default=root / "tests" / "golden" / "models")
  ap.add_argument("--shared-data", type=Path,
                  default=Path(os.environ.get("BALEEN_SHARED_DATA", root.parent / "shared" / "data")))
  ap.add_argument("--only", action="append", help="build only this model (repeatable)")
  args = ap.parse_args()
  specs = model_specs()
  for name, spec in specs.items():
    if args.only and name not in args.only:
      continue
    d = build_one(name, spec, args.out, args.shared_data)
    print(f"wrote {d} (seed {json.loads((d / 'goldens.json').read_text())['seed']})")


if __name__ == "__main__":
  main()
