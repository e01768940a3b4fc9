"""A guard in front of llama.cpp's GGUF loader: refuse files that are not plausible GGUF.

Not a second loader: it walks the header, the metadata and the tensor table with every
length checked against the bytes that remain, and checks the few values llama.cpp trusts
without checking (alignment, layer count, vocabulary array types, tensor shapes and data
ranges). Missing, empty, truncated, foreign and lying files get a clear ``ModelLoadError``
instead of reaching C code with a history of crashes on such input (CVE-2024-41130,
CVE-2025-49847, CVE-2025-53630 and others).
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

from ..errors import ModelLoadError

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)  # llama.cpp refuses v1
MAX_LAYERS = 512  # LLAMA_MAX_LAYERS in llama-hparams.h
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_NAME = 64  # GGML_MAX_NAME, including the terminating NUL
MAX_KEY_BYTES = 1 << 16
# enum gguf_type -> fixed size in bytes (STRING=8 and ARRAY=9 are variable)
SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
STRING, ARRAY, UINT32, INT32, FLOAT32 = 8, 9, 4, 5, 6
SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


class _Reader:
    """Bounds-checked little-endian reads over the file's bytes."""

    def __init__(self, data, path: Path) -> None:
        self.data, self.pos, self.path = data, 0, path

    def fail(self, what: str):
        raise ModelLoadError(f"{self.path}: {what} (at byte {self.pos} of {len(self.data)})")

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > len(self.data):
            self.fail(f"truncated or lying length while reading {what}")

    def u32(self, what: str) -> int:
        self.need(4, what)
        value = struct.unpack_from("<I", self.data, self.pos)[0]
        self.pos += 4
        return value

    def u64(self, what: str) -> int:
        self.need(8, what)
        value = struct.unpack_from("<Q", self.data, self.pos)[0]
        self.pos += 8
        return value

    def string(self, what: str, limit: int | None = None) -> bytes:
        n = self.u64(what + " length")
        if limit is not None and n > limit:
            self.fail(f"{what} of {n} bytes is longer than {limit}")
        self.need(n, what)
        value = self.data[self.pos: self.pos + n]
        self.pos += n
        return bytes(value)

    def scalar(self, vtype: int, what: str):
        fmt = SCALAR_FORMATS[vtype]
        self.need(SCALAR_SIZES[vtype], what)
        value = struct.unpack_from(fmt, self.data, self.pos)[0]
        self.pos += SCALAR_SIZES[vtype]
        return value


_checked: dict[tuple, dict[str, object]] = {}  # (path, size, mtime) -> metadata: reloads are free


def check_gguf_file(path: str | os.PathLike) -> dict[str, object]:
    """Raise ModelLoadError unless ``path`` is a GGUF file llama.cpp can safely parse.

    Returns the scalar metadata it read (arrays summarised as ``(type, count)``).
    """
    path = Path(path)
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    except OSError:
        key = None
    if key in _checked:
        return _checked[key]
    metadata = _check_path(path)
    if key is not None:
        _checked[key] = metadata
    return metadata


def _check_path(path: Path) -> dict[str, object]:
    if not path.exists():
        raise ModelLoadError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelLoadError(f"model path is not a regular file: {path}")
    size = path.stat().st_size
    if size == 0:
        raise ModelLoadError(f"model file is empty: {path}")
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _check(_Reader(memoryview(data), path))
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from None


def _check(r: _Reader) -> dict[str, object]:
    try:
        return _check_unsafe(r)
    finally:
        r.data.release()


def _check_unsafe(r: _Reader) -> dict[str, object]:
    magic = bytes(r.data[:4])
    if magic != GGUF_MAGIC:
        raise ModelLoadError(f"{r.path} is not a GGUF file (magic {magic!r}, expected {GGUF_MAGIC!r})")
    if len(r.data) < 24:
        raise ModelLoadError(f"{r.path} is truncated inside the GGUF header ({len(r.data)} bytes)")
    r.pos = 4
    version = r.u32("version")
    if version not in SUPPORTED_VERSIONS:
        raise ModelLoadError(f"{r.path}: GGUF version {version} is not supported (expected 2 or 3)")
    n_tensors, n_kv = r.u64("tensor count"), r.u64("metadata count")
    room = len(r.data) - r.pos
    if n_kv * 13 > room:  # key length, 1-byte key, type, 0-byte string at least
        r.fail(f"header declares {n_kv} metadata entries, more than the file can hold")
    if n_tensors * 29 > room:  # name length, 1-byte name, n_dims, one dim, type, offset
        r.fail(f"header declares {n_tensors} tensors, more than the file can hold")
    metadata = _read_metadata(r, n_kv)
    _check_metadata(r, metadata)
    _check_tensors(r, n_tensors, metadata)
    return metadata


def _read_metadata(r: _Reader, n_kv: int) -> dict[str, object]:
    metadata: dict[str, object] = {}
    for _ in range(n_kv):
        key = r.string("metadata key", MAX_KEY_BYTES).decode("utf-8", errors="replace")
        if key in metadata:
            r.fail(f"duplicate metadata key {key!r}")
        vtype = r.u32(f"type of {key!r}")
        if vtype == ARRAY:
            etype, count = r.u32(f"element type of {key!r}"), r.u64(f"length of {key!r}")
            _skip_array(r, key, etype, count)
            metadata[key] = (etype, count)
        elif vtype == STRING:
            metadata[key] = r.string(f"value of {key!r}").decode("utf-8", errors="replace")
        elif vtype in SCALAR_SIZES:
            metadata[key] = r.scalar(vtype, f"value of {key!r}")
        else:
            r.fail(f"metadata {key!r} has unknown value type {vtype}")
    return metadata


def _skip_array(r: _Reader, key: str, etype: int, count: int) -> None:
    if etype in SCALAR_SIZES:
        r.need(count * SCALAR_SIZES[etype], f"array {key!r}")
        r.pos += count * SCALAR_SIZES[etype]
        return
    if etype != STRING:
        r.fail(f"array {key!r} has unsupported element type {etype} (nested arrays are not allowed)")
    r.need(count * 8, f"array {key!r}")
    data, pos, end = r.data, r.pos, len(r.data)
    unpack = struct.Struct("<Q").unpack_from
    for _ in range(count):  # the hot loop for vocabularies: no method calls inside
        if pos + 8 > end:
            r.pos = pos
            r.fail(f"array {key!r} is truncated")
        n = unpack(data, pos)[0]
        pos += 8 + n
        if pos > end:
            r.pos = pos - n
            r.fail(f"string in array {key!r} runs past the end of the file")
    r.pos = pos


def _check_metadata(r: _Reader, metadata: dict[str, object]) -> None:
    alignment = metadata.get("general.alignment", 32)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1) or alignment > 1 << 20:
        r.fail(f"general.alignment {alignment!r} is not a power of two")
    arch = metadata.get("general.architecture")
    if arch is not None and not isinstance(arch, str):
        r.fail("general.architecture is not a string")
    layers = metadata.get(f"{arch}.block_count")
    if layers is not None and (not isinstance(layers, int) or not 0 < layers <= MAX_LAYERS):
        r.fail(f"{arch}.block_count is {layers!r}; llama.cpp supports 1 to {MAX_LAYERS} layers")
    tokens = metadata.get("tokenizer.ggml.tokens")
    if tokens is not None:
        if not isinstance(tokens, tuple) or tokens[0] != STRING:
            r.fail("tokenizer.ggml.tokens must be an array of strings")
        for key, etype in (("tokenizer.ggml.scores", FLOAT32), ("tokenizer.ggml.token_type", INT32)):
            value = metadata.get(key)
            if value is not None and (not isinstance(value, tuple) or value[0] != etype or value[1] != tokens[1]):
                r.fail(f"{key} must be an array of type {etype} with one entry per token")
    merges = metadata.get("tokenizer.ggml.merges")
    if merges is not None and (not isinstance(merges, tuple) or merges[0] != STRING):
        r.fail("tokenizer.ggml.merges must be an array of strings")


def _check_tensors(r: _Reader, n_tensors: int, metadata: dict[str, object]) -> None:
    from ._abi import GGML_TYPE_SIZES  # plain data: no library is loaded

    names, extents = set(), []
    for _ in range(n_tensors):
        name = r.string("tensor name", MAX_NAME - 1)
        if name in names:
            r.fail(f"duplicate tensor {name!r}")
        names.add(name)
        n_dims = r.u32(f"dimensions of {name!r}")
        if not 0 < n_dims <= MAX_DIMS:
            r.fail(f"tensor {name!r} has {n_dims} dimensions (1 to {MAX_DIMS} allowed)")
        dims = [r.u64(f"shape of {name!r}") for _ in range(n_dims)]
        ttype = r.u32(f"type of {name!r}")
        if ttype >= len(GGML_TYPE_SIZES) or GGML_TYPE_SIZES[ttype][0] == 0:
            r.fail(f"tensor {name!r} has unknown or removed type {ttype}")
        block, block_bytes = GGML_TYPE_SIZES[ttype]
        elements = 1
        for d in dims:
            if d == 0 or d >= 1 << 62:
                r.fail(f"tensor {name!r} has an invalid dimension {d}")
            elements *= d
            if elements >= 1 << 62:
                r.fail(f"tensor {name!r} has too many elements")
        if dims[0] % block:
            r.fail(f"tensor {name!r}: first dimension {dims[0]} is not a multiple of the block size {block}")
        extents.append((name, r.u64(f"offset of {name!r}"), elements // block * block_bytes))
    alignment = int(metadata.get("general.alignment", 32))
    data_start = (r.pos + alignment - 1) // alignment * alignment
    data_size = len(r.data) - data_start
    for name, offset, nbytes in extents:
        if offset % alignment:
            r.fail(f"tensor {name!r} data offset {offset} is not aligned to {alignment}")
        if offset + nbytes > data_size:
            r.fail(f"tensor {name!r} data ({nbytes} bytes at {offset}) runs past the end of the file")
