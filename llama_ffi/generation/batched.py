"""Sampling many sequences at once from one step's logits, in numpy.

The engine's plain chains (greedy, or logit bias, top-k, top-p, min-p, temperature and a
random pick) can be sampled here together instead of through one llama.cpp chain per
sequence. Measured with 64 sequences (scripts/bench/engine_profile.py, docs/benchmarks.md):
greedy in bulk beats a greedy chain per sequence in the graph (H200, SmolLM2: 5,934 vs 5,003
t/s), because llama.cpp's in-graph chains cost graph ops and one copy per sequence, while
the logits rows arrive in the one copy llama-batched-bench makes too. Top-k sampling in bulk
only draws level with top-k in the graph once rows are scanned on a thread pool (H100: 4,779
vs 4,398 t/s; 2,462 vs 2,554 on the 8B shape, whose noise logits leave thousands of tokens in
the search window; one thread: 4,215 and 1,289), so the engine bulk-samples greedy chains by
default (``EngineConfig.batched_sampling``).

Semantics follow llama.cpp's samplers in its chain order (``SamplingParams.build_chain``):
logit bias, top-k (the k largest), top-p (the shortest prefix whose probability reaches p,
normalised over the top-k survivors), min-p (logit >= max + ln p), temperature, then a
categorical draw. ``tests/test_batched_sampling.py`` checks survivors and probabilities
against llama.cpp's own samplers. The random stream is numpy's, seeded per request, so a
seed reproduces an engine run, not the token a llama.cpp chain would draw.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .sampling import SamplingParams

__all__ = ["MAX_TOP_K", "RowSampler", "batchable", "distribution", "draft_verifier", "sample_row", "sample_rows"]

MAX_TOP_K = 1024  # above this, a per-sequence chain is as fast
_FIRST_WINDOW = 8.0  # nats below the best logit to look for top-k candidates first


def batchable(sampling: SamplingParams) -> bool:
    """Chains this module samples exactly: greedy, or top-k sampling with top-p/min-p."""
    if (sampling.repeat_penalty != 1.0 or sampling.frequency_penalty or sampling.presence_penalty
            or sampling.dry_multiplier > 0 or sampling.mirostat_mode or sampling.typical_p < 1.0
            or sampling.xtc_probability > 0 or sampling.top_n_sigma > 0):
        return False
    return sampling.temperature <= 0 or 0 < sampling.top_k <= MAX_TOP_K


def draft_verifier(spec) -> RowSampler | None:
    """How speculation checks a greedy plain chain's rows: an argmax over each row in numpy
    (microseconds) instead of a llama.cpp chain call per row (half a millisecond over a 49k
    vocabulary, which on a GPU cost more than the drafts saved). None where the chain itself
    must run: grammars, logprobs (they read the unbiased row), sampling, penalties."""
    if spec.grammar is not None or spec.logprobs is not None or spec.sampling.temperature > 0 \
            or not batchable(spec.sampling):
        return None
    return RowSampler(spec.sampling)


def sample_row(context, row: int, sampler: RowSampler) -> int:
    """One token from output ``row`` of the context's last batch (the row is edited in place)."""
    return sample_rows([context.logits(row)], [sampler])[0]


class RowSampler:
    """One request's plain chain and random stream (kept across preemption)."""

    __slots__ = ("greedy", "temperature", "top_k", "top_p", "min_p", "bias_ids", "bias_values", "rng")

    def __init__(self, sampling: SamplingParams) -> None:
        self.greedy = sampling.temperature <= 0
        self.temperature = float(sampling.temperature)
        self.top_k = int(sampling.top_k)
        self.top_p = float(sampling.top_p)
        self.min_p = float(sampling.min_p)
        bias = sampling.logit_bias or {}
        self.bias_ids = np.fromiter((int(t) for t in bias), np.int64, len(bias))
        self.bias_values = np.fromiter((float(v) for v in bias.values()), np.float32, len(bias))
        seed = sampling.seed
        self.rng = np.random.default_rng(None if seed is None or seed in (-1, 0xFFFFFFFF) else seed)


def sample_rows(rows: Sequence[np.ndarray], samplers: Sequence[RowSampler]) -> list[int]:
    """One token per logits row. Rows are edited in place (logit bias): pass the step's
    logits views, which the next decode overwrites anyway."""
    n = len(rows)
    found: list = [None] * n  # a token id (greedy) or (candidate ids, their logits)
    pool = _pool() if n >= _PARALLEL_ROWS else None
    if pool is None:
        _scan(rows, samplers, found, range(n))
    else:  # numpy releases the GIL over each row: the scans run on several cores at once
        part = -(-n // pool._max_workers)
        list(pool.map(lambda at: _scan(rows, samplers, found, range(at, min(at + part, n))), range(0, n, part)))
    tokens = [0] * n
    picks = []  # (position, candidate ids, their logits) of the rows that draw at random
    for j, f in enumerate(found):
        if isinstance(f, tuple):
            picks.append((j, *f))
        else:
            tokens[j] = f
    if picks:
        for (j, ids, _), token in zip(picks, _draw(picks, samplers)):
            tokens[j] = int(ids[token])
    return tokens


def _scan(rows, samplers, found: list, indices: range) -> None:
    """The per-row pass over the vocabulary: logit bias, then argmax or the top-k candidates."""
    for j in indices:
        row, s = rows[j], samplers[j]
        if s.bias_ids.size:
            row[s.bias_ids] += s.bias_values
        found[j] = int(np.argmax(row)) if s.greedy else _top_k(row, s.top_k)


_PARALLEL_ROWS = 16  # below this a thread hand-over costs more than the scans it spreads
_POOL: list = []


def _pool() -> ThreadPoolExecutor | None:
    """A small shared pool on machines with cores to spare (None on 1-3 cores)."""
    if not _POOL:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        workers = min(8, cores // 2)
        _POOL.append(ThreadPoolExecutor(workers, thread_name_prefix="llama_ffi-sample") if workers >= 2 else None)
    return _POOL[0]


def _top_k(row: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest logits, sorted descending, and their token ids. Candidates are
    looked for in a window below the best logit (a few dozen of a vocabulary's entries
    typically), widened until k are in: one pass over the row, not a full partition."""
    k = min(k, row.size)
    best = float(row.max())
    window = _FIRST_WINDOW
    while True:
        ids = np.flatnonzero(row >= best - window) if math.isfinite(best) else np.arange(row.size)
        if ids.size >= k or window > 1e6:
            break
        window *= 4.0
    if ids.size < k:  # -inf-heavy rows: fall back to a full partition
        ids = np.argpartition(row, row.size - k)[row.size - k:]
    logits = row[ids]
    if ids.size > k:
        keep = np.argpartition(logits, ids.size - k)[ids.size - k:]
        ids, logits = ids[keep], logits[keep]
    order = np.argsort(-logits, kind="stable")
    return ids[order], logits[order]


def distribution(row: np.ndarray, sampler: RowSampler) -> tuple[np.ndarray, np.ndarray]:
    """(token ids, probabilities) that a sampled row draws from, most likely first (applies
    the logit bias to a copy). For tests and diagnostics; sampling uses :func:`sample_rows`."""
    row = row.astype(np.float32, copy=True)
    if sampler.bias_ids.size:
        row[sampler.bias_ids] += sampler.bias_values
    ids, logits = _top_k(row, sampler.top_k)
    cumulative = _cumulative([logits], [sampler])[0]
    weights = np.diff(cumulative, prepend=0.0)
    n = int(np.count_nonzero(weights))
    return ids[:n], weights[:n] / cumulative[-1]


def _draw(picks, samplers) -> np.ndarray:
    chosen = [samplers[j] for j, _, _ in picks]
    cumulative = _cumulative([logits for _, _, logits in picks], chosen)
    draws = np.array([s.rng.random() for s in chosen])[:, None] * cumulative[:, -1:]
    index = (cumulative <= draws).sum(axis=1)
    return np.minimum(index, np.array([logits.size for _, _, logits in picks]) - 1)


def _cumulative(candidates: Sequence[np.ndarray], chosen: Sequence[RowSampler]) -> np.ndarray:
    """Top-p, min-p and temperature for all sampled rows at once (padded with -inf): the
    cumulative weights each row's draw is taken against."""
    width = max(logits.size for logits in candidates)
    z = np.full((len(candidates), width), -np.inf, dtype=np.float64)
    for r, logits in enumerate(candidates):
        z[r, : logits.size] = logits
    top_p = np.array([s.top_p for s in chosen])[:, None]
    min_p = np.array([s.min_p for s in chosen])[:, None]
    temperature = np.array([s.temperature for s in chosen])[:, None]
    keep = np.isfinite(z)
    probs = np.exp(z - z[:, :1])
    probs /= probs.sum(axis=1, keepdims=True)
    before = np.cumsum(probs, axis=1) - probs  # mass of the better candidates
    keep &= (before < top_p) | (top_p >= 1.0)  # top-p: up to and including the one reaching p
    with np.errstate(divide="ignore"):
        floor = z[:, :1] + np.log(np.where(min_p > 0, min_p, 0.0))
    keep &= z >= floor
    keep[:, 0] = True  # min_keep = 1
    weights = np.exp(np.where(keep, (z - z[:, :1]) / temperature, -np.inf))
    return np.cumsum(weights, axis=1)
