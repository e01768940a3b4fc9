"""A guard in front of llama.cpp's GGUF loader: refuse files that are not plausible GGUF.

Not a second loader: it reads only the fixed header and checks that the counts it
declares can fit in the file, so missing, empty, truncated and foreign files get a clear
``ModelLoadError`` instead of reaching C code with a history of crashes on such input.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from .errors import ModelLoadError

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)  # llama.cpp refuses v1
HEADER = struct.Struct("<4sIQQ")  # magic, version, n_tensors, n_kv
MIN_KV_BYTES = 8 + 1 + 4 + 1  # key length, 1-byte key, value type, 1-byte value
MIN_TENSOR_INFO_BYTES = 8 + 1 + 4 + 8 + 4 + 8  # name length, name, n_dims, one dim, type, offset


def check_gguf_file(path: str | os.PathLike) -> None:
    """Raise ModelLoadError unless ``path`` starts like a loadable GGUF file."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelLoadError(f"model path is not a regular file: {path}")
    size = path.stat().st_size
    if size == 0:
        raise ModelLoadError(f"model file is empty: {path}")
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER.size)
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from None
    if len(head) < 4 or head[:4] != GGUF_MAGIC:
        raise ModelLoadError(f"{path} is not a GGUF file (magic {head[:4]!r}, expected {GGUF_MAGIC!r})")
    if len(head) < HEADER.size:
        raise ModelLoadError(f"{path} is truncated inside the GGUF header ({size} bytes)")
    _, version, n_tensors, n_kv = HEADER.unpack(head)
    if version not in SUPPORTED_VERSIONS:
        raise ModelLoadError(f"{path}: GGUF version {version} is not supported (expected 2 or 3)")
    room = size - HEADER.size
    if n_kv * MIN_KV_BYTES > room:
        raise ModelLoadError(f"{path}: header declares {n_kv} metadata entries, more than the file can hold")
    if n_tensors * MIN_TENSOR_INFO_BYTES > room:
        raise ModelLoadError(f"{path}: header declares {n_tensors} tensors, more than the file can hold")
