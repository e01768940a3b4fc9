"""Make an OpenAI conversation renderable by a template that does not know its shapes.

A tool loop sends back what the API returned: an assistant message with
``content: None`` and ``tool_calls``, then ``tool`` messages. Many chat templates
know nothing of these (SmolLM2's ChatML concatenates ``message['content']``, so
``None`` fails; Gemma 2 raises on any role but user/assistant), and several that do
know them still want ``content`` to be a string or ``arguments`` to be an object.
llama.cpp "polyfills" such conversations before rendering (``common/chat.cpp``
workarounds, minja's ``polyfill_*`` options); this module does the same, in its own
way, for the chat pipeline. :func:`render_chat` itself never changes a conversation:
it stays faithful to transformers.

What a template can take is measured, never guessed from a model name:
:func:`template_caps` renders a few probe conversations (once per template text)
and looks for marker strings in the output. :func:`polyfill_messages` then rewrites
only what the template cannot take:

- a template that renders ``tool_calls``: the conversation is kept, except that
  ``content: None`` becomes ``""`` or string ``arguments`` become objects when the
  probes show the template needs that;
- one that does not: ``content: None`` becomes ``""``; an assistant message's calls
  are written into its content in the syntax the model is asked to answer in (the
  family's tagged syntax, else the generic ``{"name", "arguments"}`` JSON the
  pipeline describes tools with); ``tool`` messages stay where the template renders
  that role, and otherwise become user messages carrying
  ``{"tool_response": {...}}`` JSON (consecutive ones merged into one message);
- everywhere: content parts become text where the template takes only strings, and
  a system message folds into the first user message where the template cannot
  render one.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import TemplateError, ValidationError

__all__ = ["TemplateCaps", "format_caps", "polyfill_messages", "template_caps"]

_ARG = "pf_arg_value_7c1e"  # only ever in the probe call's arguments
_TOOL_RESULT = "pf_tool_result_7c1e"
_SYSTEM = "pf_system_text_7c1e"
_PART = "pf_content_part_7c1e"
_PROBE_TOOLS = [{"type": "function", "function": {
    "name": "pf_probe", "description": "A probe.",
    "parameters": {"type": "object", "properties": {"arg": {"type": "string", "description": "An argument."}},
                   "required": ["arg"]}}}]


@dataclass(frozen=True)
class TemplateCaps:
    """What a template renders, as measured by :func:`template_caps`.

    ``tool_calls``: an assistant message's ``tool_calls`` reach the output.
    ``null_content``/``object_arguments``: the shape that worked for such a message
    (``content: None`` kept; ``arguments`` as an object rather than JSON text).
    ``tool_role``: a ``tool`` message's content reaches the output under that role.
    ``typed_content``: a list of content parts is rendered as text.
    ``system_role``: a system message's content reaches the output.
    """

    tool_calls: bool = False
    null_content: bool = True
    object_arguments: bool = False
    tool_role: bool = False
    typed_content: bool = False
    system_role: bool = True


# --- measuring a template ------------------------------------------------------------------
def _call_history(content: str | None, arguments: Any) -> list[dict]:
    call = {"id": "call00001", "type": "function", "function": {"name": "pf_probe", "arguments": arguments}}
    return [{"role": "user", "content": "Hi"},
            {"role": "assistant", "content": content, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call00001", "name": "pf_probe", "content": _TOOL_RESULT}]


def _measure(render: Callable[[list[dict], list | None], str], *, tool_calls: bool = True) -> TemplateCaps:
    """Run the probes through ``render(messages, tools)``; a probe passes when its
    marker reaches the output (and, for content parts, not as a printed list)."""

    def shows(marker: str, messages: list[dict], *tool_lists: list | None) -> bool:
        for tools in tool_lists or (None, _PROBE_TOOLS):  # some templates need tools to render at all
            try:
                text = render(messages, tools)
            except (TemplateError, ValidationError):
                continue
            if marker in text and f"'text': '{marker}'" not in text and f'"text": "{marker}"' not in text:
                return True
        return False

    found = {}
    if tool_calls:
        # The OpenAI shape first (content None, JSON-text arguments), so a template
        # that takes it as sent is never rewritten; then what llama.cpp falls back to.
        shapes = [(None, json.dumps({"arg": _ARG})), (None, {"arg": _ARG}), ("", json.dumps({"arg": _ARG})),
                  ("", {"arg": _ARG})]
        shape = next((s for s in shapes if shows(_ARG, _call_history(*s), _PROBE_TOOLS)), None)
        if shape is not None:
            found = {"tool_calls": True, "null_content": shape[0] is None,
                     "object_arguments": isinstance(shape[1], dict)}
    hello = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    return TemplateCaps(
        **found,
        tool_role=shows(_TOOL_RESULT, [*hello, {"role": "tool", "tool_call_id": "call00001", "content": _TOOL_RESULT}]),
        typed_content=shows(_PART, [{"role": "user", "content": [{"type": "text", "text": _PART}]}]),
        system_role=shows(_SYSTEM, [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": "Hi"}]),
    )


@functools.lru_cache(maxsize=32)
def template_caps(source: str) -> TemplateCaps:
    """Measure a Jinja chat template (cached by its text). The probes run under
    tighter bounds than a real render: real templates need a few milliseconds each,
    and a hostile one should not cost ten times the render timeout."""
    from .template import ChatTemplate, RenderLimits

    template = ChatTemplate(source, limits=RenderLimits(timeout=1.0, max_steps=1_000_000))
    return _measure(lambda messages, tools: template.render(messages, tools=tools))


@functools.lru_cache(maxsize=32)
def format_caps(name: str) -> TemplateCaps:
    """Measure a named chat format: none renders ``tool_calls``; all join content parts,
    and each treats a system message its own way (kept as it is)."""
    from .formats import get_chat_format

    caps = _measure(lambda messages, _tools: get_chat_format(name).apply(messages).prompt, tool_calls=False)
    return TemplateCaps(tool_role=caps.tool_role, typed_content=True, system_role=True)


# --- rewriting a conversation -------------------------------------------------------------
def polyfill_messages(messages: Sequence[Mapping[str, Any]], caps: TemplateCaps, tool_format=None) -> list[dict]:
    """``messages`` rewritten as little as ``caps`` require (module doc). ``tool_format``
    is the family's :class:`~llama_ffi.chat.toolcall_base.ToolCallFormat`: past calls
    are written in its syntax when the template cannot render them."""
    out: list[dict] = []
    names: dict[str, str] = {}  # tool_call_id -> function name, for tool responses
    merging = False  # the last message is a user message made from tool responses
    for message in messages:
        message = dict(message)
        calls = message.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            if isinstance(call, Mapping) and isinstance(call.get("function"), Mapping):
                names[str(call.get("id"))] = str(call["function"].get("name"))
        if caps.tool_calls:
            out.append(_native(message, caps))
            continue
        if message.get("role") == "tool" and not caps.tool_role:
            response = _tool_response(message, names)
            if merging:
                out[-1]["content"] += "\n" + response
            else:
                out.append({"role": "user", "content": response})
            merging = True
            continue
        merging = False
        if isinstance(calls, list) and calls:
            text = _text(message.get("content"), typed=False)
            written = _calls_text(calls, tool_format)
            message["content"] = f"{text}\n{written}" if text else written
            del message["tool_calls"]
        else:
            message["content"] = _text(message.get("content"), caps.typed_content)
        out.append(message)
    return out if caps.system_role else _fold_system(out)


def _native(message: dict, caps: TemplateCaps) -> dict:
    """A template that renders tool calls: only the shape it could not take changes."""
    calls = message.get("tool_calls")
    if isinstance(calls, list) and calls:
        if message.get("content") is None and not caps.null_content:
            message["content"] = ""
        if caps.object_arguments:
            message["tool_calls"] = [_with_object_arguments(call) for call in calls]
    if isinstance(message.get("content"), list) and not caps.typed_content:
        message["content"] = _text(message["content"], typed=False)
    return message


def _with_object_arguments(call: Any) -> Any:
    if not isinstance(call, Mapping) or not isinstance(call.get("function"), Mapping):
        return call
    arguments = _arguments(call["function"].get("arguments"))
    return {**call, "function": {**call["function"], "arguments": arguments}}


def _arguments(value: Any) -> Any:
    """Arguments sent as JSON text, as the object they hold (text that is not JSON stays)."""
    return {} if value is None else _decoded(value)


def _decoded(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _text(content: Any, typed: bool) -> Any:
    """``None`` as ``""``; content parts as their text, a line each (as the server and
    llama.cpp join them), unless the template takes parts."""
    if content is None:
        return ""
    if isinstance(content, list) and not typed:
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping) and p.get("type") == "text")
    return content


def _calls_text(calls: list, tool_format) -> str:
    """Past calls in the syntax the model answers in: a tagged family's own markers,
    else the generic ``{"name", "arguments"}`` JSON (a list for several calls)."""
    from .toolcall_formats import TaggedJsonFormat

    items = []
    for call in calls:
        function = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(function, Mapping):
            items.append({"name": function.get("name"), "arguments": _arguments(function.get("arguments"))})
    dump = functools.partial(json.dumps, ensure_ascii=False)
    if isinstance(tool_format, TaggedJsonFormat):
        if tool_format.close_tag:
            return "\n".join(f"{tool_format.open_tag}\n{dump(i)}\n{tool_format.close_tag}" for i in items)
        return tool_format.open_tag + dump(items)
    return dump(items[0]) if len(items) == 1 else dump(items)


def _tool_response(message: Mapping[str, Any], names: Mapping[str, str]) -> str:
    """A tool message as user text: ``{"tool_response": {"name", "tool_call_id", "content"}}``."""
    response: dict[str, Any] = {}
    call_id = message.get("tool_call_id")
    name = message.get("name") or names.get(str(call_id))
    if name:
        response["name"] = name
    if call_id is not None:
        response["tool_call_id"] = call_id
    response["content"] = _decoded(_text(message.get("content"), typed=False))  # JSON shown as JSON
    return json.dumps({"tool_response": response}, ensure_ascii=False)


def _fold_system(messages: list[dict]) -> list[dict]:
    """No system role: its text goes before the first user message's (llama.cpp merges too)."""
    if not messages or messages[0].get("role") != "system":
        return messages
    system, rest = messages[0], messages[1:]
    if rest and rest[0].get("role") == "user" and isinstance(rest[0].get("content"), str):
        joined = f"{_text(system.get('content'), typed=False)}\n\n{rest[0]['content']}".strip()
        return [{**rest[0], "content": joined}, *rest[1:]]
    return [{"role": "user", "content": _text(system.get("content"), typed=False)}, *rest]
