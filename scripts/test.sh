#!/usr/bin/env bash
# Sets up (with the test dependencies and the native llama-simple used as a reference)
# and runs the test suite. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=test,server scripts/setup.sh --tools simple
# The BERT embedding model and its reference for tests/test_embedding_model.py: about 2.5
# minutes the first time (a torch venv for the converter), then copied from the cache.
.venv/bin/python scripts/make_embedding_model.py --optional
exec .venv/bin/python -m pytest -q "$@"
