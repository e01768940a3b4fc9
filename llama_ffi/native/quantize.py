"""Quantize a GGUF model with ``llama_model_quantize`` (what ``llama-quantize`` does).

>>> quantize("model-f16.gguf", "model-q8_0.gguf", "Q8_0")

The target type is checked in Python against ``enum llama_ftype`` as the generated
declarations carry it (so a name llama.cpp does not know never reaches C), the input goes
through the GGUF guard first, and an already quantized input is refused unless
``allow_requantize=True`` (requantizing loses quality: quantize from F16/BF16/F32 if you can).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import LlamaError, ModelLoadError, ValidationError
from ._lib import ffi, get_lib
from .gguf_guard import check_gguf_file

__all__ = ["FTYPES", "ftype_name", "quantize"]


def _ftypes() -> dict[str, int]:
    """``{"Q8_0": 7, "F16": 1, ...}`` from the declarations' ``enum llama_ftype``."""
    out = {}
    for name, value in ffi.typeof("enum llama_ftype").relements.items():
        for prefix in ("LLAMA_FTYPE_MOSTLY_", "LLAMA_FTYPE_ALL_"):
            if name.startswith(prefix):
                out[name[len(prefix):]] = value
    return dict(sorted(out.items(), key=lambda item: item[1]))


FTYPES: dict[str, int] = _ftypes()  # no library load: the enum lives in the declarations
_UNQUANTIZED = {FTYPES["F32"], FTYPES["F16"], FTYPES["BF16"]}


def ftype_name(ftype: str | int) -> str:
    """The canonical name of ``ftype`` (a name in any case, or an enum value)."""
    if isinstance(ftype, str):
        key = ftype.upper().removeprefix("LLAMA_FTYPE_MOSTLY_").removeprefix("LLAMA_FTYPE_ALL_")
        if key in FTYPES:
            return key
    elif isinstance(ftype, int) and not isinstance(ftype, bool):
        for name, value in FTYPES.items():
            if value == ftype:
                return name
    raise ValidationError(f"unknown quantization type {ftype!r}; one of: {', '.join(FTYPES)}", param="ftype")


def quantize(src: str | os.PathLike, dst: str | os.PathLike, ftype: str | int = "Q8_0", nthread: int = 0, *,
             allow_requantize: bool = False, quantize_output_tensor: bool = True, pure: bool = False,
             keep_split: bool = False) -> Path:
    """Write ``src`` quantized to ``ftype`` as ``dst``; return ``dst``.

    ``nthread`` 0 uses every core. ``pure``: every tensor to ``ftype`` (no per-tensor
    mixes); ``keep_split``: as many shards as the input. Raises ``ValidationError`` for
    bad arguments, ``ModelLoadError`` for an unreadable input or a failed quantization.
    """
    name = ftype_name(ftype)
    if isinstance(nthread, bool) or not isinstance(nthread, int) or not 0 <= nthread <= 1024:
        raise ValidationError(f"nthread must be an integer in [0, 1024], got {nthread!r}", param="nthread")
    src, dst = Path(src), Path(dst)
    metadata = check_gguf_file(src)
    if dst.exists() and dst.resolve() == src.resolve():
        raise ValidationError("dst must not be the input file (llama.cpp reads it while writing)", param="dst")
    if not dst.parent.is_dir():
        raise ValidationError(f"no such directory: {dst.parent}", param="dst")
    current = metadata.get("general.file_type")
    if isinstance(current, int) and current not in _UNQUANTIZED and not allow_requantize:
        raise ValidationError(f"{src.name} is already quantized ({_name_or(current)}); quantize from an "
                              "F16/BF16/F32 file, or pass allow_requantize=True", param="allow_requantize")
    lib = get_lib()
    params = ffi.new("llama_model_quantize_params *", lib.llama_model_quantize_default_params())
    params.nthread, params.ftype = nthread, FTYPES[name]
    params.allow_requantize, params.quantize_output_tensor = bool(allow_requantize), bool(quantize_output_tensor)
    params.pure, params.keep_split = bool(pure), bool(keep_split)
    with _ErrorLines() as errors:
        status = lib.llama_model_quantize(os.fsencode(src), os.fsencode(dst), params)
    if status != 0:
        reason = errors.lines[-1] if errors.lines else "enable logging for llama.cpp's reason"
        raise ModelLoadError(f"quantizing {src} to {name} failed (status {status}): {reason}")
    return dst


def _name_or(value: int) -> str:
    try:
        return ftype_name(value)
    except LlamaError:
        return f"file type {value}"


class _ErrorLines(logging.Handler):
    """Collects llama.cpp's ERROR log lines during one call, to put its reason in the exception."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage().strip())

    def __enter__(self) -> "_ErrorLines":
        logging.getLogger("llama_ffi").addHandler(self)
        return self

    def __exit__(self, *exc_info) -> None:
        logging.getLogger("llama_ffi").removeHandler(self)
