#!/usr/bin/env python3
"""baleen-server --db: API keys from the database, rate limits, input rules,
the streaming output filter and the audit log, over real HTTP. The settings
are changed with baleen-cli while the server runs (it notices the commits).
References: the server's own greedy answer without rules (what the output
filter must cut or mask), Python's sqlite3 for the audit rows, and the
official openai SDK for the error classes when it is installed.

Usage: test_safety.py BALEEN_SERVER BALEEN_CLI. Prints TAP."""
import json, os, re, shutil, sqlite3, subprocess, sys, tempfile, urllib.error, urllib.request

SERVER, CLI = sys.argv[1], sys.argv[2]
GOLDEN = os.environ.get("BALEEN_GOLDEN_DIR", os.path.join(os.path.dirname(__file__), "..", "golden"))
MODEL = os.path.join(GOLDEN, "models", "llama", "model.gguf")
TMP = tempfile.mkdtemp(prefix="baleen-safety-")
DB = os.path.join(TMP, "baleen.db")
RESULTS = []


def tap(cond, name, diag=""):
    RESULTS.append(bool(cond))
    print(("ok" if cond else "not ok") + f" {len(RESULTS)} - {name}", flush=True)
    if not cond and diag:
        for line in str(diag).splitlines():
            print("# " + line, flush=True)


def cli(*args):
    p = subprocess.run([CLI, *args[:1], "--db", DB, *args[1:]], capture_output=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError(f"baleen-cli {args}: {p.stderr.decode()}")
    return p.stdout.decode()


def post(url, body, key=None):
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = "Bearer " + key
    req = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def chat(url, text, stream=False, key=None, max_tokens=24):
    """Returns (status, headers, content, finish_reason or error object)."""
    body = {"model": "m", "messages": [{"role": "user", "content": text}], "temperature": 0,
            "max_tokens": max_tokens, "stream": stream}
    status, headers, raw = post(url, body, key)
    if status != 200:
        return status, headers, None, json.loads(raw)["error"]
    if not stream:
        c = json.loads(raw)["choices"][0]
        return status, headers, c["message"]["content"], c["finish_reason"]
    content, finish = "", None
    for line in raw.decode().split("\n"):
        if line.startswith("data: ") and line != "data: [DONE]":
            for c in json.loads(line[6:]).get("choices", []):
                content += c["delta"].get("content") or ""
                finish = c.get("finish_reason") or finish
    return status, headers, content, finish


def audit_rows():
    c = sqlite3.connect(DB)
    c.row_factory = sqlite3.Row
    return [dict(r) for r in c.execute("SELECT * FROM audit ORDER BY id")]


def main():
    if not os.path.exists(MODEL):
        print("1..0 # SKIP tiny model missing (tools/gen_tiny_models.py)")
        return 0
    cli("config", "set", "privacy.content", "full")   # creates the database
    log = open(os.path.join(TMP, "server.log"), "w+")
    proc = subprocess.Popen([SERVER, "--model", MODEL, "--port", "0", "--threads", "1",
                             "--db", DB], stdout=subprocess.PIPE, stderr=log, text=True)
    sent = 0
    try:
        line = proc.stdout.readline()
        m = re.search(r"listening on (http://\S+?)/?$", line.strip())
        if not m:
            log.seek(0)
            print(f"Bail out! server did not start: {line!r} {log.read()}")
            return 1
        url = m.group(1)

        # the reference: greedy answers without any rule
        st, _, ref, ref_finish = chat(url, "Tell me a story about a whale.", stream=True)
        sent += 1
        _, _, ref_plain, _ = chat(url, "Tell me a story about a whale.")
        sent += 1
        tap(st == 200 and len(ref) >= 8 and ref == ref_plain, "greedy reference answers",
            repr((st, ref, ref_plain)))

        # output rule: a phrase from the middle of the answer, as the tokens fall
        i = len(ref) // 3
        phrase = ref[i:i + 5]
        cut = ref.find(phrase)
        cli("rules", "add", phrase, "--scope", "output")
        st, _, got, fin = chat(url, "Tell me a story about a whale.", stream=True)
        sent += 1
        tap(st == 200 and got == ref[:cut] and fin == "content_filter",
            "stream stops before a blocked phrase with finish_reason content_filter",
            repr((phrase, got, ref[:cut], fin)))
        st, _, got, fin = chat(url, "Tell me a story about a whale.")
        sent += 1
        tap(st == 200 and got == ref[:cut] and fin == "content_filter",
            "non-streamed answer is cut the same way", repr((got, fin)))
        cli("config", "set", "moderation.output_action", "mask")
        st, _, got, fin = chat(url, "Tell me a story about a whale.", stream=True)
        sent += 1
        want = ref.replace(phrase, "*" * len(phrase))
        tap(st == 200 and got == want and fin == ref_finish and phrase not in got,
            "mask mode masks the phrase and finishes normally", repr((got, want, fin)))

        # input rules
        cli("rules", "add", "forbidden topic", "--scope", "input", "--nocase",
            "--label", "demo rule")
        st, _, _, err = chat(url, "Let us discuss the Forbidden Topic now.")
        sent += 1
        tap(st == 400 and err["code"] == "content_filter" and "demo rule" in err["message"],
            "a blocked input answers 400 content_filter", repr((st, err)))
        req = urllib.request.Request(url + "/v1/completions", method="POST",
                                     headers={"Content-Type": "application/json"},
                                     data=json.dumps({"model": "m", "max_tokens": 4,
                                                      "prompt": "the FORBIDDEN topic"}).encode())
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                cst, cbody = r.status, r.read()
        except urllib.error.HTTPError as e:
            cst, cbody = e.code, e.read()
        sent += 1
        tap(cst == 400 and json.loads(cbody)["error"]["code"] == "content_filter",
            "/v1/completions prompts are checked too", repr((cst, cbody)))
        before = len(audit_rows())
        req = urllib.request.Request(url + "/v1/completions", method="POST",
                                     headers={"Content-Type": "application/json"},
                                     data=json.dumps({"model": "m", "max_tokens": 3,
                                                      "prompt": ["one", "two"]}).encode())
        with urllib.request.urlopen(req, timeout=60) as r:
            choices = json.loads(r.read())["choices"]
        sent += 2
        rows = audit_rows()[before:]
        tap(len(choices) == 2 and len(rows) == 2
            and all(r["endpoint"] == "/v1/completions" for r in rows),
            "two prompts in one completions request: two audit rows", repr(rows))
        cli("rules", "add", "hunter2", "--action", "mask", "--scope", "input")
        st, _, _, _ = chat(url, "my password is hunter2, keep it")
        sent += 1
        last = audit_rows()[-1]
        tap(st == 200 and "hunter2" not in last["prompt"] and "*******" in last["prompt"],
            "a masked input reaches the model (and the log) masked", repr(last["prompt"]))

        # keys from the database
        key = cli("keys", "create", "wire-test").strip()
        kid = json.loads(cli("keys", "list", "--json").splitlines()[0])["id"]
        cli("config", "set", "auth.require_key", "always")
        st, _, _, err = chat(url, "hello")
        sent += 1
        st2, _, _, _ = chat(url, "hello", key=key)
        sent += 1
        st3, _, _, err3 = chat(url, "hello", key=key[:-2] + "xx")
        sent += 1
        tap(st == 401 and err["code"] == "invalid_api_key" and st2 == 200 and st3 == 401,
            "keys: missing and wrong keys get 401, a valid one passes", repr((st, st2, st3)))
        tap(audit_rows()[-2]["key_id"] == kid, "the audit row names the key")
        try:
            with urllib.request.urlopen(url + "/v1/models", timeout=30) as r:
                mst = r.status
        except urllib.error.HTTPError as e:
            mst = e.code
        tap(mst == 401, "GET /v1/models needs the key too", mst)

        # rate limits: two requests per minute for this key
        cli("keys", "revoke", "wire-test")
        key = cli("keys", "create", "limited", "--rpm", "2").strip()
        got = []
        for _ in range(3):
            got.append(chat(url, "hi", key=key, max_tokens=2))
            sent += 1
        (s1, h1, _, _), (s2, h2, _, _), (s3, h3, _, e3) = got
        tap(s1 == 200 and s2 == 200 and s3 == 429 and e3["code"] == "rate_limit_exceeded"
            and h1["x-ratelimit-limit-requests"] == "2"
            and h1["x-ratelimit-remaining-requests"] == "1"
            and h2["x-ratelimit-remaining-requests"] == "0"
            and int(h3["Retry-After"]) >= 1,
            "429 with Retry-After and x-ratelimit-* headers",
            repr([(s, dict(h)) for s, h, _, _ in got]))
        try:
            import openai
        except ImportError:
            openai = None
        if openai is not None:
            client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
            try:
                client.chat.completions.create(model="m", messages=[{"role": "user",
                                                                     "content": "hi"}])
                ok = False
            except openai.RateLimitError as e:
                ok = e.status_code == 429
            sent += 1
            tap(ok, "the openai SDK sees a RateLimitError")

        # the audit file is on a full device: answered anyway, failure reported
        cli("config", "set", "ratelimit.client_rpm", "0")
        key = cli("keys", "create", "disk").strip()
        if os.path.exists("/dev/full"):
            cli("config", "set", "audit.jsonl_path", "/dev/full")
            st, _, got, fin = chat(url, "hello", key=key, max_tokens=4)
            sent += 1
            log.flush()
            log.seek(0)
            tap(st == 200 and fin in ("stop", "length") and "audit record" in log.read(),
                "a failing audit write is reported and the answer still delivered")
            cli("config", "set", "audit.jsonl_path", "")

        rows = audit_rows()
        c = sqlite3.connect(DB)
        tap(len(rows) == sent and c.execute("PRAGMA integrity_check").fetchone()[0] == "ok",
            "one audit row per request; the database is intact", (len(rows), sent))
        tap(any(r["finish_reason"] == "content_filter" for r in rows)
            and any(r["finish_reason"] == "refused:rate_limit_exceeded" for r in rows)
            and all(r["endpoint"] in ("/v1/chat/completions", "/v1/completions") for r in rows),
            "audit rows record the outcomes")
    finally:
        proc.terminate()
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = None
        log.seek(0)
        tap(rc == 0, "the server stops cleanly on SIGTERM", f"status {rc}\n{log.read()[-3000:]}")
        shutil.rmtree(TMP, ignore_errors=True)
    print(f"1..{len(RESULTS)}")
    return 0 if all(RESULTS) else 1


sys.exit(main())
