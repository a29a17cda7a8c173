#!/usr/bin/env python3
"""Writes the safetensors fixtures for tests/test-safetensors.c.

Everything under tests/golden/safetensors/ is produced by the reference
writers, never by hand:

  basic.safetensors   written by the `safetensors` package (torch API): F32,
                      F16 and BF16 tensors of 0-D to 5-D shapes, an empty one,
                      an I64 one, and a __metadata__ block.
  basic.json          what numpy / torch read back from it: for every tensor
                      its dtype, file-order shape and values (floating types
                      as the IEEE float32 bit patterns of the exact upcast,
                      integers as integers).
  tiny-single/        a tiny LlamaForCausalLM saved by transformers'
                      save_pretrained (one model.safetensors), plus its
                      tokenizer files from a tiny tokenizers BPE.
  tiny-sharded/       the same model saved with a small max_shard_size, so the
                      weights are split over shards with
                      model.safetensors.index.json; some weights are F16/BF16.
  tiny-*.json         the values every tensor of those directories holds, as
                      read back by safetensors.numpy / torch, in the same form.

Run from the repository root:  python3 tools/gen_safetensors_fixture.py
"""
import json
import os
import shutil
import sys

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden",
                   "safetensors")


def describe(path):
    """Reads every tensor of @path with safetensors' torch loader."""
    out = {}
    with safe_open(path, framework="pt") as f:
        for name in f.keys():
            t = f.get_tensor(name)
            entry = {"dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape)}
            if t.dtype.is_floating_point:
                # float16 and bfloat16 widen to float32 exactly
                bits = t.to(torch.float32).contiguous().numpy().view(np.uint32)
                entry["f32_bits"] = [int(b) for b in bits.reshape(-1)]
            else:
                entry["ints"] = [int(v) for v in t.reshape(-1).tolist()]
            out[name] = entry
    return out


def write_basic():
    g = torch.Generator().manual_seed(1234)
    tensors = {
        "vec.f32": torch.randn(7, generator=g),
        "mat.f32": torch.randn(3, 5, generator=g),
        "cube.f32": torch.randn(2, 3, 4, generator=g),
        "mat.f16": torch.randn(4, 6, generator=g).to(torch.float16),
        "odd.f16": torch.randn(3, generator=g).to(torch.float16),   # leaves later data unaligned
        "mat.bf16": torch.randn(5, 3, generator=g).to(torch.bfloat16),
        "cube.bf16": torch.randn(2, 2, 3, generator=g).to(torch.bfloat16),
        "hyper.f32": torch.randn(2, 1, 2, 3, generator=g),
        "five.f32": torch.randn(1, 2, 1, 2, 2, generator=g),
        "scalar.f32": torch.tensor(3.25),
        "empty.f32": torch.zeros(0, 4),
        "ids.i64": torch.arange(6, dtype=torch.int64).reshape(2, 3) - 2,
        # specials survive the round trip bit for bit
        "special.f16": torch.tensor([0.0, -0.0, float("inf"), float("-inf"), 6.1e-5, 65504.0],
                                    dtype=torch.float16),
        "special.bf16": torch.tensor([1e-40, -2.5, 3.0e38, float("inf")], dtype=torch.bfloat16),
    }
    path = os.path.join(OUT, "basic.safetensors")
    save_file(tensors, path, metadata={"format": "pt", "producer": "gen_safetensors_fixture"})
    with open(os.path.join(OUT, "basic.json"), "w") as f:
        json.dump({"metadata": {"format": "pt", "producer": "gen_safetensors_fixture"},
                   "tensors": describe(path)}, f, separators=(",", ":"))


def tiny_model():
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=48, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      rms_norm_eps=1e-5, rope_theta=50000.0, tie_word_embeddings=False,
                      rope_scaling={"rope_type": "linear", "factor": 2.0})
    return LlamaForCausalLM(cfg).eval()


def dir_values(d):
    out = {}
    for name in sorted(os.listdir(d)):
        if name.endswith(".safetensors"):
            for k, v in describe(os.path.join(d, name)).items():
                v["file"] = name
                out[k] = v
    return out


def write_tokenizer(d):
    from tokenizers import Tokenizer, models, pre_tokenizers
    tok = Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "ab": 2}, merges=[("a", "b")]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.save(os.path.join(d, "tokenizer.json"))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": None, "eos_token": "b"}, f)


def write_dirs():
    model = tiny_model()
    single = os.path.join(OUT, "tiny-single")
    model.save_pretrained(single, safe_serialization=True)
    write_tokenizer(single)

    # mixed dtypes in the sharded copy: the safetensors dtype is per tensor
    sd = model.state_dict()
    for i, name in enumerate(sorted(sd)):
        if i % 3 == 1:
            sd[name] = sd[name].to(torch.float16)
        elif i % 3 == 2:
            sd[name] = sd[name].to(torch.bfloat16)
    sharded = os.path.join(OUT, "tiny-sharded")
    model.save_pretrained(sharded, state_dict=sd, safe_serialization=True,
                          max_shard_size="4KB")
    for d in (single, sharded):
        name = os.path.basename(d)
        with open(os.path.join(OUT, name + ".json"), "w") as f:
            json.dump({"config": json.load(open(os.path.join(d, "config.json"))),
                       "tensors": dir_values(d)}, f, separators=(",", ":"))


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    write_basic()
    write_dirs()
    return 0


if __name__ == "__main__":
    sys.exit(main())
