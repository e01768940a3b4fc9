"""Where the default model lives (fetched by scripts/fetch_model.py): what ``Llama()`` with no
path loads, and the CLI's default ``--model``."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ModelLoadError

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> Path:
    """$LLAMA_FFI_MODEL, else the repository's models/ folder."""
    env = os.environ.get("LLAMA_FFI_MODEL")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "models" / DEFAULT_MODEL_NAME
    if not path.exists():
        raise ModelLoadError(f"default model not found at {path}; run `python scripts/fetch_model.py` "
                             "or set LLAMA_FFI_MODEL")
    return path
