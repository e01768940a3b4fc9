"""JSON Schema to GBNF.

The grammar accepts only JSON that the schema allows (checked by the tests with
``jsonschema`` and our matcher); where the two cannot agree exactly it accepts
less, never more, and where it could only accept more it raises
:class:`GrammarError` instead of falling back to "any JSON".

Supported: ``type`` (one or a list), ``enum``, ``const``, ``anyOf``, ``oneOf``
(when its branches provably do not overlap), ``allOf`` (merged), local ``$ref``
into ``$defs`` / ``definitions`` / anywhere (recursion included);
objects: ``properties`` (emitted in declared order), ``required``,
``additionalProperties`` (false, true or a schema); arrays: ``items``,
``prefixItems`` (and draft-7 list ``items`` / ``additionalItems``),
``minItems``, ``maxItems``; strings: ``minLength``, ``maxLength``, ``pattern``
(see :mod:`.regex`), ``format`` (date, time, date-time, uuid, email, ipv4);
integers: ``minimum``, ``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum``;
numbers: the same bounds when they are whole numbers. Annotations (``title``,
``description``, ``default``, ``examples``, ...) and ``x-`` keys are ignored;
every other keyword raises.

Choices that keep generation tight: properties appear in declared order; an
object that declares ``properties`` but not ``additionalProperties`` gets no
extra keys unless ``extra_properties=True``; ``prefixItems`` without ``items``
allows no further items; keys of extra properties are spelled as
``json.dumps(..., ensure_ascii=False)`` spells them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from ..errors import GrammarError
from ._json_containers import array_rule, object_rule
from ._json_terminals import (
    escaped_json_char,
    gbnf_class,
    gbnf_literal,
    integer_range,
    json_value_literal,
    number_range,
    primitive_rules,
    seq,
)
from ._schema_merge import (
    ANNOTATIONS,
    check_keyword_types,
    check_one_of_disjoint,
    count_keyword,
    infer_types,
    json_kinds,
    merge_all_of,
    normalize_bounds,
    path_hint,
    resolve_pointer,
)
from .gbnf import MAX_REPETITION, parse_gbnf
from .regex import pattern_to_gbnf

__all__ = ["FORMATS", "WHITESPACE", "any_json_gbnf", "schema_to_gbnf"]

WHITESPACE = {
    "compact": "",
    "bounded": '( " " | "\\n" [ \\t]{0,40} )?',
    "flexible": "[ \\t\\n\\r]*",
}
FORMATS = {
    "date": "json-date-string",
    "time": "json-time-string",
    "date-time": "json-date-time-string",
    "uuid": "json-uuid-string",
    "email": "json-email-string",
    "ipv4": "json-ipv4-string",
}
MAX_SCHEMA_DEPTH = 64
_CHUNK = 1000  # large {m,n} are built from blocks of this many items
_KEYWORDS = frozenset({
    "$ref", "type", "enum", "const", "anyOf", "oneOf", "allOf",
    "properties", "required", "additionalProperties",
    "items", "prefixItems", "additionalItems", "minItems", "maxItems", "uniqueItems",
    "minLength", "maxLength", "pattern", "format",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
})
_HINTS = {"nullable": "use \"type\": [..., \"null\"] instead"}


def _number(value: Any, keyword: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise GrammarError(f"'{keyword}' must be a finite number, not {value!r}")
    return value


def _matches_type(value: Any, types: list[str] | None) -> bool:
    if types is None:
        return True
    checks = {
        "null": value is None,
        "boolean": isinstance(value, bool),
        "integer": isinstance(value, int) and not isinstance(value, bool)
        or isinstance(value, float) and value.is_integer(),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
        "string": isinstance(value, str),
        "array": isinstance(value, list),
        "object": isinstance(value, dict),
    }
    return any(checks[t] for t in types)


class _Converter:
    def __init__(self, root: Any, whitespace: str, extra_properties: bool) -> None:
        self.root = root
        self.ws = "ws" if WHITESPACE[whitespace] else ""
        self.extra_properties = extra_properties
        self.primitives = primitive_rules(self.ws)
        self.rules: dict[str, str] = {"root": ""}
        if self.ws:
            self.rules["ws"] = WHITESPACE[whitespace]
        self.by_body: dict[str, str] = {}
        # Boolean exclusiveMinimum/Maximum mean different things in draft 4 and later.
        schema_uri = root.get("$schema", "") if isinstance(root, dict) else ""
        self.draft4 = isinstance(schema_uri, str) and ("draft-04" in schema_uri or "draft-03" in schema_uri)
        self.refs: dict[str, str] = {}

    def text(self) -> str:
        return "".join(f"{name} ::= {body}\n" for name, body in self.rules.items())

    # -- rule bookkeeping (also the RuleSink the regex compiler uses) ------------

    def use(self, primitive: str) -> str:
        pending = [primitive]
        while pending:
            name = pending.pop()
            if name not in self.rules:
                body, uses = self.primitives[name]
                self.rules[name] = body
                pending.extend(uses)
        return primitive

    def reserve(self, hint: str) -> str:
        base = re.sub(r"[^a-zA-Z0-9-]+", "-", hint).strip("-")[:40] or "item"
        name, n = base, 1
        while name in self.rules or name in self.primitives:
            n += 1
            name = f"{base}-{n}"
        self.rules[name] = '""'
        return name

    def define(self, hint: str, body: str) -> str:
        body = body or '""'  # an empty body would swallow the next line in llama.cpp
        if body not in self.by_body:
            name = self.reserve(hint)
            self.rules[name] = body
            self.by_body[body] = name
        return self.by_body[body]

    def repeat(self, item: str, low: int, high: int | None, hint: str) -> str:
        """``item`` low..high times, split into blocks where llama.cpp's 2000 limit needs it."""
        if high is None and low <= MAX_REPETITION or high is not None and high <= MAX_REPETITION:
            return _repetition(item, low, high)
        # A rule of its own: its helper rules (up to 2 x 1000) would otherwise count against
        # llama.cpp's limit for a repetition around it (an array's "( items )?"): maxItems
        # 100000 failed with an error about the generated grammar's line 15.
        return self.define(f"{hint}-repeat", self._split(item, low, high, hint))

    def _split(self, item: str, low: int, high: int | None, hint: str) -> str:
        parts = []
        if low > MAX_REPETITION:
            blocks, low = divmod(low, _CHUNK)
            if blocks > MAX_REPETITION:
                raise GrammarError(f"repetition of {blocks * _CHUNK} items is too large "
                                   f"(at most {MAX_REPETITION * _CHUNK:,})")
            parts.append(_repetition(self.define(f"{hint}-block", f"{item}{{{_CHUNK}}}"), blocks, blocks))
            high = None if high is None else high - blocks * _CHUNK
        if high is None or high <= MAX_REPETITION:
            return seq(*parts, _repetition(item, low, high))
        blocks, remainder = divmod(high - low, _CHUNK)
        if blocks - 1 > MAX_REPETITION:
            raise GrammarError(f"repetition of up to {high} items is too large "
                               f"(at most {MAX_REPETITION * _CHUNK:,})")
        block = self.define(f"{hint}-block", f"{item}{{{_CHUNK}}}")
        # Unambiguous split (so llama.cpp tracks few stacks): fewer than `blocks`
        # whole blocks plus a short tail, or exactly `blocks` plus up to `remainder`.
        short = seq(_repetition(block, 0, blocks - 1), _repetition(item, 0, _CHUNK - 1))
        full = seq(_repetition(block, blocks, blocks), _repetition(item, 0, remainder))
        return seq(*parts, _repetition(item, low, low), f"( {short} | {full} )")

    def resolve(self, ref: str) -> Any:
        return resolve_pointer(self.root, ref)

    # -- schemas -----------------------------------------------------------------

    def visit(self, schema: Any, path: str, depth: int) -> str:
        if depth > MAX_SCHEMA_DEPTH:
            raise GrammarError(f"{path}: schema nested more than {MAX_SCHEMA_DEPTH} levels deep")
        try:
            return self.visit_schema(schema, path, depth)
        except GrammarError as exc:
            if str(exc).startswith("#"):
                raise
            raise GrammarError(f"{path}: {exc}") from None

    def visit_schema(self, schema: Any, path: str, depth: int) -> str:
        if schema is True:
            return self.use("json-value")
        if schema is False:
            raise GrammarError("schema 'false' matches nothing")
        if not isinstance(schema, dict):
            raise GrammarError(f"a schema must be an object or a boolean, not {type(schema).__name__}")
        _check_keywords(schema)
        for keyword in ("exclusiveMinimum", "exclusiveMaximum"):
            if isinstance(schema.get(keyword), bool) and not self.draft4:
                raise GrammarError(f"boolean '{keyword}' is draft-4 syntax; give a number, or declare draft-04 in $schema")
        if "$ref" in schema:
            return self.visit_ref(schema, path, depth)
        if "allOf" in schema:
            return self.visit(merge_all_of([schema], self.resolve), path, depth + 1)
        if "anyOf" in schema or "oneOf" in schema:
            return self.visit_union(schema, path, depth)
        if "const" in schema or "enum" in schema:
            return self.visit_enum(schema)
        schema = normalize_bounds(schema)
        types = infer_types(schema)
        if types is None:
            return self.use("json-value")
        if "number" in types and "integer" in types:
            types.remove("integer")
        options = [self.visit_type(t, schema, path, depth) for t in dict.fromkeys(types)]
        return options[0] if len(options) == 1 else "( " + " | ".join(options) + " )"

    def visit_ref(self, schema: dict, path: str, depth: int) -> str:
        ref = schema["$ref"]
        rest = {k: v for k, v in schema.items() if k != "$ref" and k not in ANNOTATIONS}
        if rest:
            return self.visit({"allOf": [{"$ref": ref}, rest]}, path, depth + 1)
        if ref not in self.refs:
            target = self.resolve(ref)
            name = self.refs[ref] = self.reserve(path_hint(ref) if ref != "#" else "root-ref")
            self.rules[name] = self.visit(target, ref, depth + 1)
        return self.refs[ref]

    def visit_union(self, schema: dict, path: str, depth: int) -> str:
        if "anyOf" in schema and "oneOf" in schema:
            raise GrammarError("anyOf together with oneOf is not supported")
        key = "anyOf" if "anyOf" in schema else "oneOf"
        branches = schema[key]
        if not isinstance(branches, list) or not branches:
            raise GrammarError(f"'{key}' must be a non-empty list")
        rest = {k: v for k, v in schema.items() if k != key and k not in ANNOTATIONS}
        if rest:
            kinds = json_kinds(rest, self.resolve)
            branches = [merge_all_of([rest, b], self.resolve) for b in branches
                        if json_kinds(b, self.resolve) & kinds]
            if not branches:
                raise GrammarError(f"no '{key}' branch is compatible with the rest of the schema")
        if key == "oneOf":
            check_one_of_disjoint(branches, self.resolve, path)
        options = [self.visit(b, f"{path}/{key}/{i}", depth + 1) for i, b in enumerate(branches)]
        options = list(dict.fromkeys(options))
        return options[0] if len(options) == 1 else "( " + " | ".join(options) + " )"

    def visit_enum(self, schema: dict) -> str:
        if "enum" in schema and not isinstance(schema["enum"], list):
            raise GrammarError("'enum' must be a list")
        values = list(schema["enum"]) if "enum" in schema else [schema["const"]]
        if "const" in schema and "enum" in schema:
            wanted = json.dumps(schema["const"], sort_keys=True)
            values = [v for v in values if json.dumps(v, sort_keys=True) == wanted]
        others = sorted(k for k in schema if k not in ("enum", "const", "type") and k not in ANNOTATIONS
                        and not k.startswith("x-"))
        if others:
            raise GrammarError(f"'enum'/'const' together with {others} is not supported")
        types = infer_types(schema)
        options = list(dict.fromkeys(json_value_literal(v, self.ws) for v in values if _matches_type(v, types)))
        if not options:
            raise GrammarError("no 'enum'/'const' value satisfies the schema")
        return options[0] if len(options) == 1 else "( " + " | ".join(options) + " )"

    def visit_type(self, kind: str, schema: dict, path: str, depth: int) -> str:
        if kind == "null":
            return self.use("json-null")
        if kind == "boolean":
            return self.use("json-boolean")
        if kind == "integer":
            return self.integer(schema, path)
        if kind == "number":
            return self.number(schema, path)
        if kind == "string":
            return self.string(schema, path)
        if kind == "array":
            return array_rule(self, schema, path, depth)
        return object_rule(self, schema, path, depth)

    def integer(self, schema: dict, path: str) -> str:
        low = high = None
        if "minimum" in schema:
            low = math.ceil(_number(schema["minimum"], "minimum"))
        if "exclusiveMinimum" in schema:
            bound = math.floor(_number(schema["exclusiveMinimum"], "exclusiveMinimum")) + 1
            low = bound if low is None else max(low, bound)
        if "maximum" in schema:
            high = math.floor(_number(schema["maximum"], "maximum"))
        if "exclusiveMaximum" in schema:
            bound = math.ceil(_number(schema["exclusiveMaximum"], "exclusiveMaximum")) - 1
            high = bound if high is None else min(high, bound)
        if low is None and high is None:
            return self.use("json-integer")
        return self.define(f"{path_hint(path)}-int", integer_range(low, high))

    def number(self, schema: dict, path: str) -> str:
        low, low_excl = _tighter(schema, "minimum", "exclusiveMinimum", max)
        high, high_excl = _tighter(schema, "maximum", "exclusiveMaximum", min)
        if low is None and high is None:
            return self.use("json-number")
        return self.define(f"{path_hint(path)}-num", number_range(low, low_excl, high, high_excl))

    def string(self, schema: dict, path: str) -> str:
        low, high = count_keyword(schema, "minLength") or 0, count_keyword(schema, "maxLength")
        fmt, pattern = schema.get("format"), schema.get("pattern")
        if (fmt is not None or pattern is not None) and (low or high is not None) or fmt and pattern:
            raise GrammarError("'format', 'pattern' and minLength/maxLength cannot be combined")
        if fmt is not None:
            if fmt not in FORMATS:
                raise GrammarError(f"format {fmt!r} is not supported (supported: {', '.join(FORMATS)})")
            return self.use(FORMATS[fmt])
        quote = gbnf_literal('"')
        if pattern is not None:
            content = pattern_to_gbnf(pattern, self, path_hint(path))
            return self.define(f"{path_hint(path)}-string", seq(quote, content, quote))
        if high is not None and high < low:
            raise GrammarError(f"maxLength {high} is below minLength {low}")
        if low == 0 and high is None:
            return self.use("json-string")
        chars = self.repeat(self.use("json-char"), low, high, "string")
        return self.define(f"string-{low}-{'up' if high is None else high}", seq(quote, chars, quote))

    def key_excluding(self, names: list[str], hint: str) -> str:
        """A JSON string that is none of ``names`` (each spelled json.dumps's way)."""
        if not names:
            return self.use("json-string")
        trie: dict = {}
        for name in names:
            node = trie
            for ch in name:
                node = node.setdefault(ch, {})
            node[""] = {}
        quote = gbnf_literal('"')
        return seq(quote, self._trie_rule(trie, f"{hint}-key"), quote)

    def _trie_rule(self, node: dict, hint: str) -> str:
        children = [ch for ch in node if ch]
        options = [] if "" in node else ['""']
        raw = gbnf_class([(ord(c), ord(c)) for c in children] + [(0, 31), (34, 34), (92, 92)], negated=True)
        special = [c for c in children if escaped_json_char(c) != c]
        escape = self.use("json-key-escape") if not special else _escapes_except(special)
        options.append(seq(f"( {raw} | {escape} )", self.use("json-key-char") + "*"))
        for ch in children:
            options.append(seq(gbnf_literal(escaped_json_char(ch)), self._trie_rule(node[ch], hint)))
        return self.define(hint, " | ".join(options))


def _escapes_except(chars: list[str]) -> str:
    specials = [chr(c) for c in [*range(32), 34, 92] if chr(c) not in chars]
    return "( " + " | ".join(gbnf_literal(escaped_json_char(c)) for c in specials) + " )"


def _repetition(item: str, low: int, high: int | None) -> str:
    if high == low:
        return "" if low == 0 else (item if low == 1 else f"{item}{{{low}}}")
    if high is None:
        return {0: f"{item}*", 1: f"{item}+"}.get(low, f"{item}{{{low},}}")
    return f"{item}?" if (low, high) == (0, 1) else f"{item}{{{low},{high}}}"


def _tighter(schema: dict, inclusive: str, exclusive: str, pick) -> tuple[int | None, bool]:
    """The binding bound among ``inclusive`` and ``exclusive`` (whole numbers only)."""
    found = []
    for keyword, is_exclusive in ((inclusive, False), (exclusive, True)):
        if keyword in schema:
            value = _number(schema[keyword], keyword)
            if isinstance(value, float) and not value.is_integer():
                raise GrammarError(f"'{keyword}': {value} is not whole; number bounds must be whole numbers")
            found.append((int(value), is_exclusive))
    if not found:
        return None, False
    if len(found) == 2 and found[0][0] == found[1][0]:
        return found[0][0], True
    best = pick(value for value, _ in found)
    return best, next(excl for value, excl in found if value == best)


def _check_keywords(schema: dict) -> None:
    check_keyword_types(schema)
    for key in schema:
        if key in _KEYWORDS or key in ANNOTATIONS or (isinstance(key, str) and key.startswith("x-")):
            continue
        hint = f"; {_HINTS[key]}" if key in _HINTS else ""
        raise GrammarError(f"keyword {key!r} is not supported{hint}")
    if schema.get("uniqueItems") is True and (count_keyword(schema, "maxItems") or 2) > 1:
        raise GrammarError("'uniqueItems': true is not supported")


def _load(schema: Mapping[str, Any] | str | bool) -> Any:
    if isinstance(schema, (bytes, bytearray)):
        schema = bytes(schema).decode("utf-8", errors="strict")
    if isinstance(schema, str):
        try:
            return json.loads(schema)
        except json.JSONDecodeError as exc:
            raise GrammarError(f"schema is not valid JSON: {exc.msg}", line=exc.lineno, column=exc.colno) from None
        except RecursionError:
            raise GrammarError("schema is nested too deeply") from None
    if isinstance(schema, Mapping):
        return dict(schema)
    if isinstance(schema, bool):
        return schema
    raise GrammarError(f"schema must be a dict, bool or JSON text, not {type(schema).__name__}")


def _converter(root: Any, whitespace: str, extra_properties: bool) -> _Converter:
    if whitespace not in WHITESPACE:
        raise GrammarError(f"whitespace must be one of {sorted(WHITESPACE)}, not {whitespace!r}")
    return _Converter(root, whitespace, extra_properties)


def schema_to_gbnf(
    schema: Mapping[str, Any] | str | bool, *, whitespace: str = "bounded", extra_properties: bool = False
) -> str:
    """GBNF text (start rule ``root``) for the JSON documents ``schema`` allows."""
    root = _load(schema)
    converter = _converter(root, whitespace, extra_properties)
    try:
        converter.rules["root"] = converter.visit(root, "#", 0)
    except GrammarError:
        raise
    except RecursionError:
        raise GrammarError("schema is nested too deeply") from None
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
        # Last line of defence for malformed schemas the checks above did not foresee.
        raise GrammarError(f"malformed schema: {type(exc).__name__}: {exc}") from None
    text = converter.text()
    try:
        parse_gbnf(text)  # the promise: what we emit, llama.cpp can take (and so can we)
    except GrammarError as exc:
        # Name the generated rule (its name follows the schema path) rather than a line of
        # a grammar the caller never saw.
        rule = text.splitlines()[exc.line - 1].split(" ::= ", 1)[0] if exc.line else "root"
        message = str(exc).rsplit(" (line ", 1)[0]
        raise GrammarError(f"the grammar for this schema is beyond llama.cpp's limits, in rule '{rule}': "
                           f"{message}") from None
    return text


def any_json_gbnf(*, object_only: bool = False, whitespace: str = "bounded") -> str:
    """GBNF for any JSON value, or any JSON object when ``object_only``."""
    converter = _converter(True, whitespace, True)
    converter.rules["root"] = converter.use("json-object" if object_only else "json-value")
    return converter.text()
