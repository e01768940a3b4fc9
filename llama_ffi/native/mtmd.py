"""Images and audio in: libmtmd's handles, each with one Python owner.

``MtmdContext`` holds a multimodal projector (an "mmproj" GGUF) for one text :class:`Model`
(its parent: closing the model closes it first). ``Bitmap`` is one decoded image or audio clip;
``InputChunks`` is a prompt tokenized around media markers into text, image and audio chunks;
:func:`eval_chunks` runs those chunks through a :class:`Context` and returns the next position.

>>> with MtmdContext("mmproj.gguf", model) as mtmd, mtmd.bitmap_from_bytes(png) as image:
...     chunks = mtmd.tokenize(f"Describe {mtmd.marker}", [image])
...     n_past = eval_chunks(context, chunks, n_past=0)

Everything libmtmd would abort on, or answer with a bare NULL, is checked here first: the
projector file (:mod:`.mmproj_guard`), undecodable media, audio whose header declares more
than its bytes hold (:mod:`.audio_guard`), marker and bitmap counts, and the context, sequence
and batch limits of an evaluation. libmtmd itself is loaded on first use
(:mod:`._mtmd_lib`); a missing one raises LibraryNotFoundError and text-only use never sees it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DecodeError, ModelLoadError, ValidationError
from . import _exit
from ._mtmd_lib import get_ffi, load_mtmd
from .audio_guard import check_audio_header
from .handle import Handle
from .mmproj_guard import check_mmproj

__all__ = ["Bitmap", "Chunk", "InputChunks", "MtmdContext", "eval_chunks"]

CHUNK_TYPES = {0: "text", 1: "image", 2: "audio"}
# Leading bytes of the formats libmtmd's helper decodes: stb_image's (TGA, which has no magic,
# is left out), WebP (through ffmpeg) and miniaudio's WAV/MP3/FLAC as the helper detects them.
IMAGE_MAGIC = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF87a": "GIF", b"GIF89a": "GIF", b"BM": "BMP",
               b"8BPS": "PSD", b"P5": "PNM", b"P6": "PNM", b"#?RADIANCE": "HDR", b"#?RGBE": "HDR",
               b"\x53\x80\xf6\x34": "PIC"}
KNOWN_FORMATS = "PNG, JPEG, GIF, BMP, PSD, PNM, HDR, PIC, WebP images; WAV, MP3, FLAC audio"


def sniff_media(data: bytes) -> str | None:
    """"image" or "audio" when ``data`` starts like a format libmtmd decodes, else None."""
    if data[:4] == b"RIFF" and len(data) >= 12:
        return {b"WAVE": "audio", b"WEBP": "image"}.get(data[8:12])
    if len(data) >= 12 and (data[:3] == b"ID3" or data[:4] == b"fLaC" or (data[0] == 0xFF and data[1] & 0xE0 == 0xE0)):
        return "audio"  # the helper's own test; JPEG's FF D8 does not match the MPEG sync bits
    return "image" if any(data.startswith(magic) for magic in IMAGE_MAGIC) else None


@dataclass(frozen=True)
class Chunk:
    """What one chunk of an :class:`InputChunks` holds (a snapshot: no C pointer)."""

    index: int
    type: str  # "text", "image" or "audio"
    n_tokens: int
    n_pos: int  # positions it takes in the context (== n_tokens except for M-RoPE models)
    id: str | None  # the media's id (a SHA-256 of the input bytes by default); None for text
    tokens: tuple[int, ...] | None  # the text chunk's token ids; None for media


class MtmdContext(Handle):
    """A multimodal projector loaded for one text model.

    ``use_gpu`` offloads the vision/audio encoder; ``n_threads`` defaults to the CPU count;
    ``media_marker`` is the text that stands for each bitmap in a prompt (default
    ``<__media__>``); ``warmup`` runs one encode at load so the first request is not slower.
    """

    _kind = "mtmd context"

    def __init__(self, mmproj_path: str | os.PathLike, model, *, use_gpu: bool = True, n_threads: int | None = None,
                 media_marker: str | None = None, warmup: bool = True) -> None:
        if n_threads is not None and (not isinstance(n_threads, int) or n_threads < 1):
            raise ValidationError(f"n_threads must be a positive integer, not {n_threads!r}", param="n_threads")
        if media_marker is not None and (not isinstance(media_marker, str) or not media_marker):
            raise ValidationError("media_marker must be a non-empty string", param="media_marker")
        path = Path(mmproj_path)
        lib = load_mtmd()
        ffi = get_ffi()
        n_embd = int(model._lib.llama_model_n_embd_inp(model.ptr))  # what mtmd compares the projector with
        check_mmproj(path, n_embd)
        params = lib.mtmd_context_params_default()
        params.use_gpu = bool(use_gpu)
        params.print_timings = False
        params.n_threads = n_threads or os.cpu_count() or 1
        params.warmup = bool(warmup)
        keep = ffi.new("char[]", media_marker.encode()) if media_marker else None
        if keep is not None:
            params.media_marker = keep
        ptr = lib.mtmd_init_from_file(os.fsencode(path), model.ptr, params)
        if ptr == ffi.NULL:
            raise ModelLoadError(f"libmtmd could not load the projector {path} (its reason is logged to the "
                                 "'llama_ffi' logger)")
        self._adopt(ptr, parent=model)
        self._lib, self._ffi = lib, ffi
        self.model, self.path = model, path
        self.marker = ffi.string(lib.mtmd_get_marker(ptr)).decode()
        self.supports_vision = bool(lib.mtmd_support_vision(ptr))
        self.supports_audio = bool(lib.mtmd_support_audio(ptr))
        self.audio_sample_rate = int(lib.mtmd_get_audio_sample_rate(ptr)) if self.supports_audio else None
        self.uses_mrope = bool(lib.mtmd_decode_use_mrope(ptr))
        self.n_embd = n_embd

    def _free(self, ptr) -> None:
        self._lib.mtmd_free(ptr)

    def _describe(self) -> str:
        media = "+".join(m for m, on in (("vision", self.supports_vision), ("audio", self.supports_audio)) if on)
        return f"{self.path.name} {media} marker={self.marker!r}"

    # --- media ------------------------------------------------------------------------------
    def bitmap_from_bytes(self, data: bytes, *, id: str | None = None) -> Bitmap:
        """Decode an image file (PNG, JPEG, BMP, GIF, ...) or an audio file (WAV, MP3, FLAC)
        held in memory. Raises ValidationError when libmtmd cannot decode it."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ValidationError(f"media must be bytes, not {type(data).__name__}", param="data")
        data = bytes(data)
        if not data:
            raise ValidationError("media bytes are empty", param="data")
        kind = sniff_media(data)  # unknown bytes never reach the decoders (nor the ffprobe fallback)
        if kind is None:
            raise ValidationError(f"could not decode {len(data)} bytes (starting {data[:8].hex()}) as media: not one "
                                  f"of the formats libmtmd reads ({KNOWN_FORMATS})", param="data")
        if kind == "audio" and not self.supports_audio:
            raise ValidationError("this looks like audio, but the projector has no audio encoder", param="data")
        if kind == "image" and not self.supports_vision:
            raise ValidationError("this looks like an image, but the projector has no vision encoder", param="data")
        if kind == "audio":
            check_audio_header(data)  # the helper allocates the length a header declares, before reading
        lib, ffi = self._lib, self._ffi
        opt = lib.mtmd_helper_init_opt_default()
        no_video = None
        if data[8:12] != b"WEBP" and os.name == "posix":
            # Where stb_image fails (a corrupt PNG/JPEG), the helper would try the bytes as a video
            # through ffprobe; an ffmpeg folder that cannot hold one stops that before a process starts.
            no_video = ffi.new("char[]", b"/dev/null")
            opt.video_params.ffmpeg_bin_dir = no_video
        wrapper = lib.mtmd_helper_bitmap_init_from_buf(self.ptr, data, len(data), False, opt)
        del no_video  # read during the call only
        if wrapper.video_ctx != ffi.NULL:  # a video: not supported through this call
            if wrapper.bitmap != ffi.NULL:
                lib.mtmd_bitmap_free(wrapper.bitmap)
            lib.mtmd_helper_video_free(wrapper.video_ctx)
            raise ValidationError("video input is not supported here; pass images or audio", param="data")
        if wrapper.bitmap == ffi.NULL:
            raise ValidationError(f"could not decode {len(data)} bytes of {kind} data (starting {data[:8].hex()}): "
                                  "truncated or corrupt", param="data")
        bitmap = Bitmap._own(wrapper.bitmap, lib, ffi)
        if bitmap.is_audio and not self.supports_audio:
            bitmap.close()
            raise ValidationError("this projector has no audio encoder", param="data")
        if id is not None:
            bitmap.id = id
        return bitmap

    # --- prompts ----------------------------------------------------------------------------
    def tokenize(self, text: str, bitmaps=(), *, add_special: bool = True, parse_special: bool = True) -> InputChunks:
        """Split ``text`` at each media marker into chunks, one media chunk per bitmap, in order."""
        if not isinstance(text, str):
            raise ValidationError(f"text must be a str, not {type(text).__name__}", param="text")
        bitmaps = list(bitmaps)
        n_markers = text.count(self.marker)
        if n_markers != len(bitmaps):
            raise ValidationError(f"the prompt has {n_markers} media marker(s) {self.marker!r} but {len(bitmaps)} "
                                  "bitmap(s) were given: one marker per bitmap", param="bitmaps")
        for bitmap in bitmaps:
            if not isinstance(bitmap, Bitmap):
                raise ValidationError(f"bitmaps must be Bitmap objects, not {type(bitmap).__name__}", param="bitmaps")
            bitmap.ptr  # noqa: B018 - raises ClosedError for a closed bitmap
            if bitmap.is_audio and not self.supports_audio:
                raise ValidationError("an audio bitmap was given but this projector has no audio encoder",
                                      param="bitmaps")
            if not bitmap.is_audio and not self.supports_vision:
                raise ValidationError("an image was given but this projector has no vision encoder", param="bitmaps")
        lib, ffi = self._lib, self._ffi
        encoded = text.encode("utf-8")
        c_text = ffi.new("mtmd_input_text *")
        c_buf = ffi.new("char[]", encoded)
        c_text.text, c_text.text_len = c_buf, len(encoded)
        c_text.add_special, c_text.parse_special = bool(add_special), bool(parse_special)
        c_bitmaps = ffi.new("mtmd_bitmap *[]", [b.ptr for b in bitmaps] or [ffi.NULL])
        chunks = InputChunks(self)
        status = lib.mtmd_tokenize(self.ptr, chunks.ptr, c_text, c_bitmaps, len(bitmaps))
        if status != 0:
            chunks.close()
            reason = {1: "the number of bitmaps does not match the media markers",
                      2: "a bitmap could not be preprocessed (its log line says why)"}.get(status, f"status {status}")
            raise ValidationError(f"mtmd_tokenize failed: {reason}", param="bitmaps")
        return chunks

    def encode(self, chunks: InputChunks, index: int) -> np.ndarray:
        """Run the encoder over media chunk ``index``; returns its embeddings, a float32 array of
        shape (n_tokens, n_embd) that the caller owns (a copy), for an engine's own batches."""
        if chunks.mtmd is not self:
            raise ValidationError("these chunks were tokenized by another projector", param="chunks")
        chunk = chunks._chunk_ptr(index)
        lib, ffi = self._lib, self._ffi
        if lib.mtmd_input_chunk_get_type(chunk) == 0:
            raise ValidationError(f"chunk {index} is text; only image and audio chunks are encoded", param="index")
        if lib.mtmd_encode_chunk(self.ptr, chunk) != 0:
            raise DecodeError(f"libmtmd could not encode chunk {index}")
        n_tokens = int(lib.mtmd_input_chunk_get_n_tokens(chunk))
        rows = lib.mtmd_get_output_embd(self.ptr)
        view = np.frombuffer(ffi.buffer(rows, n_tokens * self.n_embd * 4), dtype=np.float32)
        return view.reshape(n_tokens, self.n_embd).copy()

    def eval_chunks(self, context, chunks: InputChunks, n_past: int, seq_id: int = 0, n_batch: int | None = None,
                    logits_last: bool = True, first_chunk: int = 0) -> int:
        """:func:`eval_chunks` for chunks this projector tokenized."""
        if chunks.mtmd is not self:
            raise ValidationError("these chunks were tokenized by another projector", param="chunks")
        return eval_chunks(context, chunks, n_past, seq_id, n_batch, logits_last, first_chunk)


class Bitmap(Handle):
    """One image (RGB, ``nx`` by ``ny``) or audio clip (PCM float32 samples, ``nx`` long)."""

    _kind = "bitmap"

    @classmethod
    def _own(cls, ptr, lib, ffi) -> Bitmap:
        bitmap = cls.__new__(cls)
        bitmap._adopt(ptr)
        bitmap._lib, bitmap._ffi = lib, ffi
        bitmap.nx = int(lib.mtmd_bitmap_get_nx(ptr))
        bitmap.ny = int(lib.mtmd_bitmap_get_ny(ptr))
        bitmap.is_audio = bool(lib.mtmd_bitmap_is_audio(ptr))
        return bitmap

    @classmethod
    def from_rgb(cls, pixels, *, id: str | None = None) -> Bitmap:
        """An image from an array of shape (height, width, 3), uint8 RGB."""
        array = np.asarray(pixels)
        if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
            raise ValidationError(f"an RGB image must be a uint8 array of shape (height, width, 3), not "
                                  f"{array.dtype} {array.shape}", param="pixels")
        ny, nx = array.shape[:2]
        if nx == 0 or ny == 0 or nx > 1 << 15 or ny > 1 << 15:
            raise ValidationError(f"image size {nx}x{ny} outside 1..32768 per side", param="pixels")
        lib, ffi = load_mtmd(), get_ffi()
        data = np.ascontiguousarray(array)
        ptr = lib.mtmd_bitmap_init(nx, ny, ffi.from_buffer("unsigned char[]", data))
        return cls._checked(ptr, lib, ffi, id)

    @classmethod
    def from_audio(cls, samples, *, id: str | None = None) -> Bitmap:
        """An audio clip from mono PCM samples (float32 in [-1, 1], at the projector's sample rate)."""
        array = np.asarray(samples)
        if array.ndim != 1 or array.size == 0 or array.dtype.kind != "f":
            raise ValidationError(f"audio must be a non-empty 1-D float array, not {array.dtype} {array.shape}",
                                  param="samples")
        data = np.ascontiguousarray(array, dtype=np.float32)
        if not np.isfinite(data).all():
            raise ValidationError("audio samples must be finite", param="samples")
        lib, ffi = load_mtmd(), get_ffi()
        ptr = lib.mtmd_bitmap_init_from_audio(data.size, ffi.from_buffer("float[]", data))
        return cls._checked(ptr, lib, ffi, id)

    @classmethod
    def _checked(cls, ptr, lib, ffi, id: str | None) -> Bitmap:
        if ptr == ffi.NULL:
            raise ValidationError("libmtmd could not create the bitmap")
        bitmap = cls._own(ptr, lib, ffi)
        if id is not None:
            bitmap.id = id
        return bitmap

    @property
    def id(self) -> str | None:
        """The id libmtmd carries into the chunk (for KV cache reuse); a SHA-256 hex of the file
        for :meth:`MtmdContext.bitmap_from_bytes`."""
        raw = self._lib.mtmd_bitmap_get_id(self.ptr)
        return None if raw == self._ffi.NULL else self._ffi.string(raw).decode("utf-8", errors="replace")

    @id.setter
    def id(self, value: str) -> None:
        if not isinstance(value, str) or "\0" in value:
            raise ValidationError("a bitmap id must be a str without NUL characters", param="id")
        self._lib.mtmd_bitmap_set_id(self.ptr, value.encode("utf-8"))

    @property
    def n_bytes(self) -> int:
        return int(self._lib.mtmd_bitmap_get_n_bytes(self.ptr))

    def _free(self, ptr) -> None:
        self._lib.mtmd_bitmap_free(ptr)

    def _describe(self) -> str:
        return f"audio {self.nx} samples" if self.is_audio else f"image {self.nx}x{self.ny}"


class InputChunks(Handle):
    """A tokenized prompt: text, image and audio chunks in order (from :meth:`MtmdContext.tokenize`)."""

    _kind = "input chunks"

    def __init__(self, mtmd: MtmdContext) -> None:
        lib, ffi = mtmd._lib, mtmd._ffi
        ptr = lib.mtmd_input_chunks_init()
        if ptr == ffi.NULL:
            raise MemoryError("mtmd_input_chunks_init returned NULL")
        self._adopt(ptr, parent=mtmd)
        self._lib, self._ffi, self.mtmd = lib, ffi, mtmd

    def _free(self, ptr) -> None:
        self._lib.mtmd_input_chunks_free(ptr)

    def __len__(self) -> int:
        return int(self._lib.mtmd_input_chunks_size(self.ptr))

    def _chunk_ptr(self, index: int):
        n = len(self)
        if not isinstance(index, int) or not -n <= index < n:
            raise ValidationError(f"chunk index {index!r} outside [0, {n})", param="index")
        return self._lib.mtmd_input_chunks_get(self.ptr, index % n)

    def __getitem__(self, index: int) -> Chunk:
        lib, ffi = self._lib, self._ffi
        chunk = self._chunk_ptr(index)
        kind = CHUNK_TYPES.get(int(lib.mtmd_input_chunk_get_type(chunk)), "unknown")
        tokens = None
        if kind == "text":
            n = ffi.new("size_t *")
            ptr = lib.mtmd_input_chunk_get_tokens_text(chunk, n)
            tokens = tuple(ffi.unpack(ptr, n[0])) if n[0] else ()
        raw_id = lib.mtmd_input_chunk_get_id(chunk)
        return Chunk(index=index % len(self), type=kind, n_tokens=int(lib.mtmd_input_chunk_get_n_tokens(chunk)),
                     n_pos=int(lib.mtmd_input_chunk_get_n_pos(chunk)),
                     id=None if raw_id == ffi.NULL else ffi.string(raw_id).decode("utf-8", errors="replace"),
                     tokens=tokens)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    @property
    def n_tokens(self) -> int:
        return int(self._lib.mtmd_helper_get_n_tokens(self.ptr))

    @property
    def n_pos(self) -> int:
        """Positions the whole prompt takes: what :func:`eval_chunks` adds to ``n_past``."""
        return int(self._lib.mtmd_helper_get_n_pos(self.ptr))

    def _describe(self) -> str:
        return f"{len(self)} chunks, {self.n_tokens} tokens"


def eval_chunks(context, chunks: InputChunks, n_past: int, seq_id: int = 0, n_batch: int | None = None,
                logits_last: bool = True, first_chunk: int = 0) -> int:
    """Decode the chunks from index ``first_chunk`` on (default: all) into ``context`` (text as
    tokens, media through the encoder as embeddings) for sequence ``seq_id`` starting at
    position ``n_past``; returns the next position. With ``logits_last`` the last text token's
    logits are kept for sampling. A ``first_chunk`` past 0 resumes a prompt whose earlier
    chunks the KV cache already holds (prefix reuse across images)."""
    mtmd = chunks.mtmd
    if context.model is not mtmd.model:
        raise ValidationError("the context and the projector were loaded for different models", param="context")
    if not isinstance(n_past, int) or n_past < 0:
        raise ValidationError(f"n_past must be a non-negative integer, not {n_past!r}", param="n_past")
    if not isinstance(seq_id, int) or not 0 <= seq_id < context.n_seq_max:
        raise ValidationError(f"seq_id {seq_id!r} outside [0, {context.n_seq_max})", param="seq_id")
    n_batch = context.n_batch if n_batch is None else n_batch
    if not isinstance(n_batch, int) or not 1 <= n_batch <= context.n_batch:
        raise ValidationError(f"n_batch must be in [1, {context.n_batch}] (the context's n_batch)", param="n_batch")
    n_chunks = len(chunks)
    if isinstance(first_chunk, bool) or not isinstance(first_chunk, int) or not 0 <= first_chunk < max(n_chunks, 1):
        raise ValidationError(f"first_chunk {first_chunk!r} outside [0, {n_chunks})", param="first_chunk")
    todo = [chunks[i] for i in range(first_chunk, n_chunks)]
    n_pos = sum(chunk.n_pos for chunk in todo)
    if n_past + n_pos > context.n_ctx_seq:
        raise ValidationError(f"the prompt takes {n_pos} positions from {n_past}: past this sequence's "
                              f"{context.n_ctx_seq}", param="chunks")
    lib, ffi, flag = mtmd._lib, mtmd._ffi, context._abort_flag
    if lib.mtmd_decode_use_non_causal(mtmd.ptr, ffi.NULL):  # (gemma3) an image attends to itself whole:
        limit = min(n_batch, context.n_ubatch)              # its embeddings must fit one ubatch
        for chunk in todo:
            if chunk.type != "text" and chunk.n_tokens > limit:
                raise ValidationError(f"media chunk {chunk.index} has {chunk.n_tokens} tokens, more than n_batch/"
                                      f"n_ubatch={limit}; this model decodes an image in one batch", param="chunks")
    # what mtmd_helper_eval_chunks does from chunk 0: one chunk at a time, logits for the last
    new_n_past = ffi.new("llama_pos *", n_past)
    status, index = 0, first_chunk
    _exit.enter(flag)
    try:
        for index in range(first_chunk, n_chunks):
            last = bool(logits_last) and index == n_chunks - 1
            status = lib.mtmd_helper_eval_chunk_single(mtmd.ptr, context.ptr, chunks._chunk_ptr(index),
                                                       new_n_past[0], seq_id, n_batch, last, new_n_past)
            if status != 0:
                break
    finally:
        _exit.leave(flag)
    flag[0] = b"\0"
    if status != 0:
        raise DecodeError(f"evaluating chunk {index} failed with status {status} (encode or decode; the log says "
                          "which)")
    return int(new_n_past[0])
