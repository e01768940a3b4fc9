"""A sequence's output as it grows: tokens, text, stop strings, logprobs, finish reason.

Both drivers feed one :class:`SequenceOutput` per sequence with each sampled token. Per token
the work is a list index (the token's piece), one incremental UTF-8 decode and, only when
stop strings were given, a check over the held-back tail. Logprobs are read from the logits
row only when asked for.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .text import StopMatcher, TextStream, token_text

__all__ = ["LogprobCollector", "SequenceOutput", "chat_logprobs", "completion_logprobs", "log_softmax"]

# A logprob entry: (token, its logprob or None, [(alternative, logprob), ...] or None).
Entry = tuple[int, "float | None", "list[tuple[int, float]] | None"]


class SequenceOutput:
    """Feed sampled tokens; get text deltas. ``finish(reason)`` returns the tail."""

    __slots__ = ("pieces", "tokens", "stream", "stop", "logprobs", "finish_reason")

    def __init__(self, pieces: Sequence[bytes], stop: Sequence[str] = (), logprobs: int | None = None) -> None:
        self.pieces = pieces
        self.tokens: list[int] = []
        self.stream = TextStream()
        self.stop = StopMatcher(stop) if stop else None
        self.logprobs = LogprobCollector(logprobs) if logprobs is not None else None
        self.finish_reason: str | None = None

    def on_token(self, token: int, row: np.ndarray | None = None) -> tuple[str, bool]:
        """Take one generated token (``row``: its log-probabilities, when logprobs are on).
        Returns (text now safe to show, whether a stop string was hit)."""
        self.tokens.append(token)
        if self.logprobs is not None:
            self.logprobs.add(token, row)
        text = self.stream.feed(self.pieces[token])
        if self.stop is None:
            return text, False
        text, hit = self.stop.feed(text)
        if hit:
            self.finish_reason = "stop"
        return text, hit

    def finish(self, reason: str) -> str:
        """End the sequence; the text held back (an incomplete character, a possible stop
        string's start). After a stop string was hit, nothing more is released."""
        if self.finish_reason == "stop" and self.stop is not None:
            return ""
        tail = self.stream.flush()
        if self.stop is not None:
            tail, hit = self.stop.feed(tail)
            if hit:
                reason = "stop"
            else:
                tail += self.stop.flush()
        self.finish_reason = reason
        return tail

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)


class LogprobCollector:
    """Log-probabilities of generated (and, with echo, prompt) tokens, with the top ``k``."""

    __slots__ = ("k", "entries")

    def __init__(self, k: int) -> None:
        self.k = k
        self.entries: list[Entry] = []

    def add(self, token: int, row: np.ndarray | None) -> None:
        """``row``: log-probabilities over the vocabulary (see :func:`log_softmax`), or None
        where there is none (the first prompt token)."""
        if row is None:
            self.entries.append((token, None, None))
            return
        top: list[tuple[int, float]] = []
        if self.k:
            ids = np.argpartition(row, -self.k)[-self.k:]
            top = [(int(i), float(row[i])) for i in ids[np.argsort(row[ids])[::-1]]]
        self.entries.append((token, float(row[token]), top))

    def completion_logprobs(self, pieces: Sequence[bytes], start: int = 0, offset: int = 0) -> dict:
        return completion_logprobs(self.entries[start:], pieces, offset)

    def chat_logprobs(self, pieces: Sequence[bytes], start: int = 0) -> dict:
        return chat_logprobs(self.entries[start:], pieces)


def completion_logprobs(entries: Sequence[Entry], pieces: Sequence[bytes], offset: int = 0) -> dict:
    """The ``text_completion`` ``logprobs`` object (llama-cpp-python's shape); ``offset`` is
    the text offset of the first entry. As there, each ``top_logprobs`` map also holds the
    chosen token."""
    tokens, offsets, values, tops = [], [], [], []
    for token, value, top in entries:
        text = token_text(pieces, token)
        tokens.append(text)
        offsets.append(offset)
        offset += len(text)
        values.append(value)
        tops.append(None if top is None else _top_map(pieces, token, value, top))
    return {"tokens": tokens, "text_offset": offsets, "token_logprobs": values, "top_logprobs": tops}


def chat_logprobs(entries: Sequence[Entry], pieces: Sequence[bytes]) -> dict:
    """OpenAI's chat ``logprobs``: ``content`` entries with bytes and ``top_logprobs``."""
    content = []
    for token, value, top in entries:
        text = token_text(pieces, token)
        content.append({"token": text, "logprob": value, "bytes": list(text.encode()),
                        "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode())}
                                         for t, v in ((token_text(pieces, i), lp) for i, lp in top or ())]})
    return {"content": content}


def _top_map(pieces, token: int, value: float | None, top: list[tuple[int, float]]) -> dict[str, float]:
    out = {token_text(pieces, i): lp for i, lp in top}
    out[token_text(pieces, token)] = value
    return out


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities from a logits row (a copy: the view changes at the next decode)."""
    shifted = logits.astype(np.float64) - np.max(logits)
    return (shifted - np.log(np.exp(shifted).sum())).astype(np.float32)
