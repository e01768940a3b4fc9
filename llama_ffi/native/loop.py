"""``TokenLoop``: the decode/sample hot loop for one sequence.

``Llama`` generates through here (the engine drives many sequences in
``engine/scheduler.py``), so it is written for speed: C functions and pointers bound once,
one reused single-token batch, sampling in C through the chain, and Python touching the
logits only when the caller asks for them (a logits processor or logprobs), then as a
zero-copy numpy view.

``run_speculative`` is the same loop with a drafter. Each step decodes ``[pending, d1..dk]``
in one batch with logits on all k+1 rows, then samples row ``i`` with the chain
(``llama_sampler_sample(chain, ctx, i)``, which also accepts the token) and stops after the
first row whose token is not ``d(i+1)``. Row ``i`` was computed after ``d1..di``, so a row
is read only when every draft before it was what the chain sampled: each emitted token is
drawn from exactly the distribution the plain loop would use, and the chain's state
(grammar, penalties, RNG) advances only through emitted tokens. Drafts are point masses, so
this is exact speculative sampling for any chain. Rejected rows leave the KV cache
(``memory_seq_rm``). It needs host sampling: a chain attached to the graph cannot see the
drafts.
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np

from ..errors import ContextOverflowError
from . import _exit
from .batch import Batch
from .context import Context, _raise_decode_status
from .sampler import SamplerChain

LogitsHook = Callable[[np.ndarray], None]


class TokenLoop:
    """Prefill a prompt, then alternate sample and decode on sequence ``seq_id``."""

    def __init__(self, context: Context, chain: SamplerChain, *, seq_id: int = 0,
                 backend_sampling: bool = False) -> None:
        """``backend_sampling`` attaches the chain to the context so llama.cpp samples inside
        the graph (on the GPU): no logits row crosses to the host per token. It rules out
        a ``logits_hook``, and the chain can then serve no other loop."""
        self.context = context
        self.chain = chain
        self.seq_id = seq_id
        self.backend_sampling = backend_sampling
        if backend_sampling:
            context.set_sampler(seq_id, chain)
        self.pos = 0  # next position to write
        self.row = -1  # output row of the token run_speculative yielded last
        self._prefill_batch = Batch(context.n_batch)
        self._step = Batch(1)
        self._step.n_seq_id[0] = 1
        self._step.seq_id[0, 0] = seq_id
        self._step.logits[0] = 1
        self._step.c.n_tokens = 1

    def prefill(self, tokens: Sequence[int] | np.ndarray, start_pos: int = 0, *,
                on_chunk: Callable[[int, int], None] | None = None) -> None:
        """Decode ``tokens`` at ``start_pos...`` in chunks of n_batch; logits for the last one.

        With ``on_chunk`` every token gets logits, and ``on_chunk(offset, n)`` runs after each
        chunk, while ``context.logits(0..n-1)`` are that chunk's rows (prompt logprobs)."""
        ids = self.context.model.vocab.check_tokens(tokens)
        n_ctx = self.context.n_ctx_seq
        if start_pos + len(ids) > n_ctx:
            raise ContextOverflowError(
                f"prompt of {start_pos + len(ids)} tokens does not fit the context window of {n_ctx}",
                n_tokens=start_pos + len(ids), n_ctx=n_ctx, param="prompt")
        batch, step = self._prefill_batch, self.context.n_batch
        for at in range(0, len(ids), step):
            chunk = ids[at: at + step]
            batch.clear()
            if on_chunk is not None:
                batch.add(chunk, start_pos + at, self.seq_id, logits="all")
            else:
                batch.add(chunk, start_pos + at, self.seq_id, logits="last" if at + step >= len(ids) else "none")
            self.context.decode(batch)
            if on_chunk is not None:
                on_chunk(at, len(chunk))
        self.pos = start_pos + len(ids)

    def run(self, max_tokens: int, *, stop_tokens: frozenset[int] = frozenset(),
            logits_hook: LogitsHook | None = None, cancelled: Callable[[], bool] | None = None) -> Iterator[int]:
        """Yield sampled tokens until ``max_tokens``, a stop token (not yielded), the context
        end, or ``cancelled()``. The last prefill/feed must have produced logits."""
        if logits_hook is not None and self.backend_sampling:
            raise ValueError("a logits hook needs host-side sampling: build the loop without backend_sampling")
        ctx, lib = self.context, self.context._lib
        ctx_ptr, chain_ptr = ctx.ptr, self.chain.ptr
        decode, sample = lib.llama_decode, lib.llama_sampler_sample
        step = self._step
        token_arr, pos_arr, c_batch = step.token, step.pos, step.c[0]
        has_python_samplers = self.chain.has_python_samplers
        abort_flag, n_ctx = ctx._abort_flag, ctx.n_ctx_seq
        enter, leave = _exit.enter, _exit.leave
        for _ in range(max_tokens):
            if logits_hook is not None:
                logits_hook(ctx.logits(-1))  # zero-copy: edits are what the chain samples from
            token = sample(chain_ptr, ctx_ptr, -1)
            if has_python_samplers:
                self.chain._reraise()
            if token in stop_tokens:
                return
            yield token
            if self.pos >= n_ctx or (cancelled is not None and cancelled()):
                return
            token_arr[0] = token
            pos_arr[0] = self.pos
            enter(abort_flag)  # the exit gate (native/_exit.py): no decode under exit
            try:
                status = decode(ctx_ptr, c_batch)
            finally:
                leave(abort_flag)
            if status != 0:
                abort_flag[0] = b"\0"
                _raise_decode_status(status, "llama_decode")
            self.pos += 1

    def run_speculative(self, max_tokens: int, draft, history: list[int], *, n_max: int = 16,
                        stop_tokens: frozenset[int] = frozenset(), cancelled: Callable[[], bool] | None = None,
                        counters=None, pick: Callable[[object, int], int] | None = None) -> Iterator[int]:
        """``run`` with speculation (see the module docstring): yields exactly the tokens
        ``run`` would (same budget, stop tokens, context end), in fewer decodes when drafts
        are right.

        ``draft(history, n)`` proposes up to ``n`` tokens to follow ``history`` (the tokens
        before the pending one, plus it; every yielded token is appended to ``history``).
        ``self.pos`` counts only positions holding emitted tokens; ``self.row`` is the output
        row the last yielded token came from (logprobs read ``context.logits(row)``);
        ``counters.drafted``/``counters.accepted`` grow by the drafts tried and kept.
        ``pick(context, row)`` samples a row instead of the chain (the same distribution, cheaper)."""
        if self.backend_sampling:
            raise ValueError("speculation needs host-side sampling: build the loop without backend_sampling")
        ctx, n_ctx, seq = self.context, self.context.n_ctx_seq, self.seq_id
        batch = Batch(min(ctx.n_batch, n_max + 1))
        window = DraftWindow(batch.capacity - 1)
        counters = counters if counters is not None else _Counts()
        kv_end = self.pos
        pick = pick or self.chain.sample
        try:
            self.row = -1
            token = pick(ctx, -1) if max_tokens > 0 else None
            if token is None or token in stop_tokens:
                return
            emitted = 1
            history.append(token)
            yield token
            while self.pos < n_ctx and not (cancelled is not None and cancelled()):
                # a step emits up to k+1 tokens: k drafts leave room for the one sampled after them
                room = min(max_tokens - emitted - 1, n_ctx - self.pos - 1, window.next())
                drafts = _valid(draft(history, room), ctx.n_vocab)[:room] if room > 0 else []
                start = self.pos
                batch.clear()
                batch.add([token, *drafts], start, seq, logits="all")
                ctx.decode(batch)
                self.pos, kv_end = start + 1, start + 1 + len(drafts)
                if emitted >= max_tokens:
                    return
                counters.drafted += len(drafts)
                for i in range(len(drafts) + 1):  # row i was computed after drafts[:i]: all were kept
                    self.pos, self.row = start + i + 1, i
                    token = pick(ctx, i)
                    if token in stop_tokens:
                        return
                    emitted += 1
                    history.append(token)
                    yield token
                    if cancelled is not None and cancelled():
                        return
                    if i == len(drafts) or token != drafts[i]:
                        window.update(len(drafts), kept_all=i == len(drafts))
                        break
                    counters.accepted += 1
                if kv_end > self.pos:
                    ctx.memory_seq_rm(seq, self.pos, -1)
                    kv_end = self.pos
        finally:  # also on close(): never leave unverified drafts in the cache
            if kv_end > self.pos:
                ctx.memory_seq_rm(seq, self.pos, -1)

    def feed(self, token: int) -> None:
        """Decode one token (e.g. a forced token) at the current position."""
        self.context.model.vocab.check_tokens([token])
        self._step.token[0] = token
        self._step.pos[0] = self.pos
        self.context.decode(self._step)
        self.pos += 1


def _valid(tokens, n_vocab: int) -> list[int]:
    """Drafts up to the first that is not a token id (a user's draft model may return anything)."""
    out = []
    for token in tokens:
        if isinstance(token, (bool, np.bool_)) or not isinstance(token, (int, np.integer)) \
                or not 0 <= token < n_vocab:
            break
        out.append(int(token))
    return out


class DraftWindow:
    """How many drafts to ask for: +2 after a step that kept them all, halved after a miss,
    and after falling to 0 tried again (with 1) after ``PROBE_EVERY`` steps, an interval that
    doubles (up to ``PROBE_MAX``) each time the probe misses too. A rejected draft costs a
    batch row on a CPU; on a GPU a multi-row batch costs about two one-token steps (and a
    change of batch shape), so on text that drafts rarely match, probes must stay rare."""

    PROBE_EVERY = 4
    PROBE_MAX = 64

    __slots__ = ("size", "limit", "idle", "probe_every", "probing")

    def __init__(self, limit: int) -> None:
        self.size = self.limit = limit
        self.idle = 0
        self.probe_every = self.PROBE_EVERY
        self.probing = False

    def next(self) -> int:
        if self.size == 0:
            self.idle += 1
            if self.idle >= self.probe_every:
                self.size, self.idle, self.probing = 1, 0, True
        return self.size

    def update(self, n_drafted: int, *, kept_all: bool) -> None:
        if not n_drafted:
            return
        if kept_all:
            self.size = min(self.size + 2, self.limit)
            self.probe_every = self.PROBE_EVERY
        else:
            self.size //= 2
            if self.probing:
                self.probe_every = min(2 * self.probe_every, self.PROBE_MAX)
        self.probing = False


class _Counts:
    __slots__ = ("drafted", "accepted")

    def __init__(self) -> None:
        self.drafted = self.accepted = 0
