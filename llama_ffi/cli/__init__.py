"""``llama-ffi``: the command line (also ``python -m llama_ffi.cli``).

One module per group of commands, each with ``register(subparsers)`` and handlers
``handler(args, stdout, stdin) -> int``; this module builds the parser and owns the exit
statuses, so every command behaves the same way for scripts.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

from ..errors import LlamaError
from . import bench, delegate, files, generate, tokens
from ._common import CommandError, Formatter, UsageError

__all__ = ["main"]

EPILOG = """\
examples:
  llama-ffi run "Why is the sky blue?"
  llama-ffi chat --system "Be brief."
  llama-ffi tokenize "Hello, world" --json
  llama-ffi bench -p 256 -n 64
  llama-ffi download bartowski/SmolLM2-135M-Instruct-GGUF "*Q8_0.gguf"
  llama-ffi quantize model-f16.gguf model-Q4_K_M.gguf Q4_K_M
  llama-ffi COMMAND --help

exit status (every command):
  0    success
  1    runtime error: one line on stderr starting "llama-ffi: error:", no traceback
       (missing or broken model file, failed download, a port in use, ...)
  2    usage error: bad or missing arguments (argparse's message and usage line)
  130  interrupted (Ctrl-C)

environment: LLAMA_FFI_MODEL (default model), LLAMA_FFI_LIBRARY (a libllama to load),
HF_TOKEN (private hub repositories). Documentation: docs/cli.md.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llama-ffi", description="llama.cpp from Python, on the command line.",
                                     epilog=EPILOG, formatter_class=Formatter)
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"llama-ffi {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    generate.register(sub)
    tokens.register(sub)
    bench.register(sub)
    files.register(sub)
    delegate.register(sub)
    return parser


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stdin: TextIO | None = None) -> int:
    """Run one command; return its exit status (see ``llama-ffi --help``)."""
    out, inp = stdout or sys.stdout, stdin or sys.stdin
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = usage = _parser()
    try:
        if argv and argv[0] in delegate.COMMANDS:  # their options belong to their own parsers
            return delegate.run(argv[0], argv[1:])
        args = parser.parse_args(argv)  # exits 2 on a usage error, 0 after --help
        usage = args.usage
        return args.handler(args, out, inp)
    except UsageError as exc:
        usage.print_usage(sys.stderr)
        print(f"llama-ffi: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`llama-ffi info | head`)
        sys.stderr.close()
        return 1
    except (LlamaError, CommandError, OSError, ValueError) as exc:
        print(f"llama-ffi: error: {_one_line(exc)}", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 2000 else text[:2000] + "..."
