#!/usr/bin/env bash
# Sets up (with the test dependencies and the native llama-simple used as a reference)
# and runs the test suite. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=test,server scripts/setup.sh --tools simple
exec .venv/bin/python -m pytest -q "$@"
