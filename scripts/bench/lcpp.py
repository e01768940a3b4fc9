"""Makes llama-cpp-python importable over OUR libllama, for a like-for-like baseline.

Its Python package is taken from the pinned sdist (the same tarball the library was built
from), unpacked into a temporary folder that goes on the child's PYTHONPATH; its compiled
library is never built or used: ``LLAMA_CPP_LIB_PATH`` points at vendor/lib.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

from .env import VENDOR_LIB

SDIST = "llama_cpp_python-0.3.36.tar.gz"
PACKAGE_PREFIX = "llama_cpp_python-0.3.36/llama_cpp/"
DEPS = {"diskcache": "diskcache", "typing_extensions": "typing-extensions", "jinja2": "jinja2", "numpy": "numpy"}


def sources() -> list[Path]:
    """Where the package may come from, in order: $BENCH_LLAMA_CPP_PYTHON (a tarball, or a
    folder holding llama_cpp/), then the sdist cached by scripts/build_libllama.py."""
    found = []
    if os.environ.get("BENCH_LLAMA_CPP_PYTHON"):
        found.append(Path(os.environ["BENCH_LLAMA_CPP_PYTHON"]))
    cache = Path(os.environ.get("LLAMA_FFI_CACHE", Path.home() / ".cache" / "llama_ffi"))
    found.append(cache / "downloads" / SDIST)
    return found


def _unpack(source: Path, dest: Path) -> bool:
    if source.is_dir():
        if (source / "llama_cpp" / "__init__.py").exists():
            os.symlink(source / "llama_cpp", dest / "llama_cpp")
            return True
        return False
    with tarfile.open(source) as tar:
        members = []
        for m in tar.getmembers():
            # Either the sdist layout or a tarball of just llama_cpp/ (scripts/gpu/prepare.sh).
            name = m.name[len(PACKAGE_PREFIX) - len("llama_cpp/"):] if m.name.startswith(PACKAGE_PREFIX) else m.name
            if name.startswith("llama_cpp/") and "/server/" not in name:
                m.name = name
                members.append(m)
        tar.extractall(dest, members=members, filter="data")
    return (dest / "llama_cpp" / "__init__.py").exists()


def _missing_deps(path: list[str]) -> list[str]:
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*path, *inherited]))
    missing = []
    for module, dist in DEPS.items():
        if subprocess.run([sys.executable, "-c", f"import {module}"], env=env, capture_output=True).returncode:
            missing.append(dist)
    return missing


def prepare(workdir: Path) -> tuple[dict | None, str]:
    """Return (environment for a child, "") or (None, why llama-cpp-python cannot run)."""
    pkg = workdir / "lcpp"
    pkg.mkdir(parents=True, exist_ok=True)
    tried = []
    for source in sources():
        if source.exists() and _unpack(source, pkg):
            break
        tried.append(str(source))
    else:
        return None, f"llama-cpp-python package not found (tried {', '.join(tried)})"
    path = [str(pkg)]
    missing = _missing_deps(path)
    if missing:  # its light dependencies, into the same temporary folder
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(workdir / "deps"),
                        *missing], capture_output=True)
        path.append(str(workdir / "deps"))
        missing = _missing_deps(path)
        if missing:
            return None, f"llama-cpp-python needs {', '.join(missing)} (pip install failed)"
    env = dict(os.environ, LLAMA_CPP_LIB_PATH=str(VENDOR_LIB))
    env["PYTHONPATH"] = os.pathsep.join([*path, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env, ""
