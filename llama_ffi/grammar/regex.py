"""Regular expressions (a subset) to GBNF, for JSON Schema's ``pattern``.

jsonschema checks ``pattern`` with Python's ``re.search`` on the decoded string,
so the grammar built here matches the JSON *text* of strings that ``re.search``
accepts: unanchored ends become "any characters", and each character the pattern
names is written the way ``json.dumps(..., ensure_ascii=False)`` writes it.

Supported: literals and escapes, classes ``[...]`` / ``[^...]`` with ranges,
``\\d \\w \\s`` (ASCII members only: Python's are Unicode, so the grammar keeps to
the part that is surely inside) and their negations (ASCII only, for the same
reason), ``.``, groups ``(...)`` ``(?:...)`` ``(?P<n>...)``, ``|``, ``? * + {m}
{m,} {m,n}`` (lazy forms too), and ``^ $ \\A \\Z`` at the ends of the pattern.
Backreferences, lookarounds, word boundaries, inline flags, possessive and
atomic groups raise :class:`GrammarError`.
"""

from __future__ import annotations

import re
import warnings
from typing import Protocol

from ..errors import GrammarError
from ._json_terminals import escaped_json_char, gbnf_class, gbnf_literal, seq

__all__ = ["MAX_PATTERN_LENGTH", "RuleSink", "pattern_to_gbnf"]

MAX_PATTERN_LENGTH = 2000
_MAX_GROUP_DEPTH = 40
_ASCII = [(0, 127)]
_DIGIT = [(48, 57)]
_WORD = [(48, 57), (65, 90), (95, 95), (97, 122)]
_SPACE = [(9, 13), (28, 32)]  # Python's \s on str also holds \x1c-\x1f
_SHORTHANDS = {"d": (_DIGIT, False), "D": (_DIGIT, True), "w": (_WORD, False), "W": (_WORD, True),
               "s": (_SPACE, False), "S": (_SPACE, True)}
_CHAR_ESCAPES = {"n": 10, "t": 9, "r": 13, "f": 12, "v": 11, "a": 7}
_MUST_ESCAPE = [(0, 31), (34, 34), (92, 92)]  # what JSON strings cannot hold raw


class RuleSink(Protocol):
    """What the converter lends the regex compiler for naming and repeating."""

    def define(self, hint: str, body: str) -> str: ...

    def repeat(self, item: str, low: int, high: int | None, hint: str) -> str: ...

    def use(self, primitive: str) -> str: ...


# AST nodes are tuples: ("chars", ranges, negated) ("cat", items) ("alt", items)
# ("rep", node, low, high) ("bol",) ("eol",)


def _subtract(ranges: list[tuple[int, int]], removed: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    for low, high in ranges:
        pieces = [(low, high)]
        for r_low, r_high in removed:
            pieces = [p for a, b in pieces for p in ((a, min(b, r_low - 1)), (max(a, r_high + 1), b)) if p[0] <= p[1]]
        out.extend(pieces)
    return out


def _ascii_complement(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return _subtract(_ASCII, ranges)


class _Parser:
    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.pos = 0
        self.depth = 0

    def fail(self, message: str) -> GrammarError:
        return GrammarError(f"pattern {self.pattern!r}: {message} (at offset {self.pos})")

    def peek(self, ahead: int = 0) -> str:
        index = self.pos + ahead
        return self.pattern[index] if index < len(self.pattern) else ""

    def parse(self) -> tuple:
        node = self.alternation()
        if self.pos != len(self.pattern):
            raise self.fail("unbalanced ')'")
        return node

    def alternation(self) -> tuple:
        branches = [self.sequence()]
        while self.peek() == "|":
            self.pos += 1
            branches.append(self.sequence())
        return branches[0] if len(branches) == 1 else ("alt", branches)

    def sequence(self) -> tuple:
        items = []
        while self.peek() not in ("", "|", ")"):
            items.append(self.quantified(self.atom()))
        return ("cat", items)

    def atom(self) -> tuple:
        ch = self.peek()
        self.pos += 1
        if ch == "(":
            return self.group()
        if ch == "[":
            return self.char_class()
        if ch == ".":
            return ("chars", [(10, 10)], True)
        if ch == "^":
            return ("bol",)
        if ch == "$":
            return ("eol",)
        if ch == "\\":
            return self.escape(in_class=False)
        if ch in "*+?":
            raise self.fail("nothing to repeat")
        return ("chars", [(ord(ch), ord(ch))], False)

    def group(self) -> tuple:
        if self.depth >= _MAX_GROUP_DEPTH:
            raise self.fail(f"groups nested more than {_MAX_GROUP_DEPTH} deep")
        if self.peek() == "?":
            self.group_prefix()
        self.depth += 1
        node = self.alternation()
        self.depth -= 1
        if self.peek() != ")":
            raise self.fail("missing ')'")
        self.pos += 1
        return node

    def group_prefix(self) -> None:
        rest = self.pattern[self.pos :]
        if rest.startswith("?:"):
            self.pos += 2
            return
        named = re.match(r"\?P?<([A-Za-z_][A-Za-z0-9_]*)>", rest)
        if named:
            self.pos += named.end()
            return
        kinds = {"?=": "lookahead", "?!": "lookahead", "?<=": "lookbehind", "?<!": "lookbehind",
                 "?P=": "backreference", "?>": "atomic group", "?#": "comment group", "?(": "conditional"}
        for prefix, kind in kinds.items():
            if rest.startswith(prefix):
                raise self.fail(f"{kind} is not supported")
        raise self.fail("inline flags are not supported")

    def quantified(self, node: tuple) -> tuple:
        bounds = self.quantifier()
        while bounds is not None:
            if node[0] in ("bol", "eol"):
                raise self.fail("cannot repeat an anchor")
            if self.peek() == "+":
                raise self.fail("possessive quantifiers are not supported")
            if self.peek() == "?":
                self.pos += 1  # lazy: same set of matching strings
            node = ("rep", node, bounds[0], bounds[1])
            bounds = self.quantifier()
        return node

    def quantifier(self) -> tuple[int, int | None] | None:
        ch = self.peek()
        if ch in ("*", "+", "?") and ch:
            self.pos += 1
            return {"*": (0, None), "+": (1, None), "?": (0, 1)}[ch]
        if ch != "{":
            return None
        found = re.match(r"\{(\d*)(,?)(\d*)\}", self.pattern[self.pos :])
        if not found or (not found.group(1) and not found.group(2)):
            return None  # Python reads a '{' that starts no quantifier literally
        self.pos += found.end()
        low = int(found.group(1) or 0)
        high = low if not found.group(2) else (int(found.group(3)) if found.group(3) else None)
        if high is not None and high < low:
            raise self.fail("repetition maximum is below its minimum")
        return low, high

    def escape(self, in_class: bool) -> tuple:
        ch = self.peek()
        self.pos += 1
        if ch == "":
            raise self.fail("pattern ends with '\\'")
        if ch in _SHORTHANDS:
            ranges, negated = _SHORTHANDS[ch]
            return ("chars", _ascii_complement(ranges) if negated else list(ranges), False)
        if ch in _CHAR_ESCAPES:
            return self.single(_CHAR_ESCAPES[ch])
        if ch == "b" and in_class:
            return self.single(8)
        if not in_class and ch in "AZ":
            return ("bol",) if ch == "A" else ("eol",)
        if ch in "xuU":
            return self.single(self.hex_escape(ch))
        if ch == "0":
            digits = re.match(r"[0-7]{0,2}", self.pattern[self.pos :]).group()
            self.pos += len(digits)
            return self.single(int("0" + digits, 8))
        if ch.isdigit():
            raise self.fail("backreferences are not supported")
        if ch in "bB":
            raise self.fail("word boundaries are not supported")
        if ch.isascii() and ch.isalpha():
            raise self.fail(f"escape '\\{ch}' is not supported")
        return self.single(ord(ch))

    def single(self, code: int) -> tuple:
        return ("chars", [(code, code)], False)

    def hex_escape(self, kind: str) -> int:
        size = {"x": 2, "u": 4, "U": 8}[kind]
        digits = self.pattern[self.pos : self.pos + size]
        if len(digits) != size or not re.fullmatch(r"[0-9a-fA-F]+", digits):
            raise self.fail(f"'\\{kind}' needs {size} hex digits")
        self.pos += size
        value = int(digits, 16)
        if value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
            raise self.fail(f"'\\{kind}{digits}' is not a character")
        return value

    def char_class(self) -> tuple:
        negated = self.peek() == "^"
        self.pos += negated
        ranges, shorthand, first = [], False, True
        while first or self.peek() != "]":
            if self.peek() == "":
                raise self.fail("unterminated character class")
            if self.pattern.startswith("[:", self.pos):
                raise self.fail("POSIX classes like [:alpha:] are not supported")
            first = False
            item = self.class_item()
            if item[0] == "set":
                ranges.extend(item[1])
                shorthand = True
            elif self.peek() == "-" and self.peek(1) not in ("]", ""):
                self.pos += 1
                end = self.class_item()
                if end[0] == "set" or end[1] < item[1]:
                    raise self.fail("bad character range")
                ranges.append((item[1], end[1]))
            else:
                ranges.append((item[1], item[1]))
        self.pos += 1
        if negated and shorthand:
            # The complement of a Unicode \d, \w or \s is not the complement of its
            # ASCII part; keep to ASCII, where the two agree.
            return ("chars", _ascii_complement(ranges), False)
        return ("chars", ranges, negated)

    def class_item(self) -> tuple:
        ch = self.peek()
        self.pos += 1
        if ch != "\\":
            return ("char", ord(ch))
        node = self.escape(in_class=True)
        if node[0] != "chars":
            raise self.fail("anchors cannot appear in a class")
        ranges = node[1]
        if len(ranges) == 1 and ranges[0][0] == ranges[0][1]:
            return ("char", ranges[0][0])
        return ("set", ranges)


# -- from AST to GBNF ------------------------------------------------------------


def _nullable(node: tuple) -> bool:
    kind = node[0]
    if kind == "chars":
        return False
    if kind == "cat":
        return all(_nullable(item) for item in node[1])
    if kind == "alt":
        return any(_nullable(item) for item in node[1])
    if kind == "rep":
        return node[2] == 0 or _nullable(node[1])
    return True  # anchors


def _choice(options: list[tuple]) -> tuple | None:
    return None if not options else (options[0] if len(options) == 1 else ("alt", options))


def _non_empty(node: tuple) -> tuple | None:
    """The same language less the empty string (None when nothing is left).

    ``X*`` with a nullable X would be a left-recursive grammar; ``(X less "")*``
    matches the same strings and is not.
    """
    kind = node[0]
    if kind == "chars":
        return node
    if kind == "alt":
        return _choice([part for part in map(_non_empty, node[1]) if part is not None])
    if kind == "cat":
        if not node[1]:
            return None
        first, rest = node[1][0], ("cat", node[1][1:])
        options = []
        first_part = _non_empty(first)
        if first_part is not None:
            options.append(("cat", [first_part, *node[1][1:]]))
        if _nullable(first):
            rest_part = _non_empty(rest)
            if rest_part is not None:
                options.append(rest_part)
        return _choice(options)
    if kind == "rep":
        inner, low, high = node[1], node[2], node[3]
        if not _nullable(inner):
            return node if low > 0 else ("rep", inner, 1, high)
        part = _non_empty(inner)
        if part is None or high == 1:
            return part
        return ("cat", [part, ("rep", part, 0, None if high is None else high - 1)])
    return None  # anchors match only ""


def _has_anchor(node: tuple) -> bool:
    kind = node[0]
    if kind in ("bol", "eol"):
        return True
    if kind in ("cat", "alt"):
        return any(_has_anchor(item) for item in node[1])
    return kind == "rep" and _has_anchor(node[1])


class _Compiler:
    def __init__(self, sink: RuleSink, hint: str) -> None:
        self.sink = sink
        self.hint = hint

    def compile(self, node: tuple) -> tuple[str, bool]:
        """GBNF for ``node`` and whether it is one GBNF item (safe to repeat)."""
        kind = node[0]
        if kind == "chars":
            return self.chars(node[1], node[2])
        if kind == "cat":
            return self.concat(node[1])
        if kind == "alt":
            parts = [self.compile(item)[0] for item in node[1]]
            return "( " + " | ".join(parts) + " )", True
        return self.repeat(node[1], node[2], node[3]), False

    def chars(self, ranges: list[tuple[int, int]], negated: bool) -> tuple[str, bool]:
        if negated:
            options = [gbnf_class(ranges + _MUST_ESCAPE, negated=True)]
        else:
            raw = _subtract(ranges, _MUST_ESCAPE)
            options = [gbnf_class(raw)] if raw else []
        for low, high in _MUST_ESCAPE:
            for code in range(low, high + 1):
                inside = any(a <= code <= b for a, b in ranges)
                if inside != negated:
                    options.append(gbnf_literal(escaped_json_char(chr(code))))
        if not options:
            raise GrammarError(f"pattern for {self.hint} has a character class that matches nothing")
        if len(options) == 1:
            return options[0], True
        return "( " + " | ".join(options) + " )", True

    def concat(self, items: list[tuple]) -> tuple[str, bool]:
        parts: list[tuple[str, bool]] = []
        text: list[str] = []
        for item in items:
            if item[0] == "chars" and not item[2] and len(item[1]) == 1 and item[1][0][0] == item[1][0][1]:
                text.append(escaped_json_char(chr(item[1][0][0])))
                continue
            if text:
                parts.append((gbnf_literal("".join(text)), True))
                text = []
            parts.append(self.compile(item))
        if text:
            parts.append((gbnf_literal("".join(text)), True))
        if len(parts) == 1:
            return parts[0]
        return seq(*(expr for expr, _ in parts)), False

    def repeat(self, inner: tuple, low: int, high: int | None) -> str:
        if _nullable(inner):
            part = _non_empty(inner)
            if part is None:
                return ""
            inner, low = part, 0
        if high == 0:
            return ""
        expr, atomic = self.compile(inner)
        if not atomic:
            expr = self.sink.define(self.hint, expr)
        return self.sink.repeat(expr, low, high, self.hint)


def pattern_to_gbnf(pattern: str, sink: RuleSink, hint: str = "pattern") -> str:
    """GBNF for the *contents* (between the quotes) of JSON strings matching ``pattern``."""
    if not isinstance(pattern, str):
        raise GrammarError(f"pattern must be a string, not {type(pattern).__name__}")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise GrammarError(f"pattern longer than {MAX_PATTERN_LENGTH} characters")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FutureWarning on nested sets: refused below anyway
            re.compile(pattern)
    except (re.error, RecursionError, OverflowError, ValueError) as exc:
        raise GrammarError(f"pattern {pattern!r} is not a valid regular expression: {exc}") from None
    tree = _Parser(pattern).parse()
    compiler = _Compiler(sink, hint)
    anything = sink.use("json-char") + "*"
    branches = []
    for branch in tree[1] if tree[0] == "alt" else [tree]:
        items = list(branch[1]) if branch[0] == "cat" else [branch]
        anchored_start = anchored_end = False
        while items and items[0] == ("bol",):
            items.pop(0)
            anchored_start = True
        while items and items[-1] == ("eol",):
            items.pop()
            anchored_end = True
        if _has_anchor(("cat", items)):
            raise GrammarError(f"pattern {pattern!r}: '^' and '$' are supported only at the ends of the pattern")
        body = compiler.compile(("cat", items))[0]
        branches.append(seq("" if anchored_start else anything, body, "" if anchored_end else anything))
    if len(branches) == 1:
        return branches[0]
    return "( " + " | ".join(branches) + " )"
