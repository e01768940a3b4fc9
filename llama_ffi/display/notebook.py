"""Jupyter helpers: show completions nicely and stream text live into a cell.

    from llama_ffi.display import show, display_stream, display_stream_async
    show(llm.create_chat_completion(messages))               # answer + finish reason + usage
    display_stream(llm.create_chat_completion(messages, stream=True))
    await display_stream_async(await llm.create_chat_completion_async(messages, stream=True))

``display_stream`` accepts any iterator of text pieces, completion chunks or chat chunks.
In a notebook it updates one output area in place (an IPython display handle); elsewhere
it prints the pieces as they come. The async variant consumes an async iterator, so the
kernel's event loop keeps running (the generation itself runs in a worker thread).
``Model`` and ``Llama`` render as small tables on their own (``_repr_html_``).
"""

from __future__ import annotations

import html
import sys
import time
from collections.abc import AsyncIterable, Iterable
from typing import Any, TextIO

__all__ = ["CompletionView", "display_stream", "display_stream_async", "llama_html", "show"]

_MIN_UPDATE_S = 0.05  # redraw at most 20 times a second: each redraw sends the whole text


def chunk_text(item: Any) -> str:
    """The text a stream item adds: a str, a completion chunk, or a chat chunk's delta."""
    if isinstance(item, str):
        return item
    if isinstance(item, (bytes, bytearray)):
        return bytes(item).decode("utf-8", errors="replace")
    try:
        choice = item["choices"][0]
    except (KeyError, IndexError, TypeError):
        return ""
    if "delta" in choice:
        return choice["delta"].get("content") or ""
    if "message" in choice:
        return choice["message"].get("content") or ""
    return choice.get("text") or ""


class CompletionView:
    """A completion or chat completion dict that renders as its text in Jupyter."""

    def __init__(self, result: dict) -> None:
        self.result = result

    @property
    def text(self) -> str:
        return chunk_text(self.result)

    def _facts(self) -> str:
        choice = (self.result.get("choices") or [{}])[0]
        usage = self.result.get("usage") or {}
        facts = [f"finish: {choice.get('finish_reason')}"]
        if usage:
            facts.append(f"tokens: {usage.get('prompt_tokens')} prompt + {usage.get('completion_tokens')} completion")
        calls = (choice.get("message") or {}).get("tool_calls")
        if calls:
            facts.append("tool calls: " + ", ".join(c["function"]["name"] for c in calls))
        return " · ".join(facts)

    def _repr_html_(self) -> str:
        reasoning = ((self.result.get("choices") or [{}])[0].get("message") or {}).get("reasoning_content")
        think = (f"<details><summary>reasoning</summary><pre style='white-space:pre-wrap'>"
                 f"{html.escape(reasoning)}</pre></details>") if reasoning else ""
        return (f"{think}<div style='white-space:pre-wrap'>{html.escape(self.text)}</div>"
                f"<div style='opacity:.6;font-size:smaller'>{html.escape(self._facts())}</div>")

    def __repr__(self) -> str:
        return f"{self.text}\n[{self._facts()}]"


def show(result: dict) -> CompletionView:
    """Wrap a completion so a notebook cell displays it as text (the last expression)."""
    return CompletionView(result)


class _Live:
    """One output area updated in place under IPython, plain writes elsewhere."""

    def __init__(self, out: TextIO | None) -> None:
        self.parts: list[str] = []
        self.handle = None
        self.out = out
        self.last = 0.0
        if out is None and _in_ipython_kernel():
            from IPython.display import HTML, display

            self._html = HTML
            self.handle = display(HTML(""), display_id=True)

    def add(self, text: str) -> None:
        if not text:
            return
        self.parts.append(text)
        if self.handle is None:
            stream = self.out or sys.stdout
            stream.write(text)
            stream.flush()
        elif time.monotonic() - self.last >= _MIN_UPDATE_S:
            self.redraw()

    def redraw(self) -> None:
        self.last = time.monotonic()
        self.handle.update(self._html(f"<div style='white-space:pre-wrap'>{html.escape(''.join(self.parts))}</div>"))

    def finish(self) -> str:
        if self.handle is not None:
            self.redraw()
        else:
            stream = self.out or sys.stdout
            stream.write("\n")
            stream.flush()
        return "".join(self.parts)


def display_stream(items: Iterable[Any], *, out: TextIO | None = None) -> str:
    """Show streamed text as it arrives; return all of it. ``out`` forces plain writes there."""
    live = _Live(out)
    iterator = iter(items)
    try:
        for item in iterator:
            live.add(chunk_text(item))
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:  # stop the generation if the cell is interrupted
            close()
    return live.finish()


async def display_stream_async(items: AsyncIterable[Any], *, out: TextIO | None = None) -> str:
    """``display_stream`` for an async iterator (``create_*_async(..., stream=True)``)."""
    live = _Live(out)
    try:
        async for item in items:
            live.add(chunk_text(item))
    finally:
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()
    return live.finish()


def llama_html(llama) -> str:
    """The ``Llama._repr_html_`` table: the model's facts plus the context's."""
    try:
        if llama.model is None or llama.model.closed:
            return f"<code>{html.escape(repr(llama))}</code>"
        facts = dict(llama.model.summary())
        cp = llama.context_params
        facts["context"] = f"{llama.n_ctx():,} tokens (batch {cp.n_batch})"
        facts["mode"] = "embeddings" if cp.embeddings else "generation"
        rows = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
                       f"<td style='text-align:left'>{html.escape(str(v))}</td></tr>" for k, v in facts.items())
        return f"<table><caption style='text-align:left'><b>llama_ffi.Llama</b></caption>{rows}</table>"
    except Exception:  # noqa: BLE001 - a display hook must not raise
        return f"<code>{html.escape(repr(llama))}</code>"


def _in_ipython_kernel() -> bool:
    """True inside a Jupyter kernel (a terminal IPython has no rich display to update)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # noqa: BLE001
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None
