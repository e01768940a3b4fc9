"""The raw-handle layer: the only part of llama_ffi that touches the C library.

``_lib`` loads and checks libllama; each other module wraps one kind of C handle with one
Python owner, ``close()``, a context manager and a safe ``__del__``.
"""

from ._lib import library_path, load_library
from .batch import Batch
from .context import Context
from .devices import Device, devices, system_info
from .lora import LoraAdapter
from .model import Model
from .params import ContextParams, ModelParams
from .sampler import Sampler, SamplerChain
from .vocab import Vocab

__all__ = [
    "Batch",
    "Context",
    "ContextParams",
    "Device",
    "LoraAdapter",
    "Model",
    "ModelParams",
    "Sampler",
    "SamplerChain",
    "Vocab",
    "devices",
    "library_path",
    "load_library",
    "system_info",
]
