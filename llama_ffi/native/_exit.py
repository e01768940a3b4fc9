"""The exit gate: no thread is inside ``llama_decode`` when the process exits.

A daemon thread (an Engine's, or a user's) may be decoding when the main thread returns.
The process then runs C++ static destructors (ggml's backends and thread pools) under that
decode and dies with SIGSEGV (measured: a running Engine at exit, 3 exits out of 4). So every
decode passes this gate. At exit it closes: decodes in flight are aborted through their
context's abort flag and awaited (bounded), and later ones raise CancelledError before
entering C. Cost: one uncontended lock per decode.
"""

from __future__ import annotations

import atexit
import threading

from ..errors import CancelledError

_cond = threading.Condition()
_running: list = []  # abort flags (char[2]) of the decodes now inside C
_closed = False
EXIT_WAIT_S = 30.0  # an aborted decode returns at its next graph node: milliseconds


def enter(abort_flag) -> None:
    """Call before a decode; raises CancelledError once the interpreter is exiting."""
    with _cond:
        if _closed:
            raise CancelledError("llama_decode refused: the interpreter is exiting")
        _running.append(abort_flag)


def leave(abort_flag) -> None:
    with _cond:
        _running.remove(abort_flag)
        if not _running:
            _cond.notify_all()


def _close() -> None:
    global _closed
    with _cond:
        _closed = True
        for flag in _running:
            flag[0] = b"x"
        _cond.wait_for(lambda: not _running, timeout=EXIT_WAIT_S)


atexit.register(_close)
