#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Check the files written by tools/gen_tiny_models.py.

1. every safetensors / GGUF file opens with the reference readers (safetensors, gguf.GGUFReader);
2. transformers loads each HF directory (and the sharded llama copy) and reproduces goldens.json;
3. the tokenizer files load with AutoTokenizer and render the chat template;
4. an independent NumPy forward pass that reads ONLY the GGUF file and follows llama.cpp's
   conventions (as documented in tools/README.md) reproduces transformers' logits.  This is what
   proves the layout facts in the README (q/k permutation, rope styles, MLA split tensors, YaRN
   scale, routing) rather than just asserting them.

Usage:  python3 tools/check_tiny_models.py [--dir tests/golden/models]
Exits non-zero on the first mismatch.
"""

import argparse
import base64
import json
import math
import sys
from pathlib import Path

import numpy as np

import gguf
import safetensors


def b64(s, shape):
  return np.frombuffer(base64.b64decode(s), dtype="<f4").reshape(shape)


# ---------------------------------------------------------------------------------------------
# GGUF reading

class G:
  def __init__(self, path):
    self.r = gguf.GGUFReader(str(path))
    self.kv = {k: f.contents() for k, f in self.r.fields.items()}
    self.arch = self.kv["general.architecture"]
    self.t = {}
    for t in self.r.tensors:
      ne = [int(x) for x in t.shape]
      if t.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
        a = np.asarray(t.data, dtype=np.float64)
      else:
        a = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float64)
      self.t[t.name] = a.reshape(list(reversed(ne)))

  def k(self, key, default=None):
    return self.kv.get(f"{self.arch}.{key}", default)

  def w(self, name):
    return self.t.get(name)


def rms(x, w, eps):
  return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def silu(x):
  return x / (1.0 + np.exp(-x))


def softmax(x):
  e = np.exp(x - x.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def rope_thetas(g, n_rot):
  """Per-pair angle rate, ggml style (YaRN ramp between the corrected dims)."""
  base = g.k("rope.freq_base")
  i = np.arange(n_rot // 2, dtype=np.float64)
  extrap = base ** (-2.0 * i / n_rot)
  if g.k("rope.scaling.type") != "yarn":
    return extrap
  factor = g.k("rope.scaling.factor")
  orig = g.k("rope.scaling.original_context_length")
  bf, bs = g.k("rope.scaling.yarn_beta_fast", 32.0), g.k("rope.scaling.yarn_beta_slow", 1.0)

  def corr(rot):
    return n_rot * math.log(orig / (rot * 2 * math.pi)) / (2 * math.log(base))

  low = max(0.0, math.floor(corr(bf)))
  high = min(n_rot - 1.0, math.ceil(corr(bs)))
  y = (i - low) / max(0.001, high - low)
  ramp = 1.0 - np.clip(y, 0.0, 1.0)        # 1 = keep extrapolated (high-frequency) rate
  interp = extrap / factor
  return interp * (1 - ramp) + extrap * ramp


def rope(x, pos, thetas, neox):
  """x [..., n_rot]; rotate adjacent pairs (GGML 'normal') or halves (GGML 'neox')."""
  ang = pos * thetas
  c, s = np.cos(ang), np.sin(ang)
  y = x.copy()
  if neox:
    h = x.shape[-1] // 2
    a, b = x[..., :h], x[..., h:]
    y[..., :h] = a * c - b * s
    y[..., h:] = b * c + a * s
  else:
    a, b = x[..., 0::2], x[..., 1::2]
    y[..., 0::2] = a * c - b * s
    y[..., 1::2] = b * c + a * s
  return y


# ---------------------------------------------------------------------------------------------
# Forward passes (whole sequence, causal, float64)

def forward_dense(g, ids):
  """llama (GGML normal rope on converter-permuted q/k) and qwen2 (neox rope, q/k/v biases)."""
  neox = g.arch == "qwen2"
  eps = g.k("attention.layer_norm_rms_epsilon")
  n_head, n_kv = g.k("attention.head_count"), g.k("attention.head_count_kv")
  x = g.w("token_embd.weight")[ids]
  T, d = x.shape
  hd = d // n_head
  th = rope_thetas(g, g.k("rope.dimension_count", hd))
  pos = np.arange(T, dtype=np.float64)[:, None, None]
  mask = np.triu(np.full((T, T), -np.inf), 1)
  for il in range(g.k("block_count")):
    p = f"blk.{il}."
    h = rms(x, g.w(p + "attn_norm.weight"), eps)

    def lin(name, inp):
      y = inp @ g.w(p + name + ".weight").T
      b = g.w(p + name + ".bias")
      return y + b if b is not None else y

    q = lin("attn_q", h).reshape(T, n_head, hd)
    k = lin("attn_k", h).reshape(T, n_kv, hd)
    v = lin("attn_v", h).reshape(T, n_kv, hd)
    q, k = rope(q, pos, th, neox), rope(k, pos, th, neox)
    rep = n_head // n_kv
    k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
    sc = np.einsum("thd,shd->hts", q, k) / math.sqrt(hd) + mask
    o = np.einsum("hts,shd->thd", softmax(sc), v).reshape(T, d)
    x = x + o @ g.w(p + "attn_output.weight").T
    h = rms(x, g.w(p + "ffn_norm.weight"), eps)
    f = silu(h @ g.w(p + "ffn_gate.weight").T) * (h @ g.w(p + "ffn_up.weight").T)
    x = x + f @ g.w(p + "ffn_down.weight").T
  x = rms(x, g.w("output_norm.weight"), eps)
  out = g.w("output.weight")
  return x @ (out if out is not None else g.w("token_embd.weight")).T


def moe(g, p, h):
  n_used = g.k("expert_used_count")
  n_exp = g.k("expert_count")
  logits = h @ g.w(p + "ffn_gate_inp.weight").T                   # [T, E]
  gating = g.k("expert_gating_func", 1)
  probs = 1 / (1 + np.exp(-logits)) if gating == 2 else softmax(logits)
  sel = probs.copy()
  bias = g.w(p + "exp_probs_b.bias")
  if bias is not None:
    sel = sel + bias
  n_group = g.k("expert_group_count", 1) or 1
  if n_group > 1:
    used_groups = g.k("expert_group_used_count")
    grp = sel.reshape(len(h), n_group, n_exp // n_group)
    gscore = np.sort(grp, axis=-1)[..., -2:].sum(-1)               # top-2 sum per group
    keep = np.argsort(-gscore, axis=-1)[:, :used_groups]
    gmask = np.full((len(h), n_group), -np.inf)
    np.put_along_axis(gmask, keep, 0.0, axis=-1)
    sel = sel + np.repeat(gmask, n_exp // n_group, axis=-1)
  top = np.argsort(-sel, axis=-1)[:, :n_used]
  wts = np.take_along_axis(probs, top, axis=-1)
  if g.k("expert_weights_norm", False):
    wts = wts / wts.sum(-1, keepdims=True)
  wts = wts * g.k("expert_weights_scale", 1.0)
  gate, up, down = (g.w(p + n + ".weight") for n in ("ffn_gate_exps", "ffn_up_exps",
                                                      "ffn_down_exps"))
  out = np.zeros_like(h)
  for t in range(len(h)):
    for j in range(n_used):
      e = top[t, j]
      a = silu(gate[e] @ h[t]) * (up[e] @ h[t])
      out[t] += wts[t, j] * (down[e] @ a)
  sh = silu(h @ g.w(p + "ffn_gate_shexp.weight").T) * (h @ g.w(p + "ffn_up_shexp.weight").T)
  return out + sh @ g.w(p + "ffn_down_shexp.weight").T


def forward_deepseek2(g, ids):
  eps = g.k("attention.layer_norm_rms_epsilon")
  n_head = g.k("attention.head_count")
  kv_lora = g.k("attention.kv_lora_rank")
  n_rot = g.k("rope.dimension_count")
  split = g.k("attention.key_length_mla") is not None
  k_len = g.k("attention.key_length_mla") if split else g.k("attention.key_length")
  v_len = g.k("attention.value_length_mla") if split else g.k("attention.value_length")
  nope = k_len - n_rot
  # softmax scale: mscale^2 / sqrt(k_len), mscale = 1 + yarn_log_multiplier * ln(factor)
  scale = 1.0 / math.sqrt(k_len)
  if g.k("rope.scaling.type") == "yarn":
    m = 1.0 + g.k("rope.scaling.yarn_log_multiplier", 0.0) * math.log(g.k("rope.scaling.factor"))
    scale *= m * m
  th = rope_thetas(g, n_rot)
  x = g.w("token_embd.weight")[ids]
  T, d = x.shape
  pos = np.arange(T, dtype=np.float64)[:, None]
  mask = np.triu(np.full((T, T), -np.inf), 1)
  for il in range(g.k("block_count")):
    p = f"blk.{il}."
    h = rms(x, g.w(p + "attn_norm.weight"), eps)
    if g.w(p + "attn_q.weight") is not None:
      q = h @ g.w(p + "attn_q.weight").T
    else:
      qa = rms(h @ g.w(p + "attn_q_a.weight").T, g.w(p + "attn_q_a_norm.weight"), eps)
      q = qa @ g.w(p + "attn_q_b.weight").T
    q = q.reshape(T, n_head, k_len)
    q_nope, q_pe = q[..., :nope], rope(q[..., nope:], pos[:, :, None], th, False)
    kva = h @ g.w(p + "attn_kv_a_mqa.weight").T
    c = rms(kva[:, :kv_lora], g.w(p + "attn_kv_a_norm.weight"), eps)   # [T, kv_lora]
    k_pe = rope(kva[:, kv_lora:], pos, th, False)                      # [T, n_rot]
    if split:
      k_b = g.w(p + "attn_k_b.weight")      # numpy [n_head, kv_lora, nope]
      v_b = g.w(p + "attn_v_b.weight")      # numpy [n_head, v_len, kv_lora]
      q_abs = np.einsum("hln,thn->thl", k_b, q_nope)
      sc = (np.einsum("thl,sl->hts", q_abs, c) + np.einsum("thr,sr->hts", q_pe, k_pe)) * scale
      lat = np.einsum("hts,sl->thl", softmax(sc + mask), c)
      o = np.einsum("hvl,thl->thv", v_b, lat)
    else:
      kv = (c @ g.w(p + "attn_kv_b.weight").T).reshape(T, n_head, nope + v_len)
      k_nope, v = kv[..., :nope], kv[..., nope:]
      sc = (np.einsum("thn,shn->hts", q_nope, k_nope) + np.einsum("thr,sr->hts", q_pe, k_pe))
      o = np.einsum("hts,shv->thv", softmax(sc * scale + mask), v)
    x = x + o.reshape(T, n_head * v_len) @ g.w(p + "attn_output.weight").T
    h = rms(x, g.w(p + "ffn_norm.weight"), eps)
    if il < g.k("leading_dense_block_count"):
      f = silu(h @ g.w(p + "ffn_gate.weight").T) * (h @ g.w(p + "ffn_up.weight").T)
      x = x + f @ g.w(p + "ffn_down.weight").T
    else:
      x = x + moe(g, p, h)
  x = rms(x, g.w("output_norm.weight"), eps)
  return x @ g.w("output.weight").T


def forward(g, ids):
  return forward_deepseek2(g, ids) if g.arch == "deepseek2" else forward_dense(g, ids)


# ---------------------------------------------------------------------------------------------

def check_dir(d, gold, tol, fails):
  import torch
  import transformers
  name = d.name
  for f in sorted(d.glob("*.safetensors")):
    with safetensors.safe_open(str(f), "pt") as s:
      n = len(list(s.keys()))
    print(f"  {f.name}: {n} tensors")
  m = transformers.AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager",
                                                        dtype=torch.float32).eval()
  worst = 0.0
  with torch.no_grad():
    for s in gold["sequences"]:
      ids = torch.tensor([s["ids"]])
      want = b64(s["logits_f32_b64"], s["logits_shape"])
      got = m(ids).logits[0].numpy()
      worst = max(worst, float(np.abs(got - want).max()))
      full = torch.tensor([s["ids"] + s["generated"]])
      want_g = b64(s["gen_logits_f32_b64"], s["gen_logits_shape"])
      got_g = m(full).logits[0, len(s["ids"]) - 1:-1].numpy()
      worst = max(worst, float(np.abs(got_g - want_g).max()))
  print(f"  transformers reload: max |logit diff| = {worst:.3g}")
  if worst > 1e-4:
    fails.append(f"{name}: transformers does not reproduce goldens ({worst})")
  tk = transformers.AutoTokenizer.from_pretrained(d)
  chat = tk.apply_chat_template([{"role": "user", "content": "Hi there"}], tokenize=False,
                                add_generation_prompt=True)
  enc = tk("The whale sings")["input_ids"]
  print(f"  tokenizer: {len(tk)} tokens, chat prompt {chat!r}, encode {enc}")
  if len(tk) != gold["vocab_size"]:
    fails.append(f"{name}: tokenizer size {len(tk)}")

  for f in sorted(d.glob("*.gguf")):
    g = G(f)
    types = sorted({t.tensor_type.name for t in g.r.tensors})
    quant = f.name != "model.gguf" and "legacy" not in f.name
    worst = 0.0
    for s in gold["sequences"]:
      # row len(ids)-1 of the prompt logits is generation step 0
      want = np.concatenate([b64(s["logits_f32_b64"], s["logits_shape"]),
                             b64(s["gen_logits_f32_b64"], s["gen_logits_shape"])[1:]])
      got = forward(g, np.array(s["ids"] + s["generated"][:-1]))
      worst = max(worst, float(np.abs(got - want).max()))
    lim = 0.5 if quant else tol
    status = "ok" if worst <= lim else "MISMATCH"
    print(f"  {f.name}: {len(g.r.tensors)} tensors {types}, numpy-from-GGUF vs transformers "
          f"max |diff| = {worst:.3g} ({status}, limit {lim})")
    if worst > lim:
      fails.append(f"{name}/{f.name}: {worst}")


def main():
  ap = argparse.ArgumentParser()
  root = Path(__file__).resolve().parent.parent
  ap.add_argument("--dir", type=Path, default=root / "tests" / "golden" / "models")
  ap.add_argument("--tol", type=float, default=2e-3)
  args = ap.parse_args()
  fails = []
  for d in sorted(p for p in args.dir.iterdir() if p.is_dir()):
    gold_path = d / "goldens.json"
    if not gold_path.exists():
      gold_path = args.dir / d.name.replace("-sharded", "") / "goldens.json"
    gold = json.loads(gold_path.read_text())
    print(f"{d.name} (goldens: {gold_path.relative_to(args.dir)}, "
          f"transformers {gold['versions']['transformers']})")
    check_dir(d, gold, args.tol, fails)
  if fails:
    print("FAILED:\n  " + "\n  ".join(fails))
    return 1
  print("all checks passed")
  return 0


if __name__ == "__main__":
  sys.exit(main())
