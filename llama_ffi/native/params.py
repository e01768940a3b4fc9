"""Keyword-only parameter groups for loading a model and creating a context.

``None`` means "llama.cpp's default". Each group turns itself into the C struct in one
place (``to_c``), so no constructor elsewhere copies dozens of loose arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Callable, Mapping, Sequence

from ..errors import ValidationError
from .rpc import parse_endpoint

# enum llama_split_mode
SPLIT_MODES = {"none": 0, "layer": 1, "row": 2, "tensor": 3}  # tensor: experimental (a meta device)
# enum llama_pooling_type
POOLING_TYPES = {"unspecified": -1, "none": 0, "mean": 1, "cls": 2, "last": 3, "rank": 4}
# enum llama_flash_attn_type
FLASH_ATTN = {"auto": -1, "off": 0, "on": 1, False: 0, True: 1, None: -1}
# enum ggml_type for the KV cache
KV_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "bf16": 30}
# enum llama_rope_scaling_type
ROPE_SCALING = {"unspecified": -1, "none": 0, "linear": 1, "yarn": 2, "longrope": 3}


def _lookup(table: Mapping, value, param: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value in table.values():
        return value
    try:
        return table[value.lower() if isinstance(value, str) else value]
    except (KeyError, TypeError):
        known = ", ".join(repr(k) for k in table if isinstance(k, str))
        raise ValidationError(f"{param}={value!r} is not one of {known}", param=param) from None


def _check_range(name: str, value, low: int, high: int) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high):
        raise ValidationError(f"{name} must be an integer in [{low}, {high}], got {value!r}", param=name)


@dataclass(kw_only=True)
class ModelParams:
    """How to load a model's weights.

    ``n_gpu_layers=None`` offloads every layer when a GPU backend exists (llama.cpp's
    default); 0 keeps everything on the CPU.

    ``rpc_servers`` (``["10.0.0.2:50052", ...]``) adds the devices of RPC workers
    (``llama-ffi rpc-server``) in front of the local GPUs, and the offloaded
    layers are spread over all of them. ``devices`` names the local devices to use
    (``[d.name for d in llama_ffi.native.devices()]``; ``[]``: none, only the CPU and the
    RPC workers); ``None`` means every local GPU.

    ``progress`` is called with the fraction loaded (return ``False`` to cancel). ``None``:
    no callback, so nothing is drawn; ``Llama`` and the CLI pass a bar when a person is
    watching (``llama_ffi.display.progress``).
    """

    n_gpu_layers: int | None = None
    split_mode: str | int = "layer"
    main_gpu: int = 0
    tensor_split: Sequence[float] | None = None
    vocab_only: bool = False
    use_mmap: bool = True
    use_mlock: bool = False
    check_tensors: bool = False
    kv_overrides: Mapping[str, bool | int | float | str] | None = None
    rpc_servers: Sequence[str] | None = None
    devices: Sequence[str] | None = None
    progress: Callable[[float], bool | None] | None = field(default=None, repr=False)

    def validate(self) -> None:
        _check_range("n_gpu_layers", self.n_gpu_layers, -1, 1 << 20)
        _check_range("main_gpu", self.main_gpu, 0, 1024)
        _lookup(SPLIT_MODES, self.split_mode, "split_mode")
        if self.tensor_split is not None and (
                len(self.tensor_split) > 256 or any(not (x >= 0) for x in self.tensor_split)):
            raise ValidationError("tensor_split must be at most 256 non-negative numbers", param="tensor_split")
        if isinstance(self.rpc_servers, str) or isinstance(self.devices, str):
            raise ValidationError("rpc_servers and devices take a list of strings", param="rpc_servers")
        for endpoint in self.rpc_servers or ():
            parse_endpoint(endpoint)
        if self.devices is not None and not all(isinstance(d, str) for d in self.devices):
            raise ValidationError("devices must be device names (strings)", param="devices")
        for key, value in (self.kv_overrides or {}).items():
            if not isinstance(key, str) or len(key.encode()) >= 128:
                raise ValidationError(f"kv_overrides key {key!r} must be a string under 128 bytes",
                                      param="kv_overrides")
            if isinstance(value, str) and len(value.encode()) >= 128:
                raise ValidationError(f"kv_overrides[{key!r}] must be under 128 bytes", param="kv_overrides")
            if not isinstance(value, (bool, int, float, str)):
                raise ValidationError(f"kv_overrides[{key!r}] has unsupported type {type(value).__name__}",
                                      param="kv_overrides")


@dataclass(kw_only=True)
class ContextParams:
    """How to build an inference context over a loaded model."""

    n_ctx: int = 4096
    n_batch: int = 2048
    n_ubatch: int = 512
    n_seq_max: int = 1
    n_threads: int | None = None
    n_threads_batch: int | None = None
    embeddings: bool = False
    pooling_type: str | int = "unspecified"
    flash_attn: str | bool | None = "auto"
    type_k: str | int = "f16"
    type_v: str | int = "f16"
    offload_kqv: bool = True
    kv_unified: bool = False
    swa_full: bool = False
    rope_scaling_type: str | int = "unspecified"
    rope_freq_base: float = 0.0
    rope_freq_scale: float = 0.0
    yarn_ext_factor: float = -1.0
    yarn_attn_factor: float = -1.0
    yarn_beta_fast: float = -1.0
    yarn_beta_slow: float = -1.0
    yarn_orig_ctx: int = 0
    no_perf: bool = True

    def validate(self) -> None:
        _check_range("n_ctx", self.n_ctx, 0, 1 << 24)
        _check_range("n_batch", self.n_batch, 1, 1 << 20)
        _check_range("n_ubatch", self.n_ubatch, 1, 1 << 20)
        _check_range("n_seq_max", self.n_seq_max, 1, 256)  # LLAMA_MAX_SEQ in llama-cparams.h
        _check_range("n_threads", self.n_threads, 1, 512)
        _check_range("n_threads_batch", self.n_threads_batch, 1, 512)
        _check_range("yarn_orig_ctx", self.yarn_orig_ctx, 0, 1 << 24)
        for name in ("pooling_type", "flash_attn", "type_k", "type_v", "rope_scaling_type"):
            self._enum(name)
        if self._enum("type_v") not in (KV_TYPES["f32"], KV_TYPES["f16"], KV_TYPES["bf16"]) \
                and self._enum("flash_attn") == FLASH_ATTN["off"]:
            raise ValidationError("a quantized V cache (type_v) needs flash attention; use flash_attn='on' "
                                  "or 'auto'", param="type_v")

    def _enum(self, name: str) -> int:
        table = {"pooling_type": POOLING_TYPES, "flash_attn": FLASH_ATTN, "type_k": KV_TYPES,
                 "type_v": KV_TYPES, "rope_scaling_type": ROPE_SCALING}[name]
        return _lookup(table, getattr(self, name), name)

    def c_values(self) -> dict[str, object]:
        """Field values for ``struct llama_context_params`` (None left at llama.cpp's default)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["pooling_type"] = self._enum("pooling_type")
        values["flash_attn_type"] = self._enum("flash_attn")
        del values["flash_attn"]
        values["type_k"], values["type_v"] = self._enum("type_k"), self._enum("type_v")
        values["rope_scaling_type"] = self._enum("rope_scaling_type")
        return {k: v for k, v in values.items() if v is not None}
