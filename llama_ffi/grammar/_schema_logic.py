"""``not`` and ``if``/``then``/``else`` for the JSON Schema converter.

A context-free grammar has no complement, so ``not`` works only where the complement
of its schema is again something the converter builds. The negated schema is read as
a conjunction of simple constraints, each about one kind of value; its complement is
"another kind" or one of the constraints turned around:

* ``type``: the other kinds (leaving out integers leaves out every number: a grammar
  for "not a whole number" is not built, so that accepts less);
* ``enum`` / ``const``: those values left out, by the type visitors (null, boolean,
  integer, whole numbers, and strings without other string keywords);
* ``required: [a]``: objects without ``a``; ``properties: {a: S}``: objects whose
  ``a`` matches ``not S``;
* ``minItems``/``maxItems``, ``minLength``/``maxLength``, ``minProperties``/
  ``maxProperties``: the other one, one further; ``minimum`` and friends: the
  opposite exclusive or inclusive bound;
* ``not: S``: ``S``; ``anyOf: [A, B]``: not A and not B; ``allOf`` is merged and
  ``$ref`` followed first.

Anything else (``pattern``, ``format``, ``items``, ``multipleOf``, ...) raises
:class:`GrammarError`. ``if``/``then``/``else`` means ``(if and then) or (not if and
else)``, two cases that cannot overlap, so it works exactly where ``not`` of its ``if``
does.
"""

from __future__ import annotations

from typing import Any

from ..errors import GrammarError
from ._schema_merge import ANNOTATIONS, JSON_KINDS, Resolver, Unsatisfiable, merge_all_of, normalize_bounds

__all__ = ["excluded_values", "matches_type", "rewrite_conditional", "rewrite_not"]

_MAX_HOPS = 64
_TURNED = {  # keyword -> (kind it is about, keyword of the complement, shift of the value)
    "minItems": ("array", "maxItems", -1), "maxItems": ("array", "minItems", 1),
    "minLength": ("string", "maxLength", -1), "maxLength": ("string", "minLength", 1),
    "minProperties": ("object", "maxProperties", -1), "maxProperties": ("object", "minProperties", 1),
    "minimum": ("number", "exclusiveMaximum", 0), "maximum": ("number", "exclusiveMinimum", 0),
    "exclusiveMinimum": ("number", "maximum", 0), "exclusiveMaximum": ("number", "minimum", 0),
}


def matches_type(value: Any, types: list[str] | None) -> bool:
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


def rewrite_conditional(schema: dict) -> list:
    """``if``/``then``/``else`` as its cases: [if and then, not if and else], or just one."""
    rest = {k: v for k, v in schema.items() if k not in ("if", "then", "else")}
    if "if" not in schema:  # then/else without if mean nothing
        return [rest]
    condition, then, otherwise = schema["if"], schema.get("then", True), schema.get("else", True)
    if condition is True or condition is False:
        return [{"allOf": [rest, then if condition else otherwise]}]
    return [{"allOf": [rest, condition, then]}, {"allOf": [rest, {"not": condition}, otherwise]}]


def _deref(schema: Any, resolve: Resolver) -> Any:
    for _ in range(_MAX_HOPS):
        if not (isinstance(schema, dict) and "$ref" in schema):
            return schema
        rest = {k: v for k, v in schema.items() if k != "$ref" and k not in ANNOTATIONS}
        target = resolve(schema["$ref"])
        schema = {"allOf": [target, rest]} if rest else target
    raise GrammarError("$ref chain too long or cyclic")


def _own_keys(schema: dict) -> set[str]:
    return {k for k in schema if k not in ANNOTATIONS and not (isinstance(k, str) and k.startswith("x-"))}


def _negations(value: Any, resolve: Resolver, depth: int = 0) -> list:
    """The schemas a 'not' value rules out, one by one (not anyOf[A, B] = not A and not B)."""
    value = _deref(value, resolve)
    if isinstance(value, dict) and _own_keys(value) == {"anyOf"} and isinstance(value["anyOf"], list):
        if depth > _MAX_HOPS:
            raise GrammarError("'not' nested too deeply")
        return [n for branch in value["anyOf"] for n in _negations(branch, resolve, depth + 1)]
    return [value]


def _is_value_exclusion(schema: Any) -> bool:
    return isinstance(schema, dict) and bool({"enum", "const"} & set(schema)) and _own_keys(schema) <= {
        "type", "enum", "const"}


def rewrite_not(schema: dict, resolve: Resolver) -> list | None:
    """Schemas whose union is ``schema``, with its first negation that is not a value
    exclusion spelled out; None when only values are left out (the type visitors do that,
    see :func:`excluded_values`)."""
    rest = {k: v for k, v in schema.items() if k != "not"}
    negations = _negations(schema["not"], resolve)
    kept = []
    for index, negated in enumerate(negations):
        if negated is False:
            continue
        if negated is True:
            raise Unsatisfiable("'not': true matches nothing")
        if _is_value_exclusion(negated):
            kept.append(negated)
            continue
        remaining = kept + negations[index + 1:]
        base = dict(rest, **({"not": {"anyOf": remaining}} if remaining else {}))
        cases = _complement(negated, resolve)
        if not cases:
            raise Unsatisfiable("'not' of a schema that every value matches")
        return [{"allOf": [base, case]} for case in cases]
    normalized = {"anyOf": kept}
    if schema["not"] == normalized:
        return None
    return [dict(rest, **({"not": normalized} if kept else {}))]


def _complement(negated: Any, resolve: Resolver) -> list:
    """Schemas whose union is everything ``negated`` rejects."""
    if not isinstance(negated, dict):
        raise GrammarError(f"'not' needs a schema, not {negated!r}")
    if "allOf" in negated:
        negated = merge_all_of([negated], resolve)
    negated = normalize_bounds(negated)
    cases: list = []
    declared = negated.get("type")
    if declared is not None:
        kinds = {declared} if isinstance(declared, str) else set(declared)
        others = [k for k in JSON_KINDS if k not in kinds and not (k == "number" and "integer" in kinds)]
        if others:
            cases.append({"type": others})
    for key in sorted(_own_keys(negated) - {"type"}):
        cases.extend(_turn(key, negated, resolve))
    return cases


def _turn(key: str, negated: dict, resolve: Resolver) -> list:
    value = negated[key]
    if key in ("enum", "const"):
        if key == "const" and "enum" in negated:
            return []  # one case for the pair, made for 'enum'
        return [{"not": {k: negated[k] for k in ("type", "enum", "const") if k in negated}}]
    if key == "required":
        return [{"type": "object", "properties": {name: False}} for name in value]
    if key == "properties":
        return [{"type": "object", "required": [name], "properties": {name: {"not": sub}}}
                for name, sub in value.items()]
    if key in _TURNED:
        kind, turned, shift = _TURNED[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise GrammarError(f"'not': '{key}' must be a number")
        if shift < 0 and value + shift < 0:
            return []  # minItems 0 holds for every array: its complement is empty
        return [{"type": kind, turned: value + shift}]
    if key == "not":
        return [value]
    if key == "anyOf":
        return [{"not": {"anyOf": value}}]
    raise GrammarError(f"'not' of a schema with '{key}' is not supported: a grammar has no complement, so "
                       "'not' works only on type, enum/const, required, properties, min*/max* and numeric "
                       "bounds (and their combinations)")


def excluded_values(schema: dict) -> list:
    """Values a (value-only) 'not' rules out, for the type visitors."""
    if "not" not in schema:
        return []
    out = []
    for item in schema["not"]["anyOf"]:  # as rewrite_not leaves it
        if not _is_value_exclusion(item):
            raise GrammarError("internal: 'not' left unexpanded")
        values = list(item["enum"]) if "enum" in item else [item["const"]]
        types = item.get("type")
        types = [types] if isinstance(types, str) else types
        out.extend(v for v in values if matches_type(v, types) and ("const" not in item or _same(v, item["const"])))
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b
