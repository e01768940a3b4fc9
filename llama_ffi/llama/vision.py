"""Images and audio through ``Llama``: the projector and prompts with media.

``Llama(model, mmproj="proj.gguf")`` loads the projector at construction (a mismatched or
broken file fails there, where the path was given, not at the first request; the encoder's
warm-up also happens then, so the first image is not slower). It is a child of the model:
closing the Llama closes it.

A chat request's image and audio parts become media markers in the rendered prompt
(``llama_ffi.chat.media``); :func:`media_prompt` decodes the bytes with libmtmd and splits
the prompt into a :class:`MediaPrompt`: the text before the first marker as token ids (which
the session reuses from its KV cache like any prompt) and the rest as libmtmd chunks,
evaluated by ``eval_chunks``.

``Llava15ChatHandler(clip_model_path=...)`` and llama-cpp-python's other vision handler names
exist so code written for llama-cpp-python keeps working: a handler only carries the
projector's path into ``Llama(mmproj=...)``, and answers through the same chat path.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import GenerationError, ValidationError

__all__ = ["HANDLER_NAMES", "Llama3VisionAlphaChatHandler", "Llava15ChatHandler", "Llava16ChatHandler", "MediaPrompt",
           "MiniCPMv26ChatHandler", "MoondreamChatHandler", "MtmdChatHandler", "NanoLlavaChatHandler",
           "ObsidianChatHandler", "Qwen25VLChatHandler", "load_projector", "media_cell_keys", "media_prompt"]


def load_projector(model, path: str | os.PathLike, *, use_gpu: bool):
    """An :class:`~llama_ffi.native.mtmd.MtmdContext` for ``model`` (libmtmd is opened here)."""
    from ..native.mtmd import MtmdContext

    if not isinstance(path, (str, os.PathLike)) or not Path(path).is_file():
        raise ValidationError(f"mmproj file does not exist: {path}", param="mmproj")
    return MtmdContext(path, model, use_gpu=use_gpu)


class MediaPrompt:
    """A prompt with media, ready for the session: ``prefix`` (token ids of the text before the
    first media marker), ``chunks`` (libmtmd's chunks from that marker on), ``n_pos`` (context
    positions the chunks take) and ``n_tokens`` (prompt tokens in all, an image counting its
    embeddings). Owns its chunks: :meth:`close` frees them (the session does, after the call).

    ``cells`` is what the session's KV bookkeeping holds for the chunks' positions: a text
    chunk's token ids, and for each position of a media chunk a negative key
    (:func:`media_cell_keys`) derived from the media's id (a hash of its bytes), so that
    prefix reuse matches an identical image at the same place and nothing else.
    ``chunk_starts[i]`` is where chunk ``i`` starts in ``cells`` (plus a last entry, the end)."""

    def __init__(self, prefix: list[int], chunks) -> None:
        self.prefix, self.chunks = prefix, chunks
        self.n_pos = chunks.n_pos
        self.n_tokens = len(prefix) + chunks.n_tokens
        described = list(chunks)
        self.media_chunks = [c for c in described if c.type != "text"]
        self.chunk_types = [c.type for c in described]
        self.cells: list[int] = []
        self.chunk_starts: list[int] = []
        seen: dict[str, int] = {}
        for chunk in described:
            self.chunk_starts.append(len(self.cells))
            if chunk.type == "text":
                self.cells.extend(chunk.tokens)
                continue
            # a bitmap without an id (or an image split in slices, each carrying the same id)
            # must never match another: a fresh id, and the occurrence count, are hashed too
            key = chunk.id if chunk.id is not None else uuid.uuid4().hex
            occurrence = seen[key] = seen.get(key, -1) + 1
            self.cells.extend(media_cell_keys(f"{chunk.type}\0{key}\0{occurrence}", chunk.n_pos))
        self.chunk_starts.append(len(self.cells))
        if len(self.cells) != self.n_pos:  # the bookkeeping must map one entry to one position
            raise GenerationError(f"libmtmd's chunks take {self.n_pos} positions but describe {len(self.cells)}")

    def resume(self, kept: int) -> tuple[int, int, int]:
        """Where evaluation restarts when the KV cache already holds ``kept`` of :attr:`cells`
        (negative: only part of the prefix). Returns ``(kept, text_end, first_chunk)``: the
        cells to keep (never part of a media chunk: rounded down to its start), up to where
        the caller decodes plain tokens (the rest of a text chunk ``kept`` falls in, when more
        than its last token), and the first chunk :meth:`evaluate` must run (``len(chunks)``
        when none is left)."""
        if kept <= 0:
            return kept, 0, 0
        starts = self.chunk_starts
        index = next(i for i in range(len(starts) - 1) if starts[i] <= kept < starts[i + 1])
        if self.chunk_types[index] == "text" and starts[index + 1] - kept > 1:
            return kept, starts[index + 1], index + 1
        # Never inside a media chunk. Nor one token short of a text chunk's end (a repeated
        # prompt): a lone token decoded after media cells gave logits up to 0.6 off those of
        # the batched decode a fresh Llama does (llama.cpp CPU, the random test projector),
        # where re-evaluating the whole text chunk reproduces them exactly.
        return starts[index], starts[index], index

    def evaluate(self, context, n_past: int, first_chunk: int = 0) -> int:
        """Decode the chunks from ``first_chunk`` on at ``n_past``; returns the next position."""
        from ..native.mtmd import eval_chunks

        return eval_chunks(context, self.chunks, n_past, seq_id=0, first_chunk=first_chunk)

    def close(self) -> None:
        self.chunks.close()


def media_cell_keys(seed: str, n: int) -> list[int]:
    """``n`` keys for the KV cells of one media chunk: each a pseudo-random function of the
    media's id and the cell's offset, in [-(2**31 - 1), -2] (negative, so never a token id;
    never -1, the plain MEDIA_CELL; within int32, as saved states store them). Two different
    images agree on one cell with chance about 2**-31, on a whole chunk of n cells 2**(-31 * n)."""
    stream = hashlib.shake_128(seed.encode("utf-8", errors="surrogatepass")).digest(4 * n)
    return [-2 - int.from_bytes(stream[4 * i: 4 * i + 4], "little") % (2**31 - 2) for i in range(n)]


def media_prompt(mtmd, vocab, text: str, media: Sequence[Any], *, add_bos: bool) -> MediaPrompt:
    """Decode ``media`` (``chat.media.MediaInput`` items, one per marker in ``text``) and split
    ``text`` at its first marker into a :class:`MediaPrompt`."""
    from ..native.mtmd import sniff_media

    marker = mtmd.marker
    if text.count(marker) != len(media):
        raise ValidationError(f"the prompt holds {text.count(marker)} media marker(s) {marker!r} for {len(media)} "
                              "image/audio part(s); message text must not contain the marker itself",
                              param="messages")
    head, _, _ = text.partition(marker)
    bitmaps = []
    try:
        for i, item in enumerate(media):
            found = sniff_media(item.data)
            if found is not None and found != item.kind:
                raise ValidationError(f"media #{i + 1} ({item.source}) was sent as {item.kind} but its bytes are "
                                      f"{found}", param="messages")
            if item.kind == "audio" and not mtmd.supports_audio:
                raise ValidationError(f"media #{i + 1} is audio, but the projector {mtmd.path.name} has no audio "
                                      "encoder", param="messages")
            if item.kind == "image" and not mtmd.supports_vision:
                raise ValidationError(f"media #{i + 1} is an image, but the projector {mtmd.path.name} has no "
                                      "vision encoder", param="messages")
            try:
                bitmaps.append(mtmd.bitmap_from_bytes(item.data))
            except ValidationError as exc:
                raise ValidationError(f"media #{i + 1} ({item.source}): {exc}", param="messages") from None
        chunks = mtmd.tokenize(text[len(head):], bitmaps, add_special=False, parse_special=True)
    finally:
        for bitmap in bitmaps:  # the chunks hold their own copy of the pixels
            bitmap.close()
    try:
        if chunks[len(chunks) - 1].type != "text":
            raise ValidationError("the prompt must end with text after the last image or audio clip",
                                  param="messages")
        prefix = vocab.tokenize(head, add_special=add_bos, parse_special=True)
        return MediaPrompt(list(prefix), chunks)
    except BaseException:
        chunks.close()
        raise


# --- llama-cpp-python's chat handlers ---------------------------------------------------------
class MtmdChatHandler:
    """Carries a projector path into ``Llama(chat_handler=...)`` (llama-cpp-python's
    ``Llava15ChatHandler(clip_model_path=...)`` and relatives). ``Llama`` loads the
    projector as if given ``mmproj=clip_model_path``; calling the handler answers through the
    ordinary chat path (the GGUF's template or ``chat_format``), so it works with any
    model libmtmd supports, not only the family the class is named after."""

    def __init__(self, clip_model_path: str | os.PathLike, verbose: bool = True, **_ignored: Any) -> None:
        if not isinstance(clip_model_path, (str, os.PathLike)):
            raise ValidationError("clip_model_path must be the projector's GGUF path", param="clip_model_path")
        self.clip_model_path = os.fspath(clip_model_path)
        self.verbose = verbose

    def __call__(self, *, llama, messages, **options: Any):
        from .chat import chat_completion

        return chat_completion(llama, messages, **options)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(clip_model_path={self.clip_model_path!r})"

    @classmethod
    def from_pretrained(cls, repo_id: str, filename: str | None, **kwargs: Any) -> MtmdChatHandler:
        """Download the projector ``filename`` (a glob) from the Hugging Face hub."""
        from .hub import download

        hub_keys = ("local_dir", "cache_dir", "revision", "endpoint", "token")
        hub = {k: kwargs.pop(k) for k in hub_keys if k in kwargs}
        kwargs.pop("local_dir_use_symlinks", None)
        return cls(clip_model_path=str(download(repo_id, filename, **hub)[0]), **kwargs)


# llama-cpp-python's vision handler names (llama_cpp.llama_chat_format): each is the same carrier; the
# prompt comes from the model's own template, not from a format built into the class.


class Llava15ChatHandler(MtmdChatHandler):
    """llama-cpp-python's name for :class:`MtmdChatHandler`."""


class Llava16ChatHandler(MtmdChatHandler):
    """llama-cpp-python's name for :class:`MtmdChatHandler`."""


class ObsidianChatHandler(MtmdChatHandler):
    """llama-cpp-python's name for :class:`MtmdChatHandler`."""


class MoondreamChatHandler(MtmdChatHandler):
    """llama-cpp-python's name for :class:`MtmdChatHandler`."""


class NanoLlavaChatHandler(MtmdChatHandler):
    """llama-cpp-python's name for :class:`MtmdChatHandler`."""


class Llama3VisionAlphaChatHandler(MtmdChatHandler):
    """llama-cpp-python's name for :class:`MtmdChatHandler`."""


class MiniCPMv26ChatHandler(MtmdChatHandler):
    """llama-cpp-python's name for :class:`MtmdChatHandler`."""


class Qwen25VLChatHandler(MtmdChatHandler):
    """llama-cpp-python's name for :class:`MtmdChatHandler`."""


HANDLER_NAMES = ("Llava15ChatHandler", "Llava16ChatHandler", "ObsidianChatHandler", "MoondreamChatHandler",
                 "NanoLlavaChatHandler", "Llama3VisionAlphaChatHandler", "MiniCPMv26ChatHandler", "Qwen25VLChatHandler")
