"""Sequence slots of one context, and the prefix cache over them.

Each slot is a llama.cpp sequence id. A slot holds the tokens whose cells are in the KV
cache for that sequence. When a request finishes, its slot keeps its cells as a cached
prefix (least recently used ones are evicted first); a new request whose prompt starts
with tokens held by any slot, running or cached, gets those cells through
``llama_memory_seq_cp`` (shared cells in a unified cache: no recomputation).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

MIN_SHARED_PREFIX = 8  # below this, copying cells is not worth a graph change


@dataclass(eq=False)
class Slot:
    """One sequence id. ``tokens`` are the prompt and output of its request (or what it
    caches); the first ``n_past`` of them have cells in the KV cache."""

    seq_id: int
    buf: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    n_tokens: int = 0
    n_past: int = 0
    request: object = None  # the running Request, or None when free/cached
    loras: frozenset | None = None  # the LoRA adapter set its cells were computed under
    last_used: float = 0.0

    @property
    def busy(self) -> bool:
        return self.request is not None

    @property
    def tokens(self) -> np.ndarray:
        return self.buf[: self.n_tokens]

    def set_tokens(self, tokens: np.ndarray) -> None:
        if len(tokens) > len(self.buf):
            self.buf = np.zeros(max(len(tokens), 2 * len(self.buf)), dtype=np.int32)
        self.buf[: len(tokens)] = tokens
        self.n_tokens = len(tokens)

    def append(self, token: int) -> None:
        if self.n_tokens == len(self.buf):
            self.buf = np.concatenate([self.buf, np.zeros(max(16, len(self.buf)), dtype=np.int32)])
        self.buf[self.n_tokens] = token
        self.n_tokens += 1

    def truncate(self, n: int) -> None:
        self.n_tokens = min(self.n_tokens, n)


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if diff.size else n


@dataclass
class PrefixMatch:
    slot: Slot
    length: int  # tokens of the new prompt already held by ``slot``


class SlotTable:
    def __init__(self, n_slots: int) -> None:
        self.slots = [Slot(seq_id=i) for i in range(n_slots)]

    def free_or_cached(self) -> list[Slot]:
        return [s for s in self.slots if not s.busy]

    def n_busy(self) -> int:
        return sum(s.busy for s in self.slots)

    def best_prefix(self, prompt: np.ndarray, loras: frozenset | None = None) -> PrefixMatch | None:
        """The slot holding the longest prefix of ``prompt`` (at least MIN_SHARED_PREFIX),
        counting tokens a running slot has queued but not decoded yet. Only slots whose
        cells were computed under the adapter set ``loras`` (interned: compared by identity)
        count: cells computed with other weights hold other keys and values."""
        best = None
        for slot in self.slots:
            if len(slot.tokens) == 0 or slot.loras is not loras:
                continue
            length = common_prefix(slot.tokens, prompt)
            if length >= MIN_SHARED_PREFIX and (best is None or length > best.length):
                best = PrefixMatch(slot, length)
        return best

    def pick_for(self, match: PrefixMatch | None) -> Slot | None:
        """A slot for a new request: the matched cached slot itself when it is idle,
        otherwise an empty slot, otherwise the least recently used cached slot."""
        if match is not None and not match.slot.busy:
            return match.slot
        idle = self.free_or_cached()
        if not idle:
            return None
        empty = [s for s in idle if s.n_past == 0]
        if empty:
            return empty[0]
        return min(idle, key=lambda s: s.last_used)

    def cached_cells(self) -> int:
        return sum(s.n_past for s in self.slots if not s.busy)

    @staticmethod
    def touch(slot: Slot) -> None:
        slot.last_used = time.monotonic()
