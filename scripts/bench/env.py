"""The machine, the build and the date: the header of every report."""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENDOR = REPO / "vendor"
VENDOR_BIN = VENDOR / "bin"
VENDOR_LIB = VENDOR / "lib"
DEFAULT_MODEL = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_names() -> list[str]:
    """'NAME (driver X)' per GPU, from nvidia-smi; empty without one."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    names = []
    for line in out.strip().splitlines():
        name, _, driver = line.partition(",")
        names.append(f"{name.strip()} (driver {driver.strip()})")
    return names


def device(n_gpu_layers: int) -> str:
    cpu = f"CPU {cpu_name()}, {os.cpu_count()} logical cores"
    gpus = gpu_names() if n_gpu_layers != 0 else []
    return f"{', '.join(gpus)}; {cpu}" if gpus else cpu


def build_info() -> dict:
    try:
        manifest = json.loads((VENDOR / "manifest.json").read_text())
    except (OSError, ValueError):
        return {"error": "vendor/manifest.json missing: run scripts/build_libllama.py"}
    return {k: manifest.get(k) for k in ("llama_cpp_commit", "cuda", "flags", "tools")}


def repo_commit() -> str:
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=9", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
