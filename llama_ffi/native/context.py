"""``Context``: decoding, logits and embeddings, the KV memory, state, and cancellation."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from ..errors import CancelledError, DecodeError, KVCacheFullError, StateError, ValidationError
from . import _exit
from ._lib import ffi
from .batch import Batch
from .handle import Handle
from .params import ContextParams


class Context(Handle):
    """An inference context over a :class:`Model` (which it keeps alive)."""

    _kind = "context"

    def __init__(self, model, params: ContextParams | None = None) -> None:
        params = params or ContextParams()
        params.validate()
        lib = model._lib
        c_params = lib.llama_context_default_params()
        threads = os.cpu_count() or 1
        for name, value in params.c_values().items():
            setattr(c_params, name, value)
        c_params.n_threads = params.n_threads or threads
        c_params.n_threads_batch = params.n_threads_batch or threads
        ptr = lib.llama_init_from_model(model.ptr, c_params)
        if ptr == ffi.NULL:
            raise ValidationError(f"llama.cpp could not create a context with {params} "
                                  "(too large for memory, or not supported by this model)")
        self._adopt(ptr, parent=model)
        self.model = model
        self.params = params
        self._lib = lib
        self._vocab = model.vocab
        self.n_vocab = model.vocab.n_tokens
        self.n_ctx = int(lib.llama_n_ctx(ptr))
        self.n_ctx_seq = int(lib.llama_n_ctx_seq(ptr))  # positions one sequence may use
        self.n_batch = int(lib.llama_n_batch(ptr))
        self.n_ubatch = int(lib.llama_n_ubatch(ptr))
        self.n_seq_max = int(lib.llama_n_seq_max(ptr))
        # Without a unified cache every sequence has its own stream of cells.
        self.n_streams = 1 if params.kv_unified or self.n_seq_max == 1 else self.n_seq_max
        self._memory = lib.llama_get_memory(ptr)
        # Cancellation without a Python call per graph node: the abort callback is libc's
        # strlen over a 2-byte buffer. "\0" -> 0 (carry on); "x\0" -> 1 (abort). Another
        # thread flips the byte; llama_decode then returns 2 at its next check.
        self._abort_flag = ffi.new("char[2]")
        strlen = ffi.cast("ggml_abort_callback", ffi.addressof(lib, "strlen"))
        lib.llama_set_abort_callback(ptr, strlen, self._abort_flag)
        self._loras: dict = {}
        self._backend_samplers: dict = {}  # seq_id -> SamplerChain attached with set_sampler

    def _free(self, ptr) -> None:
        for chain in self._backend_samplers.values():
            chain._attached_to = None
        self._lib.llama_free(ptr)

    def _describe(self) -> str:
        return f"n_ctx={self.n_ctx} n_batch={self.n_batch} n_seq_max={self.n_seq_max}"

    # --- decoding -------------------------------------------------------------------------
    def decode(self, batch: Batch) -> None:
        """Run the model over ``batch``. Raises KVCacheFullError (recoverable), CancelledError
        (``abort()`` was called) or DecodeError; bad ids and positions are refused first."""
        self._check_batch(batch)
        ptr, flag = self.ptr, self._abort_flag
        _exit.enter(flag)
        try:
            status = self._lib.llama_decode(ptr, batch.c[0])
        finally:
            _exit.leave(flag)
        flag[0] = b"\0"
        if status != 0:
            _raise_decode_status(status, "llama_decode")

    def encode(self, batch: Batch) -> None:
        """Run an encoder (embedding models, encoder-decoder models) over ``batch``."""
        self._check_batch(batch)
        ptr, flag = self.ptr, self._abort_flag
        _exit.enter(flag)
        try:
            status = self._lib.llama_encode(ptr, batch.c[0])
        finally:
            _exit.leave(flag)
        flag[0] = b"\0"
        if status != 0:
            _raise_decode_status(status, "llama_encode")

    def _check_batch(self, batch: Batch) -> None:
        n = batch.n_tokens
        if n == 0:
            raise ValidationError("cannot decode an empty batch")
        if n > self.n_batch:
            raise ValidationError(f"batch of {n} tokens exceeds n_batch={self.n_batch}")
        tokens, seqs, pos = batch.token[:n], batch.seq_id[:n, 0], batch.pos[:n]
        if tokens.min() < 0 or tokens.max() >= self.n_vocab:
            raise ValidationError(f"token ids must be in [0, {self.n_vocab})", param="tokens")
        if seqs.min() < 0 or seqs.max() >= self.n_seq_max:
            raise ValidationError(f"sequence ids must be in [0, {self.n_seq_max})", param="seq_id")
        if pos.min() < 0 or pos.max() >= self.n_ctx_seq:
            raise ValidationError(f"positions must be in [0, {self.n_ctx_seq})", param="pos")

    def abort(self) -> None:
        """Ask a decode running in another thread to stop (it raises CancelledError)."""
        self._abort_flag[0] = b"x"

    # --- outputs (zero-copy views, valid until the next decode) -----------------------------
    def logits(self, i: int = -1) -> np.ndarray:
        """Logits of output ``i`` of the last batch (negative counts from the end)."""
        ptr = self._lib.llama_get_logits_ith(self.ptr, i)
        if ptr == ffi.NULL:
            raise ValidationError(f"no logits for output {i} of the last batch", param="i")
        return np.frombuffer(ffi.buffer(ptr, self.n_vocab * 4), dtype=np.float32)

    def sample_rows(self, chains, rows) -> list[int]:
        """Sample output ``rows[j]`` of the last batch with ``chains[j]`` (each accepts its
        token): a whole engine step in one call, the C function and pointers bound once.
        A chain attached to the graph (``set_sampler``) returns the token sampled there."""
        sample, ctx = self._lib.llama_sampler_sample, self.ptr
        tokens = [sample(chain.ptr, ctx, row) for chain, row in zip(chains, rows)]
        for chain in chains:
            if chain.has_python_samplers:
                chain._reraise()
        return tokens

    def embeddings(self, i: int = -1) -> np.ndarray:
        """Embedding of output ``i`` (context created with ``embeddings=True``)."""
        ptr = self._lib.llama_get_embeddings_ith(self.ptr, i)
        if ptr == ffi.NULL:
            raise ValidationError(f"no embeddings for output {i}", param="i")
        return np.frombuffer(ffi.buffer(ptr, self._n_embd_out() * 4), dtype=np.float32)

    def sequence_embeddings(self, seq_id: int) -> np.ndarray:
        """Pooled embedding of a sequence (pooling type other than none); rank pooling gives
        ``n_cls_out`` scores."""
        ptr = self._lib.llama_get_embeddings_seq(self.ptr, seq_id)
        if ptr == ffi.NULL:
            raise ValidationError(f"no pooled embedding for sequence {seq_id}", param="seq_id")
        pooling = self._lib.llama_pooling_type(self.ptr)
        n = max(1, self.model.n_cls_out) if pooling == 4 else self._n_embd_out()
        return np.frombuffer(ffi.buffer(ptr, n * 4), dtype=np.float32)

    def _n_embd_out(self) -> int:
        return int(self._lib.llama_model_n_embd_out(self.model.ptr))

    @property
    def pooling_type(self) -> int:
        return int(self._lib.llama_pooling_type(self.ptr))

    # --- KV memory, per sequence ---------------------------------------------------------
    def _check_seq(self, seq_id: int, allow_all: bool = True) -> None:
        low = -1 if allow_all else 0
        if not isinstance(seq_id, int) or not low <= seq_id < self.n_seq_max:
            raise ValidationError(f"seq_id {seq_id!r} outside [{low}, {self.n_seq_max})", param="seq_id")

    def memory_clear(self, data: bool = True) -> None:
        self._lib.llama_memory_clear(self._mem(), data)

    def memory_seq_rm(self, seq_id: int, p0: int = -1, p1: int = -1) -> bool:
        """Remove positions [p0, p1) of a sequence (-1: all sequences / open end)."""
        self._check_seq(seq_id)
        return bool(self._lib.llama_memory_seq_rm(self._mem(), seq_id, p0, p1))

    def memory_seq_cp(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None:
        """Share cells [p0, p1) of ``src`` with ``dst`` (no recomputation). In a cache that
        is not unified the sequences live in separate streams and llama.cpp can only copy a
        whole stream (it aborts the process otherwise): give p0 = p1 = -1 there."""
        self._check_seq(src, False)
        self._check_seq(dst, False)
        if self.n_streams > 1 and src != dst and (p0 > 0 or 0 < p1 < self.n_ctx):
            raise ValidationError("without kv_unified=True a sequence can only be copied whole "
                                  "(p0=-1, p1=-1): partial copies need a unified cache", param="p0")
        self._lib.llama_memory_seq_cp(self._mem(), src, dst, p0, p1)

    def memory_seq_keep(self, seq_id: int) -> None:
        self._check_seq(seq_id, False)
        self._lib.llama_memory_seq_keep(self._mem(), seq_id)

    def memory_seq_shift(self, seq_id: int, delta: int, p0: int = -1, p1: int = -1) -> None:
        """Add ``delta`` to positions [p0, p1) (context shifting)."""
        self._check_seq(seq_id)
        if not self._lib.llama_memory_can_shift(self._mem()):
            raise ValidationError("this model's memory cannot be shifted")
        self._lib.llama_memory_seq_add(self._mem(), seq_id, p0, p1, delta)

    def memory_seq_pos_range(self, seq_id: int) -> tuple[int, int]:
        """(min, max) position held for a sequence; (-1, -1) when empty."""
        self._check_seq(seq_id, False)
        mem = self._mem()
        return (int(self._lib.llama_memory_seq_pos_min(mem, seq_id)),
                int(self._lib.llama_memory_seq_pos_max(mem, seq_id)))

    def _mem(self):
        self.ptr  # raises ClosedError when closed
        return self._memory

    # --- state --------------------------------------------------------------------------
    def state_bytes(self, seq_id: int | None = None) -> bytes:
        """The whole context state (or one sequence's) as bytes."""
        lib, ptr = self._lib, self.ptr
        if seq_id is None:
            size = lib.llama_state_get_size(ptr)
            buf = ffi.new("uint8_t[]", size)
            written = lib.llama_state_get_data(ptr, buf, size)
        else:
            self._check_seq(seq_id, False)
            size = lib.llama_state_seq_get_size(ptr, seq_id)
            buf = ffi.new("uint8_t[]", size)
            written = lib.llama_state_seq_get_data(ptr, buf, size, seq_id)
        return ffi.buffer(buf, written)[:]

    def load_state_bytes(self, data: bytes, seq_id: int | None = None) -> None:
        """Restore what :meth:`state_bytes` returned. Raises StateError if it does not fit."""
        data = bytes(data)
        if not data:
            raise StateError("empty state")
        lib, ptr = self._lib, self.ptr
        if seq_id is None:
            _check_arch_field(data[:4], len(data))
            read = lib.llama_state_set_data(ptr, data, len(data))
        else:
            self._check_seq(seq_id, False)
            read = lib.llama_state_seq_set_data(ptr, data, len(data), seq_id)
        if read == 0:
            raise StateError("state could not be restored (truncated, or from another model or context)")

    def save_state_file(self, path: str | os.PathLike, tokens=()) -> None:
        ids = self._vocab.check_tokens(tokens)
        if not self._lib.llama_state_save_file(self.ptr, os.fsencode(path), ffi.from_buffer("llama_token[]", ids), len(ids)):
            raise StateError(f"could not save state to {path}")

    def load_state_file(self, path: str | os.PathLike) -> list[int]:
        """Restore a state file; return the tokens saved with it."""
        path = Path(path)
        if not path.is_file():
            raise StateError(f"no state file at {path}")
        _check_state_file_head(path)
        capacity = self.n_ctx
        out, count = ffi.new("llama_token[]", capacity), ffi.new("size_t *")
        if not self._lib.llama_state_load_file(self.ptr, os.fsencode(path), out, capacity, count):
            raise StateError(f"could not load state from {path} (truncated, or another model's)")
        return ffi.unpack(out, count[0])

    def save_seq_state_file(self, path: str | os.PathLike, seq_id: int, tokens=()) -> int:
        """Write one sequence's KV cells and ``tokens`` (what those cells hold) to ``path`` in
        llama.cpp's sequence-state file format (llama-server's slot files); return its size."""
        ids = self._vocab.check_tokens(tokens)
        state = self.state_bytes(seq_id)  # checks seq_id; 8 bytes of framing, then the cells
        with open(path, "wb") as f:
            f.write(SESSION_HEAD.pack(SEQ_STATE_MAGIC, SEQ_STATE_VERSION, len(ids)))
            f.write(ids.astype("<i4").tobytes())
            f.write(state[_SEQ_FRAMING:])
        return SESSION_HEAD.size + 4 * len(ids) + len(state) - _SEQ_FRAMING

    def load_seq_state_file(self, path: str | os.PathLike, seq_id: int) -> list[int]:
        """Load a file :meth:`save_seq_state_file` (or llama-server) wrote into sequence
        ``seq_id``, which should be empty; return the tokens saved with it. Raises StateError
        for another kind of file, a truncated one, or one larger than the sequence's cells.

        Read here and handed over as bytes: llama.cpp's own file loader asserts (ends the
        process) on a truncated file, its buffer loader reports it."""
        self._check_seq(seq_id, False)
        path = Path(path)
        if not path.is_file():
            raise StateError(f"no sequence state file at {path}")
        data = path.read_bytes()
        if len(data) < SESSION_HEAD.size:
            raise StateError(f"sequence state file {path} is truncated")
        magic, version, n_tokens = SESSION_HEAD.unpack_from(data)
        if (magic, version) != (SEQ_STATE_MAGIC, SEQ_STATE_VERSION):
            raise StateError(f"{path} is not a llama.cpp sequence state file (version {SEQ_STATE_VERSION})")
        at = SESSION_HEAD.size + 4 * n_tokens
        if at > len(data) or n_tokens > self.n_ctx_seq:
            raise StateError(f"sequence state file {path} claims {n_tokens} tokens: more than it holds "
                             f"or than a sequence of {self.n_ctx_seq} cells")
        tokens = np.frombuffer(data, dtype="<i4", count=n_tokens, offset=SESSION_HEAD.size)
        framing = self.state_bytes(seq_id)[:_SEQ_FRAMING]  # llama.cpp's buffer magic and a sequence id
        try:
            self.load_state_bytes(framing + data[at:], seq_id)
        except StateError:
            raise StateError(f"could not load {path} into sequence {seq_id} "
                             "(truncated, another model's, or too large for the free cells)") from None
        return tokens.astype(np.int32).tolist()

    # --- settings -----------------------------------------------------------------------
    def set_threads(self, n_threads: int, n_threads_batch: int | None = None) -> None:
        for name, value in (("n_threads", n_threads), ("n_threads_batch", n_threads_batch or n_threads)):
            if not isinstance(value, int) or not 1 <= value <= 512:
                raise ValidationError(f"{name} must be in [1, 512]", param=name)
        self._lib.llama_set_n_threads(self.ptr, n_threads, n_threads_batch or n_threads)

    def set_loras(self, scales: dict) -> None:
        """Attach LoRA adapters with their scales (``{adapter: scale}``); ``{}`` detaches all."""
        for adapter in scales:
            if adapter.model is not self.model:
                raise ValidationError("a LoRA adapter can only be used with the model it was loaded for")
        adapters = ffi.new("struct llama_adapter_lora *[]", [a.ptr for a in scales] or [ffi.NULL])
        values = ffi.new("float[]", [float(s) for s in scales.values()] or [0.0])
        status = self._lib.llama_set_adapters_lora(self.ptr, adapters, len(scales), values)
        if status != 0:
            raise ValidationError(f"llama.cpp refused the LoRA adapters (status {status})")
        self._loras = dict(scales)

    @property
    def loras(self) -> dict:
        return dict(self._loras)

    def set_sampler(self, seq_id: int, chain) -> None:
        """Sample sequence ``seq_id`` on the backend (the GPU, where supported) with ``chain``;
        ``None`` detaches. ``SamplerChain.sample`` then returns the token the backend picked,
        and the logits row never has to be copied to the host. A chain can be attached once
        in its life (llama.cpp asserts otherwise), so reuse is refused here."""
        self._check_seq(seq_id, False)
        if chain is not None:
            if chain._attached is not None:
                raise ValidationError("this sampler chain was already attached to a context; build a new one")
            chain.ptr  # raises ClosedError when closed
        if not self._lib.llama_set_sampler(self.ptr, seq_id, chain.ptr if chain is not None else ffi.NULL):
            raise ValidationError("llama.cpp refused to attach the sampler to this context")
        previous = self._backend_samplers.pop(seq_id, None)
        if previous is not None:
            previous._attached_to = None
        if chain is not None:
            chain._attached = chain._attached_to = (self, seq_id)
            self._backend_samplers[seq_id] = chain

    def synchronize(self) -> None:
        self._lib.llama_synchronize(self.ptr)


# A state starts with the architecture name, read with the length the state claims: llama.cpp
# allocates a 4 GiB string for a claim of 4 GiB (30 s and the memory) before it finds the bytes
# missing. Names are short ("llama", "qwen3moe"), so a claim past this is refused here.
MAX_ARCH_NAME = 64
SESSION_HEAD = struct.Struct("<III")  # magic, version, n_tokens; then the tokens, then the state


def _check_arch_field(head: bytes, available: int) -> None:
    if len(head) < 4:
        raise StateError("state is truncated")
    n = int.from_bytes(head[:4], "little")
    if n > MAX_ARCH_NAME or 4 + n > available:
        raise StateError(f"state is corrupt (architecture name of {n} bytes)")


def _check_state_file_head(path: Path) -> None:
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(SESSION_HEAD.size)
        if len(head) < SESSION_HEAD.size:
            raise StateError(f"state file {path} is truncated")
        n_tokens = SESSION_HEAD.unpack(head)[2]
        at = SESSION_HEAD.size + 4 * n_tokens
        if at > size:
            raise StateError(f"state file {path} claims {n_tokens} tokens, more than it holds")
        f.seek(at)
        _check_arch_field(f.read(4), size - at)


SEQ_STATE_MAGIC = 0x67677371  # 'ggsq', llama.h's LLAMA_STATE_SEQ_MAGIC
SEQ_STATE_VERSION = 3
_SEQ_FRAMING = 8  # a buffer state starts with a magic number and the sequence id; a file has neither


def _raise_decode_status(status: int, what: str) -> None:
    if status == 1:
        raise KVCacheFullError(f"{what}: no KV-cache slot for the batch", status)
    if status == 2:
        raise CancelledError(f"{what} was aborted")
    raise DecodeError(f"{what} failed", status)
