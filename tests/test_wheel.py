"""The platform wheel: built from vendor/lib, installed into a fresh venv with no compiler on
PATH, and used from outside the repository, it generates text with its own libllama."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Loaded from its path: scripts/ is not a package, and sys.path stays as it was.
_spec = importlib.util.spec_from_file_location("build_wheel", REPO / "scripts" / "build_wheel.py")
build_wheel = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_wheel)

# Runs inside the venv, from a temporary folder, so only the installed package can be imported.
GENERATE = r"""
import json, sys
import llama_ffi
from llama_ffi import Context, ContextParams, Model, Sampler, SamplerChain
from llama_ffi.native import library_path
from llama_ffi.native.loop import TokenLoop

with Model.load(sys.argv[1], n_gpu_layers=0, progress=lambda f: None) as model, \
        Context(model, ContextParams(n_ctx=256, n_batch=64)) as ctx, \
        SamplerChain([Sampler.greedy()]) as chain:
    loop = TokenLoop(ctx, chain)
    loop.prefill(model.vocab.tokenize("The capital of France is"))
    tokens = list(loop.run(8))
    print(json.dumps({"package": llama_ffi.__file__, "library": library_path(),
                      "text": model.vocab.detokenize(tokens).decode("utf-8", "replace"), "tokens": tokens}))
"""


@pytest.fixture(scope="module")
def cpu_wheel(tmp_path_factory) -> Path:
    lib_dir = REPO / "vendor" / "lib"
    if not (lib_dir / "libllama.so").exists():
        pytest.skip("vendor/lib missing: run scripts/build_libllama.py")
    out = tmp_path_factory.mktemp("dist")
    return build_wheel.main(["--lib-dir", str(lib_dir), "--out", str(out)])


def test_wheel_has_platform_tag_and_libraries(cpu_wheel):
    assert "-py3-none-manylinux_2_" in cpu_wheel.name and cpu_wheel.name.endswith("_x86_64.whl")
    with zipfile.ZipFile(cpu_wheel) as whl:
        names = set(whl.namelist())
        wheel_meta = next(whl.read(n).decode() for n in names if n.endswith(".dist-info/WHEEL"))
        record = next(whl.read(n).decode() for n in names if n.endswith(".dist-info/RECORD"))
    assert "Root-Is-Purelib: false" in wheel_meta
    assert {"llama_ffi/lib/libllama.so", "llama_ffi/lib/libggml.so.0",
            "llama_ffi/lib/libggml-base.so.0", "llama_ffi/lib/libggml-cpu.so.0"} <= names
    assert "llama_ffi/lib/preload.txt" not in names  # CPU build: nothing to preload
    assert all(n in record for n in names)
    print(f"\nwheel {cpu_wheel.name}: {cpu_wheel.stat().st_size / 1e6:.2f} MB")


def test_manylinux_tag_follows_glibc_and_libstdcxx():
    assert build_wheel.manylinux_tag({"GLIBC_2.2.5", "GLIBC_2.34", "GLIBCXX_3.4.29"}, "x86_64") == \
        "manylinux_2_34_x86_64"
    assert build_wheel.manylinux_tag({"GLIBC_2.34", "GLIBCXX_3.4.30"}, "x86_64") == "manylinux_2_35_x86_64"
    assert build_wheel.manylinux_tag({"GLIBC_2.14", "GLIBCXX_3.4"}, "x86_64") == "manylinux_2_17_x86_64"


def test_cuda_preload_searches_nvidia_wheels_only_when_listed(tmp_path):
    from llama_ffi.native._lib import _preload

    assert _preload(str(tmp_path), [str(tmp_path)]) == []
    (tmp_path / "preload.txt").write_text("libcudart.so.13\n")
    assert _preload(str(tmp_path), [str(tmp_path)]) == []  # named but not installed: left to the system
    stand_in = next((Path(d) / "libz.so.1" for d in ("/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib")
                     if (Path(d) / "libz.so.1").exists()), None)
    if stand_in is None:
        pytest.skip("no libz.so.1 to stand in for libcudart")
    found = tmp_path / "site" / "nvidia" / "cu13" / "lib"
    found.mkdir(parents=True)
    # A self-contained system library stands in for libcudart: only the search is under test.
    (found / "libcudart.so.13").write_bytes(stand_in.read_bytes())
    assert _preload(str(tmp_path), [str(tmp_path / "site")]) == [str(found / "libcudart.so.13")]


@pytest.mark.slow
def test_installed_wheel_generates_without_a_compiler(cpu_wheel, tmp_path, model_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # PATH holds only python: no cc, gcc, g++ or nvcc can be found, by pip or anything else.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(venv / "bin" / "python")
    for tool in ("cc", "gcc", "g++", "c++", "nvcc"):
        assert not (bin_dir / tool).exists()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLAMA_FFI_", "PYTHON"))}
    env["PATH"] = str(bin_dir)
    work = tmp_path / "cwd"
    work.mkdir()
    # Called by its venv path: Python finds pyvenv.cfg next to the executable it was started
    # as, so the PATH symlink would run the base interpreter. --require-virtualenv makes
    # sure nothing is ever installed outside the venv.
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "--require-virtualenv",
                    "--only-binary=:all:", str(cpu_wheel)], check=True, env=env, cwd=work, timeout=600)
    result = subprocess.run([python, "-c", GENERATE, str(model_path)], env=env, cwd=work, check=False,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    site = venv.resolve() / "lib"
    assert Path(out["package"]).resolve().is_relative_to(site), out
    assert Path(out["library"]).resolve().is_relative_to(site), out
    assert Path(out["library"]).parent.name == "lib" and len(out["tokens"]) == 8
    assert out["text"].strip()
    print(f"\nwheel {cpu_wheel.name}: {cpu_wheel.stat().st_size / 1e6:.2f} MB; "
          f"generated {out['text']!r} with {out['library']}")


def test_cuda_flag_must_match_the_build(tmp_path):
    lib_dir = REPO / "vendor" / "lib"
    if not (lib_dir / "libllama.so").exists():
        pytest.skip("vendor/lib missing: run scripts/build_libllama.py")
    with pytest.raises(SystemExit, match="no libggml-cuda"):
        build_wheel.plan(lib_dir, cuda=True)


def test_cuda_metadata_names_nvidia_wheels():
    meta = "Metadata-Version: 2.4\nName: llama-ffi\nVersion: 0.1.0\nRequires-Dist: cffi>=1.17\n\n# readme\n"
    out = build_wheel._rewrite_metadata(meta, "0.1.0+cu13", sorted(build_wheel.CUDA_WHEELS["13"].values()))
    assert "Version: 0.1.0+cu13\n" in out and out.endswith("\n\n# readme\n")
    assert "Requires-Dist: nvidia-cuda-runtime>=13,<14" in out and "Requires-Dist: nvidia-cublas>=13,<14" in out
