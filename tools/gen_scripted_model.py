#!/usr/bin/env python3
"""Writes tiny llama-architecture GGUF models whose greedy output is, by
construction, a fixed script of token ids: DeepSeek-V3 tool calls ending with
EOS. They let tests/api/test_toolcall_wire.py check DeepSeek-format tool calls
on the wire, which no real model here writes.

Tokenizer: the tiny byte-level BPE of tools/gen_tiny_models.py (DeepSeek-V3
pre-tokenizer, BOS/EOS/User/Assistant), plus the real V3 tool markers as
non-special added tokens (as the real tokenizer.json has them); chat template:
the real DeepSeek-V3 one (tokenizer_config.json in ../shared/data).

The payload pieces (names, argument JSON, code fences) are added tokens as
well: a 320-token BPE would spell JSON in short repeated pieces that a lookup
table cannot order. The script is the tokenizer's own encoding of the text.

Weights: one layer, FFN output zero. A state is (current token, phase), where
the phase says whether a key token (the newline between two calls) is in the context: one
attention head, whose query is constant and whose key and value are non-zero
only on that token, adds it to a hidden dimension (RoPE leaves it alone: it
sits in the lowest-frequency pair with base 1e8). The current token is a
one-hot embedding; the lm_head row of u holds the tokens u must follow, plus
the phase sign. So a token may repeat with different successors once per
phase (the two-call script repeats the call markers, name and fences).
Checked here: the script decodes to the DeepSeek-V3 template's tool-call text,
and a numpy forward (both RoPE layouts) decodes it greedily after a prompt.

Usage: gen_scripted_model.py [SHARED_DATA_DIR] [OUT_MODELS_DIR]
"""
import json
import pathlib
import sys

import numpy as np

import gguf

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import gen_tiny_models as gtm  # noqa: E402
from tokenizers import AddedToken  # noqa: E402

CALLS_BEGIN = "<\uff5ctool\u2581calls\u2581begin\uff5c>"
CALLS_END = "<\uff5ctool\u2581calls\u2581end\uff5c>"
CALL_BEGIN = "<\uff5ctool\u2581call\u2581begin\uff5c>"
CALL_END = "<\uff5ctool\u2581call\u2581end\uff5c>"
SEP = "<\uff5ctool\u2581sep\uff5c>"
MARKERS = [CALLS_BEGIN, CALLS_END, CALL_BEGIN, CALL_END, SEP]
DIM = 128

# (name, arguments JSON text in the pieces it is to be generated in) per script;
# several pieces, so that the arguments reach the server in several tokens
SCRIPTS = {
  "deepseek-v3-toolcall-one": [("get_weather", ['{"city": ', '"Paris"', ', "unit": ',
                                                '"celsius"', '}'])],
  "deepseek-v3-toolcall-two": [("get_weather", ['{"city": ', '"Paris"', '}']),
                               ("get_time", ['{"zone": ', '"Europe/Paris"', '}'])],
}


def script_text(calls):
  """The text the DeepSeek-V3 chat template writes for these calls (its
  assistant tool_calls branch), which the model must produce."""
  out = CALLS_BEGIN
  for i, (name, args) in enumerate(calls):
    if i > 0:
      out += "\n"
    out += CALL_BEGIN + "function" + SEP + name + "\n```json\n" + "".join(args) + "\n```" \
      + CALL_END
  return out + CALLS_END


HD = 32            # head size; 4 heads
QK_DIM = HD - 1    # the one query/key dimension used: in the lowest-frequency RoPE pair
                   # under both the interleaved and the NeoX layout
ROPE_BASE = 1e8    # so that pair turns by < 1e-3 rad over the whole context
BIAS, PHASE = DIM - 1, DIM - 2   # hidden dims: constant 1, phase sign


def phases(ids, key):
  """Phase of each state (0 until the key token is in the context)."""
  out, seen = [], False
  for t in ids:
    seen = seen or t == key
    out.append(1 if seen else 0)
  return out


def build_weights(vocab_size, start_id, ids, key):
  """Weights of the one-layer model. A state is (current token, phase); the
  phase is the sign of hidden dim PHASE: every embedding holds -1 there, and
  attention adds +2 once the key token is anywhere in the context (its key
  alone is non-zero, its value alone is non-zero, the query is constant)."""
  states = [start_id] + ids[:-1]
  ph = [0] + phases(ids[:-1], key)
  pairs = {}
  for t, p, u in zip(states, ph, ids):
    if pairs.get((t, p), u) != u:
      raise RuntimeError(f"state {(t, p)} has two successors")
    pairs[(t, p)] = u
  distinct = sorted(set(states) | {key})
  if len(distinct) > DIM - 2:
    raise RuntimeError(f"{len(distinct)} states > {DIM - 2}")
  emb = np.zeros((vocab_size, DIM), np.float32)
  emb[:, BIAS] = 1.0
  emb[:, PHASE] = -1.0
  slot = {t: k for k, t in enumerate(distinct)}
  for t, k in slot.items():
    emb[t, k] = 1.0
  head = np.zeros((vocab_size, DIM), np.float32)
  for (t, p), u in pairs.items():
    head[u, slot[t]] += 8.0
    head[u, PHASE] += 1.0 if p else -1.0
  n = np.sqrt(3.0 / DIM)                     # 1/RMS of a script token's embedding
  wq = np.zeros((DIM, DIM), np.float32)
  wk = np.zeros((DIM, DIM), np.float32)
  wv = np.zeros((DIM, DIM), np.float32)
  wo = np.zeros((DIM, DIM), np.float32)
  wq[QK_DIM, BIAS] = 30.0 * n                # q = 30 at every position
  wk[QK_DIM, slot[key]] = 30.0 * n      # k = 30 on the key token, else 0 (score 159)
  wv[0, slot[key]] = n                  # v = 1 on the key token, else 0
  wo[PHASE, 0] = 2.0
  return dict(emb=emb, head=head, wq=wq, wk=wk, wv=wv, wo=wo)


def rms(x):
  return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + 1e-6)


def rope(x, pos, neox):
  """x (n_head, HD) at position pos."""
  i = np.arange(HD // 2)
  th = pos * ROPE_BASE ** (-2.0 * i / HD)
  c, s = np.cos(th), np.sin(th)
  y = x.copy()
  if neox:
    a, b = x[:, :HD // 2], x[:, HD // 2:]
    y[:, :HD // 2], y[:, HD // 2:] = a * c - b * s, a * s + b * c
  else:
    a, b = x[:, 0::2], x[:, 1::2]
    y[:, 0::2], y[:, 1::2] = a * c - b * s, a * s + b * c
  return y


def forward_greedy(W, prompt, eos_id, n_max, neox):
  """numpy forward of the GGUF model (RMSNorm weights 1, zero FFN), greedy."""
  ctx = list(prompt)
  ks, vs, out = [], [], []
  pos = 0
  while len(out) < n_max:
    t = ctx[pos]
    x = W["emb"][t]
    h = rms(x)
    q = rope((W["wq"] @ h).reshape(4, HD), pos, neox)
    ks.append(rope((W["wk"] @ h).reshape(4, HD), pos, neox))
    vs.append((W["wv"] @ h).reshape(4, HD))
    K, V = np.stack(ks, 1), np.stack(vs, 1)            # (4, n, HD)
    sc = np.einsum("hd,hnd->hn", q, K) / np.sqrt(HD)
    a = np.exp(sc - sc.max(1, keepdims=True))
    a /= a.sum(1, keepdims=True)
    x = x + W["wo"] @ np.einsum("hn,hnd->hd", a, V).reshape(-1)
    pos += 1
    if pos < len(ctx):
      continue
    u = int(np.argmax(W["head"] @ rms(x)))
    out.append(u)
    ctx.append(u)
    if u == eos_id:
      break
  return out


def write(outdir, tok, info, W):
  outdir.mkdir(parents=True, exist_ok=True)
  w = gguf.GGUFWriter(str(outdir / "model.gguf"), "llama")
  vocab_size = W["emb"].shape[0]
  w.add_type("model")
  w.add_name(f"baleen-scripted-{outdir.name}")
  w.add_block_count(1)
  w.add_context_length(4096)
  w.add_embedding_length(DIM)
  w.add_feed_forward_length(32)
  w.add_head_count(4)
  w.add_head_count_kv(4)
  w.add_rope_freq_base(ROPE_BASE)
  w.add_layer_norm_rms_eps(1e-6)
  w.add_vocab_size(vocab_size)
  w.add_rope_dimension_count(HD)
  w.add_file_type(gguf.LlamaFileType.ALL_F32)
  vocab = tok.get_vocab(with_added_tokens=True)
  by_id = {i: t for t, i in vocab.items()}
  added = tok.get_added_tokens_decoder()
  tokens, types = [], []
  for i in range(vocab_size):
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
  w.add_pad_token_id(info["pad_id"])
  w.add_add_bos_token(info["add_bos"])
  w.add_chat_template(info["chat_template"])
  z = lambda *s: np.zeros(s, np.float32)  # noqa: E731
  one = np.ones(DIM, np.float32)
  w.add_tensor("token_embd.weight", W["emb"])
  w.add_tensor("blk.0.attn_norm.weight", one)
  w.add_tensor("blk.0.attn_q.weight", W["wq"])
  w.add_tensor("blk.0.attn_k.weight", W["wk"])
  w.add_tensor("blk.0.attn_v.weight", W["wv"])
  w.add_tensor("blk.0.attn_output.weight", W["wo"])
  w.add_tensor("blk.0.ffn_norm.weight", one)
  w.add_tensor("blk.0.ffn_gate.weight", z(32, DIM))
  w.add_tensor("blk.0.ffn_up.weight", z(32, DIM))
  w.add_tensor("blk.0.ffn_down.weight", z(DIM, 32))
  w.add_tensor("output_norm.weight", one)
  w.add_tensor("output.weight", W["head"])
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()


def main():
  here = pathlib.Path(__file__).resolve().parent.parent
  shared = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else here.parent / "shared" / "data"
  outroot = pathlib.Path(sys.argv[2]) if len(sys.argv) > 2 else here / "tests" / "golden" / "models"
  saved = gtm.VOCAB_SIZE
  tok, info = gtm.build_tokenizer("deepseek", shared)
  gtm.VOCAB_SIZE = saved
  tok.add_tokens([AddedToken(m, special=False, normalized=False) for m in MARKERS])
  # the payload pieces as whole tokens (a 320-token BPE would spell the JSON in
  # repeated short pieces that a bigram table cannot order)
  pieces = ["\n```json\n", "\n```"]
  for calls in SCRIPTS.values():
    for n, a in calls:
      pieces += [n] + a
  tok.add_tokens([AddedToken(m, special=False, normalized=False)
                  for m in dict.fromkeys(pieces)])
  vocab_size = tok.get_vocab_size(with_added_tokens=True)
  start_id = tok.token_to_id(gtm.DS_ASSISTANT)
  # the phase key: the newline the template writes between two calls (the
  # only token that the two-call script has once, between the calls); so the
  # prompt must hold no lone newline token
  key = tok.encode("\n", add_special_tokens=False).ids[0]
  for k, (name, calls) in enumerate(SCRIPTS.items()):
    text = script_text(calls)
    ids = tok.encode(text, add_special_tokens=False).ids + [info["eos_id"]]
    got = tok.decode(ids[:-1], skip_special_tokens=False)
    if got != text:
      raise RuntimeError(f"{name}: decode {got!r} != {text!r}")
    W = build_weights(vocab_size, start_id, ids, key)
    # a prompt as the template writes it (BOS, user turn, Assistant marker),
    # a long one so that the attention's background is not negligible
    prompt = tok.encode(gtm.DS_USER + "What is the weather in Paris? " * 40,
                        add_special_tokens=True).ids + [start_id]
    for neox in (False, True):
      gen = forward_greedy(W, prompt, info["eos_id"], len(ids) + 8, neox)
      if gen != ids:
        raise RuntimeError(f"{name}: greedy {gen} != script {ids} (neox {neox})")
    outdir = outroot / name
    write(outdir, tok, info, W)
    tok.save(str(outdir / "tokenizer.json"))
    with open(outdir / "script.json", "w", encoding="utf-8") as f:
      json.dump({"text": text, "ids": ids,
                 "calls": [{"name": n, "arguments": "".join(a)} for n, a in calls]},
                f, ensure_ascii=False, indent=1)
    print(f"{name}: {len(ids)} tokens, {len(set(ids))} distinct, vocab {vocab_size}")


if __name__ == "__main__":
  main()
