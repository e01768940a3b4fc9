"""Tool-call formats whose arguments are JSON (most families).

Markers and layouts follow what the pinned llama.cpp templates render for
assistant tool calls (``models/templates/*.jinja``); the parsing code is our own.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from .markers import regex_escape
from .toolcall_base import (
    Region,
    Schemas,
    ToolCallFormat,
    arguments_json,
    call_from_json,
    json_at,
    skip_ws,
)

__all__ = [
    "DeepSeekFormat",
    "FunctionaryV31Format",
    "FunctionaryV32Format",
    "GenericJsonFormat",
    "HarmonyFormat",
    "Llama3Format",
    "MistralFormat",
    "TaggedJsonFormat",
]

Call = tuple[str, str]


def _calls_from_value(value: Any) -> list[Call] | None:
    """Calls from one JSON object or a list of them; None if any item is not a call."""
    items = value if isinstance(value, list) else [value]
    calls = [call_from_json(item) for item in items]
    if not calls or any(call is None for call in calls):
        return None
    return calls  # type: ignore[return-value]


def _after_close(text: str, pos: int, close: str, final: bool) -> int | None:
    """End of a call after its optional closing marker; None while streaming
    text could still turn into that marker."""
    at = skip_ws(text, pos)
    if close and text.startswith(close, at):
        return at + len(close)
    if close and not final and close.startswith(text[at:]):
        return None
    return pos


def _known(calls: list[Call], schemas: Schemas) -> bool:
    """Bare-JSON formats are ambiguous: with tools given, only their names count."""
    return not schemas or all(name in schemas for name, _ in calls)


class TaggedJsonFormat(ToolCallFormat):
    """``OPEN {json}|[json...] CLOSE``: Hermes/Qwen ``<tool_call>``, Granite 3
    ``<|tool_call|>[...]``, Phi-4-mini ``<|tool_call|>...<|/tool_call|>``."""

    def __init__(self, name: str, open_tag: str, close_tag: str = "", token: bool = True) -> None:
        self.name = name
        self.open_tag, self.close_tag = open_tag, close_tag
        self.start_markers = (open_tag,)
        self.trigger_patterns = ("(" + regex_escape(open_tag) + ")",)
        self.trigger_tokens = (open_tag,) if token else ()

    def find_regions(self, text: str, *, final: bool, schemas: Schemas) -> list[Region]:
        regions: list[Region] = []
        pos = 0
        while (start := text.find(self.open_tag, pos)) != -1:
            pos = start + len(self.open_tag)
            parsed = json_at(text, pos)
            calls = _calls_from_value(parsed[0]) if parsed else None
            if calls is None:
                continue  # malformed or still streaming: leave it as text
            end = _after_close(text, parsed[1], self.close_tag, final)
            if end is None:
                break
            regions.append(Region(start, end, tuple(calls)))
            pos = end
        return regions


class Llama3Format(ToolCallFormat):
    """Llama 3.x: a bare ``{"name", "parameters"}`` answer (several may be
    joined by ``;``), or ``<|python_tag|>`` then JSON, a builtin
    ``tool.call(k=v)`` or raw code for the ``python`` tool."""

    name = "llama3"
    start_markers = ("<|python_tag|>",)
    trigger_patterns = (r'^\s*(\{\s*"(?:type|name|function)"\s*:)', r"(<\|python_tag\|>)")
    trigger_tokens = ("<|python_tag|>",)
    _TAG = "<|python_tag|>"

    def leading(self, text: str) -> tuple[str, int]:
        head = text.lstrip()
        if not head:
            return ("wait", 0)
        return ("call", 0) if head[0] == "{" else ("content", 0)

    def find_regions(self, text: str, *, final: bool, schemas: Schemas) -> list[Region]:
        tag = text.find(self._TAG)
        if tag != -1:
            return self._tagged(text, tag, final)
        start = skip_ws(text, 0)
        if not text.startswith("{", start):
            return []
        calls, end = _json_sequence(text, start)
        if not calls or not _known(calls, schemas):
            return []
        return [Region(start, end, tuple(calls))]

    def _tagged(self, text: str, tag: int, final: bool) -> list[Region]:
        body_at = tag + len(self._TAG)
        calls, end = _json_sequence(text, skip_ws(text, body_at))
        if calls:
            return [Region(tag, end, tuple(calls))]
        if not final:
            return []  # builtin calls and code are only complete at the end
        body = text[body_at:].strip()
        call = _builtin_call(body) or ("python", arguments_json({"code": body}) or "{}")
        return [Region(tag, len(text), (call,))] if body else []


def _json_sequence(text: str, pos: int) -> tuple[list[Call], int]:
    """Consecutive JSON calls separated by whitespace or ``;``."""
    calls: list[Call] = []
    end = pos
    while (parsed := json_at(text, pos)) is not None:
        call = call_from_json(parsed[0])
        if call is None:
            break
        calls.append(call)
        end = parsed[1]
        pos = skip_ws(text, end)
        if text.startswith(";", pos):
            pos += 1
    return calls, end


def _builtin_call(body: str) -> Call | None:
    """``brave_search.call(query="x")`` -> ("brave_search", '{"query": "x"}')."""
    match = re.fullmatch(r"([A-Za-z_]\w*)\.call\((.*)\)", body, re.DOTALL)
    if not match:
        return None
    try:
        node = ast.parse(f"f({match.group(2)})", mode="eval").body
        args = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}  # type: ignore[attr-defined]
    except (SyntaxError, ValueError):
        return None
    if None in args:
        return None  # **kwargs splat
    text = arguments_json(args)
    return (match.group(1), text) if text else None


class MistralFormat(ToolCallFormat):
    """``[TOOL_CALLS][{"name", "arguments", "id"}...]`` (Nemo) and the newer
    ``[TOOL_CALLS]name[ARGS]{...}`` / ``name[CALL_ID]id[ARGS]{...}`` (Devstral,
    Small 3.2, Ministral), repeated once per call."""

    name = "mistral"
    start_markers = ("[TOOL_CALLS]",)
    trigger_patterns = (r"(\[TOOL_CALLS\])",)
    trigger_tokens = ("[TOOL_CALLS]",)
    _MARK = "[TOOL_CALLS]"
    _HEAD = re.compile(r"\s*([A-Za-z0-9_.\-]+)(?:\[CALL_ID\][A-Za-z0-9_\-]*)?\[ARGS\]")

    def find_regions(self, text: str, *, final: bool, schemas: Schemas) -> list[Region]:
        regions: list[Region] = []
        pos = 0
        while (start := text.find(self._MARK, pos)) != -1:
            pos = start + len(self._MARK)
            found = self._calls_at(text, pos)
            if found is not None:
                calls, pos = found
                regions.append(Region(start, pos, tuple(calls)))
        return regions

    def _calls_at(self, text: str, pos: int) -> tuple[list[Call], int] | None:
        if text.startswith("[", skip_ws(text, pos)):
            parsed = json_at(text, pos)
            calls = _calls_from_value(parsed[0]) if parsed else None
            return (calls, parsed[1]) if calls and parsed else None
        calls: list[Call] = []
        while (head := self._HEAD.match(text, pos)) is not None:
            parsed = json_at(text, head.end())
            args = arguments_json(parsed[0]) if parsed else None
            if parsed is None or args is None:
                break
            calls.append((head.group(1), args))
            pos = parsed[1]
        return (calls, pos) if calls else None


# DeepSeek markers use fullwidth bars and U+2581; R1 sometimes writes '_' or ' '.
_DS = {
    key: "<｜tool[▁_ ]" + words + "｜>"
    for key, words in (
        ("calls_begin", "calls[▁_ ]begin"),
        ("calls_end", "calls[▁_ ]end"),
        ("call_end", "call[▁_ ]end"),
        ("sep", "sep"),
    )
}
_DS_CALL = re.compile(
    r"<｜tool[▁_ ]call[▁_ ]begin｜>\s*(?:function\s*" + _DS["sep"] + r")?\s*"
    r"([^\n<｜]+?)\s*(?:" + _DS["sep"] + r"|```(?:json)?)"
)
_DS_WRAP = re.compile(_DS["calls_begin"] + "|" + _DS["calls_end"])
_DS_TAIL = re.compile(r"\s*(?:```\s*)?" + _DS["call_end"])


class DeepSeekFormat(ToolCallFormat):
    """R1: ``<｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\\n```json\\n{..}\\n```<｜tool▁call▁end｜>``;
    V3/V3.1: ``<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{..}<｜tool▁call▁end｜>``;
    both inside ``<｜tool▁calls▁begin｜> ... <｜tool▁calls▁end｜>``."""

    name = "deepseek"
    start_markers = ("<｜tool",)  # every spelling of calls_begin / call_begin
    trigger_patterns = (r"(<｜tool[▁_ ]calls?[▁_ ]begin｜>)",)
    trigger_tokens = ("<｜tool▁calls▁begin｜>",)

    def find_regions(self, text: str, *, final: bool, schemas: Schemas) -> list[Region]:
        regions: list[Region] = []
        for match in _DS_CALL.finditer(text):
            parsed = json_at(text, match.end())
            args = arguments_json(parsed[0]) if parsed else None
            if parsed is None or args is None:
                continue
            tail = _DS_TAIL.match(text, parsed[1])
            if tail is None and not final:
                break  # the closing marker has not streamed in yet
            end = tail.end() if tail else parsed[1]
            regions.append(Region(match.start(), end, ((match.group(1).strip(), args),)))
        if regions:  # the section wrappers only go once a call inside parsed
            wraps = [Region(m.start(), m.end()) for m in _DS_WRAP.finditer(text)]
            regions = sorted(regions + [w for w in wraps if not _inside(w, regions)], key=lambda r: r.start)
        return regions


def _inside(region: Region, others: list[Region]) -> bool:
    return any(o.start <= region.start < o.end for o in others)


_HARMONY_CALL = re.compile(
    r"(?:<\|start\|>assistant)?\s*(?:to=functions\.(?P<n1>[^\s<]+)\s*)?"
    r"<\|channel\|>\s*(?:commentary|analysis)\s*(?:to=functions\.(?P<n2>[^\s<]+))?\s*"
    r"(?:<\|constrain\|>\s*)?(?:json\s*)?<\|message\|>"
)


class HarmonyFormat(ToolCallFormat):
    """GPT-OSS: ``<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{..}<|call|>``
    (the recipient may also sit in the role header: ``to=functions.NAME<|channel|>...``).
    The reasoning splitter passes such messages through to content verbatim."""

    name = "harmony"
    start_markers = ("<|start|>", "<|channel|>", "to=functions.")
    trigger_patterns = (
        r"(<\|channel\|>(?:commentary|analysis) to=functions\.)",
        r"((?:<\|start\|>assistant)? ?to=functions\.)",
    )
    trigger_tokens = ()

    def find_regions(self, text: str, *, final: bool, schemas: Schemas) -> list[Region]:
        regions: list[Region] = []
        for match in _HARMONY_CALL.finditer(text):
            name = match.group("n1") or match.group("n2")
            parsed = json_at(text, match.end())
            args = arguments_json(parsed[0]) if parsed else None
            if not name or parsed is None or args is None:
                continue
            end = _after_close(text, parsed[1], "<|call|>", final)
            if end is None:
                break
            if text.startswith("<|end|>", skip_ws(text, end)):
                end = skip_ws(text, end) + len("<|end|>")
            regions.append(Region(match.start(), end, ((name, args),)))
        return regions


class FunctionaryV31Format(ToolCallFormat):
    """Functionary v3.1 (Llama 3.1 based): ``<function=NAME>{json}</function>``,
    and ``<|python_tag|>code`` for its python tool."""

    name = "functionary-v3.1"
    start_markers = ("<function=", "<|python_tag|>")
    trigger_patterns = (r"(<function=)", r"(<\|python_tag\|>)")
    trigger_tokens = ("<|python_tag|>",)
    _OPEN = re.compile(r"<function=([^>\s]+)>")

    def find_regions(self, text: str, *, final: bool, schemas: Schemas) -> list[Region]:
        regions: list[Region] = []
        for match in self._OPEN.finditer(text):
            parsed = json_at(text, match.end())
            args = arguments_json(parsed[0]) if parsed else None
            if parsed is None or args is None:
                continue
            end = _after_close(text, parsed[1], "</function>", final)
            if end is None:
                break
            regions.append(Region(match.start(), end, ((match.group(1), args),)))
        tag = text.find("<|python_tag|>")
        if final and tag != -1 and not _inside(Region(tag, tag), regions):
            code = text[tag + len("<|python_tag|>") :].strip()
            if code:
                regions.append(Region(tag, len(text), (("python", arguments_json({"code": code}) or "{}"),)))
        return regions


class FunctionaryV32Format(ToolCallFormat):
    """Functionary v3.2: messages ``>>>recipient\\nbody``; ``all`` is visible
    content, any other recipient is a call with a JSON body. The prompt ends
    with ``>>>``, so the answer starts straight at the first recipient."""

    name = "functionary-v3.2"
    start_markers = (">>>",)
    trigger_patterns = (r"^((?!all\n)[A-Za-z0-9_])", r">>>((?!all\n)[A-Za-z0-9_])")
    trigger_tokens = ()

    def leading(self, text: str) -> tuple[str, int]:
        if "all\n".startswith(text):
            return ("wait", 0)
        return ("content", 4) if text.startswith("all\n") else ("call", 0)

    def find_regions(self, text: str, *, final: bool, schemas: Schemas) -> list[Region]:
        regions: list[Region] = []
        starts = [0] + [m.start() for m in re.finditer(">>>", text) if m.start() > 0]
        bounds = list(zip(starts, [*starts[1:], len(text)], strict=True))
        for seg_start, seg_end in bounds:
            head = seg_start + 3 if text.startswith(">>>", seg_start) else seg_start
            newline = text.find("\n", head, seg_end)
            if newline == -1:
                continue
            recipient = text[head:newline].strip()
            if recipient == "all":
                regions.append(Region(seg_start, newline + 1))
                continue
            parsed = json_at(text, newline + 1)
            args = arguments_json(parsed[0]) if parsed and parsed[1] <= seg_end else None
            if args is not None and parsed is not None and recipient:
                regions.append(Region(seg_start, parsed[1], ((recipient, args),)))
        return regions


class GenericJsonFormat(ToolCallFormat):
    """Families without a native syntax (Gemma 2/3, Phi-3, fallback): the
    whole answer is JSON, optionally fenced: ``{"tool_calls": [...]}``,
    ``{"tool_call": {...}}``, ``{"name", "arguments"}`` or a list of calls."""

    name = "generic"
    start_markers = ()
    trigger_patterns = (r'^\s*((?:```(?:json)?\s*)?[\[{]\s*"?(?:tool_calls?|name|function)?)',)
    trigger_tokens = ()
    _FENCE = re.compile(r"```(?:json)?[ \t]*\n?")

    def leading(self, text: str) -> tuple[str, int]:
        head = text.lstrip()
        if not head or "```".startswith(head):
            return ("wait", 0)
        return ("call", 0) if head[0] in "{[" or head.startswith("```") else ("content", 0)

    def find_regions(self, text: str, *, final: bool, schemas: Schemas) -> list[Region]:
        start = skip_ws(text, 0)
        fence = self._FENCE.match(text, start)
        parsed = json_at(text, fence.end() if fence else start)
        if parsed is None:
            return []
        value, end = parsed
        if isinstance(value, dict) and ("tool_calls" in value or "tool_call" in value):
            value = value.get("tool_calls", value.get("tool_call"))
        calls = _calls_from_value(value)
        if not calls or not _known(calls, schemas):
            return []
        if fence:
            closing = skip_ws(text, end)
            if text.startswith("```", closing):
                end = closing + 3
            elif not final:
                return []
        return [Region(start, end, tuple(calls))]
