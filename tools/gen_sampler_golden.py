#!/usr/bin/env python3
"""Writes tests/golden/sampler/cases.json for tests/test-sampler.c.

For random logit vectors and token histories, the filtering is done by HF
transformers' own logits processors, in the order its generate() applies
them: RepetitionPenaltyLogitsProcessor, then (not in transformers) OpenAI's
presence / frequency penalties as its API documentation defines them
(logit -= presence * (count > 0) + frequency * count), then
TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper, MinPLogitsWarper.
Each case records the logits (float32 bit patterns), the parameters, the
surviving token ids with their renormalised probabilities (softmax of the
processed scores in float64), the argmax of the penalised scores (greedy),
and the five most likely tokens with torch's float64 log_softmax of the raw
logits.

Cases whose survivor set would change if top_p or min_p moved by a relative
1e-5 are redrawn, so float rounding cannot make a correct sampler disagree.

Run from the repository root:  python3 tools/gen_sampler_golden.py
"""
import json
import os
import sys

import numpy as np
import torch
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden",
                   "sampler", "cases.json")


def process(logits, history, p, dtype=torch.float32):
    scores = torch.tensor(logits, dtype=dtype)[None, :]
    ids = torch.tensor(history if history else [0], dtype=torch.long)[None, :]
    if history and p["repetition_penalty"] != 1.0:
        scores = RepetitionPenaltyLogitsProcessor(p["repetition_penalty"])(ids, scores)
    if history:
        counts = torch.bincount(torch.tensor(history), minlength=scores.shape[1]).to(dtype)
        pen = (torch.tensor(p["presence_penalty"], dtype=dtype) * (counts > 0).to(dtype)
               + torch.tensor(p["frequency_penalty"], dtype=dtype) * counts)
        scores = scores - pen[None, :]
    penalised = scores.clone()
    if p["temperature"] != 1.0:
        scores = TemperatureLogitsWarper(p["temperature"])(ids, scores)
    if p["top_k"] > 0:
        scores = TopKLogitsWarper(p["top_k"])(ids, scores)
    if p["top_p"] < 1.0:
        scores = TopPLogitsWarper(p["top_p"])(ids, scores)
    if p["min_p"] > 0.0:
        scores = MinPLogitsWarper(p["min_p"])(ids, scores)
    return penalised[0], scores[0]


def survivors(logits, history, p, dtype=torch.float32):
    _, s = process(logits, history, p, dtype)
    return tuple(torch.nonzero(torch.isfinite(s)).flatten().tolist())


def stable(logits, history, p):
    base = survivors(logits, history, p)
    if survivors(logits, history, p, torch.float64) != base:
        return False
    for key in ("top_p", "min_p"):
        if key == "top_p" and p[key] >= 1.0 or key == "min_p" and p[key] <= 0.0:
            continue
        for f in (1 - 1e-5, 1 + 1e-5):
            q = dict(p)
            q[key] = min(p[key] * f, 1.0 - 1e-7 if key == "top_p" else 1.0)
            if survivors(logits, history, q) != base:
                return False
    return True


def make_case(rng, name, n_vocab, scale, params):
    while True:
        logits = (rng.standard_normal(n_vocab) * scale).astype(np.float32)
        hist_len = params.pop("_history", 0)
        history = [int(x) for x in rng.integers(0, n_vocab, hist_len)] if hist_len else []
        # repeat some ids so the frequency counts go above one
        if history:
            history += history[: len(history) // 3]
        p = dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=1.0,
                 presence_penalty=0.0, frequency_penalty=0.0)
        p.update({k: v for k, v in params.items() if not k.startswith("_")})
        for k in ("top_p", "min_p"):
            if isinstance(p[k], tuple):
                p[k] = float(rng.uniform(*p[k]))
        p = {k: (float(np.float32(v)) if isinstance(v, float) else v) for k, v in p.items()}
        params["_history"] = hist_len
        if not stable(logits.tolist(), history, p):
            continue
        penalised, scores = process(logits.tolist(), history, p)
        s64 = scores.to(torch.float64)
        keep = torch.isfinite(s64)
        probs = torch.softmax(s64, dim=-1)
        raw = torch.log_softmax(torch.tensor(logits, dtype=torch.float64), dim=-1)
        top = torch.topk(raw, min(5, n_vocab))
        ids = torch.nonzero(keep).flatten()
        return {
            "name": name,
            "n_vocab": n_vocab,
            "logits_f32_bits": [int(b) for b in logits.view(np.uint32)],
            "history": history,
            "params": p,
            "survivors": ids.tolist(),
            # ten significant digits: far below the test's 1e-6 tolerance
            "probs": [float(f"{x:.10g}") for x in probs[ids].tolist()],
            "greedy": int(torch.argmax(penalised)),
            "top_ids": top.indices.tolist(),
            "top_logprobs": [float(f"{x:.12g}") for x in top.values.tolist()],
        }


def main():
    rng = np.random.default_rng(20240611)
    specs = []
    for v, scale, tag in ((64, 2.0, "v64"), (512, 1.5, "v512"), (4096, 0.5, "v4096")):
        if v < 4096:   # keeps the file small: whole-vocabulary survivor lists are long
            specs += [
                (f"{tag}-plain", v, scale, {}),
                (f"{tag}-temp", v, scale, {"temperature": 0.7}),
            ]
        specs += [
            (f"{tag}-topk", v, scale, {"top_k": 10}),
            (f"{tag}-topp", v, scale, {"top_p": (0.5, 0.95)}),
            (f"{tag}-minp", v, scale, {"min_p": (0.02, 0.3)}),
            (f"{tag}-all", v, scale, {"temperature": 1.3, "top_k": 40, "top_p": (0.6, 0.95),
                                      "min_p": (0.01, 0.1), "repetition_penalty": 1.3,
                                      "presence_penalty": 0.5, "frequency_penalty": 0.25,
                                      "_history": 12}),
        ]
    specs += [
        ("v64-rep", 64, 2.0, {"repetition_penalty": 1.5, "_history": 20}),
        ("v64-rep-lt1", 64, 2.0, {"repetition_penalty": 0.7, "_history": 20}),
        ("v64-presence-freq", 64, 2.0, {"presence_penalty": 1.0, "frequency_penalty": 0.6,
                                        "_history": 30}),
        ("v64-neg-penalties", 64, 2.0, {"presence_penalty": -0.8, "frequency_penalty": -0.3,
                                        "_history": 10}),
        ("v64-topk1", 64, 2.0, {"top_k": 1}),
        ("v64-topk-big", 64, 2.0, {"top_k": 1000}),
        ("v64-topp-tiny", 64, 2.0, {"top_p": 0.01}),
        ("v64-minp-one", 64, 2.0, {"min_p": 1.0}),
        ("v512-topk-topp", 512, 1.5, {"top_k": 50, "top_p": (0.7, 0.9)}),
        ("v512-hot", 512, 1.5, {"temperature": 2.5, "top_p": (0.85, 0.99)}),
        ("v512-cold", 512, 1.5, {"temperature": 0.2, "min_p": (0.05, 0.2)}),
        ("v4096-nucleus-wide", 4096, 0.3, {"top_p": 0.9}),
        ("v512-chi2", 512, 1.5, {"top_k": 30, "temperature": 1.1}),
    ]
    cases = [make_case(rng, name, v, scale, dict(params)) for name, v, scale, params in specs]
    with open(OUT, "w") as f:
        json.dump({"generator": "tools/gen_sampler_golden.py", "cases": cases}, f,
                  separators=(",", ":"))
    for c in cases:
        print(c["name"], len(c["survivors"]), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
