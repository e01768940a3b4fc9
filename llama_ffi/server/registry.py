"""The served models: one :class:`~llama_ffi.engine.Engine` each, chosen by request ``model``.

Embeddings and reranking go through a separate ``Llama(embedding=True)`` per model,
created on first use and serialized by a lock (one batch at a time, in a worker thread).
The registry also tracks every engine request in flight, so shutdown can cancel them
and each open stream ends cleanly rather than being cut.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import ClosedError, LlamaError
from .config import ModelSettings

__all__ = ["ModelEntry", "ModelNotFound", "Registry"]


class ModelNotFound(LlamaError, LookupError):
    def __init__(self, name: str, known: Iterable[str]) -> None:
        super().__init__(f"The model {name!r} does not exist; this server has: {', '.join(known)}")
        self.name = name


class ModelEntry:
    """One model: its engine, its embedding Llama (lazily), its requests in flight."""

    def __init__(self, settings: ModelSettings, engine_factory: Callable | None = None) -> None:
        from ..engine import Engine

        self.settings = settings
        self.name = settings.name
        self.created = int(time.time())
        self.engine = (engine_factory or Engine)(settings.model, settings.engine_config())
        self.model = self.engine.model
        self.vocab = self.model.vocab
        self.active: set = set()  # engine Requests in flight
        self.lora = None  # its LoRA adapters and their scales (native_routes: /lora-adapters)
        self._embedder = None
        self._embed_lock = threading.Lock()
        self._rate = (time.monotonic(), 0)  # (when, generated tokens) at the last /metrics

    # --- embeddings -------------------------------------------------------------------------
    async def embedding_call(self, method: str, *args: Any, **kwargs: Any):
        """Run ``Llama.<method>`` on the embedding Llama in a worker thread, one at a time."""
        return await asyncio.to_thread(self._embedding_call, method, args, kwargs)

    def _embedding_call(self, method: str, args, kwargs):
        with self._embed_lock:
            if self._embedder is None:
                self._embedder = self._load_embedder(self.settings.pooling_type)
                if self._embedder.context.pooling_type == 0:  # none: OpenAI wants one vector per input
                    self._embedder.close()
                    self._embedder = self._load_embedder("mean")
            return getattr(self._embedder, method)(*args, **kwargs)

    def _load_embedder(self, pooling: str | None):
        from ..llama import Llama

        s = self.settings
        n = min(s.n_ctx, 8192)
        extra = {"pooling_type": pooling} if pooling else {}
        if s.n_threads:
            extra["n_threads"] = s.n_threads
        if s.n_gpu_layers is not None:
            extra["n_gpu_layers"] = s.n_gpu_layers
        return Llama(s.model, embedding=True, verbose=False, n_ctx=n, n_batch=n, n_ubatch=n, **extra)

    # --- monitoring -------------------------------------------------------------------------
    def tokens_per_second(self, generated: int) -> float:
        """Generated tokens per second since the previous call (one /metrics scrape to the next)."""
        now = time.monotonic()
        then, before = self._rate
        self._rate = (now, generated)
        return (generated - before) / (now - then) if now > then else 0.0

    def cancel_all(self) -> None:
        for request in list(self.active):
            self.engine.cancel(request)

    def close(self) -> None:
        self.cancel_all()
        self.engine.close()
        with self._embed_lock:
            if self._embedder is not None:
                self._embedder.close()
                self._embedder = None


class Registry:
    def __init__(self, entries: list[ModelEntry]) -> None:
        self.entries = {e.name: e for e in entries}
        self.default = entries[0].name if entries else None
        self.closing = False

    @classmethod
    def load(cls, models: list[ModelSettings], engine_factory: Callable | None = None) -> Registry:
        entries: list[ModelEntry] = []
        try:
            for settings in models:
                entries.append(ModelEntry(settings, engine_factory))
        except BaseException:
            for entry in entries:
                entry.close()
            raise
        return cls(entries)

    def get(self, name: str | None) -> ModelEntry:
        """The entry named ``name`` (its alias, file name or path); None: the first model."""
        if self.closing:
            raise ClosedError("the server is shutting down")
        if name is None:
            return self.entries[self.default]
        entry = self.entries.get(name)
        if entry is None:
            entry = next((e for e in self.entries.values() if e.settings.model == name), None)
        if entry is None:
            raise ModelNotFound(name, self.entries)
        return entry

    def begin_shutdown(self) -> None:
        """Refuse new requests and cancel those in flight (their streams end with an error event)."""
        self.closing = True
        for entry in self.entries.values():
            entry.cancel_all()

    def close(self) -> None:
        self.closing = True
        for entry in self.entries.values():
            entry.close()
