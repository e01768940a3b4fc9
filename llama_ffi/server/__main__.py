"""``python -m llama_ffi.server``: the same as ``llama-ffi serve``."""

import sys

from . import main

sys.exit(main(prog="python -m llama_ffi.server"))
