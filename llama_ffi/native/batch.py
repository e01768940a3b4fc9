"""``Batch``: a ``llama_batch`` whose arrays are numpy arrays owned by Python.

``llama_batch_init`` mallocs one small array per token for the sequence ids, so it cannot
be filled without a per-token loop. Here every field points into numpy memory that the
Batch keeps alive (the sequence ids into one contiguous block), so filling a batch is a
handful of vectorised slice assignments and nothing needs ``llama_batch_free``.
"""

from __future__ import annotations

import numpy as np

from ..errors import ValidationError
from ._lib import ffi


class Batch:
    """Up to ``capacity`` tokens, each in up to ``n_seq_max`` sequences."""

    def __init__(self, capacity: int, n_seq_max: int = 1) -> None:
        if capacity < 1 or n_seq_max < 1:
            raise ValidationError("a batch needs capacity >= 1 and n_seq_max >= 1")
        self.capacity = capacity
        self.n_seq_max = n_seq_max
        self.token = np.zeros(capacity, dtype=np.int32)
        self.pos = np.zeros(capacity, dtype=np.int32)
        self.n_seq_id = np.ones(capacity, dtype=np.int32)
        self.seq_id = np.zeros((capacity, n_seq_max), dtype=np.int32)
        self.logits = np.zeros(capacity, dtype=np.int8)
        # seq_id is `llama_seq_id **`: one pointer per token into the contiguous block.
        row_bytes = self.seq_id.strides[0]
        self._seq_ptrs = (self.seq_id.ctypes.data + row_bytes * np.arange(capacity, dtype=np.uint64)).astype(np.uint64)
        self.c = ffi.new("struct llama_batch *")
        self.c.token = ffi.cast("llama_token *", self.token.ctypes.data)
        self.c.embd = ffi.NULL
        self.c.pos = ffi.cast("llama_pos *", self.pos.ctypes.data)
        self.c.n_seq_id = ffi.cast("int32_t *", self.n_seq_id.ctypes.data)
        self.c.seq_id = ffi.cast("llama_seq_id **", self._seq_ptrs.ctypes.data)
        self.c.logits = ffi.cast("int8_t *", self.logits.ctypes.data)
        self.c.n_tokens = 0

    @property
    def n_tokens(self) -> int:
        return self.c.n_tokens

    def clear(self) -> None:
        self.c.n_tokens = 0

    def add(self, tokens, start_pos: int, seq_id: int = 0, *, logits: str | np.ndarray = "last") -> slice:
        """Append ``tokens`` at positions ``start_pos...`` of sequence ``seq_id``.

        ``logits``: "last" (only the final token needs output), "all", "none", or a bool
        array. Returns the slice of the batch the tokens occupy.
        """
        tokens = np.asarray(tokens, dtype=np.int32)
        n, at = len(tokens), self.c.n_tokens
        if at + n > self.capacity:
            raise ValidationError(f"batch holds {self.capacity} tokens; cannot add {n} more to {at}")
        span = slice(at, at + n)
        self.token[span] = tokens
        self.pos[span] = np.arange(start_pos, start_pos + n, dtype=np.int32)
        self.n_seq_id[span] = 1
        self.seq_id[span, 0] = seq_id
        if isinstance(logits, str):
            self.logits[span] = 1 if logits == "all" else 0
            if logits == "last" and n:
                self.logits[at + n - 1] = 1
        else:
            self.logits[span] = np.asarray(logits, dtype=np.int8)
        self.c.n_tokens = at + n
        return span

    def add_tokens(self, tokens, pos, seq_ids, logits) -> None:
        """Append one token per running sequence, all fields as arrays (the decode step)."""
        n, at = len(tokens), self.c.n_tokens
        if at + n > self.capacity:
            raise ValidationError(f"batch holds {self.capacity} tokens; cannot add {n} more to {at}")
        span = slice(at, at + n)
        self.token[span] = tokens
        self.pos[span] = pos
        self.n_seq_id[span] = 1
        self.seq_id[span, 0] = seq_ids
        self.logits[span] = logits
        self.c.n_tokens = at + n

    def output_indices(self) -> np.ndarray:
        """Batch positions that produce output, in order (index i of llama_get_logits_ith)."""
        return np.flatnonzero(self.logits[: self.c.n_tokens])

    def __repr__(self) -> str:
        return f"<Batch {self.c.n_tokens}/{self.capacity} tokens>"
