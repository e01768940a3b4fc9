"""``LoraAdapter``: a LoRA adapter loaded for one model (attach it with Context.set_loras)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ModelLoadError
from ._lib import ffi
from .gguf_guard import check_gguf_file
from .handle import Handle


class LoraAdapter(Handle):
    """Adapter weights; the model keeps track of it and frees it before itself."""

    _kind = "LoRA adapter"

    def __init__(self, model, path: str | os.PathLike) -> None:
        path = Path(path)
        check_gguf_file(path)
        ptr = model._lib.llama_adapter_lora_init(model.ptr, os.fsencode(path))
        if ptr == ffi.NULL:
            raise ModelLoadError(f"could not load LoRA adapter {path} for this model "
                                 "(wrong architecture or not a LoRA GGUF)")
        self._adopt(ptr, parent=model)
        self._lib = model._lib
        self.model = model
        self.path = path

    def _free(self, ptr) -> None:
        self._lib.llama_adapter_lora_free(ptr)

    def _describe(self) -> str:
        return repr(self.path.name)
