"""Objects and arrays for the JSON Schema converter (see :mod:`.json_schema`)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..errors import GrammarError
from ._json_terminals import gbnf_literal, seq
from ._schema_merge import count_keyword, path_hint

if TYPE_CHECKING:
    from .json_schema import _Converter

__all__ = ["array_rule", "object_rule"]

# Nested optional groups deeper than this are moved into their own rule, to stay
# far from the GBNF nesting limit.
_MAX_INLINE_DEPTH = 16


def _group(options: list[str]) -> str:
    return options[0] if len(options) == 1 else "( " + " | ".join(options) + " )"


# -- objects -----------------------------------------------------------------------


def _extra_schema(conv: _Converter, schema: dict, properties: dict) -> Any:
    extra = schema.get("additionalProperties")
    if extra is None:
        # JSON Schema allows extra keys by default; a generator usually should not
        # invent them, so only objects that declare nothing get them by default.
        return not properties or conv.extra_properties
    if not isinstance(extra, (bool, dict)):
        raise GrammarError(f"'additionalProperties' must be a boolean or a schema, not {extra!r}")
    return extra


def object_rule(conv: _Converter, schema: dict, path: str, depth: int) -> str:
    properties = schema.get("properties", {})
    required = schema.get("required", [])
    if not isinstance(properties, dict):
        raise GrammarError("'properties' must be an object")
    if not isinstance(required, list) or not all(isinstance(name, str) for name in required):
        raise GrammarError("'required' must be a list of strings")
    required = list(dict.fromkeys(required))
    extra = _extra_schema(conv, schema, properties)
    names = list(properties) + [name for name in required if name not in properties]
    ws, hint = conv.ws, path_hint(path)
    members = []
    for name in names:
        if name not in properties and extra is False:
            raise GrammarError(f"required property {name!r} is not in 'properties' and extra ones are forbidden")
        sub_path = f"{path}/properties/{name.replace('~', '~0').replace('/', '~1')}"
        value = conv.visit(properties.get(name, extra), sub_path, depth + 1)
        key = gbnf_literal(json.dumps(name, ensure_ascii=False))
        members.append(seq(key, ws, '":"', ws, value))
    extra_member = None
    if extra is not False:
        value = conv.visit(extra, f"{path}/additionalProperties", depth + 1)
        extra_member = conv.define(f"{hint}-extra", seq(conv.key_excluding(names, hint), ws, '":"', ws, value))
    body = _object_body(conv, members, [name in required for name in names], extra_member, hint)
    return conv.define(hint, body)


def _object_body(conv: _Converter, members: list[str], required: list[bool], extra: str | None, hint: str) -> str:
    """Members in declared order; optional ones may be left out, commas only between."""
    ws = conv.ws
    comma = seq(ws, '","', ws)
    count = len(members)
    extra_tail = f"( {seq(comma, extra)} )*" if extra else ""
    first_required = next((i for i, flag in enumerate(required) if flag), count)

    def item(i: int) -> str:
        part = seq(comma, members[i])
        return part if required[i] else f"( {part} )?"

    # tails[k]: what may follow once some member before k was written.
    tails = [""] * (count + 1)
    tails[count] = extra_tail
    for k in range(count - 1, 0, -1):
        tail = seq(item(k), tails[k + 1])
        tails[k] = conv.define(f"{hint}-rest", tail) if first_required > 0 and k <= first_required + 1 else tail
    starts = [seq(members[j], tails[j + 1]) for j in range(min(first_required, count - 1) + 1)] if count else []
    if extra and first_required == count:
        starts.append(seq(extra, extra_tail))
    open_, close = gbnf_literal("{"), gbnf_literal("}")
    if not starts:
        return seq(open_, ws, close)
    if first_required == count:
        return seq(open_, ws, f"( {seq(_group(starts), ws)} )?", close)
    return seq(open_, ws, _group(starts), ws, close)


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
    prefix, rest = _array_parts(schema)
    low, high = count_keyword(schema, "minItems") or 0, count_keyword(schema, "maxItems")
    if rest is None:
        high = len(prefix) if high is None else min(high, len(prefix))
    if high is not None and low > high:
        raise GrammarError(f"no array satisfies minItems {low} with at most {high} items")
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
