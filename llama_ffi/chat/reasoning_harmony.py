"""GPT-OSS "harmony" output: messages on channels instead of think tags.

After the prompt's ``<|start|>assistant`` the model writes messages such as::

    <|channel|>analysis<|message|>thinking...<|end|>
    <|start|>assistant<|channel|>final<|message|>answer<|return|>
    <|start|>assistant<|channel|>commentary to=functions.f <|constrain|>json<|message|>{..}<|call|>

``analysis`` bodies are reasoning; ``final`` and plain ``commentary``
(preambles) bodies are content. A message with a recipient (``to=``) is a
tool call: it goes to content verbatim, closed with ``<|call|>``, for the
tool-call parser. Messages on the same side are joined with a newline.
Special tokens must be detokenized as text for any of this to be visible.
"""

from __future__ import annotations

import re

from .markers import find_first, partial_marker_len

__all__ = ["HarmonySplitter", "split_harmony"]

_MESSAGE = "<|message|>"
_OPENERS = ("<|start|>", "<|channel|>", "to=")
_TERMINATORS = ("<|end|>", "<|call|>", "<|return|>", "<|start|>")
_CHANNEL = re.compile(r"<\|channel\|>\s*(\w+)")


def _kind(header: str) -> str:
    if "to=" in header:
        return "tool"
    channel = _CHANNEL.search(header)
    return "reasoning" if channel and channel.group(1) == "analysis" else "content"


def _header_state(head: str, *, final: bool) -> str:
    """"header" (a real header), "wait" (could become one) or "text" (plain text)."""
    head = head.lstrip()
    if any(head.startswith(opener) for opener in _OPENERS):
        return "header"
    if any(opener.startswith(head) for opener in _OPENERS):
        return "drop" if final else "wait"
    return "text"


class _Sides:
    """Joins messages per side with a newline, as both splitters must agree."""

    def __init__(self) -> None:
        self.seen = {"reasoning": False, "content": False}

    def opening(self, kind: str) -> str:
        side = "content" if kind == "tool" else kind
        return "\n" if kind != "tool" and self.seen[side] else ""

    def note(self, kind: str, text: str) -> None:
        if text:
            self.seen["content" if kind == "tool" else kind] = True


def split_harmony(text: str) -> tuple[str | None, str]:
    """Non-streaming split of a whole harmony answer."""
    out = {"reasoning": "", "content": ""}
    sides = _Sides()

    def add(kind: str, piece: str) -> None:
        out["content" if kind == "tool" else kind] += piece
        sides.note(kind, piece)

    pos = 0
    while pos < len(text):
        idx = text.find(_MESSAGE, pos)
        head = text[pos:idx] if idx != -1 else text[pos:]
        state = _header_state(head, final=idx == -1)
        if state == "drop" or (state == "header" and idx == -1):
            break  # an unfinished header carries nothing visible
        if state == "header":
            kind, body_at = _kind(head), idx + len(_MESSAGE)
            add(kind, sides.opening(kind) + (head + _MESSAGE if kind == "tool" else ""))
        else:
            kind, body_at = "content", pos
        end, term = find_first(text, _TERMINATORS, body_at)
        end = len(text) if end == -1 else end
        add(kind, text[body_at:end] + ("<|call|>" if kind == "tool" else ""))
        pos = end if term in ("<|start|>", "") else end + len(term)
    return (out["reasoning"] or None), out["content"]


class HarmonySplitter:
    """Streaming counterpart of ``split_harmony``; same results for any split."""

    def __init__(self) -> None:
        self._buf = ""
        self._kind: str | None = None  # None while reading a header
        self._sides = _Sides()
        self._finished = False

    def feed(self, delta: str) -> tuple[str, str]:
        if self._finished:
            raise RuntimeError("ReasoningStreamSplitter.feed() after finish()")
        self._buf += delta
        return self._run(final=False)

    def finish(self) -> tuple[str, str]:
        if self._finished:
            return "", ""
        out = self._run(final=True)
        self._finished = True
        return out

    def _run(self, *, final: bool) -> tuple[str, str]:
        out = {"reasoning": "", "content": ""}
        while True:
            if self._kind is None and not self._read_header(out, final):
                break
            if not self._read_body(out, final):
                break
        return out["reasoning"], out["content"]

    def _emit(self, out: dict[str, str], kind: str, piece: str) -> None:
        out["content" if kind == "tool" else kind] += piece
        self._sides.note(kind, piece)

    def _read_header(self, out: dict[str, str], final: bool) -> bool:
        idx = self._buf.find(_MESSAGE)
        head = self._buf[:idx] if idx != -1 else self._buf
        state = _header_state(head, final=final and idx == -1)
        if state == "text":
            self._kind = "content"
            return True
        if state in ("wait", "drop") or idx == -1:
            if final:
                self._buf = ""
            return False
        self._kind = _kind(head)
        opening = self._sides.opening(self._kind)
        self._emit(out, self._kind, opening + (head + _MESSAGE if self._kind == "tool" else ""))
        self._buf = self._buf[idx + len(_MESSAGE) :]
        return True

    def _read_body(self, out: dict[str, str], final: bool) -> bool:
        kind = self._kind or "content"
        end, term = find_first(self._buf, _TERMINATORS)
        if end == -1 and not final:
            keep = partial_marker_len(self._buf, _TERMINATORS)
            self._emit(out, kind, self._buf[: len(self._buf) - keep])
            self._buf = self._buf[len(self._buf) - keep :]
            return False
        end = len(self._buf) if end == -1 else end
        self._emit(out, kind, self._buf[:end] + ("<|call|>" if kind == "tool" else ""))
        self._buf = self._buf[end if term in ("<|start|>", "") else end + len(term) :]
        self._kind = None
        return bool(self._buf)
