"""Run an RPC worker: ``llama-ffi rpc-server --host 127.0.0.1 --port 50052``.

It serves this machine's devices (its GPUs, else its CPU) to clients that load a model with
``rpc_servers=["this-host:50052"]``. Loopback only unless ``--allow-remote``: the protocol has
no authentication (docs/scaling.md). Stop it with Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import sys

__all__ = ["main"]

_EPILOG = """\
examples:
  {prog}                                       this machine's devices on 127.0.0.1:50052
  {prog} --device CUDA1 --port 50053           one GPU
  {prog} --host 10.0.0.2 --allow-remote        ONLY on a private network you control

clients: Model.load(path, n_gpu_layers=-1, rpc_servers=["10.0.0.2:50052"]). The protocol has no
authentication or encryption (docs/scaling.md, docs/security.md).
exit status: 0 stopped, 1 runtime error, 2 refused arguments, 130 Ctrl-C.
"""


def build_parser(prog: str = "python -m llama_ffi.cli.rpc_server") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], epilog=_EPILOG.format(prog=prog),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="IPv4 address to bind (default: loopback)")
    parser.add_argument("--port", type=int, default=50052)
    parser.add_argument("--device", action="append", dest="devices", metavar="NAME",
                        help="a local device to serve (repeatable; default: all GPUs, else the CPU)")
    parser.add_argument("--threads", type=int, default=None, help="threads for the CPU device")
    parser.add_argument("--cache-dir", default=None, help="cache tensors by hash here (faster reloads)")
    parser.add_argument("--allow-remote", action="store_true",
                        help="bind beyond loopback: ONLY on a private, trusted network")
    return parser


def main(argv: list[str] | None = None, *, prog: str = "python -m llama_ffi.cli.rpc_server") -> int:
    """Exit status: 0 stopped, 1 runtime error (e.g. the port is taken), 2 refused
    arguments (bad address, remote without --allow-remote), 130 Ctrl-C."""
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from ..errors import LlamaError, ValidationError
    from ..native.rpc import serve_rpc

    try:
        serve_rpc(args.host, args.port, devices=args.devices, n_threads=args.threads,
                  cache_dir=args.cache_dir, allow_remote=args.allow_remote)
    except KeyboardInterrupt:
        return 130
    except ValidationError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except (LlamaError, OSError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
