#!/usr/bin/env python3
"""baleen-server --db on the Ollama routes (/api/chat, /api/generate) and the
WebSocket route (/v1/ws), and the moderation endpoint on all three APIs.

References: the official `ollama` Python client and the `websockets` package
as the clients; the server's own greedy answer with no rules as what the
output filter must cut or mask; Python's sqlite3 for the audit rows; and a
moderation service written here with Python's http.server, shaped like
OpenAI's /v1/moderations, that flags answers holding a given word, answers
HTTP 500, or answers too late.

Usage: test_safety_routes.py BALEEN_SERVER BALEEN_CLI. Prints TAP."""
import asyncio, json, os, re, shutil, sqlite3, subprocess, sys, tempfile, threading, time
import urllib.error, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SERVER, CLI = sys.argv[1], sys.argv[2]
GOLDEN = os.environ.get("BALEEN_GOLDEN_DIR", os.path.join(os.path.dirname(__file__), "..", "golden"))
MODEL = os.path.join(GOLDEN, "models", "llama", "model.gguf")
TMP = tempfile.mkdtemp(prefix="baleen-safety-routes-")
DB = os.path.join(TMP, "baleen.db")
PROMPT = "Tell me a story about a whale."
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


def audit_rows():
    c = sqlite3.connect(DB)
    c.row_factory = sqlite3.Row
    rows = [dict(r) for r in c.execute("SELECT * FROM audit ORDER BY id")]
    c.close()
    return rows


# ---- the moderation service -------------------------------------------------

class Moderation:
    """What the test's moderation service does: 'flag' flags inputs holding
    self.word, 'fail' answers 500, 'slow' answers after self.delay seconds."""
    mode = "flag"
    word = "\0"
    delay = 3.0
    inputs = []


class ModerationHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        Moderation.inputs.append(body.get("input"))
        if Moderation.mode == "fail":
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if Moderation.mode == "slow":
            time.sleep(Moderation.delay)
        flagged = Moderation.word in body.get("input", "")
        out = json.dumps({"id": "modr-test", "model": body.get("model", ""),
                          "results": [{"flagged": flagged,
                                       "categories": {"violence": flagged},
                                       "category_scores": {"violence": 0.9 if flagged else 0.0}}]})
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out.encode())
        except OSError:
            pass   # the server gave up waiting


# ---- clients ----------------------------------------------------------------

def ollama_chat(ollama, url, text, stream, key=None, num_predict=24, system=None):
    """(content, done_reason) through the official client; raises ResponseError."""
    headers = {"Authorization": "Bearer " + key} if key else None
    client = ollama.Client(host=url, headers=headers)
    msgs = ([{"role": "system", "content": system}] if system else []) + \
        [{"role": "user", "content": text}]
    opts = {"temperature": 0, "num_predict": num_predict}
    if not stream:
        r = client.chat(model="m", messages=msgs, options=opts, stream=False)
        return r.message.content, r.done_reason
    content, reason = "", None
    for part in client.chat(model="m", messages=msgs, options=opts, stream=True):
        content += part.message.content or ""
        if part.done:
            reason = part.done_reason
    return content, reason


def ollama_error(fn):
    """Runs fn; returns (status_code, error text) of the ResponseError, or None."""
    import ollama
    try:
        fn()
    except ollama.ResponseError as e:
        return e.status_code, e.error
    return None


def post_raw(url, path, body, key=None):
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = "Bearer " + key
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), headers=headers,
                                 method="POST")
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def openai_chat(url, text, stream):
    """(content, finish_reason) of /v1/chat/completions."""
    st, _, raw = post_raw(url, "/v1/chat/completions",
                          {"model": "m", "messages": [{"role": "user", "content": text}],
                           "temperature": 0, "max_tokens": 24, "stream": stream})
    if st != 200:
        return None, st
    if not stream:
        c = json.loads(raw)["choices"][0]
        return c["message"]["content"] or "", c["finish_reason"]
    content, finish = "", None
    for line in raw.decode().split("\n"):
        if line.startswith("data: ") and line != "data: [DONE]":
            for c in json.loads(line[6:]).get("choices", []):
                content += c["delta"].get("content") or ""
                finish = c.get("finish_reason") or finish
    return content, finish


def ws_envelope(rid, prompt=None, messages=None):
    payload = {"parameters": {"max_tokens": 24, "temperature": 0}}
    if messages is not None:
        payload["messages"] = messages
    else:
        payload["prompt"] = prompt
    return json.dumps({"header": {"version": "1.0", "request_id": rid,
                                  "timestamp": int(time.time() * 1000)},
                       "payload": payload})


async def ws_run(url, requests, key=None):
    """Sends each (rid, prompt-or-messages) in turn on one socket, waiting for
    each to end. Returns {rid: (text, last frame)}."""
    import websockets
    ws_url = url.replace("http://", "ws://") + "/v1/ws" + (f"?api_key={key}" if key else "")
    out = {}
    async with websockets.connect(ws_url, max_size=None) as ws:
        for rid, what in requests:
            if isinstance(what, list):
                await ws.send(ws_envelope(rid, messages=what))
            else:
                await ws.send(ws_envelope(rid, prompt=what))
            text = ""
            while True:
                f = json.loads(await asyncio.wait_for(ws.recv(), 120))
                if f["header"]["request_id"] != rid:
                    continue
                ev = f["header"]["event"]
                if ev == "delta":
                    text += f["payload"].get("text", "")
                elif ev in ("done", "error"):
                    out[rid] = (text, f)
                    break
    return out


def ws(url, requests, key=None):
    return asyncio.run(ws_run(url, requests, key))


# ---- the test ---------------------------------------------------------------

def run(url, ollama, log):
    # references: greedy answers with no rules
    ref, ref_reason = ollama_chat(ollama, url, PROMPT, True)
    ref_plain, _ = ollama_chat(ollama, url, PROMPT, False)
    wref = ws(url, [("ref", PROMPT)])["ref"]
    oref, oref_finish = openai_chat(url, PROMPT, True)
    tap(len(ref) >= 8 and ref == ref_plain and ref_reason in ("stop", "length"),
        "ollama: greedy reference answers, streamed and not", repr((ref, ref_plain)))
    tap(wref[0] == ref and wref[1]["payload"]["finish_reason"] == ref_reason,
        "websocket: the same greedy answer", repr(wref))
    tap(oref == ref, "openai: the same greedy answer", repr(oref))

    # output rule (block): cut before the phrase, done_reason content_filter
    i = len(ref) // 2
    phrase = ref[i:i + 5]
    cut = ref.find(phrase)
    rid = cli("rules", "add", phrase, "--scope", "output").strip()
    got = ollama_chat(ollama, url, PROMPT, True)
    tap(got == (ref[:cut], "content_filter"),
        "ollama /api/chat stream stops before a blocked output phrase", repr((phrase, got)))
    got = ollama_chat(ollama, url, PROMPT, False)
    tap(got == (ref[:cut], "content_filter"), "ollama non-streamed answer is cut the same way",
        repr(got))
    gen = ollama.Client(host=url).generate(model="m", prompt=PROMPT, stream=False,
                                           options={"temperature": 0, "num_predict": 24})
    tap(phrase not in gen.response and gen.done_reason in ("content_filter", "stop", "length"),
        "ollama /api/generate never sends the blocked phrase", repr(gen.response))
    w = ws(url, [("cut", PROMPT)])["cut"]
    tap(w[0] == ref[:cut] and w[1]["payload"]["finish_reason"] == "content_filter",
        "websocket stops before a blocked output phrase", repr(w))

    cli("config", "set", "moderation.output_action", "mask")
    want = ref.replace(phrase, "*" * len(phrase))
    got = ollama_chat(ollama, url, PROMPT, True)
    tap(got == (want, ref_reason), "ollama: mask mode masks the phrase", repr((got, want)))
    w = ws(url, [("mask", PROMPT)])["mask"]
    tap(w[0] == want and w[1]["payload"]["finish_reason"] == ref_reason,
        "websocket: mask mode masks the phrase", repr(w))
    cli("config", "set", "moderation.output_action", "stop")
    cli("rules", "remove", rid)

    # output rule (mask): masked, the answer goes on
    j = len(ref) // 4
    word = ref[j:j + 4]
    rid = cli("rules", "add", word, "--scope", "output", "--action", "mask").strip()
    want = ref.replace(word, "*" * len(word))
    got = ollama_chat(ollama, url, PROMPT, False)
    w = ws(url, [("mword", PROMPT)])["mword"]
    tap(got == (want, ref_reason) and w[0] == want,
        "a masked output word is masked on both routes", repr((word, got, w[0])))
    cli("rules", "remove", rid)

    # input rules: block on every message part, mask before the model sees it
    cli("rules", "add", "forbidden topic", "--scope", "input", "--nocase", "--label", "demo rule")
    e1 = ollama_error(lambda: ollama_chat(ollama, url, "Let us discuss the Forbidden Topic.",
                                          False))
    e2 = ollama_error(lambda: ollama_chat(ollama, url, "hello", True,
                                          system="Never leave the FORBIDDEN topic."))
    e3 = ollama_error(lambda: ollama.Client(host=url).generate(
        model="m", prompt="the forbidden topic", stream=False))
    st, _, raw = post_raw(url, "/api/chat", {"model": "m", "stream": False, "messages": [
        {"role": "user", "content": "the forbidden topic"}]})
    tap(e1 is not None and e1[0] == 400 and "demo rule" in e1[1] and e2 is not None
        and e2[0] == 400 and e3 is not None and e3[0] == 400,
        "ollama: a blocked input (user, system, generate prompt) gets 400",
        repr((e1, e2, e3)))
    tap(st == 400 and list(json.loads(raw)) == ["error"]
        and isinstance(json.loads(raw)["error"], str),
        "ollama errors keep Ollama's shape {\"error\": \"...\"}", raw)
    w = ws(url, [("blk", "the forbidden topic"),
                 ("blk2", [{"role": "system", "content": "ok"},
                           {"role": "user", "content": "a FORBIDDEN TOPIC"}])])
    tap(all(w[k][1]["header"]["event"] == "error"
            and w[k][1]["header"]["request_id"] == k
            and w[k][1]["payload"]["code"] == "content_filter"
            and w[k][1]["payload"]["status"] == 400 for k in ("blk", "blk2")),
        "websocket: a blocked input gets an error frame with the request_id", repr(w))

    # content as an array of parts: every text part is checked
    parts = [{"type": "text", "text": "a harmless start"},
             {"type": "text", "text": "then the forbidden TOPIC"}]
    st_o, _, raw_o = post_raw(url, "/v1/chat/completions", {"model": "m", "max_tokens": 4,
                                                            "messages": [{"role": "user",
                                                                          "content": parts}]})
    st_a, _, raw_a = post_raw(url, "/api/chat", {"model": "m", "stream": False, "messages": [
        {"role": "user", "content": parts}]})
    w = ws(url, [("parts", [{"role": "user", "content": parts}])])["parts"]
    tap(st_o == 400 and json.loads(raw_o)["error"]["code"] == "content_filter"
        and st_a == 400 and w[1]["header"]["event"] == "error"
        and w[1]["payload"]["code"] == "content_filter",
        "text parts of a content array are checked on all three APIs",
        repr((st_o, raw_o, st_a, raw_a, w)))

    cli("rules", "add", "hunter2", "--action", "mask", "--scope", "input")
    post_raw(url, "/v1/chat/completions", {"model": "m", "max_tokens": 2, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "pw hunter2 in a part"}]}]})
    row = audit_rows()[-1]
    tap("hunter2" not in row["prompt"] and "pw ******* in a part" in row["prompt"],
        "a masked word in a text part is masked before the model", repr(row["prompt"]))
    ollama_chat(ollama, url, "my password is hunter2, keep it", False)
    row_o = audit_rows()[-1]
    ws(url, [("pw", "my password is hunter2, keep it")])
    row_w = audit_rows()[-1]
    tap(all("hunter2" not in r["prompt"] and "*******" in r["prompt"] for r in (row_o, row_w))
        and row_o["endpoint"] == "/api/chat" and row_w["endpoint"] == "/v1/ws"
        and row_w["request_id"] == "pw",
        "a masked input reaches the model (and the audit log) masked, on both routes",
        repr((row_o, row_w)))

    # audit rows: endpoints and outcomes
    rows = audit_rows()
    eps = {r["endpoint"] for r in rows}
    tap({"/api/chat", "/api/generate", "/v1/ws"} <= eps
        and any(r["endpoint"] == "/api/chat" and r["finish_reason"] == "content_filter"
                for r in rows)
        and any(r["endpoint"] == "/v1/ws" and r["finish_reason"] == "content_filter"
                for r in rows)
        and any(r["endpoint"] == "/api/chat" and r["finish_reason"] == "refused:content_filter"
                for r in rows)
        and any(r["endpoint"] == "/v1/ws" and r["finish_reason"] == "refused:content_filter"
                for r in rows),
        "audit rows with the right endpoint and outcome", repr(sorted(eps)))

    # rate limits: two requests a minute for one key
    key = cli("keys", "create", "ollama-limited", "--rpm", "2").strip()
    kid = json.loads(cli("keys", "list", "--json").splitlines()[-1])["id"]
    ollama_chat(ollama, url, "hi", False, key=key, num_predict=2)
    st2, h2, _ = post_raw(url, "/api/chat", {"model": "m", "stream": False, "messages": [
        {"role": "user", "content": "hi"}], "options": {"num_predict": 2}}, key=key)
    e = ollama_error(lambda: ollama_chat(ollama, url, "hi", False, key=key, num_predict=2))
    st3, h3, raw3 = post_raw(url, "/api/generate", {"model": "m", "prompt": "hi"}, key=key)
    tap(st2 == 200 and h2["x-ratelimit-remaining-requests"] == "0" and e is not None
        and e[0] == 429 and st3 == 429 and int(h3["Retry-After"]) >= 1
        and "error" in json.loads(raw3),
        "ollama: 429 with Retry-After once a key's limit is used",
        repr((st2, dict(h2), e, st3, dict(h3))))
    tap(audit_rows()[-1]["key_id"] == kid
        and audit_rows()[-1]["finish_reason"] == "refused:rate_limit_exceeded",
        "the refusal is audited with the key", repr(audit_rows()[-1]))
    wkey = cli("keys", "create", "ws-limited", "--rpm", "2").strip()
    # the upgrade takes one request, the first generation the second
    w = ws(url, [("r1", "hi"), ("r2", "hi")], key=wkey)
    tap(w["r1"][1]["header"]["event"] == "done" and w["r2"][1]["header"]["event"] == "error"
        and w["r2"][1]["payload"]["code"] == "rate_limit_exceeded"
        and w["r2"][1]["payload"]["status"] == 429
        and w["r2"][1]["payload"]["retry_after"] >= 1,
        "websocket: a rate-limited request gets an error frame", repr(w))
    bad = ollama_error(lambda: ollama_chat(ollama, url, "hi", False, key="bln-wrong"))
    tags = ollama_error(lambda: ollama.Client(
        host=url, headers={"Authorization": "Bearer bln-wrong"}).list())
    tap(bad is not None and bad[0] == 401 and tags is not None and tags[0] == 401,
        "ollama: a wrong key gets 401, on /api/tags too", repr((bad, tags)))

    # ---- the moderation endpoint, on all three APIs ----
    srv = ThreadingHTTPServer(("127.0.0.1", 0), ModerationHandler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    murl = f"http://127.0.0.1:{srv.server_address[1]}/v1/moderations"
    try:
        cli("config", "set", "moderation.endpoint", murl)
        cli("config", "set", "moderation.model", "guard")
        Moderation.mode, Moderation.word = "flag", "\0"
        Moderation.inputs.clear()
        a = (ollama_chat(ollama, url, PROMPT, True), ollama_chat(ollama, url, PROMPT, False),
             ws(url, [("m1", PROMPT)])["m1"], openai_chat(url, PROMPT, True),
             openai_chat(url, PROMPT, False))
        tap(a[0] == (ref, ref_reason) and a[1] == (ref, ref_reason) and a[2][0] == ref
            and a[3] == (ref, oref_finish) and a[4] == (ref, oref_finish)
            and Moderation.inputs == [ref] * 5,
            "moderation passes: every API delivers the whole answer, checked once each",
            repr((a, Moderation.inputs)))
        Moderation.word = ref.split()[1] if len(ref.split()) > 1 else ref[:3]
        a = (ollama_chat(ollama, url, PROMPT, True), ollama_chat(ollama, url, PROMPT, False),
             ws(url, [("m2", PROMPT)])["m2"], openai_chat(url, PROMPT, True),
             openai_chat(url, PROMPT, False))
        tap(a[0] == ("", "content_filter") and a[1] == ("", "content_filter")
            and a[2][0] == "" and a[2][1]["payload"]["finish_reason"] == "content_filter"
            and a[3] == ("", "content_filter") and a[4] == ("", "content_filter"),
            "a flagged answer is withheld on every API: content_filter", repr(a))
        last = audit_rows()[-1]
        v = json.loads(last["verdicts"])
        tap(v.get("moderation", {}).get("flagged") is True
            and v["moderation"].get("categories") == ["violence"] and last["completion"] == ref,
            "the audit row records the flag (and the withheld answer)", repr(last))

        Moderation.mode = "fail"
        a = (ollama_chat(ollama, url, PROMPT, False), ws(url, [("m3", PROMPT)])["m3"],
             openai_chat(url, PROMPT, False))
        v = json.loads(audit_rows()[-1]["verdicts"])
        tap(a[0] == (ref, ref_reason) and a[1][0] == ref and a[2] == (ref, oref_finish)
            and v["moderation"]["policy"] == "fail-open" and "500" in v["moderation"]["error"],
            "HTTP 500 with moderation.failure=open: the answer stands, the failure is audited",
            repr((a, v)))
        log.flush()
        log.seek(0)
        tap("moderation service" in log.read(), "the failure is logged")
        cli("config", "set", "moderation.failure", "closed")
        a = (ollama_chat(ollama, url, PROMPT, False), ws(url, [("m4", PROMPT)])["m4"],
             openai_chat(url, PROMPT, True))
        v = json.loads(audit_rows()[-1]["verdicts"])
        tap(a[0] == ("", "content_filter") and a[1][1]["payload"]["finish_reason"]
            == "content_filter" and a[1][0] == "" and a[2] == ("", "content_filter")
            and v["moderation"]["policy"] == "fail-closed" and v["moderation"]["allowed"] is False,
            "HTTP 500 with moderation.failure=closed: content_filter on every API", repr((a, v)))

        Moderation.mode, Moderation.delay = "slow", 4.0
        cli("config", "set", "moderation.timeout_s", "1")
        t0 = time.monotonic()
        a = ollama_chat(ollama, url, PROMPT, False)
        took = time.monotonic() - t0
        tap(a == ("", "content_filter") and took < Moderation.delay,
            "a moderation service that times out, fail closed: content_filter in time",
            repr((a, took)))
        cli("config", "set", "moderation.failure", "open")
        t0 = time.monotonic()
        w = ws(url, [("m5", PROMPT)])["m5"]
        took = time.monotonic() - t0
        tap(w[0] == ref and took < Moderation.delay,
            "... and fail open: the answer stands", repr((w, took)))
        cli("config", "set", "moderation.endpoint", "")
    finally:
        srv.shutdown()

    # retention by age, applied with each record: a row 40 days old (the
    # default keeps 30) goes with the next request
    c = sqlite3.connect(DB)
    c.execute("INSERT INTO audit (time, request_id, endpoint) VALUES (?, 'ancient', '/old')",
              (int((time.time() - 40 * 86400) * 1e6),))
    c.commit()
    c.close()
    n_before = len(audit_rows())
    ollama_chat(ollama, url, "hi", False, num_predict=2)
    rows = audit_rows()
    tap(len(rows) == n_before and not any(r["request_id"] == "ancient" for r in rows),
        "audit.retention_days removes an old record with the next request", repr(len(rows)))

    # retention by count, applied with each record
    cli("config", "set", "audit.max_rows", "3")
    for k in range(4):
        ollama_chat(ollama, url, "hi", False, num_predict=2)
    rows = audit_rows()
    tap(len(rows) == 3 and rows == sorted(rows, key=lambda r: r["id"])
        and rows[-1]["endpoint"] == "/api/chat",
        "audit.max_rows keeps the newest records, from the next record on", repr(len(rows)))


def main():
    try:
        import ollama  # noqa: F401
        import websockets  # noqa: F401
    except ImportError as e:
        print(f"1..0 # SKIP {e.name} is not installed")
        return 0
    if not os.path.exists(MODEL):
        print("1..0 # SKIP tiny model missing (tools/gen_tiny_models.py)")
        return 0
    import ollama
    cli("config", "set", "privacy.content", "full")   # creates the database
    log = open(os.path.join(TMP, "server.log"), "w+")
    proc = subprocess.Popen([SERVER, "--model", MODEL, "--port", "0", "--threads", "1",
                             "--db", DB], stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"listening on (http://\S+?)/?$", line.strip())
        if not m:
            log.seek(0)
            print(f"Bail out! server did not start: {line!r} {log.read()}")
            return 1
        try:
            run(m.group(1), ollama, log)
        except Exception:
            import traceback
            tap(False, "no exception", traceback.format_exc())
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
