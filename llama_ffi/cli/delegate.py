"""``serve`` and ``rpc-server``: commands whose arguments belong to another module's parser.

``llama-ffi serve ARGS`` is ``llama_ffi.server.main(ARGS)`` and ``llama-ffi rpc-server ARGS``
is ``llama_ffi.cli.rpc_server.main(ARGS)``; their own ``--help`` documents their options.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ._common import CommandError, Formatter

SERVER_EXTRA = "pip install 'llama-ffi[server]'"
# Modules the server extra brings: a missing one means the extra is not installed.
_SERVER_DEPENDENCIES = {"fastapi", "uvicorn", "starlette", "pydantic", "sse_starlette", "anyio", "h11"}

SERVE_HELP = """\
examples:
  llama-ffi serve --help                      the server's own options
  llama-ffi serve -m model.gguf --port 8000   an OpenAI-compatible server on localhost

needs the server extra: pip install 'llama-ffi[server]' (docs/serving.md)
"""

RPC_HELP = """\
examples:
  llama-ffi rpc-server                                  serve this machine's devices on 127.0.0.1:50052
  llama-ffi rpc-server --host 10.0.0.2 --allow-remote   ONLY on a private network (docs/scaling.md)
  llama-ffi rpc-server --help                           its own options

the RPC protocol has no authentication: see docs/security.md before --allow-remote.
"""

COMMANDS = ("serve", "rpc-server")


def register(sub: argparse._SubParsersAction) -> None:
    """Listed in ``llama-ffi --help``; main() hands their arguments over before parsing."""
    for name, text, epilog in (("serve", "OpenAI-compatible HTTP server (llama_ffi.server)", SERVE_HELP),
                               ("rpc-server", "serve this machine's devices to RPC clients", RPC_HELP)):
        parser = sub.add_parser(name, help=text, description=text, epilog=epilog, formatter_class=Formatter,
                                add_help=False)
        parser.add_argument("args", nargs=argparse.REMAINDER, help="the command's own options (see its --help)")


def run(command: str, argv: list[str]) -> int:
    """Run ``command`` with ``argv``; its exit status."""
    main = _server_main() if command == "serve" else _rpc_main()
    try:
        return int(main(argv) or 0)
    except ModuleNotFoundError as exc:  # an optional dependency imported lazily by the server
        if command == "serve" and (exc.name or "").split(".")[0] in _SERVER_DEPENDENCIES:
            raise CommandError(f"the server needs {exc.name}: {SERVER_EXTRA}") from None
        raise
    except SystemExit as exc:  # argparse inside the delegate: 0 for --help, 2 for usage
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1


def _server_main() -> Callable[[list[str]], int]:
    try:
        from ..server import main
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if exc.name in ("llama_ffi.server", "llama_ffi.server.main"):
            raise CommandError(f"this installation has no HTTP server (llama_ffi.server): {SERVER_EXTRA}") from None
        if missing in _SERVER_DEPENDENCIES:
            raise CommandError(f"the server needs {missing}: {SERVER_EXTRA}") from None
        raise
    except ImportError as exc:  # the package exists but has no main() yet
        raise CommandError(f"llama_ffi.server cannot start ({exc}): {SERVER_EXTRA}") from None
    return main


def _rpc_main() -> Callable[[list[str]], int]:
    from . import rpc_server

    return lambda argv: rpc_server.main(argv, prog="llama-ffi rpc-server")
