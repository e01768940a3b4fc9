"""asyncio front-ends: the blocking work runs in a worker thread, never on the event loop.

Works inside any running loop (Jupyter included): nothing here starts or nests a loop.
Calls from several tasks or threads on one ``Llama`` are serialised by the session's lock,
so they queue rather than interleave. A streaming call returns an async iterator fed by
the worker through the loop; leaving it early (``break``, task cancellation) sets a cancel
token so the worker stops within a token, and the ``Llama`` stays usable.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

__all__ = ["create_chat_completion_async", "create_completion_async", "create_embedding_async"]

_DONE = object()


async def create_completion_async(llama, prompt, **options: Any):
    """``await`` a completion; with ``stream=True`` an async iterator of chunks."""
    if options.get("stream"):
        return _stream_in_thread(lambda cancel: llama.create_completion(prompt, cancel=cancel, **options))
    return await _call_in_thread(lambda cancel: llama.create_completion(prompt, cancel=cancel, **options))


async def create_chat_completion_async(llama, messages, **options: Any):
    if options.get("stream"):
        return _stream_in_thread(lambda cancel: llama.create_chat_completion(messages, cancel=cancel, **options))
    return await _call_in_thread(lambda cancel: llama.create_chat_completion(messages, cancel=cancel, **options))


async def create_embedding_async(llama, input, **options: Any):  # noqa: A002
    return await asyncio.to_thread(llama.create_embedding, input, **options)


async def _call_in_thread(call: Callable[[threading.Event], Any]) -> Any:
    """Run ``call(cancel)`` in a thread; if this task is cancelled, cancel the generation."""
    cancel = threading.Event()
    future = asyncio.get_running_loop().run_in_executor(None, call, cancel)
    # If this task is cancelled the worker ends with CancelledError nobody awaits: read it
    # here so asyncio does not log "exception was never retrieved".
    future.add_done_callback(lambda f: f.cancelled() or f.exception())
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        cancel.set()
        raise


def _stream_in_thread(start: Callable[[threading.Event], Iterator[dict]]) -> AsyncIterator[dict]:
    return _AsyncStream(start)


class _AsyncStream:
    """An async iterator over a blocking iterator consumed by a worker thread."""

    def __init__(self, start: Callable[[threading.Event], Iterator[dict]]) -> None:
        self._start = start
        self._cancel = threading.Event()
        self._queue: asyncio.Queue | None = None
        self._thread: threading.Thread | None = None

    def __aiter__(self) -> "_AsyncStream":
        return self

    async def __anext__(self) -> dict:
        if self._queue is None:
            self._begin()
        try:
            item = await self._queue.get()
        except asyncio.CancelledError:
            self._cancel.set()
            raise
        if item is _DONE:
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item

    def _begin(self) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        self._queue = queue
        cancel = self._cancel

        def put(item) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop closed: nobody is listening any more
                cancel.set()

        def work() -> None:
            iterator = None
            try:
                iterator = self._start(cancel)
                for item in iterator:
                    if cancel.is_set():
                        break
                    put(item)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                if not cancel.is_set():
                    put(exc)
            finally:
                close = getattr(iterator, "close", None)
                if close is not None:
                    close()
                put(_DONE)

        self._thread = threading.Thread(target=work, name="llama-ffi-stream", daemon=True)
        self._thread.start()

    async def __aenter__(self) -> "_AsyncStream":
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the worker (it finishes its current token) and wait for it."""
        self._cancel.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    def __del__(self) -> None:
        self._cancel.set()
