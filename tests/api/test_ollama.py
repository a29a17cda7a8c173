#!/usr/bin/env python3
"""The Ollama routes of baleen-server (/api/tags, /api/ps, /api/chat,
/api/generate, /api/embed, /api/version), driven by the official `ollama`
Python client; model details are checked against the `gguf` package's
reading of the same files, and answers against the OpenAI route.

Usage: test_ollama.py BALEEN_SERVER. Prints TAP.
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

RESULTS = []


def tap_ok(cond, name, diag=""):
    RESULTS.append(bool(cond))
    print(("ok" if cond else "not ok") + f" {len(RESULTS)} - {name}", flush=True)
    if not cond and diag:
        for line in str(diag).splitlines():
            print("# " + line, flush=True)


def raw(url, method="GET", body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def gguf_facts(path):
    """Architecture, parameter count and dominant 2-D weight type, read by
    the gguf package."""
    import gguf
    r = gguf.GGUFReader(path)
    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
    n_params, by_type = 0, {}
    for t in r.tensors:
        n = 1
        for d in t.shape:
            n *= int(d)
        n_params += n
        if len([d for d in t.shape if True]) >= 2:
            by_type[t.tensor_type.name] = by_type.get(t.tensor_type.name, 0) + int(t.n_bytes)
    return arch, n_params, max(by_type, key=by_type.get)


def main():
    try:
        import ollama
    except ImportError:
        print("1..0 # SKIP the ollama Python package is not installed "
              "(tools/setup-deps.sh installs it)")
        return 0
    exe = sys.argv[1]
    golden = os.environ.get("BALEEN_GOLDEN_DIR",
                            os.path.join(os.path.dirname(__file__), "..", "golden"))
    models = os.path.join(golden, "models")
    with tempfile.TemporaryDirectory() as tmp:
        files = {"deepseek-r1-distill-qwen-7b-q4_k_m": os.path.join(models, "qwen2", "model.gguf"),
                 "llama-q8_0": os.path.join(models, "llama", "model-q8_0.gguf")}
        os.symlink(files["deepseek-r1-distill-qwen-7b-q4_k_m"],
                   os.path.join(tmp, "DeepSeek-R1-Distill-Qwen-7B-Q4_K_M.gguf"))
        os.makedirs(os.path.join(tmp, "llama"))
        os.symlink(files["llama-q8_0"], os.path.join(tmp, "llama", "model-q8_0.gguf"))
        log = tempfile.TemporaryFile(mode="w+")
        proc = subprocess.Popen([exe, "--models-dir", tmp, "--port", "0", "--threads", "1"],
                                stdout=subprocess.PIPE, stderr=log, text=True)
        line = proc.stdout.readline()
        url = re.search(r"listening on (http://\S+?)/?$", line.strip()).group(1)
        try:
            run(ollama, url, files)
        except Exception:
            import traceback
            tap_ok(False, "no exception", traceback.format_exc())
        finally:
            proc.terminate()
            tap_ok(proc.wait(timeout=60) == 0, "exit 0 on SIGTERM")
    try:
        tool_checks(ollama, exe, files)
    except Exception:
        import traceback
        tap_ok(False, "tools: no exception", traceback.format_exc())
    print(f"1..{len(RESULTS)}")
    return 0 if all(RESULTS) else 1


def start_server(exe, *args):
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen([exe, *args, "--port", "0", "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=log, text=True)
    line = proc.stdout.readline()
    m = re.search(r"listening on (http://\S+?)/?$", line.strip())
    if m is None:
        proc.kill()
        log.seek(0)
        raise RuntimeError(f"server did not start: {line!r} {log.read()}")
    return proc, m.group(1), re.search(r"model (\S+);", line).group(1)


def post(url, path, body):
    """POST with a long timeout (the sanitizer builds read long prompts slowly)."""
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=900) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def hf_render(template, messages, tools):
    """The prompt jinja2 renders from @template, set up as transformers does."""
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = lambda x, indent=None: json.dumps(x, ensure_ascii=False,
                                                              indent=indent)
    return env.from_string(template).render(messages=messages, tools=tools,
                                            add_generation_prompt=True)


TOOLS = [{"type": "function", "function": {
    "name": "mcp__weather__get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]


def ollama_conversation():
    """Earlier turns that called the tool, in Ollama's shapes (arguments as
    objects, tool results with tool_name), and the same in OpenAI's and in
    the form templates get (for jinja2)."""
    ol, oa, ref = [], [], []
    for _ in range(3):
        q = {"role": "user", "content": "What is the weather in Paris?"}
        ol += [q, {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "mcp__weather__get_weather", "arguments": {"city": "Paris"}}}]},
               {"role": "tool", "content": "18 degrees", "tool_name": "mcp__weather__get_weather"}]
        oa += [q, {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {
                "name": "mcp__weather__get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
               {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees"}]
        ref += [q, {"role": "assistant", "content": None, "tool_calls": [
            {"type": "function", "function": {"name": "mcp__weather__get_weather",
                                              "arguments": {"city": "Paris"}}}]},
                {"role": "tool", "content": "18 degrees"}]
    q = {"role": "user", "content": "What is the weather in Paris?"}
    return ol + [q], oa + [q], ref + [q]


def tool_checks(ollama, exe, files):
    """/api/chat with tools: the tools and earlier calls reach the template
    (the prompt equals jinja2's rendering of the model's own template), and a
    call the model writes comes back as message.tool_calls with arguments as
    an object, equal to what Python reads from the model's raw output."""
    try:
        import jinja2  # noqa: F401
    except ImportError:
        tap_ok(True, "Ollama tools # SKIP jinja2 is not installed")
        return
    ol_conv, oa_conv, ref_conv = ollama_conversation()

    # the answer: SmolLM2 given Qwen2.5's template (a copy written by the gguf
    # package's own gguf-new-metadata), which leads it to call the tool again
    default = os.environ.get("BALEEN_DEFAULT_MODEL")
    shared = os.environ.get("BALEEN_SHARED_DATA", os.path.join(
        os.path.dirname(__file__), "..", "..", "..", "shared", "data"))
    qt_path = os.path.join(shared, "templates", "Qwen-Qwen2.5-7B-Instruct.jinja")
    if not default or not os.path.exists(default) or not os.path.exists(qt_path):
        tap_ok(True, "Ollama tool calls # SKIP no default model or shared Qwen template")
        return
    with tempfile.TemporaryDirectory() as tmp:
        copy = os.path.join(tmp, "smollm2-qwen-template.gguf")
        p = subprocess.run([sys.executable, "-m", "gguf.scripts.gguf_new_metadata", default, copy,
                            "--chat-template-file", qt_path, "--force"],
                           capture_output=True, text=True, timeout=300)
        if p.returncode != 0:
            tap_ok(False, "gguf-new-metadata copies the model", p.stderr[-2000:])
            return
        qt = open(qt_path, encoding="utf-8").read()
        proc, url, model = start_server(exe, "--model", copy)
        try:
            client = ollama.Client(host=url)
            st, c = post(url, "/v1/completions", {"prompt": hf_render(qt, ref_conv, TOOLS),
                                                  "max_tokens": 60, "temperature": 0})
            st2, oa = post(url, "/v1/chat/completions", {"messages": oa_conv, "tools": TOOLS,
                                                         "max_tokens": 1, "temperature": 0})
            r = client.chat(model=model, messages=ol_conv, tools=TOOLS,
                            options={"num_predict": 1, "temperature": 0})
            tap_ok(r.prompt_eval_count == c["usage"]["prompt_tokens"]
                   == oa["usage"]["prompt_tokens"],
                   "/api/chat tools and Ollama-shaped tool history: the prompt is jinja2's",
                   f"{r.prompt_eval_count} {c['usage']} {oa['usage']}")
            m = re.search(r"<tool_call>\s*(.*?)\s*</tool_call>", c["choices"][0]["text"], re.S)
            want = json.loads(m.group(1)) if m else None
            opts = {"num_predict": 60, "temperature": 0}
            r = client.chat(model=model, messages=ol_conv, tools=TOOLS, options=opts)
            calls = r.message.tool_calls or []
            tap_ok(want is not None and len(calls) == 1
                   and calls[0].function.name == want["name"]
                   and dict(calls[0].function.arguments) == want["arguments"]
                   and "tool_call" not in (r.message.content or "") and r.done,
                   "/api/chat: the model's <tool_call> comes back as message.tool_calls "
                   "(arguments an object)", f"{r}\nraw {c['choices'][0]['text']!r}")
            parts = list(client.chat(model=model, messages=ol_conv, tools=TOOLS, options=opts,
                                     stream=True))
            scalls = [tc for p_ in parts for tc in (p_.message.tool_calls or [])]
            text = "".join(p_.message.content or "" for p_ in parts)
            tap_ok(len(scalls) == 1 and scalls[0].function.name == want["name"]
                   and dict(scalls[0].function.arguments) == want["arguments"]
                   and "tool_call" not in text and parts[-1].done
                   and not any(p_.done for p_ in parts[:-1]),
                   "/api/chat streamed: the call in one line before the last, no marker in "
                   "the content", parts)
        finally:
            proc.terminate()
            tap_ok(proc.wait(timeout=60) == 0, "tools server exits 0 on SIGTERM")


def run(ollama, url, files):
    client = ollama.Client(host=url)
    st, _, body = raw(url + "/api/version")
    tap_ok(st == 200 and isinstance(json.loads(body).get("version"), str), "/api/version")

    listed = client.list()
    names = sorted(m.model for m in listed.models)
    tap_ok(names == sorted(files), "/api/tags lists the installed models", names)
    try:
        import gguf  # noqa: F401
        for m in listed.models:
            arch, n_params, qtype = gguf_facts(files[m.model])
            d = m.details
            tap_ok(d.family == arch and d.families == [arch] and d.format == "gguf"
                   and d.quantization_level == qtype
                   and m.size == os.stat(files[m.model]).st_size,
                   f"/api/tags details of {m.model} match the gguf package",
                   (d, arch, qtype, n_params))
    except ImportError:
        tap_ok(True, "# SKIP gguf package not installed")
    tap_ok(client.ps().models == [], "/api/ps: nothing loaded yet")

    model = "deepseek-r1-distill-qwen-7b-q4_k_m"
    msgs = [{"role": "user", "content": "hi"}]
    opts = {"num_predict": 8, "temperature": 0}
    plain = client.chat(model=model, messages=msgs, options=opts, stream=False)
    tap_ok(plain.done and plain.message.role == "assistant" and plain.eval_count > 0
           and plain.prompt_eval_count > 0 and plain.done_reason in ("stop", "length"),
           "/api/chat stream:false: one object, done, counts", plain)
    tap_ok([m.model for m in client.ps().models] == [model], "/api/ps shows the loaded model")

    parts = list(client.chat(model=model, messages=msgs, options=opts, stream=True))
    text = "".join(p.message.content for p in parts)
    tap_ok(all(not p.done for p in parts[:-1]) and parts[-1].done
           and parts[-1].eval_count == plain.eval_count,
           "/api/chat streams NDJSON lines, the last with done:true and counts",
           [p.done for p in parts])
    tap_ok(text == plain.message.content, "streamed text = the plain answer (greedy)",
           (text, plain.message.content))

    # the same conversation through the OpenAI route gives the same answer
    st, _, body = raw(url + "/v1/chat/completions", "POST", json.dumps(
        {"model": model, "messages": msgs, "max_tokens": 8, "temperature": 0}).encode(),
        {"Content-Type": "application/json"})
    oa = json.loads(body)
    tap_ok(st == 200 and oa["choices"][0]["message"]["content"] == plain.message.content
           and oa["usage"]["completion_tokens"] == plain.eval_count,
           "Ollama and OpenAI routes agree", (oa, plain))

    # raw NDJSON on the wire: content type and created_at strings
    st, hdr, body = raw(url + "/api/chat", "POST", json.dumps(
        {"model": model, "messages": msgs, "options": opts}).encode())
    lines = [json.loads(x) for x in body.decode().splitlines() if x.strip()]
    tap_ok(st == 200 and hdr["Content-Type"].startswith("application/x-ndjson")
           and all(isinstance(x["created_at"], str) for x in lines) and lines[-1]["done"],
           "NDJSON by default, created_at strings", (hdr["Content-Type"], lines[:2]))

    gen = client.generate(model=model, prompt="hello", options={"num_predict": 4},
                          stream=False)
    tap_ok(gen.done and isinstance(gen.response, str) and gen.eval_count > 0,
           "/api/generate stream:false", gen)
    gparts = list(client.generate(model=model, prompt="hello",
                                  options={"num_predict": 4, "temperature": 0}, stream=True))
    tap_ok(gparts[-1].done and all(isinstance(p.response, str) for p in gparts),
           "/api/generate streams", len(gparts))
    load = client.generate(model="llama-q8_0", prompt="")
    tap_ok(load.done and load.done_reason == "load", "empty prompt only loads the model", load)
    tap_ok([m.model for m in client.ps().models] == ["llama-q8_0"], "and that switched models")

    try:
        client.embed(model=model, input="some text")
        tap_ok(False, "/api/embed: clear error")
    except ollama.ResponseError as e:
        tap_ok(e.status_code == 400 and "embedding" in e.error, "/api/embed: clear error",
               e.error)
    try:
        client.chat(model="nope", messages=msgs)
        tap_ok(False, "unknown model: 404")
    except ollama.ResponseError as e:
        tap_ok(e.status_code == 404 and "not found" in e.error, "unknown model: 404", e.error)
    try:
        client.chat(model=model, messages=[{"role": "user", "content": "what is this?",
                                            "images": ["iVBORw0KGgo="]}])
        tap_ok(False, "images for a text model: 400")
    except ollama.ResponseError as e:
        tap_ok(e.status_code == 400 and "images" in e.error, "images for a text model: 400",
               e.error)
    st, _, body = raw(url + "/api/chat", "POST", b"{not json")
    tap_ok(st == 400 and "error" in json.loads(body), "bad JSON: 400 in Ollama's shape", body)


if __name__ == "__main__":
    sys.exit(main())
