"""Objects for the JSON Schema converter (see :mod:`.json_schema`).

Members come in declared order: ``properties``, then the ``required`` names that
``properties`` lacks; optional ones may be left out. After them come the free members:
keys matching ``patternProperties`` and other keys (``additionalProperties``,
``propertyNames``). A declared name whose schema is ``false``, or that
``propertyNames`` rejects, is left out and never written as a free key either.

``minProperties`` / ``maxProperties`` are counted: the grammar walks the declared
members with the number written so far. A grammar cannot stop a free key from
repeating an earlier free key (``json.loads`` then keeps one), so towards
``minProperties`` only the first free member counts (it cannot repeat a declared name);
every free member counts towards ``maxProperties``. Where a minimum would need two
free keys, :class:`GrammarError` says so.

``dependentRequired`` / ``dependentSchemas`` (and draft-7 ``dependencies``) split the
object into cases, one per choice of present or absent trigger; the cases cannot
overlap, and each is an ordinary object (a trigger that is absent is a property with
schema ``false``; a present one is required, with its dependent schema merged in).
"""

from __future__ import annotations

import itertools
import json
import re
from typing import TYPE_CHECKING, Any

from ..errors import GrammarError
from ._json_terminals import gbnf_literal, seq
from ._schema_logic import excluded_values
from ._schema_merge import Unsatisfiable, count_keyword, json_kinds, path_hint
from .regex import pattern_to_gbnf

if TYPE_CHECKING:
    from .json_schema import _Converter

__all__ = ["object_rule"]

MAX_BRANCHING_TRIGGERS = 6  # optional dependency triggers: 2**6 cases at most
MAX_COUNTING_STATES = 5000
_DEPENDENCY_KEYS = ("dependentRequired", "dependentSchemas", "dependencies")


def _group(options: list[str]) -> str:
    options = [option or '""' for option in options]
    return options[0] if len(options) == 1 else "( " + " | ".join(options) + " )"


def _pointer(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")


def object_rule(conv: _Converter, schema: dict, path: str, depth: int) -> str:
    if any(isinstance(v, dict) for v in excluded_values(schema)):
        raise GrammarError("'not' of an object value is not supported")
    cases = _dependency_cases(schema)
    if cases is not None:
        return conv.union([(case, path) for case in cases], depth + 1, "dependentRequired/dependentSchemas")
    return _Object(conv, schema, path, depth).rule()


# -- dependentRequired / dependentSchemas ---------------------------------------------


def _dependency_cases(schema: dict) -> list | None:
    needs: dict[str, list] = {name: list(v) for name, v in schema.get("dependentRequired", {}).items()}
    implies: dict[str, list] = {name: [v] for name, v in schema.get("dependentSchemas", {}).items()}
    for name, value in schema.get("dependencies", {}).items():
        if isinstance(value, list):
            needs[name] = [*needs.get(name, []), *value]
        else:
            implies[name] = [*implies.get(name, []), value]
    if not needs and not implies:
        return None
    base = {k: v for k, v in schema.items() if k not in _DEPENDENCY_KEYS}
    base["type"] = "object"
    required, properties = base.get("required", []), base.get("properties", {})
    triggers = list(dict.fromkeys([*needs, *implies]))
    branching = [t for t in triggers if t not in required and properties.get(t, True) is not False]
    if len(branching) > MAX_BRANCHING_TRIGGERS:
        raise GrammarError(f"'dependentRequired'/'dependentSchemas': {len(branching)} optional trigger properties "
                           f"would need {2 ** len(branching)} object variants (at most {MAX_BRANCHING_TRIGGERS} "
                           "triggers are supported)")
    cases = []
    for mask in itertools.product((False, True), repeat=len(branching)):
        present = [t for t in triggers if t in required] + [t for t, on in zip(branching, mask) if on]
        case = dict(base)
        case["required"] = list(dict.fromkeys([*required, *present, *(n for t in present for n in needs.get(t, []))]))
        case["properties"] = {**properties, **{t: False for t in triggers if t not in present}}
        extra = [s for t in present for s in implies.get(t, [])]
        cases.append({"allOf": [case, *extra]} if extra else case)
    return cases


# -- one object ------------------------------------------------------------------------


class _Object:
    def __init__(self, conv: _Converter, schema: dict, path: str, depth: int) -> None:
        self.conv, self.schema, self.path, self.depth = conv, schema, path, depth
        self.hint = path_hint(path)
        self.properties = schema.get("properties", {})
        self.patterns = schema.get("patternProperties", {})
        required = schema.get("required", [])
        if not isinstance(self.properties, dict) or not isinstance(self.patterns, dict):
            raise GrammarError("'properties' and 'patternProperties' must be objects")
        if not isinstance(required, list) or not all(isinstance(name, str) for name in required):
            raise GrammarError("'required' must be a list of strings")
        self.required = list(dict.fromkeys(required))
        self.names = list(self.properties) + [n for n in self.required if n not in self.properties]
        self.extra = self._extra_schema()
        self.key_schema = self._key_schema()

    def _extra_schema(self) -> Any:
        extra = self.schema.get("additionalProperties")
        if extra is None:
            # JSON Schema allows extra keys by default; a generator usually should not
            # invent them, so only objects that declare nothing get them by default.
            declared = any(v is not False for v in self.properties.values()) or self.patterns
            return not declared or self.conv.extra_properties
        if not isinstance(extra, (bool, dict)):
            raise GrammarError(f"'additionalProperties' must be a boolean or a schema, not {extra!r}")
        return extra

    def _key_schema(self) -> Any:
        """What ``propertyNames`` leaves: True (any key), False (none) or a string schema."""
        names = self.schema.get("propertyNames", True)
        if names is True or names == {}:
            return True
        if names is False or "string" not in json_kinds(names, self.conv.resolve):
            return False
        return {"allOf": [{"type": "string"}, names]}

    def _matching_patterns(self, name: str) -> list:
        return [sub for pattern, sub in self.patterns.items() if _search(pattern, name)]

    def rule(self) -> str:
        allowed = set(self.names)
        if self.key_schema is False:
            allowed = set()
        elif self.key_schema is not True and self.names:
            allowed = set(self.conv.accepted_values(self.key_schema, self.names, f"{self.path}/propertyNames",
                                                    self.depth + 1))
        members, flags = [], []
        for name in self.names:
            value = self._member_value(name, name in allowed)
            if value is not None:
                key = gbnf_literal(json.dumps(name, ensure_ascii=False))
                members.append(seq(key, self.conv.ws, '":"', self.conv.ws, value))
                flags.append(name in self.required)
        free = self._free_member()
        low, high = count_keyword(self.schema, "minProperties") or 0, count_keyword(self.schema, "maxProperties")
        if low == 0 and high is None:
            body = _object_body(self.conv, members, flags, free, self.hint)
        else:
            body = _Counter(self.conv, members, flags, free, self.hint).body(low, high)
        return self.conv.define(self.hint, body)

    def _member_value(self, name: str, allowed: bool) -> str | None:
        """The value rule of a declared name, or None when the name may not appear."""
        parts = self._matching_patterns(name)
        if name in self.properties:
            parts.insert(0, self.properties[name])
        elif not parts:
            parts = [self.extra]
        required = name in self.required
        if not allowed or any(part is False for part in parts):
            if required:
                if name not in self.properties and not parts[1:] and self.extra is False:
                    raise Unsatisfiable(f"required property {name!r} is not in 'properties' "
                                        "and extra ones are forbidden")
                why = "propertyNames rejects it" if not allowed else "its schema false matches nothing"
                raise Unsatisfiable(f"required property {name!r} is forbidden ({why})")
            return None
        sub = parts[0] if len(parts) == 1 else {"allOf": parts}
        sub_path = f"{self.path}/properties/{_pointer(name)}"
        if required:
            return self.conv.visit(sub, sub_path, self.depth + 1)
        return self.conv.attempt(lambda: self.conv.visit(sub, sub_path, self.depth + 1))

    def _free_member(self) -> str | None:
        """Any one member beyond the declared names, or None when there can be none."""
        if self.key_schema is False:
            return None
        if self.patterns and self.key_schema is not True:
            raise GrammarError("'propertyNames' together with 'patternProperties' is not supported "
                               "(a grammar cannot intersect the two key languages)")
        options = [member for pattern in self.patterns if (member := self._pattern_member(pattern))]
        if self.extra is not False:
            options += [member for member in [self._extra_member()] if member]
        return self.conv.define(f"{self.hint}-extra", _group(options)) if options else None

    def _pattern_member(self, pattern: str) -> str | None:
        """A key matching ``pattern``, with a value every pattern it may also match allows."""
        clash = [name for name in self.names if _search(pattern, name)]
        if clash:
            raise GrammarError(f"'patternProperties' {pattern!r} also matches the declared property {clash[0]!r}: "
                               "a grammar cannot keep the pattern's keys from repeating it")
        conv, ws = self.conv, self.conv.ws
        parts = [sub for other, sub in self.patterns.items() if other == pattern or not _disjoint(pattern, other)]
        value = conv.attempt(lambda: conv.visit(parts[0] if len(parts) == 1 else {"allOf": parts},
                                                f"{self.path}/patternProperties/{_pointer(pattern)}", self.depth + 1))
        if value is None:
            return None
        quote = gbnf_literal('"')
        key = seq(quote, pattern_to_gbnf(pattern, conv, f"{self.hint}-key"), quote)
        return seq(key, ws, '":"', ws, value)

    def _extra_member(self) -> str | None:
        """A key that is neither declared nor matched by a pattern. Where every pattern starts
        with known text ("^x-"), keys starting with it are left out; otherwise the value must
        also satisfy every pattern's schema, since the key might match one."""
        conv, ws = self.conv, self.conv.ws
        prefixes = [_literal_prefix(pattern) for pattern in self.patterns]
        parts = [self.extra]
        if None in prefixes:
            parts += list(self.patterns.values())
        sub = parts[0] if len(parts) == 1 else {"allOf": parts}
        value = conv.attempt(lambda: conv.visit(sub, f"{self.path}/additionalProperties", self.depth + 1))
        if value is None:
            return None
        if self.key_schema is True:
            key = conv.key_excluding(self.names, self.hint, [] if None in prefixes else prefixes)
        else:
            key = conv.attempt(self._extra_key)
        return None if key is None else seq(key, ws, '":"', ws, value)

    def _extra_key(self) -> str:
        """Keys that propertyNames allows, none of them a declared name."""
        clash = self.conv.accepted_values(self.key_schema, self.names, f"{self.path}/propertyNames", self.depth + 1)
        if clash:
            raise GrammarError(f"'propertyNames' allows the declared name {clash[0]!r} and extra keys are allowed: "
                               "a grammar cannot keep extra keys from repeating it")
        return self.conv.visit(self.key_schema, f"{self.path}/propertyNames", self.depth + 1)


_META = frozenset(".^$*+?{}[]()|\\")


def _literal_prefix(pattern: str) -> str | None:
    """Text every key ``pattern`` matches starts with ("^x-" -> "x-"), or None if unknown."""
    if not pattern.startswith("^") or "|" in pattern:
        return None
    out: list[str] = []
    for ch in pattern[1:]:
        if ch in _META:
            if ch in "*?{" and out:
                out.pop()  # the character before may be absent
            break
        out.append(ch)
    return "".join(out)


def _disjoint(first: str, second: str) -> bool:
    """Whether no key can match both patterns (known only from their literal prefixes)."""
    a, b = _literal_prefix(first), _literal_prefix(second)
    return a is not None and b is not None and not a.startswith(b) and not b.startswith(a)


def _search(pattern: str, name: str) -> bool:
    """Whether ``pattern`` matches ``name`` the way validators test patternProperties."""
    try:
        return re.search(pattern, name) is not None
    except re.error as exc:
        raise GrammarError(f"patternProperties: {pattern!r} is not a valid regular expression: {exc}") from None


# -- bodies ----------------------------------------------------------------------------


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


class _Counter:
    """Objects with between ``low`` and ``high`` members: declared members walked in order,
    with the number written so far (capped where it stops mattering) in the rule."""

    def __init__(self, conv: _Converter, members: list[str], required: list[bool], free: str | None,
                 hint: str) -> None:
        self.conv, self.members, self.required, self.free, self.hint = conv, members, required, free, hint
        self.comma = seq(conv.ws, '","', conv.ws)
        self.memo: dict[tuple[int, int], str | None] = {}

    def body(self, low: int, high: int | None) -> str:
        self.low, self.high = low, high
        if high is not None and sum(self.required) > high:
            raise Unsatisfiable(f"maxProperties {high} is below the {sum(self.required)} required properties")
        if high is not None and low > high:
            raise Unsatisfiable(f"minProperties {low} is above maxProperties {high}")
        if low > len(self.members) + 1 and self.free is not None:
            raise GrammarError(f"'minProperties' {low} would need {low - len(self.members)} keys beyond the "
                               f"declared properties, and a grammar cannot stop such keys from repeating one "
                               "another (JSON parsers keep one of them); declare more properties")
        self.cap = high if high is not None else max(low, 1)
        if len(self.members) * (self.cap + 1) > MAX_COUNTING_STATES:
            raise GrammarError(f"'minProperties'/'maxProperties' over {len(self.members)} properties need too large "
                               f"a grammar (more than {MAX_COUNTING_STATES} states)")
        first = self.state(0, 0)
        open_, close, ws = gbnf_literal("{"), gbnf_literal("}"), self.conv.ws
        empty_ok = low == 0 and not any(self.required)
        if first is None:
            if not empty_ok:
                raise Unsatisfiable(f"no object has between {low} and {high} of these properties")
            return seq(open_, ws, close)
        if empty_ok:
            return seq(open_, ws, f"( {seq(first, ws)} )?", close)
        return seq(open_, ws, first, ws, close)

    def state(self, k: int, written: int) -> str | None:
        """What may follow member k-1 with ``written`` members so far (None: nothing can).
        With nothing written yet the result is never empty (the caller handles ``{}``)."""
        if k == len(self.members):
            return self.tail(written)
        if (k, written) not in self.memo:
            self.memo[(k, written)] = None
            options = []
            if self.high is None or written < self.high:
                after = self.state(k + 1, min(written + 1, self.cap))
                if after is not None:
                    options.append(seq(self.comma if written else "", self.members[k], after))
            if not self.required[k]:
                skip = self.state(k + 1, written)
                if skip is not None:
                    options.append(skip)
            body = _group(options) if options else None
            self.memo[(k, written)] = body if body in (None, '""') else self.conv.define(f"{self.hint}-count", body)
        return self.memo[(k, written)]

    def tail(self, written: int) -> str | None:
        """Free members after the declared ones: enough to reach ``low`` (at most one counts)."""
        need = max(0, self.low - written)
        room = None if self.high is None else self.high - written
        if self.free is None:
            return None if need or not written else '""'
        if need > 1 or (not written and room == 0):
            return None
        following = self.conv.define(f"{self.hint}-more", seq(self.comma, self.free))
        if written:
            return self.conv.repeat(following, need, room, self.hint) or '""'
        return seq(self.free, self.conv.repeat(following, 0, None if room is None else room - 1, self.hint))
