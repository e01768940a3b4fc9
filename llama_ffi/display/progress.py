"""Progress bars only where a person is watching: a terminal or a Jupyter kernel.

Model loading and hub downloads draw ``tqdm.auto`` bars (widgets in a notebook when
ipywidgets is installed, a text bar otherwise); in scripts, pipes, CI and servers nothing is
printed.
"""

from __future__ import annotations

import sys

__all__ = ["interactive", "tqdm_class"]


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
