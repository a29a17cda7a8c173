#!/usr/bin/env python3
"""DeepSeek-V3-format tool calls on the wire, end to end.

Usage: test_toolcall_wire.py BALEEN_SERVER. Runs the real server on the CPU
with the scripted models of tests/golden/models/deepseek-v3-toolcall-{one,two}
(tools/gen_scripted_model.py): tiny models whose greedy output is, by
construction, the DeepSeek-V3 chat template's tool-call text for the calls in
their script.json (one call; two calls in one reply), checked there against a
numpy forward. References nobody here wrote: the official openai SDK (its
stream helper accumulates the deltas into the final message), Python's json
for the arguments, ../shared/CHERRY.md's delta shape on the raw SSE wire.
Prints TAP; skips when the openai package is missing.
"""
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile

RESULTS = []
HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(HERE, "..", "golden", "models")
MARKERS = ("tool\u2581call", "tool\u2581sep", "\uff5c", "```")
TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Current weather of a city",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string"}, "unit": {"type": "string"}}, "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "get_time", "description": "Current time in a time zone",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}},
                       "required": ["zone"]}}},
]
# no newline: the two-call model's phase key is the newline token (see its generator)
MESSAGES = [{"role": "user", "content": "What are the weather and the time in Paris?"}]


def tap_ok(cond, name, diag=""):
    RESULTS.append(bool(cond))
    print(("ok" if cond else "not ok") + f" {len(RESULTS)} - {name}", flush=True)
    if not cond and diag:
        for line in str(diag)[:4000].splitlines():
            print("# " + line, flush=True)


class Server:
    def __init__(self, exe, model):
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([exe, "--model", model, "--port", "0", "--threads", "1",
                                      "--device", "cpu", "--parallel", "2", "--ctx", "1024"],
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"listening on http://([^:/]+):(\d+)", line)
        if not m:
            self.proc.kill()
            raise RuntimeError(f"server did not start: {line!r} {self.stderr()}")
        self.host, self.port = m.group(1), int(m.group(2))
        self.url = f"http://{self.host}:{self.port}"
        self.model_id = re.search(r"model (\S+);", line).group(1)

    def stderr(self):
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def sse(self, body):
        """The data objects of a streamed chat completion, read off the raw wire."""
        c = http.client.HTTPConnection(self.host, self.port, timeout=120)
        c.request("POST", "/v1/chat/completions", json.dumps(body).encode(),
                  {"Content-Type": "application/json"})
        r = c.getresponse()
        text = r.read().decode("utf-8")
        c.close()
        events = [ln[6:] for ln in text.split("\n") if ln.startswith("data: ")]
        return r.status, events


def check_wire(srv, want, tag):
    """Raw SSE: the CHERRY.md tool_calls delta shape."""
    st, events = srv.sse({"model": srv.model_id, "messages": MESSAGES, "tools": TOOLS,
                          "tool_choice": "auto", "stream": True, "temperature": 0})
    tap_ok(st == 200 and events and events[-1] == "[DONE]", f"{tag}: stream ends with [DONE]",
           events)
    chunks = [json.loads(e) for e in events if e != "[DONE]"]
    first_seen, shape_ok, args, names, ids = set(), True, {}, {}, {}
    content, finish, diag = "", None, []
    for ch in chunks:
        for c in ch.get("choices", []):
            d = c.get("delta", {})
            if d.get("role") not in (None, "assistant"):
                shape_ok = False
                diag.append(f"role {d.get('role')!r}")
            content += d.get("content") or ""
            finish = c.get("finish_reason") or finish
            for tc in d.get("tool_calls") or []:
                i = tc.get("index")
                if not isinstance(i, int):
                    shape_ok = False
                    diag.append(f"no index: {tc}")
                    continue
                f = tc.get("function") or {}
                if i not in first_seen:
                    first_seen.add(i)
                    # first delta of a call: index, id, type, function.name
                    if not (isinstance(tc.get("id"), str) and tc["id"]
                            and tc.get("type") == "function"
                            and isinstance(f.get("name"), str) and f["name"]):
                        shape_ok = False
                        diag.append(f"first delta of call {i}: {tc}")
                    names[i], ids[i] = f.get("name"), tc.get("id")
                elif "name" in f or "id" in tc and tc["id"] != ids[i]:
                    shape_ok = False
                    diag.append(f"later delta of call {i} renames it: {tc}")
                a = f.get("arguments")
                if a is not None and not isinstance(a, str):
                    shape_ok = False
                    diag.append(f"arguments not a string fragment: {tc}")
                args[i] = args.get(i, "") + (a or "")
    tap_ok(shape_ok, f"{tag}: tool_calls deltas in the CHERRY.md shape", "\n".join(diag))
    tap_ok(sorted(first_seen) == list(range(len(want))),
           f"{tag}: call indexes 0..{len(want) - 1}", sorted(first_seen))
    tap_ok([names.get(i) for i in range(len(want))] == [w["name"] for w in want],
           f"{tag}: raw wire names", names)
    try:
        got = [json.loads(args.get(i, "")) for i in range(len(want))]
    except ValueError as e:
        got = e
    tap_ok(got == [json.loads(w["arguments"]) for w in want],
           f"{tag}: raw wire argument fragments join to the script's JSON", args)
    tap_ok(len(set(ids.values())) == len(want), f"{tag}: distinct call ids", ids)
    tap_ok(finish == "tool_calls", f"{tag}: finish_reason tool_calls (stream)", finish)
    tap_ok(not any(m in content for m in MARKERS) and content.strip() == "",
           f"{tag}: no marker text in streamed content", repr(content))


def check_sdk(client, srv, want, tag):
    """The openai SDK: its stream helper's accumulated message, and the
    non-streamed reply, hold the same calls."""
    wargs = [json.loads(w["arguments"]) for w in want]
    with client.chat.completions.stream(model=srv.model_id, messages=MESSAGES, tools=TOOLS,
                                        temperature=0) as st:
        for _ in st:
            pass
        final = st.get_final_completion()
    ch = final.choices[0]
    calls = ch.message.tool_calls or []
    tap_ok([c.function.name for c in calls] == [w["name"] for w in want],
           f"{tag}: SDK stream accumulates the names", calls)
    tap_ok([json.loads(c.function.arguments) for c in calls] == wargs,
           f"{tag}: SDK stream accumulates the arguments", calls)
    tap_ok(all(c.type == "function" and c.id for c in calls), f"{tag}: SDK stream ids and types",
           calls)
    tap_ok(ch.finish_reason == "tool_calls", f"{tag}: SDK stream finish_reason",
           ch.finish_reason)
    tap_ok(not any(m in (ch.message.content or "") for m in MARKERS),
           f"{tag}: SDK stream content holds no markers", repr(ch.message.content))

    r = client.chat.completions.create(model=srv.model_id, messages=MESSAGES, tools=TOOLS,
                                       temperature=0)
    c0 = r.choices[0]
    calls2 = c0.message.tool_calls or []
    tap_ok([c.function.name for c in calls2] == [w["name"] for w in want]
           and [json.loads(c.function.arguments) for c in calls2] == wargs
           and all(isinstance(c.function.arguments, str) for c in calls2),
           f"{tag}: non-streamed tool_calls equal the script", calls2)
    tap_ok(c0.finish_reason == "tool_calls", f"{tag}: non-streamed finish_reason",
           c0.finish_reason)
    tap_ok(not any(m in (c0.message.content or "") for m in MARKERS)
           and (c0.message.content or "").strip() == "",
           f"{tag}: non-streamed content holds no markers", repr(c0.message.content))
    tap_ok(len({c.id for c in calls2}) == len(want) and all(c.type == "function" for c in calls2),
           f"{tag}: non-streamed ids distinct, type function", calls2)


def main():
    try:
        import openai
    except ImportError:
        print("1..0 # SKIP the openai Python package is not installed", flush=True)
        return 0
    exe = sys.argv[1]
    for name, tag in (("deepseek-v3-toolcall-one", "one call"),
                      ("deepseek-v3-toolcall-two", "two calls")):
        d = os.path.join(MODELS, name)
        with open(os.path.join(d, "script.json"), encoding="utf-8") as f:
            script = json.load(f)
        want = script["calls"]
        srv = Server(exe, os.path.join(d, "model.gguf"))
        try:
            client = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0,
                                   timeout=120)
            # without tools nothing is parsed: the content is the model's own
            # greedy text, which must be the script (the server's forward agrees
            # with the generator's numpy one)
            r = client.chat.completions.create(model=srv.model_id, messages=MESSAGES,
                                               temperature=0)
            tap_ok(r.choices[0].message.content == script["text"]
                   and r.choices[0].finish_reason == "stop",
                   f"{tag}: without tools the reply is the script's text",
                   repr(r.choices[0].message.content))
            check_wire(srv, want, tag)
            check_sdk(client, srv, want, tag)
        finally:
            srv.stop()
    print(f"1..{len(RESULTS)}", flush=True)
    return 0 if all(RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
