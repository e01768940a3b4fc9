"""One engine step: admit requests into sequence slots, pack one batch, decode, sample.

Each step packs the next token of every decoding sequence first (so long prompts never
stall running streams), then chunks of pending prompts up to ``n_batch``. Prompts that
share a prefix with a running or cached sequence get its KV cells instead of recomputing
them; when the cache fills, cached prefixes of finished requests are dropped first (least
recently used first), then the newest request is preempted and later resumed from its
tokens so far, never corrupted.

A request with ``speculative`` options, while at most ``spec_max_running`` requests run,
puts its last token and up to ``n_max`` prompt-lookup drafts into the step's batch with
logits on each row; its own host chain samples the rows in order and stops at the first
that disagrees with its draft (exact for any chain: see ``TokenLoop.run_speculative``).
The rejected rows' cells are removed before the next step.

LoRA adapters apply to the whole context, so a step decodes only requests of the context's
current adapter set; requests of another set wait in the queue until the context switches
(see ``adapters.py``). A slot's cached prefix is keyed by the set its cells were computed
under and is reused only by requests of that same set: keying rather than dropping them on
a switch keeps each set's prefixes across the switches of alternating traffic.
"""

from __future__ import annotations

import collections
import contextlib
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import KVCacheFullError
from ..generation.batched import RowSampler, batchable, draft_verifier, sample_row, sample_rows
from ..generation.chains import build_chains, prime
from ..generation.drafting import PromptLookupDrafter
from ..generation.output import SequenceOutput, log_softmax
from ..native import Batch
from ..native.loop import DraftWindow
from .adapters import AdapterSets
from .request import Event, Request, State
from .slots import Slot, SlotTable

EXPECTED_NEW_TOKENS = 128  # cells kept free for each request to grow into (at most max_tokens)


@dataclass(eq=False)
class Running:
    request: Request
    slot: Slot
    chain: object  # a C sampler chain, or a batched RowSampler (sampled with the others in numpy)
    output: SequenceOutput
    device_chain: object = None  # the part of the sampling that runs in the graph, if split
    stop_tokens: frozenset[int] = frozenset()  # the model's end-of-generation tokens and the request's
    last_token: int = -1
    n_prompt_target: int = 0  # slot tokens that must be decoded before sampling starts
    shared: int = 0  # leading cells shared with another slot (copied at admission, not owned)
    drafts: list | None = None  # this step's draft tokens (speculation), after its last token


@dataclass
class Counters:
    steps: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    generated_tokens: int = 0
    preemptions: int = 0
    finished: int = 0
    # seconds spent in steps, in llama_decode, and in sampling (where the GPU is waited on)
    step_seconds: float = 0.0
    decode_seconds: float = 0.0
    sample_seconds: float = 0.0
    ttft: collections.deque = field(default_factory=lambda: collections.deque(maxlen=4096))
    # speculative decoding: verification steps, draft tokens checked, and those kept
    draft_steps: int = 0
    draft_tokens: int = 0
    draft_accepted: int = 0
    lora_switches: int = 0  # times the context changed its LoRA adapter set


class Scheduler:
    """Owns one Context. Not thread-safe: the engine thread alone calls ``step``."""

    def __init__(self, context, *, backend_sampling: bool, split_chains: bool = True,
                 batched_sampling: str = "greedy", spec_max_running: int = 4, lora_switch_after: int = 64,
                 media_lock=None) -> None:
        self.ctx = context
        self.vocab = context.model.vocab
        self.pieces = self.vocab.pieces
        self.eog = frozenset(self.vocab.eog_tokens)
        self.slots = SlotTable(context.n_seq_max)
        for slot in self.slots.slots:
            slot.buf = np.zeros(context.n_ctx, dtype=np.int32)
        self.batch = Batch(context.n_batch)
        self.queue: collections.deque[Request] = collections.deque()
        self.running: list[Running] = []
        self.backend_sampling = backend_sampling
        self.split_chains = split_chains
        self.batched_sampling = batched_sampling
        self.spec_max_running = spec_max_running
        self.counters = Counters()
        self.lora_sets = AdapterSets(context.model)
        self.active_loras = self.lora_sets.get(context.loras)  # the set attached to the context
        self.default_loras = self.active_loras  # the set of a request that names none
        self.lora_switch_after = lora_switch_after
        self._other_set_since: int | None = None  # step since which a request of another set waits
        self._settled = False  # the last scan admitted all it could; nothing arrived since
        self.media_lock = media_lock or contextlib.nullcontext()

    # --- LoRA adapter sets ---------------------------------------------------------------
    def set_default_loras(self, lora_set: frozenset) -> None:
        """The set (from ``lora_sets.get``) of later requests that name none; running and
        queued requests keep theirs."""
        self.default_loras = lora_set

    def enqueue(self, requests) -> None:
        """New requests join the queue (a request's ``loras`` None: the default set)."""
        for request in requests:
            if request.loras is None:
                request.loras = self.default_loras
            if request.loras is not self.active_loras and self._other_set_since is None:
                self._other_set_since = self.counters.steps
        self.queue.extend(requests)
        self._settled = False

    def _switch_loras(self) -> None:
        """Nothing runs: attach the set of the oldest waiting request (of another set than the
        current one when that one has waited ``lora_switch_after`` steps)."""
        queue = self.queue
        while queue and queue[0].cancelled:
            self._emit_finish(queue.popleft(), "cancelled")
        if not queue:
            return
        target = queue[0].loras
        if self._other_set_since is not None and self.counters.steps - self._other_set_since >= self.lora_switch_after:
            target = next((r.loras for r in queue if r.loras is not self.active_loras and not r.cancelled), target)
        if target is self.active_loras:
            return
        try:
            self.ctx.set_loras(AdapterSets.scales(target))
        except Exception as exc:  # noqa: BLE001 - llama.cpp refused this set: its requests fail, not the engine
            self.ctx.set_loras(AdapterSets.scales(self.active_loras))
            for request in [r for r in queue if r.loras is target]:
                queue.remove(request)
                request.close_media()
                request.state = State.FINISHED
                request.sink(Event(finish_reason="error", error=exc))
            return
        self.active_loras = target
        self.counters.lora_switches += 1
        self._other_set_since = self.counters.steps if any(r.loras is not target for r in queue) else None
        self._settled = False

    # --- admission ---------------------------------------------------------------------
    @staticmethod
    def _growth(request: Request) -> int:
        return min(EXPECTED_NEW_TOKENS, request.max_tokens - request.n_generated)

    def _reserved(self) -> int:
        """Cells the running requests hold or are expected to grow into. Cells shared with
        another slot's prefix are counted once, by their owner: 64 requests behind one long
        system prompt need its cells once, so they are admitted together."""
        return sum(len(r.slot.tokens) - r.shared + self._growth(r.request) for r in self.running)

    def _admit(self) -> None:
        if not self.queue:
            return
        if not self.running:
            self._switch_loras()
        elif self._settled or len(self.running) == len(self.slots.slots):
            return  # nothing new to admit, or no slot free
        elif self._other_set_since is not None and \
                self.counters.steps - self._other_set_since >= self.lora_switch_after:
            return  # another set waited long enough: let the running requests finish, then switch
        active = self.active_loras
        deferred = []
        settled = True
        others = False  # a request of another set still waits
        while self.queue:
            request = self.queue.popleft()
            if request.cancelled:
                self._emit_finish(request, "cancelled")
                continue
            if request.loras is not active:  # waits for the context to switch to its set
                deferred.append(request)
                others = True
                continue
            try:
                admitted = self._try_admit(request, deferred)
            except Exception as exc:  # noqa: BLE001 - e.g. a sampler llama.cpp refuses: this request fails alone
                request.close_media()
                request.state = State.FINISHED
                request.sink(Event(finish_reason="error", error=exc))
                continue
            if not admitted:
                self.queue.appendleft(request)
                settled = False
                break
            if deferred and deferred[-1] is request:  # waits for a shared prefix: retry next step
                settled = False
        else:
            if not others:  # the whole queue was seen: no other set waits (any more)
                self._other_set_since = None
        self.queue.extendleft(reversed(deferred))
        self._settled = settled

    def _try_admit(self, request: Request, deferred: list) -> bool:
        """False when no slot or cells are free (stop admitting); deferral is not failure."""
        if request.media is not None:
            return self._admit_media(request)
        prompt = request.prompt
        match = self.slots.best_prefix(prompt, request.loras)
        if match is not None and match.slot.busy and match.slot.n_past < min(match.length, len(prompt) - 1):
            deferred.append(request)  # the shared prefix is still being computed: wait for it
            return True
        slot = self.slots.pick_for(match)
        if slot is None:
            return False
        reuse = min(match.length, len(prompt) - 1) if match is not None else 0  # >= 1 token yields logits
        shared = reuse if match is not None and match.slot is not slot else 0
        # One shared pool of cells: keep room for the running requests to grow. (With a
        # stream per sequence each request has its own cells; nothing to reserve.)
        if self.ctx.n_streams == 1 and self.running and \
                self._reserved() + len(prompt) - shared + self._growth(request) > self.ctx.n_ctx:
            return False
        chains = self._chains(request)  # may raise; nothing has changed yet
        try:
            if chains[1] is not None:
                self.ctx.set_sampler(slot.seq_id, chains[1])
            if match is not None and match.slot is slot:
                self.ctx.memory_seq_rm(slot.seq_id, reuse, -1)
            else:
                self._evict(slot)
                if match is not None:
                    self._copy_prefix(match.slot, slot, reuse)
        except BaseException:
            self._close_chains_of(*chains)
            raise
        self._start(request, slot, reuse, shared, chains)
        return True

    def _admit_media(self, request: Request) -> bool:
        """Evaluate a media request's prompt into a slot now (one call: the step waits for
        it), all but its last token, which the next batch decodes again for the logits its
        sampling reads. Cached cells are reused as for text, up to a chunk boundary: the slot
        bookkeeping holds media cells as keys of the media's bytes (``MediaPrompt.cells``), so
        only an identical image at the same place matches, and an image is reused whole or not
        at all."""
        prompt, media = request.prompt, request.media
        match = self.slots.best_prefix(prompt, request.loras)
        slot = self.slots.pick_for(match)
        if slot is None:
            return False
        keep, text_end, first_chunk = self._media_resume(media, match, len(prompt))
        if keep and match.slot.busy and match.slot.n_past < keep:
            keep, text_end, first_chunk = 0, 0, 0  # its cells are still being computed
        shared = keep if keep and match.slot is not slot else 0
        if self.ctx.n_streams == 1 and self.running and \
                self._reserved() + len(prompt) - shared + self._growth(request) > self.ctx.n_ctx:
            return False
        chains = self._chains(request)
        try:
            for attempt in (0, 1):
                try:
                    if keep and match.slot is slot:
                        self.ctx.memory_seq_rm(slot.seq_id, keep, -1)
                    else:
                        self._evict(slot)
                        if keep:
                            self._copy_prefix(match.slot, slot, keep)
                    end = self._eval_media(media, slot.seq_id, keep, text_end, first_chunk)
                    break
                except Exception:
                    self.ctx.memory_seq_rm(slot.seq_id)
                    keep = shared = 0
                    text_end, first_chunk = len(media.prefix), 0
                    if attempt or not self._evict_cached_prefixes(len(prompt)):
                        raise
            if end != len(prompt):
                raise RuntimeError(f"the media prompt took {end} positions, expected {len(prompt)}")
            self.ctx.memory_seq_rm(slot.seq_id, end - 1, -1)
        except BaseException:
            self._evict(slot)
            self._close_chains_of(*chains)
            raise
        finally:
            request.close_media()
        self._start(request, slot, len(prompt) - 1, shared, chains, cached=keep)
        return True

    @staticmethod
    def _media_resume(media, match, n_prompt: int) -> tuple[int, int, int]:
        """(cells kept, end of the plain tokens to decode, first chunk to evaluate) for a
        media prompt whose first ``match.length`` cells a slot holds."""
        n_prefix = len(media.prefix)
        reuse = min(match.length, n_prompt - 1) if match is not None else 0
        if reuse <= n_prefix:  # inside the text before the first image
            return reuse, n_prefix, 0
        kept, text_end, first_chunk = media.resume(reuse - n_prefix)
        return n_prefix + kept, n_prefix + text_end, first_chunk

    def _eval_media(self, media, seq_id: int, keep: int, text_end: int, first_chunk: int) -> int:
        """Decode the plain tokens from ``keep`` to ``text_end`` (no logits), then the chunks
        from ``first_chunk`` on; returns the next position."""
        from ..native.mtmd import eval_chunks

        tokens = np.asarray((list(media.prefix) + media.cells)[keep:text_end], dtype=np.int32)
        batch = self.batch
        for start in range(0, len(tokens), batch.capacity):
            batch.clear()
            batch.add(tokens[start: start + batch.capacity], keep + start, seq_id, logits="none")
            self.ctx.decode(batch)
        batch.clear()
        if first_chunk >= len(media.chunk_types):
            return text_end
        with self.media_lock:
            return eval_chunks(self.ctx, media.chunks, text_end, seq_id=seq_id, logits_last=False,
                               first_chunk=first_chunk)

    def _copy_prefix(self, source: Slot, target: Slot, n: int) -> None:
        if self.ctx.n_streams == 1:  # shared cells: no data moves
            self.ctx.memory_seq_cp(source.seq_id, target.seq_id, 0, n)
        else:  # separate streams: llama.cpp copies whole streams, then the tail goes
            self.ctx.memory_seq_cp(source.seq_id, target.seq_id)
            self.ctx.memory_seq_rm(target.seq_id, n, -1)

    def _evict(self, slot: Slot) -> None:
        if slot.n_past:
            self.ctx.memory_seq_rm(slot.seq_id)
        slot.set_tokens(np.zeros(0, dtype=np.int32))
        slot.n_past = 0

    def _start(self, request: Request, slot: Slot, reuse: int, shared: int, chains, cached: int | None = None) -> None:
        chain, device_chain = chains
        slot.set_tokens(request.prompt)
        slot.n_past = reuse
        slot.request = request
        slot.loras = request.loras  # its cells are computed under this set
        SlotTable.touch(slot)
        request.state = State.PREFILL
        if request.first_token_at is None:  # a resumed request was counted already
            request.n_cached = reuse if cached is None else cached
            self.counters.prompt_tokens += request.n_prompt
            self.counters.cached_prompt_tokens += request.n_cached
        spec = request.spec
        if request.output is None:  # a resumed request goes on with its output (held text too)
            request.output = SequenceOutput(self.pieces, spec.stop, spec.logprobs)
        running = Running(request, slot, chain, request.output, device_chain=device_chain,
                          stop_tokens=self.eog | spec.stop_tokens)
        running.n_prompt_target = len(request.prompt)
        running.shared = shared
        self.running.append(running)

    def _chains(self, request: Request):
        """(host chain, chain attached to the graph or None): see generation.chains. A
        resumed request's chain goes on from its tokens so far (grammar, penalties). Plain
        chains are sampled together from the step's logits (generation.batched); a resumed
        request keeps its random stream."""
        spec = request.spec
        if request.speculative is not None:  # drafts are verified row by row on the host
            if request.drafter is None:
                request.drafter = PromptLookupDrafter(request.speculative.ngram_size, request.speculative.n_max)
                request.draft_window = DraftWindow(request.speculative.n_max)
            rows = request.row_sampler or draft_verifier(spec)
            if rows is not None:
                request.row_sampler = rows
                return rows, None
            host = build_chains(spec, self.vocab, on_gpu=False)[0]
            try:
                prime(host, spec, request.prompt, request.resumed_tokens)
            except BaseException:
                host.close()
                raise
            return host, None
        if self._bulk(spec):
            if request.row_sampler is None:
                request.row_sampler = RowSampler(spec.sampling)
            return request.row_sampler, None
        media = request.media is not None
        host, device = build_chains(request.spec, self.vocab, on_gpu=self.backend_sampling and not media,
                                    split=self.split_chains)
        try:
            prompt = request.prompt[request.prompt >= 0] if media else request.prompt  # no media cells
            prime(host, request.spec, prompt, request.resumed_tokens)
        except BaseException:
            self._close_chains_of(host, device)
            raise
        return host, device

    def _bulk(self, spec) -> bool:
        """Whether this request's chain is sampled with the others (generation.batched)."""
        mode = self.batched_sampling
        if mode == "off" or spec.grammar is not None or spec.logprobs is not None or not batchable(spec.sampling):
            return False
        return mode == "all" or spec.sampling.temperature <= 0

    @staticmethod
    def _close_chains_of(chain, device_chain) -> None:
        if isinstance(chain, RowSampler):
            return
        chain.close()  # detaches a chain attached whole to the graph before freeing
        if device_chain is not None and device_chain is not chain:
            device_chain.close()

    @classmethod
    def _close_chains(cls, running: Running) -> None:
        cls._close_chains_of(running.chain, running.device_chain)

    # --- one step ------------------------------------------------------------------------
    def step(self) -> bool:
        """Run one batch. Returns False when there was nothing to do."""
        clock = time.perf_counter
        started = clock()
        self._reap_cancelled()
        self._admit()
        if not self.running:
            return False
        outputs = self._fill_batch()
        c = self.counters
        decode_start = clock()
        try:
            self.ctx.decode(self.batch)
        except KVCacheFullError:
            if not self._evict_cached_prefixes(self.batch.n_tokens):
                self._preempt_newest()
            return True
        decoded = clock()
        c.steps += 1
        self._advance_positions()
        sampling = clock()
        speculating = [(r, i) for r, i in outputs if r.drafts is not None]
        if speculating:
            outputs = [(r, i) for r, i in outputs if r.drafts is None]
        batched = [(r, i) for r, i in outputs if isinstance(r.chain, RowSampler)]
        chained = [(r, i) for r, i in outputs if not isinstance(r.chain, RowSampler)] if batched else outputs
        tokens = self.ctx.sample_rows([r.chain for r, _ in chained], [i for _, i in chained])
        if batched:
            tokens += sample_rows([self.ctx.logits(i) for _, i in batched], [r.chain for r, _ in batched])
        c.sample_seconds += clock() - sampling
        for (running, index), token in zip(chained + batched if batched else chained, tokens):
            self._take(running, index, token)
        for running, index in speculating:
            self._verify(running, index)
        done = clock()
        c.decode_seconds += decoded - decode_start
        c.step_seconds += done - started
        return True

    def _fill_batch(self) -> list[tuple[Running, int]]:
        batch = self.batch
        batch.clear()
        outputs = []
        decoding = [r for r in self.running if r.request.state is State.DECODE]
        for r in decoding:  # a step that failed to decode (cache full) left its drafts behind
            r.drafts = None
        speculating = []
        if len(self.running) <= self.spec_max_running and any(r.request.speculative is not None for r in decoding):
            speculating = [r for r in decoding if r.request.speculative is not None]
            decoding = [r for r in decoding if r.request.speculative is None]
        if decoding:
            n = len(decoding)
            batch.add_tokens(np.fromiter((r.last_token for r in decoding), np.int32, n),
                             np.fromiter((r.slot.n_past for r in decoding), np.int32, n),
                             np.fromiter((r.slot.seq_id for r in decoding), np.int32, n), 1)
            outputs = [(r, i) for i, r in enumerate(decoding)]
        for n_left, r in zip(range(len(speculating) - 1, -1, -1), speculating):  # n_left: rows the rest need
            outputs.append((r, self._add_drafted(r, batch.capacity - batch.n_tokens - n_left)))
        budget = batch.capacity - batch.n_tokens
        for r in self.running:
            if budget <= 0:
                break
            if r.request.state is not State.PREFILL:
                continue
            slot = r.slot
            rest = len(slot.tokens) - slot.n_past
            take = min(rest, budget)
            last = take == rest
            span = batch.add(slot.tokens[slot.n_past: slot.n_past + take], slot.n_past, slot.seq_id,
                             logits="last" if last else "none")
            if last:
                outputs.append((r, span.stop - 1))
            budget -= take
        return outputs

    def _add_drafted(self, r: Running, room: int) -> int:
        """Add ``[last token, drafts...]`` of a speculating request; returns its first row."""
        request, slot = r.request, r.slot
        options = request.speculative
        want = request.draft_window.next()  # shrinks after misses (each drafted row costs a row)
        want = max(want, options.n_min) if want else 0
        # k drafts emit up to k+1 tokens: stay inside the budget, the context and the batch
        n = min(want, request.max_tokens - request.n_generated - 1,
                self.ctx.n_ctx_seq - slot.n_past - 2, room - 1)
        drafts = request.drafter.draft(slot.tokens, n) if n > 0 else []
        if len(drafts) < max(1, options.n_min):
            drafts = []
        r.drafts = drafts
        return self.batch.add([r.last_token, *drafts], slot.n_past, slot.seq_id, logits="all").start

    def _verify(self, r: Running, first: int) -> None:
        """Sample a speculating request's rows in order with its chain; keep the drafts it
        agrees with and the token after them; drop the other rows' cells."""
        drafts, slot, request = r.drafts, r.slot, r.request
        r.drafts = None
        start = slot.n_past - len(drafts) - 1  # the position of the last token
        end = slot.n_past
        accepted = 0
        for i in range(len(drafts) + 1):
            row = first + i
            token = sample_row(self.ctx, row, r.chain) if isinstance(r.chain, RowSampler) else r.chain.sample(self.ctx, row)
            slot.n_past = start + i + 1  # cells up to the row sampled from hold emitted tokens
            self._take(r, first + i, token)
            if request.state is State.FINISHED or i == len(drafts) or token != drafts[i]:
                break
            accepted += 1
        if end > slot.n_past:
            self.ctx.memory_seq_rm(slot.seq_id, slot.n_past, -1)
        request.draft_window.update(len(drafts), kept_all=accepted == len(drafts))
        if drafts:
            c = self.counters
            c.draft_steps += 1
            c.draft_tokens += len(drafts)
            c.draft_accepted += accepted
            request.n_drafted += len(drafts)
            request.n_draft_accepted += accepted

    def _advance_positions(self) -> None:
        n = self.batch.n_tokens
        seqs, counts = np.unique(self.batch.seq_id[:n, 0], return_counts=True)
        by_seq = dict(zip(seqs.tolist(), counts.tolist()))
        for r in self.running:
            r.slot.n_past += by_seq.get(r.slot.seq_id, 0)

    def _take(self, running: Running, index: int, token: int) -> None:
        """One sampled token of one sequence: stream it, or end the sequence."""
        request = running.request
        if request.state is State.PREFILL:
            request.state = State.DECODE
            if request.first_token_at is None:  # not again when resuming after preemption
                request.first_token_at = time.perf_counter()
                self.counters.ttft.append(request.first_token_at - request.submitted_at)
        if token in running.stop_tokens:
            self._finish(running, "stop")
            return
        request.n_generated += 1
        self.counters.generated_tokens += 1
        running.last_token = token
        running.slot.append(token)
        output = running.output
        row = log_softmax(self.ctx.logits(index)) if output.logprobs is not None else None
        text, stopped = output.on_token(token, row)
        request.sink(Event(text=text, tokens=(token,),
                           logprobs=output.logprobs.entries[-1:] if row is not None else None))
        if stopped:
            self._finish(running, "stop")
        elif request.n_generated >= request.max_tokens or running.slot.n_past + 1 >= self.ctx.n_ctx_seq:
            self._finish(running, "length")

    # --- finishing, cancellation, preemption ------------------------------------------------
    def _finish(self, running: Running, reason: str) -> None:
        request = running.request
        tail = running.output.finish(reason)
        reason = running.output.finish_reason  # a stop string in the held-back tail makes it "stop"
        request.state = State.FINISHED
        self._close_chains(running)
        slot = running.slot
        slot.truncate(slot.n_past)  # keep exactly the decoded cells as a cached prefix
        slot.request = None
        SlotTable.touch(slot)
        self.running.remove(running)
        self.counters.finished += 1
        request.sink(Event(text=tail, finish_reason=reason))

    def _emit_finish(self, request: Request, reason: str) -> None:
        request.close_media()
        request.state = State.FINISHED
        request.sink(Event(finish_reason=reason))

    def _reap_cancelled(self) -> None:
        for running in [r for r in self.running if r.request.cancelled]:
            self._finish(running, "cancelled")

    def _evict_cached_prefixes(self, cells_wanted: int) -> bool:
        """The cache is full: drop least recently used cached prefixes (idle slots) until
        about ``cells_wanted`` cells are free. False when there was none to drop."""
        idle = sorted((s for s in self.slots.slots if not s.busy and s.n_past), key=lambda s: s.last_used)
        freed = 0
        for slot in idle:
            if freed >= cells_wanted:
                break
            freed += slot.n_past
            self._evict(slot)
        return bool(idle)

    def _preempt_newest(self) -> None:
        """The cache is full: free the newest request's cells and queue it to resume."""
        self.counters.preemptions += 1
        # a media request cannot be resumed from its tokens (its media cells are no tokens)
        resumable = [r for r in self.running if r.request.media is None]
        if len(self.running) == 1 or not resumable:
            self._finish(self.running[-1], "length")  # even alone it does not fit: end it cleanly
            return
        victim = resumable[-1]
        request, slot = victim.request, victim.slot
        self._close_chains(victim)
        self.ctx.memory_seq_rm(slot.seq_id)
        resume = np.concatenate([slot.tokens[: slot.n_past], [victim.last_token]]).astype(np.int32) \
            if request.state is State.DECODE else request.prompt
        request.prompt = resume
        request.state = State.QUEUED
        slot.set_tokens(np.zeros(0, dtype=np.int32))
        slot.n_past = 0
        slot.request = None
        self.running.remove(victim)
        self.queue.appendleft(request)
        self._settled = False

    def fail_all(self, error: BaseException) -> None:
        """An unexpected error in a step: end every request with it, keep the engine alive."""
        for running in list(self.running):
            try:
                self._close_chains(running)
            except Exception:  # noqa: BLE001
                pass
            running.slot.request = None
            running.request.state = State.FINISHED
            running.request.sink(Event(finish_reason="error", error=error))
        self.running.clear()
        self.ctx.memory_clear()
        for slot in self.slots.slots:
            slot.set_tokens(np.zeros(0, dtype=np.int32))
            slot.n_past = 0
