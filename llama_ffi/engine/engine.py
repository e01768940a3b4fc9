"""``Engine``: many concurrent generations from one model in one context.

A dedicated thread runs the scheduler's steps; callers submit requests from any thread
or event loop and receive their output as events. Events for asyncio callers are handed
over once per step per event loop (one ``call_soon_threadsafe`` for all of them), so a
step with 64 streams costs one wake-up, not 64.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Callable, Iterator, Sequence

import numpy as np

from ..errors import ClosedError, ContextOverflowError, GenerationError, OverloadedError, ValidationError
from ..generation.results import usage
from ..generation.sampling import SamplingParams
from ..generation.drafting import SpeculativeOptions
from ..generation.spec import budget, prepare
from ..native import Context, ContextParams, Model, ModelParams
from ..native.devices import has_gpu
from .request import Event, Request
from .scheduler import Scheduler


@dataclass(kw_only=True)
class EngineConfig:
    n_ctx: int = 8192
    n_seq_max: int = 16
    n_batch: int = 2048
    n_ubatch: int = 512
    n_gpu_layers: int | None = None
    flash_attn: str | bool | None = "auto"
    n_threads: int | None = None
    backend_sampling: bool | str = "auto"  # "auto": on when layers run on a GPU
    # In the graph: "split" runs top-k there and the rest of the chain on the k candidates on
    # the host; "whole" runs the whole chain there (see generation.chains.build_chains).
    backend_chain: str = "split"
    # Which plain chains of all sequences are sampled together in numpy from the step's
    # logits instead of one llama.cpp chain per sequence (generation/batched.py): "greedy"
    # (default: measured faster than a chain per sequence on an H200 and on the CPU), "all"
    # (also top-k sampling: slower than top-k in the graph on an H200, see
    # docs/benchmarks.md), or "off" / False.
    batched_sampling: str | bool = "greedy"
    # True: one pool of cells shared by all sequences (a request may use all of n_ctx;
    # prefixes are shared cell by cell). False: a stream of n_ctx / n_seq_max cells per
    # sequence, so attention reads only its own cells (faster with many short requests;
    # prefixes are copied stream-wise). See docs/serving.md for measured figures.
    kv_unified: bool = True
    max_queued_requests: int = 1024
    max_queued_tokens: int = 1 << 22
    max_tokens_default: int = 256
    # Speculation (requests with ``speculative=``) runs only while at most this many requests
    # run: with more, the batch already keeps the GPU busy and extra draft rows slow every
    # sequence. 4 is a guess on the safe side (not measured yet): speculation pays off for a
    # few streams on a GPU, where a step's extra rows are nearly free.
    spec_max_running: int = 4
    # LoRA adapters apply to the whole context: requests of another adapter set wait until
    # the context switches. Once one has waited this many steps, no new request of the
    # current set is admitted; the running ones finish and the context switches.
    lora_switch_after: int = 64
    # A multimodal projector (GGUF) for image/audio requests (``submit(media=...)``); loaded at
    # construction, closed with the engine. None: text only.
    mmproj: str | os.PathLike | None = None


@dataclass
class Completion:
    text: str
    tokens: list[int]
    finish_reason: str
    prompt_tokens: int
    cached_tokens: int
    logprobs: list | None = None

    @property
    def usage(self) -> dict:
        return usage(self.prompt_tokens, len(self.tokens))


class Engine:
    """Continuous batching over one model: ``async for event in engine.generate(...)``."""

    def __init__(self, model: Model | str | os.PathLike, config: EngineConfig | None = None, **overrides) -> None:
        self.config = config or EngineConfig(**overrides)
        cfg = self.config
        self._owns_model = not isinstance(model, Model)
        self.model = Model(model, ModelParams(n_gpu_layers=cfg.n_gpu_layers)) if self._owns_model else model
        self.context = Context(self.model, ContextParams(
            n_ctx=cfg.n_ctx, n_batch=cfg.n_batch, n_ubatch=min(cfg.n_ubatch, cfg.n_batch), n_seq_max=cfg.n_seq_max,
            kv_unified=cfg.kv_unified, flash_attn=cfg.flash_attn, n_threads=cfg.n_threads, n_threads_batch=cfg.n_threads))
        backend = cfg.backend_sampling
        if backend == "auto":
            backend = cfg.n_gpu_layers != 0 and has_gpu()
        batched = {False: "off", True: "all"}.get(cfg.batched_sampling, cfg.batched_sampling)
        if batched not in ("greedy", "all", "off"):
            raise ValueError(f"batched_sampling must be 'greedy', 'all' or 'off', got {cfg.batched_sampling!r}")
        if cfg.backend_chain not in ("split", "whole"):
            raise ValueError(f"backend_chain must be 'split' or 'whole', got {cfg.backend_chain!r}")
        self.mtmd = None
        if cfg.mmproj is not None:
            from ..native.mtmd import MtmdContext

            if not Path(cfg.mmproj).is_file():
                self.context.close()
                raise ValidationError(f"mmproj file does not exist: {cfg.mmproj}", param="mmproj")
            try:
                self.mtmd = MtmdContext(cfg.mmproj, self.model, use_gpu=cfg.n_gpu_layers != 0 and has_gpu(),
                                        n_threads=cfg.n_threads)
            except BaseException:
                self.context.close()
                raise
        # libmtmd's context is used by submitters (decoding and tokenizing media) and by the
        # engine thread (encoding): this lock keeps them apart
        self.media_lock = threading.Lock()
        self.scheduler = Scheduler(self.context, backend_sampling=bool(backend),
                                   split_chains=cfg.backend_chain == "split",
                                   batched_sampling=batched, spec_max_running=cfg.spec_max_running,
                                   lora_switch_after=cfg.lora_switch_after, media_lock=self.media_lock)
        self.name = Path(getattr(self.model, "path", "model")).name
        self._inbox: list[Request] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._outbox: dict[asyncio.AbstractEventLoop, list] = {}
        self._queued_tokens = 0
        self._calls: list[tuple[Callable, concurrent.futures.Future]] = []
        self._thread = threading.Thread(target=self._run, name=f"llama_ffi-engine-{self.name}", daemon=True)
        self._thread.start()

    # --- submission --------------------------------------------------------------------------
    def submit(self, prompt: str | Sequence[int], *, sampling: SamplingParams | None = None,
               max_tokens: int | None = None, stop=None, stop_tokens: Sequence[int] = (),
               grammar=None, logprobs: int | None = None, speculative=None, loras=None, sink=None,
               media=None) -> Request:
        """Queue a request; ``sink(event)`` is called on the engine thread for its output.

        Checked and tokenized as ``Llama`` does it (``generation.prepare``): ``max_tokens``
        None takes ``config.max_tokens_default``, 0 or -1 run to the end of the sequence's
        context; ``stop`` holds strings and/or token ids. ``speculative``: True or
        ``{"n_max": 16, "n_min": 0}`` drafts by prompt lookup (generation.drafting.SpeculativeOptions).
        ``loras``: ``{LoraAdapter: scale}`` for this request alone (adapters left out are off);
        None takes the engine's default set at submission (:meth:`set_loras`).

        ``media``: a ``llama_ffi.llama.vision.MediaPrompt`` built with this engine's projector
        (``media_prompt(engine.mtmd, ...)`` under ``engine.media_lock``); ``prompt`` is then
        ignored. The engine owns it from here and closes it. Version 1, kept simple: when the
        request is admitted, its text prefix and media chunks are evaluated into its slot's
        sequence in one go on the engine thread (``eval_chunks``), so the other streams wait
        for that (about one prefill step per image); from then on it decodes in the shared
        batches like any request (host sampling, no speculation). It reuses cached cells up to a
        chunk boundary (an identical image at the same place included: ``MediaPrompt.cells``),
        and is never preempted: when the cache is full it ends with ``length``."""
        if self._closed:
            if media is not None:
                media.close()
            raise ClosedError("engine is closed")
        if media is not None:
            try:
                return self._submit_media(media, sampling=sampling, max_tokens=max_tokens, stop=stop,
                                          stop_tokens=stop_tokens, grammar=grammar, logprobs=logprobs, loras=loras,
                                          sink=sink)
            except BaseException:
                media.close()
                raise
        max_tokens = self.config.max_tokens_default if max_tokens is None else max_tokens
        spec = prepare(self.model.vocab, prompt, sampling=sampling, max_tokens=max_tokens, stop=stop,
                       grammar=grammar, logprobs=logprobs)
        spec.stop_tokens |= frozenset(int(t) for t in self.model.vocab.check_tokens(list(stop_tokens)))
        speculative = SpeculativeOptions.parse(speculative)
        lora_set = self.scheduler.default_loras if loras is None else self.scheduler.lora_sets.get(loras)
        tokens = np.asarray(spec.prompt, dtype=np.int32)
        n_ctx = self.context.n_ctx_seq
        if len(tokens) >= n_ctx:
            raise ContextOverflowError(f"prompt of {len(tokens)} tokens does not fit the context of {n_ctx}",
                                       n_tokens=len(tokens), n_ctx=n_ctx, param="prompt")
        request = Request(prompt=tokens, spec=spec, max_tokens=budget(spec.max_tokens, n_ctx - len(tokens)),
                          sink=sink or (lambda e: None), speculative=speculative, loras=lora_set)
        return self._queue(request)

    def _submit_media(self, media, *, sampling, max_tokens, stop, stop_tokens, grammar, logprobs, loras,
                      sink) -> Request:
        if self.mtmd is None:
            raise ValidationError("this engine has no projector (mmproj): it cannot take images or audio",
                                  param="messages")
        if getattr(media.chunks, "mtmd", None) is not self.mtmd:
            raise ValidationError("the media prompt was built with another projector", param="media")
        last = media.chunks[len(media.chunks) - 1]
        if last.type != "text" or not last.tokens:
            raise ValidationError("the prompt must end with text after the last image or audio clip",
                                  param="messages")
        max_tokens = self.config.max_tokens_default if max_tokens is None else max_tokens
        # checked and tokenized as text: the prefix and the last token (which is decoded again
        # in the batch for its logits); the cells between are the chunks' (MediaPrompt.cells:
        # token ids, and keys of the media's bytes that let an identical image be reused)
        spec = prepare(self.model.vocab, list(media.prefix) + [last.tokens[-1]], sampling=sampling,
                       max_tokens=max_tokens, stop=stop, grammar=grammar, logprobs=logprobs)
        spec.stop_tokens |= frozenset(int(t) for t in self.model.vocab.check_tokens(list(stop_tokens)))
        lora_set = self.scheduler.default_loras if loras is None else self.scheduler.lora_sets.get(loras)
        tokens = np.asarray(list(media.prefix) + media.cells, dtype=np.int32)
        n_ctx = self.context.n_ctx_seq
        if len(tokens) >= n_ctx:
            raise ContextOverflowError(f"prompt of {len(tokens)} positions (images included) does not fit the "
                                       f"context of {n_ctx}", n_tokens=len(tokens), n_ctx=n_ctx, param="messages")
        request = Request(prompt=tokens, spec=spec, max_tokens=budget(spec.max_tokens, n_ctx - len(tokens)),
                          sink=sink or (lambda e: None), loras=lora_set, media=media)
        return self._queue(request)

    def _queue(self, request: Request) -> Request:
        tokens = request.prompt
        with self._lock:
            waiting = len(self._inbox) + len(self.scheduler.queue)
            if waiting >= self.config.max_queued_requests or self._queued_tokens + len(tokens) > self.config.max_queued_tokens:
                raise OverloadedError(f"engine queue is full ({waiting} requests waiting)", retry_after=1)
            self._inbox.append(request)
            self._queued_tokens += len(tokens)
        self._wake.set()
        return request

    def set_loras(self, scales) -> concurrent.futures.Future:
        """Make ``{LoraAdapter: scale}`` the default set of later requests that name none
        (``{}``: no adapters). Running and queued requests keep theirs, and cached prefixes
        stay (each is reused only under the set that computed it). Checked here, applied on
        the engine thread; the future is done once it applies."""
        lora_set = self.scheduler.lora_sets.get(scales)
        return self.call(lambda scheduler: scheduler.set_default_loras(lora_set))

    def call(self, fn: Callable[[Scheduler], object]) -> concurrent.futures.Future:
        """Run ``fn(scheduler)`` on the engine thread between two steps: the one safe place to
        touch slots, KV cells or adapters while requests run. The future holds its result or
        exception (``asyncio.wrap_future`` awaits it); fn must be quick, the step waits."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise ClosedError("engine is closed")
            self._calls.append((fn, future))
        self._wake.set()
        return future

    def _run_calls(self) -> None:
        with self._lock:
            calls, self._calls = self._calls, []
        for fn, future in calls:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(self.scheduler))
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    future.set_exception(exc)

    # --- consuming ----------------------------------------------------------------------------
    async def generate(self, prompt, **kwargs) -> AsyncIterator[Event]:
        """Stream events; leaving the loop early (or task cancellation) cancels the request."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()
        request = self.submit(prompt, sink=lambda e: self._post(loop, events, e), **kwargs)
        try:
            while True:
                event = await events.get()
                yield event
                if _is_last(event):
                    return
        finally:
            request.cancel()
            self._wake.set()

    async def complete(self, prompt, **kwargs) -> Completion:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()
        request = self.submit(prompt, sink=lambda e: self._post(loop, events, e), **kwargs)
        result = _Accumulator(request)
        try:
            while not result.add(await events.get()):
                pass
        finally:
            request.cancel()
            self._wake.set()
        return result.completion()

    def generate_sync(self, prompt, **kwargs) -> Iterator[Event]:
        """The same stream for scripts without an event loop."""
        events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        request = self.submit(prompt, sink=events.put, **kwargs)
        try:
            while True:
                event = events.get()
                yield event
                if _is_last(event):
                    return
        finally:
            request.cancel()
            self._wake.set()

    def complete_sync(self, prompt, **kwargs) -> Completion:
        events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        request = self.submit(prompt, sink=events.put, **kwargs)
        result = _Accumulator(request)
        try:
            while not result.add(events.get()):
                pass
        finally:
            request.cancel()
            self._wake.set()
        return result.completion()

    def cancel(self, request: Request) -> None:
        """Cancel ``request`` and wake the engine thread so its slot is freed at once."""
        request.cancel()
        self._wake.set()

    def asyncio_sink(self, target) -> Callable[[Event], None]:
        """A ``sink`` for :meth:`submit` calling ``target.put_nowait(event)`` on the running
        event loop, handed over with every other stream of that loop once per step."""
        loop = asyncio.get_running_loop()
        return lambda event: self._post(loop, target, event)

    def _post(self, loop, events, event) -> None:
        # Runs on the engine thread: collect, and hand over once per step (see _flush).
        self._outbox.setdefault(loop, []).append((events, event))

    def _flush(self) -> None:
        outbox, self._outbox = self._outbox, {}
        for loop, items in outbox.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:
                pass  # that event loop is closed: nobody is listening any more

    # --- the engine thread ---------------------------------------------------------------------
    def _run(self) -> None:
        scheduler = self.scheduler
        while not self._closed:
            with self._lock:
                incoming, self._inbox = self._inbox, []
                self._queued_tokens = 0
            if incoming:
                scheduler.enqueue(incoming)
            if self._calls:
                self._run_calls()
            try:
                busy = scheduler.step()
            except Exception as exc:  # noqa: BLE001 - a failed step fails its requests, not the engine
                scheduler.fail_all(exc)
                busy = False
            self._flush()
            if not busy:
                self._wake.wait(0.5 if scheduler.queue else None)
                self._wake.clear()
        for running in list(scheduler.running):
            running.request.cancel()
        scheduler.step() if scheduler.running else None
        self._flush()

    # --- state -----------------------------------------------------------------------------------
    def stats(self) -> dict:
        s = self.scheduler
        c = s.counters
        ttft = sorted(c.ttft)
        return {
            "queued": len(s.queue) + len(self._inbox), "running": len(s.running),
            "steps": c.steps, "prompt_tokens": c.prompt_tokens, "cached_prompt_tokens": c.cached_prompt_tokens,
            "generated_tokens": c.generated_tokens, "preemptions": c.preemptions, "finished": c.finished,
            "kv_cells_used": sum(slot.n_past for slot in s.slots.slots), "kv_cells_total": self.context.n_ctx,
            "prefix_cache_hit_rate": c.cached_prompt_tokens / c.prompt_tokens if c.prompt_tokens else 0.0,
            "step_seconds": c.step_seconds, "decode_seconds": c.decode_seconds,
            "sample_seconds": c.sample_seconds,
            "draft_steps": c.draft_steps, "draft_tokens": c.draft_tokens, "draft_accepted": c.draft_accepted,
            "lora_switches": c.lora_switches,
            "ttft_p50": ttft[len(ttft) // 2] if ttft else None,
            "ttft_p99": ttft[min(len(ttft) - 1, int(len(ttft) * 0.99))] if ttft else None,
        }

    def close(self, timeout: float = 30.0) -> None:
        """Cancel running requests, stop the thread, free the context (and model if owned)."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._thread.join(timeout)
        with self._lock:
            calls, self._calls = self._calls, []
        for _, future in calls:  # queued after the thread's last look
            if future.set_running_or_notify_cancel():
                future.set_exception(ClosedError("engine is closed"))
        for request in [*self.scheduler.queue, *self._inbox]:  # never admitted: their chunks are still held
            request.close_media()
        if self.mtmd is not None:
            self.mtmd.close()
        self.context.close()
        if self._owns_model:
            self.model.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Engine {self.name} slots={self.context.n_seq_max} {'closed' if self._closed else 'running'}>"


def _is_last(event: Event) -> bool:
    """True for a request's final event; a failed request raises here, in the caller."""
    if event.finish_reason is None:
        return False
    if event.error is not None:
        raise GenerationError(f"generation failed: {event.error}") from event.error
    return True


class _Accumulator:
    """Collects a request's events into a Completion."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.parts: list[str] = []
        self.tokens: list[int] = []
        self.logprobs: list = []
        self.finish_reason = "stop"

    def add(self, event: Event) -> bool:
        """Take one event; True once the request finished."""
        self.parts.append(event.text)
        self.tokens.extend(event.tokens)
        self.logprobs.extend(event.logprobs or ())
        if not _is_last(event):
            return False
        self.finish_reason = event.finish_reason
        return True

    def completion(self) -> Completion:
        r = self.request
        return Completion("".join(self.parts), self.tokens, self.finish_reason, r.n_prompt, r.n_cached,
                          self.logprobs if r.logprobs is not None else None)


def _deliver(items) -> None:
    for events, event in items:
        events.put_nowait(event)
