#!/usr/bin/env python3
"""baleen-server --kv-bits: the CPU engine's 8-bit KV pool through the wire.

A greedy completion on the tiny qwen2 model must give the same text with
--kv-bits 8 as with the default F32 pool (tests/test-kv8.c shows this model's
greedy tokens equal over 32 steps on every golden prompt), the start-up log
must say which rows the pool holds, a deepseek2 model must fall back to F32
rows with a note, and a bad value must be refused. Responses are parsed with
Python's json module.

Usage: test_kv8.py BALEEN_SERVER. Uses the tiny models in BALEEN_GOLDEN_DIR.
Prints TAP.
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.request

RESULTS = []


def tap_ok(cond, name, diag=""):
    RESULTS.append(bool(cond))
    print(("ok" if cond else "not ok") + f" {len(RESULTS)} - {name}", flush=True)
    if not cond and diag:
        for line in str(diag).splitlines():
            print("# " + line, flush=True)


def start(exe, *args):
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen([exe, "--port", "0", "--threads", "1", *args],
                            stdout=subprocess.PIPE, stderr=log, text=True)
    line = proc.stdout.readline()
    m = re.search(r"listening on (http://\S+?)/?$", line.strip())
    if not m:
        proc.kill()
        proc.wait(timeout=30)
        log.seek(0)
        raise RuntimeError(f"server did not start: {line!r} {log.read()}")
    return proc, m.group(1), log


def stop(proc, log):
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.seek(0)
    return log.read()


def complete(url, prompt):
    body = json.dumps({"model": "m", "prompt": prompt, "max_tokens": 16,
                       "temperature": 0}).encode()
    req = urllib.request.Request(url + "/v1/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def main():
    exe = sys.argv[1]
    models = os.path.join(os.environ["BALEEN_GOLDEN_DIR"], "models")
    qwen = os.path.join(models, "qwen2", "model.gguf")
    ds = os.path.join(models, "deepseek2-v2lite", "model.gguf")
    prompts = ["hello world", "The quick brown fox"]

    bad = subprocess.run([exe, "--model", qwen, "--kv-bits", "9"], capture_output=True,
                         text=True, timeout=60)
    tap_ok(bad.returncode == 2 and "--kv-bits" in bad.stderr, "--kv-bits 9 is refused",
           bad.stderr)

    texts = {}
    for bits in ("32", "8"):
        proc, url, log = start(exe, "--model", qwen, "--kv-bits", bits, "--kv-mem", "64")
        try:
            texts[bits] = [complete(url, p)["choices"][0]["text"] for p in prompts]
        finally:
            err = stop(proc, log)
        rows = "8-bit rows" in err
        tap_ok(rows == (bits == "8"), f"--kv-bits {bits}: the start-up log names the rows", err)
    tap_ok(texts["8"] == texts["32"], "8-bit pool: the same greedy text as the F32 pool",
           f"{texts['8']!r} vs {texts['32']!r}")
    tap_ok(all(len(t) > 0 for t in texts["8"]), "8-bit pool: non-empty completions")

    proc, url, log = start(exe, "--model", ds, "--kv-bits", "8", "--kv-mem", "64")
    try:
        out = complete(url, prompts[0])
    finally:
        err = stop(proc, log)
    tap_ok(out["usage"]["completion_tokens"] > 0 and "F32 rows" in err
           and "8-bit rows" not in err, "deepseek2 with --kv-bits 8 keeps F32 rows, says so",
           err)
    print(f"1..{len(RESULTS)}")
    return 0 if all(RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
