"""Shared fixtures: the real library, the real default model, the pinned llama.cpp tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LLAMA_CPP_TREE = REPO / "vendor" / "llama.cpp"
DEFAULT_MODEL = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
VENDOR_BIN = REPO / "vendor" / "bin"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def llama_cpp_tree() -> Path:
    if not (LLAMA_CPP_TREE / "include" / "llama.h").exists():
        pytest.skip("pinned llama.cpp tree missing: run scripts/setup.sh")
    return LLAMA_CPP_TREE


@pytest.fixture(scope="session")
def model_path() -> Path:
    path = Path(os.environ.get("LLAMA_FFI_MODEL", DEFAULT_MODEL))
    if not path.exists():
        pytest.skip("default model missing: run scripts/fetch_model.py")
    return path


@pytest.fixture(scope="session")
def model(model_path):
    """One SmolLM2 model for the whole session (CPU only, so results are reproducible)."""
    from llama_ffi import Model

    with Model.load(model_path, n_gpu_layers=0) as loaded:
        yield loaded


@pytest.fixture
def context(model):
    from llama_ffi import Context, ContextParams

    with Context(model, ContextParams(n_ctx=512, n_batch=512, n_seq_max=4)) as ctx:
        yield ctx


def native_tool(name: str) -> Path:
    path = VENDOR_BIN / name
    if not path.exists():
        pytest.skip(f"{name} not built: run scripts/build_libllama.py --tools simple")
    return path


# --- the high-level Llama (tests/test_llama_*.py, test_compat_llama_cpp_python.py, test_cli.py) ---
@pytest.fixture(scope="session")
def llama(model_path):
    """One Llama for the session: small context, CPU, quiet. Tests leave it usable."""
    from llama_ffi import Llama

    with Llama(str(model_path), n_ctx=512, n_batch=256, verbose=False) as llm:
        yield llm


@pytest.fixture(scope="session")
def embedder(model_path):
    """The same model with embeddings on (mean pooling), for embedding tests."""
    from llama_ffi import Llama

    with Llama(str(model_path), n_ctx=512, embedding=True, pooling_type="mean", verbose=False) as llm:
        yield llm
