"""``POST /v1/messages``: Anthropic's Messages API, over the chat path.

A Messages request is translated into a chat request (``schemas.ChatRequest``) and run by
``chat.submit``, so prompts, grammars, tool calls and reasoning are those of
``/v1/chat/completions``; the chat pipeline reads the answer back (``chat_message``, or
``DeltaPipeline`` for streams) and only the shapes differ:

* in: ``system`` (a string or text blocks) becomes a system message; ``tool_use`` blocks in
  assistant turns become ``tool_calls``, ``tool_result`` blocks in user turns ``tool``
  messages, ``thinking`` blocks ``reasoning_content``; ``tools`` (``input_schema``) and
  ``tool_choice`` (``auto``/``any``/``tool``/``none``) get the chat shapes; ``thinking``
  switches the template's thinking on or off (its ``budget_tokens`` is not enforced);
  ``output_config.format`` (a JSON schema) is enforced by a grammar, as ``response_format``.
  ``image`` blocks (base64 ``source``, in user turns and tool results) become the chat's
  ``image_url`` data URIs, so a model with a projector (``--mmproj``) reads them through the
  chat route's media path, limits and 400s; a ``media_type`` the bytes do not match, a ``url``
  or ``file`` source, and any image for a model without a projector are a 400.
* out: a ``message`` whose ``content`` holds a ``thinking`` block (when the model
  reasoned), a ``text`` block and one ``tool_use`` block per call. ``stop_reason`` is
  ``tool_use``, ``max_tokens``, ``stop_sequence`` (with the one that matched) or ``end_turn``.
* streamed: named server-sent events (``message_start``, ``content_block_start``/``_delta``/
  ``_stop``, ``message_delta``, ``message_stop``; a failure is an ``error`` event), no ``[DONE]``.

``POST /v1/messages/count_tokens`` renders the same prompt and counts it: the count equals the
``usage.input_tokens`` of the same request (an image counts its embeddings: the images are
decoded and tokenized by the projector, not encoded). Errors on both routes take Anthropic's shape
(``errors.shape_for_path``). A final assistant message is a prefill, as on Anthropic's API:
its text goes after the generation prompt and the answer continues it. Not supported:
documents (a 400), Anthropic's server tools.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pydantic
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from ..chat.pipeline import DeltaPipeline, build_chat, chat_message
from ..errors import GrammarError, ValidationError
from . import chat
from .errors import anthropic_error, describe
from .generation import SSE_HEADERS, Choice, Jobs, sse, whole_answer
from .messages_schemas import (IMAGE_MAGIC, CountTokensRequest, DocumentBlock, FileImageSource, ImageBlock,
                               MessagesRequest, TextBlock, ThinkingBlock, ToolChoiceTool, ToolDef, ToolResultBlock,
                               ToolUseBlock, UrlImageSource)
from .registry import ModelEntry, Registry
from .schemas import ChatRequest

__all__ = ["ROUTES", "CountTokensRequest", "MessagesRequest", "register"]

ROUTES = frozenset({"/v1/messages", "/v1/messages/count_tokens"})


# --- request -> chat request ----------------------------------------------------------------
def _text(blocks: str | Sequence[TextBlock]) -> str:
    return blocks if isinstance(blocks, str) else "\n".join(b.text for b in blocks)


def _check_supported(block, where: str) -> None:
    if isinstance(block, DocumentBlock):
        raise ValidationError(f"{where}: document blocks are not supported by this server (text and images only)",
                              param="messages")


def _image_part(block: ImageBlock, at: str) -> dict:
    """An image block as the chat's ``image_url`` part (a data URI): the chat route decodes it,
    with its limits; here only what is Anthropic's own (source kinds, ``media_type``)."""
    source = block.source
    if isinstance(source, UrlImageSource):
        raise ValidationError(f"{at}: image source type 'url' is not supported: this server does not fetch URLs; "
                              "send the bytes (source type 'base64')", param="messages")
    if isinstance(source, FileImageSource):
        raise ValidationError(f"{at}: image source type 'file' is not supported: this server has no file store; "
                              "send the bytes (source type 'base64')", param="messages")
    if source.media_type not in IMAGE_MAGIC:
        raise ValidationError(f"{at}: image media_type {source.media_type!r} is not one of "
                              f"{', '.join(IMAGE_MAGIC)}", param="messages")
    found = _image_type(source.data)
    if found is not None and found != source.media_type:
        raise ValidationError(f"{at}: the image data is {found}, not the {source.media_type} its media_type says",
                              param="messages")
    if found is None and _head(source.data) is not None:
        raise ValidationError(f"{at}: the image data is not {source.media_type} (nor another image type this "
                              "API takes)", param="messages")
    return {"type": "image_url", "image_url": {"url": f"data:{source.media_type};base64,{source.data}"}}


def _head(data: str) -> bytes | None:
    """The first bytes of base64 ``data`` (enough for a file signature), or None when they are
    not base64: the chat route, which decodes the whole, then says so."""
    try:
        return base64.b64decode("".join(data[:64].split())[:16], validate=True)
    except (binascii.Error, ValueError):
        return None


def _image_type(data: str) -> str | None:
    head = _head(data)
    if head is None:
        return None
    for media_type, signatures in IMAGE_MAGIC.items():
        if head.startswith(signatures) and (media_type != "image/webp" or head[8:12] == b"WEBP"):
            return media_type
    return None


def _parts(blocks: Sequence[tuple[int, Any]], where: str, at: str, places: dict[str, str],
           note: str = "") -> str | list[dict]:
    """(index, text or image block) pairs as chat content: their text joined, or, with images,
    the chat's parts in order; ``note`` goes first. ``places`` learns where each part came from
    (``at``: the chat message's place)."""
    parts = [_image_part(block, f"{where}.content[{j}]") if isinstance(block, ImageBlock)
             else {"type": "text", "text": block.text} for j, block in blocks]
    if not any(p["type"] == "image_url" for p in parts):
        text = "\n".join(p["text"] for p in parts)
        return f"{note} {text}" if note else text
    lead = [{"type": "text", "text": note}] if note else []
    for m, (j, _) in enumerate(blocks, start=len(lead)):
        places[f"{at}.content[{m}]"] = f"{where}.content[{j}]"
    return lead + parts


def _tool_message(block: ToolResultBlock, where: str, at: str, places: dict[str, str]) -> dict:
    blocks = [(0, TextBlock(type="text", text=block.content))] if isinstance(block.content, str) \
        else list(enumerate(block.content))
    content = _parts(blocks, where, at, places, note="Error:" if block.is_error else "")  # the call failed
    return {"role": "tool", "tool_call_id": block.tool_use_id, "content": content}


def _user_turn(blocks: Sequence[Any], where: str, first: int, places: dict[str, str]) -> list[dict]:
    """Tool results first, as ``tool`` messages (they must follow the assistant's calls), then the
    text and images. ``first``: the chat index the first of them takes (for ``places``)."""
    results, content = [], []
    for j, block in enumerate(blocks):
        _check_supported(block, where)
        if isinstance(block, ToolResultBlock):
            at = f"messages[{first + len(results)}]"
            places[at] = f"{where}.content[{j}]"
            results.append(_tool_message(block, f"{where}.content[{j}]", at, places))
        elif isinstance(block, (TextBlock, ImageBlock)):
            content.append((j, block))
        else:
            raise ValidationError(f"{where}: {block.type} blocks belong in assistant messages", param="messages")
    if not content and results:
        return results
    at = f"messages[{first + len(results)}]"
    places[at] = where
    return results + [{"role": "user", "content": _parts(content, where, at, places)}]


def _assistant_turn(blocks: Sequence[Any], where: str) -> dict:
    texts, calls, reasoning = [], [], []
    for block in blocks:
        _check_supported(block, where)
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ToolUseBlock):
            calls.append({"id": block.id, "type": "function",
                          "function": {"name": block.name, "arguments": json.dumps(block.input, ensure_ascii=False)}})
        elif isinstance(block, ThinkingBlock):
            reasoning.append(block.thinking)
        elif isinstance(block, (ToolResultBlock, ImageBlock)):
            raise ValidationError(f"{where}: {block.type} blocks belong in user messages", param="messages")
        # redacted_thinking: encrypted by Anthropic, nothing a local model can read
    if not texts and not calls:
        raise ValidationError(f"{where}: an assistant message needs text or tool_use content", param="messages")
    message: dict[str, Any] = {"role": "assistant", "content": "\n".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    if reasoning:
        message["reasoning_content"] = "\n".join(reasoning)
    return message


def _chat_messages(body: CountTokensRequest) -> tuple[list[dict], str, dict[str, str]]:
    """The chat messages; the prefill: the text of a final assistant message, which Anthropic's
    API continues rather than answering after it; and where each chat message and image part
    came from (``messages[2].content[0]`` -> ``messages[1].content[3]``)."""
    out: list[dict] = []
    places: dict[str, str] = {}
    if body.system is not None and _text(body.system):
        out.append({"role": "system", "content": _text(body.system)})
    for i, message in enumerate(body.messages):
        where = f"messages[{i}]"
        blocks = [TextBlock(type="text", text=message.content)] if isinstance(message.content, str) \
            else message.content
        if not blocks:
            raise ValidationError(f"{where}: content is empty", param="messages")
        if message.role == "user":
            out.extend(_user_turn(blocks, where, len(out), places))
        else:
            places[f"messages[{len(out)}]"] = where
            out.append(_assistant_turn(blocks, where))
    if body.messages[-1].role != "assistant":
        return out, "", places
    last = out.pop()
    if last.get("tool_calls") or last.get("reasoning_content"):
        raise ValidationError(f"messages[{len(body.messages) - 1}]: a final assistant message (a prefill to "
                              "continue) may hold text only", param="messages")
    return out, last["content"], places


_CHAT_PLACE = re.compile(r"messages\[\d+\](?:\.content\[\d+\])?")


@contextmanager
def _located(places: dict[str, str]) -> Iterator[None]:
    """Chat errors that start with a chat place (``messages[2].content[1]: ...``, from the media
    checks) name the Anthropic block instead: the chat's messages are numbered differently."""
    try:
        yield
    except ValidationError as exc:
        message = str(exc)
        found = _CHAT_PLACE.match(message)
        if found is None or type(exc) is not ValidationError:
            raise
        for place in (found.group(), found.group().partition(".")[0]):
            if place in places:
                raise ValidationError(places[place] + message[len(place):], param="messages") from None
        raise


def _tool_choice(choice) -> str | dict | None:
    if choice is None:
        return None
    if isinstance(choice, ToolChoiceTool):
        return {"type": "function", "function": {"name": choice.name}}
    return {"auto": "auto", "any": "required", "none": "none"}[choice.type]


def _function(tool: ToolDef) -> dict:
    out = {"name": tool.name, "parameters": tool.input_schema}
    if tool.description:
        out["description"] = tool.description
    return out


def _chat_request(body: CountTokensRequest) -> tuple[ChatRequest, str, dict[str, str]]:
    """The chat request, the prefill its answer continues, and the places of its messages."""
    messages, prefill, places = _chat_messages(body)
    if not messages:
        raise ValidationError("messages: a conversation needs a user message before the assistant's", param="messages")
    fields: dict[str, Any] = {"model": body.model, "messages": messages, "tool_choice": _tool_choice(body.tool_choice)}
    if body.tools is not None:
        fields["tools"] = [{"type": "function", "function": _function(t)} for t in body.tools]
    if body.thinking is not None and body.thinking.type != "adaptive":
        fields["enable_thinking"] = body.thinking.type == "enabled"
    output_format = body.output_config.format if body.output_config is not None else None
    if output_format is not None:
        fields["response_format"] = {"type": "json_schema", "json_schema": {"schema": output_format.schema_}}
    if isinstance(body, MessagesRequest):
        fields.update(max_tokens=body.max_tokens, temperature=body.temperature, top_p=body.top_p, top_k=body.top_k,
                      stop=body.stop_sequences, seed=body.seed)
    try:
        return ChatRequest.model_validate({k: v for k, v in fields.items() if v is not None}), prefill, places
    except pydantic.ValidationError as exc:  # not expected: every field was checked above
        raise ValidationError(f"the request does not translate to a chat request: {exc.errors()[0]['msg']}",
                              param="messages") from None


def _count_tokens(body: CountTokensRequest, entry: ModelEntry) -> int:
    request, prefill, places = _chat_request(body)
    with _located(places):
        messages, media_prompts = chat._media_prompts(entry, chat._messages(request, entry), 1)
        try:
            rendered = build_chat(entry.model, entry.settings.chat_format, messages, chat._chat_options(request))
        except GrammarError as exc:
            exc.param = exc.param or "tools"
            raise
        text = rendered.prompt + prefill
        if media_prompts is None:
            return len(entry.vocab.tokenize(text, add_special=rendered.add_bos, parse_special=True))
        # the images decoded and split into chunks as for generation (counted, never encoded)
        media = media_prompts(text, rendered.add_bos)[0]
        try:
            return media.n_tokens
        finally:
            media.close()


# --- the answer ---------------------------------------------------------------------------
def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def _tool_input(arguments: str | dict) -> dict:
    """The call's arguments as an object (Anthropic's ``input``); a call the model left
    unparseable is an empty object rather than a failed response."""
    if isinstance(arguments, dict):
        return arguments
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _tool_use(call: dict) -> dict:
    function = call["function"]
    return {"type": "tool_use", "id": _new_id("toolu"), "name": function["name"],
            "input": _tool_input(function.get("arguments"))}


def _stop_reason(finish: str | None, text: str, tokens: Sequence[int], stops: Sequence[str],
                 pieces: Sequence[bytes]) -> tuple[str, str | None]:
    """Anthropic's (stop_reason, stop_sequence). The engine ends the visible text where a stop
    string began; the generated tokens still hold that string, so it is read back from them."""
    if finish == "tool_calls":
        return "tool_use", None
    if finish == "length":
        return "max_tokens", None
    if stops:
        whole = b"".join(pieces[t] for t in tokens).decode("utf-8", "replace")
        if whole.startswith(text):
            rest = whole[len(text):]
            matched = next((s for s in stops if rest.startswith(s)), None)
            if matched is not None:
                return "stop_sequence", matched
    return "end_turn", None


class _Shape:
    """The message object of one request."""

    def __init__(self, body: MessagesRequest, entry: ModelEntry, jobs: Jobs) -> None:
        self.id = _new_id("msg")
        self.model = body.model
        self.stops = [s for s in body.stop_sequences or () if s]
        self.pieces = entry.vocab.pieces
        self.input_tokens = jobs.prompt_tokens()

    def message(self, content: list[dict], stop: tuple[str | None, str | None], output_tokens: int) -> dict:
        return {"id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": content,
                "stop_reason": stop[0], "stop_sequence": stop[1],
                "usage": {"input_tokens": self.input_tokens, "output_tokens": output_tokens}}

    def stop(self, finish: str | None, text: str, tokens: Sequence[int]) -> tuple[str, str | None]:
        return _stop_reason(finish, text, tokens, self.stops, self.pieces)


def _content(message: dict) -> list[dict]:
    blocks = []
    if message.get("reasoning_content"):
        blocks.append({"type": "thinking", "thinking": message["reasoning_content"], "signature": ""})
    if message.get("content"):
        blocks.append({"type": "text", "text": message["content"]})
    blocks.extend(_tool_use(call) for call in message.get("tool_calls") or ())
    return blocks


def _response(shape: _Shape, request, choice: Choice) -> dict:
    message, finish = chat_message(request, choice.text, choice.finish_reason)
    return shape.message(_content(message), shape.stop(finish, choice.text, choice.tokens), len(choice.tokens))


# --- the stream ---------------------------------------------------------------------------
def _event(data: dict) -> str:
    return f"event: {data['type']}\n{sse(data)}"


class _Blocks:
    """OpenAI deltas -> content block events: a block opens when the kind of output changes
    (thinking, text, each tool call) and the open one is stopped first. The chat pipeline
    releases each tool call whole, so its input goes out as one ``input_json_delta``."""

    _OPEN = {"thinking": {"type": "thinking", "thinking": "", "signature": ""}, "text": {"type": "text", "text": ""}}

    def __init__(self) -> None:
        self.index = -1
        self.kind: str | None = None

    def _switch(self, kind: str, block: dict) -> list[dict]:
        events = self.close()
        self.index += 1
        self.kind = kind
        return events + [{"type": "content_block_start", "index": self.index, "content_block": block}]

    def _delta(self, delta: dict) -> dict:
        return {"type": "content_block_delta", "index": self.index, "delta": delta}

    def feed(self, delta: dict) -> list[dict]:
        events = []
        for kind, key, wire in (("thinking", "reasoning_content", "thinking_delta"), ("text", "content", "text_delta")):
            if delta.get(key):
                if self.kind != kind:
                    events += self._switch(kind, dict(self._OPEN[kind]))
                events.append(self._delta({"type": wire, kind: delta[key]}))
        for call in delta.get("tool_calls") or ():
            block = _tool_use(call)
            arguments = json.dumps(block["input"], ensure_ascii=False)
            events += self._switch("tool_use", {**block, "input": {}})
            events.append(self._delta({"type": "input_json_delta", "partial_json": arguments}))
        return events

    def close(self) -> list[dict]:
        if self.kind is None:
            return []
        self.kind = None
        return [{"type": "content_block_stop", "index": self.index}]


async def _stream(shape: _Shape, jobs: Jobs, request) -> AsyncIterator[str]:
    """The events of one message; leaving early (client gone) cancels the engine request."""
    try:
        start = shape.message([], (None, None), 0)
        yield _event({"type": "message_start", "message": start})
        yield _event({"type": "ping"})
        pipeline, blocks = DeltaPipeline(request), _Blocks()
        parts: list[str] = []
        tokens: list[int] = []
        finish = None
        async for _, event in jobs.events():
            parts.append(event.text)
            tokens.extend(event.tokens)
            final = event.finish_reason is not None
            for delta in pipeline.feed(event.text, final=final):
                for out in blocks.feed(delta):
                    yield _event(out)
            if final:
                finish = pipeline.finish_reason(event.finish_reason)
        for out in blocks.close():
            yield _event(out)
        reason, sequence = shape.stop(finish, "".join(parts), tokens)
        yield _event({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": sequence},
                      "usage": {"output_tokens": len(tokens)}})
        yield _event({"type": "message_stop"})
    except Exception as exc:  # noqa: BLE001 - reported to the client in the stream itself
        status, body, _ = describe(exc)
        yield _event(anthropic_error(status, body["error"]["message"])[1])
    finally:
        jobs.close()


# --- routes -------------------------------------------------------------------------------
def register(api: FastAPI, registry: Registry) -> None:
    @api.post("/v1/messages")
    async def create_message(body: MessagesRequest, http_request: Request):
        entry = registry.get(body.model)
        chat_body, prefill, places = _chat_request(body)
        with _located(places):
            jobs, request = chat.submit(chat_body, entry, prefill)
        shape = _Shape(body, entry, jobs)
        if body.stream:
            return StreamingResponse(_stream(shape, jobs, request), media_type="text/event-stream",
                                     headers=SSE_HEADERS)
        return await whole_answer(http_request, jobs, lambda choices: _response(shape, request, choices[0]))

    @api.post("/v1/messages/count_tokens")
    async def count_message_tokens(body: CountTokensRequest):
        return {"input_tokens": _count_tokens(body, registry.get(body.model))}
