"""LoRA adapters at runtime: loaded once, chosen per call, KV cache never mixes weights."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

GGUF_PY = Path(__file__).resolve().parents[1] / "vendor" / "llama.cpp" / "gguf-py"
PROMPT = "The capital of France is"


def make_adapter(path: Path, seed: int) -> Path:
    """A small random LoRA on the last FFN projections of SmolLM2 (writer: llama.cpp's gguf-py)."""
    if str(GGUF_PY) not in sys.path:
        sys.path.insert(0, str(GGUF_PY))
    gguf = pytest.importorskip("gguf")
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", 8.0)
    rng = np.random.default_rng(seed)
    for layer in (27, 28, 29):
        writer.add_tensor(f"blk.{layer}.ffn_down.weight.lora_a", rng.standard_normal((8, 1536)).astype(np.float32) * 0.5)
        writer.add_tensor(f"blk.{layer}.ffn_down.weight.lora_b", rng.standard_normal((576, 8)).astype(np.float32) * 0.5)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_loras_per_call(llama, tmp_path):
    if not GGUF_PY.exists():
        pytest.skip("llama.cpp's gguf-py not vendored")
    first = llama.load_lora(make_adapter(tmp_path / "a.gguf", 0))
    second = llama.load_lora(make_adapter(tmp_path / "b.gguf", 1))
    kw = {"max_tokens": 6, "temperature": 0.0}
    base = llama.generate_text(PROMPT, **kw)
    with_first = llama.generate_text(PROMPT, loras={first: 1.0}, **kw)
    assert with_first != base
    assert llama.stats.last_reused == 0  # the cache held keys/values of other weights
    assert llama.generate_text(PROMPT, loras={first: 1.0}, **kw) == with_first
    both = llama.generate_text(PROMPT, loras={first: 1.0, second: 1.0}, **kw)
    assert both != with_first
    assert llama.generate_text(PROMPT, loras={first: 0.0}, **kw) == base
    assert llama.generate_text(PROMPT, **kw) == base  # back to no adapter
    assert llama.context.loras == {}
