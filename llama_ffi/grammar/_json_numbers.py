"""Integers and numbers for the JSON Schema converter: bounds, ``multipleOf`` and the
values a ``not`` leaves out (see :mod:`.json_schema`).

``multipleOf`` on integers is exact: the decimal digits are run through the smallest
automaton that tracks the remainder (4 states for 1000, 7 for 7), crossed with the range.
A fractional ``multipleOf`` is taken only when it is a binary fraction (0.5, 0.25, 1.5):
validators divide in floating point, where 0.3 is not a multiple of 0.1, so a decimal
step would make the grammar and the validator disagree. On numbers, a whole step gives the
integer multiples (written without a fraction: accepts less), a binary fraction the
multiples between required bounds, one literal each.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from ..errors import GrammarError
from ._json_terminals import MAX_INT_DIGITS, gbnf_literal, integer_range, number_range, seq
from ._schema_logic import excluded_values
from ._schema_merge import Unsatisfiable, path_hint

if TYPE_CHECKING:
    from .json_schema import _Converter

__all__ = ["integer_rule", "number_rule"]

MAX_LISTED_MULTIPLES = 256  # a bounded range with this few multiples is written out
MAX_MULTIPLE_FOR_AUTOMATON = 100_000
MAX_AUTOMATON_STATES = 64  # states x 16 digits = rules
_MAX_FRACTION_BITS = 10


def _number(value: Any, keyword: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise GrammarError(f"'{keyword}' must be a finite number, not {value!r}")
    return value


def _step(schema: dict) -> Fraction | None:
    if "multipleOf" not in schema:
        return None
    value = _number(schema["multipleOf"], "multipleOf")
    if value <= 0:
        raise GrammarError(f"'multipleOf' must be above 0, not {value!r}")
    step = Fraction(value)
    if step.denominator > 2**_MAX_FRACTION_BITS:
        raise GrammarError(f"'multipleOf' {value!r} is not supported: validators test it in binary floating "
                           "point (where 0.3 is not a multiple of 0.1), so only whole numbers and binary "
                           "fractions such as 0.5 or 0.25 can be enforced")
    return step


def _integer_bounds(schema: dict) -> tuple[int | None, int | None]:
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
    return low, high


def _excluded_numbers(schema: dict, whole_only: bool) -> list[int]:
    out = set()
    for value in excluded_values(schema):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not float(value).is_integer():
            if whole_only:
                raise GrammarError(f"'not' of the number {value!r}: only whole numbers can be left out")
            continue
        out.add(int(value))
    return sorted(out)


def _pieces(low: int | None, high: int | None, holes: list[int]) -> list[tuple[int | None, int | None]]:
    """[low, high] without the integers in ``holes`` (sorted), as closed intervals."""
    out, start = [], low
    for hole in holes:
        if (low is not None and hole < low) or (high is not None and hole > high):
            continue
        if start is None or start <= hole - 1:
            out.append((start, hole - 1))
        start = hole + 1
    if start is None or high is None or start <= high:
        out.append((start, high))
    return out


def integer_rule(conv: _Converter, schema: dict, path: str) -> str:
    low, high = _integer_bounds(schema)
    step = _step(schema)
    if step is not None:
        step = step.numerator  # an integer is a multiple of p/2^s exactly when it is one of p
    return _integers(conv, low, high, step, _excluded_numbers(schema, whole_only=False), path)


def _integers(conv: _Converter, low: int | None, high: int | None, step: int | None, holes: list[int],
              path: str) -> str:
    if low is not None and high is not None and low > high:
        raise Unsatisfiable(f"no integer lies between {low} and {high}")
    if low is None and high is None and step in (None, 1) and not holes:
        return conv.use("json-integer")
    hint = f"{path_hint(path)}-int"
    options = []
    for start, end in _pieces(low, high, holes):
        option = integer_range(start, end) if step in (None, 1) else _multiples(conv, start, end, step, hint)
        if option is not None:
            options.append(option)
    if not options:
        raise Unsatisfiable(f"no integer between {low} and {high} is a multiple of {step} (or not left out)")
    return conv.define(hint, options[0] if len(options) == 1 else "( " + " | ".join(options) + " )")


def number_rule(conv: _Converter, schema: dict, path: str) -> str:
    step = _step(schema)
    if step is not None and step.denominator == 1:
        low, high = _integer_bounds(schema)
        return _integers(conv, low, high, step.numerator, _excluded_numbers(schema, whole_only=False), path)
    if step is not None:
        return _listed_multiples(conv, schema, step, path)
    low, low_excl = _tighter(schema, "minimum", "exclusiveMinimum", max)
    high, high_excl = _tighter(schema, "maximum", "exclusiveMaximum", min)
    holes = _excluded_numbers(schema, whole_only=True)
    if low is None and high is None and not holes:
        return conv.use("json-number")
    options = []
    for hole in [*holes, None]:  # the pieces between the holes, each with open ends at them
        if hole is not None and (low is not None and hole < low or high is not None and hole > high):
            continue
        top, top_excl = (hole, True) if hole is not None else (high, high_excl)
        if low is None or top is None or low < top or (low == top and not low_excl and not top_excl):
            options.append(number_range(low, low_excl, top, top_excl))
        low, low_excl = hole, True
    if not options:
        raise Unsatisfiable("no number satisfies the bounds and the values left out")
    return conv.define(f"{path_hint(path)}-num", options[0] if len(options) == 1 else "( " + " | ".join(options) + " )")


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


def _listed_multiples(conv: _Converter, schema: dict, step: Fraction, path: str) -> str:
    """Numbers that are multiples of a binary fraction, between bounds: one literal each."""
    bounds = {k: Fraction(_number(schema[k], k)) for k in ("minimum", "exclusiveMinimum", "maximum",
                                                          "exclusiveMaximum") if k in schema}
    lows = [math.ceil(bounds[k] / step) + (k == "exclusiveMinimum" and (bounds[k] / step).denominator == 1)
            for k in ("minimum", "exclusiveMinimum") if k in bounds]
    highs = [math.floor(bounds[k] / step) - (k == "exclusiveMaximum" and (bounds[k] / step).denominator == 1)
             for k in ("maximum", "exclusiveMaximum") if k in bounds]
    if not lows or not highs or min(highs) - max(lows) >= MAX_LISTED_MULTIPLES:
        raise GrammarError(f"'multipleOf' {float(step)} on numbers needs 'minimum' and 'maximum' with at most "
                           f"{MAX_LISTED_MULTIPLES} multiples between them (or use type integer)")
    holes = {Fraction(v) for v in excluded_values(schema)
             if isinstance(v, (int, float)) and not isinstance(v, bool)}
    values = [m * step for m in range(max(lows), min(highs) + 1) if m * step not in holes]
    if not values:
        raise Unsatisfiable(f"no multiple of {float(step)} satisfies the bounds")
    literals = [gbnf_literal(_decimal(v)) for v in values]
    body = literals[0] if len(literals) == 1 else "( " + " | ".join(literals) + " )"
    return conv.define(f"{path_hint(path)}-num", body)


def _decimal(value: Fraction) -> str:
    """The exact decimal spelling of a binary fraction (n / 2^s = n * 5^s / 10^s)."""
    if value.denominator == 1:
        return str(value.numerator)
    places = value.denominator.bit_length() - 1
    digits = str(abs(value.numerator) * 5**places).rjust(places + 1, "0")
    return ("-" if value < 0 else "") + digits[:-places] + "." + digits[-places:].rstrip("0")


# -- multiples of an integer -------------------------------------------------------------


def _digit_automaton(step: int) -> tuple[list[list[int]], list[bool], int]:
    """The smallest automaton over decimal digits accepting multiples of ``step``."""
    delta = [[(10 * r + d) % step for d in range(10)] for r in range(step)]
    block = [0 if r == 0 else 1 for r in range(step)] if step > 1 else [0]
    count = len(set(block))
    while True:  # Moore's refinement: split states whose digits lead to different blocks
        signatures: dict[tuple, int] = {}
        refined = [signatures.setdefault((block[r], *(block[t] for t in delta[r])), len(signatures))
                   for r in range(step)]
        if len(signatures) == count:
            break
        block, count = refined, len(signatures)
        if count > MAX_AUTOMATON_STATES:
            raise GrammarError(f"'multipleOf' {step} needs too large a grammar (remainders to track: more "
                               f"than {MAX_AUTOMATON_STATES}); give 'minimum' and 'maximum' closer together")
    first = {}
    for r in range(step):
        first.setdefault(block[r], r)
    trans = [[block[delta[first[b]][d]] for d in range(10)] for b in range(count)]
    return trans, [b == block[0] for b in range(count)], block[0]


def _digit_class(digits: list[int]) -> str:
    if len(digits) == 1:
        return gbnf_literal(str(digits[0]))
    runs, start = [], digits[0]
    for prev, cur in zip(digits, [*digits[1:], None]):
        if cur != prev + 1:
            runs.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = cur
    return "[" + "".join(runs) + "]"


def _group(options: list[str]) -> str | None:
    if not options:
        return None
    return options[0] if len(options) == 1 else "( " + " | ".join(options) + " )"


class _Multiples:
    """Decimal digit strings, as GBNF, whose value is a multiple of ``step``."""

    def __init__(self, conv: _Converter, step: int, hint: str) -> None:
        self.conv, self.hint = conv, hint
        self.trans, self.accept, self.start = _digit_automaton(step)
        self.memo: dict[tuple[int, int], str | None] = {}

    def run(self, state: int, digits: str) -> int:
        for ch in digits:
            state = self.trans[state][int(ch)]
        return state

    def free(self, length: int, state: int) -> str | None:
        """Any ``length`` digits that lead from ``state`` to acceptance."""
        if length == 0:
            return "" if self.accept[state] else None
        key = (length, state)
        if key not in self.memo:
            self.memo[key] = None
            body = self._spread(list(range(10)), length - 1, state)
            self.memo[key] = None if body is None else self.conv.define(f"{self.hint}-digits", body)
        return self.memo[key]

    def _spread(self, digits: list[int], rest: int, state: int) -> str | None:
        by_target: dict[int, list[int]] = {}
        for d in digits:
            by_target.setdefault(self.trans[state][d], []).append(d)
        options = []
        for target, group in by_target.items():
            tail = self.free(rest, target)
            if tail is not None:
                options.append(seq(_digit_class(group), tail))
        return _group(options)

    def between(self, low: str, high: str, state: int) -> str | None:
        """Digit strings of len(low) from ``low`` to ``high`` that lead from ``state`` to acceptance."""
        if low == high:
            return gbnf_literal(low) if self.accept[self.run(state, low)] else None
        if low[0] == high[0]:
            tail = self.between(low[1:], high[1:], self.trans[state][int(low[0])])
            return None if tail is None else seq(gbnf_literal(low[0]), tail)
        rest = len(low) - 1
        first, last = int(low[0]), int(high[0])
        options, closing = [], None
        if rest and low[1:] != "0" * rest:
            tail = self.between(low[1:], "9" * rest, self.trans[state][first])
            options += [] if tail is None else [seq(gbnf_literal(low[0]), tail)]
            first += 1
        if rest and high[1:] != "9" * rest:
            tail = self.between("0" * rest, high[1:], self.trans[state][last])
            closing = None if tail is None else seq(gbnf_literal(high[0]), tail)
            last -= 1
        if first <= last:
            middle = self._spread(list(range(first, last + 1)), rest, state)
            options += [] if middle is None else [middle]
        options += [closing] if closing else []
        return _group(options)

    def magnitudes(self, low: int, high: int | None) -> list[str]:
        top = len(str(high)) if high is not None else max(len(str(low)), MAX_INT_DIGITS)
        out = []
        for length in range(len(str(low)), top + 1):
            start = low if length == len(str(low)) else 10 ** (length - 1)
            end = high if high is not None and length == len(str(high)) else 10**length - 1
            option = self.between(str(start), str(end), self.start)
            if option is not None:
                out.append(option)
        return out


def _multiples(conv: _Converter, low: int | None, high: int | None, step: int, hint: str) -> str | None:
    """Integers in [low, high] (None: open, up to 16 digits) that are multiples of ``step``."""
    if low is not None and high is not None and high // step - (low - 1) // step <= MAX_LISTED_MULTIPLES:
        values = [m * step for m in range(-(-low // step), high // step + 1)]
        return _group([gbnf_literal(str(v)) for v in values])
    if step > MAX_MULTIPLE_FOR_AUTOMATON:
        raise GrammarError(f"'multipleOf' {step} is too large for an open range; give 'minimum' and 'maximum' "
                           f"with at most {MAX_LISTED_MULTIPLES} multiples between them")
    digits = _Multiples(conv, step, hint)
    options = []
    if low is None or low < 0:
        magnitude_low = 1 if high is None or high >= 0 else -high
        negative = digits.magnitudes(magnitude_low, None if low is None else -low)
        if negative:
            options.append(seq('"-"', _group(negative)))
    if high is None or high >= 0:
        options.extend(digits.magnitudes(max(low or 0, 0), high))
    return _group(options)
