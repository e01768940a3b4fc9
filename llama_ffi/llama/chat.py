"""``Llama.create_chat_completion``: OpenAI chat shapes over the one-sequence session.

A ``chat_handler`` (llama-cpp-python style) answers the whole request. Otherwise the
shared chat pipeline (``llama_ffi.chat.pipeline``, also used by the server) builds the
prompt, stops and grammar from a named ``chat_format`` or the GGUF's template, and turns
the output into an OpenAI message or stream of deltas (reasoning, tool calls).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..chat.pipeline import (
    ChatRequest,
    DeltaPipeline,
    build_chat,
    chat_message,
    merge_stops,
    split_chat_options,
    top_logprobs,
)
from ..generation.options import split_options
from ..generation.results import usage

__all__ = ["create_chat_completion", "create_chat_completion_openai_v1"]


def create_chat_completion(llama, messages: Sequence[Mapping[str, Any]], **options: Any):
    if llama.chat_handler is not None:
        return llama.chat_handler(llama=llama, messages=messages, **options)
    chat = split_chat_options(options)
    options.setdefault("max_tokens", None)
    if "sampling" not in options:
        options.setdefault("temperature", 0.2)  # llama-cpp-python's chat default
    request = build_chat(llama.model, llama.chat_format, messages, chat)
    grammar = request.grammar_for(options.get("grammar"))  # raises when both ask for one
    if grammar is not None:
        options["grammar"] = grammar
    options["stop"] = merge_stops(options.get("stop"), request.stops)
    if chat.get("logprobs"):
        options["logprobs"] = top_logprobs(chat.get("top_logprobs"))
    max_tokens = options.pop("max_tokens")
    opts, params = split_options(options, llama.sampling)
    opts.max_tokens, opts.add_special, opts.parse_special = max_tokens, request.add_bos, True
    session = llama._session
    run = session.prepare(request.prompt, opts, params)
    run.id = "chat" + run.id  # chatcmpl-...

    def finish():
        if opts.stream:
            return _stream(session, request, run, params)
        return _response(session, request, run, "".join(session.generate(run, params)))
    if llama.cache is None:
        return finish()
    from .cache import cached

    return cached(llama, run, finish, opts.stream)


def create_chat_completion_openai_v1(llama, *args: Any, **kwargs: Any):
    """The chat completion as the ``openai`` package's pydantic types (llama-cpp-python's
    ``create_chat_completion_openai_v1``)."""
    try:
        from openai.types.chat import ChatCompletion, ChatCompletionChunk
    except ImportError:
        raise ImportError("create_chat_completion_openai_v1 needs the openai package: pip install openai") from None
    if kwargs.get("stream", False):
        return (ChatCompletionChunk(**chunk) for chunk in llama.create_chat_completion(*args, **kwargs))
    return ChatCompletion(**llama.create_chat_completion(*args, **kwargs))


def _chat_logprobs(session, collector, start: int = 0) -> dict | None:
    if collector is None:
        return None
    return collector.chat_logprobs(session.pieces, start)


def _response(session, request: ChatRequest, run, text: str) -> dict:
    message, finish = chat_message(request, text, run.finish_reason)
    return {
        "id": run.id, "object": "chat.completion", "created": run.created,
        "model": run.opts.model or session.model_name,
        "choices": [{"index": 0, "message": message, "logprobs": _chat_logprobs(session, run.logprobs),
                     "finish_reason": finish}],
        "usage": usage(len(run.prompt_tokens), len(run.tokens)),
    }


def _stream(session, request: ChatRequest, run, params) -> Iterator[dict]:
    model = run.opts.model or session.model_name

    def chunk(delta: dict, finish: str | None = None, logprobs=None) -> dict:
        return {"id": run.id, "object": "chat.completion.chunk", "created": run.created, "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]}

    pipeline = DeltaPipeline(request)
    collector, seen = run.logprobs, 0
    gen = session.generate(run, params)
    try:
        yield chunk({"role": "assistant"})
        for text in gen:
            final = run.finish_reason is not None
            for delta in pipeline.feed(text, final=final):
                logprobs = None
                if collector is not None:
                    logprobs = _chat_logprobs(session, collector, seen)
                    seen = len(collector.entries)
                yield chunk(delta, logprobs=logprobs)
        yield chunk({}, pipeline.finish_reason(run.finish_reason))
    finally:
        gen.close()
