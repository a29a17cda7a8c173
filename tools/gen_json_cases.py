#!/usr/bin/env python3
"""Writes tests/golden/json/cases.jsonl: JSON texts labelled valid or not by
Python's json module (strict: no NaN/Infinity), for the constrained-decoding
recogniser (app/core/json-constraint.c). Each line: {"text": str, "valid": bool,
"object": bool (valid and a top-level object)}. Seeded; rerun to regenerate."""
import json
import os
import random

rng = random.Random(4)
ALPHA = list('{}[]:,"\\ \n-+.0123456789eEtrufalsn') + ["é", "字", "😀", "u", "x", "/", "b"]


def strict(s):
    def bad(c):
        raise ValueError(c)
    return json.loads(s, parse_constant=bad)


def rand_value(d=0):
    k = rng.randrange(8 if d < 4 else 5)
    if k == 0:
        return rng.choice([0, -1, 12, 3.5, -0.25, 1e10, 2.5e-3, 10**20])
    if k == 1:
        return rng.choice(["", "a", "tab\t", "q\"uote", "back\\slash", "é字😀", "\u0001", "/"])
    if k == 2:
        return rng.choice([True, False, None])
    if k in (3, 4):
        return rng.choice([0, "s", None])
    if k in (5, 6):
        return {rng.choice(["a", "b", "key", "名"]) + str(i): rand_value(d + 1)
                for i in range(rng.randrange(4))}
    return [rand_value(d + 1) for _ in range(rng.randrange(4))]


def dumps(v):
    opts = rng.choice([dict(), dict(indent=1), dict(separators=(",", ":")),
                       dict(ensure_ascii=False)])
    return json.dumps(v, **opts)


cases = set()
fixed = ['{}', '[]', '{"a":1}', '{"a":[1,2,{"b":null}]}', '0', '-0', '1.5e+3', '"x"', 'true',
         '01', '1.', '.5', '-', '1e', '{"a":1,}', '[1,]', '{a:1}', "{'a':1}", '{"a" 1}',
         '[1 2]', 'NaN', 'Infinity', '{"a":"\\u00e9"}', '{"a":"\\x"}', '{"a":"\\u12"}',
         '"\t"', 'tru', 'nul', '{"a":tru}', '[}', '{]', '{"a":1}}', '[[]]]', ' {"a" : 1 } ',
         '{"a":-}', '{"a":1e5}', '{"a":1E-5}', '{"a":2.}', '{"a":--1}', '"\\/"']
cases.update(fixed)
while len(cases) < 600:
    s = dumps(rand_value())
    cases.add(s)
    # a mutation: insert, delete or replace one character
    t = list(s)
    i = rng.randrange(len(t) + 1)
    op = rng.randrange(3)
    if op == 0:
        t.insert(i, rng.choice(ALPHA))
    elif op == 1 and i < len(t):
        del t[i]
    elif i < len(t):
        t[i] = rng.choice(ALPHA)
    cases.add("".join(t))

out = os.path.join(os.path.dirname(__file__), "..", "tests", "golden", "json", "cases.jsonl")
with open(out, "w", encoding="utf-8") as f:
    for s in sorted(cases):
        if "  " * 5 in s:
            continue   # the recogniser bounds whitespace runs
        try:
            v = strict(s)
            ok = True
        except (ValueError, RecursionError):
            ok, v = False, None
        f.write(json.dumps({"text": s, "valid": ok, "object": ok and isinstance(v, dict)},
                           ensure_ascii=False) + "\n")
