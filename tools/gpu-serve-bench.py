#!/usr/bin/env python3
"""tools/gpu-serve-bench.py — single-stream serving figures of a running baleen-server.

Usage: tools/gpu-serve-bench.py [PORT]   (default 8080), against a server started as e.g.
    baleen-server -m r1-qwen-7b-q4_k_m.gguf --device cuda -c 8192 -p PORT
Prints the whole-request time of a 1,000-token prompt with max_tokens 1 (an upper bound of the
time to first token), the same for the next turn of a 4,000-token conversation, and sequential
requests per second (128 prompt + 32 answer tokens). Prompts are random token ids, so any model
with a vocabulary over 100,000 tokens works (the synthetic R1-Distill-Qwen files do).
"""
import sys
PORT = sys.argv[1] if len(sys.argv) > 1 else "8080"
BASE = "http://127.0.0.1:" + PORT
import json, time, urllib.request, random, statistics
def wait():
    for _ in range(120):
        try: urllib.request.urlopen(BASE + "/health", timeout=2); return
        except Exception: time.sleep(0.5)
wait()
def ttft(prompt, max_tokens=1):
    body = {"model": "x", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    r = urllib.request.Request(BASE + "/v1/completions", data=json.dumps(body).encode(),
                               headers={"Content-Type": "application/json"})
    t0 = time.perf_counter(); first = None; n = 0
    with urllib.request.urlopen(r, timeout=120) as f:
        for line in f:
            if line.startswith(b"data: {"):
                if first is None: first = time.perf_counter() - t0
                n += 1
    return first, time.perf_counter() - t0
rng = random.Random(1)
ttft([rng.randrange(1000, 100000) for _ in range(64)], 4)  # warm-up: load, graphs
res = [ttft([rng.randrange(1000, 100000) for _ in range(1000)])[1] for _ in range(5)]
print("whole request with max_tokens 1 (an upper bound of TTFT), 1000-token prompt, ms:", [round(x*1e3,1) for x in res], "median", round(statistics.median(res)*1e3,1))
conv = [rng.randrange(1000, 100000) for _ in range(4000)]
ttft(conv)
nt = []
for i in range(5):
    conv = conv + [rng.randrange(1000, 100000) for _ in range(60)]
    nt.append(ttft(conv)[1])
print("same, next turn (+60 tokens on a 4000+ conversation), ms:", [round(x*1e3,1) for x in nt], "median", round(statistics.median(nt)*1e3,1))
t0 = time.perf_counter(); n = 0
while time.perf_counter() - t0 < 10:
    ttft([rng.randrange(1000, 100000) for _ in range(128)], 32); n += 1
print("sequential requests/s (128 in, 32 out):", round(n / (time.perf_counter() - t0), 2))
