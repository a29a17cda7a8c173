#!/usr/bin/env python3
"""baleen-server as a process: the model library (--models-dir), loading on
first use, switching and idle unloading, the non-loopback guard, SIGTERM and
GET /metrics. Clients: the official `openai` SDK, and `prometheus_client`'s
text parser as the reference for the metrics format; model metadata is
checked against the `gguf` package's reader.

Usage: test_server.py BALEEN_SERVER. Uses the tiny models in
BALEEN_GOLDEN_DIR and, for the SIGTERM test, BALEEN_DEFAULT_MODEL when set.
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


def tap_ok(cond, name, diag=""):
    RESULTS.append(bool(cond))
    print(("ok" if cond else "not ok") + f" {len(RESULTS)} - {name}", flush=True)
    if not cond and diag:
        for line in str(diag).splitlines():
            print("# " + line, flush=True)


class Server:
    def __init__(self, exe, *args):
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([exe, "--port", "0", "--threads", "1", *args],
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"listening on (http://\S+?)/?$", line.strip())
        if not m:
            self.proc.wait(timeout=30)
            raise RuntimeError(f"server did not start: {line!r} {self.stderr()}")
        self.url = m.group(1)
        self.line = line

    def stderr(self):
        self.log.seek(0)
        return self.log.read()

    def stop(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None


def raw(url, method="GET", body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def chat(url, model, content="hi", max_tokens=6, **extra):
    body = {"model": model, "messages": [{"role": "user", "content": content}],
            "max_tokens": max_tokens, "temperature": 0, **extra}
    return raw(url + "/v1/chat/completions", "POST", json.dumps(body).encode(),
               {"Content-Type": "application/json"})


def metrics(url):
    from prometheus_client.parser import text_string_to_metric_families
    st, hdr, body = raw(url + "/metrics")
    fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
    return st, hdr, fams


def sample(fams, family, name=None, **labels):
    f = fams.get(family)
    if f is None:
        return None
    for s in f.samples:
        if (name is None or s.name == name) and all(s.labels.get(k) == v
                                                    for k, v in labels.items()):
            return s.value
    return None


def loaded_model(url):
    _, _, fams = metrics(url)
    f = fams.get("baleen_model_loaded")
    return [s.labels["model"] for s in f.samples] if f else []


def make_library(golden, tmp):
    """A models folder: two GGUF files under names as people download them,
    an HF directory, a vocabulary-less junk file and a hidden folder."""
    models = os.path.join(golden, "models")
    os.symlink(os.path.join(models, "qwen2", "model.gguf"),
               os.path.join(tmp, "DeepSeek-R1-Distill-Qwen-7B-Q4_K_M.gguf"))
    os.makedirs(os.path.join(tmp, "llama"))
    os.symlink(os.path.join(models, "llama", "model-q8_0.gguf"),
               os.path.join(tmp, "llama", "model-q8_0.gguf"))
    os.symlink(os.path.join(models, "llama-tied"), os.path.join(tmp, "SmolLM-Tied"))
    with open(os.path.join(tmp, "broken.gguf"), "wb") as f:
        f.write(b"GGUF\x03\x00\x00\x00garbage")
    os.makedirs(os.path.join(tmp, ".hidden"))
    os.symlink(os.path.join(models, "qwen2", "model.gguf"),
               os.path.join(tmp, ".hidden", "secret.gguf"))
    return {"deepseek-r1-distill-qwen-7b-q4_k_m": os.path.join(models, "qwen2", "model.gguf"),
            "llama-q8_0": os.path.join(models, "llama", "model-q8_0.gguf"),
            "smollm-tied": None,
            # a GGUF inside an HF directory is a model of its own
            "smollm-tied-f32": os.path.join(models, "llama-tied", "model.gguf")}


def test_library(exe, golden):
    import openai
    with tempfile.TemporaryDirectory() as tmp:
        expect = make_library(golden, tmp)
        srv = Server(exe, "--models-dir", tmp, "--idle-ttl", "2")
        try:
            client = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0,
                                   timeout=120)
            ids = sorted(m.id for m in client.models.list().data)
            tap_ok(ids == sorted(expect), "models dir: GGUF files and HF dirs listed, junk "
                   "and hidden entries skipped", ids)
            tap_ok("models 4 in" in srv.line, "start line counts the models", srv.line)
            tap_ok(loaded_model(srv.url) == [], "nothing loaded before the first request")

            a = client.chat.completions.create(model="deepseek-r1-distill-qwen-7b-q4_k_m",
                                               messages=[{"role": "user", "content": "hi"}],
                                               max_tokens=6, temperature=0)
            tap_ok(a.model == "deepseek-r1-distill-qwen-7b-q4_k_m"
                   and a.usage.completion_tokens > 0, "first request loads its model", a)
            tap_ok(loaded_model(srv.url) == ["deepseek-r1-distill-qwen-7b-q4_k_m"],
                   "metrics name the loaded model")

            b = client.chat.completions.create(model="LLAMA-Q8_0",
                                               messages=[{"role": "user", "content": "hi"}],
                                               max_tokens=6, temperature=0)
            tap_ok(b.model == "llama-q8_0", "switching models without a restart "
                   "(ids match case-insensitively)", b.model)
            tap_ok(loaded_model(srv.url) == ["llama-q8_0"], "one model loaded at a time")

            a2 = client.chat.completions.create(model="deepseek-r1-distill-qwen-7b-q4_k_m",
                                                messages=[{"role": "user", "content": "hi"}],
                                                max_tokens=6, temperature=0)
            tap_ok(a2.choices[0].message.content == a.choices[0].message.content,
                   "a reloaded model answers as before (greedy)",
                   (a.choices[0].message.content, a2.choices[0].message.content))

            c = client.chat.completions.create(model="smollm-tied",
                                               messages=[{"role": "user", "content": "hi"}],
                                               max_tokens=4, temperature=0)
            tap_ok(c.model == "smollm-tied", "an HF directory loads on demand", c.model)

            try:
                client.chat.completions.create(model="deepseek-v3-not-here",
                                               messages=[{"role": "user", "content": "hi"}])
                tap_ok(False, "unknown model: 404 model_not_found")
            except openai.NotFoundError as e:
                tap_ok(e.status_code == 404 and e.code == "model_not_found",
                       "unknown model: 404 model_not_found", e)
            for bad in ["../llama/model-q8_0", "/etc/passwd", "llama\\..\\x", "a\nb"]:
                st, _, body = chat(srv.url, bad)
                err = json.loads(body).get("error", {})
                tap_ok(st == 400 and err.get("param") == "model",
                       f"path-like model name {bad!r} refused", body)
            st, _, body = chat(srv.url, 42)
            tap_ok(st == 400, "a model that is not a string: 400", body)

            # two models asked for at once: both answered, one after the other
            out = {}

            def run(name, model):
                out[name] = chat(srv.url, model, max_tokens=8, stream=False)
            th = [threading.Thread(target=run, args=(n, m)) for n, m in
                  [("a", "llama-q8_0"), ("b", "deepseek-r1-distill-qwen-7b-q4_k_m"),
                   ("c", "llama-q8_0")]]
            for t in th:
                t.start()
            for t in th:
                t.join(timeout=120)
            models = {k: json.loads(v[2]).get("model") for k, v in out.items() if v[0] == 200}
            tap_ok(len(models) == 3 and models["a"] == "llama-q8_0"
                   and models["b"] == "deepseek-r1-distill-qwen-7b-q4_k_m",
                   "concurrent requests for different models all answered", out)

            # the idle TTL (2 s) unloads the model
            deadline = time.time() + 15
            while time.time() < deadline and loaded_model(srv.url):
                time.sleep(0.25)
            tap_ok(loaded_model(srv.url) == [], "idle model unloaded after --idle-ttl")
            st, _, body = chat(srv.url, "llama-q8_0")
            tap_ok(st == 200, "and loaded again on the next request", body)

            test_metrics(srv.url)
        finally:
            rc = srv.stop()
            tap_ok(rc == 0, "SIGTERM when idle: exit status 0", srv.stderr()[-2000:])


def test_metrics(url):
    before = metrics(url)[2]
    n_chat = sample(before, "baleen_requests", "baleen_requests_total",
                    route="/v1/chat/completions", method="POST", status="200") or 0
    n_404 = sample(before, "baleen_requests", "baleen_requests_total",
                   route="/v1/chat/completions", method="POST", status="404") or 0
    gen0 = sample(before, "baleen_generated_tokens", "baleen_generated_tokens_total")
    prompt0 = sample(before, "baleen_prompt_tokens", "baleen_prompt_tokens_total")
    ttft0 = sample(before, "baleen_time_to_first_token_seconds",
                   "baleen_time_to_first_token_seconds_count")

    usage = []
    for i in range(3):
        st, _, body = chat(url, "llama-q8_0", content=f"hello {i}", max_tokens=5)
        usage.append(json.loads(body)["usage"])
    chat(url, "no-such-model")
    st, hdr, fams = metrics(url)
    tap_ok(st == 200 and hdr["Content-Type"].startswith("text/plain; version=0.0.4"),
           "/metrics: 200, text format 0.0.4", hdr["Content-Type"])
    got = sample(fams, "baleen_requests", "baleen_requests_total",
                 route="/v1/chat/completions", method="POST", status="200")
    tap_ok(got == n_chat + 3, "requests counted by route and status", (got, n_chat))
    got = sample(fams, "baleen_requests", "baleen_requests_total",
                 route="/v1/chat/completions", method="POST", status="404")
    tap_ok(got == n_404 + 1, "404s counted apart", got)
    gen = sample(fams, "baleen_generated_tokens", "baleen_generated_tokens_total")
    prompt = sample(fams, "baleen_prompt_tokens", "baleen_prompt_tokens_total")
    tap_ok(gen - gen0 == sum(u["completion_tokens"] for u in usage)
           and prompt - prompt0 == sum(u["prompt_tokens"] for u in usage),
           "token counters match the usage the API reported", (gen, gen0, prompt, usage))
    f = fams["baleen_time_to_first_token_seconds"]
    tap_ok(f.type == "histogram"
           and sample(fams, f.name, f.name + "_count") == ttft0 + 3,
           "time to first token: a histogram with one sample per request")
    buckets = [s for s in f.samples if s.name.endswith("_bucket")]
    vals = [s.value for s in buckets]
    tap_ok(vals == sorted(vals) and buckets[-1].labels["le"] == "+Inf"
           and buckets[-1].value == sample(fams, f.name, f.name + "_count"),
           "histogram buckets cumulative, ending at +Inf = count")
    tap_ok(fams["baleen_inter_token_latency_seconds"].type == "histogram"
           and fams["baleen_queue_depth"].type == "gauge"
           and fams["baleen_prefix_cache_hit_ratio"].type == "gauge",
           "inter-token latency, queue depth and prefix-cache hit ratio exported")
    hits = sample(fams, "baleen_prompt_cached_tokens", "baleen_prompt_cached_tokens_total")
    ratio = sample(fams, "baleen_prefix_cache_hit_ratio")
    tap_ok(abs(ratio - hits / prompt) < 1e-9, "hit ratio = cached / prompt tokens",
           (ratio, hits, prompt))
    # the GPU compact-sampling counters: one unlabelled _total sample each,
    # 0 on the CPU engine however many requests it served
    for fam in ("baleen_gpu_compact_draws", "baleen_gpu_compact_fallbacks"):
        f = fams.get(fam)
        tap_ok(f is not None and f.type == "counter" and f.documentation
               and [(s.name, s.labels, s.value) for s in f.samples] == [(fam + "_total", {}, 0)],
               f"{fam}_total: a counter with HELP, 0 on the CPU engine",
               f and (f.type, f.documentation, f.samples))


def test_metadata(exe, golden):
    """Ids and details against the gguf package's reading of the same file."""
    try:
        import gguf
    except ImportError:
        tap_ok(True, "# SKIP gguf package not installed")
        return
    path = os.path.join(golden, "models", "qwen2", "model.gguf")
    r = gguf.GGUFReader(path)
    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
    srv = Server(exe, "--model", path)
    try:
        st, _, body = raw(srv.url + "/v1/models")
        ids = [m["id"] for m in json.loads(body)["data"]]
        tap_ok(st == 200 and len(ids) == 1 and ids[0].startswith(arch),
               "--model: one id, carrying the family name", (ids, arch))
        st, _, body = chat(srv.url, "anything-goes")
        tap_ok(st == 200 and json.loads(body)["model"] == ids[0],
               "--model: any model name is answered by the one model", body)
    finally:
        srv.stop()


def test_guard(exe, golden):
    tiny = os.path.join(golden, "models", "llama", "model.gguf")
    p = subprocess.run([exe, "--model", tiny, "--host", "0.0.0.0", "--port", "0"],
                       capture_output=True, text=True, timeout=60)
    tap_ok(p.returncode == 2 and "--api-key" in p.stderr and "loopback" in p.stderr,
           "non-loopback without a key: refused, exit 2", p.stderr)
    p = subprocess.run([exe, "--port", "0"], capture_output=True, text=True, timeout=60)
    tap_ok(p.returncode == 2 and "--model" in p.stderr, "no model: exit 2", p.stderr)
    p = subprocess.run([exe, "--models-dir", "/nonexistent/dir", "--port", "0"],
                       capture_output=True, text=True, timeout=60)
    tap_ok(p.returncode == 1 and "models folder" in p.stderr, "missing models dir: exit 1",
           p.stderr)
    srv = Server(exe, "--model", tiny, "--host", "0.0.0.0", "--api-key", "k3y")
    try:
        port = srv.url.rsplit(":", 1)[1]
        st, _, _ = raw(f"http://127.0.0.1:{port}/v1/models")
        st2, _, _ = raw(f"http://127.0.0.1:{port}/v1/models",
                        headers={"Authorization": "Bearer k3y"})
        st3, _, _ = raw(f"http://127.0.0.1:{port}/metrics")
        tap_ok(st == 401 and st2 == 200 and st3 == 401,
               "non-loopback with a key: listens, the key is required", (st, st2, st3))
    finally:
        tap_ok(srv.stop() == 0, "exit 0 after SIGTERM")


def test_sigterm(exe, golden):
    """A request in flight finishes within the grace period; past it, it is
    cancelled; either way the process exits with status 0."""
    model = os.environ.get("BALEEN_DEFAULT_MODEL")
    if not model or not os.path.exists(model):
        tap_ok(True, "# SKIP BALEEN_DEFAULT_MODEL not set")
        return
    for grace, finished in [("60", True), ("0", False)]:
        srv = Server(exe, "--model", model, "--grace", grace)
        result = {}

        def run():
            result["r"] = chat(srv.url, "x", content="Tell me a long story.",
                               max_tokens=24 if finished else 2000)
        th = threading.Thread(target=run)
        th.start()
        # wait until the generation runs
        deadline = time.time() + 60
        while time.time() < deadline:
            _, _, fams = metrics(srv.url)
            if sample(fams, "baleen_requests_running") == 1:
                break
            time.sleep(0.05)
        time.sleep(0.3)
        t0 = time.time()
        rc = srv.stop()
        th.join(timeout=120)
        st, _, body = result.get("r", (None, None, b"{}"))
        if finished:
            ok = st == 200 and json.loads(body)["usage"]["completion_tokens"] > 0
            tap_ok(rc == 0 and ok, "SIGTERM: a request in flight finishes within --grace, "
                   "exit 0", (rc, st, body[:300]))
        else:
            tap_ok(rc == 0 and st == 503 and json.loads(body)["error"]["code"]
                   == "server_shutting_down" and time.time() - t0 < 30,
                   "SIGTERM with --grace 0: the request is cancelled (503), exit 0",
                   (rc, st, body[:300]))


def test_cors(exe, golden):
    """--db: the CORS origins the desktop app stores (setting server.cors_origins,
    written here with Python's sqlite3 while the server runs) decide
    Access-Control-Allow-Origin at once; without the setting, and as "*", any
    origin."""
    import sqlite3
    tiny = os.path.join(golden, "models", "llama", "model.gguf")
    with tempfile.TemporaryDirectory() as tmp:
        dbf = os.path.join(tmp, "baleen.db")
        srv = Server(exe, "--model", tiny, "--db", dbf)
        try:
            def acao(origin, method="GET"):
                h = {"Origin": origin}
                if method == "OPTIONS":
                    h["Access-Control-Request-Method"] = "POST"
                st, hdr, _ = raw(srv.url + "/v1/models", method, None, h)
                return st, hdr.get("Access-Control-Allow-Origin"), hdr.get("Vary")

            _, a0, _ = acao("http://a.example")
            db = sqlite3.connect(dbf, timeout=30)
            db.execute("INSERT INTO settings (key, value) VALUES ('server.cors_origins', "
                       "'http://a.example  https://b.example:8443') ON CONFLICT (key) "
                       "DO UPDATE SET value = excluded.value")
            db.commit()
            st1, a1, v1 = acao("http://a.example")
            st2, a2, _ = acao("https://b.example:8443", "OPTIONS")
            st3, a3, _ = acao("http://evil.example")
            st4, a4, _ = acao("http://evil.example", "OPTIONS")
            tap_ok(a0 == "*" and st1 == 200 and a1 == "http://a.example" and v1 == "Origin"
                   and st2 in (200, 204) and a2 == "https://b.example:8443"
                   and st3 == 200 and a3 is None and a4 is None,
                   "--db: server.cors_origins decides Access-Control-Allow-Origin",
                   (a0, st1, a1, v1, st2, a2, st3, a3, a4))
            db.execute("UPDATE settings SET value = '*' WHERE key = 'server.cors_origins'")
            db.commit()
            db.close()
            _, a5, _ = acao("http://evil.example")
            tap_ok(a5 == "*", "--db: server.cors_origins '*' allows every origin", a5)
        finally:
            tap_ok(srv.stop() == 0, "--db server exits 0")


def test_prefix_cache(exe, golden):
    """--no-prefix-cache: a repeated prompt reuses nothing (usage's cached_tokens,
    the KV metrics); without it the same repeat does."""
    model = os.path.join(golden, "models", "llama", "model.gguf")
    content = ("Tell me, in a few words, why whales and krill share the cold southern ocean, "
               "and what each of them eats through the long winter.")
    for flags, reuse in (([], True), (["--no-prefix-cache"], False)):
        srv = Server(exe, "--model", model, *flags)
        try:
            cached = []
            for _ in range(2):
                st, _, body = chat(srv.url, "any", content, max_tokens=3)
                usage = json.loads(body)["usage"] if st == 200 else {}
                cached.append(usage.get("prompt_tokens_details", {}).get("cached_tokens"))
            _, _, fams = metrics(srv.url)
            blocks_cached = sample(fams, "baleen_kv_blocks_cached")
            hit = sample(fams, "baleen_kv_prefix_hit_ratio")
            if reuse:
                tap_ok(cached[0] == 0 and cached[1] and cached[1] > 0 and blocks_cached > 0,
                       "prefix cache on: the repeated prompt reuses cached blocks",
                       (cached, blocks_cached))
            else:
                tap_ok(cached == [0, 0] and blocks_cached == 0 and hit == 0,
                       "--no-prefix-cache: nothing reused, nothing kept, hit ratio 0",
                       (cached, blocks_cached, hit))
        finally:
            srv.stop()


def test_session_ttl(exe, golden):
    """--session-ttl 4: a finished request's cached prefix blocks are freed by the
    server itself about four seconds later (baleen_kv_blocks_cached drops to 0 with no
    request in between) and the same prompt then computes everything again."""
    model = os.path.join(golden, "models", "llama", "model.gguf")
    content = ("Tell me, in a few words, why whales and krill share the cold southern ocean, "
               "and what each of them eats through the long winter.")
    srv = Server(exe, "--model", model, "--session-ttl", "4")
    try:
        st, _, body = chat(srv.url, "any", content, max_tokens=3)
        first = json.loads(body)["usage"]["prompt_tokens_details"]["cached_tokens"] \
            if st == 200 else None
        _, _, fams = metrics(srv.url)
        before = sample(fams, "baleen_kv_blocks_cached")
        after = before
        end = time.monotonic() + 20
        while after and after > 0 and time.monotonic() < end:
            time.sleep(0.1)
            _, _, fams = metrics(srv.url)
            after = sample(fams, "baleen_kv_blocks_cached")
        st, _, body = chat(srv.url, "any", content, max_tokens=3)
        again = json.loads(body)["usage"]["prompt_tokens_details"]["cached_tokens"] \
            if st == 200 else None
        tap_ok(first == 0 and before and before > 0 and after == 0 and again == 0,
               "--session-ttl 4: cached blocks expire by themselves, the repeat recomputes",
               (first, before, after, again))
    finally:
        srv.stop()


def test_sliding_window(exe, golden):
    """--sliding-window: a bad value is refused (exit 2, the flag named); with 5 the
    tiny qwen2 model continues its 24-token golden prompt exactly as transformers'
    Qwen2ForCausalLM with a 5-token window on every layer does
    (tests/golden/swa/goldens.json, tools/gen_swa_golden.py), detokenised by the
    `tokenizers` package; without the flag the continuation differs; a deepseek2
    model with a window fails to load with a message naming the setting."""
    import tokenizers
    model_dir = os.path.join(golden, "models", "qwen2")
    model = os.path.join(model_dir, "model.gguf")
    for bad in ("-3", "many"):
        p = subprocess.run([exe, "--model", model, "--port", "0", "--sliding-window", bad],
                           capture_output=True, text=True, timeout=60)
        tap_ok(p.returncode == 2 and "sliding-window" in p.stderr,
               f"--sliding-window {bad}: refused with exit 2, the flag named",
               (p.returncode, p.stderr))
    p = subprocess.run([exe, "--model", model, "--port", "0", "--device", "cuda",
                        "--parallel", "1", "--sliding-window", "5"],
                       capture_output=True, text=True, timeout=60)
    tap_ok(p.returncode == 2 and "sliding-window" in p.stderr,
           "--sliding-window with the single-sequence GPU path: refused with exit 2",
           (p.returncode, p.stderr))
    ds2 = os.path.join(golden, "models", "deepseek2-v2lite", "model.gguf")
    p = subprocess.run([exe, "--model", ds2, "--port", "0", "--sliding-window", "5"],
                       capture_output=True, text=True, timeout=60)
    tap_ok(p.returncode == 1 and "sliding" in p.stderr and "deepseek2" in p.stderr,
           "--sliding-window with a deepseek2 model: the load fails, naming the setting",
           (p.returncode, p.stderr))

    with open(os.path.join(golden, "swa", "goldens.json")) as f:
        ref = next(m for m in json.load(f)["models"] if m["model"] == "qwen2")
    tok = tokenizers.Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    want = tok.decode(ref["generated"], skip_special_tokens=False)
    texts = {}
    for flags in ((), ("--sliding-window", str(ref["window"]))):
        srv = Server(exe, "--model", model, *flags)
        try:
            body = {"model": "any", "prompt": ref["ids"], "max_tokens": len(ref["generated"]),
                    "temperature": 0}
            st, _, out = raw(srv.url + "/v1/completions", "POST", json.dumps(body).encode(),
                             {"Content-Type": "application/json"})
            texts[flags] = json.loads(out)["choices"][0]["text"] if st == 200 else (st, out)
        finally:
            srv.stop()
    got = texts[("--sliding-window", str(ref["window"]))]
    tap_ok(got == want, "--sliding-window 5: transformers' sliding-window continuation",
           (got, want))
    tap_ok(texts[()] != want, "without --sliding-window the continuation differs",
           (texts[()], want))


def main():
    for mod in ("openai", "prometheus_client"):
        try:
            __import__(mod)
        except ImportError:
            print(f"1..0 # SKIP the {mod} Python package is not installed "
                  "(tools/setup-deps.sh installs it)")
            return 0
    exe = sys.argv[1]
    golden = os.environ.get("BALEEN_GOLDEN_DIR",
                            os.path.join(os.path.dirname(__file__), "..", "golden"))
    for t in (test_guard, test_metadata, test_library, test_sigterm, test_cors,
              test_prefix_cache, test_session_ttl, test_sliding_window):
        try:
            t(exe, golden)
        except Exception as e:  # a crash is a failure, not a stop
            import traceback
            tap_ok(False, f"{t.__name__} raised", traceback.format_exc())
    print(f"1..{len(RESULTS)}")
    return 0 if all(RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
