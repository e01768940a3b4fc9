"""Separate a model's reasoning from its answer, whole or while streaming.

Tag families wrap reasoning in a marker pair (``<think>``/``</think>``,
``[THINK]``/``[/THINK]``...), only at the very start of the answer; some
templates open the block in the prompt, so the answer starts inside it
(``start_in_reasoning``; see ``prompt_opens_reasoning``). GPT-OSS uses
harmony channels instead (``reasoning_harmony``).

Normalisation, identical for ``split_reasoning`` and the streaming splitter:
reasoning is stripped and ``None`` when empty; content after a reasoning
block loses its leading whitespace; an answer without reasoning is returned
unchanged. A reasoning block that never closes is all reasoning.
"""

from __future__ import annotations

from .families import ModelFamily
from .markers import partial_marker_len
from .reasoning_harmony import HarmonySplitter, split_harmony

__all__ = ["ReasoningStreamSplitter", "prompt_opens_reasoning", "split_reasoning"]


def prompt_opens_reasoning(prompt: str, family: ModelFamily) -> bool:
    """True when the rendered prompt ends inside an open reasoning block
    (QwQ, Qwen3.5, R1 distills, GLM-4.7 put ``<think>`` in the prompt)."""
    if family.reasoning_style != "tags" or not family.reasoning_start or not family.reasoning_end:
        return False
    return prompt.rfind(family.reasoning_start) > prompt.rfind(family.reasoning_end)


def split_reasoning(
    text: str, family: ModelFamily, *, start_in_reasoning: bool = False
) -> tuple[str | None, str]:
    """Split a complete answer into ``(reasoning_content or None, content)``."""
    if family.reasoning_style == "harmony":
        return split_harmony(text)
    start, end = family.reasoning_start, family.reasoning_end
    if not start or not end:
        return None, text
    head = text.lstrip()
    if head.startswith(start):
        body = head[len(start) :]
    elif start_in_reasoning:
        body = head
    else:
        return None, text
    reasoning, found, content = body.partition(end)
    return (reasoning.strip() or None), (content.lstrip() if found else "")


class ReasoningStreamSplitter:
    """Feed text deltas, get ``(reasoning_delta, content_delta)`` pairs.

    Text that may be the start of a marker is held back until the next delta
    decides it, so no piece of a marker ever reaches either side. Call
    ``finish()`` once at the end to flush what was held.
    """

    def __init__(self, family: ModelFamily, *, start_in_reasoning: bool = False) -> None:
        self.family = family
        if family.reasoning_style == "harmony":
            self._impl: _TagSplitter | HarmonySplitter = HarmonySplitter()
        else:
            self._impl = _TagSplitter(family.reasoning_start, family.reasoning_end, start_in_reasoning)

    def feed(self, delta: str) -> tuple[str, str]:
        return self._impl.feed(delta)

    def finish(self) -> tuple[str, str]:
        return self._impl.finish()

    def __repr__(self) -> str:
        return f"<ReasoningStreamSplitter {self.family.name}>"


class _TagSplitter:
    """States: "start" (looking for the opening marker), "reasoning", "content"."""

    def __init__(self, start: str | None, end: str | None, start_in_reasoning: bool) -> None:
        self._start, self._end = start or "", end or ""
        self._in_prompt = start_in_reasoning
        self._state = "start" if start and end else "content"
        self._buf = ""  # held text of the current state
        self._strip_lead = False  # drop whitespace at the start of the current side
        self._finished = False

    def feed(self, delta: str) -> tuple[str, str]:
        if self._finished:
            raise RuntimeError("ReasoningStreamSplitter.feed() after finish()")
        self._buf += delta
        reasoning = content = ""
        if self._state == "start":
            self._decide_start(final=False)
        if self._state == "reasoning":
            reasoning = self._reasoning_step()
        if self._state == "content":
            content = self._content_step()
        return reasoning, content

    def finish(self) -> tuple[str, str]:
        if self._finished:
            return "", ""
        reasoning = content = ""
        if self._state == "start":
            self._decide_start(final=True)
        if self._state == "reasoning":
            reasoning = self._reasoning_step()
            if self._state == "reasoning":  # never closed: the held tail is reasoning too
                reasoning += self._lead(self._buf.rstrip())
                self._buf = ""
        if self._state == "content":
            content = self._content_step()
        self._finished = True
        return reasoning, content

    def _decide_start(self, *, final: bool) -> None:
        head = self._buf.lstrip()
        if head.startswith(self._start):
            self._enter("reasoning", head[len(self._start) :])
        elif self._start.startswith(head) and not final:
            return  # only whitespace or part of the opening marker so far
        elif self._in_prompt:
            self._enter("reasoning", head)
        else:
            self._state = "content"  # keep the buffer as is: no reasoning block

    def _enter(self, state: str, rest: str) -> None:
        self._state, self._buf, self._strip_lead = state, rest, True

    def _reasoning_step(self) -> str:
        before, found, after = self._buf.partition(self._end)
        if found:
            out = self._lead(before.rstrip())
            self._enter("content", after)
            return out
        # Hold a possible partial end marker and trailing whitespace (stripped if the block ends).
        safe = self._buf[: len(self._buf) - partial_marker_len(self._buf, (self._end,))]
        emit = safe.rstrip()
        self._buf = self._buf[len(emit) :]
        return self._lead(emit)

    def _content_step(self) -> str:
        out = self._lead(self._buf)
        self._buf = ""
        return out

    def _lead(self, text: str) -> str:
        """Apply the pending leading-whitespace strip of the current side."""
        if self._strip_lead and text:
            text = text.lstrip()
            self._strip_lead = not text
        return text
