"""llama_ffi: a pure-Python binding for llama.cpp over a prebuilt libllama.

Layers, bottom up (docs/architecture.md; tests/test_layering.py keeps imports pointing down):
  errors.py    the exception tree
  native/      the C boundary: loads libllama, one Python owner per C handle
  grammar/     GBNF and JSON Schema, validated in Python before C sees them
  generation/  one request's sampling, stops, logprobs and output text (Llama and Engine)
  chat/        chat templates, model families, reasoning and tool calls
  engine/      continuous batching: many sequences in one context
  llama/       the high-level ``Llama`` API (llama-cpp-python's names and shapes)
  server/      the OpenAI-compatible HTTP server over engine/
  cli/         the ``llama-ffi`` command; display/: notebook views and progress bars

Importing is cheap: nothing is loaded and no library is opened until first use.
"""

from __future__ import annotations

import importlib

from .errors import (
    CancelledError,
    ClosedError,
    ContextOverflowError,
    DecodeError,
    GenerationError,
    GrammarError,
    KVCacheFullError,
    LibraryNotFoundError,
    LibraryVersionError,
    LlamaError,
    ModelLoadError,
    OverloadedError,
    RpcError,
    StateError,
    TemplateError,
    ValidationError,
)

__version__ = "0.1.0"

# Public name -> module that defines it; imported on first attribute access (PEP 562),
# so `import llama_ffi` does not pay for numpy, jinja2 or the library.
_LAZY = {
    "Batch": "llama_ffi.native",
    "Context": "llama_ffi.native",
    "ContextParams": "llama_ffi.native",
    "LoraAdapter": "llama_ffi.native",
    "Model": "llama_ffi.native",
    "ModelParams": "llama_ffi.native",
    "Sampler": "llama_ffi.native",
    "SamplerChain": "llama_ffi.native",
    "Vocab": "llama_ffi.native",
    "devices": "llama_ffi.native",
    "library_path": "llama_ffi.native",
    "load_library": "llama_ffi.native",
    "system_info": "llama_ffi.native",
    "default_model_path": "llama_ffi.llama.default_model",
    "Engine": "llama_ffi.engine",
    "EngineConfig": "llama_ffi.engine",
    "EnginePool": "llama_ffi.engine",
    "CompletionOptions": "llama_ffi.generation",
    "BaseLlamaCache": "llama_ffi.llama",
    "Llama": "llama_ffi.llama",
    "LlamaCache": "llama_ffi.llama",
    "LlamaDraftModel": "llama_ffi.generation.drafting",  # llama_cpp.llama_speculative's names
    "Llama3VisionAlphaChatHandler": "llama_ffi.llama.vision",  # llama_cpp.llama_chat_format's vision handlers
    "Llava15ChatHandler": "llama_ffi.llama.vision",
    "Llava16ChatHandler": "llama_ffi.llama.vision",
    "MiniCPMv26ChatHandler": "llama_ffi.llama.vision",
    "MoondreamChatHandler": "llama_ffi.llama.vision",
    "MtmdChatHandler": "llama_ffi.llama.vision",
    "NanoLlavaChatHandler": "llama_ffi.llama.vision",
    "ObsidianChatHandler": "llama_ffi.llama.vision",
    "Qwen25VLChatHandler": "llama_ffi.llama.vision",
    "LlamaGrammar": "llama_ffi.grammar",
    "LlamaPromptLookupDecoding": "llama_ffi.generation.drafting",
    "LlamaRAMCache": "llama_ffi.llama",
    "LlamaSettings": "llama_ffi.llama",
    "LlamaState": "llama_ffi.llama",
    "LlamaTokenizer": "llama_ffi.llama",
    "SamplingParams": "llama_ffi.generation",
    "UnifiedLLM": "llama_ffi.llama.unified",
}

__all__ = sorted([
    "CancelledError", "ClosedError", "ContextOverflowError", "DecodeError", "GenerationError",
    "GrammarError", "KVCacheFullError", "LibraryNotFoundError", "LibraryVersionError",
    "LlamaError", "ModelLoadError", "OverloadedError", "RpcError", "StateError", "TemplateError", "ValidationError",
    "__version__", *_LAZY,
])


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'llama_ffi' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
