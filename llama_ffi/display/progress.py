"""Progress bars only where a person is watching: a terminal or a Jupyter kernel.

Model loading (through ``Llama`` and the CLI) and hub downloads draw ``tqdm.auto`` bars
(widgets in a notebook when ipywidgets is installed, a text bar otherwise); in scripts,
pipes, CI and servers nothing is printed. ``native`` draws nothing: ``Model`` reports
progress only to a ``progress=`` callback its caller passes, such as :func:`load_progress`.
"""

from __future__ import annotations

import sys

__all__ = ["interactive", "load_progress", "tqdm_class"]


def interactive() -> bool:
    """True when stderr is a terminal or the code runs in a Jupyter (ipykernel) kernel."""
    try:
        tty = sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        tty = False
    return tty or "ipykernel" in sys.modules


def tqdm_class():
    """``tqdm.auto.tqdm`` when interactive and tqdm is installed, else None."""
    if not interactive():
        return None
    try:
        if "ipykernel" in sys.modules and not _has_ipywidgets():
            from tqdm.std import tqdm  # a text bar; tqdm.auto would warn "IProgress not found"
        else:
            from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm


def _has_ipywidgets() -> bool:
    import importlib.util

    return importlib.util.find_spec("ipywidgets") is not None


def load_progress():
    """A ``ModelParams.progress`` callback drawing a bar while weights load, when a person is
    watching (see :func:`interactive`); else None."""
    tqdm = tqdm_class()
    if tqdm is None:
        return None
    bar = tqdm(total=100, desc="loading model", unit="%", leave=False)

    def update(fraction: float):
        # llama.cpp calls this once per tensor; update() redraws at most every 0.1 s.
        step = min(100, round(fraction * 100)) - bar.n
        if step > 0:
            bar.update(step)
        if fraction >= 1.0:
            bar.close()
    return update
