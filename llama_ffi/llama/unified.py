"""``UnifiedLLM``: one ``chat()`` for every model family.

A thin front door over :meth:`Llama.create_chat_completion`: the model's own template
renders the prompt, its family (``chat.families``) splits reasoning from the answer and
reads its native tool-call syntax, and the answer comes back as a small
:class:`ChatResult` (or a stream of :class:`ChatDelta`) instead of OpenAI dicts::

    from llama_ffi import UnifiedLLM

    with UnifiedLLM("models/SmolLM2-135M-Instruct.Q4_1.gguf", n_ctx=2048) as llm:
        print(llm.chat("Name one fruit.", max_tokens=16).content)
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..chat.toolcall_base import ToolCall
from ..errors import ClosedError, ValidationError

__all__ = ["ChatDelta", "ChatResult", "UnifiedLLM"]


@dataclass(frozen=True)
class ChatResult:
    """One answer. ``tool_calls`` carry ``arguments`` as JSON object text."""

    content: str | None
    reasoning: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None
    usage: Mapping[str, int] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class ChatDelta:
    """One streamed step; the last one carries ``finish_reason``."""

    content: str = ""
    reasoning: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None


class UnifiedLLM:
    """A chat model, whatever its family. Owns the :class:`Llama` it builds (``close()``,
    context manager; a leaked one is freed by that Llama's own ``__del__`` with a
    ``ResourceWarning``); one given ready-made stays the caller's to close."""

    _llama = None  # keeps __del__/__repr__ safe when __init__ fails
    _owns = False

    def __init__(self, model: Any = None, **llama_kwargs: Any) -> None:
        """``model``: a GGUF path (None: the default model) or a ready :class:`Llama`;
        ``llama_kwargs`` go to ``Llama(...)`` (``n_ctx``, ``n_gpu_layers``, ``chat_format`` ...)."""
        from .llama import Llama

        if isinstance(model, Llama):
            if llama_kwargs:
                raise ValidationError("give Llama options or a ready Llama, not both", param="model")
            self._llama, self._owns = model, False
        else:
            path = os.fspath(model) if model is not None else None
            llama_kwargs.setdefault("verbose", False)
            self._llama, self._owns = Llama(path, **llama_kwargs), True
        self._family = None

    @classmethod
    def from_pretrained(cls, repo_id: str, filename: str | None = None, **llama_kwargs: Any) -> UnifiedLLM:
        """Download a GGUF from the Hugging Face hub (see ``Llama.from_pretrained``) and load it."""
        from .llama import Llama

        llama_kwargs.setdefault("verbose", False)
        unified = cls(Llama.from_pretrained(repo_id, filename, **llama_kwargs))
        unified._owns = True
        return unified

    @property
    def llama(self):
        """The underlying :class:`Llama` (completion, embeddings, tokenizer)."""
        return self._require()

    @property
    def family(self):
        """The :class:`~llama_ffi.chat.families.ModelFamily` read from the template and metadata."""
        if self._family is None:
            from ..chat.families import detect_family

            model = self._require().model
            self._family = detect_family(model.metadata, model.chat_template())
        return self._family

    def chat(self, messages: str | Sequence[Mapping[str, Any]], *, tools: Sequence[Mapping[str, Any]] | None = None,
             tool_choice: Any = "auto", response_format: Mapping[str, Any] | None = None,
             enable_thinking: bool | None = None, stream: bool = False,
             **sampling: Any) -> ChatResult | Iterator[ChatDelta]:
        """Answer ``messages`` (a string is one user message).

        ``tools``/``tool_choice``: OpenAI tools; ``"required"`` or a named tool forces a
        call. ``response_format``: ``{"type": "json_object"}`` or ``{"type":
        "json_schema", "json_schema": {"name": ..., "schema": ...}}`` (enforced by a
        grammar). ``enable_thinking`` switches reasoning on or off where the family
        can. ``sampling``: ``create_chat_completion``'s options (``max_tokens``,
        ``temperature``, ``seed``, ``stop`` ...).
        """
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        options: dict[str, Any] = dict(sampling)
        if tools:
            options.update(tools=list(tools), tool_choice=tool_choice)
        if response_format is not None:
            options["response_format"] = response_format
        if enable_thinking is not None:
            options["enable_thinking"] = enable_thinking
        out = self._require().create_chat_completion(list(messages), stream=stream, **options)
        return _deltas(out) if stream else _result(out)

    def close(self) -> None:
        llama, self._llama = self._llama, None
        if llama is not None and self._owns:
            llama.close()

    def __enter__(self) -> UnifiedLLM:  # noqa: PYI034 - subclasses are not expected
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._llama is None:
            return "<UnifiedLLM (closed)>"
        family = self._family.name if self._family is not None else "?"
        return f"<UnifiedLLM family={family} llama={self._llama!r}>"

    def _require(self):
        if self._llama is None:
            raise ClosedError("UnifiedLLM is closed")
        return self._llama


def _calls(items: Sequence[Mapping[str, Any]] | None) -> tuple[ToolCall, ...]:
    return tuple(ToolCall(c["function"]["name"], c["function"]["arguments"], c.get("id") or "")
                 for c in items or ())


def _result(out: Mapping[str, Any]) -> ChatResult:
    choice = out["choices"][0]
    message = choice["message"]
    return ChatResult(content=message.get("content"), reasoning=message.get("reasoning_content"),
                      tool_calls=_calls(message.get("tool_calls")), finish_reason=choice["finish_reason"],
                      usage=dict(out.get("usage") or {}), raw=out)


def _deltas(chunks: Iterator[Mapping[str, Any]]) -> Iterator[ChatDelta]:
    try:
        for chunk in chunks:
            choice = chunk["choices"][0]
            delta = choice["delta"]
            step = ChatDelta(content=delta.get("content") or "", reasoning=delta.get("reasoning_content") or "",
                             tool_calls=_calls(delta.get("tool_calls")), finish_reason=choice["finish_reason"])
            if step != ChatDelta():
                yield step
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
