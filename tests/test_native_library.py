"""Loading libllama: search order, clear failures, refusal of a mismatched library."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from llama_ffi import LibraryNotFoundError, LibraryVersionError
from llama_ffi.native import _abi, _lib


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=full_env, timeout=120)


def test_import_loads_nothing_and_prints_nothing():
    result = run_python("""
        import logging, sys
        handlers_before = list(logging.getLogger().handlers)
        import llama_ffi
        assert "llama_ffi.native" not in sys.modules, "native layer imported eagerly"
        assert "numpy" not in sys.modules, "numpy imported eagerly"
        llama_ffi.Model  # first use imports the native layer, still without opening the library
        from llama_ffi.native import _lib
        assert _lib._lib is None, "library loaded before first use"
        assert logging.getLogger().handlers == handlers_before
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""


def test_missing_library_lists_every_place_tried(tmp_path):
    missing = tmp_path / "nope" / "libllama.so"
    result = run_python(f"""
        import llama_ffi
        from llama_ffi.native._lib import candidate_paths, _open_first
        try:
            _open_first([{str(missing)!r}, "libllama-does-not-exist.so"])
        except llama_ffi.LibraryNotFoundError as exc:
            print(exc)
            assert len(exc.tried) == 2
    """)
    assert result.returncode == 0, result.stderr
    assert str(missing) in result.stdout and "libllama-does-not-exist.so" in result.stdout


def test_search_order_starts_with_explicit_then_environment(tmp_path):
    paths = _lib.candidate_paths(tmp_path)
    assert paths[0] == str(tmp_path / "libllama.so")
    env_file, env_dir = str(tmp_path / "a.so"), str(tmp_path / "dir")
    os.environ["LLAMA_FFI_LIBRARY"], os.environ["LLAMA_FFI_LIB_DIR"] = env_file, env_dir
    try:
        paths = _lib.candidate_paths()
    finally:
        del os.environ["LLAMA_FFI_LIBRARY"], os.environ["LLAMA_FFI_LIB_DIR"]
    assert paths[:2] == [env_file, os.path.join(env_dir, "libllama.so")]
    assert paths[2].endswith(os.path.join("llama_ffi", "lib", "libllama.so"))
    assert paths[3].endswith(os.path.join("vendor", "lib", "libllama.so"))
    assert paths[-1] == "libllama.so"


def test_library_lacking_functions_is_refused(repo_root):
    # libggml-base is a real shared library without any llama_* symbol.
    ggml_base = repo_root / "vendor" / "lib" / "libggml-base.so"
    if not ggml_base.exists():
        pytest.skip("libllama not built")
    result = run_python("""
        import llama_ffi
        try:
            llama_ffi.load_library()
        except llama_ffi.LibraryVersionError as exc:
            print("refused:", exc)
    """, LLAMA_FFI_LIBRARY=str(ggml_base))
    assert result.returncode == 0, result.stderr
    assert "refused:" in result.stdout and "lacks" in result.stdout and "0c1e57098" in result.stdout


def test_loaded_library_matches_declarations():
    lib = _lib.load_library()
    assert _lib.library_path() is not None
    # every declared function resolved (load_library checked); spot-check one call
    assert _lib.ffi.string(lib.llama_print_system_info())


def test_other_commit_is_refused(monkeypatch):
    lib = _lib.load_library()
    monkeypatch.setattr(_abi, "LLAMA_CPP_COMMIT", "deadbeef1")
    with pytest.raises(LibraryVersionError, match="deadbeef1"):
        _lib._check_commit(lib, "libllama.so")


def test_changed_default_params_are_refused(monkeypatch):
    lib = _lib.load_library()
    recorded = json.loads(json.dumps(_abi.DEFAULTS))
    recorded["llama_context_params"]["values"]["n_batch"] = 12345
    monkeypatch.setattr(_abi, "DEFAULTS", recorded)
    with pytest.raises(LibraryVersionError, match="n_batch is 2048, expected 12345"):
        _lib._check_defaults(lib, "libllama.so")


def test_declarations_agree_with_compiler_layout():
    _lib._check_layout()  # raises on any difference
    assert _abi.STRUCT_LAYOUT["llama_batch"]["size"] == _lib.ffi.sizeof("struct llama_batch")
    assert "llama_context_params" in _abi.STRUCT_LAYOUT and "llama_model_params" in _abi.STRUCT_LAYOUT


def test_second_library_path_is_refused(tmp_path):
    _lib.load_library()
    with pytest.raises(LibraryVersionError, match="already loaded"):
        _lib.load_library(tmp_path / "libllama.so")


def test_library_not_found_is_an_oserror():
    assert issubclass(LibraryNotFoundError, OSError)
