"""GBNF building blocks for JSON: quoting, primitive rules, formats, numeric ranges.

Every grammar here accepts a subset of what its JSON Schema allows, never more:
where JSON has several spellings of one value (``1`` and ``1.0``, ``"a"`` and
``"\\u0061"``), some grammars pick one. Unbounded integer parts stop at 16
digits (2**53 is 16 digits; larger numbers lose precision in JSON parsers) so a
model cannot run on digits forever.
"""

from __future__ import annotations

import json
import math

from ..errors import GrammarError

__all__ = [
    "MAX_INT_DIGITS",
    "escaped_json_char",
    "gbnf_class",
    "gbnf_literal",
    "integer_range",
    "json_value_literal",
    "number_range",
    "primitive_rules",
    "seq",
]

MAX_INT_DIGITS = 16
MAX_FRACTION_DIGITS = 20
_MAX_BOUND_DIGITS = 40
# JSON's short escapes, as json.dumps writes them.
_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def seq(*parts: str) -> str:
    """Join GBNF items, dropping empty ones (compact mode has no ``ws``)."""
    return " ".join(part for part in parts if part)


def _gbnf_char(ch: str, in_class: bool) -> str:
    code = ord(ch)
    if ch in "\\\"" or (in_class and ch in "[]-"):
        return "\\" + ch
    if in_class and ch == "^":
        return "\\x5E"  # GBNF has no '\^'; a leading '^' would negate the class
    if ch in "\n\r\t":
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch]
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02X}"
    return ch


def gbnf_literal(text: str) -> str:
    """A GBNF string literal matching exactly ``text``."""
    return '"' + "".join(_gbnf_char(ch, False) for ch in text) + '"'


def gbnf_class(ranges: list[tuple[int, int]], negated: bool = False) -> str:
    """A GBNF character class over inclusive code point ranges."""
    items = []
    for low, high in ranges:
        item = _gbnf_char(chr(low), True)
        if high != low:
            item += "-" + _gbnf_char(chr(high), True)
        items.append(item)
    return "[" + ("^" if negated else "") + "".join(items) + "]"


def escaped_json_char(ch: str) -> str:
    """How json.dumps(ensure_ascii=False) writes ``ch`` inside a string."""
    if ch in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[ch]
    if ord(ch) < 0x20:
        return f"\\u{ord(ch):04x}"
    return ch


def json_value_literal(value: object, ws: str) -> str:
    """GBNF matching the JSON text of ``value`` (whitespace allowed between tokens)."""
    if value is None or isinstance(value, bool):
        return gbnf_literal(json.dumps(value))
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise GrammarError(f"{value!r} is not a JSON number")
        return gbnf_literal(json.dumps(value))
    if isinstance(value, str):
        return gbnf_literal(json.dumps(value, ensure_ascii=False))
    comma = seq(ws, '","', ws)
    if isinstance(value, (list, tuple)):
        items = f" {comma} ".join(json_value_literal(item, ws) for item in value)
        return "(" + seq('"["', ws, items, ws if items else "", '"]"') + ")"
    if isinstance(value, dict):
        members = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise GrammarError(f"object key {key!r} in a const/enum value is not a string")
            members.append(seq(json_value_literal(key, ws), ws, '":"', ws, json_value_literal(item, ws)))
        body = f" {comma} ".join(members)
        return "(" + seq('"{"', ws, body, ws if body else "", '"}"') + ")"
    raise GrammarError(f"{type(value).__name__} value {value!r} is not JSON")


def primitive_rules(ws: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Shared rules: name -> (body, names of rules the body uses)."""
    comma = seq(ws, '","', ws)
    return {
        "json-hex": ("[0-9a-fA-F]", ()),
        # No \uD800-\uDFFF: a surrogate pair would count as one character in
        # jsonschema's length checks but two items here.
        "json-char": (
            ('[^"\\\\\\x7F\\x00-\\x1F] | "\\\\" ( ["\\\\/bfnrt] | "u" ( [0-9a-cA-Ce-fE-F] json-hex{3} '
            '| [dD] [0-7] json-hex{2} ) )'),
            ("json-hex",),
        ),
        # Exactly json.dumps(ensure_ascii=False)'s spelling of each character, so a
        # key can be told apart from a declared one by its text alone.
        "json-key-escape": ('"\\\\" ["\\\\bfnrt] | "\\\\u00" ( "0" [0-7bef] | "1" [0-9a-f] )', ()),
        "json-key-char": ('[^"\\\\\\x00-\\x1F] | json-key-escape', ("json-key-escape",)),
        "json-string": ('"\\"" json-char* "\\""', ("json-char",)),
        "json-integer": (f'"-"? ( "0" | [1-9] [0-9]{{0,{MAX_INT_DIGITS - 1}}} )', ()),
        "json-number": (
            (f'"-"? ( "0" | [1-9] [0-9]{{0,{MAX_INT_DIGITS - 1}}} ) ( "." [0-9]{{1,{MAX_FRACTION_DIGITS}}} )? '
            '( [eE] [-+]? [0-9]{1,3} )?'),
            (),
        ),
        "json-boolean": ('"true" | "false"', ()),
        "json-null": ('"null"', ()),
        "json-value": (
            "json-object | json-array | json-string | json-number | json-boolean | json-null",
            ("json-object", "json-array", "json-string", "json-number", "json-boolean", "json-null"),
        ),
        "json-member": (seq("json-string", ws, '":"', ws, "json-value"), ("json-string", "json-value")),
        "json-object": (
            seq('"{"', ws, "(", seq("json-member (", comma, "json-member )*", ws), ")?", '"}"'),
            ("json-member",),
        ),
        "json-array": (
            seq('"["', ws, "(", seq("json-value (", comma, "json-value )*", ws), ")?", '"]"'),
            ("json-value",),
        ),
        **_format_rules(),
    }


def _format_rules() -> dict[str, tuple[str, tuple[str, ...]]]:
    two_digit_hour = '( [01] [0-9] | "2" [0-3] )'
    day28 = '( "0" [1-9] | "1" [0-9] | "2" [0-8] )'
    day30 = '( "0" [1-9] | [12] [0-9] | "30" )'
    leap_tail = '( "0" [48] | [2468] [048] | [13579] [26] )'
    return {
        # Year 0000 does not exist for Python's date (what jsonschema checks with).
        "json-year": ('[1-9] [0-9]{3} | "0" [1-9] [0-9]{2} | "00" [1-9] [0-9] | "000" [1-9]', ()),
        "json-leap-year": (f"[0-9]{{2}} {leap_tail} | {leap_tail} \"00\"", ()),
        "json-date": (
            (f'json-year "-" ( ( "0" [13578] | "1" [02] ) "-" ( {day30} | "31" ) '
            f'| ( "0" [469] | "11" ) "-" {day30} | "02-" {day28} ) | json-leap-year "-02-29"'),
            ("json-year", "json-leap-year"),
        ),
        "json-time": (
            (f'{two_digit_hour} ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{{1,9}} )? '
            f'( "Z" | [-+] {two_digit_hour} ":" [0-5] [0-9] )'),
            (),
        ),
        "json-uuid": (
            '[0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{12}',
            (),
        ),
        "json-ipv4-octet": ('"25" [0-5] | "2" [0-4] [0-9] | "1" [0-9] [0-9] | [1-9] [0-9] | [0-9]', ()),
        "json-email": (
            ('[a-zA-Z0-9_+-] ( "."? [a-zA-Z0-9_+-] ){0,63} "@" [a-zA-Z0-9] [a-zA-Z0-9-]{0,62} '
            '( "." [a-zA-Z0-9] [a-zA-Z0-9-]{0,62} ){1,8}'),
            (),
        ),
        "json-ipv4-string": (
            '"\\"" json-ipv4-octet "." json-ipv4-octet "." json-ipv4-octet "." json-ipv4-octet "\\""',
            ("json-ipv4-octet",),
        ),
        "json-email-string": ('"\\"" json-email "\\""', ("json-email",)),
        "json-date-string": ('"\\"" json-date "\\""', ("json-date",)),
        "json-time-string": ('"\\"" json-time "\\""', ("json-time",)),
        "json-date-time-string": ('"\\"" json-date "T" json-time "\\""', ("json-date", "json-time")),
        "json-uuid-string": ('"\\"" json-uuid "\\""', ("json-uuid",)),
    }


# -- integer ranges ----------------------------------------------------------


def _digits(count: int) -> str:
    return "" if count == 0 else ("[0-9]" if count == 1 else f"[0-9]{{{count}}}")


def _same_length(low: str, high: str) -> str:
    """Decimal strings of len(low) digits between low and high (inclusive)."""
    if low == high:
        return gbnf_literal(low)
    rest = len(low) - 1
    if rest == 0:
        return f"[{low}-{high}]"
    if low[0] == high[0]:
        return seq(gbnf_literal(low[0]), _same_length(low[1:], high[1:]))
    zeros, nines = "0" * rest, "9" * rest
    alternatives, first, last, tail = [], int(low[0]), int(high[0]), None
    if low[1:] != zeros:
        alternatives.append(seq(gbnf_literal(low[0]), _same_length(low[1:], nines)))
        first += 1
    if high[1:] != nines:
        tail = seq(gbnf_literal(high[0]), _same_length(zeros, high[1:]))
        last -= 1
    if first <= last:
        head = gbnf_literal(str(first)) if first == last else f"[{first}-{last}]"
        alternatives.append(seq(head, _digits(rest)))
    if tail:
        alternatives.append(tail)
    return "( " + " | ".join(alternatives) + " )"


def _natural_range(low: int, high: int | None) -> list[str]:
    """Alternatives for decimals of integers in [low, high] (low >= 0; None = unbounded)."""
    low_len = len(str(low))
    if high is None:
        top = max(low_len, MAX_INT_DIGITS)
        out = [_same_length(str(low), "9" * low_len)]
        if top > low_len:
            out.append(f"[1-9] [0-9]{{{low_len},{top - 1}}}")
        return out
    out, length = [], low_len
    while length <= len(str(high)):
        start = low if length == low_len else 10 ** (length - 1)
        end = high if length == len(str(high)) else 10**length - 1
        out.append(_same_length(str(start), str(end)))
        length += 1
    return out


def _check_bound(value: int | None) -> None:
    if value is not None and len(str(abs(value))) > _MAX_BOUND_DIGITS:
        raise GrammarError(f"numeric bound {value} has more than {_MAX_BOUND_DIGITS} digits")


def integer_range(low: int | None, high: int | None) -> str:
    """GBNF for the JSON integers in [low, high]; either end may be None (unbounded)."""
    _check_bound(low)
    _check_bound(high)
    if low is not None and high is not None and low > high:
        raise GrammarError(f"no integer lies between {low} and {high}")
    alternatives = []
    if low is None or low < 0:
        magnitude_low = 1 if high is None or high >= 0 else -high
        magnitude_high = None if low is None else -low
        alternatives.append(seq('"-"', _group(_natural_range(magnitude_low, magnitude_high))))
    if high is None or high >= 0:
        alternatives.extend(_natural_range(max(low or 0, 0), high))
    return _group(alternatives)


def _group(alternatives: list[str]) -> str:
    return alternatives[0] if len(alternatives) == 1 else "( " + " | ".join(alternatives) + " )"


# -- number ranges -------------------------------------------------------------

_FRACTION_ANY = f'( "." [0-9]{{1,{MAX_FRACTION_DIGITS}}} )?'
_FRACTION_ZERO = f'( "." "0"{{1,{MAX_FRACTION_DIGITS}}} )?'
_FRACTION_NONZERO = f'"." "0"{{0,{MAX_FRACTION_DIGITS - 1}}} [1-9] [0-9]{{0,{MAX_FRACTION_DIGITS - 1}}}'


def _magnitudes(low: int, low_excl: bool, high: int | None, high_excl: bool) -> list[str]:
    """Decimals (no sign, no exponent) whose value v has low <(=) v <(=) high."""
    if high is not None and low == high:
        return [] if (low_excl or high_excl) else [seq(gbnf_literal(str(low)), _FRACTION_ZERO)]
    out = [seq(gbnf_literal(str(low)), _FRACTION_NONZERO if low_excl else _FRACTION_ANY)]
    if high is None or low + 1 <= high - 1:
        out.append(seq(_group(_natural_range(low + 1, None if high is None else high - 1)), _FRACTION_ANY))
    if high is not None and not high_excl:
        out.append(seq(gbnf_literal(str(high)), _FRACTION_ZERO))
    return out


def number_range(low: int | None, low_excl: bool, high: int | None, high_excl: bool) -> str:
    """GBNF for JSON numbers (written without exponent) inside integer bounds."""
    _check_bound(low)
    _check_bound(high)
    if low is not None and high is not None and (low > high or (low == high and (low_excl or high_excl))):
        raise GrammarError(f"no number satisfies bounds {low} .. {high}")
    alternatives = []
    if low is None or low < 0:  # negative numbers, written as "-" and a magnitude
        if high is None or high >= 0:
            magnitude_low, magnitude_low_excl = 0, True
        else:
            magnitude_low, magnitude_low_excl = -high, high_excl
        negative = _magnitudes(magnitude_low, magnitude_low_excl, None if low is None else -low, low_excl)
        if negative:
            alternatives.append(seq('"-"', _group(negative)))
    if high is None or high > 0 or (high == 0 and not high_excl):
        if low is None or low < 0:
            alternatives.extend(_magnitudes(0, False, high, high_excl))
        else:
            alternatives.extend(_magnitudes(low, low_excl, high, high_excl))
    if not alternatives:
        raise GrammarError(f"no number satisfies bounds {low} .. {high}")
    return _group(alternatives)
