#!/usr/bin/env python3
"""The WebSocket endpoint /v1/ws of baleen-server (envelope in
app/core/websocket.h and docs/SERVER.md), driven by the `websockets`
package: streaming frames with the client's request_id, several requests in
flight on one socket, cancel by request_id, envelope errors, auth, and the
same greedy text as the OpenAI route.

Usage: test_ws.py BALEEN_SERVER. Prints TAP.
"""
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

RESULTS = []


def tap_ok(cond, name, diag=""):
    RESULTS.append(bool(cond))
    print(("ok" if cond else "not ok") + f" {len(RESULTS)} - {name}", flush=True)
    if not cond and diag:
        for line in str(diag).splitlines():
            print("# " + line, flush=True)


def envelope(rid, prompt=None, action=None, **params):
    h = {"version": "1.0", "request_id": rid, "timestamp": int(time.time() * 1000)}
    if action:
        h["action"] = action
    msg = {"header": h}
    if prompt is not None:
        msg["payload"] = {"prompt": prompt, "parameters": params}
    return json.dumps(msg)


async def collect(ws, rids, timeout=120):
    """Reads frames until every id in @rids has a done or error frame.
    Returns {rid: [frames]} and the frames without a request id."""
    got = {r: [] for r in rids}
    loose = []
    open_ids = set(rids)
    while open_ids:
        f = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        rid = f["header"]["request_id"]
        if rid not in got:
            loose.append(f)
            continue
        got[rid].append(f)
        if f["header"]["event"] in ("done", "error"):
            open_ids.discard(rid)
    return got, loose


def text_of(frames):
    return "".join(f["payload"].get("text", "") for f in frames
                   if f["header"]["event"] == "delta")


async def run(url, model):
    import websockets
    ws_url = url.replace("http://", "ws://") + "/v1/ws"
    async with websockets.connect(ws_url, max_size=None) as ws:
        # one request
        await ws.send(envelope("a", "hi", max_tokens=8, temperature=0))
        got, _ = await collect(ws, ["a"])
        fr = got["a"]
        ev = [f["header"]["event"] for f in fr]
        tap_ok(ev[0] == "start" and ev[-1] == "done" and set(ev[1:-1]) <= {"delta"},
               "frames: start, deltas, done", ev)
        tap_ok(all(f["header"]["request_id"] == "a" and f["header"]["version"] == "1.0"
                   and isinstance(f["header"]["timestamp"], int) for f in fr),
               "every frame carries the request_id, version and a timestamp")
        done = fr[-1]["payload"]
        tap_ok(done["finish_reason"] in ("stop", "length")
               and done["usage"]["total_tokens"] == done["usage"]["prompt_tokens"]
               + done["usage"]["completion_tokens"], "done carries finish_reason and usage",
               done)
        one_text = text_of(fr)

        # the OpenAI route gives the same greedy text for the same prompt
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}],
                           "max_tokens": 8, "temperature": 0}).encode()
        req = urllib.request.Request(url + "/v1/chat/completions", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            oa = json.loads(r.read())
        tap_ok(oa["choices"][0]["message"]["content"] == one_text
               and oa["usage"]["completion_tokens"] == done["usage"]["completion_tokens"],
               "same text as /v1/chat/completions", (oa, one_text))

        # several in flight on one socket, answered in any order
        for rid in ("x1", "x2", "x3"):
            await ws.send(envelope(rid, "hi", max_tokens=8, temperature=0))
        got, loose = await collect(ws, ["x1", "x2", "x3"])
        tap_ok(all(g[-1]["header"]["event"] == "done" for g in got.values()) and not loose,
               "three requests in flight on one socket all finish",
               {k: [f["header"]["event"] for f in v] for k, v in got.items()})
        tap_ok(all(text_of(g) == one_text for g in got.values()),
               "each stream keeps its own text (greedy: all equal)")

        # errors
        await ws.send(envelope("nope", action="cancel"))
        got, _ = await collect(ws, ["nope"])
        tap_ok(got["nope"][-1]["payload"]["code"] == "unknown_request", "cancel of an unknown id")
        await ws.send("{not json")
        f = json.loads(await asyncio.wait_for(ws.recv(), 30))
        tap_ok(f["header"]["event"] == "error" and f["payload"]["code"] == "invalid_json"
               and f["header"]["request_id"] is None, "bad JSON: error frame, socket stays open")
        await ws.send(json.dumps({"header": {"version": "2.0", "request_id": "v"},
                                  "payload": {"prompt": "hi"}}))
        got, _ = await collect(ws, ["v"])
        tap_ok(got["v"][-1]["payload"]["code"] == "unsupported_version", "version checked")
        await ws.send(json.dumps({"header": {"version": "1.0"}, "payload": {"prompt": "hi"}}))
        f = json.loads(await asyncio.wait_for(ws.recv(), 30))
        tap_ok(f["payload"]["code"] == "invalid_envelope", "request_id required")
        await ws.send(json.dumps({"header": {"version": "1.0", "request_id": "m"},
                                  "payload": {"prompt": "hi", "model": "../../etc/passwd"}}))
        got, _ = await collect(ws, ["m"])
        tap_ok(got["m"][-1]["payload"]["code"] == "invalid_value", "path-like model name refused")
        await ws.send(envelope("t", "hi", temperature="hot"))
        got, _ = await collect(ws, ["t"])
        tap_ok(got["t"][-1]["payload"]["code"] == "invalid_value", "bad parameter type")

        # a socket closed with a request in flight: the server stays healthy
    async with websockets.connect(ws_url) as ws2:
        await ws2.send(envelope("gone", "tell me everything", max_tokens=3000))
        await asyncio.wait_for(ws2.recv(), 60)
    async with websockets.connect(ws_url) as ws3:
        await ws3.send(envelope("after", "hi", max_tokens=4, temperature=0))
        got, _ = await collect(ws3, ["after"])
        tap_ok(got["after"][-1]["header"]["event"] == "done",
               "closing a socket cancels its request; the next socket is served")


async def run_cancel(url, model):
    """Cancel needs a generation that outlasts a round trip: the real model."""
    import websockets
    ws_url = url.replace("http://", "ws://") + "/v1/ws"
    async with websockets.connect(ws_url, max_size=None) as ws:
        await ws.send(envelope("long", "Tell me a long story.", max_tokens=3000))
        await ws.send(envelope("short", "hi", max_tokens=4, temperature=0))
        # wait for the long one to produce text, then cancel it
        while True:
            f = json.loads(await asyncio.wait_for(ws.recv(), 120))
            if f["header"]["request_id"] == "long" and f["header"]["event"] == "delta":
                break
        await ws.send(envelope("long", action="cancel"))
        got, loose = await collect(ws, ["long", "short"])
        lp = got["long"][-1]["payload"]
        tap_ok(got["long"][-1]["header"]["event"] == "done" and lp["finish_reason"] == "cancelled"
               and lp["usage"]["completion_tokens"] < 3000,
               "cancel by request_id ends that request", lp)
        tap_ok(got["short"][-1]["header"]["event"] == "done"
               and got["short"][-1]["payload"]["finish_reason"] != "cancelled",
               "the other request is not affected", got["short"][-1])

        await ws.send(envelope("d", "Tell me a long story.", max_tokens=3000))
        await ws.send(envelope("d", "hi", max_tokens=4))
        f = json.loads(await asyncio.wait_for(ws.recv(), 60))
        while f["header"]["event"] != "error":
            f = json.loads(await asyncio.wait_for(ws.recv(), 60))
        tap_ok(f["payload"]["code"] == "duplicate_request_id", "duplicate id in flight refused")
        await ws.send(envelope("d", action="cancel"))
        got, _ = await collect(ws, ["d"])
        tap_ok(got["d"][-1]["payload"].get("finish_reason") == "cancelled",
               "and the first one is still cancellable")


async def run_auth(url):
    import websockets
    ws_url = url.replace("http://", "ws://") + "/v1/ws"
    try:
        async with websockets.connect(ws_url) as ws:
            await ws.recv()
        tap_ok(False, "no key: upgrade refused with 401")
    except websockets.exceptions.InvalidStatus as e:
        tap_ok(e.response.status_code == 401, "no key: upgrade refused with 401")
    async with websockets.connect(ws_url, additional_headers={"Authorization": "Bearer s3"}) as ws:
        await ws.send(envelope("k", "hi", max_tokens=2))
        got, _ = await collect(ws, ["k"])
        tap_ok(got["k"][-1]["header"]["event"] == "done", "Bearer key accepted")
    async with websockets.connect(ws_url + "?api_key=s3") as ws:
        await ws.send(envelope("q", "hi", max_tokens=2))
        got, _ = await collect(ws, ["q"])
        tap_ok(got["q"][-1]["header"]["event"] == "done", "?api_key= accepted (browsers)")


def start(exe, tiny, *extra):
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen([exe, "--model", tiny, "--port", "0", "--threads", "1", *extra],
                            stdout=subprocess.PIPE, stderr=log, text=True)
    line = proc.stdout.readline()
    m = re.search(r"model (\S+); listening on (http://\S+?)/?$", line.strip())
    return proc, m.group(2), m.group(1)


def main():
    try:
        import websockets  # noqa: F401
    except ImportError:
        print("1..0 # SKIP the websockets Python package is not installed "
              "(tools/setup-deps.sh installs it)")
        return 0
    exe = sys.argv[1]
    golden = os.environ.get("BALEEN_GOLDEN_DIR",
                            os.path.join(os.path.dirname(__file__), "..", "golden"))
    tiny = os.path.join(golden, "models", "llama", "model-q8_0.gguf")
    real = os.environ.get("BALEEN_DEFAULT_MODEL")
    runs = [(run, tiny, ()), (run_auth, tiny, ("--api-key", "s3"))]
    if real and os.path.exists(real):
        runs.append((run_cancel, real, ()))
    else:
        tap_ok(True, "# SKIP cancel test: BALEEN_DEFAULT_MODEL not set")
    for fn, path, extra in runs:
        proc, url, model = start(exe, path, *extra)
        try:
            asyncio.run(fn(url) if fn is run_auth else fn(url, model))
        except Exception:
            import traceback
            tap_ok(False, f"{fn.__name__} raised", traceback.format_exc())
        finally:
            proc.terminate()
            tap_ok(proc.wait(timeout=60) == 0, "exit 0 on SIGTERM")
    print(f"1..{len(RESULTS)}")
    return 0 if all(RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
