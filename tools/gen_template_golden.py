#!/usr/bin/env python3
"""Generate the chat-template goldens with the reference implementation, python jinja2.

The environment is configured the way Hugging Face transformers configures it for
apply_chat_template(): an ImmutableSandboxedEnvironment with trim_blocks and
lstrip_blocks, the loopcontrols extension, a `tojson` filter that calls
json.dumps(ensure_ascii=False, indent=..., separators=..., sort_keys=...), and the
globals raise_exception(msg) and strftime_now(fmt). The template variables are
messages, tools (None when absent), documents (None), add_generation_prompt,
bos_token and eos_token. Messages are passed as given (a JSON null stays None).

Writes into tests/golden/templates/:
  jinja_cases.jsonl  {"name", "template", "vars", "rendered"} or "error": true
  chat_cases.jsonl   {"name", "template", "messages", "tools", "add_generation_prompt",
                      "bos_token", "eos_token", "rendered"} or "error": true
  <template>.jinja   the chat templates, copied from the shared reference data

Usage: python3 tools/gen_template_golden.py [--shared /work/shared/data]
Needs: pip install jinja2 (3.1.x)
"""
import argparse
import json
import os
import sys
from datetime import datetime

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "golden", "templates")


def make_env():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent,
                          separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


ENV = make_env()


def render(template, variables):
    try:
        return {"rendered": ENV.from_string(template).render(**variables)}
    except Exception as exc:  # any jinja2 or Python error: the C side must fail too
        return {"error": True, "error_type": type(exc).__name__}


# Focused language cases: (name, template, vars)
UNIT = [
    # whitespace control, trim_blocks, lstrip_blocks
    ("text_only", "hello world", {}),
    ("trailing_newline_dropped", "a\n", {}),
    ("two_trailing_newlines", "a\n\n", {}),
    ("crlf_normalised", "a\r\nb\rc", {}),
    ("trim_blocks", "{% if true %}\nyes\n{% endif %}\nafter", {}),
    ("lstrip_blocks", "  {% if true %}\n  x\n  {% endif %}\ny", {}),
    ("lstrip_not_for_vars", "  {{ 'v' }}\n", {}),
    ("lstrip_plus_disables", "  {%+ if true %}x{% endif %}", {}),
    ("trim_plus_disables", "{% if true +%}\nx{% endif %}", {}),
    ("minus_left", "a   \n  {%- if true %}b{% endif %}", {}),
    ("minus_right", "{% if true -%}   \n  b{% endif %}", {}),
    ("var_minus_both", "x  \n {{- 'y' -}} \n z", {}),
    ("comment_trim", "a\n{# comment #}\nb", {}),
    ("comment_lstrip", "a\n   {# c #}\nb", {}),
    ("comment_minus", "a   {#- c -#}   b", {}),
    ("lstrip_after_var_same_line", "{{ 'x' }}  {% if true %}y{% endif %}", {}),
    ("lstrip_text_before_on_line", "ab  {% if true %}y{% endif %}", {}),
    ("trim_only_one_newline", "{% if true %}\n\nx{% endif %}", {}),
    ("raw_block", "{% raw %}{{ not parsed }}{% endraw %}", {}),
    ("unicode_ws_lstrip", "\u3000{% if true %}x{% endif %}", {}),
    ("tab_lstrip", "\t\t{% if true %}x{% endif %}\n", {}),
    # literals and printing
    ("print_types", "{{ 1 }} {{ 1.5 }} {{ true }} {{ none }} {{ 'a' }} {{ [1, 'b', none] }}", {}),
    ("print_dict", "{{ {'a': 1, 'b': [true, 2.0]} }}", {}),
    ("print_tuple", "{{ (1, 2) }} {{ (1,) }}", {}),
    ("print_floats", "{{ 1e-5 }} {{ 1e16 }} {{ 0.1 + 0.2 }} {{ 3.0 }} {{ -0.0 }} {{ 123456789.123 }}", {}),
    ("string_escapes", "{{ 'a\\nb\\tc\\\\d\\'e' }}|{{ \"q\\\"x\" }}|{{ '\\u00e9\\x41' }}", {}),
    ("string_repr_quotes", "{{ [\"it's\", 'say \"hi\"', 'both \\' \"'] }}", {}),
    ("adjacent_strings", "{{ 'a' 'b' \"c\" }}", {}),
    ("undefined_prints_empty", "[{{ nothing }}]", {}),
    # operators
    ("arith", "{{ 1 + 2 * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 7 / 2 }} {{ 4 / 2 }}", {}),
    ("concat_tilde", "{{ 'a' ~ 1 ~ none ~ true }}", {}),
    ("string_plus", "{{ 'a' + 'b' }}", {}),
    ("string_times", "{{ 'ab' * 3 }}", {}),
    ("list_plus", "{{ [1] + [2, 3] }}", {}),
    ("compare", "{{ 1 < 2 }} {{ 'a' < 'b' }} {{ 2 >= 2 }} {{ 1 == 1.0 }} {{ 'a' != 'a' }} {{ true == 1 }}", {}),
    ("logic", "{{ true and 'x' }} {{ false or 'y' }} {{ not none }} {{ '' or 'z' }} {{ 0 and 1 }}", {}),
    ("in_ops", "{{ 'a' in 'cat' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 3 not in [1] }}", {}),
    ("cond_expr", "{{ 'yes' if x else 'no' }}|{{ 'only' if false }}|", {"x": 1}),
    ("unary_minus", "{{ -x }} {{ -(1 + 2) }} {{ +3 }}", {"x": 5}),
    ("precedence_not_is", "{{ not x is defined }} {{ not y is defined }}", {"x": 1}),
    ("int_plus_str_error", "{{ 1 + 'a' }}", {}),
    ("undefined_plus_error", "{{ missing + 'a' }}", {}),
    ("div_zero_error", "{{ 1 / 0 }}", {}),
    # subscripts and attributes
    ("subscript", "{{ m['role'] }} {{ m.role }} {{ l[0] }} {{ l[-1] }} {{ l[5] }}|", {"m": {"role": "user"}, "l": [1, 2, 3]}),
    ("slices", "{{ l[1:] }} {{ l[:2] }} {{ l[::-1] }} {{ l[::2] }} {{ s[::-1] }} {{ s[1:3] }} {{ s[-2:] }}", {"l": [1, 2, 3, 4], "s": "h\u00e9llo"}),
    ("string_index", "{{ s[0] }}{{ s[-1] }}", {"s": "\u4f60\u597d"}),
    ("missing_key_undefined", "[{{ m.nope }}]{{ m.nope is defined }}", {"m": {}}),
    ("attr_of_undefined_error", "{{ nope.attr }}", {}),
    ("attr_of_none", "[{{ n.attr }}]", {"n": None}),
    ("nested_missing_error", "{{ m.a.b }}", {"m": {}}),
    ("dict_int_key", "{{ d[1] }}", {"d": {"1": "s"}}),
    # tests
    ("tests_basic", "{{ x is defined }} {{ y is undefined }} {{ n is none }} {{ s is string }} {{ d is mapping }} {{ l is iterable }} {{ l is sequence }} {{ 1 is number }} {{ t is boolean }} {{ t is true }} {{ t is false }}", {"x": 1, "n": None, "s": "a", "d": {}, "l": [], "t": True}),
    ("tests_more", "{{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 'a' is in 'cat' }} {{ 1 is eq 1 }} {{ 'abc' is lower }} {{ 'A' is upper }} {{ none is sameas none }}", {}),
    ("is_not", "{{ x is not none }} {{ x is not string }}", {"x": 3}),
    ("string_is_iterable", "{{ 'abc' is iterable }} {{ {} is sequence }} {{ 1 is iterable }}", {}),
    # if / for
    ("if_elif_else", "{% for v in [1, 2, 3] %}{% if v == 1 %}one{% elif v == 2 %}two{% else %}many{% endif %},{% endfor %}", {}),
    ("for_loop_vars", "{% for x in 'abc' %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }};{% endfor %}", {}),
    ("for_else", "{% for x in [] %}x{% else %}empty{% endfor %}", {}),
    ("for_dict", "{% for k in d %}{{ k }}={{ d[k] }},{% endfor %}", {"d": {"b": 1, "a": 2}}),
    ("for_items_unpack", "{% for k, v in d.items() %}{{ k }}:{{ v }};{% endfor %}", {"d": {"x": 1, "y": [2]}}),
    ("for_filter_if", "{% for x in l if x > 1 %}{{ x }}{{ loop.length }},{% endfor %}", {"l": [1, 2, 3]}),
    ("for_prev_next", "{% for x in l %}{{ loop.previtem }}-{{ loop.nextitem }};{% endfor %}", {"l": [1, 2, 3]}),
    ("for_cycle", "{% for x in l %}{{ loop.cycle('a', 'b') }}{% endfor %}", {"l": [1, 2, 3]}),
    ("for_break_continue", "{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}{% break %}{% endif %}{{ x }}{% endfor %}", {}),
    ("for_nested_loop", "{% for a in [1, 2] %}{% for b in [3, 4] %}{{ loop.index }}{{ a }}{{ b }} {% endfor %}{{ loop.index }}|{% endfor %}", {}),
    ("for_over_undefined", "[{% for x in nope %}{{ x }}{% endfor %}]", {}),
    ("for_over_none_error", "{% for x in n %}{% endfor %}", {"n": None}),
    ("for_scope", "{% set y = 1 %}{% for i in [1, 2] %}{{ y }}{% set y = i * 10 %}{{ y }},{% endfor %}{{ y }}", {}),
    ("for_scope_reset", "{% for i in [1, 2, 3] %}{% if i == 1 %}{% set z = 5 %}{% endif %}{{ z }},{% endfor %}", {}),
    ("range_forms", "{{ range(3) | list }} {{ range(1, 4) | list }} {{ range(10, 0, -3) | list }}", {}),
    ("for_unpack_tuple_literal", "{% for a, b in [(1, 2), (3, 4)] %}{{ a + b }}{% endfor %}", {}),
    # set, namespace
    ("set_basic", "{% set x = 3 %}{% set a, b = [1, 2] %}{{ x }}{{ a }}{{ b }}", {}),
    ("set_in_if_leaks", "{% if true %}{% set z = 3 %}{% endif %}{{ z }}", {}),
    ("namespace", "{% set ns = namespace(n=0, s='') %}{% for i in [1, 2, 3] %}{% set ns.n = ns.n + i %}{% set ns.s = ns.s ~ i %}{% endfor %}{{ ns.n }} {{ ns.s }}", {}),
    ("block_set", "{% set b %}\n  inner {{ 1 + 1 }}\n{% endset %}[{{ b }}]", {}),
    ("block_set_filter", "{% set b | upper %}abc{% endset %}{{ b }}", {}),
    ("set_ns_non_namespace_error", "{% set d = {} %}{% set d.x = 1 %}", {}),
    # macros
    ("macro_simple", "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('A') }} {{ greet('B', '?') }} {{ greet(name='C') }}", {}),
    ("macro_call_block", "{% macro wrap() %}[{{ caller() }}]{% endmacro %}{% call wrap() %}inside{% endcall %}", {}),
    ("macro_sees_globals", "{% macro m() %}{{ g }}{% endmacro %}{{ m() }}", {"g": "global"}),
    ("macro_varargs", "{% macro m(a) %}{{ a }}{{ varargs }}{{ kwargs }}{% endmacro %}{{ m(1, 2, 3, k=4) }}", {}),
    # filters
    ("filter_string_ops", "{{ '  x  ' | trim }}|{{ 'AbC' | lower }}|{{ 'abc' | upper }}|{{ 'hello world' | title }}|{{ 'hELLO' | capitalize }}", {}),
    ("filter_length", "{{ 'h\u00e9' | length }} {{ [1, 2] | length }} {{ {'a': 1} | length }} {{ nope | length }} {{ [1,2,3] | count }}", {}),
    ("filter_default", "{{ nope | default('d') }} {{ '' | default('e') }} {{ '' | default('f', true) }} {{ none | d('g') }}", {}),
    ("filter_join", "{{ [1, 'a', none] | join(', ') }}|{{ l | join }}|{{ users | join(',', attribute='n') }}", {"l": ["x", "y"], "users": [{"n": "a"}, {"n": "b"}]}),
    ("filter_first_last", "{{ [1, 2, 3] | first }} {{ [1, 2, 3] | last }} {{ 'abc' | first }} [{{ [] | first }}]", {}),
    ("filter_list", "{{ 'ab' | list }} {{ {'k': 1} | list }}", {}),
    ("filter_replace", "{{ 'aXbXc' | replace('X', '-') }} {{ 'aaa' | replace('a', 'b', 2) }}", {}),
    ("filter_items", "{% for k, v in d | items %}{{ k }}{{ v }}{% endfor %}", {"d": {"a": 1, "b": 2}}),
    ("filter_selectattr", "{{ l | selectattr('ok') | map(attribute='n') | list }} {{ l | rejectattr('ok') | map(attribute='n') | join }}", {"l": [{"n": 1, "ok": True}, {"n": 2, "ok": False}, {"n": 3}]}),
    ("filter_selectattr_test", "{{ l | selectattr('role', 'equalto', 'user') | list | length }} {{ l | selectattr('role', '==', 'tool') | list | length }}", {"l": [{"role": "user"}, {"role": "tool"}, {"role": "user"}]}),
    ("filter_map_default", "{{ l | map(attribute='x', default='-') | join(',') }}", {"l": [{"x": 1}, {}]}),
    ("filter_map_filter", "{{ ['a', 'b'] | map('upper') | join }}", {}),
    ("filter_int_float", "{{ '42' | int }} {{ '3.7' | int }} {{ 'x' | int }} {{ 'x' | int(5) }} {{ 3.9 | int }} {{ '2.5' | float }} {{ 'y' | float }} {{ 4 | float }}", {}),
    ("filter_round", "{{ 2.5 | round }} {{ 3.14159 | round(2) }} {{ 2.1 | round(0, 'ceil') }} {{ 2.9 | round(method='floor') }} {{ 5 | round }}", {}),
    ("filter_escape_safe", "{{ '<a href=\"x\">&\\'' | e }} {{ '<b>' | escape }} {{ '<i>' | safe }}", {}),
    ("filter_string", "{{ 12 | string }}{{ [1] | string }}{{ none | string }}", {}),
    ("filter_tojson", "{{ d | tojson }}", {"d": {"a": "\u00e9\u4e2d", "b": [1, 2.5, True, None], "c": "q\"\\\n\t\u0001"}}),
    ("filter_tojson_indent", "{{ d | tojson(indent=2) }}", {"d": {"a": [1, {"b": []}], "c": {}}}),
    ("filter_tojson_sort", "{{ d | tojson(sort_keys=true) }} {{ d | tojson(separators=(',', ':')) }}", {"d": {"b": 1, "a": 2}}),
    ("filter_tojson_scalars", "{{ 'x' | tojson }} {{ 1 | tojson }} {{ none | tojson }} {{ 1.0 | tojson }} {{ [] | tojson }}", {}),
    ("filter_tojson_undefined_error", "{{ nope | tojson }}", {}),
    ("filter_tojson_ensure_ascii", "{{ 'é😀' | tojson(ensure_ascii=true) }}", {}),
    ("filter_chain", "{{ '  Hello ' | trim | lower | replace('l', 'L') }}", {}),
    ("filter_sort_unique", "{{ [3, 1, 2] | sort }} {{ ['b', 'A', 'a'] | sort }} {{ ['a', 'A', 'b'] | unique | list }} {{ [3, 1] | sort(reverse=true) }}", {}),
    ("filter_reverse_sum", "{{ [1, 2, 3] | reverse | list }} {{ 'abc' | reverse }} {{ [1, 2, 3] | sum }}", {}),
    ("filter_indent", "{{ 'a\\nb\\n\\nc' | indent(2) }}|{{ 'x\\ny' | indent(2, true) }}", {}),
    ("filter_block", "{% filter upper %}abc {{ 'd' }}{% endfilter %}", {}),
    ("filter_abs_minmax", "{{ -3 | abs }} {{ [3, 1, 2] | min }} {{ [3, 1, 2] | max }}", {}),
    # methods
    ("str_methods", "{{ '  a b  '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ '  a'.lstrip() }}|{{ 'a  '.rstrip() }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'a-b-c'.split('-', 1) }}", {}),
    ("str_methods2", "{{ 'abc'.startswith('ab') }} {{ 'abc'.endswith('bc') }} {{ 'abc'.startswith(('x', 'a')) }} {{ 'aXa'.replace('a', 'b') }} {{ 'ab'.upper() }} {{ 'AB'.lower() }} {{ 'hello wORLD 1st'.title() }}", {}),
    ("str_methods3", "{{ 'abcabc'.find('c') }} {{ 'abcabc'.count('b') }} {{ ', '.join(['a', 'b']) }} {{ 'abc'.find('z') }}", {}),
    ("split_think", "{{ c.split('</think>')[-1] }}|{{ c.split('</think>')[0] }}", {"c": "<think>\nreason\n</think>\n\nanswer"}),
    ("dict_methods", "{{ d.get('a') }} {{ d.get('z') }} {{ d.get('z', 'dflt') }} {{ d.keys() | list }} {{ d.values() | list }}", {"d": {"a": 1, "b": 2}}),
    ("list_append_error", "{{ l.append(1) }}", {"l": []}),
    # globals
    ("raise_exception", "{{ raise_exception('bad role') }}", {}),
    ("raise_in_branch_not_taken", "{% if false %}{{ raise_exception('x') }}{% endif %}ok", {}),
    ("dict_global", "{{ dict(a=1, b='x') }}", {}),
    # chat-template idioms
    ("add_generation_prompt_default", "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}{{ add_generation_prompt }}", {}),
    ("message_loop_idiom", "{%- for message in messages %}\n    {%- if message['role'] == 'user' %}\n        {{- '<u>' + message['content'] }}\n    {%- elif message.role == 'assistant' %}\n        {{- '<a>' + message.content + eos }}\n    {%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<a>' }}\n{%- endif %}\n", {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "eos": "</s>", "add_generation_prompt": True}),
    ("tool_call_arguments_tojson", "{% for tc in calls %}{{ tc.function.arguments | tojson }}{% endfor %}", {"calls": [{"function": {"name": "f", "arguments": {"x": 1, "y": "\u00fc"}}}]}),
    ("content_none_checks", "{{ m.content is none }} {{ m.content is not none }} {{ m.content is defined }}", {"m": {"content": None}}),
    ("in_with_none_error", "{{ 'x' in n }}", {"n": None}),
    # syntax errors must be errors
    ("syntax_unclosed_if", "{% if true %}x", {}),
    ("syntax_bad_tag", "{% frobnicate %}", {}),
    ("syntax_unclosed_var", "{{ 1 + }}", {}),
    ("syntax_endfor_without_for", "{% endfor %}", {}),
]


CONVERSATIONS = [
    ("system_user", [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is 2+2?"}], None),
    ("user_only", [{"role": "user", "content": "Hello!"}], None),
    ("multi_turn", [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Japan?"}], None),
    ("multi_turn_no_system", [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello! How can I help you today?"},
        {"role": "user", "content": "Tell me a joke about cats."}], None),
    ("chinese_unicode", [
        {"role": "system", "content": "你是一个乐于助人的助手。"},
        {"role": "user", "content": "写一首关于春天的短诗。😀 Ünïcödé\ttab"},
        {"role": "assistant", "content": "春风拂面，\n花开满园。"},
        {"role": "user", "content": "再来一首？"}], None),
    ("empty_content", [
        {"role": "system", "content": ""},
        {"role": "user", "content": ""}], None),
    ("two_system_messages", [
        {"role": "system", "content": "First rule."},
        {"role": "system", "content": "Second rule."},
        {"role": "user", "content": "Go."}], None),
    ("reasoning_in_history", [
        {"role": "user", "content": "What is 3*7?"},
        {"role": "assistant", "content": "<think>\n3 times 7 is 21.\n</think>\n\n21"},
        {"role": "user", "content": "And 4*5?"}], None),
    ("whitespace_and_specials", [
        {"role": "user", "content": "  leading and trailing  \n\n"},
        {"role": "assistant", "content": "{{ not a template }} {% neither %}"},
        {"role": "user", "content": "<|im_start|> <｜User｜> literal"}], None),
]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Zürich"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
TIME_TOOL = {"type": "function", "function": {"name": "get_time", "description": "Current time.",
                                              "parameters": {"type": "object", "properties": {}}}}

TOOL_CONVERSATIONS = [
    ("tools_user_only", [{"role": "user", "content": "Weather in Paris?"}], [WEATHER_TOOL, TIME_TOOL]),
    ("tools_with_system", [
        {"role": "system", "content": "Use tools when useful."},
        {"role": "user", "content": "Weather in Paris?"}], [WEATHER_TOOL]),
    ("tool_call_roundtrip", [
        {"role": "user", "content": "Weather in Paris and Berlin?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
            {"type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Berlin\"}"}}]},
        {"role": "tool", "content": "{\"temp\": 18}"},
        {"role": "tool", "content": "{\"temp\": 15}"},
        {"role": "assistant", "content": "Paris is 18°C and Berlin 15°C."},
        {"role": "user", "content": "Thanks!"}], [WEATHER_TOOL]),
    ("tool_call_single_pending", [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "content": "{\"temp\": 18}"}], [WEATHER_TOOL]),
]

# Qwen's template expects tool-call arguments as an object (it applies tojson)
QWEN_TOOL_CONVERSATIONS = [
    ("qwen_tool_call_object_args", [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}]},
        {"role": "tool", "content": "{\"temp\": 18}"},
        {"role": "tool", "content": "sunny"},
        {"role": "assistant", "content": "18°C and sunny."}], [WEATHER_TOOL]),
    ("qwen_tool_call_no_function_wrapper", [
        {"role": "user", "content": "Time?"},
        {"role": "assistant", "content": "", "tool_calls": [{"name": "get_time", "arguments": {}}]},
        {"role": "tool", "content": "12:00"}], [TIME_TOOL]),
]


def load_templates(shared):
    t = {}
    for name, path in [("deepseek-v3", "tokenizers/deepseek-v3/tokenizer_config.json"),
                       ("qwen2.5-instruct", "tokenizers/qwen2/tokenizer_config.json")]:
        with open(os.path.join(shared, path), encoding="utf-8") as f:
            t[name] = json.load(f)["chat_template"]
    # templates/Qwen-Qwen2.5-7B-Instruct.jinja is byte-identical to the qwen2 config's template
    for name, path in [("deepseek-r1-distill-qwen", "templates/deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja")]:
        with open(os.path.join(shared, path), encoding="utf-8", newline="") as f:
            t[name] = f.read()
    return t


TOKENS = {
    "deepseek-v3": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    "deepseek-r1-distill-qwen": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
    "qwen2.5-instruct": ("", "<|im_end|>"),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.environ.get("BALEEN_SHARED_DATA",
                                                       os.path.join(HERE, "..", "..", "shared", "data")))
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)

    with open(os.path.join(OUT, "jinja_cases.jsonl"), "w", encoding="utf-8") as f:
        for name, tmpl, variables in UNIT:
            rec = {"name": name, "template": tmpl, "vars": variables}
            rec.update(render(tmpl, variables))
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")

    templates = load_templates(a.shared)
    n = 0
    with open(os.path.join(OUT, "chat_cases.jsonl"), "w", encoding="utf-8") as f:
        for tname, src in templates.items():
            fname = tname + ".jinja"
            with open(os.path.join(OUT, fname), "w", encoding="utf-8", newline="") as tf:
                tf.write(src)
            bos, eos = TOKENS[tname]
            convs = list(CONVERSATIONS) + list(TOOL_CONVERSATIONS)
            if tname.startswith("qwen"):
                convs += QWEN_TOOL_CONVERSATIONS
            for cname, messages, tools in convs:
                for agp in (False, True):
                    variables = {"messages": messages, "tools": tools, "documents": None,
                                 "add_generation_prompt": agp, "bos_token": bos, "eos_token": eos}
                    rec = {"name": f"{tname}/{cname}/{'gen' if agp else 'nogen'}",
                           "template": fname, "messages": messages, "tools": tools,
                           "add_generation_prompt": agp, "bos_token": bos, "eos_token": eos}
                    rec.update(render(src, variables))
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                    n += 1
    print(f"wrote {len(UNIT)} language cases and {n} chat cases with jinja2 {jinja2.__version__}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
