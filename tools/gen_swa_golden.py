#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Goldens for Baleen's sliding attention window, computed by HF transformers.

For the tiny qwen2 and llama test models (tests/golden/models/, made by gen_tiny_models.py)
this writes tests/golden/swa/goldens.json: with a window W smaller than the prompt, the
logits of every prompt position, then a greedy continuation and the logits of each of its
steps (transformers' own cached decode, cross-checked against a full recompute). The script
also checks that the full-attention model reproduces the model's own goldens.json (so the
llama-as-Mistral load below is the same model) and that the window changes the logits (so a
test against these goldens can fail).

The window is applied to every layer, as Baleen's user setting does:
  qwen2  Qwen2ForCausalLM with use_sliding_window=True and layer_types all
         "sliding_attention" (otherwise max_window_layers keeps the first layers full);
  llama  the same weights as MistralForCausalLM (llama's layers plus Mistral's
         sliding_window, which covers every layer), the llama model having no window of its
         own in transformers.
transformers' rule (masking_utils.sliding_window_overlay): key position k is visible from
query position q when q - W < k <= q.

Usage:  python3 tools/gen_swa_golden.py [--models tests/golden/models] [--out tests/golden/swa]
"""

import argparse
import base64
import json
from pathlib import Path

import numpy as np
import torch
import transformers

torch.set_num_threads(2)

WINDOW = 5
N_GEN = 16


def f32_b64(t):
  return base64.b64encode(np.ascontiguousarray(t.detach().cpu().numpy().astype("<f4")).tobytes()) \
    .decode("ascii")


def load(model_dir, name, window):
  cfg = json.loads((model_dir / "config.json").read_text())
  kw = dict(attn_implementation="eager", dtype=torch.float32)
  if name == "qwen2":
    config = transformers.Qwen2Config.from_pretrained(model_dir)
    if window > 0:
      config.use_sliding_window = True
      config.sliding_window = window
      config.max_window_layers = 0
      config.layer_types = ["sliding_attention"] * config.num_hidden_layers
    m = transformers.Qwen2ForCausalLM.from_pretrained(model_dir, config=config, **kw)
    if window > 0:
      assert all(layer.self_attn.sliding_window == window for layer in m.model.layers)
  else:
    config = transformers.MistralConfig(
      vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"],
      intermediate_size=cfg["intermediate_size"], num_hidden_layers=cfg["num_hidden_layers"],
      num_attention_heads=cfg["num_attention_heads"],
      num_key_value_heads=cfg["num_key_value_heads"],
      head_dim=cfg["hidden_size"] // cfg["num_attention_heads"],
      max_position_embeddings=cfg["max_position_embeddings"], rms_norm_eps=cfg["rms_norm_eps"],
      rope_theta=cfg["rope_theta"], tie_word_embeddings=cfg["tie_word_embeddings"],
      hidden_act=cfg["hidden_act"], bos_token_id=cfg["bos_token_id"],
      eos_token_id=cfg["eos_token_id"], sliding_window=window if window > 0 else None)
    m = transformers.MistralForCausalLM.from_pretrained(model_dir, config=config, **kw)
  return m.eval()


@torch.no_grad()
def one(model_dir, name):
  goldens = json.loads((model_dir / "goldens.json").read_text())
  seq = next(s for s in goldens["sequences"] if s["name"] == "long")
  ids = torch.tensor([seq["ids"]], dtype=torch.long)
  assert ids.shape[1] > 4 * WINDOW

  full = load(model_dir, name, 0)
  full_logits = full(ids).logits[0]
  # the full-attention model must be the one gen_tiny_models.py checked
  ref = np.frombuffer(base64.b64decode(seq["logits_f32_b64"]), dtype="<f4")
  assert np.allclose(full_logits.numpy().reshape(-1), ref, atol=1e-5)

  m = load(model_dir, name, WINDOW)
  logits = m(ids).logits[0]
  gcfg = transformers.GenerationConfig(do_sample=False, max_new_tokens=N_GEN, min_new_tokens=0,
                                       eos_token_id=None, pad_token_id=0, bos_token_id=None,
                                       return_dict_in_generate=True, output_logits=True,
                                       use_cache=True)
  gen = m.generate(ids, attention_mask=torch.ones_like(ids), generation_config=gcfg)
  new = gen.sequences[0, ids.shape[1]:]
  step_logits = torch.stack([l[0] for l in gen.logits], dim=0)
  if new.shape[0] != N_GEN or not torch.equal(step_logits.argmax(-1), new):
    raise RuntimeError("generation stopped early or differs from the argmax")
  recompute = m(gen.sequences).logits[0, ids.shape[1] - 1:-1]
  cache_vs_full = float((recompute - step_logits).abs().max())
  if cache_vs_full > 1e-4:
    raise RuntimeError(f"{name}: cached decode differs from a recompute by {cache_vs_full}")
  diff = float((logits - full_logits).abs().max())
  if diff < 1e-2:
    raise RuntimeError(f"{name}: the window changes nothing ({diff}); the golden cannot fail")
  return {
    "model": name, "hf_class": type(m).__name__, "window": WINDOW, "ids": seq["ids"],
    "logits_shape": list(logits.shape), "logits_f32_b64": f32_b64(logits),
    "max_abs_diff_window_vs_full": diff,
    "generated": new.tolist(),
    "gen_logits_shape": list(step_logits.shape), "gen_logits_f32_b64": f32_b64(step_logits),
    "gen_cache_vs_full_max_abs_diff": cache_vs_full,
  }


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--models", default="tests/golden/models")
  ap.add_argument("--out", default="tests/golden/swa")
  a = ap.parse_args()
  out = Path(a.out)
  out.mkdir(parents=True, exist_ok=True)
  doc = {
    "generator": "tools/gen_swa_golden.py",
    "rule": "key k visible from query q when q - window < k <= q, every layer",
    "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    "dtype": "float32", "attn_implementation": "eager", "encoding": "base64 little-endian f32",
    "models": [one(Path(a.models) / n, n) for n in ("qwen2", "llama")],
  }
  with open(out / "goldens.json", "w") as f:
    json.dump(doc, f, indent=1)
    f.write("\n")
  for mdl in doc["models"]:
    print(mdl["model"], mdl["hf_class"], "window", mdl["window"], "diff vs full",
          round(mdl["max_abs_diff_window_vs_full"], 4), "generated", mdl["generated"])


if __name__ == "__main__":
  main()
