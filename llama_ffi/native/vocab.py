"""``Vocab``: tokenization and special tokens of a loaded model.

Token pieces are bytes: one token can end in the middle of a UTF-8 character, so text is
made from pieces by an incremental decoder (see ``llama_ffi.text``), never piece by piece.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from ..errors import ValidationError
from ._lib import ffi

MAX_TEXT_BYTES = 256 * 1024 * 1024  # llama_tokenize takes an int32 length


class Vocab:
    """The vocabulary of a :class:`Model` (a borrowed pointer: it keeps the model alive)."""

    def __init__(self, model, ptr) -> None:
        self._model = model  # the vocab lives inside the model's memory
        self._ptr = ptr
        self._lib = model._lib
        self.n_tokens = int(self._lib.llama_vocab_n_tokens(ptr))
        self._pieces: list[bytes] | None = None

    @property
    def ptr(self):
        self._model.ptr  # raises ClosedError once the model is closed
        return self._ptr

    def __len__(self) -> int:
        return self.n_tokens

    def __repr__(self) -> str:
        return f"<Vocab {self.n_tokens} tokens>"

    # --- text <-> tokens ------------------------------------------------------------
    def tokenize(self, text: str | bytes, *, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids of ``text``; ``add_special`` adds BOS/EOS as the model wants them,
        ``parse_special`` turns special-token text such as ``<|im_end|>`` into its id."""
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        if len(data) > MAX_TEXT_BYTES:
            raise ValidationError(f"text of {len(data)} bytes is too long to tokenize", param="text")
        capacity = len(data) + 8
        while True:
            buf = ffi.new("llama_token[]", capacity)
            n = self._lib.llama_tokenize(self.ptr, data, len(data), buf, capacity, add_special, parse_special)
            if n >= 0:
                return ffi.unpack(buf, n)
            if -n <= capacity:  # INT32_MIN: overflow inside llama.cpp
                raise ValidationError("text produces too many tokens", param="text")
            capacity = -n

    def detokenize(self, tokens: Sequence[int], *, remove_special: bool = False,
                   unparse_special: bool = False) -> bytes:
        """The bytes ``tokens`` spell (possibly ending inside a UTF-8 character)."""
        ids = self.check_tokens(tokens)
        arr = ffi.from_buffer("llama_token[]", ids)
        capacity = max(16, len(ids) * 8)
        while True:
            buf = ffi.new("char[]", capacity)
            n = self._lib.llama_detokenize(self.ptr, arr, len(ids), buf, capacity, remove_special, unparse_special)
            if n >= 0:
                return ffi.buffer(buf, n)[:]
            capacity = -n

    def token_to_piece(self, token: int, *, special: bool = True, lstrip: int = 0) -> bytes:
        """The bytes of one token. ``special`` renders control tokens as their text."""
        self.check_tokens([token])
        buf = ffi.new("char[]", 64)
        n = self._lib.llama_token_to_piece(self.ptr, token, buf, 64, lstrip, special)
        if n < 0:
            buf = ffi.new("char[]", -n)
            n = self._lib.llama_token_to_piece(self.ptr, token, buf, -n, lstrip, special)
        return ffi.buffer(buf, n)[:]

    @property
    def pieces(self) -> list[bytes]:
        """Every token's bytes (special tokens rendered), computed once: a list index is
        the cheapest way to turn a sampled token into output in the generation loop."""
        if self._pieces is None:
            to_piece, ptr, buf = self._lib.llama_token_to_piece, self.ptr, ffi.new("char[]", 256)
            pieces = []
            for token in range(self.n_tokens):  # ids are in range by construction: no checks
                n = to_piece(ptr, token, buf, 256, 0, True)
                pieces.append(ffi.buffer(buf, n)[:] if n >= 0 else self.token_to_piece(token))
            self._pieces = pieces
        return self._pieces

    def check_tokens(self, tokens: Iterable[int]) -> np.ndarray:
        """Tokens as an int32 array; ids outside the vocabulary raise ValidationError."""
        try:
            ids = np.ascontiguousarray(tokens if isinstance(tokens, np.ndarray) else list(tokens), dtype=np.int64)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValidationError(f"tokens must be integers: {exc}", param="tokens") from None
        if ids.ndim != 1:
            raise ValidationError("tokens must be a flat sequence of integers", param="tokens")
        if ids.size and (ids.min() < 0 or ids.max() >= self.n_tokens):
            bad = int(ids[(ids < 0) | (ids >= self.n_tokens)][0])
            raise ValidationError(f"token id {bad} is outside the vocabulary [0, {self.n_tokens})",
                                  param="tokens")
        return ids.astype(np.int32)

    # --- special tokens ---------------------------------------------------------------
    def _special(self, name: str) -> int | None:
        token = getattr(self._lib, f"llama_vocab_{name}")(self.ptr)
        return None if token < 0 else int(token)

    @property
    def bos(self) -> int | None:
        return self._special("bos")

    @property
    def eos(self) -> int | None:
        return self._special("eos")

    @property
    def eot(self) -> int | None:
        return self._special("eot")

    @property
    def sep(self) -> int | None:
        return self._special("sep")

    @property
    def nl(self) -> int | None:
        return self._special("nl")

    @property
    def pad(self) -> int | None:
        return self._special("pad")

    def fim(self, part: str) -> int | None:
        """Fill-in-the-middle tokens: ``part`` is pre, suf, mid, pad, rep or sep."""
        if part not in ("pre", "suf", "mid", "pad", "rep", "sep"):
            raise ValidationError(f"unknown fill-in-the-middle part {part!r}", param="part")
        return self._special(f"fim_{part}")

    @property
    def add_bos(self) -> bool:
        return bool(self._lib.llama_vocab_get_add_bos(self.ptr))

    @property
    def add_eos(self) -> bool:
        return bool(self._lib.llama_vocab_get_add_eos(self.ptr))

    def is_eog(self, token: int) -> bool:
        """True for any end-of-generation token (EOS, EOT, ``<|im_end|>``...)."""
        return 0 <= token < self.n_tokens and bool(self._lib.llama_vocab_is_eog(self.ptr, token))

    def is_control(self, token: int) -> bool:
        return 0 <= token < self.n_tokens and bool(self._lib.llama_vocab_is_control(self.ptr, token))

    @property
    def eog_tokens(self) -> frozenset[int]:
        is_eog, ptr = self._lib.llama_vocab_is_eog, self.ptr
        return frozenset(t for t in range(self.n_tokens) if is_eog(ptr, t))

    def token_text(self, token: int) -> str:
        self.check_tokens([token])
        return ffi.string(self._lib.llama_vocab_get_text(self.ptr, token)).decode("utf-8", errors="replace")

    @property
    def type(self) -> int:
        """enum llama_vocab_type: 0 none, 1 SPM, 2 BPE, 3 WPM, 4 UGM, 5 RWKV, 6 PLAMO2."""
        return int(self._lib.llama_vocab_type(self.ptr))
