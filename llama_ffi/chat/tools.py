"""OpenAI-style tool calling on top of each family's native tool-call syntax.

- ``validate_tools`` / ``normalize_tool_choice``: check request shapes and
  raise ``ValidationError`` naming the offending parameter.
- ``parse_tool_calls``: a finished answer -> content + OpenAI ``tool_calls``.
- ``ToolCallStreamParser``: the same while streaming; content is released
  until a tool-call may be starting, calls are emitted once complete.

Malformed calls never raise: their text stays in the content.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..errors import ValidationError
from .families import ModelFamily
from .markers import find_first, partial_marker_len
from .toolcall_base import Region, ToolCall, new_call_id

__all__ = [
    "ParsedToolCalls",
    "ToolCallStreamParser",
    "ToolChoice",
    "ToolStreamDelta",
    "normalize_tool_choice",
    "parse_tool_calls",
    "tool_schemas",
    "validate_tools",
]

_TOOL_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_MODES = ("auto", "none", "required")


class ParsedToolCalls(NamedTuple):
    """``content`` is stripped when calls were found; ``tool_calls`` are OpenAI dicts."""

    content: str
    tool_calls: list[dict[str, Any]]


class ToolStreamDelta(NamedTuple):
    """One streaming step: visible text and newly completed calls (with ``index``)."""

    content: str
    tool_calls: list[dict[str, Any]]


@dataclass(frozen=True)
class ToolChoice:
    """Normalised ``tool_choice``: ``mode`` is auto/none/required; ``function``
    names the one tool that must be called (mode is then ``required``)."""

    mode: str
    function: str | None = None


# --- request validation -------------------------------------------------------


def validate_tools(tools: Any) -> list[dict[str, Any]]:
    """Check OpenAI ``tools`` and return normalised copies.

    Each tool becomes ``{"type": "function", "function": {"name", "description"?,
    "parameters"}}`` with ``parameters`` defaulting to an empty object schema.
    """
    if tools is None:
        return []
    if not isinstance(tools, Sequence) or isinstance(tools, (str, bytes)):
        raise ValidationError("tools must be a list of tool objects", param="tools")
    normalised = [_validate_tool(tool, f"tools[{i}]") for i, tool in enumerate(tools)]
    seen: set[str] = set()
    for i, tool in enumerate(normalised):
        name = tool["function"]["name"]
        if name in seen:
            raise ValidationError(f"duplicate tool name {name!r}", param=f"tools[{i}].function.name")
        seen.add(name)
    return normalised


def _validate_tool(tool: Any, where: str) -> dict[str, Any]:
    if not isinstance(tool, Mapping):
        raise ValidationError("each tool must be an object", param=where)
    if tool.get("type", "function") != "function":
        raise ValidationError("only tools of type 'function' are supported", param=f"{where}.type")
    function = tool.get("function")
    if not isinstance(function, Mapping):
        raise ValidationError("tool.function must be an object", param=f"{where}.function")
    name = function.get("name")
    if not isinstance(name, str) or not _TOOL_NAME.fullmatch(name):
        raise ValidationError(
            "function name must be 1-64 characters of letters, digits, '_', '-' or '.'",
            param=f"{where}.function.name",
        )
    out: dict[str, Any] = {"name": name, "parameters": _validate_parameters(function, where)}
    description = function.get("description")
    if description is not None:
        if not isinstance(description, str):
            raise ValidationError("description must be a string", param=f"{where}.function.description")
        out["description"] = description
    if "strict" in function:
        if not isinstance(function["strict"], bool):
            raise ValidationError("strict must be a boolean", param=f"{where}.function.strict")
        out["strict"] = function["strict"]
    return {"type": "function", "function": out}


def _validate_parameters(function: Mapping[str, Any], where: str) -> dict[str, Any]:
    param = f"{where}.function.parameters"
    params = function.get("parameters")
    if params is None:
        return {"type": "object", "properties": {}}
    if not isinstance(params, Mapping):
        raise ValidationError("parameters must be a JSON Schema object", param=param)
    if params.get("type", "object") != "object":
        raise ValidationError("parameters must describe an object (type 'object')", param=f"{param}.type")
    if not isinstance(params.get("properties", {}), Mapping):
        raise ValidationError("properties must be an object", param=f"{param}.properties")
    required = params.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise ValidationError("required must be a list of strings", param=f"{param}.required")
    return dict(params)


def normalize_tool_choice(tool_choice: Any, tools: Sequence[Mapping[str, Any]] | None) -> ToolChoice:
    """Read ``auto``/``none``/``required``/``{"type": "function", "function": {"name"}}``.

    ``None`` means ``auto`` with tools and ``none`` without. A choice that
    needs a tool (``required``, a named function) fails when none matches.
    """
    names = [t["function"]["name"] for t in validate_tools(tools)]
    if tool_choice is None:
        return ToolChoice("auto" if names else "none")
    if isinstance(tool_choice, str):
        if tool_choice not in _MODES:
            raise ValidationError(f"tool_choice must be one of {', '.join(_MODES)} or an object", param="tool_choice")
        if tool_choice == "required" and not names:
            raise ValidationError("tool_choice 'required' needs at least one tool", param="tool_choice")
        return ToolChoice(tool_choice if names else "none")
    return ToolChoice("required", _named_choice(tool_choice, names))


def _named_choice(tool_choice: Any, names: list[str]) -> str:
    if not isinstance(tool_choice, Mapping) or tool_choice.get("type") != "function":
        raise ValidationError("tool_choice object must have type 'function'", param="tool_choice.type")
    function = tool_choice.get("function")
    name = function.get("name") if isinstance(function, Mapping) else None
    if not isinstance(name, str):
        raise ValidationError("tool_choice.function.name must be a string", param="tool_choice.function.name")
    if name not in names:
        raise ValidationError(f"tool_choice names unknown tool {name!r}", param="tool_choice.function.name")
    return name


def tool_schemas(tools: Sequence[Mapping[str, Any]] | None) -> dict[str, Mapping[str, Any]]:
    """Tool name -> parameters schema (used to type values of text formats)."""
    return {t["function"]["name"]: t["function"]["parameters"] for t in validate_tools(tools)}


# --- parsing ---------------------------------------------------------------------


def parse_tool_calls(
    text: str, family: ModelFamily, tools: Sequence[Mapping[str, Any]] | None = None
) -> ParsedToolCalls:
    """Parse a complete answer (reasoning already split off) for tool calls.

    ``tools`` (optional) lets bare-JSON formats ignore JSON that names no
    known tool and lets text formats type their values.
    """
    regions = family.tool_format.find_regions(text, final=True, schemas=tool_schemas(tools))
    content = _without(text, regions)
    calls = [
        ToolCall(name, args, new_call_id(family.call_id_length)).to_openai()
        for region in regions
        for name, args in region.calls
    ]
    return ParsedToolCalls(content.strip() if calls else content, calls)


def _without(text: str, regions: Sequence[Region]) -> str:
    parts, pos = [], 0
    for region in regions:
        parts.append(text[pos : max(pos, region.start)])
        pos = max(pos, region.end)
    parts.append(text[pos:])
    return "".join(parts)


class ToolCallStreamParser:
    """Streaming ``parse_tool_calls``: ``feed(delta)`` then ``finish()`` once.

    Modes: "lead" (the start of the answer may itself be a call: Llama 3
    JSON, generic JSON, Functionary v3.2 recipients), "text" (content flows,
    minus a possible partial start marker) and "calls" (everything held;
    calls emitted as they complete; leftover text released at ``finish``).
    Content around calls may differ from ``parse_tool_calls`` in whitespace only.
    """

    def __init__(self, family: ModelFamily, tools: Sequence[Mapping[str, Any]] | None = None) -> None:
        self.family = family
        self._format = family.tool_format
        self._schemas = tool_schemas(tools)
        self._buf = ""
        self._mode = "lead"
        self._emitted = 0
        self._finished = False

    def feed(self, delta: str) -> ToolStreamDelta:
        if self._finished:
            raise RuntimeError("ToolCallStreamParser.feed() after finish()")
        self._buf += delta
        content = ""
        if self._mode == "lead":
            self._decide_lead()
        if self._mode == "text":
            content = self._release_text()
        if self._mode == "calls" and (any(ch in delta for ch in "}]>") or content):
            return ToolStreamDelta(content, self._new_calls(final=False))
        return ToolStreamDelta(content, [])

    def finish(self) -> ToolStreamDelta:
        if self._finished:
            return ToolStreamDelta("", [])
        self._finished = True
        if self._mode == "text":
            content, self._buf = self._buf, ""  # a partial marker that never completed
            return ToolStreamDelta(content, [])
        regions = self._format.find_regions(self._buf, final=True, schemas=self._schemas)
        calls = self._emit(regions)
        content = _without(self._buf, regions)
        self._buf = ""
        return ToolStreamDelta(content.strip() if self._emitted else content, calls)

    def _decide_lead(self) -> None:
        verdict, drop = self._format.leading(self._buf)
        if verdict == "call":
            self._mode = "calls"
        elif verdict == "content":
            self._buf = self._buf[drop:]
            self._mode = "text"

    def _release_text(self) -> str:
        idx, _ = find_first(self._buf, self._format.start_markers)
        if idx != -1:
            out, self._buf, self._mode = self._buf[:idx], self._buf[idx:], "calls"
            return out
        keep = partial_marker_len(self._buf, self._format.start_markers)
        out, self._buf = self._buf[: len(self._buf) - keep], self._buf[len(self._buf) - keep :]
        return out

    def _new_calls(self, *, final: bool) -> list[dict[str, Any]]:
        return self._emit(self._format.find_regions(self._buf, final=final, schemas=self._schemas))

    def _emit(self, regions: Sequence[Region]) -> list[dict[str, Any]]:
        found = [call for region in regions for call in region.calls]
        fresh = found[self._emitted :]  # earlier ones went out already; never retract
        out = [
            ToolCall(name, args, new_call_id(self.family.call_id_length)).to_openai(index=self._emitted + i)
            for i, (name, args) in enumerate(fresh)
        ]
        self._emitted += len(out)
        return out

    def __repr__(self) -> str:
        return f"<ToolCallStreamParser {self.family.name} mode={self._mode}>"
