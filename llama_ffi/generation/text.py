"""Bytes to text, in one place: token pieces stay bytes until an incremental decoder turns
them into text, so a character split across tokens is never broken in a stream. Stop
strings are found here too, across token boundaries (:class:`StopMatcher`)."""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class TextStream:
    """Feed token pieces; get the text that is complete so far."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, piece: bytes) -> str:
        return self._decoder.decode(piece)

    def flush(self) -> str:
        """Whatever is left at the end (an incomplete character becomes U+FFFD)."""
        return self._decoder.decode(b"", final=True)

    @property
    def pending(self) -> bytes:
        """Bytes held back because they end inside a character."""
        return self._decoder.getstate()[0]


def token_text(pieces: Sequence[bytes], token: int) -> str:
    """One token's text for logprobs, where a token stands alone: bytes of a character split
    across tokens are dropped (as llama-cpp-python does) rather than shown as U+FFFD."""
    return pieces[token].decode("utf-8", errors="ignore")


class StopMatcher:
    """Find the first stop string in streamed text.

    ``feed(text)`` returns ``(safe_text, hit)``: text that can no longer be part of a stop
    string is released; a suffix that is a prefix of some stop string is held back. Work
    per call is bounded by the longest stop string, never by the length of the output.
    """

    __slots__ = ("stops", "_prefixes", "_longest", "_held")

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(stops)
        self._prefixes = frozenset(s[:i] for s in self.stops for i in range(1, len(s)))
        self._longest = max(map(len, self.stops))
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        buf = self._held + text if self._held else text
        cut = -1
        for stop in self.stops:
            at = buf.find(stop)
            if at != -1 and (cut == -1 or at < cut):
                cut = at
        if cut != -1:
            self._held = ""
            return buf[:cut], True
        keep = 0
        for size in range(min(len(buf), self._longest - 1), 0, -1):
            if buf[-size:] in self._prefixes:
                keep = size
                break
        self._held = buf[len(buf) - keep:] if keep else ""
        return (buf[: len(buf) - keep] if keep else buf), False

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held

