"""Routes llama.cpp's and ggml's log output to the ``llama_ffi`` logger.

Installed when the library is first loaded, never at import. The logger carries a
``NullHandler``, so nothing is printed unless the application configures logging
(``logging.basicConfig(level=logging.INFO)``) or asks for ``verbose=True``.
"""

from __future__ import annotations

import logging

from ._cffi_llama import ffi

logger = logging.getLogger("llama_ffi")
logger.addHandler(logging.NullHandler())

# ggml_log_level: NONE=0, DEBUG=1, INFO=2, WARN=3, ERROR=4, CONT=5 (continues the last line)
_LEVELS = {0: logging.INFO, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
_CONT = 5
_pending: list[str] = []
_pending_level = logging.INFO
_callback = None  # kept alive for as long as the library may call it


def _emit(level: int, text: str) -> None:
    """Buffer fragments until a newline: llama.cpp often logs a line in pieces."""
    global _pending_level
    if level != _CONT:
        _pending_level = _LEVELS.get(level, logging.INFO)
    _pending.append(text)
    if not text.endswith("\n"):
        return
    line = "".join(_pending).rstrip("\n")
    _pending.clear()
    if line and logger.isEnabledFor(_pending_level):
        logger.log(_pending_level, "%s", line)


def _on_log(level, text, _user_data):
    # Never let an exception cross into C.
    try:
        _emit(int(level), ffi.string(text).decode("utf-8", errors="replace"))
    except Exception:  # noqa: BLE001 - a logging failure must not take the process down
        pass


def install(lib) -> None:
    global _callback
    if _callback is None:
        _callback = ffi.callback("ggml_log_callback", _on_log)
    lib.llama_log_set(_callback, ffi.NULL)
    lib.ggml_log_set(_callback, ffi.NULL)
