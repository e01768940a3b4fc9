"""Run an RPC worker: ``python -m llama_ffi.rpc_server --host 127.0.0.1 --port 50052``.

It serves this machine's devices (its GPUs, else its CPU) to clients that load a model with
``rpc_servers=["this-host:50052"]``. Loopback only unless ``--allow-remote``: the protocol has
no authentication (docs/scaling.md). Stop it with Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import sys

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llama_ffi.rpc_server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="IPv4 address to bind (default: loopback)")
    parser.add_argument("--port", type=int, default=50052)
    parser.add_argument("--device", action="append", dest="devices", metavar="NAME",
                        help="a local device to serve (repeatable; default: all GPUs, else the CPU)")
    parser.add_argument("--threads", type=int, default=None, help="threads for the CPU device")
    parser.add_argument("--cache-dir", default=None, help="cache tensors by hash here (faster reloads)")
    parser.add_argument("--allow-remote", action="store_true",
                        help="bind beyond loopback: ONLY on a private, trusted network")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from .errors import LlamaError
    from .native.rpc import serve_rpc

    try:
        serve_rpc(args.host, args.port, devices=args.devices, n_threads=args.threads,
                  cache_dir=args.cache_dir, allow_remote=args.allow_remote)
    except KeyboardInterrupt:
        return 130
    except LlamaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
