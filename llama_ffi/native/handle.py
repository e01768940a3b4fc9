"""Ownership of C handles: one Python owner each, ``close()``, context manager, safe ``__del__``.

A parent (a model) tracks its children (contexts, adapters) and closes them first, so a
context can never outlive the weights it points into. After interpreter shutdown has
begun nothing is freed: leaking at exit is harmless, freeing in the wrong order is not.
"""

from __future__ import annotations

import threading
import warnings
import weakref

from ..errors import ClosedError
from ._lib import is_shutting_down


class Handle:
    """Base for objects that own one C pointer.

    Subclasses set ``self._ptr`` in ``__init__`` and implement ``_free(ptr)``.
    The class attribute keeps ``__del__`` safe when ``__init__`` failed early.
    """

    _ptr = None
    _closed = True
    _kind = "handle"

    def _adopt(self, ptr, parent: "Handle | None" = None) -> None:
        self._ptr = ptr
        self._closed = False
        self._children: weakref.WeakSet[Handle] = weakref.WeakSet()
        self._close_lock = threading.Lock()
        if parent is not None:
            parent._children.add(self)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def ptr(self):
        """The C pointer; raises :class:`ClosedError` after ``close()``."""
        if self._closed:
            raise ClosedError(f"{self._kind} is closed")
        return self._ptr

    def close(self) -> None:
        """Free the C object (children first). Safe to call more than once."""
        if self._closed:
            return
        with self._close_lock:
            if self._closed:
                return
            for child in list(self._children):
                child.close()
            ptr, self._ptr, self._closed = self._ptr, None, True
            if not is_shutting_down():
                self._free(ptr)

    def _free(self, ptr) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self) -> None:
        if self._closed or is_shutting_down():
            return
        try:
            warnings.warn(f"unclosed {self!r}; call close() or use a with block", ResourceWarning,
                          stacklevel=2, source=self)
            self.close()
        except Exception:  # noqa: BLE001 - __del__ must never raise
            pass

    def __repr__(self) -> str:
        try:
            state = "closed" if self._closed else self._describe()
        except Exception:  # noqa: BLE001 - a repr never raises
            state = "?"
        return f"<{type(self).__name__} {state}>"

    def _describe(self) -> str:
        return "open"
