"""``python -m llama_ffi.cli``: the same as the ``llama-ffi`` command."""

import sys

from . import main

sys.exit(main())
