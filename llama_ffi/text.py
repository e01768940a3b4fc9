"""Bytes to text, in one place: token pieces stay bytes until an incremental decoder turns
them into text, so a character split across tokens is never broken in a stream."""

from __future__ import annotations

import codecs


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


def decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")
