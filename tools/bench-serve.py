#!/usr/bin/env python3
"""Serving benchmark for baleen-server (issue 4): generated tokens per second
and time to first token (p50 / p99) at several numbers of concurrent
streaming clients, through the official openai SDK.

  tools/bench-serve.py --server build-rel/app/server/baleen-server \\
      --model "$(bash tools/default-model.sh)" [--clients 1,8,32] [--requests 64]
      [--max-tokens 64] [--threads 2] [--parallel 32] [--url URL]

Starts the server on a free loopback port (or uses --url, then --server and
--model are not needed), runs a warm-up request, then for each client count
sends --requests chat requests (at least one per client), each client
looping until the requests are used up. Tokens are counted from the usage
the server reports (stream_options.include_usage). Prints one table row per
client count, and JSON with --json.
"""
import argparse
import json
import re
import statistics
import subprocess
import sys
import threading
import time

PROMPTS = [
    "Write a short paragraph about the sea.",
    "List five fruits and one fact about each.",
    "Explain what a hash table is, briefly.",
    "Describe a sunrise over the mountains.",
]


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, int(round(p / 100.0 * (len(xs) - 1)))))
    return xs[k]


def one_request(client, i, max_tokens):
    t0 = time.monotonic()
    ttft = None
    tokens = 0
    stream = client.chat.completions.create(
        model="bench", stream=True, max_tokens=max_tokens, temperature=0.7, seed=i,
        stream_options={"include_usage": True},
        messages=[{"role": "system", "content": "You are a helpful assistant."},
                  {"role": "user", "content": PROMPTS[i % len(PROMPTS)]}])
    for chunk in stream:
        if ttft is None and chunk.choices and chunk.choices[0].delta.content:
            ttft = time.monotonic() - t0
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return ttft if ttft is not None else time.monotonic() - t0, tokens


def run_level(client, n_clients, n_requests, max_tokens):
    lock = threading.Lock()
    next_i = [0]
    ttfts, tokens, errors = [], [0], []
    n_requests = max(n_requests, n_clients)

    def worker():
        while True:
            with lock:
                if next_i[0] >= n_requests:
                    return
                i = next_i[0]
                next_i[0] += 1
            try:
                t, n = one_request(client, i, max_tokens)
                with lock:
                    ttfts.append(t)
                    tokens[0] += n
            except Exception as e:  # noqa: BLE001 - reported, not fatal
                with lock:
                    errors.append(repr(e))

    threads = [threading.Thread(target=worker) for _ in range(n_clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    return {"clients": n_clients, "requests": n_requests, "errors": len(errors),
            "generated_tokens": tokens[0], "wall_s": round(wall, 2),
            "tok_per_s": round(tokens[0] / wall, 1) if wall > 0 else 0.0,
            "ttft_p50_ms": round(1000 * pct(ttfts, 50), 1),
            "ttft_p99_ms": round(1000 * pct(ttfts, 99), 1),
            "ttft_mean_ms": round(1000 * statistics.mean(ttfts), 1) if ttfts else None}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server")
    ap.add_argument("--model")
    ap.add_argument("--url")
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--parallel", type=int, default=32)
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    import openai

    proc = None
    url = a.url
    if url is None:
        if not a.server or not a.model:
            ap.error("give --url, or --server and --model")
        proc = subprocess.Popen([a.server, "--model", a.model, "--port", "0", "--threads",
                                 str(a.threads), "--parallel", str(a.parallel), "--ctx",
                                 str(a.ctx), "--max-queue", "1024"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = proc.stdout.readline()
        m = re.search(r"listening on (http://\S+?)/?$", line.strip())
        if not m:
            proc.kill()
            sys.exit(f"server did not start: {line!r}")
        url = m.group(1)
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0,
                               timeout=600)
        one_request(client, 0, 8)   # warm-up
        rows = [run_level(client, int(c), a.requests, a.max_tokens)
                for c in a.clients.split(",")]
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)
    if a.json:
        print(json.dumps(rows, indent=2))
    else:
        print("| clients | requests | errors | generated tokens | wall s | tok/s "
              "| TTFT p50 ms | TTFT p99 ms |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['clients']} | {r['requests']} | {r['errors']} | "
                  f"{r['generated_tokens']} | {r['wall_s']} | {r['tok_per_s']} | "
                  f"{r['ttft_p50_ms']} | {r['ttft_p99_ms']} |")


if __name__ == "__main__":
    main()
