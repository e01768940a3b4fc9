#!/usr/bin/env python3
"""Fuzz the GGUF pre-check (check_gguf_file) on bytes written to a temporary file, seeded
with scripts/make_bad_gguf.py's corpus and the head of the real model. ModelLoadError only.

    python tests/fuzz/fuzz_gguf.py -max_total_time=600 [CORPUS_DIR]
"""

from __future__ import annotations

import os
import sys
import tempfile

import _harness
import atheris

with atheris.instrument_imports():
    from llama_ffi.errors import ModelLoadError
    from llama_ffi.native import gguf_guard

REAL = _harness.REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
HEAD = 64 * 1024  # header, metadata and part of the tensor table
_fd, _PATH = tempfile.mkstemp(suffix=".gguf", prefix="fuzz_gguf_")
os.close(_fd)


def seeds() -> list[bytes]:
    sys.path.insert(0, str(_harness.REPO / "scripts"))
    from make_bad_gguf import corpus

    out = list(corpus(REAL if REAL.exists() else None).values())
    if REAL.exists():
        with REAL.open("rb") as f:
            out.append(f.read(HEAD))
    return [s[:HEAD] for s in out]


def target(data: bytes) -> None:
    with open(_PATH, "wb") as f:
        f.write(data)
    gguf_guard._checked.clear()  # its cache is keyed by (path, size, mtime): each input is new
    gguf_guard.check_gguf_file(_PATH)


if __name__ == "__main__":
    _harness.run("gguf", target, (ModelLoadError,), seeds())
