"""``python -m scripts.bench``: see scripts/bench/__init__.py and docs/benchmarks.md."""

import sys

from .cli import main

sys.exit(main())
