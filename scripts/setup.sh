#!/usr/bin/env bash
# Sets up everything llama_ffi needs, idempotently: a virtual environment in .venv with the
# package and its dependencies, libllama built from the pinned llama.cpp (cached in
# $LLAMA_FFI_CACHE, default ~/.cache/llama_ffi), and the default model. Extra arguments go to
# scripts/build_libllama.py (e.g. --cuda, --tools bench). EXTRAS selects optional dependency
# groups (e.g. EXTRAS=test,server). A failing step ends with one line saying what to do.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
fail() { echo "setup: error: $*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null || fail "$PYTHON not found: install Python >= 3.10 or set PYTHON=/path/to/python3"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || fail "$("$PYTHON" --version 2>&1) is too old: llama_ffi needs Python >= 3.10 (set PYTHON=...)"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv >/dev/null 2>&1 || { rm -rf .venv
        fail "could not make a virtual environment with $PYTHON (Debian/Ubuntu: apt-get install python3-venv)"; }
fi
spec="."
if [ -n "${EXTRAS:-}" ]; then spec=".[${EXTRAS}]"; fi
log=.venv/pip-install.log
if ! .venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$spec" >"$log" 2>&1; then
    why=$(grep -E '^ *ERROR' "$log" | tail -n 1 | sed 's/^ *//' || true)
    fail "installing llama_ffi and its dependencies ($spec) failed${why:+: $why}; full log in $log;" \
         "check the network or pip's index settings (pip config list), then run this again"
fi
.venv/bin/python scripts/build_libllama.py "$@"
.venv/bin/python scripts/fetch_model.py
