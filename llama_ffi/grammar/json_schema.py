"""JSON Schema to GBNF.

The grammar accepts only JSON that the schema allows (checked by the tests with
``jsonschema`` and our matcher); where the two cannot agree exactly it accepts
less, never more, and where it could only accept more it raises
:class:`GrammarError` instead of falling back to "any JSON".

Supported (docs/structured-output.md has the full table): ``type``, ``enum``,
``const`` (with other keywords too: the values they reject are dropped), ``anyOf``,
``oneOf`` (when its branches provably do not overlap), ``allOf`` (merged), ``not``
and ``if``/``then``/``else`` (where the complement is expressible, see
:mod:`._schema_logic`), local ``$ref`` (recursion included); objects (see
:mod:`._json_objects`): ``properties``, ``required``, ``additionalProperties``,
``patternProperties``, ``propertyNames``, ``minProperties``, ``maxProperties``,
``dependentRequired``, ``dependentSchemas``, draft-7 ``dependencies``; arrays (see
:mod:`._json_containers`): ``items``, ``prefixItems``, draft-7 tuple ``items`` /
``additionalItems``, ``minItems``, ``maxItems``, ``contains``, ``minContains``,
``maxContains``, ``uniqueItems`` (items from a short list of values); strings:
``minLength``, ``maxLength``, ``pattern`` (see :mod:`.regex`), ``format`` (date, time,
date-time, uuid, email, ipv4); numbers (see :mod:`._json_numbers`): ``minimum``,
``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum``, ``multipleOf``.
Annotations (``title``, ``description``, ``default``, ``examples``, ...) and ``x-``
keys are ignored; every other keyword raises.

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
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import GrammarError
from ._json_containers import array_rule
from ._json_numbers import integer_rule, number_rule
from ._json_objects import object_rule
from ._json_terminals import (
    escaped_json_char,
    gbnf_class,
    gbnf_literal,
    json_value_literal,
    primitive_rules,
    seq,
)
from ._schema_logic import excluded_values, matches_type, rewrite_conditional, rewrite_not
from ._schema_merge import (
    ANNOTATIONS,
    JSON_KINDS,
    Unsatisfiable,
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
from .matcher import GrammarMatcher
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
# Lengths of the strings each format's grammar writes (quotes excluded), to combine
# format with minLength/maxLength.
FORMAT_LENGTHS = {"date": (10, 10), "time": (9, 24), "date-time": (20, 35), "uuid": (36, 36),
                  "email": (5, 703), "ipv4": (7, 15)}
MAX_SCHEMA_DEPTH = 64
_CHUNK = 1000  # large {m,n} are built from blocks of this many items
_KEYWORDS = frozenset({
    "$ref", "type", "enum", "const", "anyOf", "oneOf", "allOf", "not", "if", "then", "else",
    "properties", "required", "additionalProperties", "patternProperties", "propertyNames",
    "minProperties", "maxProperties", "dependentRequired", "dependentSchemas", "dependencies",
    "items", "prefixItems", "additionalItems", "minItems", "maxItems", "uniqueItems",
    "contains", "minContains", "maxContains",
    "minLength", "maxLength", "pattern", "format",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
})
_HINTS = {
    "nullable": "use \"type\": [..., \"null\"] instead",
    "unevaluatedProperties": "use additionalProperties (with allOf merged, it has the same effect here)",
    "unevaluatedItems": "use items / additionalItems",
    "$dynamicRef": "use $ref", "$recursiveRef": "use $ref",
}


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

    def attempt(self, build: Callable[[], str]) -> str | None:
        """``build()``, or None (and the rules as they were) if its schema can match nothing."""
        return self.attempts([build])[0][0]

    def attempts(self, builds: list[Callable[[], str]]) -> tuple[list[str | None], Unsatisfiable | None]:
        """Each of ``builds`` in turn, None for those whose schema matches nothing (their
        rules undone); also the first such error."""
        out, first_error = [], None
        for build in builds:
            saved = dict(self.rules), dict(self.by_body), dict(self.refs)
            try:
                out.append(build())
            except Unsatisfiable as exc:
                self.rules, self.by_body, self.refs = saved
                out.append(None)
                first_error = first_error or exc
        return out, first_error

    def union(self, branches: list[tuple[Any, str]], depth: int, what: str) -> str:
        """Any of ``branches`` (schema, path), leaving out those that can match nothing."""
        built, error = self.attempts([lambda s=s, p=p: self.visit(s, p, depth) for s, p in branches])
        options = list(dict.fromkeys(option for option in built if option is not None))
        if not options:
            raise Unsatisfiable(f"no {what} branch can match anything ({error})")
        return options[0] if len(options) == 1 else "( " + " | ".join(options) + " )"

    def accepted_values(self, schema: Any, values: list, path: str, depth: int) -> list:
        """The ``values`` whose compact JSON the grammar of ``schema`` accepts (so the schema
        allows them: the grammar never accepts more than the schema)."""
        sub = _Converter(self.root, "compact", self.extra_properties)
        try:
            sub.rules["root"] = sub.visit(schema, path, depth)
        except Unsatisfiable:
            return []
        matcher = GrammarMatcher(parse_gbnf(sub.text()))
        return [v for v in values if matcher.matches(json.dumps(v, ensure_ascii=False, separators=(",", ":")))]

    # -- schemas -----------------------------------------------------------------

    def visit(self, schema: Any, path: str, depth: int) -> str:
        if depth > MAX_SCHEMA_DEPTH:
            raise GrammarError(f"{path}: schema nested more than {MAX_SCHEMA_DEPTH} levels deep")
        try:
            return self.visit_schema(schema, path, depth)
        except GrammarError as exc:
            if str(exc).startswith("#"):
                raise
            raise (Unsatisfiable if isinstance(exc, Unsatisfiable) else GrammarError)(f"{path}: {exc}") from None

    def visit_schema(self, schema: Any, path: str, depth: int) -> str:
        if schema is True:
            return self.use("json-value")
        if schema is False:
            raise Unsatisfiable("schema 'false' matches nothing")
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
        if "if" in schema or "then" in schema or "else" in schema:
            cases = rewrite_conditional(schema)
            if len(cases) == 1:
                return self.visit(cases[0], path, depth + 1)
            return self.union([(cases[0], f"{path}/then"), (cases[1], f"{path}/if")], depth + 1, "if/then/else")
        if "anyOf" in schema or "oneOf" in schema:
            return self.visit_union(schema, path, depth)
        if "not" in schema:
            cases = rewrite_not(schema, self.resolve)
            if cases is not None and len(cases) == 1:
                return self.visit(cases[0], path, depth + 1)
            if cases is not None:
                return self.union([(case, f"{path}/not") for case in cases], depth + 1, "'not'")
        if "const" in schema or "enum" in schema:
            return self.visit_enum(schema, path, depth)
        schema = normalize_bounds(schema)
        types = infer_types(schema)
        if types is None and "not" not in schema:
            return self.use("json-value")
        types = list(dict.fromkeys(types or JSON_KINDS))
        if "number" in types and "integer" in types:
            types.remove("integer")
        if len(types) == 1:
            option = self.visit_type(types[0], schema, path, depth)
            if option is None:
                raise Unsatisfiable("'not' leaves no value")
            return option
        built, error = self.attempts([lambda t=t: self.visit_type(t, schema, path, depth) for t in types])
        options = [option for option in built if option is not None]
        if not options:
            raise error or Unsatisfiable("'not' leaves no value")
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
        indexed = [(i, b) for i, b in enumerate(branches) if b is not False]
        rest = {k: v for k, v in schema.items() if k != key and k not in ANNOTATIONS}
        if rest:
            kinds = json_kinds(rest, self.resolve)
            indexed = [(i, merge_all_of([rest, b], self.resolve)) for i, b in indexed
                       if json_kinds(b, self.resolve) & kinds]
        if not indexed:
            raise Unsatisfiable(f"no '{key}' branch is compatible with the rest of the schema")
        if key == "oneOf":
            check_one_of_disjoint([b for _, b in indexed], self.resolve, path)
        return self.union([(b, f"{path}/{key}/{i}") for i, b in indexed], depth + 1, f"'{key}'")

    def visit_enum(self, schema: dict, path: str, depth: int) -> str:
        if "enum" in schema and not isinstance(schema["enum"], list):
            raise GrammarError("'enum' must be a list")
        values = list(schema["enum"]) if "enum" in schema else [schema["const"]]
        if "const" in schema and "enum" in schema:
            wanted = json.dumps(schema["const"], sort_keys=True)
            values = [v for v in values if json.dumps(v, sort_keys=True) == wanted]
        rest = {k: v for k, v in schema.items() if k not in ("enum", "const") and k not in ANNOTATIONS
                and not k.startswith("x-")}
        if set(rest) <= {"type"}:
            values = [v for v in values if matches_type(v, infer_types(schema))]
        else:  # keep the values the rest of the schema allows, as our grammar for it decides
            if "type" not in rest:  # (minLength alone must not make 4 a string: it ignores numbers)
                rest["type"] = sorted({_kind(v) for v in values})
            values = self.accepted_values(rest, values, path, depth + 1)
        options = list(dict.fromkeys(json_value_literal(v, self.ws) for v in values))
        if not options:
            raise Unsatisfiable("no 'enum'/'const' value satisfies the schema")
        return options[0] if len(options) == 1 else "( " + " | ".join(options) + " )"

    def visit_type(self, kind: str, schema: dict, path: str, depth: int) -> str | None:
        if kind in ("null", "boolean"):
            allowed = [None] if kind == "null" else [False, True]
            left = [v for v in allowed if not any(v is x for x in excluded_values(schema))]
            if left != allowed:
                return "( " + " | ".join(gbnf_literal(json.dumps(v)) for v in left) + " )" if left else None
            return self.use(f"json-{kind}")
        if kind == "integer":
            return integer_rule(self, schema, path)
        if kind == "number":
            return number_rule(self, schema, path)
        if kind == "string":
            return self.string(schema, path)
        if kind == "array":
            return array_rule(self, schema, path, depth)
        return object_rule(self, schema, path, depth)

    def string(self, schema: dict, path: str) -> str:
        low, high = count_keyword(schema, "minLength") or 0, count_keyword(schema, "maxLength")
        fmt, pattern = schema.get("format"), schema.get("pattern")
        if high is not None and high < low:
            raise Unsatisfiable(f"maxLength {high} is below minLength {low}")
        excluded = [v for v in excluded_values(schema) if isinstance(v, str)]
        if excluded and (fmt is not None or pattern is not None or low or high is not None):
            raise GrammarError("'not' of string values together with minLength/maxLength/pattern/format "
                               "is not supported")
        if excluded:
            return self.define(f"{path_hint(path)}-string", self.key_excluding(excluded, path_hint(path)))
        if fmt is not None:
            return self._format(fmt, pattern, low, high)
        if pattern is not None and (low or high is not None):
            raise GrammarError("'pattern' and minLength/maxLength cannot be combined")
        quote = gbnf_literal('"')
        if pattern is not None:
            content = pattern_to_gbnf(pattern, self, path_hint(path))
            return self.define(f"{path_hint(path)}-string", seq(quote, content, quote))
        if low == 0 and high is None:
            return self.use("json-string")
        chars = self.repeat(self.use("json-char"), low, high, "string")
        return self.define(f"string-{low}-{'up' if high is None else high}", seq(quote, chars, quote))

    def _format(self, fmt: str, pattern: Any, low: int, high: int | None) -> str:
        if fmt not in FORMATS:
            raise GrammarError(f"format {fmt!r} is not supported (supported: {', '.join(FORMATS)})")
        if pattern is not None:
            raise GrammarError("'format' and 'pattern' cannot be combined")
        shortest, longest = FORMAT_LENGTHS[fmt]
        if high is not None and high < shortest or low > longest:
            raise Unsatisfiable(f"no {fmt} string has between {low} and {high} characters")
        if low > shortest or high is not None and high < longest:
            raise GrammarError(f"'format' {fmt!r} and minLength/maxLength cannot be combined "
                               f"({fmt} strings have {shortest} to {longest} characters)")
        return self.use(FORMATS[fmt])

    def key_excluding(self, names: list[str], hint: str, prefixes: list[str] = ()) -> str | None:
        """A JSON string that is none of ``names`` and starts with none of ``prefixes``
        (each spelled json.dumps's way); None when no string is left."""
        if not names and not prefixes:
            return self.use("json-string")
        trie: dict = {}
        for text, blocked in [(name, False) for name in names] + [(prefix, True) for prefix in prefixes]:
            node = trie
            for ch in text:
                node = node.setdefault(ch, {})
                if None in node:
                    break  # already under a blocked prefix
            else:
                if blocked:
                    node.clear()
                    node[None] = True  # nothing may continue from here
                node[""] = {}
        if None in trie:
            return None
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
            if None not in node[ch]:
                options.append(seq(gbnf_literal(escaped_json_char(ch)), self._trie_rule(node[ch], hint)))
        return self.define(hint, " | ".join(options))


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), "null")


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
