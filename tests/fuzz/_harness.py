"""Shared driver for the atheris harnesses in this folder (see tests/test_fuzz.py).

Each harness names a target ``test_one(data: bytes)`` and the exception types its API
documents; anything else escaping the target is a bug and atheris reports it as a crash,
writing the input to ``crash-*``. Seeds are written to a temporary corpus folder unless
the command line names one. Extra arguments go to libFuzzer (``-max_total_time=600``,
``-runs=N``).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterable

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def run(name: str, target: Callable[[bytes], None], allowed: tuple[type[BaseException], ...],
        seeds: Iterable[bytes]) -> None:
    import atheris

    def test_one(data: bytes) -> None:
        try:
            target(data)
        except allowed:
            pass

    argv = list(sys.argv)
    if not any(not a.startswith("-") for a in argv[1:]):
        corpus = Path(tempfile.mkdtemp(prefix=f"fuzz_{name}_"))
        for i, seed in enumerate(seeds):
            (corpus / f"seed{i:03d}").write_bytes(seed)
        argv.append(str(corpus))
    os.environ.setdefault("LLAMA_FFI_FUZZ", name)
    atheris.Setup(argv, test_one)
    atheris.Fuzz()


def text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape").encode("utf-8", "replace").decode("utf-8")
