"""``Llama.create_chat_completion``: OpenAI chat shapes over the one-sequence session.

A ``chat_handler`` (llama-cpp-python style) answers the whole request. Otherwise the
shared chat pipeline (``llama_ffi.chat.pipeline``, also used by the server) builds the
prompt, stops and grammar from a named ``chat_format`` or the GGUF's template, and turns
the output into an OpenAI message or stream of deltas (reasoning, tool calls).

Image and audio parts (``image_url``, ``input_audio``) need a projector (``Llama(mmproj=...)``):
each becomes a media marker in the rendered prompt (``llama_ffi.chat.media``) and the prompt
goes to the session as a ``vision.MediaPrompt``. Such calls bypass the prompt cache
(``set_cache``), whose keys are token ids.
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
from ..errors import ValidationError
from ..generation.options import split_options
from ..generation.results import usage

__all__ = ["chat_completion", "create_chat_completion", "create_chat_completion_openai_v1"]


def create_chat_completion(llama, messages: Sequence[Mapping[str, Any]], **options: Any):
    if llama.chat_handler is not None:
        return llama.chat_handler(llama=llama, messages=messages, **options)
    return chat_completion(llama, messages, **options)


def chat_completion(llama, messages: Sequence[Mapping[str, Any]], **options: Any):
    """The chat completion through the shared pipeline (what a vision handler answers with)."""
    chat = split_chat_options(options)
    options.setdefault("max_tokens", None)
    if "sampling" not in options:
        options.setdefault("temperature", 0.2)  # llama-cpp-python's chat default
    messages, items = _take_media(llama, messages)
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
    media = None
    if items:
        from .vision import media_prompt

        media = media_prompt(llama._mtmd, llama.model.vocab, request.prompt, items, add_bos=request.add_bos)
    try:
        run = session.prepare(request.prompt, opts, params, media=media)
    except BaseException:
        if media is not None:
            media.close()
        raise
    run.id = "chat" + run.id  # chatcmpl-...

    def finish():
        if opts.stream:
            return _stream(session, request, run, params)
        return _response(session, request, run, "".join(session.generate(run, params)))
    if llama.cache is None or media is not None:
        return finish()
    from .cache import cached

    return cached(llama, run, finish, opts.stream)


def _take_media(llama, messages):
    """(messages with media markers, the media) or (messages, []) for a text-only chat."""
    from ..chat.media import extract_media, has_media

    if not has_media(messages):
        return messages, []
    mtmd = llama._mtmd
    if mtmd is None:
        raise ValidationError("this chat has image or audio parts, but the model was loaded without a multimodal "
                              "projector: pass mmproj='mmproj.gguf' to Llama(...)", param="mmproj")
    settings = llama.settings
    return extract_media(messages, mtmd.marker, max_bytes=settings.max_media_bytes,
                         max_items=settings.max_media_items)


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
        "usage": usage(run.n_prompt_tokens, len(run.tokens)),
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
