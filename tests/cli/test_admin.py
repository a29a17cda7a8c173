#!/usr/bin/env python3
"""baleen-cli's administration commands (config, keys, rules, audit) end to
end on a real database file, checked with Python's sqlite3, json, csv, hmac
and re modules. Prints TAP."""
import csv, hashlib, hmac, json, os, re, shutil, sqlite3, subprocess, sys, tempfile

CLI = sys.argv[1]
TMP = tempfile.mkdtemp(prefix="baleen-admin-")
DB = os.path.join(TMP, "admin.db")
results = []
NASTY = "x'); DROP TABLE rules; -- \"q\", 中文"


def cli(*args, stdin=b"", rc=0):
    p = subprocess.run([CLI, *args], input=stdin, capture_output=True, timeout=60)
    if rc is not None and p.returncode != rc:
        raise AssertionError(f"{args} exited {p.returncode}, wanted {rc}: {p.stderr.decode()}")
    return p


def case(name):
    def deco(fn):
        try:
            fn()
            results.append((True, name, ""))
        except Exception as e:  # noqa: BLE001 - every failure becomes a TAP line
            results.append((False, name, repr(e)))
        return fn
    return deco


def db():
    return sqlite3.connect(DB)


@case("config: set/get/list/reset, validated, stored as sqlite3 reads it")
def _():
    cli("config", "--db", DB, "set", "ratelimit.key_rpm", "120")
    cli("config", "--db", DB, "set", "audit.jsonl_path", NASTY)
    assert cli("config", "--db", DB, "get", "ratelimit.key_rpm").stdout == b"120\n"
    assert cli("config", "--db", DB, "get", "audit.jsonl_path").stdout.decode() == NASTY + "\n"
    listing = json.loads(cli("config", "--db", DB, "list", "--json").stdout)
    assert listing["ratelimit.key_rpm"] == "120" and listing["privacy.content"] == "hashed"
    stored = dict(db().execute("SELECT key, value FROM settings"))
    assert stored == {"ratelimit.key_rpm": "120", "audit.jsonl_path": NASTY}, stored
    # refused values change nothing
    assert b"one of" in cli("config", "--db", DB, "set", "privacy.content", "all", rc=1).stderr
    cli("config", "--db", DB, "set", "audit.retention_days", "x", rc=1)
    cli("config", "--db", DB, "get", "no.such.key", rc=1)
    cli("config", "--db", DB, "frobnicate", rc=2)
    cli("config", "--db", DB, "reset", "ratelimit.key_rpm")
    assert cli("config", "--db", DB, "get", "ratelimit.key_rpm").stdout == b"0\n"
    assert db().execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@case("keys: create shows the key once, stores a salted HMAC, list, revoke")
def _():
    key = cli("keys", "--db", DB, "create", NASTY, "--rpm", "30", "--tpm", "9000").stdout
    key = key.decode().strip()
    assert re.fullmatch(r"bln-[A-Za-z0-9_-]{43}", key), key
    rows = db().execute("SELECT id, name, salt, hash, rpm, tpm, revoked FROM api_keys").fetchall()
    assert len(rows) == 1
    kid, name, salt, h, rpm, tpm, revoked = rows[0]
    assert name == NASTY and (rpm, tpm) == (30, 9000) and revoked is None
    assert hmac.compare_digest(h, hmac.new(salt.encode(), key.encode(), hashlib.sha256).hexdigest())
    raw = b"".join(open(DB + s, "rb").read() for s in ("", "-wal") if os.path.exists(DB + s))
    assert key.encode() not in raw
    lines = [json.loads(l) for l in cli("keys", "--db", DB, "list", "--json").stdout.splitlines()]
    assert [(k["id"], k["name"], k["revoked"]) for k in lines] == [(kid, NASTY, 0)]
    assert key.startswith(lines[0]["prefix"])
    cli("keys", "--db", DB, "create", NASTY, rc=1)  # names are unique
    cli("keys", "--db", DB, "revoke", str(kid))
    cli("keys", "--db", DB, "revoke", str(kid), rc=1)
    assert db().execute("SELECT revoked FROM api_keys").fetchone()[0] > 0
    assert b"revoked" in cli("keys", "--db", DB, "list").stdout


@case("rules: add/list/test/remove; test agrees with Python's re and str.find")
def _():
    word = cli("rules", "--db", DB, "add", "坏词", "--action", "mask").stdout.strip()
    rx = cli("rules", "--db", DB, "add", "--regex", r"\d{3}-\d{4}", "--scope", "input",
             "--label", NASTY).stdout.strip()
    ci = cli("rules", "--db", DB, "add", "Forbidden", "--nocase", "--nowidth").stdout.strip()
    cli("rules", "--db", DB, "add", "--regex", "(unclosed", rc=1)
    cli("rules", "--db", DB, "add", "x", "--action", "explode", rc=2)
    listed = [json.loads(l) for l in cli("rules", "--db", DB, "list", "--json").stdout.splitlines()]
    assert [r["id"] for r in listed] == [int(word), int(rx), int(ci)]
    assert listed[1]["label"] == NASTY and listed[2]["nocase"] and listed[2]["nowidth"]
    text = "电话 555-1234，有坏词，还有 ＦＯＲＢＩＤＤＥＮ 和 forbidden。"
    out = json.loads(cli("rules", "--db", DB, "test", stdin=text.encode()).stdout)
    b = lambda i: len(text[:i].encode())
    want = [(b(m.start()), b(m.end()), int(rx)) for m in re.finditer(r"\d{3}-\d{4}", text)]
    p = text.find("坏词")
    want.append((b(p), b(p + 2), int(word)))
    folded = text.lower().replace("ｆｏｒｂｉｄｄｅｎ", "forbidden")
    for m in re.finditer("forbidden", folded):
        want.append((b(m.start()), b(m.end()), int(ci)))
    got = [(m["start"], m["end"], m["rule"]) for m in out["matches"]]
    assert sorted(got) == sorted(want), (got, want)
    assert out["verdict"] == "block"
    assert out["masked"] == text.replace("坏词", "**")
    # output scope: the input-only regex does not apply
    out = json.loads(cli("rules", "--db", DB, "test", "--scope", "output", "555-1234").stdout)
    assert out["verdict"] == "pass" and out["matches"] == []
    cli("rules", "--db", DB, "remove", ci)
    cli("rules", "--db", DB, "remove", ci, rc=1)
    assert db().execute("SELECT count(*) FROM rules").fetchone()[0] == 2


def add_audit_rows(n):
    c = db()
    for i in range(n):
        c.execute("INSERT INTO audit (time, request_id, client, key_id, model, endpoint, "
                  "prompt_tokens, completion_tokens, cached_tokens, ttft_ms, total_ms, "
                  "finish_reason, verdicts, privacy, prompt, completion) "
                  "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                  (1_700_000_000_000_000 + i * 1_000_000, f"req-{i}", NASTY, None, NASTY,
                   "/v1/chat/completions", i, 2 * i, 0, 1.5, 10.25, "stop", "[]", "full",
                   f"prompt {i}\n{NASTY}", None))
    c.commit()


@case("audit: tail and export (JSON lines, CSV) match the rows sqlite3 reads")
def _():
    add_audit_rows(30)
    tail = [json.loads(l) for l in cli("audit", "--db", DB, "tail", "-n", "5", "--json").stdout.splitlines()]
    assert [t["request_id"] for t in tail] == [f"req-{i}" for i in range(25, 30)]
    assert all(t["client"] == NASTY for t in tail)
    assert b"/v1/chat/completions" in cli("audit", "--db", DB, "tail").stdout
    rows = db().execute("SELECT request_id, client, prompt, completion_tokens FROM audit ORDER BY id").fetchall()
    js = [json.loads(l) for l in cli("audit", "--db", DB, "export").stdout.splitlines()]
    assert [(j["request_id"], j["client"], j["prompt"], j["completion_tokens"]) for j in js] == rows
    out = os.path.join(TMP, "a.csv")
    cli("audit", "--db", DB, "export", "--format", "csv", "-o", out)
    cs = list(csv.DictReader(open(out, encoding="utf-8", newline="")))
    assert [(c["request_id"], c["client"], c["prompt"], int(c["completion_tokens"])) for c in cs] == rows
    since = cli("audit", "--db", DB, "export", "--since", "2023-11-14T22:13:40Z").stdout.splitlines()
    assert len(since) == 10, len(since)  # rows 20..29 are at or after that second
    cli("audit", "--db", DB, "export", "--since", "yesterday", rc=2)


@case("audit: export to a full device fails with a message; the database stays sound")
def _():
    if not os.path.exists("/dev/full"):
        return
    p = cli("audit", "--db", DB, "export", "-o", "/dev/full", rc=1)
    assert b"No space" in p.stderr, p.stderr
    c = db()
    assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert c.execute("SELECT count(*) FROM audit").fetchone()[0] == 30


@case("audit prune applies max_rows; errors: bad database file, usage")
def _():
    cli("config", "--db", DB, "set", "audit.retention_days", "0")  # the rows are from 2023
    cli("config", "--db", DB, "set", "audit.max_rows", "12")
    assert cli("audit", "--db", DB, "prune").stdout.startswith(b"18 ")
    assert db().execute("SELECT min(request_id), count(*) FROM audit").fetchone() == ("req-18", 12)
    junk = os.path.join(TMP, "junk.db")
    open(junk, "wb").write(b"not a database" * 1000)
    p = cli("config", "--db", junk, "list", rc=1)
    assert b"damaged" in p.stderr, p.stderr
    cli("audit", "--db", DB, rc=2)
    cli("keys", "--db", DB, "create", rc=2)


for i, (ok, name, err) in enumerate(results, 1):
    print(f"{'ok' if ok else 'not ok'} {i} {name}")
    if not ok:
        for line in err.splitlines():
            print(f"# {line}")
print(f"1..{len(results)}")
shutil.rmtree(TMP, ignore_errors=True)
sys.exit(0 if all(r[0] for r in results) else 1)
