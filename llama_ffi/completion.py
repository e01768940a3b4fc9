"""The completion engine behind ``Llama.create_completion``.

One engine owns one context and one :class:`TokenLoop` (sequence 0). It remembers which
tokens the KV cache holds, so a call that shares a prefix with the previous one decodes
only the new tokens (``stats.last_prefill`` says how many). Generation goes through
``TokenLoop.run``; per token the Python work is a list index (``Vocab.pieces``), one
incremental UTF-8 decode and, only when stop strings were given, a check over the tail.
Logits reach Python only for a logits processor, stopping criteria or logprobs.

Calls on one engine are serialised by a lock; a stream holds it from its first chunk
until it ends or is closed, so the KV bookkeeping is never interleaved.
"""

from __future__ import annotations

import codecs
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from .completion_options import CompletionOptions, StopMatcher, check_logit_bias
from .errors import CancelledError, ContextOverflowError, GenerationError, ValidationError
from .native.loop import TokenLoop, log_softmax
from .sampling import SamplingParams

__all__ = ["CompletionEngine", "EngineStats"]


@dataclass
class EngineStats:
    """Counters for tests and monitoring: tokens decoded for prompts and generated."""

    last_prefill: int = 0  # prompt tokens decoded by the last call (after prefix reuse)
    last_reused: int = 0  # prompt tokens the last call found already in the KV cache
    prefill_tokens: int = 0
    generated_tokens: int = 0
    calls: int = 0


@dataclass
class _Run:
    """State of one call, read by the response builders."""

    prompt_tokens: list[int]
    prompt_text: str | None
    opts: CompletionOptions
    stop_strings: tuple[str, ...]
    stop_tokens: frozenset[int]
    budget: int
    tokens: list[int] = field(default_factory=list)
    full: list[int] | None = None  # KV cache contents the prompt extends, plus the prompt
    finish_reason: str | None = None
    logprobs: "LogprobCollector | None" = None
    id: str = field(default_factory=lambda: f"cmpl-{uuid.uuid4()}")
    created: int = field(default_factory=lambda: int(time.time()))


class LogprobCollector:
    """Log-probabilities of sampled (and, with echo, prompt) tokens, top-``k`` alternatives."""

    def __init__(self, k: int, pieces: Sequence[bytes]) -> None:
        self.k = k
        self.pieces = pieces
        self.entries: list[tuple[int, float | None, dict[str, float] | None]] = []
        self._row: np.ndarray | None = None

    def hook(self, logits: np.ndarray) -> None:
        self._row = log_softmax(logits)

    def record(self, token: int) -> None:
        self._add(token, self._row)

    def add_prompt_row(self, token: int, row: np.ndarray | None) -> None:
        self._add(token, None if row is None else log_softmax(row))

    def _add(self, token: int, row: np.ndarray | None) -> None:
        if row is None:
            self.entries.append((token, None, None))
            return
        top: dict[str, float] = {}
        if self.k:
            ids = np.argpartition(row, -self.k)[-self.k:]
            for i in ids[np.argsort(row[ids])[::-1]]:
                top[self.text(int(i))] = float(row[i])
        top[self.text(token)] = float(row[token])
        self.entries.append((token, float(row[token]), top))

    def text(self, token: int) -> str:
        return self.pieces[token].decode("utf-8", errors="ignore")

    def as_dict(self, start: int = 0, offset: int = 0) -> dict:
        """llama-cpp-python's ``logprobs`` object for entries[start:]."""
        tokens, offsets, values, tops = [], [], [], []
        for token, value, top in self.entries[start:]:
            text = self.text(token)
            tokens.append(text)
            offsets.append(offset)
            offset += len(text)
            values.append(value)
            tops.append(top)
        return {"tokens": tokens, "text_offset": offsets, "token_logprobs": values, "top_logprobs": tops}


CANCEL_CHUNK = 128  # prompt tokens decoded between two checks of a cancel token


class CompletionEngine:
    """Prompt handling, prefix reuse and the generation loop over one context."""

    def __init__(self, context, *, model_name: str, default_loras: dict | None = None) -> None:
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
        self.stats = EngineStats()
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
    def tokenize_prompt(self, prompt, opts: CompletionOptions) -> tuple[list[int], str | None]:
        if isinstance(prompt, (bytes, bytearray)):
            try:
                prompt = bytes(prompt).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValidationError(f"prompt bytes are not valid UTF-8: {exc}", param="prompt") from None
        if isinstance(prompt, str):
            tokens = self.vocab.tokenize(prompt, add_special=opts.add_special, parse_special=opts.parse_special)
            if opts.suffix is not None:
                tokens = self._infill_tokens(prompt, opts.suffix)
            text: str | None = prompt
        elif isinstance(prompt, (list, tuple, np.ndarray)):
            if opts.suffix is not None:
                raise ValidationError("suffix needs a text prompt", param="suffix")
            if not _all_ints(prompt):
                raise ValidationError("a token prompt must hold integers only", param="prompt")
            tokens = self.vocab.check_tokens(prompt).tolist()
            text = None
        else:
            raise ValidationError("prompt must be a string or a list of token ids", param="prompt")
        if not tokens:
            if self.vocab.bos is None:
                raise ValidationError("the prompt is empty and the model has no BOS token", param="prompt")
            tokens = [self.vocab.bos]
        return tokens, text

    def _infill_tokens(self, prefix: str, suffix: str) -> list[int]:
        pre, suf, mid = self.vocab.fim("pre"), self.vocab.fim("suf"), self.vocab.fim("mid")
        if None in (pre, suf, mid):
            raise ValidationError("suffix (fill-in-the-middle) needs a model with FIM tokens", param="suffix")
        head = [self.vocab.bos] if self.vocab.add_bos and self.vocab.bos is not None else []
        p = self.vocab.tokenize(prefix, add_special=False)
        s = self.vocab.tokenize(suffix, add_special=False)
        return head + [pre, *p, suf, *s, mid]

    def prepare(self, prompt, opts: CompletionOptions, params: SamplingParams) -> _Run:
        """Validate and tokenize (no C state is touched: safe before taking the lock)."""
        n_vocab = self.vocab.n_tokens
        opts.validate()
        check_logit_bias(params.logit_bias, n_vocab)
        stop_strings, stop_tokens = opts.stop_lists(n_vocab)
        tokens, text = self.tokenize_prompt(prompt, opts)
        held = len(self.cache) if not opts.reset_kv_cache else 0
        tokens = self._fit(tokens, held, opts)
        room = self.n_ctx - held - len(tokens)
        budget = room if not opts.max_tokens or opts.max_tokens <= 0 else min(opts.max_tokens, room)
        run = _Run(tokens, text, opts, stop_strings, stop_tokens | self.eog, budget)
        if opts.logprobs is not None:
            run.logprobs = LogprobCollector(opts.logprobs, self.pieces)
        return run

    def _fit(self, tokens: list[int], held: int, opts: CompletionOptions) -> list[int]:
        """Apply the overflow policy: the prompt must leave room for one generated token."""
        n_ctx = self.n_ctx
        if held + len(tokens) < n_ctx:
            return tokens
        if opts.truncate != "left" or held:
            raise ContextOverflowError(
                f"Requested tokens ({held + len(tokens)}) exceed context window of {n_ctx}",
                n_tokens=held + len(tokens), n_ctx=n_ctx, param="prompt")
        want = opts.max_tokens if opts.max_tokens and opts.max_tokens > 0 else n_ctx // 4
        keep = n_ctx - max(1, min(want, n_ctx // 2))
        head = tokens[:1] if tokens[0] == self.vocab.bos else []
        return head + tokens[len(tokens) - (keep - len(head)):]

    # --- running a call ------------------------------------------------------------------
    def generate(self, run: _Run, params: SamplingParams) -> Iterator[str]:
        """Yield text deltas (possibly empty) while generating; hold the lock throughout."""
        self.acquire()
        chain = device = None
        try:
            grammar = _grammar_sampler(run.opts.grammar, self.vocab)
            chain, device = self._chains(run, params, grammar)
            if device is not None:
                self.context.set_sampler(0, device)  # closing it below detaches it
            self.loop.chain = chain
            self._prefill(run, chain, params)
            self.stats.calls += 1
            yield from self._tokens(run)
        finally:
            if run.full is not None:  # KV positions [0, loop.pos) are known to hold these
                self.cache = (run.full + run.tokens)[: self.loop.pos]
            self.stats.generated_tokens += len(run.tokens)
            self.loop.chain = None
            if chain is not None:
                chain.close()
            if device is not None:
                device.close()
            self.release()

    def _chains(self, run: _Run, params: SamplingParams, grammar):
        """(host chain, chain to attach to the graph or None): whole in the graph for plain
        chains, or split at top-k (SamplingParams.backend_split) on a GPU."""
        if not self._can_sample_on_backend(run, params, grammar):
            return params.build_chain(self.vocab, grammar=grammar), None
        split = params.backend_split(self.vocab)
        if split is not None:
            device, host = split
            return host, device
        chain = params.build_chain(self.vocab)
        return chain, chain

    def _can_sample_on_backend(self, run: _Run, params: SamplingParams, grammar) -> bool:
        """Only plain chains: anything that needs host logits or the prompt history stays on the CPU."""
        opts = run.opts
        return (self.backend_sampling and grammar is None and run.logprobs is None
                and not opts.logits_processor and opts.stopping_criteria is None
                and params.repeat_penalty == 1.0 and not params.frequency_penalty
                and not params.presence_penalty and params.dry_multiplier <= 0)

    def _prefill(self, run: _Run, chain, params: SamplingParams) -> None:
        """Decode what the KV cache lacks (prefix reuse)."""
        ctx, opts = self.context, run.opts
        self._apply_loras(opts.loras)
        base = 0 if opts.reset_kv_cache else len(self.cache)
        full = self.cache[:base] + run.prompt_tokens
        keep = 0 if (opts.echo and run.logprobs) else _common_prefix(self.cache, full)
        keep = min(keep, len(full) - 1)  # the last prompt token must be decoded for its logits
        if keep < len(self.cache) and not ctx.memory_seq_rm(0, keep, -1):
            ctx.memory_clear()
            keep = 0
        self.cache = self.cache[:keep]
        run.full, self.loop.pos = full, keep
        self.stats.last_reused, self.stats.last_prefill = keep, len(full) - keep
        self.stats.prefill_tokens += len(full) - keep
        cancel, step = opts.cancel, self.context.n_batch
        if cancel is not None:  # cancel is checked between chunks: bound how long one can run
            step = min(step, CANCEL_CHUNK)
        collect = self._prompt_logprobs(run, full) if (opts.echo and run.logprobs) else None
        for at in range(keep, len(full), step):
            if cancel is not None and cancel.is_set():
                raise CancelledError("cancelled while reading the prompt")
            on_chunk = None if collect is None else (lambda offset, n, at=at: collect(at + offset, n))
            self.loop.prefill(full[at: at + step], at, on_chunk=on_chunk)
        if opts.grammar is None:
            self._accept_history(chain, params, full)

    def _accept_history(self, chain, params: SamplingParams, full: list[int]) -> None:
        """Let penalty/DRY samplers see the prompt tail, as llama.cpp's own tools do
        (never with a grammar: the grammar would consume the prompt)."""
        if not (params.repeat_penalty != 1.0 or params.frequency_penalty or params.presence_penalty
                or params.dry_multiplier > 0):
            return
        n = params.penalty_last_n if params.penalty_last_n > 0 else len(full)
        for token in full[-n:]:
            chain.accept(token)

    def _prompt_logprobs(self, run: _Run, full: list[int]):
        collector, ctx = run.logprobs, self.context
        collector.add_prompt_row(full[0], None)

        def on_chunk(offset: int, n: int) -> None:
            for j in range(n):
                position = offset + j + 1  # row j predicts the token after it
                if position < len(full):
                    collector.add_prompt_row(full[position], ctx.logits(j))
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
        opts, pieces = run.opts, self.pieces
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        decode = decoder.decode
        stopper = StopMatcher(run.stop_strings) if run.stop_strings else None
        out = run.tokens
        append = out.append
        collector = run.logprobs
        hook, criteria = self._hooks(run)
        cancel = opts.cancel.is_set if opts.cancel is not None else None
        for token in self.loop.run(run.budget, stop_tokens=run.stop_tokens, logits_hook=hook, cancelled=cancel):
            append(token)
            if collector is not None:
                collector.record(token)
            text = decode(pieces[token])
            if stopper is not None:
                text, hit = stopper.feed(text)
                if hit:
                    run.finish_reason = "stop"
                    yield text
                    return
            if criteria is not None and criteria(token):
                run.finish_reason = "stop"
                yield text
                return
            yield text
        if cancel is not None and cancel():
            raise CancelledError(f"generation cancelled after {len(out)} tokens")
        tail = decode(b"", final=True)
        if stopper is not None:
            text, hit = stopper.feed(tail)
            tail = text if hit else text + stopper.flush()
            run.finish_reason = "stop" if hit else None
        if run.finish_reason is None:
            ended = len(out) >= run.budget or self.loop.pos >= self.n_ctx
            run.finish_reason = "length" if ended else "stop"
        yield tail

    def _hooks(self, run: _Run):
        """The logits hook and the stopping check, or None for each when not asked for."""
        opts, collector = run.opts, run.logprobs
        procs, criteria = opts.logits_processor, opts.stopping_criteria
        if not procs and criteria is None:
            return (collector.hook if collector is not None else None), None
        history = np.zeros(self.n_ctx + 1, dtype=np.intc)
        known = run.full
        history[: len(known)] = known
        count = [len(known)]
        ctx = self.context

        def hook(logits: np.ndarray) -> None:
            ids = history[: count[0]]
            for proc in procs or ():
                result = proc(ids, logits)
                if result is not None and result is not logits:
                    logits[:] = result
            if collector is not None:
                collector.hook(logits)

        def check(token: int) -> bool:
            history[count[0]] = token
            count[0] += 1
            return bool(criteria(history[: count[0]], ctx.logits(-1)))

        def track(token: int) -> bool:
            history[count[0]] = token
            count[0] += 1
            return False
        return hook, (check if criteria is not None else track)


def _runs_on_gpu(model) -> bool:
    from .native.devices import has_gpu

    return model.params.n_gpu_layers != 0 and has_gpu()


def _grammar_sampler(grammar, vocab):
    """The grammar sampler for ``grammar``: GBNF text, a ``LlamaGrammar``, or a chat
    ``ToolGrammarSpec`` (which builds its own, lazy when it is)."""
    if grammar is None:
        return None
    from .chat.tool_grammar import ToolGrammarSpec
    from .grammar import LlamaGrammar
    from .native.sampler import Sampler

    if isinstance(grammar, ToolGrammarSpec):
        return grammar.sampler(vocab)
    if isinstance(grammar, (str, bytes)):
        grammar = LlamaGrammar.from_string(grammar)
    if not isinstance(grammar, LlamaGrammar):
        raise ValidationError("grammar must be a LlamaGrammar or GBNF text", param="grammar")
    return Sampler.grammar(vocab, grammar.text, grammar.root)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(diff[0]) if diff.size else n


# --- response shapes (llama-cpp-python's / OpenAI's text_completion) ------------------------
def _usage(run: _Run) -> dict:
    n_prompt, n_out = len(run.prompt_tokens), len(run.tokens)
    return {"prompt_tokens": n_prompt, "completion_tokens": n_out, "total_tokens": n_prompt + n_out}


def _echo_text(engine: CompletionEngine, run: _Run) -> str:
    if run.prompt_text is not None:
        return run.prompt_text
    return engine.vocab.detokenize(run.prompt_tokens).decode("utf-8", errors="replace")


def complete(engine: CompletionEngine, run: _Run, params: SamplingParams) -> dict:
    """Run to the end and return a ``text_completion`` object."""
    text = "".join(engine.generate(run, params))
    if run.opts.echo:
        text = _echo_text(engine, run) + text
    logprobs = run.logprobs.as_dict() if run.logprobs is not None else None
    return {
        "id": run.id, "object": "text_completion", "created": run.created,
        "model": run.opts.model or engine.model_name,
        "choices": [{"text": text, "index": 0, "logprobs": logprobs, "finish_reason": run.finish_reason}],
        "usage": _usage(run),
    }


def stream(engine: CompletionEngine, run: _Run, params: SamplingParams) -> Iterator[dict]:
    """Yield ``text_completion`` chunks as text is decoded; the last carries finish_reason.

    Closing the iterator early (``break``) stops generation and leaves the Llama usable."""
    model = run.opts.model or engine.model_name
    collector, seen, offset = run.logprobs, 0, 0

    def chunk(text: str, finish: str | None) -> dict:
        nonlocal seen, offset
        logprobs = None
        if collector is not None:
            logprobs = collector.as_dict(seen, offset)
            seen = len(collector.entries)
            offset += sum(len(t) for t in logprobs["tokens"])
        return {"id": run.id, "object": "text_completion", "created": run.created, "model": model,
                "choices": [{"text": text, "index": 0, "logprobs": logprobs, "finish_reason": finish}]}

    gen = engine.generate(run, params)
    try:
        if run.opts.echo:
            yield chunk(_echo_text(engine, run), None)
        for text in gen:
            if run.finish_reason is not None:  # set just before the last delta
                yield chunk(text, run.finish_reason)
            elif text:
                yield chunk(text, None)
    finally:
        gen.close()


def _all_ints(values) -> bool:
    if isinstance(values, np.ndarray):
        return values.dtype.kind in "iu"
    return all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values)
