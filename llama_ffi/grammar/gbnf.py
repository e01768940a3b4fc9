"""GBNF parser: reads the dialect of llama.cpp's ``llama_grammar_parser``.

The parser walks the text exactly as ``src/llama-grammar.cpp`` does (same
whitespace and newline rules, same escapes, same rewriting of repetitions into
helper rules, same rule numbering), so the rules built here are the rules the C
library will build. On top of what the C parser checks, it refuses what would
make the library misbehave rather than fail cleanly: nesting deep enough to
overflow the C stack, ``{m,n}`` with ``m > n`` (an endless loop in C), bounds
that C would silently widen, and grammars too large to hold. The semantic checks
(left recursion, cost of C's own checks) live in :mod:`._gbnf_analysis`.

Every failure raises :class:`~llama_ffi.errors.GrammarError` with a 1-based line
and column; the parser holds no recursion, so no input makes it raise anything
else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from ..errors import GrammarError

__all__ = [
    "MAX_ELEMENTS",
    "MAX_NESTING",
    "MAX_REPETITION",
    "MAX_RULES",
    "MAX_TEXT_CHARS",
    "AnyChar",
    "Chars",
    "CompiledGrammar",
    "Ref",
    "Token",
    "parse_gbnf",
]

MAX_TEXT_CHARS = 1_000_000
# C parses groups by recursion: keep far below what a 512 KiB thread stack holds.
MAX_NESTING = 100
# llama.cpp's MAX_REPETITION_THRESHOLD, applied the same way.
MAX_REPETITION = 2000
MAX_RULES = 100_000
MAX_ELEMENTS = 1_000_000
_MAX_CODE_POINT = 0x10FFFF
_MAX_TOKEN_ID = 0xFFFFFFFF
_WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_SIMPLE_ESCAPES = {"t": 9, "r": 13, "n": 10, "\\": 92, '"': 34, "[": 91, "]": 93, "-": 45}
_ESCAPE_HEX_SIZE = {"x": 2, "u": 4, "U": 8}


class Chars(NamedTuple):
    """One character out of inclusive code point ranges (or outside them)."""

    ranges: tuple[tuple[int, int], ...]
    negated: bool = False

    def matches(self, code_point: int) -> bool:
        found = any(lo <= code_point <= hi for lo, hi in self.ranges)
        return found != self.negated


class AnyChar(NamedTuple):
    """``.``: any one character."""

    def matches(self, code_point: int) -> bool:
        return True


class Ref(NamedTuple):
    """A reference to rule ``rule``; ``offset`` is where the text names it."""

    rule: int
    offset: int


class Token(NamedTuple):
    """``<[id]>``, ``<text>`` or their ``!`` negation; ``value`` is an id or the text."""

    value: int | str
    negated: bool = False


Element = Chars | AnyChar | Ref | Token
Alternative = tuple[Element, ...]


@dataclass(frozen=True)
class CompiledGrammar:
    """Rules as llama.cpp builds them, indexed by symbol id.

    ``rules[i]`` is the tuple of alternatives of symbol ``i``; ``names[i]`` its name
    (helper rules are named ``base_N`` as in C; user names cannot hold ``_``);
    ``owners[i]`` the user rule whose text produced it; ``defined`` the user rule
    names in the order they are defined; ``repetitions`` every ``*``, ``+``, ``?``
    and ``{m,n}`` as ``(offset, repeated elements, copies)``.
    """

    text: str
    rules: tuple[tuple[Alternative, ...], ...]
    names: tuple[str, ...]
    owners: tuple[str, ...]
    defined: tuple[str, ...]
    root: str
    root_id: int
    definition_offsets: dict[str, int]
    repetitions: tuple[tuple[int, tuple, int], ...] = ()

    def location(self, offset: int) -> tuple[int, int]:
        return location(self.text, offset)


def location(text: str, offset: int) -> tuple[int, int]:
    """1-based (line, column) of ``offset`` in ``text``."""
    offset = max(0, min(offset, len(text)))
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


@dataclass
class _Frame:
    """One rule body or parenthesised group being read (C: one parse_alternates call)."""

    rule_id: int
    nested: bool
    open_offset: int
    symbols_before: int = 0
    elements: list = None  # flat, alternatives split by _ALT as in C
    last_sym_start: int = 0
    n_prev_rules: int = 1
    alt_is_empty: bool = True
    alt_separator: int = 0  # offset of the '::=' or '|' that began the alternative

    def __post_init__(self) -> None:
        self.elements = []


_ALT = None  # separates alternatives inside a frame's flat element list


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.end = len(text)
        self.symbol_ids: dict[str, int] = {}
        self.names: list[str] = []
        self.owners: list[str] = []
        self.rules: list = []
        self.first_reference: dict[int, int] = {}
        self.definitions: dict[str, int] = {}
        self.defined_order: list[str] = []
        self.n_elements = 0
        self.repetitions: list[tuple[int, tuple, int]] = []

    # -- errors and scanning -------------------------------------------------

    def fail(self, message: str, offset: int) -> GrammarError:
        line, column = location(self.text, offset)
        return GrammarError(message, line=line, column=column)

    def peek(self, pos: int) -> str:
        return self.text[pos] if pos < self.end else ""

    def skip_space(self, pos: int, newline_ok: bool) -> int:
        text, end = self.text, self.end
        while pos < end:
            ch = text[pos]
            if ch == " " or ch == "\t" or (newline_ok and (ch == "\r" or ch == "\n")):
                pos += 1
            elif ch == "#":
                while pos < end and text[pos] not in "\r\n":
                    pos += 1
            else:
                break
        return pos

    def scan_name(self, pos: int) -> int:
        start = pos
        while pos < self.end and self.text[pos] in _WORD_CHARS:
            pos += 1
        if pos == start:
            raise self.fail("expecting a rule name", start)
        return pos

    # -- symbols and rules ---------------------------------------------------

    def symbol_id(self, name: str, owner: str) -> int:
        if name not in self.symbol_ids:
            self.symbol_ids[name] = len(self.names)
            self.names.append(name)
            self.owners.append(owner if "_" in name else name)
            self.rules.append(None)
        return self.symbol_ids[name]

    def generate_symbol_id(self, base: str, offset: int) -> int:
        if len(self.names) >= MAX_RULES:
            raise self.fail(f"grammar too large: more than {MAX_RULES} rules after expansion", offset)
        return self.symbol_id(f"{base}_{len(self.names)}", base)

    def add_rule(self, rule_id: int, flat: list) -> None:
        alternatives, current = [], []
        for element in flat:
            if element is _ALT:
                alternatives.append(tuple(current))
                current = []
            else:
                current.append(element)
        alternatives.append(tuple(current))
        self.rules[rule_id] = tuple(alternatives)

    def count_elements(self, added: int, offset: int) -> None:
        self.n_elements += added
        if self.n_elements > MAX_ELEMENTS:
            raise self.fail(f"grammar too large: more than {MAX_ELEMENTS} elements after expansion", offset)

    # -- terminals -------------------------------------------------------------

    def parse_char(self, pos: int, opened_at: int, what: str) -> tuple[int, int]:
        ch = self.peek(pos)
        if ch == "":
            raise self.fail(f"unterminated {what}", opened_at)
        if ch != "\\":
            return ord(ch), pos + 1
        code = self.peek(pos + 1)
        if code == "":
            raise self.fail(f"unterminated {what}", opened_at)
        if code in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[code], pos + 2
        if code not in _ESCAPE_HEX_SIZE:
            raise self.fail(f"unknown escape '\\{code}'", pos)
        size = _ESCAPE_HEX_SIZE[code]
        digits = self.text[pos + 2 : pos + 2 + size]
        if len(digits) != size or not all(d in _HEX_DIGITS for d in digits):
            raise self.fail(f"escape '\\{code}' needs exactly {size} hex digits", pos)
        value = int(digits, 16)
        if value > _MAX_CODE_POINT:
            raise self.fail(f"escape '\\{code}{digits}' is beyond U+10FFFF", pos)
        return value, pos + 2 + size

    def parse_literal(self, start: int) -> tuple[list, int]:
        pos, chars = start + 1, []
        while self.peek(pos) != '"':
            value, pos = self.parse_char(pos, start, "string literal")
            chars.append(Chars(((value, value),)))
        return chars, pos + 1

    def parse_char_class(self, start: int) -> tuple[Chars, int]:
        pos, negated, ranges = start + 1, False, []
        if self.peek(pos) == "^":
            pos, negated = pos + 1, True
        while self.peek(pos) != "]":
            item_start = pos
            low, pos = self.parse_char(pos, start, "character class")
            high = low
            if self.peek(pos) == "-" and self.peek(pos + 1) != "]":
                high, pos = self.parse_char(pos + 1, start, "character class")
                if high < low:
                    raise self.fail("character range is out of order", item_start)
            ranges.append((low, high))
        if not ranges:
            # C accepts it but emits nothing, so '[]' would silently match "".
            raise self.fail("empty character class", start)
        return Chars(tuple(ranges), negated), pos + 1

    def parse_token(self, start: int) -> tuple[Token, int]:
        pos, negated = start, False
        if self.peek(pos) == "!":
            pos, negated = pos + 1, True
        if self.peek(pos) != "<":
            raise self.fail("expecting '<' after '!'", pos)
        pos += 1
        if self.peek(pos) == "[":
            digits_start = pos = pos + 1
            while self.peek(pos).isdigit() and self.peek(pos).isascii():
                pos += 1
            digits = self.text[digits_start:pos]
            if not digits or self.text[pos : pos + 2] != "]>":
                raise self.fail("token id must look like <[123]>", start)
            if len(digits) > 10 or int(digits) > _MAX_TOKEN_ID:
                raise self.fail("token id is too large", digits_start)
            return Token(int(digits), negated), pos + 2
        close = self.text.find(">", pos)
        if close < 0:
            raise self.fail("unterminated token '<...>'", start)
        return Token(self.text[pos - 1 : close + 1], negated), close + 1

    # -- repetition ----------------------------------------------------------

    def parse_int(self, pos: int, what: str) -> tuple[int, int]:
        start = pos
        while self.peek(pos) in "0123456789" and pos < self.end:
            pos += 1
        if pos == start:
            raise self.fail(f"expecting {what}", start)
        digits = self.text[start:pos]
        value = int(digits) if len(digits) <= 9 else MAX_REPETITION + 1
        return value, pos

    def parse_braces(self, start: int, nested: bool) -> tuple[int, int | None, int]:
        pos = self.skip_space(start + 1, nested)
        low, pos = self.parse_int(pos, "a number after '{'")
        pos = self.skip_space(pos, nested)
        if self.peek(pos) == "}":
            return low, low, pos + 1
        if self.peek(pos) != ",":
            raise self.fail("expecting ',' or '}' in repetition", pos)
        pos = self.skip_space(pos + 1, nested)
        high = None
        if self.peek(pos).isdigit() and self.peek(pos).isascii():
            high, pos = self.parse_int(pos, "a number")
            pos = self.skip_space(pos, nested)
        if self.peek(pos) != "}":
            raise self.fail("expecting '}' to close repetition", pos)
        return low, high, pos + 1

    def check_bounds(self, frame: _Frame, low: int, high: int | None, offset: int) -> int:
        if frame.last_sym_start == len(frame.elements):
            raise self.fail("repetition operator has nothing to repeat", offset)
        if low > MAX_REPETITION:
            raise self.fail(f"repetition minimum {low} exceeds {MAX_REPETITION}", offset)
        if high is not None and high < low:
            raise self.fail(f"repetition bounds {{{low},{high}}}: maximum is below minimum", offset)
        if high is not None and high > MAX_REPETITION:
            # llama.cpp would silently drop such a maximum and repeat without bound.
            raise self.fail(
                f"repetition maximum {high} exceeds {MAX_REPETITION}; use {{{low},}} or nested rules", offset
            )
        total = high if high else (low or 1)
        if frame.n_prev_rules * total > MAX_REPETITION:
            raise self.fail(f"nested repetitions expand to more than {MAX_REPETITION} copies", offset)
        return total

    def apply_repetition(self, frame: _Frame, name: str, low: int, high: int | None, offset: int) -> None:
        """Rewrite the last item as llama.cpp does: S{m,n} -> S..S (m times) + n-m optional rules."""
        total = self.check_bounds(frame, low, high, offset)
        elements = frame.elements
        previous = elements[frame.last_sym_start :]
        n_optional = 1 if high is None else high - low
        self.count_elements(len(previous) * max(low - 1, 0) + n_optional * (len(previous) + 1), offset)
        if low == 0:
            del elements[frame.last_sym_start :]
        else:
            elements.extend(previous * (low - 1))
        last_id = -1
        for i in range(n_optional):
            rule_id = self.generate_symbol_id(name, offset)
            repeat = [Ref(rule_id if high is None else last_id, offset)] if (i > 0 or high is None) else []
            self.add_rule(rule_id, previous + repeat + [_ALT])
            last_id = rule_id
        if n_optional > 0:
            elements.append(Ref(last_id, offset))
        frame.n_prev_rules *= total
        self.repetitions.append((offset, tuple(previous), total))

    # -- sequences -----------------------------------------------------------

    def parse_reference(self, frame: _Frame, owner: str, start: int) -> int:
        name_end = self.scan_name(start)
        pos = self.skip_space(name_end, frame.nested)
        name = self.text[start:name_end]
        if not frame.nested and self.text.startswith("::=", pos):
            if frame.alt_is_empty:
                raise self.fail(
                    f"rule '{owner}' ends with an empty alternative right before the definition of "
                    f"'{name}'; llama.cpp would read that line as part of '{owner}'",
                    frame.alt_separator,
                )
            raise self.fail(f"missing newline before the definition of '{name}'", start)
        rule_id = self.symbol_id(name, name)
        self.first_reference.setdefault(rule_id, start)
        self.start_item(frame, [Ref(rule_id, start)], start)
        return pos

    def start_item(self, frame: _Frame, elements: list, offset: int) -> None:
        frame.last_sym_start = len(frame.elements)
        frame.n_prev_rules = 1
        frame.alt_is_empty = False
        frame.elements.extend(elements)
        self.count_elements(len(elements), offset)

    def parse_item(self, frame: _Frame, owner: str, pos: int) -> int | None:
        """Reads one item or operator at ``pos``; None when the sequence ends there."""
        ch = self.peek(pos)
        if ch == '"':
            chars, end = self.parse_literal(pos)
            self.start_item(frame, chars, pos)
            pos = end
        elif ch == "[":
            chars, end = self.parse_char_class(pos)
            self.start_item(frame, [chars], pos)
            pos = end
        elif ch == "<" or ch == "!":
            token, end = self.parse_token(pos)
            self.start_item(frame, [token], pos)
            pos = end
        elif ch == ".":
            self.start_item(frame, [AnyChar()], pos)
            pos += 1
        elif ch != "" and ch in _WORD_CHARS:
            return self.parse_reference(frame, owner, pos)
        elif ch in ("*", "+", "?") and ch != "":
            low, high = {"*": (0, None), "+": (1, None), "?": (0, 1)}[ch]
            self.apply_repetition(frame, owner, low, high, pos)
            pos += 1
        elif ch == "{":
            low, high, end = self.parse_braces(pos, frame.nested)
            self.apply_repetition(frame, owner, low, high, pos)
            pos = end
        else:
            return None
        return self.skip_space(pos, frame.nested)

    def parse_body(self, owner: str, rule_id: int, pos: int, separator: int) -> int:
        """Reads a rule's alternatives, groups included, with an explicit stack."""
        frames = [_Frame(rule_id, nested=False, open_offset=separator, alt_separator=separator)]
        while True:
            frame = frames[-1]
            after = self.parse_item(frame, owner, pos)
            if after is not None:
                pos = after
                continue
            ch = self.peek(pos)
            if ch == "(":
                if len(frames) > MAX_NESTING:
                    raise self.fail(f"groups nested more than {MAX_NESTING} deep", pos)
                before = len(self.names)
                group_id = self.generate_symbol_id(owner, pos)
                frames.append(_Frame(group_id, True, pos, before, alt_separator=pos))
                pos = self.skip_space(pos + 1, True)
            elif ch == "|":
                frame.elements.append(_ALT)
                frame.last_sym_start, frame.n_prev_rules = len(frame.elements), 1
                frame.alt_is_empty, frame.alt_separator = True, pos
                pos = self.skip_space(pos + 1, True)
            elif frame.nested:
                pos = self.close_group(frames, pos)
            else:
                self.add_rule(rule_id, frame.elements)
                return pos

    def close_group(self, frames: list[_Frame], pos: int) -> int:
        frame = frames.pop()
        if self.peek(pos) != ")":
            if pos >= self.end:
                raise self.fail("unclosed '('", frame.open_offset)
            raise self.fail("expecting ')'", pos)
        self.add_rule(frame.rule_id, frame.elements)
        parent = frames[-1]
        self.start_item(parent, [Ref(frame.rule_id, frame.open_offset)], frame.open_offset)
        parent.n_prev_rules = max(1, len(self.names) - frame.symbols_before)
        return self.skip_space(pos + 1, parent.nested)

    def parse_rule(self, pos: int) -> int:
        name_start = pos
        name_end = self.scan_name(pos)
        name = self.text[name_start:name_end]
        pos = self.skip_space(name_end, False)
        if not self.text.startswith("::=", pos):
            raise self.fail(f"expecting '::=' after rule name '{name}'", pos)
        if name in self.definitions:
            raise self.fail(f"rule '{name}' is defined twice", name_start)
        self.definitions[name] = name_start
        self.defined_order.append(name)
        rule_id = self.symbol_id(name, name)
        pos = self.parse_body(name, rule_id, self.skip_space(pos + 3, True), pos)
        ch = self.peek(pos)
        if ch == "\r":
            pos += 2 if self.peek(pos + 1) == "\n" else 1
        elif ch == "\n":
            pos += 1
        elif ch != "":
            raise self.fail(f"unexpected {ch!r} in rule '{name}'", pos)
        return self.skip_space(pos, True)

    def parse(self) -> None:
        pos = self.skip_space(0, True)
        while pos < self.end:
            pos = self.parse_rule(pos)


def _check_text(text: str) -> None:
    if len(text) > MAX_TEXT_CHARS:
        raise GrammarError(f"grammar text too large: {len(text)} characters (limit {MAX_TEXT_CHARS})")
    for offset, ch in enumerate(text):
        if ch == "\x00" or "\ud800" <= ch <= "\udfff":
            what = "a NUL character (C would cut the grammar there)" if ch == "\x00" else "a lone surrogate"
            line, column = location(text, offset)
            raise GrammarError(f"grammar text contains {what}", line=line, column=column)


def _check_symbols(parser: _Parser, root: str) -> int:
    for rule_id, rule in enumerate(parser.rules):
        if rule is None:
            offset = parser.first_reference.get(rule_id, 0)
            raise parser.fail(f"undefined rule '{parser.names[rule_id]}'", offset)
    if root not in parser.definitions:
        offset = next(iter(parser.definitions.values()), 0)
        raise parser.fail(f"grammar has no rule named '{root}' (the root)", offset)
    return parser.symbol_ids[root]


def parse_gbnf(text: str, root: str = "root") -> CompiledGrammar:
    """Parse and fully validate GBNF ``text``; raise GrammarError on any problem."""
    if not isinstance(text, str):
        raise GrammarError(f"grammar must be str, not {type(text).__name__}")
    if not isinstance(root, str) or not root:
        raise GrammarError("root rule name must be a non-empty str")
    _check_text(text)
    parser = _Parser(text)
    parser.parse()
    root_id = _check_symbols(parser, root)
    grammar = CompiledGrammar(
        text=text,
        rules=tuple(parser.rules),
        names=tuple(parser.names),
        owners=tuple(parser.owners),
        defined=tuple(parser.defined_order),
        root=root,
        root_id=root_id,
        definition_offsets=dict(parser.definitions),
        repetitions=tuple(parser.repetitions),
    )
    from ._gbnf_analysis import check_rules  # local: the analysis imports this module

    check_rules(grammar)
    return grammar
