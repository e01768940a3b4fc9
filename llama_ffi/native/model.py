"""``Model``: loaded weights, their metadata and vocabulary."""

from __future__ import annotations

import html
import os
from pathlib import Path

from ..errors import CancelledError, ModelLoadError
from ._lib import ffi, get_lib
from .gguf_guard import check_gguf_file
from .handle import Handle
from .params import SPLIT_MODES, ModelParams, _lookup
from .rpc import model_devices
from .vocab import Vocab


def _read_c_string(fill, initial: int = 256) -> str:
    """Call ``fill(buf, size)`` (snprintf-style: returns the length it needed) until it fits."""
    size = initial
    while True:
        buf = ffi.new("char[]", size)
        n = fill(buf, size)
        if n < 0:
            return ""
        if n < size:
            return ffi.string(buf, n).decode("utf-8", errors="replace")
        size = n + 1


class _ProgressBridge:
    """Turns llama.cpp's progress callback into a Python callable; stores its exceptions."""

    def __init__(self, progress):
        self.progress = progress
        self.error: BaseException | None = None
        self.cancelled = False
        self.c_callback = ffi.callback("llama_progress_callback", self._on_progress)

    def _on_progress(self, fraction, _user_data):
        try:
            keep_going = self.progress(float(fraction))
            if keep_going is False:
                self.cancelled = True
                return False
            return True
        except BaseException as exc:  # noqa: BLE001 - re-raised once the C call returns
            self.error = exc
            return False


class Model(Handle):
    """Weights loaded from a GGUF file.

    >>> with Model.load("model.gguf", n_gpu_layers=0) as model:
    ...     model.vocab.tokenize("hello")
    """

    _kind = "model"

    def __init__(self, path: str | os.PathLike, params: ModelParams | None = None) -> None:
        params = params or ModelParams()
        params.validate()
        path = Path(path)
        check_gguf_file(path)  # refuse broken files before llama.cpp parses them
        lib = get_lib()
        c_params = lib.llama_model_default_params()
        keep_alive = self._fill_params(c_params, params)
        ptr = lib.llama_model_load_from_file(os.fsencode(path), c_params)
        bridge = keep_alive.get("bridge")
        if bridge is not None and bridge.error is not None:
            if ptr != ffi.NULL:
                lib.llama_model_free(ptr)
            raise bridge.error
        if ptr == ffi.NULL:
            if bridge is not None and bridge.cancelled:
                raise CancelledError(f"loading {path} was cancelled by the progress callback")
            raise ModelLoadError(f"llama.cpp could not load {path} (enable logging for its reason)")
        self._adopt(ptr)
        self.path = path
        self.params = params
        self._lib = lib
        self.vocab = Vocab(self, lib.llama_model_get_vocab(ptr))
        self._metadata: dict[str, str] | None = None

    @classmethod
    def load(cls, path: str | os.PathLike, **params) -> "Model":
        """Load with keyword parameters (see :class:`ModelParams`)."""
        return cls(path, ModelParams(**params))

    @staticmethod
    def _fill_params(c_params, params: ModelParams) -> dict:
        """Copy ``params`` into the C struct; return what must stay alive during the load."""
        keep: dict = {}
        if params.n_gpu_layers is not None:
            c_params.n_gpu_layers = params.n_gpu_layers
        c_params.split_mode = _lookup(SPLIT_MODES, params.split_mode, "split_mode")
        c_params.main_gpu = params.main_gpu
        c_params.vocab_only = params.vocab_only
        c_params.check_tensors = params.check_tensors
        c_params.load_mode = _load_mode(params.use_mmap, params.use_mlock)
        if params.tensor_split:
            keep["tensor_split"] = ffi.new("float[]", list(params.tensor_split) + [0.0] * 16)
            c_params.tensor_split = keep["tensor_split"]
        if params.rpc_servers or params.devices is not None:
            # A NULL-terminated ggml_backend_dev_t array; llama.cpp reads it during the load.
            keep["devices"] = ffi.new("ggml_backend_dev_t[]",
                                      model_devices(params.rpc_servers, params.devices) + [ffi.NULL])
            c_params.devices = keep["devices"]
        if params.kv_overrides:
            keep["kv"] = _kv_overrides(params.kv_overrides)
            c_params.kv_overrides = keep["kv"]
        if params.progress is not None:  # no default bar here: Llama and the CLI pass one
            keep["bridge"] = _ProgressBridge(params.progress)
            c_params.progress_callback = keep["bridge"].c_callback
        return keep

    def _free(self, ptr) -> None:
        self._lib.llama_model_free(ptr)

    # --- metadata -------------------------------------------------------------------
    @property
    def metadata(self) -> dict[str, str]:
        """Every GGUF key/value as strings (arrays are summarised by llama.cpp)."""
        if self._metadata is None:
            ptr, lib = self.ptr, self._lib
            out = {}
            for i in range(lib.llama_model_meta_count(ptr)):
                key = _read_c_string(lambda b, n: lib.llama_model_meta_key_by_index(ptr, i, b, n))
                out[key] = _read_c_string(lambda b, n: lib.llama_model_meta_val_str_by_index(ptr, i, b, n))
            self._metadata = out
        return self._metadata

    def chat_template(self, name: str | None = None) -> str | None:
        """The chat template the GGUF carries (``name`` picks a variant such as ``tool_use``)."""
        raw = self._lib.llama_model_chat_template(self.ptr, name.encode() if name else ffi.NULL)
        return None if raw == ffi.NULL else ffi.string(raw).decode("utf-8", errors="replace")

    @property
    def chat_templates(self) -> dict[str, str]:
        """All templates by name: ``"default"`` plus named variants."""
        out = {}
        default = self.chat_template()
        if default is not None:
            out["default"] = default
        prefix = "tokenizer.chat_template."
        for key in self.metadata:
            if key.startswith(prefix):
                template = self.chat_template(key[len(prefix):])
                if template is not None:
                    out[key[len(prefix):]] = template
        return out

    # --- sizes and facts ------------------------------------------------------------
    @property
    def description(self) -> str:
        return _read_c_string(lambda b, n: self._lib.llama_model_desc(self.ptr, b, n))

    @property
    def architecture(self) -> str:
        return self.metadata.get("general.architecture", "")

    @property
    def n_params(self) -> int:
        return int(self._lib.llama_model_n_params(self.ptr))

    @property
    def size(self) -> int:
        """Bytes of tensor data."""
        return int(self._lib.llama_model_size(self.ptr))

    @property
    def n_ctx_train(self) -> int:
        return self._lib.llama_model_n_ctx_train(self.ptr)

    @property
    def n_embd(self) -> int:
        return self._lib.llama_model_n_embd(self.ptr)

    @property
    def n_layer(self) -> int:
        return self._lib.llama_model_n_layer(self.ptr)

    @property
    def n_head(self) -> int:
        return self._lib.llama_model_n_head(self.ptr)

    @property
    def n_cls_out(self) -> int:
        return self._lib.llama_model_n_cls_out(self.ptr)

    @property
    def has_encoder(self) -> bool:
        return bool(self._lib.llama_model_has_encoder(self.ptr))

    @property
    def has_decoder(self) -> bool:
        return bool(self._lib.llama_model_has_decoder(self.ptr))

    @property
    def is_recurrent(self) -> bool:
        return bool(self._lib.llama_model_is_recurrent(self.ptr))

    @property
    def decoder_start_token(self) -> int:
        return self._lib.llama_model_decoder_start_token(self.ptr)

    def _describe(self) -> str:
        return f"{self.path.name!r} {self.description}"

    # --- notebooks ------------------------------------------------------------------
    def placement(self) -> str:
        """Where the weights run, from the load parameters: ``"CPU"``, or the GPUs and RPC
        workers offered the offloaded layers."""
        params = self.params
        if params.vocab_only:
            return "none (vocabulary only)"
        if params.n_gpu_layers == 0 or not self._lib.llama_supports_gpu_offload():
            return "CPU"
        from .devices import devices

        local = [d.name for d in devices() if d.type in ("gpu", "igpu")]
        if params.devices is not None:
            local = [d for d in local if d in params.devices]
        names = [f"RPC {s}" for s in params.rpc_servers or ()] + local
        if not names:
            return "CPU"
        layers = "all layers" if params.n_gpu_layers in (None, -1) else f"{params.n_gpu_layers} layers"
        return f"{', '.join(names)} ({layers}; rest on CPU)"

    def summary(self) -> dict[str, str]:
        """Facts for people: name, architecture, parameters, size, context, devices."""
        meta = self.metadata
        return {
            "name": meta.get("general.name") or self.path.name,
            "file": str(self.path),
            "architecture": self.architecture,
            "parameters": _human(self.n_params, ("", "K", "M", "B", "T"), 1000),
            "size": _human(self.size, ("B", "KiB", "MiB", "GiB", "TiB"), 1024) + f" ({self.description})",
            "context (trained)": f"{self.n_ctx_train:,} tokens",
            "devices": self.placement(),
        }

    def _repr_html_(self) -> str:
        """A small table in Jupyter; never raises (a closed model says so)."""
        try:
            if self.closed:
                return f"<code>{html.escape(repr(self))}</code>"
            rows = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
                           f"<td style='text-align:left'>{html.escape(v)}</td></tr>"
                           for k, v in self.summary().items())
            return f"<table><caption style='text-align:left'><b>llama_ffi.Model</b></caption>{rows}</table>"
        except Exception:  # noqa: BLE001 - a display hook must not raise
            return f"<code>{html.escape(repr(self))}</code>"


def _human(value: float, units: tuple[str, ...], step: int) -> str:
    for unit in units[:-1]:
        if abs(value) < step:
            return f"{value:.0f} {unit}".rstrip() if unit in ("", "B") else f"{value:.1f} {unit}"
        value /= step
    return f"{value:.1f} {units[-1]}"


def _load_mode(use_mmap: bool, use_mlock: bool) -> int:
    """enum llama_load_mode, which replaced use_mmap/use_mlock: AUTO(-1) picks mmap where it can."""
    if use_mmap:
        return 3 if use_mlock else -1  # MMAP_MLOCK / AUTO
    return 2 if use_mlock else 0  # MLOCK / NONE


def _kv_overrides(overrides) -> object:
    """A C array of ``llama_model_kv_override`` ending with an empty key, as llama.cpp expects."""
    arr = ffi.new("struct llama_model_kv_override[]", len(overrides) + 1)
    for item, (key, value) in zip(arr, overrides.items()):
        item.key = key.encode()
        if isinstance(value, bool):
            item.tag, item.val_bool = 2, value
        elif isinstance(value, int):
            item.tag, item.val_i64 = 0, value
        elif isinstance(value, float):
            item.tag, item.val_f64 = 1, value
        else:
            item.tag, item.val_str = 3, value.encode()
    return arr

