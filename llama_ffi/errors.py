"""Exceptions raised by llama_ffi.

Every exception the package raises on purpose derives from ``LlamaError``.
Where a builtin exception has the same meaning, the class inherits it too, so
``except ValueError`` and ``except OSError`` keep working in existing code::

    LlamaError
    ├── LibraryNotFoundError (OSError)      no libllama could be loaded
    ├── LibraryVersionError                 libllama does not match the declarations
    ├── ModelLoadError (OSError)            a model file could not be loaded
    ├── RpcError (ConnectionError)          an RPC worker is unreachable or not an RPC server
    ├── ClosedError (RuntimeError)          an object was used after close()
    ├── ValidationError (ValueError)        bad input, refused before C sees it
    │   ├── ContextOverflowError            prompt does not fit the context window
    │   ├── GrammarError                    GBNF or JSON Schema that cannot be compiled
    │   └── TemplateError                   a chat template raised or misbehaved
    ├── DecodeError                         llama_decode / llama_encode failed
    │   └── KVCacheFullError                no KV cell free: recoverable, retry later
    ├── StateError                          a saved state could not be restored
    ├── OverloadedError                     an engine's queue is full: retry after a while
    └── GenerationError                     generation failed or was cancelled
        └── CancelledError                  a cancel token or abort hook stopped it
"""

from __future__ import annotations

__all__ = [
    "CancelledError",
    "ClosedError",
    "ContextOverflowError",
    "DecodeError",
    "GenerationError",
    "GrammarError",
    "KVCacheFullError",
    "LibraryNotFoundError",
    "LibraryVersionError",
    "LlamaError",
    "ModelLoadError",
    "OverloadedError",
    "RpcError",
    "StateError",
    "TemplateError",
    "ValidationError",
]


class LlamaError(Exception):
    """Root of every error llama_ffi raises on purpose."""


class LibraryNotFoundError(LlamaError, OSError):
    """No libllama could be loaded; the message lists every place tried."""

    def __init__(self, message: str, tried: list[str] | None = None) -> None:
        super().__init__(message)
        self.tried = list(tried or [])


class LibraryVersionError(LlamaError):
    """The loaded libllama does not match the generated declarations."""


class ModelLoadError(LlamaError, OSError):
    """A model (or adapter) file could not be loaded."""


class RpcError(LlamaError, ConnectionError):
    """An RPC worker (``llama-ffi rpc-server``) could not be reached or did not answer as one.

    Raised in Python before llama.cpp connects: its RPC client aborts the process instead."""

    def __init__(self, message: str, endpoint: str | None = None) -> None:
        super().__init__(message)
        self.endpoint = endpoint


class ClosedError(LlamaError, RuntimeError):
    """A handle was used after ``close()``."""


class ValidationError(LlamaError, ValueError):
    """Input refused in Python before the C library could see it."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class ContextOverflowError(ValidationError):
    """The prompt (plus requested tokens) does not fit in the context window."""

    def __init__(self, message: str, n_tokens: int = 0, n_ctx: int = 0, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.n_tokens = n_tokens
        self.n_ctx = n_ctx


class GrammarError(ValidationError):
    """A GBNF grammar or JSON Schema that cannot be compiled.

    ``line`` and ``column`` (1-based) point at the offending place when known.
    """

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        where = f" (line {line}, column {column})" if line is not None else ""
        super().__init__(message + where)
        self.line = line
        self.column = column


class TemplateError(ValidationError):
    """A chat template raised, ran too long, or produced too much output."""


class DecodeError(LlamaError):
    """``llama_decode`` / ``llama_encode`` returned a failure status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(f"{message} (status {status})")
        self.status = status


class KVCacheFullError(DecodeError):
    """No free KV-cache slot for the batch. Recoverable: free sequences and retry."""


class StateError(LlamaError):
    """A saved context state could not be restored (truncated, or another model's)."""


class OverloadedError(LlamaError):
    """An engine's queue is full; ``retry_after`` seconds is a reasonable wait."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class GenerationError(LlamaError):
    """Generation failed after it started."""


class CancelledError(GenerationError):
    """Generation was stopped by a cancel token or the abort hook."""
