"""The chat pipeline shared by ``Llama.create_chat_completion`` and the server.

Nothing here runs a model. The request side turns (model, chat_format, messages, chat
options) into a :class:`ChatRequest`: the prompt text, whether to add BOS, stop strings,
the grammar that enforces ``response_format`` or a forced ``tool_choice``, and how to read
tool calls back. The response side turns generated text into an OpenAI ``message``
(:func:`chat_message`) or, for streams, text deltas into OpenAI ``delta`` dicts
(:class:`DeltaPipeline`): reasoning goes to ``reasoning_content`` and tool-call syntax
becomes ``tool_calls``.

Tool grammars are in the family's own syntax where ``chat.tool_grammar`` has one: a forced
call (``tool_choice="required"`` or a named function) gets a grammar over the whole answer
(``ChatRequest.grammar``), ``"auto"`` a lazy one that only constrains a call once the model
starts it (``ChatRequest.auto_grammar``, which a caller's own grammar replaces; use
:meth:`ChatRequest.grammar_for`). Both are
:class:`~llama_ffi.chat.tool_grammar.ToolGrammarSpec` objects: ``.text``/``.root`` like a
``LlamaGrammar``, and ``.sampler(vocab)`` for the (lazy) sampler. Families without one
fall back to a JSON grammar over the whole answer for forced calls, and to parsing only
for ``"auto"``.

The prompt comes from, in order: a named ``chat_format``, the GGUF's own Jinja template,
or llama-cpp-python's fallback format (``llama-2``). Before rendering, the conversation is
fitted to what that template or format can take (``chat.polyfill``): an OpenAI tool loop's
history (``content: None``, ``tool_calls``, ``tool`` messages) reaches a template that
knows nothing of tools as text in the syntax the model answers in, and a template that
does know them gets it unchanged unless it needs ``""`` for ``None`` or object arguments.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ValidationError

__all__ = ["CHAT_KEYS", "ChatRequest", "DeltaPipeline", "build_chat", "chat_message",
           "merge_stops", "split_chat_options", "top_logprobs"]

# Options that belong to chat only; everything else is a completion option.
CHAT_KEYS = frozenset({"functions", "function_call", "tools", "tool_choice", "parallel_tool_calls",
                       "response_format", "logprobs", "top_logprobs", "enable_thinking", "chat_template_kwargs"})


@dataclass
class ChatRequest:
    """A chat request made ready for a completion engine."""

    prompt: str
    add_bos: bool
    stops: tuple[str, ...]
    family: Any
    opens_reasoning: bool = False
    tools: list[dict] = field(default_factory=list)
    # none; native: the family's own syntax is parsed (auto, or forced under a native
    # grammar); json: a forced call written as one JSON object (the fallback grammar)
    tool_mode: str = "none"
    forced_name: str | None = None  # json mode: the named function, if any
    grammar: Any = None  # required: response_format, or a forced tool call
    auto_grammar: Any = None  # tool_choice auto: the lazy tool-call grammar; optional

    def grammar_for(self, user_grammar=None):
        """The grammar to generate with, given the caller's own ``grammar`` option: the
        caller's replaces the optional auto grammar but cannot be combined with a
        required one (``ValidationError``)."""
        if user_grammar is None:
            return self.grammar if self.grammar is not None else self.auto_grammar
        if self.grammar is not None:
            raise ValidationError("give either grammar or response_format/tool_choice, not both", param="grammar")
        return user_grammar


def split_chat_options(options: dict[str, Any]) -> dict[str, Any]:
    """Pop the chat-only options out of ``options`` (in place) and return them."""
    return {k: options.pop(k) for k in list(options) if k in CHAT_KEYS}


# --- the prompt ------------------------------------------------------------------------------
def build_chat(model, chat_format: str | None, messages: Sequence[Mapping[str, Any]],
               chat: Mapping[str, Any]) -> ChatRequest:
    """``model``: a native :class:`~llama_ffi.native.Model`; ``chat``: the chat-only options."""
    from .families import detect_family
    from .reasoning import prompt_opens_reasoning
    from .tools import normalize_tool_choice, validate_tools

    _check_messages(messages)
    tools, tool_choice = chat.get("tools"), chat.get("tool_choice")
    if chat.get("functions") is not None and tools is None:  # the pre-tools OpenAI API
        tools = [{"type": "function", "function": f} for f in chat["functions"]]
        call = chat.get("function_call")
        tool_choice = {"type": "function", "function": call} if isinstance(call, Mapping) else call
    tools = validate_tools(tools)
    choice = normalize_tool_choice(tool_choice, tools)
    template = model.chat_template()
    family = detect_family(model.metadata, template)
    rendered_tools = tools if choice.mode != "none" else None
    prompt, add_bos, stops = _render(model, chat_format, messages, template, family, rendered_tools, chat)
    request = ChatRequest(prompt, add_bos, stops, family)
    request.opens_reasoning = prompt_opens_reasoning(prompt, family)
    if choice.mode != "none":
        _plan_tools(request, tools, choice, _parallel(chat.get("parallel_tool_calls")))
    if request.grammar is None:
        request.grammar = _response_format_grammar(chat.get("response_format"))
    if request.grammar is not None:
        request.auto_grammar = None  # one grammar per request: response_format wins over auto
    return request


def _plan_tools(request: ChatRequest, tools: list[dict], choice, parallel: bool) -> None:
    """How tool calls are constrained and read back (module doc)."""
    from ..errors import GrammarError
    from .tool_grammar import tool_call_grammar

    family, forced = request.family, choice.mode == "required"
    done = _prompt_closes_reasoning(request.prompt, family)
    request.tools, request.tool_mode = tools, "native"
    try:
        spec = tool_call_grammar(family, tools, mode="required" if forced else "auto", name=choice.function,
                                 reasoning_open=request.opens_reasoning, reasoning_done=done, parallel=parallel)
    except GrammarError:
        if forced:
            raise
        return  # a schema the converter cannot express: auto still parses calls
    if not forced:
        request.auto_grammar = spec
    elif spec is not None:
        request.grammar = spec
    else:
        request.tool_mode, request.forced_name = "json", choice.function
        request.grammar = _tool_grammar(tools, choice.function)


def _parallel(value) -> bool:
    """``parallel_tool_calls``: off unless asked for (as llama-server), so one call is made."""
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ValidationError("parallel_tool_calls must be a boolean", param="parallel_tool_calls")
    return value


def _prompt_closes_reasoning(prompt: str, family) -> bool:
    """The prompt ends with a closed, empty reasoning block (thinking switched off, as
    Qwen 3's template does): the answer cannot hold reasoning."""
    end = family.reasoning_end
    return family.reasoning_style == "tags" and bool(end) and prompt.rstrip().endswith(end)


def _check_messages(messages) -> None:
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise ValidationError("messages must be a list of message objects", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise ValidationError(f"messages[{i}] must be an object with a string 'role'", param="messages")


def _render(model, chat_format, messages, template, family, tools, chat) -> tuple[str, bool, tuple[str, ...]]:
    from . import get_chat_format, reconcile_bos, render_chat
    from .polyfill import format_caps, polyfill_messages, template_caps
    from .toolcall_formats import GenericJsonFormat

    vocab = model.vocab
    name = chat_format if chat_format is not None else (None if template else "llama-2")
    if name is not None:
        if name == "chatml-function-calling":  # llama-cpp-python's name: ChatML, tools described
            name = "chatml"
        if tools:
            messages = _describe_tools(messages, tools)
        messages = polyfill_messages(messages, format_caps(name), family.tool_format)
        prompt = get_chat_format(name).apply(messages)
        return prompt.prompt, vocab.add_bos, tuple(prompt.stop)
    if tools and "tools" not in template and isinstance(family.tool_format, GenericJsonFormat):
        messages = _describe_tools(messages, tools)  # the template would drop them
    # after the tools' system note, so a template without a system role gets it folded too
    messages = polyfill_messages(messages, template_caps(template), family.tool_format)
    bos = vocab.token_text(vocab.bos) if vocab.bos is not None else ""
    eos = vocab.token_text(vocab.eos) if vocab.eos is not None else ""
    variables = dict(family.template_kwargs(chat.get("enable_thinking")))
    extra = chat.get("chat_template_kwargs") or {}
    if not isinstance(extra, Mapping):
        raise ValidationError("chat_template_kwargs must be a dict", param="chat_template_kwargs")
    variables.update(extra)
    text = render_chat(template, messages, tools=tools or None, add_generation_prompt=True,
                       bos_token=bos, eos_token=eos, **variables)
    text, add_bos = reconcile_bos(text, bos_token=bos, add_bos=vocab.add_bos)
    return text, add_bos, tuple(family.stop_strings)


def _describe_tools(messages, tools) -> list:
    """Named formats, and templates that never mention ``tools``, have no tools slot:
    describe the tools in the system message, in the generic JSON syntax."""
    note = ("You can call these functions. To call one, answer only with JSON "
            '{"name": <function name>, "arguments": <arguments object>}.\n'
            + "\n".join(json.dumps(t["function"], ensure_ascii=False) for t in tools))
    messages = list(messages)
    if messages and isinstance(messages[0], Mapping) and messages[0].get("role") == "system":
        first = dict(messages[0])
        first["content"] = f"{first.get('content') or ''}\n\n{note}".strip()
        return [first, *messages[1:]]
    return [{"role": "system", "content": note}, *messages]


def merge_stops(user, extra: tuple[str, ...]):
    """The caller's stop entries, then the template's stop strings not already there."""
    if user is None or user == []:
        return list(extra) or None
    items = [user] if isinstance(user, (str, int)) else list(user)
    return items + [s for s in extra if s not in items]


def top_logprobs(value) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 20:
        raise ValidationError("top_logprobs must be an integer in [0, 20]", param="top_logprobs")
    return value


# --- grammars -----------------------------------------------------------------------------
def _response_format_grammar(response_format):
    from ..grammar import LlamaGrammar

    if response_format is None:
        return None
    if not isinstance(response_format, Mapping):
        raise ValidationError("response_format must be a dict", param="response_format")
    kind = response_format.get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        schema = response_format.get("schema")
        return LlamaGrammar.from_json_schema(schema) if schema is not None else LlamaGrammar.any_json(object_only=True)
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, Mapping) or "schema" not in spec:
            raise ValidationError("response_format.json_schema needs a 'schema'", param="response_format")
        return LlamaGrammar.from_json_schema(spec["schema"])
    raise ValidationError(f"response_format type {kind!r} is not text, json_object or json_schema",
                          param="response_format")


def _tool_grammar(tools: list[dict], name: str | None):
    """The fallback for families without a native tool grammar (json mode). A named tool:
    its arguments object. ``required``: {"name", "arguments"} of any tool."""
    from ..grammar import LlamaGrammar

    by_name = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    if name is not None:
        return LlamaGrammar.from_json_schema(by_name[name])
    options = [{"type": "object", "properties": {"name": {"const": n}, "arguments": p},
                "required": ["name", "arguments"]} for n, p in by_name.items()]
    return LlamaGrammar.from_json_schema(options[0] if len(options) == 1 else {"anyOf": options})


def _forced_call(request: ChatRequest, text: str, index: int | None = None) -> list[dict]:
    from .toolcall_base import ToolCall, new_call_id

    if request.forced_name is not None:
        name, arguments = request.forced_name, text.strip()
    else:
        try:
            obj = json.loads(text)
            name, arguments = obj["name"], json.dumps(obj["arguments"], ensure_ascii=False)
        except (ValueError, KeyError, TypeError):
            return []  # cut short (max_tokens): nothing complete to report
    return [ToolCall(name, arguments, new_call_id(request.family.call_id_length)).to_openai(index)]


# --- responses ---------------------------------------------------------------------------
def chat_message(request: ChatRequest, text: str, finish: str | None) -> tuple[dict, str | None]:
    """The whole answer as an OpenAI assistant message, and the finish reason to report."""
    from .reasoning import split_reasoning
    from .tools import parse_tool_calls

    message: dict[str, Any] = {"role": "assistant", "content": text}
    if request.tool_mode == "json":
        calls = _forced_call(request, text)
        message["content"] = None
        if calls:
            message["tool_calls"] = calls
        return message, ("tool_calls" if calls and finish == "stop" else finish)
    reasoning, content = split_reasoning(text, request.family, start_in_reasoning=request.opens_reasoning)
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    message["content"] = content
    if request.tool_mode == "native":
        parsed = parse_tool_calls(content, request.family, request.tools)
        if parsed.tool_calls:
            message["content"] = parsed.content or None
            message["tool_calls"] = parsed.tool_calls
            finish = "tool_calls"
    return message, finish


class DeltaPipeline:
    """Text deltas -> OpenAI deltas: reasoning split, then tool-call parsing.

    ``feed(text, final=...)`` returns the deltas ready so far; ``finish_reason(reason)``
    turns the engine's "stop" into "tool_calls" once a call was streamed."""

    def __init__(self, request: ChatRequest) -> None:
        from .reasoning import ReasoningStreamSplitter
        from .tools import ToolCallStreamParser

        self.request = request
        family = request.family
        self.reasoning = ReasoningStreamSplitter(family, start_in_reasoning=request.opens_reasoning) \
            if family.has_reasoning else None
        self.tools = ToolCallStreamParser(family, request.tools) if request.tool_mode == "native" else None
        self.forced: list[str] = []
        self.saw_calls = False

    def finish_reason(self, reason: str | None) -> str | None:
        return "tool_calls" if self.saw_calls and reason == "stop" else reason

    def feed(self, text: str, final: bool = False) -> list[dict]:
        if self.request.tool_mode == "json":
            return self._feed_forced(text, final)
        reasoning, content = ("", text)
        if self.reasoning is not None:
            reasoning, content = self.reasoning.feed(text)
            if final:
                r2, c2 = self.reasoning.finish()
                reasoning, content = reasoning + r2, content + c2
        deltas = [{"reasoning_content": reasoning}] if reasoning else []
        if self.tools is None:
            return deltas + ([{"content": content}] if content else [])
        step = self.tools.feed(content)
        parts = [step] + ([self.tools.finish()] if final else [])
        for part in parts:
            if part.content:
                deltas.append({"content": part.content})
            if part.tool_calls:
                self.saw_calls = True
                deltas.append({"tool_calls": part.tool_calls})
        return deltas

    def _feed_forced(self, text: str, final: bool) -> list[dict]:
        self.forced.append(text)
        if not final:
            return []
        calls = _forced_call(self.request, "".join(self.forced), index=0)
        self.saw_calls = bool(calls)
        return [{"tool_calls": calls}] if calls else []
