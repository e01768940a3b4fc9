"""Arrays for the JSON Schema converter (see :mod:`.json_schema`).

``contains`` is counted: the grammar walks the items with the number that match so
far. ``minContains`` needs only the items and their merge with ``contains``;
``maxContains`` also needs the items that do not match, so it works where ``not`` of the
``contains`` schema does (:mod:`._schema_logic`). ``uniqueItems`` needs a grammar that
remembers every earlier item, which a context-free grammar cannot do in general; it is
supported when the items come from a short list of values (``enum``, ``const``,
boolean, null), by tracking the set used so far.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from ..errors import GrammarError
from ._json_terminals import gbnf_literal, json_value_literal, seq
from ._schema_logic import excluded_values
from ._schema_merge import ANNOTATIONS, Unsatisfiable, count_keyword, infer_types, merge_all_of, path_hint

if TYPE_CHECKING:
    from .json_schema import _Converter

__all__ = ["array_rule"]

# Nested optional groups deeper than this are moved into their own rule, to stay
# far from the GBNF nesting limit.
_MAX_INLINE_DEPTH = 16


def _group(options: list[str]) -> str:
    return options[0] if len(options) == 1 else "( " + " | ".join(options) + " )"


# -- arrays ------------------------------------------------------------------------


def _array_parts(schema: dict) -> tuple[list, Any]:
    """(positional item schemas, schema of the items after them or None for none)."""
    items = schema.get("items")
    if isinstance(items, list):  # draft 4-7 tuple form
        rest = schema.get("additionalItems")
        return items, None if rest in (None, False) else rest
    prefix = schema.get("prefixItems")
    if prefix is not None:
        if not isinstance(prefix, list):
            raise GrammarError("'prefixItems' must be a list")
        return prefix, None if items in (None, False) else items
    return [], True if items is None else (None if items is False else items)


def array_rule(conv: _Converter, schema: dict, path: str, depth: int) -> str:
    if any(isinstance(v, list) for v in excluded_values(schema)):
        raise GrammarError("'not' of an array value is not supported")
    prefix, rest = _array_parts(schema)
    low, high = count_keyword(schema, "minItems") or 0, count_keyword(schema, "maxItems")
    if rest is None:
        high = len(prefix) if high is None else min(high, len(prefix))
    if high is not None and low > high:
        raise Unsatisfiable(f"no array satisfies minItems {low} with at most {high} items")
    contains = _contains(schema, high)
    if schema.get("uniqueItems") is True and (high is None or high > 1):
        if prefix or contains:
            raise GrammarError("'uniqueItems' together with prefixItems or contains is not supported")
        return _Unique(conv, rest, path, depth).rule(low, high)
    if contains:
        if prefix:
            raise GrammarError("'contains' together with prefixItems (or tuple 'items') is not supported")
        return _contains_rule(conv, rest, contains, low, high, path, depth)
    if high is not None and high < len(prefix):
        prefix = prefix[:high]
    prefix_exprs = [conv.visit(p, f"{path}/prefixItems/{i}", depth + 1) for i, p in enumerate(prefix)]
    rest_expr = None
    if rest is not None and (high is None or high > len(prefix)):
        rest_expr = conv.visit(rest, f"{path}/items", depth + 1)
    hint = path_hint(path)
    comma = seq(conv.ws, '","', conv.ws)
    if prefix_exprs:
        elements = _tuple_elements(conv, prefix_exprs, rest_expr, low, high, hint)
    elif rest_expr is not None:
        following = conv.define(f"{hint}-next", seq(comma, rest_expr))
        more = conv.repeat(following, max(low, 1) - 1, None if high is None else high - 1, hint)
        elements = seq(rest_expr, more)
    else:
        elements = ""
    return conv.define(hint, _brackets(conv.ws, elements, low > 0))


def _brackets(ws: str, elements: str, non_empty: bool) -> str:
    open_, close = gbnf_literal("["), gbnf_literal("]")
    if not elements:
        return seq(open_, ws, close)
    if non_empty:
        return seq(open_, ws, elements, ws, close)
    return seq(open_, ws, f"( {seq(elements, ws)} )?", close)


def _tuple_elements(
    conv: _Converter, prefix: list[str], rest: str | None, low: int, high: int | None, hint: str
) -> str:
    comma = seq(conv.ws, '","', conv.ws)
    count = len(prefix)
    tail = ""
    if rest is not None:
        following = conv.define(f"{hint}-next", seq(comma, rest))
        tail = conv.repeat(following, max(0, low - count), None if high is None else high - count, hint)
    for position in range(count - 1, -1, -1):
        part = seq(comma if position else "", prefix[position], tail)
        if position and position >= low:
            if (count - position) % _MAX_INLINE_DEPTH == 0:
                part = conv.define(f"{hint}-from", part)
            part = f"( {part} )?"
        tail = part
    return tail


# -- contains ------------------------------------------------------------------------

MAX_COUNTING_STATES = 5000
MAX_UNIQUE_STATES = 2048


def _contains(schema: dict, high: int | None) -> tuple[Any, int, int | None] | None:
    """(contains schema, minContains, maxContains or None) where they constrain anything."""
    if "contains" not in schema:
        return None  # minContains/maxContains alone mean nothing
    least = count_keyword(schema, "minContains")
    least = 1 if least is None else least
    most = count_keyword(schema, "maxContains")
    if most is not None and high is not None and most >= high:
        most = None
    if most is not None and least > most:
        raise Unsatisfiable(f"minContains {least} is above maxContains {most}")
    return None if least == 0 and most is None else (schema["contains"], least, most)


def _contains_rule(conv: _Converter, rest: Any, contains: tuple, low: int, high: int | None, path: str,
                   depth: int) -> str:
    wanted, least, most = contains
    items = True if rest is None else rest
    high = 0 if rest is None else high
    hits = conv.attempt(lambda: conv.visit({"allOf": [items, wanted]}, f"{path}/contains", depth + 1))
    if most is None:
        others = conv.visit(items, f"{path}/items", depth + 1) if high != 0 else None
    else:
        try:
            others = conv.attempt(lambda: conv.visit({"allOf": [items, {"not": wanted}]}, f"{path}/contains",
                                                     depth + 1))
        except GrammarError as exc:  # (Unsatisfiable never gets here: attempt() takes it)
            raise GrammarError(f"'maxContains' needs the items that do not match 'contains': {exc}") from None
    counter = _ItemCounter(conv, others, hits, least, most, path_hint(path))
    return conv.define(path_hint(path), counter.body(low, high))


class _ItemCounter:
    """Arrays of ``others`` and ``hits`` items with ``least``..``most`` hits: the items are
    walked with the number of hits so far. Without ``most``, ``others`` may be any item
    (hits included) and the count stops at ``least``."""

    def __init__(self, conv: _Converter, others: str | None, hits: str | None, least: int, most: int | None,
                 hint: str) -> None:
        self.conv, self.others, self.hits, self.least, self.most, self.hint = conv, others, hits, least, most, hint
        self.comma = seq(conv.ws, '","', conv.ws)
        self.memo: dict[tuple[int, int], str | None] = {}

    def body(self, low: int, high: int | None) -> str:
        self.low, self.high = low, high
        self.cap = high if high is not None else max(low, 1)
        if ((self.most if self.most is not None else self.least) + 1) * (self.cap + 1) > MAX_COUNTING_STATES:
            raise GrammarError(f"'contains' with these counts needs too large a grammar "
                               f"(more than {MAX_COUNTING_STATES} states)")
        first = self.state(0, 0)
        empty_ok = low == 0 and self.least == 0
        if first is None and not empty_ok:
            raise Unsatisfiable(f"no array has {self.least} items matching 'contains' within its length")
        if first is None:
            return _brackets(self.conv.ws, "", False)
        return _brackets(self.conv.ws, first, not empty_ok)

    def state(self, hit: int, count: int) -> str | None:
        """What may follow ``count`` items of which ``hit`` matched (never empty at count 0)."""
        if (hit, count) not in self.memo:
            self.memo[(hit, count)] = None
            self.memo[(hit, count)] = self._build(hit, count)
        return self.memo[(hit, count)]

    def _build(self, hit: int, count: int) -> str | None:
        sep = self.comma if count else ""
        room = None if self.high is None else self.high - count
        if self.most is None and hit >= self.least:  # enough hits: any items from here
            if self.others is None:
                return '""' if count else None
            following = self.conv.define(f"{self.hint}-next", seq(self.comma, self.others))
            need = max(0, self.low - count)
            if count:
                return self.conv.repeat(following, need, room, self.hint) or '""'
            if room == 0:
                return None
            return seq(self.others, self.conv.repeat(following, max(need - 1, 0), None if room is None else room - 1,
                                                     self.hint))
        if self.high is None and count == self.cap:
            return self._loop(hit)
        options = ['""'] if count and hit >= self.least and count >= self.low else []
        step = min(count + 1, self.cap)
        if room is None or room > 0:
            if self.others is not None:
                after = self.state(hit, step)
                options += [] if after is None else [seq(sep, self.others, after)]
            if self.hits is not None and (self.most is None or hit < self.most):
                after = self.state(hit + 1, step)
                options += [] if after is None else [seq(sep, self.hits, after)]
        if not options:
            return None
        body = options[0] if len(options) == 1 else "( " + " | ".join(options) + " )"
        return body if body == '""' else self.conv.define(f"{self.hint}-count", body)


    def _loop(self, hit: int) -> str | None:
        """Past ``cap`` items with no maxItems: other items may come any number of times."""
        others = f"( {seq(self.comma, self.others)} )*" if self.others is not None else ""
        options = ['""'] if hit >= self.least else []
        if self.hits is not None and (self.most is None or hit < self.most):
            after = self.state(hit + 1, self.cap)
            options += [] if after is None else [seq(self.comma, self.hits, after)]
        if not options:
            return None
        body = seq(others, options[0] if len(options) == 1 else "( " + " | ".join(options) + " )")
        return body if body == '""' else self.conv.define(f"{self.hint}-count", body)


# -- uniqueItems ---------------------------------------------------------------------


def _candidates(schema: Any, conv: _Converter, depth: int = 0) -> list | None:
    """Every value ``schema`` could allow, when that is a short list; else None."""
    if depth > 16 or not isinstance(schema, dict):
        return None
    if "$ref" in schema:
        rest = {k: v for k, v in schema.items() if k != "$ref" and k not in ANNOTATIONS}
        return _candidates({"allOf": [conv.resolve(schema["$ref"]), rest]}, conv, depth + 1)
    if "allOf" in schema:
        return _candidates(merge_all_of([schema], conv.resolve), conv, depth + 1)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            found = [_candidates(branch, conv, depth + 1) for branch in schema[key]]
            return None if any(f is None for f in found) else [v for f in found for v in f]
    if "enum" in schema or "const" in schema:
        return list(schema["enum"]) if "enum" in schema else [schema["const"]]
    types = infer_types(schema)
    if types and set(types) <= {"boolean", "null"}:
        return [v for t, values in (("boolean", [False, True]), ("null", [None])) if t in types for v in values]
    return None


def _same_value_key(value: Any) -> str:
    """Equal under JSON Schema (1 == 1.0, true != 1) exactly when the keys are equal."""
    def norm(v: Any) -> Any:
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return [type(v).__name__, v]
        if isinstance(v, (int, float)):
            return ["n", int(v) if float(v).is_integer() and math.isfinite(v) else v]
        if isinstance(v, list):
            return ["a", [norm(x) for x in v]]
        return ["o", sorted((k, norm(x)) for k, x in v.items())]
    return json.dumps(norm(value), sort_keys=True)


class _Unique:
    """Arrays of distinct items drawn from a short list of values: the grammar tracks the
    set of values used so far."""

    def __init__(self, conv: _Converter, rest: Any, path: str, depth: int) -> None:
        self.conv, self.hint = conv, path_hint(path)
        self.comma = seq(conv.ws, '","', conv.ws)
        values = None if rest is None else _candidates(rest, conv)
        if rest is not None and values is None:
            raise GrammarError("'uniqueItems': true is supported only when the items are a short list of values "
                               "(enum, const, boolean, null): a grammar cannot remember arbitrary earlier items "
                               "to keep them apart")
        values = [] if rest is None else conv.accepted_values(rest, values, f"{path}/items", depth + 1)
        classes: dict[str, list[str]] = {}
        for value in values:
            spelling = json_value_literal(value, conv.ws)
            group = classes.setdefault(_same_value_key(value), [])
            if spelling not in group:
                group.append(spelling)
        self.items = ["( " + " | ".join(g) + " )" if len(g) > 1 else g[0] for g in classes.values()]
        self.memo: dict[frozenset, str | None] = {}

    def rule(self, low: int, high: int | None) -> str:
        count = len(self.items)
        top = count if high is None else min(high, count)
        states = sum(math.comb(count, k) for k in range(top + 1))
        if states > MAX_UNIQUE_STATES:
            raise GrammarError(f"'uniqueItems' over {count} values needs too large a grammar ({states} sets of "
                               f"used values; at most {MAX_UNIQUE_STATES}): lower maxItems or the number of values")
        self.low, self.top = low, top
        first = self.state(frozenset())
        if first is None and low > 0:
            raise Unsatisfiable(f"no array of distinct items has {low} items (only {count} values are allowed)")
        return self.conv.define(self.hint, _brackets(self.conv.ws, first or "", low > 0))

    def state(self, used: frozenset) -> str | None:
        if used not in self.memo:
            options = ['""'] if used and len(used) >= self.low else []
            if len(used) < self.top:
                sep = self.comma if used else ""
                for index, item in enumerate(self.items):
                    if index not in used:
                        after = self.state(used | {index})
                        if after is not None:
                            options.append(seq(sep, item, after))
            body = None if not options else options[0] if len(options) == 1 else "( " + " | ".join(options) + " )"
            self.memo[used] = body if body in (None, '""') else self.conv.define(f"{self.hint}-unique", body)
        return self.memo[used]
