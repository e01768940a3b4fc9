"""``Session``: the one-sequence driver behind ``Llama.create_completion``.

One session owns one context and one :class:`TokenLoop` (sequence 0). It remembers which
tokens the KV cache holds, so a call that shares a prefix with the previous one decodes
only the new tokens (``stats.last_prefill`` says how many). Generation goes through
``TokenLoop.run``; per token the Python work is a list index (``Vocab.pieces``), one
incremental UTF-8 decode and, only when stop strings were given, a check over the tail.
Logits reach Python only for a logits processor, stopping criteria or logprobs.

With a drafter (``Llama(draft_model=...)``) generation goes through
``TokenLoop.run_speculative``: the output is drawn from the same distribution, token for
token, with fewer decodes when the drafts are right (``stats.accepted_tokens``). A logits
processor or stopping criteria need one row at a time, so those calls run without it.

A prompt with images or audio (``media=`` a :class:`~llama_ffi.llama.vision.MediaPrompt`) is
its text up to the first media marker, as tokens, and the rest as libmtmd chunks. The cells
a media chunk fills are remembered as negative keys derived from the media's id (a hash of
its bytes) and the cell's offset (``MediaPrompt.cells``; no token id equals one, and
:func:`is_media_cell` tells them apart), so prefix reuse covers an identical image at the
same place, as llama-server does, and never another image. Reuse ends at a chunk boundary
(never inside an image); ``eval_chunks`` evaluates the chunks after it.

Calls on one session are serialised by a lock; a stream holds it from its first chunk
until it ends or is closed, so the KV bookkeeping is never interleaved.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import CancelledError, ContextOverflowError, GenerationError, ValidationError
from ..generation.batched import draft_verifier, sample_row
from ..generation.chains import build_chains, prime
from ..generation.options import CompletionOptions
from ..generation.output import SequenceOutput, log_softmax
from ..generation.results import completion_id, now, usage
from ..generation.sampling import SamplingParams
from ..generation.spec import GenerationSpec, budget, common_prefix, prepare
from ..native.loop import TokenLoop

__all__ = ["MEDIA_CELL", "Session", "SessionStats", "is_media_cell"]

MEDIA_CELL = -1  # a KV cell filled by an image or audio embedding, as logits processors see it


def is_media_cell(entry: int) -> bool:
    """Whether a KV bookkeeping entry is a media cell (MEDIA_CELL or a media key), not a token."""
    return entry < 0


@dataclass
class SessionStats:
    """Counters for tests and monitoring: tokens decoded for prompts and generated."""

    last_prefill: int = 0  # prompt tokens decoded by the last call (after prefix reuse)
    last_reused: int = 0  # prompt tokens the last call found already in the KV cache
    prefill_tokens: int = 0
    generated_tokens: int = 0
    calls: int = 0
    drafted_tokens: int = 0  # speculative decoding: draft tokens checked by the model
    accepted_tokens: int = 0  # ... and those it kept (each saved one decode)
    last_drafted: int = 0  # the same for the last call
    last_accepted: int = 0


class _DraftCounts:
    __slots__ = ("drafted", "accepted")

    def __init__(self) -> None:
        self.drafted = self.accepted = 0


@dataclass
class _Run:
    """State of one call, read by the response builders."""

    spec: GenerationSpec
    opts: CompletionOptions
    output: SequenceOutput
    budget: int
    full: list[int] | None = None  # KV cache contents the prompt extends, plus the prompt
    media: Any = None  # vision.MediaPrompt: the prompt's text prefix and its media chunks
    id: str = field(default_factory=completion_id)
    created: int = field(default_factory=now)

    @property
    def prompt_tokens(self) -> list[int]:
        return self.spec.prompt

    @property
    def n_prompt_tokens(self) -> int:
        """Prompt tokens for ``usage``: a media chunk counts its embeddings."""
        return len(self.spec.prompt) if self.media is None else self.media.n_tokens

    @property
    def tokens(self) -> list[int]:
        return self.output.tokens

    @property
    def finish_reason(self) -> str | None:
        return self.output.finish_reason

    @property
    def logprobs(self):
        return self.output.logprobs


CANCEL_CHUNK = 128  # prompt tokens decoded between two checks of a cancel token


class Session:
    """Prompt handling, prefix reuse and the generation loop over one context."""

    def __init__(self, context, *, model_name: str, default_loras: dict | None = None, drafter=None) -> None:
        self.context = context
        self.vocab = context.model.vocab
        self.pieces = self.vocab.pieces
        self.eog = self.vocab.eog_tokens
        self.n_ctx = context.n_ctx
        self.model_name = model_name
        self.loop = TokenLoop(context, None)  # the chain is set per call
        # Sample inside the graph when layers run on a GPU: the logits row then never
        # crosses to the host per token (about 10% of an 8B model's decode time).
        self.backend_sampling = _runs_on_gpu(context.model)
        self.cache: list[int] = []  # tokens the KV cache holds for sequence 0
        self._cache_loras: dict = dict(default_loras or {})
        self.default_loras = dict(default_loras or {})
        self.stats = SessionStats()
        self.drafter = drafter  # generation.drafting.Drafter, or None
        self._lock = threading.Lock()
        self._owner: int | None = None

    # --- locking -------------------------------------------------------------------------
    def acquire(self) -> None:
        me = threading.get_ident()
        if self._owner == me:
            raise GenerationError("this thread is still iterating a stream from this Llama; "
                                  "finish or close() it before starting another call")
        self._lock.acquire()
        self._owner = me

    def release(self) -> None:
        self._owner = None
        self._lock.release()

    def invalidate(self) -> None:
        """Forget the KV cache contents (after embeddings or a state load)."""
        self.cache = []

    # --- preparing a call ----------------------------------------------------------------
    def prepare(self, prompt, opts: CompletionOptions, params: SamplingParams, media=None) -> _Run:
        """Validate and tokenize (no C state is touched: safe before taking the lock).
        With ``media`` (a MediaPrompt) the prompt is ``media.prefix`` and its chunks."""
        opts.validate()
        if media is not None:
            if opts.echo or opts.suffix is not None:
                raise ValidationError("echo and suffix need a text-only prompt", param="prompt")
            prompt = media.prefix
        spec = prepare(self.vocab, prompt, sampling=params, max_tokens=opts.max_tokens, stop=opts.stop,
                       grammar=opts.grammar, logprobs=opts.logprobs, add_special=opts.add_special,
                       parse_special=opts.parse_special, suffix=opts.suffix)
        held = len(self.cache) if not opts.reset_kv_cache else 0
        if media is not None:
            spec.prompt = list(media.prefix) + media.cells
        spec.prompt = self._fit(spec.prompt, held, opts, media is not None)
        spec.stop_tokens = spec.stop_tokens | self.eog
        output = SequenceOutput(self.pieces, spec.stop, spec.logprobs)
        return _Run(spec, opts, output, budget(opts.max_tokens, self.n_ctx - held - len(spec.prompt)), media=media)

    def _fit(self, tokens: list[int], held: int, opts: CompletionOptions, media: bool = False) -> list[int]:
        """Apply the overflow policy: the prompt must leave room for one generated token
        (a prompt with media is never cut: an image cannot be truncated)."""
        n_ctx = self.n_ctx
        if held + len(tokens) < n_ctx:
            return tokens
        if opts.truncate != "left" or held or media:
            raise ContextOverflowError(
                f"Requested tokens ({held + len(tokens)}) exceed context window of {n_ctx}",
                n_tokens=held + len(tokens), n_ctx=n_ctx, param="prompt")
        want = opts.max_tokens if opts.max_tokens and opts.max_tokens > 0 else n_ctx // 4
        keep = n_ctx - max(1, min(want, n_ctx // 2))
        head = tokens[:1] if tokens[0] == self.vocab.bos else []
        return head + tokens[len(tokens) - (keep - len(head)):]

    # --- running a call ------------------------------------------------------------------
    def generate(self, run: _Run, params: SamplingParams | None = None) -> Iterator[str]:
        """Yield text deltas (possibly empty) while generating; hold the lock throughout."""
        self.acquire()
        chain = device = None
        try:
            host_logits = bool(run.opts.logits_processor) or run.opts.stopping_criteria is not None
            # drafters read and decode the history as tokens, which media cells are not
            speculate = self.drafter is not None and not host_logits and run.media is None
            # the in-graph sampler cannot see drafts: speculation samples on the host (and
            # libmtmd's decodes are kept to host sampling too)
            on_gpu = self.backend_sampling and not speculate and run.media is None
            chain, device = build_chains(run.spec, self.vocab, on_gpu=on_gpu, host_logits=host_logits)
            if device is not None:
                self.context.set_sampler(0, device)  # closing it below detaches it
            self.loop.chain = chain
            self._prefill(run)
            prime(chain, run.spec, run.full if run.media is None else [t for t in run.full if not is_media_cell(t)])
            self.stats.calls += 1
            yield from (self._speculative_tokens(run) if speculate else self._tokens(run))
        finally:
            if run.full is not None:  # KV positions [0, loop.pos) are known to hold these
                self.cache = (run.full + run.tokens)[: self.loop.pos]
            self.stats.generated_tokens += len(run.tokens)
            self.loop.chain = None
            if run.media is not None:
                run.media.close()
            if chain is not None:
                chain.close()
            if device is not None and device is not chain:
                device.close()
            self.release()

    def _prefill(self, run: _Run) -> None:
        """Decode what the KV cache lacks (prefix reuse)."""
        ctx, opts, media = self.context, run.opts, run.media
        self._apply_loras(opts.loras)
        base = 0 if opts.reset_kv_cache else len(self.cache)
        full = self.cache[:base] + run.prompt_tokens
        keep = 0 if (opts.echo and run.logprobs) else common_prefix(self.cache, full)
        keep = min(keep, len(full) - 1)  # the last prompt token must be decoded for its logits
        # with media, reuse ends at a chunk boundary or inside a text chunk (whose rest is
        # decoded here as tokens); eval_chunks runs the chunks from first_chunk on
        media_start = base + len(media.prefix) if media is not None else len(full)
        keep, text_end, first_chunk = self._resume(media, media_start, keep)
        if keep < len(self.cache) and not ctx.memory_seq_rm(0, keep, -1):
            ctx.memory_clear()
            keep, text_end, first_chunk = self._resume(media, media_start, 0)
        self.cache = self.cache[:keep]
        run.full, self.loop.pos = full, keep
        self.stats.last_reused, self.stats.last_prefill = keep, len(full) - keep
        self.stats.prefill_tokens += len(full) - keep
        cancel, step = opts.cancel, self.context.n_batch
        if cancel is not None:  # cancel is checked between chunks: bound how long one can run
            step = min(step, CANCEL_CHUNK)
        collect = self._prompt_logprobs(run, full) if (opts.echo and run.logprobs) else None
        for at in range(keep, text_end, step):
            if cancel is not None and cancel.is_set():
                raise CancelledError("cancelled while reading the prompt")
            on_chunk = None if collect is None else (lambda offset, n, at=at: collect(at + offset, n))
            self.loop.prefill(full[at: min(at + step, text_end)], at, on_chunk=on_chunk)
        if media is not None and first_chunk < len(media.chunk_types):
            if cancel is not None and cancel.is_set():
                raise CancelledError("cancelled while reading the prompt")
            self.loop.pos = text_end
            try:
                self.loop.pos = media.evaluate(ctx, text_end, first_chunk)
            except BaseException:
                ctx.memory_seq_rm(0, text_end, -1)  # a half-evaluated image must not stay behind
                raise

    @staticmethod
    def _resume(media, media_start: int, keep: int) -> tuple[int, int, int]:
        """(cells kept, end of the plain tokens to decode, first media chunk to evaluate)."""
        if media is None:
            return keep, media_start, 0
        kept, text_end, first_chunk = media.resume(keep - media_start)
        return media_start + kept, media_start + text_end, first_chunk

    def _prompt_logprobs(self, run: _Run, full: list[int]):
        collector, ctx = run.logprobs, self.context
        collector.add(full[0], None)

        def on_chunk(offset: int, n: int) -> None:
            for j in range(n):
                position = offset + j + 1  # row j predicts the token after it
                if position < len(full):
                    collector.add(full[position], log_softmax(ctx.logits(j)))
        return on_chunk

    def _apply_loras(self, loras: dict | None) -> None:
        wanted = self.default_loras if loras is None else loras
        if wanted != self.context.loras:
            self.context.set_loras(wanted)
        if wanted != self._cache_loras:  # cached keys/values came from other weights
            self.context.memory_clear()
            self.cache = []
            self._cache_loras = dict(wanted)

    def _tokens(self, run: _Run) -> Iterator[str]:
        output, opts = run.output, run.opts
        on_token = output.on_token
        rows = _RowHolder(opts.logits_processor, output.logprobs is not None)
        criteria = opts.stopping_criteria
        tracking = rows.procs or criteria is not None
        if tracking:
            rows.track(run.full, self.n_ctx)
        cancel = opts.cancel.is_set if opts.cancel is not None else None
        tokens = self.loop.run(run.budget, stop_tokens=run.spec.stop_tokens, logits_hook=rows.hook, cancelled=cancel)
        try:
            for token in tokens:
                text, hit = on_token(token, rows.row)
                if tracking:
                    ids = rows.history_with(token)
                    if criteria is not None and criteria(ids, self.context.logits(-1)):
                        output.finish_reason = hit = "stop"
                yield text
                if hit:
                    return
        finally:
            tokens.close()
        yield from self._finish(run, cancel)

    def _speculative_tokens(self, run: _Run) -> Iterator[str]:
        output, opts, ctx, loop = run.output, run.opts, self.context, self.loop
        on_token, want_row = output.on_token, output.logprobs is not None
        cancel = opts.cancel.is_set if opts.cancel is not None else None
        drafter, counts = self.drafter, _DraftCounts()
        drafter.reset()
        rows = draft_verifier(run.spec)
        pick = (lambda context, row: sample_row(context, row, rows)) if rows is not None else None
        tokens = loop.run_speculative(run.budget, drafter.draft, list(run.full), n_max=drafter.n_max,
                                      stop_tokens=run.spec.stop_tokens, cancelled=cancel, counters=counts, pick=pick)
        try:
            for token in tokens:
                text, hit = on_token(token, log_softmax(ctx.logits(loop.row)) if want_row else None)
                yield text
                if hit:
                    return
        finally:
            tokens.close()  # trims unverified drafts from the KV cache before generate() reads loop.pos
            stats = self.stats
            stats.last_drafted, stats.last_accepted = counts.drafted, counts.accepted
            stats.drafted_tokens += counts.drafted
            stats.accepted_tokens += counts.accepted
        yield from self._finish(run, cancel)

    def _finish(self, run: _Run, cancel) -> Iterator[str]:
        output = run.output
        if cancel is not None and cancel():
            raise CancelledError(f"generation cancelled after {output.n_tokens} tokens")
        ended = output.n_tokens >= run.budget or self.loop.pos >= self.n_ctx
        yield output.finish("length" if ended else "stop")


class _RowHolder:
    """The logits hook for one call: runs logits processors on the row, keeps the
    log-probabilities of the row the next token is sampled from, and the token history
    that processors and stopping criteria see."""

    __slots__ = ("procs", "want_row", "row", "history", "count", "hook")

    def __init__(self, procs, want_row: bool) -> None:
        self.procs, self.want_row = procs or (), want_row
        self.row = None
        self.history = np.zeros(0, dtype=np.intc)
        self.count = 0
        self.hook = self._hook if (self.procs or want_row) else None

    def track(self, known: list[int], n_ctx: int) -> None:
        self.history = np.zeros(n_ctx + 1, dtype=np.intc)
        self.history[: len(known)] = known
        np.maximum(self.history, MEDIA_CELL, out=self.history)  # processors see every media cell as -1
        self.count = len(known)

    def history_with(self, token: int) -> np.ndarray:
        self.history[self.count] = token
        self.count += 1
        return self.history[: self.count]

    def _hook(self, logits: np.ndarray) -> None:
        if self.procs:
            ids = self.history[: self.count]
            for proc in self.procs:
                result = proc(ids, logits)
                if result is not None and result is not logits:
                    logits[:] = result
        if self.want_row:
            self.row = log_softmax(logits)


def _runs_on_gpu(model) -> bool:
    from ..native.devices import has_gpu

    return model.params.n_gpu_layers != 0 and has_gpu()


# --- response shapes (llama-cpp-python's / OpenAI's text_completion) ------------------------
def _echo_text(session: Session, run: _Run) -> str:
    if run.spec.prompt_text is not None:
        return run.spec.prompt_text
    return session.vocab.detokenize(run.prompt_tokens).decode("utf-8", errors="replace")


def complete(session: Session, run: _Run, params: SamplingParams) -> dict:
    """Run to the end and return a ``text_completion`` object."""
    text = "".join(session.generate(run, params))
    if run.opts.echo:
        text = _echo_text(session, run) + text
    logprobs = run.logprobs.completion_logprobs(session.pieces) if run.logprobs is not None else None
    return {
        "id": run.id, "object": "text_completion", "created": run.created,
        "model": run.opts.model or session.model_name,
        "choices": [{"text": text, "index": 0, "logprobs": logprobs, "finish_reason": run.finish_reason}],
        "usage": usage(run.n_prompt_tokens, len(run.tokens)),
    }


def stream(session: Session, run: _Run, params: SamplingParams) -> Iterator[dict]:
    """Yield ``text_completion`` chunks as text is decoded; the last carries finish_reason.

    Closing the iterator early (``break``) stops generation and leaves the Llama usable."""
    model = run.opts.model or session.model_name
    collector, seen, offset = run.logprobs, 0, 0

    def chunk(text: str, finish: str | None) -> dict:
        nonlocal seen, offset
        logprobs = None
        if collector is not None:
            logprobs = collector.completion_logprobs(session.pieces, seen, offset)
            seen = len(collector.entries)
            offset += sum(len(t) for t in logprobs["tokens"])
        return {"id": run.id, "object": "text_completion", "created": run.created, "model": model,
                "choices": [{"text": text, "index": 0, "logprobs": logprobs, "finish_reason": finish}]}

    gen = session.generate(run, params)
    try:
        if run.opts.echo:
            yield chunk(_echo_text(session, run), None)
        for text in gen:
            if run.finish_reason is not None:  # set just before the last delta
                yield chunk(text, run.finish_reason)
            elif text:
                yield chunk(text, None)
    finally:
        gen.close()
