#!/usr/bin/env python3
"""Writes tests/golden/json/cases.jsonl: JSON texts labelled valid or not by
Python's json module (strict: no NaN/Infinity), for the constrained-decoding
recogniser (app/core/json-constraint.c). Each line: {"text": str, "valid": bool,
"object": bool (valid and a top-level object)}.

Also writes tests/golden/json/schema-cases.jsonl for response_format
json_schema: one line per JSON Schema of the subset the recogniser supports,
{"schema": {...}, "docs": [{"text": str, "valid": bool}]}, the documents labelled
by the jsonschema package (Draft 2020-12). Documents are written compactly with
canonical escapes (json.dumps, ensure_ascii=False), integers never as 1.0, since
the recogniser accepts only those forms. Seeded; rerun to regenerate."""
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


# ---------------------------------------------------------------------------
# JSON Schema cases

import jsonschema  # noqa: E402

srng = random.Random(5)

FIXED_SCHEMAS = [
    {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
     "required": ["name", "age"], "additionalProperties": False},
    {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"},
                                                "minItems": 1, "maxItems": 3}},
     "required": ["tags"]},
    {"type": "object", "properties": {"unit": {"enum": ["celsius", "fahrenheit"]},
                                      "v": {"type": "number"}, "ok": {"const": True}},
     "required": ["unit", "ok"], "additionalProperties": False},
    {"type": "object", "properties": {"x": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
                                      "y": {"type": ["string", "null"]}},
     "required": ["x", "y"], "additionalProperties": False},
    {"type": "object", "properties": {"a": {"type": "object", "properties": {
        "b": {"type": "array", "items": {"type": "object", "properties": {"c": {"type": "boolean"}},
                                          "required": ["c"], "additionalProperties": False}}},
        "required": ["b"], "additionalProperties": False}}, "required": ["a"]},
    {"type": "object", "additionalProperties": {"type": "integer"}},
    {"type": "object", "properties": {"k": {"type": "string"}}, "additionalProperties": True,
     "required": ["k", "extra"]},
    {"$defs": {"node": {"type": "object", "properties": {
        "value": {"type": "integer"},
        "children": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2}},
        "required": ["value"], "additionalProperties": False}},
     "$ref": "#/$defs/node"},
    {"type": "array", "items": {"enum": [1, 2, 3, "x", None]}, "minItems": 2},
    {"type": ["integer", "boolean"]},
    {"enum": [1, 12, 123]},
    {"type": "object", "title": "t", "description": "d", "properties": {
        "s": {"type": "string", "description": "x", "default": "a"},
        "o": {"anyOf": [{"type": "object", "properties": {"p": {"type": "number"}},
                         "required": ["p"], "additionalProperties": False},
                        {"type": "string"}, {"type": "null"}]}},
     "required": ["s", "o"], "additionalProperties": False},
    {"type": "object", "properties": {"名前": {"type": "string"}, "q\"k": {"type": "integer"}},
     "required": ["名前", "q\"k"], "additionalProperties": False},
]

KEYS = ["a", "b", "id", "name", "value", "items", "x1", "long_name", "é"]


def rand_schema(d=0):
    k = srng.randrange(9 if d < 3 else 6)
    if k == 0:
        return {"type": srng.choice(["string", "integer", "number", "boolean", "null"])}
    if k == 1:
        return {"type": srng.sample(["string", "integer", "boolean", "null", "array"],
                                    srng.randrange(1, 4))}
    if k == 2:
        return {"enum": srng.sample(["a", "bb", "", 0, 7, 42, -3, 2.5, True, False, None],
                                    srng.randrange(1, 5))}
    if k == 3:
        return {"const": srng.choice(["on", 3, None, False])}
    if k == 4:
        return {"anyOf": [rand_schema_typed("string", d + 1), {"type": "null"}]}
    if k == 5:
        return {}
    if k in (6, 7):
        names = srng.sample(KEYS, srng.randrange(0, 5))
        s = {"type": "object", "properties": {n: rand_schema(d + 1) for n in names}}
        if names:
            s["required"] = srng.sample(names, srng.randrange(0, len(names) + 1))
        ap = srng.randrange(3)
        if ap == 0:
            s["additionalProperties"] = False
        elif ap == 1:
            s["additionalProperties"] = rand_schema(d + 2)
        return s
    s = {"type": "array", "items": rand_schema(d + 1)}
    if srng.randrange(2):
        s["minItems"] = srng.randrange(0, 3)
    if srng.randrange(2):
        s["maxItems"] = s.get("minItems", 0) + srng.randrange(0, 3)
    return s


def rand_schema_typed(t, d):
    if t == "string":
        return srng.choice([{"type": "string"}, {"enum": ["x", "y"]}])
    return {"type": t}


def rand_any(d=0):
    k = srng.randrange(8 if d < 3 else 5)
    if k == 0:
        return srng.choice([0, 1, -7, 12, 42, 7, 3])
    if k == 1:
        return srng.choice([2.5, -0.25, 1.75])
    if k == 2:
        return srng.choice(["", "a", "x", "y", "on", "bb", "é", "tab\t", "q\""])
    if k == 3:
        return srng.choice([True, False, None])
    if k == 4:
        return srng.choice(["celsius", "fahrenheit", 123, 1, None])
    if k in (5, 6):
        return {srng.choice(KEYS + ["extra", "k"]): rand_any(d + 1) for _ in range(srng.randrange(4))}
    return [rand_any(d + 1) for _ in range(srng.randrange(4))]


def resolve(schema, root):
    while isinstance(schema, dict) and "$ref" in schema:
        ref = schema["$ref"]
        schema = root if ref == "#" else root["$defs"][ref.split("/")[-1]]
    return schema


def instance(schema, root, d=0):
    """A value meant to be valid (not always: labels come from jsonschema)."""
    schema = resolve(schema, root)
    if schema is True or schema == {} or d > 6:
        return rand_any(3)
    if "enum" in schema:
        return srng.choice(schema["enum"])
    if "const" in schema:
        return schema["const"]
    if "anyOf" in schema:
        return instance(srng.choice(schema["anyOf"]), root, d + 1)
    t = schema.get("type", srng.choice(["object", "array", "string", "integer"]))
    if isinstance(t, list):
        t = srng.choice(t)
    if t == "object":
        o = {}
        props = schema.get("properties", {})
        for k, v in props.items():
            if k in schema.get("required", []) or srng.randrange(2):
                o[k] = instance(v, root, d + 1)
        for k in schema.get("required", []):
            if k not in o:
                o[k] = rand_any(3)
        ap = schema.get("additionalProperties", True)
        if ap is not False and srng.randrange(3) == 0:
            o["extra"] = instance(ap, root, d + 1) if isinstance(ap, dict) else rand_any(3)
        return o
    if t == "array":
        lo = schema.get("minItems", 0)
        hi = schema.get("maxItems", lo + 3)
        return [instance(schema.get("items", {}), root, d + 1)
                for _ in range(srng.randrange(lo, hi + 1))]
    if t == "string":
        return srng.choice(["", "a", "hello", "é字", "q\"uote", "nl\n"])
    if t == "integer":
        return srng.choice([0, -3, 17, 123])
    if t == "number":
        return srng.choice([0, 1.5, -2.25, 3])
    if t == "boolean":
        return srng.choice([True, False])
    return None


def mutate(v):
    if isinstance(v, dict) and v:
        k = srng.choice(list(v))
        op = srng.randrange(3)
        w = dict(v)
        if op == 0:
            del w[k]
        elif op == 1:
            w[k] = rand_any(2)
        else:
            w[srng.choice(KEYS + ["zz"])] = rand_any(2)
        return w
    if isinstance(v, list):
        w = list(v)
        if w and srng.randrange(2):
            w[srng.randrange(len(w))] = rand_any(2)
        elif srng.randrange(2):
            w.append(rand_any(2))
        elif w:
            w.pop()
        return w
    return rand_any(2)


def compact(v):
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))


schemas = list(FIXED_SCHEMAS)
while len(schemas) < 60:
    s = rand_schema()
    s.pop("$defs", None)
    schemas.append(s)

out = os.path.join(os.path.dirname(__file__), "..", "tests", "golden", "json", "schema-cases.jsonl")
with open(out, "w", encoding="utf-8") as f:
    for s in schemas:
        v = jsonschema.Draft202012Validator(s)
        docs = {}
        for _ in range(40):
            x = instance(s, s)
            docs[compact(x)] = None
            docs[compact(mutate(x))] = None
            docs[compact(rand_any())] = None
        rows = [{"text": t, "valid": v.is_valid(json.loads(t))} for t in sorted(docs)]
        f.write(json.dumps({"schema": s, "docs": rows}, ensure_ascii=False) + "\n")
