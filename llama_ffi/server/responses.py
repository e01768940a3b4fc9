"""``POST /v1/responses``: OpenAI's Responses API, stateless, over the chat path.

A Responses request is translated into a chat request (``schemas.ChatRequest``) and run by
``chat.submit``/``chat.response``/``chat.stream``, so prompts, grammars, tool calls and
reasoning are exactly those of ``/v1/chat/completions``; only the shapes differ:

* in: ``instructions`` becomes a system message; ``input`` (a string, or items: messages with
  ``input_text`` parts, ``function_call`` and ``function_call_output`` for a tool loop) becomes
  ``messages``; an ``input_image`` part of a user message (a ``data:`` URI in ``image_url``)
  becomes the chat's ``image_url`` part, so a model with a projector (``--mmproj``) reads it
  through the chat route's media path, limits and 400s; flattened function ``tools`` and
  ``tool_choice`` get the chat nesting; ``text.format`` becomes ``response_format``;
  ``max_output_tokens`` is ``max_completion_tokens``.
* out: a ``response`` object whose ``output`` holds a ``reasoning`` item (when the model
  reasoned), a ``message`` item with ``output_text``, and one ``function_call`` item per call;
  a cut at ``max_output_tokens`` is ``status: "incomplete"``.
* streamed: named server-sent events (``event: response.output_text.delta`` ...), each with a
  ``sequence_number``, ending with ``response.completed`` (or ``response.incomplete``); no
  ``[DONE]``, as OpenAI's.

Nothing is stored: ``previous_response_id`` is refused, ``store`` is accepted and ignored; so
is ``input_image`` by ``file_id`` (no file store). ``input_file`` parts are refused.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from ..errors import ContextOverflowError, ValidationError
from ..generation.sampling import SamplingParams
from . import chat
from .errors import describe
from .generation import SSE_HEADERS, whole_answer
from .registry import Registry
from .schemas import ChatRequest

__all__ = ["ROUTES", "ResponsesRequest", "register"]

ROUTES = frozenset({"/v1/responses"})
_STRICT = ConfigDict(strict=True, extra="forbid")
_UNSUPPORTED_PARTS = {"input_file": "files", "input_audio": "audio"}


# --- the request --------------------------------------------------------------------------
class InputContentPart(BaseModel):
    """``input_text`` (``output_text``/``refusal`` in assistant messages) or ``input_image``
    (``image_url`` a data URI; ``detail`` is ignored); other kinds are a clear 400 rather
    than a schema error, so extra keys (``file_data``...) are let through."""

    model_config = ConfigDict(strict=True, extra="allow")
    type: str
    text: str | None = None
    image_url: str | None = None
    file_id: str | None = None
    detail: str | None = None  # low, high, auto, original: one encoding here whichever is asked


class MessageItem(BaseModel):
    model_config = _STRICT
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[InputContentPart]
    id: str | None = None  # output items sent back as input keep their id and status
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class FunctionCallItem(BaseModel):
    model_config = _STRICT
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str
    arguments: str
    id: str | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class FunctionCallOutputItem(BaseModel):
    model_config = _STRICT
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[InputContentPart]
    id: str | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class ReasoningItem(BaseModel):
    """A reasoning item sent back as input: accepted and left out of the prompt (chat
    templates drop earlier turns' reasoning too)."""

    model_config = ConfigDict(strict=True, extra="allow")
    type: Literal["reasoning"]
    id: str | None = None
    summary: list[dict[str, Any]] = Field(default_factory=list)


_KINDS = ("message", "function_call", "function_call_output", "reasoning")


def _item_kind(value: Any) -> str | None:
    kind = value.get("type", "message") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if kind in _KINDS else None


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")] | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")] | Annotated[ReasoningItem, Tag("reasoning")],
    Discriminator(_item_kind, custom_error_type="unsupported_item",
                  custom_error_message=f"input items must be objects of type {', '.join(_KINDS)}"),
]



def _input_kind(value: Any) -> str | None:
    return "text" if isinstance(value, str) else "items" if isinstance(value, list) else None


Input = Annotated[
    Annotated[str, Tag("text")] | Annotated[list[InputItem], Tag("items")],
    Discriminator(_input_kind, custom_error_type="input_type",
                  custom_error_message="input must be a string or a list of input items"),
]


class FunctionTool(BaseModel):
    model_config = _STRICT
    type: Literal["function"]
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FunctionChoice(BaseModel):
    model_config = _STRICT
    type: Literal["function"]
    name: str


def _choice_kind(value: Any) -> str | None:
    """Only functions can be chosen: other kinds (allowed_tools, hosted tools) get one clear message."""
    if isinstance(value, str):
        return "mode"
    is_function = value.get("type") == "function" if isinstance(value, dict) else isinstance(value, FunctionChoice)
    return "function" if is_function else None


ToolChoice = Annotated[
    Annotated[Literal["none", "auto", "required"], Tag("mode")] | Annotated[FunctionChoice, Tag("function")],
    Discriminator(_choice_kind, custom_error_type="tool_choice_type",
                  custom_error_message='tool_choice must be "none", "auto", "required" or '
                                       '{"type": "function", "name": ...}'),
]


class TextFormat(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", populate_by_name=True)
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    json_schema: dict[str, Any] | None = Field(None, alias="schema")
    description: str | None = None
    strict: bool | None = None


class TextConfig(BaseModel):
    model_config = _STRICT
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ResponsesRequest(BaseModel):
    model_config = _STRICT
    model: str | None = None
    input: Input
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1, le=1 << 20)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    tools: list[FunctionTool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    stream: bool = False
    metadata: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]] | None = \
        Field(None, max_length=16)  # OpenAI's limits
    store: bool | None = None  # accepted, ignored: nothing is stored
    previous_response_id: str | None = None  # refused with a clear message: stateless
    user: str | None = None
    truncation: Literal["disabled"] | None = None
    # llama.cpp's extensions, as on the chat endpoint
    seed: int | None = Field(None, ge=-(1 << 63), lt=1 << 64)
    top_k: int | None = Field(None, ge=0, le=1 << 20)
    min_p: float | None = Field(None, ge=0, le=1)
    repeat_penalty: float | None = Field(None, gt=0, le=100)


# --- request -> chat request --------------------------------------------------------------
def _content(content, where: str, role: str) -> str | list[dict]:
    """The chat content of one message: its text, or, with images, the chat's text and
    ``image_url`` parts in the same order (so ``content[j]`` names the same part in both)."""
    if isinstance(content, str):
        return content
    allowed = ("input_text", "output_text", "refusal") if role == "assistant" else ("input_text",)
    parts: list[dict] = []
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        if part.type == "input_image" and role == "user":
            parts.append(_image_part(part, at))
            continue
        if part.type in _UNSUPPORTED_PARTS:
            raise ValidationError(f"{at}: {part.type} is not supported: this server takes text and images "
                                  f"only, no {_UNSUPPORTED_PARTS[part.type]}", param="input")
        if part.type not in allowed:
            where_images = " (input_image parts go in user messages)" if part.type == "input_image" else ""
            raise ValidationError(f"{at}: a {role} message takes {' or '.join(allowed)} parts, "
                                  f"not {part.type!r}{where_images}", param="input")
        if not isinstance(part.text, str):
            raise ValidationError(f"{at}.text must be a string", param="input")
        parts.append({"type": "text", "text": part.text})
    if any(p["type"] == "image_url" for p in parts):
        return parts
    return "\n".join(p["text"] for p in parts)


def _image_part(part: InputContentPart, at: str) -> dict:
    """An ``input_image`` as the chat's ``image_url`` part; the chat route decodes and checks it."""
    if part.file_id is not None:
        raise ValidationError(f"{at}: input_image by file_id is not supported: this server has no file store; "
                              "send the image as a data URI in image_url (data:image/png;base64,...)", param="input")
    if not part.image_url:
        raise ValidationError(f"{at}: input_image needs image_url, a data URI (data:image/png;base64,...)",
                              param="input")
    if not part.image_url.startswith("data:"):
        # as the chat route: the client sends the bytes, this server fetches nothing for it
        raise ValidationError(f"{at}: image_url must be a data URI (data:image/png;base64,...); file paths and "
                              "http(s) URLs are refused", param="input")
    return {"type": "image_url", "image_url": {"url": part.image_url}}


def _messages(body: ResponsesRequest) -> tuple[list[dict], dict[str, str]]:
    """The chat messages, and where each came from (``messages[1]`` -> ``input[0]``): chat
    errors about a message are told to the client in its own terms."""
    if not body.input:
        raise ValidationError("input is empty: give a string or a list of at least one item", param="input")
    items = [MessageItem(role="user", content=body.input)] if isinstance(body.input, str) else body.input
    out: list[dict] = [{"role": "system", "content": body.instructions}] if body.instructions else []
    names: dict[str, str] = {}  # call_id -> function name, for the tool messages
    places: dict[str, str] = {}
    for i, item in enumerate(items):
        where = f"input[{i}]"
        places[f"messages[{len(out)}]"] = where
        if item.type == "message":
            out.append({"role": item.role, "content": _content(item.content, where, item.role)})
        elif item.type == "function_call":
            names[item.call_id] = item.name
            call = {"id": item.call_id, "type": "function",
                    "function": {"name": item.name, "arguments": item.arguments}}
            if out and out[-1]["role"] == "assistant":  # the text and the calls of one turn: one message
                out[-1].setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif item.type == "function_call_output":
            if item.call_id not in names:
                raise ValidationError(f"{where}: no function_call item before it has call_id {item.call_id!r}",
                                      param="input")
            out.append({"role": "tool", "tool_call_id": item.call_id, "name": names[item.call_id],
                        "content": _content(item.output, where, "tool")})
    if not out:
        raise ValidationError("input has nothing to answer: only reasoning items", param="input")
    return out, places


def _response_format(text: TextConfig | None) -> dict | None:
    fmt = text.format if text is not None else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "json_object"}
    if fmt.json_schema is None:
        raise ValidationError("text.format of type json_schema needs a 'schema'", param="text.format.schema")
    return {"type": "json_schema", "json_schema": {"name": fmt.name or "response", "schema": fmt.json_schema,
                                                   "strict": bool(fmt.strict)}}


def to_chat(body: ResponsesRequest) -> tuple[ChatRequest, dict[str, str]]:
    """The chat request that answers ``body`` (validated; a 400 names the Responses field), and
    the input item each of its messages came from."""
    if body.previous_response_id is not None:
        raise ValidationError("previous_response_id is not supported: this server is stateless and stores no "
                              "responses; send the whole conversation in input", param="previous_response_id")
    messages, places = _messages(body)
    fields: dict[str, Any] = {"model": body.model, "messages": messages, "stream": body.stream}
    if body.stream:
        fields["stream_options"] = {"include_usage": True}
    if body.max_output_tokens is not None:
        fields["max_completion_tokens"] = body.max_output_tokens
    if body.tools is not None:
        fields["tools"] = [{"type": "function", "function": t.model_dump(exclude_none=True, exclude={"type"})}
                           for t in body.tools]
    if isinstance(body.tool_choice, FunctionChoice):
        fields["tool_choice"] = {"type": "function", "function": {"name": body.tool_choice.name}}
    elif body.tool_choice is not None:
        fields["tool_choice"] = body.tool_choice
    fields["response_format"] = _response_format(body.text)
    for name in ("temperature", "top_p", "parallel_tool_calls", "metadata", "user", "seed", "top_k", "min_p",
                 "repeat_penalty"):
        fields[name] = getattr(body, name)
    return ChatRequest.model_validate({k: v for k, v in fields.items() if v is not None}), places


_PARAMS = {"messages": "input", "response_format": "text.format", "max_tokens": "max_output_tokens",
           "max_completion_tokens": "max_output_tokens"}


def _responses_param(param: str | None) -> str | None:
    """A chat field name in an error -> the Responses field it came from."""
    if param is None:
        return None
    param = _PARAMS.get(param, param)
    if param.startswith("tool"):
        param = param.replace(".function.", ".")  # tools[0].function.name -> tools[0].name
    return param


_CHAT_PLACE = re.compile(r"messages\[\d+\]")


def _relocated(exc: ValidationError, places: dict[str, str]) -> ValidationError:
    """A chat error that starts with the chat message it is about (``messages[2].content[1]:
    ...``, from the media checks), naming the input item instead (``input[1].content[1]``)."""
    message = str(exc)
    place = _CHAT_PLACE.match(message)
    if place is None or place.group() not in places:
        return exc
    return ValidationError(places[place.group()] + message[place.end():], param="input")


def submit(body: ResponsesRequest, entry):
    chat_body, places = to_chat(body)
    try:
        jobs, request = chat.submit(chat_body, entry)
    except ContextOverflowError as exc:
        exc.param = "input"
        raise
    except ValidationError as exc:
        exc.param = _responses_param(exc.param)
        raise _relocated(exc, places) from None
    return chat_body, jobs, request


# --- the response -------------------------------------------------------------------------
def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _message_item(text: str, status: str, item_id: str | None = None) -> dict:
    return {"type": "message", "id": item_id or _new_id("msg"), "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}


def _reasoning_item(text: str, status: str, item_id: str | None = None) -> dict:
    return {"type": "reasoning", "id": item_id or _new_id("rs"), "status": status, "summary": [],
            "content": [{"type": "reasoning_text", "text": text}]}


def _call_item(call: dict, status: str = "completed") -> dict:
    return {"type": "function_call", "id": _new_id("fc"), "call_id": call["id"], "name": call["function"]["name"],
            "arguments": call["function"]["arguments"], "status": status}


class _Shape:
    """The response object of one request, in progress or finished."""

    def __init__(self, body: ResponsesRequest, entry) -> None:
        self.body, self.entry = body, entry
        self.id = _new_id("resp")
        self.created = int(time.time())
        self.model = body.model or entry.name

    def obj(self, output: list[dict], finish: str | None = None, chat_usage: dict | None = None) -> dict:
        body, defaults = self.body, SamplingParams()
        status = "in_progress" if finish is None else "incomplete" if finish == "length" else "completed"
        fmt = body.text.format.model_dump(by_alias=True, exclude_none=True) if body.text and body.text.format \
            else {"type": "text"}
        choice = body.tool_choice.model_dump() if isinstance(body.tool_choice, FunctionChoice) else body.tool_choice
        return {
            "id": self.id, "object": "response", "created_at": self.created, "status": status,
            "completed_at": int(time.time()) if status == "completed" else None,
            "background": False, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": body.instructions, "max_output_tokens": body.max_output_tokens, "model": self.model,
            "output": output, "parallel_tool_calls": bool(body.parallel_tool_calls), "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None}, "store": False,
            "temperature": defaults.temperature if body.temperature is None else body.temperature,
            "text": {"format": fmt}, "tool_choice": choice or "auto",
            "tools": [t.model_dump(exclude_none=True) for t in body.tools or ()],
            "top_p": defaults.top_p if body.top_p is None else body.top_p, "truncation": "disabled",
            "usage": self._usage(output, chat_usage), "user": body.user, "metadata": body.metadata or {},
        }

    def _usage(self, output: list[dict], chat_usage: dict | None) -> dict | None:
        if chat_usage is None:
            return None
        reasoning = "".join(p["text"] for item in output if item["type"] == "reasoning" for p in item["content"])
        # the reasoning's share of the output, by tokenizing its text again (it is not counted apart)
        n_reasoning = len(self.entry.vocab.tokenize(reasoning, add_special=False)) if reasoning else 0
        return {"input_tokens": chat_usage["prompt_tokens"],
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": chat_usage["completion_tokens"],
                "output_tokens_details": {"reasoning_tokens": min(n_reasoning, chat_usage["completion_tokens"])},
                "total_tokens": chat_usage["total_tokens"]}


def response(shape: _Shape, completion: dict) -> dict:
    """The response object for a finished chat completion (one choice)."""
    choice = completion["choices"][0]
    message, finish = choice["message"], choice["finish_reason"]
    status = "incomplete" if finish == "length" else "completed"
    output = [_reasoning_item(message["reasoning_content"], status)] if message.get("reasoning_content") else []
    calls = message.get("tool_calls") or []
    if message.get("content") or not calls:
        output.append(_message_item(message.get("content") or "", status))
    output.extend(_call_item(call) for call in calls)
    return shape.obj(output, finish, completion["usage"])


class _Events:
    """Chat chunks -> Responses stream events: opens and closes output items as the deltas
    change kind (reasoning, text, tool calls), numbering every event."""

    def __init__(self, shape: _Shape) -> None:
        self.shape = shape
        self.sequence = 0
        self.output: list[dict] = []  # finished items
        self.open: dict | None = None  # the reasoning or message item being streamed
        self.parts: list[str] = []
        self.saw_message = self.saw_calls = False

    def event(self, type_: str, **fields) -> dict:
        out = {"type": type_, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return out

    def start(self) -> list[dict]:
        obj = self.shape.obj([])
        return [self.event("response.created", response=obj), self.event("response.in_progress", response=obj)]

    def delta(self, delta: dict) -> list[dict]:
        events: list[dict] = []
        if delta.get("reasoning_content"):
            events += self._text("reasoning", delta["reasoning_content"])
        if delta.get("content"):
            events += self._text("message", delta["content"])
        for call in delta.get("tool_calls") or ():
            events += self._close("completed") + self._call(call)
        return events

    def finish(self, finish: str | None, chat_usage: dict | None) -> list[dict]:
        status = "incomplete" if finish == "length" else "completed"
        events = self._close(status)
        if not (self.saw_message or self.saw_calls):  # as the whole answer: a message, even an empty one
            events += self._open("message") + self._close(status)
        final = self.shape.obj(self.output, finish or "stop", chat_usage)
        kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
        return events + [self.event(kind, response=final)]

    def _text(self, kind: str, text: str) -> list[dict]:
        events = []
        if self.open is None or self.open["type"] != kind:
            events += self._close("completed") + self._open(kind)
        self.parts.append(text)
        name = "response.reasoning_text.delta" if kind == "reasoning" else "response.output_text.delta"
        extra = {} if kind == "reasoning" else {"logprobs": []}
        events.append(self.event(name, item_id=self.open["id"], output_index=len(self.output), content_index=0,
                                 delta=text, **extra))
        return events

    def _open(self, kind: str) -> list[dict]:
        self.open = (_reasoning_item if kind == "reasoning" else _message_item)("", "in_progress")
        self.saw_message = self.saw_message or kind == "message"
        self.parts = []
        part = self.open["content"].pop()
        at = {"item_id": self.open["id"], "output_index": len(self.output)}
        return [self.event("response.output_item.added", output_index=len(self.output), item=self.open),
                self.event("response.content_part.added", **at, content_index=0, part=part)]

    def _close(self, status: str) -> list[dict]:
        if self.open is None:
            return []
        item, text = self.open, "".join(self.parts)
        self.open = None
        at = {"item_id": item["id"], "output_index": len(self.output)}
        if item["type"] == "reasoning":
            done = _reasoning_item(text, status, item["id"])
            events = [self.event("response.reasoning_text.done", **at, content_index=0, text=text)]
        else:
            done = _message_item(text, status, item["id"])
            events = [self.event("response.output_text.done", **at, content_index=0, text=text, logprobs=[])]
        events += [self.event("response.content_part.done", **at, content_index=0, part=done["content"][0]),
                   self.event("response.output_item.done", output_index=len(self.output), item=done)]
        self.output.append(done)
        return events

    def _call(self, call: dict) -> list[dict]:
        self.saw_calls = True
        done = _call_item(call)
        added = {**done, "arguments": "", "status": "in_progress"}
        at = {"item_id": done["id"], "output_index": len(self.output)}
        events = [self.event("response.output_item.added", output_index=len(self.output), item=added),
                  self.event("response.function_call_arguments.delta", **at, delta=done["arguments"]),
                  self.event("response.function_call_arguments.done", **at, name=done["name"],
                             arguments=done["arguments"]),
                  self.event("response.output_item.done", output_index=len(self.output), item=done)]
        self.output.append(done)
        return events


async def _stream_events(state: _Events, chat_body: ChatRequest, entry, jobs, request) -> AsyncIterator[dict]:
    for event in state.start():
        yield event
    finish = chat_usage = None
    async for chunk in chat.stream(chat_body, entry, jobs, request):
        if chunk.get("usage") is not None:
            chat_usage = chunk["usage"]
        for choice in chunk["choices"]:
            for event in state.delta(choice["delta"]):
                yield event
            finish = choice["finish_reason"] or finish
    for event in state.finish(finish, chat_usage):
        yield event


def _sse(event: dict) -> str:
    return f"event: {event['type']}\ndata: {json.dumps(event, ensure_ascii=False, separators=(',', ':'))}\n\n"


async def _sse_stream(state: _Events, events: AsyncIterator[dict], jobs) -> AsyncIterator[str]:
    """Named events; a failure becomes an ``error`` event (OpenAI's stream error), then the end.
    Leaving early (the client went away) cancels the engine requests."""
    try:
        async for event in events:
            yield _sse(event)
    except Exception as exc:  # noqa: BLE001 - reported to the client in the stream itself
        error = describe(exc)[1]["error"]
        yield _sse(state.event("error", code=error["code"], message=error["message"], param=error["param"]))
    finally:
        jobs.close()


def register(api: FastAPI, registry: Registry) -> None:
    @api.post("/v1/responses")
    async def create_response(body: ResponsesRequest, http_request: Request):
        entry = registry.get(body.model)
        chat_body, jobs, request = submit(body, entry)
        shape = _Shape(body, entry)
        if body.stream:
            state = _Events(shape)
            return StreamingResponse(_sse_stream(state, _stream_events(state, chat_body, entry, jobs, request), jobs),
                                     media_type="text/event-stream", headers=SSE_HEADERS)
        return await whole_answer(http_request, jobs,
                                  lambda choices: response(shape, chat.response(chat_body, entry, jobs, request, choices)))
