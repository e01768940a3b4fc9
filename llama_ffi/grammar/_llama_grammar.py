"""``LlamaGrammar``: a GBNF grammar checked in Python before llama.cpp sees it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..errors import GrammarError
from .gbnf import CompiledGrammar, location, parse_gbnf
from .matcher import GrammarMatcher

__all__ = ["LlamaGrammar"]


class LlamaGrammar:
    """A validated GBNF grammar for llama.cpp's grammar sampler.

    Build one with :meth:`from_string`, :meth:`from_file`, :meth:`from_json_schema`
    or :meth:`any_json`. ``text`` is exactly what the C library receives, ``root``
    the name of its start rule. Construction raises :class:`GrammarError` (with
    line and column) for anything llama.cpp would reject, abort on, or loop on.
    """

    __slots__ = ("_compiled",)
    _compiled: CompiledGrammar | None

    def __init__(self, text: str, root: str = "root") -> None:
        self._compiled = None  # keeps __repr__ safe if parsing raises
        self._compiled = parse_gbnf(text, root)

    @classmethod
    def from_string(cls, text: str | bytes, root: str = "root") -> LlamaGrammar:
        """Parse GBNF ``text`` (str, or UTF-8 bytes) whose start rule is ``root``."""
        if isinstance(text, (bytes, bytearray)):
            text = _decode_utf8(bytes(text))
        return cls(text, root)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], root: str = "root") -> LlamaGrammar:
        """Read a ``.gbnf`` file (UTF-8). A missing file raises ``OSError`` as usual."""
        with open(path, "rb") as handle:
            data = handle.read()
        return cls(_decode_utf8(data), root)

    @classmethod
    def from_json_schema(
        cls,
        schema: Mapping[str, Any] | str | bool,
        *,
        whitespace: str = "bounded",
        extra_properties: bool = False,
    ) -> LlamaGrammar:
        """Grammar for JSON documents valid under ``schema`` (a dict or JSON text).

        ``whitespace`` is ``"compact"`` (none), ``"bounded"`` (one space, or a
        newline and an indent of up to 40 spaces/tabs, between tokens) or
        ``"flexible"`` (any JSON whitespace). ``extra_properties`` says whether
        objects that declare ``properties`` but not ``additionalProperties`` may
        carry undeclared keys (JSON Schema allows it; generation rarely wants it).
        Unsupported keywords raise :class:`GrammarError`; see
        :mod:`llama_ffi.grammar.json_schema` for what is supported.
        """
        from .json_schema import schema_to_gbnf

        return cls(schema_to_gbnf(schema, whitespace=whitespace, extra_properties=extra_properties))

    @classmethod
    def any_json(cls, *, object_only: bool = False, whitespace: str = "bounded") -> LlamaGrammar:
        """Any JSON value, or any JSON object (``response_format: json_object``)."""
        from .json_schema import any_json_gbnf

        return cls(any_json_gbnf(object_only=object_only, whitespace=whitespace))

    @property
    def text(self) -> str:
        return self._require().text

    @property
    def root(self) -> str:
        return self._require().root

    @property
    def rules(self) -> tuple[str, ...]:
        """Names of the rules the text defines, in the order it defines them."""
        return self._require().defined

    @property
    def compiled(self) -> CompiledGrammar:
        """The rules as llama.cpp will build them (for tools and tests)."""
        return self._require()

    def matches(self, text: str) -> bool:
        """True iff llama.cpp's matcher would accept all of ``text`` as complete.

        A fresh matcher each call, so one grammar can be shared across threads.
        """
        return GrammarMatcher(self._require()).matches(text)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LlamaGrammar):
            return NotImplemented
        return (self.text, self.root) == (other.text, other.root)

    def __hash__(self) -> int:
        return hash((self.text, self.root))

    def __repr__(self) -> str:
        compiled = self._compiled
        if compiled is None:
            return "<LlamaGrammar (invalid)>"
        return f"<LlamaGrammar root={compiled.root!r} rules={len(compiled.defined)} chars={len(compiled.text)}>"

    def _require(self) -> CompiledGrammar:
        if self._compiled is None:
            raise GrammarError("grammar was not built")
        return self._compiled


def _decode_utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        good = data[: exc.start].decode("utf-8")
        line, column = location(good, len(good))
        raise GrammarError("grammar is not valid UTF-8", line=line, column=column) from None
