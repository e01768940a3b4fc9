"""Building blocks for tool-call formats: the call record, JSON scanning, ids.

A format finds *regions* in the model's text: spans that hold tool calls (or
format headers) and are removed from the visible content. A region whose
JSON does not parse is simply not a region, so its text stays content: a
malformed call never raises.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Region",
    "Schemas",
    "ToolCall",
    "ToolCallFormat",
    "arguments_json",
    "call_from_json",
    "coerce_param",
    "json_at",
    "new_call_id",
    "param_schema",
    "skip_ws",
]

# Tool name -> JSON Schema of its parameters; lets text-valued formats type values.
Schemas = Mapping[str, Mapping[str, Any]]

_JSON = json.JSONDecoder()


def new_call_id(length: int | None = None) -> str:
    """A fresh OpenAI-style id (``call_`` + 24 hex), or ``length`` alphanumerics.

    Mistral templates refuse ids that are not exactly 9 alphanumerics, so
    that family asks for ``length=9``.
    """
    if length is not None:
        return uuid.uuid4().hex[:length]
    return "call_" + uuid.uuid4().hex[:24]


@dataclass(frozen=True)
class ToolCall:
    """One parsed call; ``arguments`` is a JSON object serialised as text."""

    name: str
    arguments: str
    id: str = field(default_factory=new_call_id)

    def to_openai(self, index: int | None = None) -> dict[str, Any]:
        call: dict[str, Any] = {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }
        if index is not None:
            call = {"index": index, **call}
        return call


@dataclass(frozen=True)
class Region:
    """Text ``[start, end)`` consumed by the format; ``calls`` are (name, args json)."""

    start: int
    end: int
    calls: tuple[tuple[str, str], ...] = ()


class ToolCallFormat:
    """How one model family writes tool calls. Subclasses override ``find_regions``.

    ``start_markers``: a tool-call region can only begin where one of these
    appears; a streaming parser holds text back from there on.
    ``trigger_patterns``/``trigger_tokens``: what a lazy grammar waits for;
    each pattern has one capture group where the constrained text begins, a
    leading ``^`` meaning "only at the start of the answer".
    """

    name = "none"
    start_markers: tuple[str, ...] = ()
    trigger_patterns: tuple[str, ...] = ()
    trigger_tokens: tuple[str, ...] = ()

    def find_regions(self, text: str, *, final: bool, schemas: Schemas) -> list[Region]:
        """Regions in order. ``final=False`` (streaming) must only report regions
        that no later text can change, so a streamed call is never retracted."""
        return []

    def leading(self, text: str) -> tuple[str, int]:
        """How the start of an answer reads: ``("wait", 0)`` undecided,
        ``("call", 0)`` a call region starts at 0, ``("content", n)`` no call
        region at the start and ``n`` header characters to drop."""
        return ("content", 0)

    def _key(self) -> tuple[Any, ...]:
        return (type(self), self.name, tuple(sorted(vars(self).items())))

    # Value equality, so two families built alike compare (and hash) equal.
    def __eq__(self, other: object) -> bool:
        return isinstance(other, ToolCallFormat) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"<ToolCallFormat {self.name}>"


def skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def json_at(text: str, pos: int) -> tuple[Any, int] | None:
    """Decode one JSON value at ``pos`` (after whitespace): (value, end) or None."""
    pos = skip_ws(text, pos)
    try:
        return _JSON.raw_decode(text, pos)
    except ValueError:
        return None


def arguments_json(args: Any) -> str | None:
    """Arguments as a JSON object string, or None when they are not an object.

    Models write arguments as an object or as a string holding one; both end
    up as the compact JSON text OpenAI clients expect.
    """
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except ValueError:
            return None
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return None
    return json.dumps(args, ensure_ascii=False)


def call_from_json(obj: Any) -> tuple[str, str] | None:
    """(name, args json) from ``{"name", "arguments"|"parameters"}`` or the
    OpenAI ``{"function": {...}}`` shape; None when it is not a call."""
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("function"), dict):
        obj = obj["function"]
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        return None
    args = obj.get("arguments", obj.get("parameters"))
    args_text = arguments_json(args)
    return None if args_text is None else (name, args_text)


def coerce_param(raw: str, schema: Mapping[str, Any] | None) -> Any:
    """Type a parameter written as bare text (XML-like formats).

    With a schema saying ``string`` the text is kept verbatim; otherwise JSON
    is tried first (numbers, booleans, objects) and plain text is the fallback.
    """
    declared = schema.get("type") if isinstance(schema, Mapping) else None
    if declared == "string":
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def param_schema(schemas: Schemas, tool: str, param: str) -> Mapping[str, Any] | None:
    props = (schemas.get(tool) or {}).get("properties")
    return props.get(param) if isinstance(props, Mapping) else None
