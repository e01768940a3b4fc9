"""``POST /v1/chat/completions`` over the shared chat pipeline (``llama_ffi.chat.pipeline``).

The pipeline renders the prompt (GGUF template or named format), adds the grammar that
enforces ``response_format`` or a forced ``tool_choice``, and turns output into OpenAI
messages or deltas with ``tool_calls`` and ``reasoning_content``; ``Llama`` uses the same
code, so a model answers alike through both.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from ..chat.pipeline import (
    DeltaPipeline,
    build_chat,
    chat_message,
    merge_stops,
    top_logprobs,
)
from ..chat.media import MEDIA_PARTS, extract_media, has_media
from ..errors import GrammarError, ValidationError
from ..llama.vision import media_prompt
from ..generation.output import chat_logprobs
from ..generation.results import usage
from .generation import Choice, Jobs, grammar_of, lora_of, sampling_params, speculative_of, stop_list, timings_of
from .schemas import ChatRequest

_CHAT_FIELDS = ("tools", "tool_choice", "functions", "function_call", "response_format", "enable_thinking",
                "chat_template_kwargs")


def _messages(body: ChatRequest, entry=None) -> list[dict]:
    """The messages as the chat pipeline takes them. With ``entry`` (the chat route), image
    and audio parts stay in place for a model with a projector (``media_messages``)."""
    out = []
    for i, message in enumerate(body.messages):
        m = message.model_dump(exclude_unset=True)
        if m.get("content") is None and not (m["role"] == "assistant" and any(
                m.get(k) for k in ("tool_calls", "function_call", "reasoning_content"))):
            # as OpenAI: only an assistant message that calls tools may leave content out; the
            # chat template would otherwise fail on it with a message about template internals
            raise ValidationError(f"messages[{i}].content is required for a {m['role']} message"
                                  + (" without tool_calls" if m["role"] == "assistant" else ""), param="messages")
        if isinstance(m.get("content"), list):
            parts = m["content"]
            if entry is not None and any(p.get("type") in MEDIA_PARTS for p in parts):
                _check_media_parts(entry, parts, i)
                out.append(m)
                continue
            if any(p.get("type") != "text" or not isinstance(p.get("text"), str) for p in parts):
                raise ValidationError(f"messages[{i}].content: only text parts are supported", param="messages")
            m["content"] = "\n".join(p["text"] for p in parts)
        out.append(m)
    return out


def _check_media_parts(entry, parts: list[dict], i: int) -> None:
    if getattr(entry.engine, "mtmd", None) is None:
        raise ValidationError(f"messages[{i}]: this model has no projector (mmproj): it cannot read image or audio "
                              "parts", param="messages")
    for j, part in enumerate(parts):
        kind = part.get("type")
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise ValidationError(f"messages[{i}].content[{j}]: a text part needs a 'text' string",
                                      param="messages")
        elif kind == "image_url":
            spec = part.get("image_url")
            url = spec.get("url") if isinstance(spec, dict) else spec
            if isinstance(url, str) and not url.startswith("data:"):
                # the client sends the bytes: this server neither reads its own files for a
                # client nor fetches URLs for it
                raise ValidationError(f"messages[{i}].content[{j}]: image_url must be a data URI "
                                      "(data:image/png;base64,...); file paths and http(s) URLs are refused",
                                      param="messages")
        elif kind not in MEDIA_PARTS:
            raise ValidationError(f"messages[{i}].content[{j}]: part type {kind!r} is not supported (text, "
                                  "image_url, input_audio)", param="messages")


def _media_prompts(entry, messages: list[dict], n: int):
    """(messages with media markers, a function rendering ``n`` MediaPrompts from the prompt
    text) or (messages, None) for a text-only chat."""
    if not has_media(messages):
        return messages, None
    engine, settings = entry.engine, entry.settings
    messages, items = extract_media(messages, engine.mtmd.marker, max_bytes=settings.max_media_bytes,
                                    max_items=settings.max_media_items)

    def prompts(text: str, add_bos: bool) -> list:
        built = []
        try:
            for _ in range(n):  # one per choice: the engine owns (and frees) each request's chunks
                with engine.media_lock:
                    built.append(media_prompt(engine.mtmd, entry.vocab, text, items, add_bos=add_bos))
        except BaseException:
            for media in built:
                media.close()
            raise
        return built

    return messages, prompts


def _chat_options(body: ChatRequest) -> dict[str, Any]:
    chat = {}
    for name in _CHAT_FIELDS:
        value = getattr(body, name)
        if value is not None:
            chat[name] = [v.model_dump(exclude_none=True) for v in value] if name in ("tools", "functions") else value
    return chat


def submit(body: ChatRequest, entry, prefill: str = "") -> tuple[Jobs, Any]:
    """``prefill``: text the answer continues (after the generation prompt), not part of it."""
    messages, media_prompts = _media_prompts(entry, _messages(body, entry), body.n)
    try:
        request = build_chat(entry.model, entry.settings.chat_format, messages, _chat_options(body))
    except GrammarError as exc:  # a schema we cannot compile: name the field it came from
        exc.param = exc.param or ("response_format" if body.response_format is not None else "tools")
        raise
    grammar = request.grammar_for(grammar_of(body))
    stops = merge_stops(stop_list(body.stop), request.stops) or []
    tokens = "" if media_prompts is not None else \
        entry.vocab.tokenize(request.prompt + prefill, add_special=request.add_bos, parse_special=True)
    max_tokens = (body.max_completion_tokens or body.max_tokens or entry.settings.max_tokens_default
                  or entry.engine.context.n_ctx_seq)
    logprobs = top_logprobs(body.top_logprobs) if body.logprobs else None
    speculative = speculative_of(body, entry.settings)
    loras = lora_of(body, entry)
    media = media_prompts(request.prompt + prefill, request.add_bos) if media_prompts is not None else [None] * body.n
    jobs = Jobs(entry)
    try:
        specs = [(tokens, {"sampling": sampling_params(body, entry.vocab, j), "max_tokens": max_tokens, "stop": stops,
                           "grammar": grammar, "logprobs": logprobs, "loras": loras,
                           **({"media": media[j]} if media[j] is not None else {"speculative": speculative})})
                 for j in range(body.n)]
        return jobs.submit(specs), request
    except BaseException:
        for item in media[len(jobs.requests):]:  # those the engine does not own (yet)
            if item is not None:
                item.close()
        raise


class _Shape:
    def __init__(self, body: ChatRequest, entry) -> None:
        self.body, self.entry = body, entry
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = body.model or entry.name

    def logprobs(self, entries: list) -> dict | None:
        if not self.body.logprobs:
            return None
        return chat_logprobs(entries, self.entry.vocab.pieces)

    def chunk(self, index: int, delta: dict, finish: str | None = None, logprobs=None) -> dict:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]}


def response(body: ChatRequest, entry, jobs: Jobs, request, choices: list[Choice]) -> dict:
    shape = _Shape(body, entry)
    out = []
    for index, c in enumerate(choices):
        message, finish = chat_message(request, c.text, c.finish_reason)
        out.append({"index": index, "message": message, "logprobs": shape.logprobs(c.logprobs),
                    "finish_reason": finish})
    generated = sum(len(c.tokens) for c in choices)
    return {"id": shape.id, "object": "chat.completion", "created": shape.created, "model": shape.model,
            "choices": out, "usage": usage(jobs.prompt_tokens(body.n), generated), **timings_of(jobs)}


async def stream(body: ChatRequest, entry, jobs: Jobs, request) -> AsyncIterator[dict]:
    shape = _Shape(body, entry)
    n = len(jobs.requests)
    pipelines = [DeltaPipeline(request) for _ in range(n)]
    pending: list[list[dict]] = [[] for _ in range(n)]  # logprobs not yet sent with a delta
    generated = 0
    for index in range(n):
        yield shape.chunk(index, {"role": "assistant", "content": ""})
    async for index, event in jobs.events():
        generated += len(event.tokens)
        pending[index].extend(event.logprobs or ())
        final = event.finish_reason is not None
        for delta in pipelines[index].feed(event.text, final=final):
            yield shape.chunk(index, delta, logprobs=shape.logprobs(pending[index]))
            pending[index] = []
        if final:
            finish = pipelines[index].finish_reason(event.finish_reason)
            leftover = shape.logprobs(pending[index]) if pending[index] else None
            yield shape.chunk(index, {}, finish, logprobs=leftover) | (timings_of(jobs) if not jobs.open else {})
    if body.stream_options is not None and body.stream_options.include_usage:
        yield {"id": shape.id, "object": "chat.completion.chunk", "created": shape.created, "model": shape.model,
               "choices": [], "usage": usage(jobs.prompt_tokens(body.n), generated)}
