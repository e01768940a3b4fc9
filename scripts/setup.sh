#!/usr/bin/env bash
# Sets up everything llama_ffi needs, idempotently: a virtual environment in .venv with the
# package and its dependencies, libllama built from the pinned llama.cpp (cached), and the
# default model. Extra arguments go to scripts/build_libllama.py (e.g. --cuda, --tools bench).
# EXTRAS selects optional dependency groups (e.g. EXTRAS=test,server).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
spec="."
if [ -n "${EXTRAS:-}" ]; then spec=".[${EXTRAS}]"; fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$spec"
.venv/bin/python scripts/build_libllama.py "$@"
.venv/bin/python scripts/fetch_model.py
