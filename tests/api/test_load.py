#!/usr/bin/env python3
"""A bounded loopback load test of baleen-server's continuous-batching engine
(issue 4), and its overload answer.

1. 64 concurrent streaming clients (threads) send a fixed number of chat
   requests to a tiny model: half through the official `openai` SDK, half on
   the raw wire (urllib) where the SSE stream must end with `data: [DONE]`.
   Some clients drop their connection mid-stream. No request may fail; the
   completed streams carry a finish_reason. Afterwards /metrics (parsed with
   `prometheus_client`) must show nothing running and no KV block in use
   (cached prefix blocks are allowed), and the server's resident memory must
   not have grown past a bound after a warm-up round.
2. A server with --parallel 1 --max-queue 1 under a burst: the refused
   requests get 429 with a Retry-After header and an OpenAI-shaped error the
   SDK raises as RateLimitError; the others complete.

Usage: test_load.py BALEEN_SERVER. Uses BALEEN_GOLDEN_DIR/models/llama.
Prints TAP.
"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

RESULTS = []
N_CLIENTS = 64
ROUNDS = 3            # requests per client in the measured phase
MAX_TOKENS = 12


def tap_ok(cond, name, diag=""):
    RESULTS.append(bool(cond))
    print(("ok" if cond else "not ok") + f" {len(RESULTS)} - {name}", flush=True)
    if not cond and diag:
        for line in str(diag).splitlines()[:40]:
            print("# " + line, flush=True)


class Server:
    def __init__(self, exe, *args):
        self.log = tempfile.TemporaryFile(mode="w+")
        env = dict(os.environ)
        # an ASan build keeps freed memory in quarantine (256 MiB by default),
        # which would read as growth: keep it small
        env["ASAN_OPTIONS"] = ":".join(x for x in (env.get("ASAN_OPTIONS"),
                                                   "quarantine_size_mb=8") if x)
        self.proc = subprocess.Popen([exe, "--port", "0", "--threads", "1", *args],
                                     stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
        line = self.proc.stdout.readline()
        m = re.search(r"listening on (http://\S+?)/?$", line.strip())
        if not m:
            self.proc.wait(timeout=30)
            raise RuntimeError(f"server did not start: {line!r} {self.stderr()}")
        self.url = m.group(1)

    def stderr(self):
        self.log.seek(0)
        return self.log.read()

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return -1

    def sanitized(self):
        with open(f"/proc/{self.proc.pid}/maps") as f:
            return "asan" in f.read()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None


def metrics(url):
    from prometheus_client.parser import text_string_to_metric_families
    with urllib.request.urlopen(url + "/metrics", timeout=30) as r:
        body = r.read().decode()
    return {s.name: s.value for f in text_string_to_metric_families(body) for s in f.samples
            if not s.labels}


def body_for(i, k, stream=True, max_tokens=MAX_TOKENS):
    # a shared system prompt, so the prefix cache has something to share
    return {"model": "tiny", "stream": stream, "max_tokens": max_tokens, "temperature": 0.8,
            "seed": i * 100 + k,
            "messages": [{"role": "system", "content": "You are a terse test assistant. " * 4},
                         {"role": "user", "content": f"client {i} request {k}: count"}]}


def raw_stream(url, body, drop_after=None):
    """POSTs a streaming chat request on the raw wire; returns (lines of data,
    saw_done). Closes the connection after @drop_after data lines when set."""
    req = urllib.request.Request(url + "/v1/chat/completions", method="POST",
                                 data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    datas = []
    with urllib.request.urlopen(req, timeout=120) as r:
        if r.status != 200:
            raise RuntimeError(f"status {r.status}")
        for line in r:
            line = line.decode().rstrip("\r\n")
            if not line.startswith("data: "):
                continue
            datas.append(line[6:])
            if drop_after is not None and len(datas) >= drop_after:
                return datas, False   # closing the response drops the connection
    return datas, bool(datas) and datas[-1] == "[DONE]"


def sdk_stream(client, body, drop_after=None):
    """The same through the openai SDK; returns (chunks, finish_reason)."""
    args = dict(body)
    stream = client.chat.completions.create(**args)
    chunks, finish = 0, None
    try:
        for chunk in stream:
            chunks += 1
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
            if drop_after is not None and chunks >= drop_after:
                break
    finally:
        stream.close()
    return chunks, finish


def run_round(url, client, rounds, drops):
    errors, completed, dropped = [], [0], [0]
    lock = threading.Lock()
    barrier = threading.Barrier(N_CLIENTS)

    def worker(i):
        try:
            barrier.wait(timeout=60)
        except threading.BrokenBarrierError:
            pass
        # spread the connects over ~150 ms: the server's listen backlog is
        # small (10), and a burst of 64 SYNs against a slow (sanitized) main
        # loop can see resets; the streams still all overlap
        time.sleep((i % 16) * 0.01)
        for k in range(rounds):
            drop = 2 if (drops and i % 8 == 3 and k == 1) else None
            try:
                if i % 2 == 0:
                    n, finish = sdk_stream(client, body_for(i, k), drop)
                    ok = drop is not None or finish in ("stop", "length")
                    what = f"sdk finish={finish} chunks={n}"
                else:
                    datas, done = raw_stream(url, body_for(i, k), drop)
                    ok = drop is not None or done
                    if ok and drop is None:
                        # every data line but [DONE] is JSON with choices or usage
                        for d in datas[:-1]:
                            json.loads(d)
                    what = f"raw done={done} lines={len(datas)}"
                with lock:
                    if not ok:
                        errors.append(f"client {i} req {k}: {what}")
                    elif drop is not None:
                        dropped[0] += 1
                    else:
                        completed[0] += 1
            except Exception as e:   # noqa: BLE001 - every failure is a test failure
                with lock:
                    errors.append(f"client {i} req {k}: {type(e).__name__}: {e} ({e.__cause__!r})")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(N_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return errors, completed[0], dropped[0]


def wait_idle(url, deadline_s=20):
    m = {}
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        m = metrics(url)
        if (m.get("baleen_requests_running") == 0 and m.get("baleen_engine_sequences_running") == 0
                and m.get("baleen_kv_blocks_used") == 0):
            return True, m
        time.sleep(0.2)
    return False, m


def test_load(exe, tiny):
    import openai
    srv = Server(exe, "--model", tiny, "--parallel", "16", "--ctx", "256", "--max-queue", "256")
    try:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="none", max_retries=0,
                               timeout=120)
        # the SDK builds its pydantic models on first use, which is not
        # thread-safe: one request first, alone
        sdk_stream(client, body_for(0, 99))
        # warm-up: every client once, so the KV pool and the allocator reach
        # their working size before memory is measured
        t0 = time.monotonic()
        errors, completed, _ = run_round(srv.url, client, 1, False)
        tap_ok(not errors and completed == N_CLIENTS,
               f"warm-up: {N_CLIENTS} concurrent streams complete", "\n".join(errors))
        idle, m = wait_idle(srv.url)
        rss0 = srv.rss_kib()
        errors, completed, dropped = run_round(srv.url, client, ROUNDS, True)
        took = time.monotonic() - t0
        tap_ok(not errors, f"{N_CLIENTS} clients x {ROUNDS} streaming requests: no errors",
               "\n".join(errors[:20]))
        tap_ok(dropped > 0 and completed + dropped == N_CLIENTS * ROUNDS,
               f"all requests accounted for ({completed} complete, {dropped} dropped mid-stream)")
        idle, m = wait_idle(srv.url)
        tap_ok(idle, "afterwards /metrics: 0 requests running, 0 sequences, 0 KV blocks in use",
               json.dumps({k: v for k, v in m.items() if "kv" in k or "running" in k}))
        tap_ok(m.get("baleen_kv_blocks_total", 0) > 0 and m.get("baleen_queue_depth") == 0,
               "KV pool reported, queue empty",
               json.dumps({k: v for k, v in m.items() if "kv" in k or "queue" in k}))
        tap_ok(0 < m.get("baleen_kv_prefix_hit_ratio", -1) <= 1,
               "the shared system prompt hits the prefix cache",
               str(m.get("baleen_kv_prefix_hit_ratio")))
        rss1 = srv.rss_kib()
        # the pool is allocated once; 3 more rounds must not leak per request
        # (ASan's shadow memory and allocator add their own slack)
        bound = 96 if srv.sanitized() else 48
        tap_ok(rss1 - rss0 < bound * 1024, f"RSS after warm-up {rss0} KiB, after load {rss1} "
               f"KiB (growth < {bound} MiB)")
        tap_ok(took < 120, f"load phase took {took:.1f} s")
        st = srv.stop()
        tap_ok(st == 0, "SIGTERM afterwards: exit 0", srv.stderr()[-2000:])
        log = srv.stderr()
        tap_ok("continuous batching" in log, "startup log names the batching engine",
               log[:500])
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()


def test_queue_full(exe, tiny):
    import openai
    srv = Server(exe, "--model", tiny, "--parallel", "1", "--max-queue", "1", "--ctx", "1024")
    n = 16
    results = [None] * n
    barrier = threading.Barrier(n)
    try:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="none", max_retries=0,
                               timeout=120)

        def one(i):
            body = body_for(i, 0, stream=False, max_tokens=600)
            try:
                barrier.wait(timeout=30)
                r = client.chat.completions.create(**body)
                results[i] = ("ok", r.choices[0].finish_reason)
            except openai.RateLimitError as e:
                results[i] = ("429", e.response.headers.get("retry-after"), e.body)
            except Exception as e:   # noqa: BLE001
                results[i] = ("error", repr(e))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        refused = [r for r in results if r and r[0] == "429"]
        done = [r for r in results if r and r[0] == "ok"]
        other = [r for r in results if not r or r[0] not in ("ok", "429")]
        tap_ok(refused and done and not other,
               f"burst of {n} on --parallel 1 --max-queue 1: {len(done)} served, "
               f"{len(refused)} refused with 429", repr(results))
        tap_ok(all(r[1] is not None and r[1].isdigit() and int(r[1]) >= 1 for r in refused),
               "429 carries Retry-After (seconds)", repr(refused[:2]))
        tap_ok(all(isinstance(r[2], dict) and r[2].get("type") == "rate_limit_exceeded"
                   and isinstance(r[2].get("message"), str) for r in refused),
               "429 body is an OpenAI error of type rate_limit_exceeded", repr(refused[:2]))
        idle, m = wait_idle(srv.url)
        tap_ok(idle, "after the burst nothing runs and no KV block is in use")
    finally:
        srv.stop()


def main():
    if len(sys.argv) < 2:
        print("1..0 # SKIP usage: test_load.py BALEEN_SERVER")
        return 0
    try:
        import openai  # noqa: F401
        import prometheus_client  # noqa: F401
    except ImportError as e:
        print(f"1..0 # SKIP {e.name} is not installed")
        return 0
    golden = os.environ.get("BALEEN_GOLDEN_DIR", os.path.join(os.path.dirname(__file__),
                                                              "..", "golden"))
    tiny = os.path.join(golden, "models", "llama", "model.gguf")
    if not os.path.exists(tiny):
        print(f"1..0 # SKIP no tiny model at {tiny}")
        return 0
    test_load(sys.argv[1], tiny)
    test_queue_full(sys.argv[1], tiny)
    print(f"1..{len(RESULTS)}", flush=True)
    return 0 if all(RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
