#!/usr/bin/env python3
"""tools/gpu-serve-load.py — concurrent serving figures of a running baleen-server (issue 4).

Usage: tools/gpu-serve-load.py [--port P] [--streams N] [--prompt-len L] [--max-tokens M]
                               [--requests R] [--json]
against a server started as e.g.
    baleen-server -m r1-qwen-7b-q4_k_m.gguf --device cuda -c 65536 --parallel 64 -p P

N client threads each send streaming /v1/completions requests (prompts of L random token ids,
so nothing comes from the prefix cache; temperature 0; max_tokens M) until R requests have been
sent in all. Generated tokens are counted from the usage the server reports at the end of
each stream (stream_options.include_usage), or as content chunks when there is none. Prints generated tokens per second over the whole
run, requests per second, and time to first token / whole-request time p50 and p99.
Standard library only (the GPU machine has no network for pip).
"""
import argparse
import json
import random
import statistics
import threading
import time
import urllib.request


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", default="8080")
    ap.add_argument("--streams", type=int, default=64)
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--requests", type=int, default=0, help="default: 2 per stream")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    base = "http://127.0.0.1:" + a.port
    for _ in range(240):
        try:
            urllib.request.urlopen(base + "/health", timeout=2)
            break
        except Exception:
            time.sleep(0.5)
    total = a.requests or 2 * a.streams
    lock = threading.Lock()
    state = {"left": total, "tokens": 0, "errors": 0, "ttft": [], "whole": []}

    def one(rng):
        body = {"model": "x", "prompt": [rng.randrange(1000, 100000) for _ in range(a.prompt_len)],
                "max_tokens": a.max_tokens, "temperature": 0, "stream": True,
                "stream_options": {"include_usage": True}}
        req = urllib.request.Request(base + "/v1/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        t0 = time.perf_counter()
        first = None
        n = 0
        used = None
        with urllib.request.urlopen(req, timeout=600) as f:
            for line in f:
                if not line.startswith(b"data: {"):
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    used = chunk["usage"].get("completion_tokens")
                if chunk.get("choices"):
                    # the first chunk with text: an opening chunk may come before any token
                    if first is None and chunk["choices"][0].get("text"):
                        first = time.perf_counter() - t0
                    n += 1
        return first, time.perf_counter() - t0, used if used is not None else n

    def worker(seed):
        rng = random.Random(seed)
        while True:
            with lock:
                if state["left"] == 0:
                    return
                state["left"] -= 1
            try:
                first, whole, n = one(rng)
                with lock:
                    state["tokens"] += n
                    if first is not None:
                        state["ttft"].append(first)
                    state["whole"].append(whole)
            except Exception:
                with lock:
                    state["errors"] += 1

    # warm-up: loads the model, captures graphs
    one(random.Random(0))
    threads = [threading.Thread(target=worker, args=(i + 1,)) for i in range(a.streams)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    res = {
        "streams": a.streams, "prompt_len": a.prompt_len, "max_tokens": a.max_tokens,
        "requests": total, "errors": state["errors"], "wall_s": round(wall, 3),
        "gen_tok_s": round(state["tokens"] / wall, 1),
        "req_s": round(len(state["whole"]) / wall, 2),
        "ttft_p50_ms": round(pct(state["ttft"], 50) * 1e3, 1),
        "ttft_p99_ms": round(pct(state["ttft"], 99) * 1e3, 1),
        "request_p50_ms": round(pct(state["whole"], 50) * 1e3, 1),
        "request_p99_ms": round(pct(state["whole"], 99) * 1e3, 1),
    }
    if a.json:
        print(json.dumps(res))
    else:
        print(", ".join(f"{k} {v}" for k, v in res.items()))


if __name__ == "__main__":
    main()
