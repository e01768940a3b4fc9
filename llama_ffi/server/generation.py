"""What both generation endpoints share: sampling from a body, the engine requests behind
one HTTP request (``n`` choices, several prompts), disconnect handling, and SSE framing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ClosedError, GenerationError, ValidationError
from ..generation.drafting import SpeculativeOptions
from ..generation.options import check_logit_bias, parse_logit_bias
from ..generation.sampling import SamplingParams
from .errors import describe, error_body, json_response, shape_for_path

_SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "min_p", "typical_p", "repeat_penalty", "presence_penalty",
                    "frequency_penalty", "mirostat_mode", "mirostat_tau", "mirostat_eta")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sampling_params(body, vocab, index: int) -> SamplingParams:
    """The body's sampling fields; choice ``index`` of ``n`` gets ``seed + index``."""
    changes = {name: getattr(body, name) for name in _SAMPLING_FIELDS if getattr(body, name) is not None}
    if body.seed is not None:
        changes["seed"] = (body.seed + index) & 0xFFFFFFFF
    if body.logit_bias:
        bias = parse_logit_bias(body.logit_bias, clamp=100.0)  # OpenAI's range
        check_logit_bias(bias, vocab.n_tokens)
        changes["logit_bias"] = bias
    params = SamplingParams(**changes)
    params.validate()
    if index == 0:
        # Build (and free) the chain once here: the engine builds it on its own thread, where
        # a value its range checks allow but a sampler refuses (repeat_penalty 5e-324) would
        # fail the request after it was accepted. Here it is a 400 before anything starts.
        params.build_chain(vocab).close()
    return params


def grammar_of(body):
    if body.grammar is None:
        return None
    from ..errors import GrammarError
    from ..grammar import LlamaGrammar

    try:
        return LlamaGrammar.from_string(body.grammar)
    except GrammarError as exc:
        exc.param = exc.param or "grammar"  # the OpenAI error names the field at fault
        raise


def speculative_of(body, settings):
    """The request's ``SpeculativeOptions``, or None: its ``speculative``/``speculative.n_*``
    fields over the model's defaults (``spec_default``, ``draft_max``, ``draft_min``)."""
    asked = body.speculative
    fields = asked.model_dump(exclude_none=True) if not isinstance(asked, (bool, type(None))) else {}
    for name in ("n_max", "n_min"):
        value = getattr(body, f"speculative_{name}")
        if value is not None:
            fields[name] = value
    if asked is False or not (asked or fields or (asked is None and settings.spec_default)):
        return None
    defaults = settings.speculative_options()
    n_max = fields.setdefault("n_max", defaults.n_max)
    fields.setdefault("n_min", min(defaults.n_min, n_max))  # as llama-server: the window's floor fits its top
    return SpeculativeOptions.parse(fields)


def lora_of(body, entry):
    """The request's ``lora`` as ``{adapter: scale}`` for ``Engine.submit`` (adapters it leaves
    out are off, as on llama-server), or None: the model's scales of ``/lora-adapters``."""
    if body.lora is None:
        return None
    if entry.lora is None:  # the /lora-adapters routes were not registered (an app without them)
        raise ValidationError("this server takes no per-request lora", param="lora")
    return entry.lora.request_scales(body.lora)


def stop_list(stop) -> list[str]:
    items = [stop] if isinstance(stop, str) else list(stop or ())
    return [s for s in items if s]


@dataclass
class Choice:
    """One choice's output so far."""

    parts: list[str] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    logprobs: list[dict] = field(default_factory=list)
    finish_reason: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.parts)


class _Tagged:
    """Puts ``(index, event)`` on a shared queue: one consumer for all of a request's choices."""

    __slots__ = ("index", "queue")

    def __init__(self, queue: asyncio.Queue, index: int) -> None:
        self.queue, self.index = queue, index

    def put_nowait(self, event) -> None:
        self.queue.put_nowait((self.index, event))


class Jobs:
    """The engine requests behind one HTTP request, submitted together, events merged.

    ``submit`` raises at once (bad input, queue full), before any response starts;
    ``close()`` cancels whatever is still running (client gone, error, shutdown)."""

    def __init__(self, entry) -> None:
        self.entry = entry
        self.queue: asyncio.Queue = asyncio.Queue()
        self.requests: list = []
        self.open = 0

    def submit(self, specs: Iterable[tuple[Any, dict]]) -> Jobs:
        engine = self.entry.engine
        try:
            for prompt, kwargs in specs:
                sink = engine.asyncio_sink(_Tagged(self.queue, len(self.requests)))
                request = engine.submit(prompt, sink=sink, **kwargs)
                self.requests.append(request)
                self.entry.active.add(request)
                self.open += 1
        except BaseException:
            self.close()
            raise
        return self

    async def events(self) -> AsyncIterator[tuple[int, Any]]:
        """``(choice index, Event)`` until every choice finished; failures raise."""
        while self.open:
            index, event = await self.queue.get()
            if event.finish_reason is not None:
                self.open -= 1
                _check(event)
            yield index, event

    async def collect(self) -> list[Choice]:
        choices = [Choice() for _ in self.requests]
        async for index, event in self.events():
            choice = choices[index]
            choice.parts.append(event.text)
            choice.tokens.extend(event.tokens)
            choice.logprobs.extend(event.logprobs or ())
            if event.finish_reason is not None:
                choice.finish_reason = event.finish_reason
        return choices

    def timings(self) -> dict | None:
        """llama-server's ``timings`` counts, summed over the choices; None when none speculated."""
        if all(r.speculative is None for r in self.requests):
            return None
        return {"prompt_n": sum(r.n_prompt - r.n_cached for r in self.requests),
                "predicted_n": sum(r.n_generated for r in self.requests),
                "draft_n": sum(r.n_drafted for r in self.requests),
                "draft_n_accepted": sum(r.n_draft_accepted for r in self.requests)}

    def prompt_tokens(self, per_prompt: int = 1) -> int:
        """Prompt tokens of the distinct prompts (each sent ``per_prompt`` times, for ``n``)."""
        return sum(r.n_prompt for r in self.requests[::per_prompt])

    def close(self) -> None:
        for request in self.requests:
            self.entry.engine.cancel(request)
            self.entry.active.discard(request)


def _check(event) -> None:
    if event.finish_reason == "error":
        raise GenerationError(f"generation failed: {event.error}")
    if event.finish_reason == "cancelled":
        raise ClosedError("the request was cancelled: the server is shutting down")


def timings_of(jobs: Jobs) -> dict:
    """``{"timings": ...}`` where speculation ran (an extra top-level key, as llama-server's), else {}."""
    timings = jobs.timings()
    return {"timings": timings} if timings is not None else {}


class ClientGone(Exception):
    """The client closed the connection before its answer was ready."""


async def unless_disconnected(http_request, work):
    """Await ``work`` unless the client goes away first (then cancel it and raise ClientGone)."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(http_request))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
    if not task.done() or task.cancelled():
        raise ClientGone()
    return task.result()


async def whole_answer(http_request, jobs: Jobs, respond):
    """``respond(choices)`` once every request of ``jobs`` is done; if the client leaves first
    the requests are cancelled and the answer is a 499 (in the route's API shape)."""
    try:
        choices = await unless_disconnected(http_request, jobs.collect())
    except ClientGone:
        return json_response(*shape_for_path(http_request.scope["path"], 499,
                                             error_body("client closed the connection")))
    finally:
        jobs.close()
    return respond(choices)


async def _disconnected(http_request) -> None:
    while (await http_request.receive())["type"] != "http.disconnect":
        pass


def sse(data: Any) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


async def sse_stream(chunks: AsyncIterator[dict], jobs: Jobs) -> AsyncIterator[str]:
    """Frame chunks as server-sent events; a failure becomes an error event, then the end.

    Leaving early (client disconnect cancels this generator) cancels the engine requests."""
    try:
        async for chunk in chunks:
            yield sse(chunk)
        yield "data: [DONE]\n\n"
    except Exception as exc:  # noqa: BLE001 - reported to the client in the stream itself
        yield sse(describe(exc)[1])
    finally:
        jobs.close()
