"""llama.cpp's RPC backend: serve local devices to other machines, and use theirs.

A worker runs :func:`serve_rpc` (or ``llama-ffi rpc-server``); a client lists the
workers in ``ModelParams(rpc_servers=[...])`` and llama.cpp spreads the model's layers over
their devices, as over local GPUs.

Security: the RPC protocol has no authentication and no encryption, and its server has had
remote-code-execution bugs. Anyone who can reach the port can run computations and read
or write the worker's memory buffers. So the server binds loopback unless ``allow_remote``
is given, and then says loudly that the port must only ever be reachable from a private
network (see docs/scaling.md).

Robustness: llama.cpp's RPC *client* aborts the whole process (``GGML_ABORT``) when a
worker cannot be reached or fails the handshake. Everything here therefore talks to each
worker in Python first (connect + the protocol's HELLO) and raises :class:`RpcError`
instead. A worker that dies while a model uses it still takes the client process down:
that is llama.cpp's behaviour and cannot be caught from Python.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import struct
import sys
import threading
from collections.abc import Iterable, Sequence

from ..errors import RpcError, ValidationError
from ._lib import ffi, get_lib

__all__ = ["add_rpc_servers", "model_devices", "parse_endpoint", "probe_rpc_server", "serve_rpc"]

logger = logging.getLogger("llama_ffi")

# From ggml-rpc.h / ggml-rpc.cpp at the pinned commit: HELLO is command 14, its request is
# 24 bytes of connection capabilities (zeros: plain TCP), its reply major/minor/patch/pad +
# 24 capability bytes. Checked by tests against a real worker.
_RPC_CMD_HELLO = 14
_RPC_CONN_CAPS_SIZE = 24
_RPC_PROTO_MAJOR = 7
_RPC_PROTO_MINOR = 0
_MAX_SERVERS = 16  # GGML_RPC_MAX_SERVERS

# enum ggml_backend_dev_type
_DEV_CPU, _DEV_GPU, _DEV_ACCEL = 0, 1, 3


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """Split ``"host:port"``; raise :class:`ValidationError` for anything else.

    llama.cpp splits at the first colon and connects over IPv4, so IPv6 literals are refused.
    """
    if not isinstance(endpoint, str):
        raise ValidationError(f"RPC endpoint must be a 'host:port' string, got {endpoint!r}", param="rpc_servers")
    host, sep, port = endpoint.partition(":")
    if not sep or not host or ":" in port or not port.isdigit() or not 0 < int(port) < 65536 \
            or any(c.isspace() for c in host):
        raise ValidationError(f"RPC endpoint {endpoint!r} is not 'host:port' (port 1-65535, IPv4 or a name)",
                              param="rpc_servers")
    return host, int(port)


def probe_rpc_server(endpoint: str, timeout: float = 5.0) -> tuple[int, int, int]:
    """Connect and do the RPC handshake in Python; return the server's protocol version.

    Raises :class:`RpcError` when nothing listens, the peer does not speak the protocol,
    its major version differs, or it does not answer within ``timeout`` seconds (a worker
    serves one client at a time, so a busy one does not answer either).
    """
    host, port = parse_endpoint(endpoint)
    request = struct.pack("<BQ", _RPC_CMD_HELLO, _RPC_CONN_CAPS_SIZE) + bytes(_RPC_CONN_CAPS_SIZE)
    reply_size = 4 + _RPC_CONN_CAPS_SIZE
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(request)
            data = _recv_exact(sock, 8 + reply_size)
    except TimeoutError:  # socket.timeout
        raise RpcError(f"RPC server {endpoint} did not answer within {timeout:g} s "
                       "(busy with another client, or not an RPC server)", endpoint) from None
    except OSError as exc:
        raise RpcError(f"cannot reach RPC server {endpoint}: {exc.strerror or exc}", endpoint) from None
    (size,) = struct.unpack_from("<Q", data)
    if size != reply_size:
        raise RpcError(f"{endpoint} answered the RPC handshake with {size} bytes, not {reply_size}: "
                       "not an RPC server of this protocol version", endpoint)
    major, minor, patch = data[8], data[9], data[10]
    if major != _RPC_PROTO_MAJOR or minor > _RPC_PROTO_MINOR:
        raise RpcError(f"RPC server {endpoint} speaks protocol {major}.{minor}.{patch}; this libllama "
                       f"needs {_RPC_PROTO_MAJOR}.x with minor <= {_RPC_PROTO_MINOR}", endpoint)
    return major, minor, patch


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionResetError("connection closed during the RPC handshake")
        buf += chunk
    return bytes(buf)


def add_rpc_servers(endpoints: Iterable[str], *, timeout: float = 5.0) -> list:
    """Register RPC workers; return their devices (``ggml_backend_dev_t``), in order.

    The handles are borrowed: ggml keeps them for the life of the process. They are not
    registered globally, so models loaded without ``rpc_servers`` never use them.
    """
    endpoints = list(endpoints)
    for endpoint in endpoints:
        parse_endpoint(endpoint)
    if not endpoints or len(endpoints) > _MAX_SERVERS:
        raise ValidationError(f"give 1 to {_MAX_SERVERS} RPC servers, got {len(endpoints)}", param="rpc_servers")
    for endpoint in endpoints:  # every one, every time: llama.cpp would abort on a dead one
        probe_rpc_server(endpoint, timeout)
    lib = get_lib()
    if not lib.llama_supports_rpc():
        raise RpcError("this libllama was built without RPC (-DGGML_RPC=ON)")
    devices = []
    for endpoint in endpoints:
        reg = lib.ggml_backend_rpc_add_server(endpoint.encode())
        if reg == ffi.NULL:
            raise RpcError(f"RPC server {endpoint} offers no devices", endpoint)
        devices.extend(lib.ggml_backend_reg_dev_get(reg, i) for i in range(lib.ggml_backend_reg_dev_count(reg)))
    return devices


def _local_devices(lib, names: Sequence[str] | None, *, for_server: bool) -> list:
    """Local devices by name; by default the accelerators (a server falls back to the CPU)."""
    all_devs = [lib.ggml_backend_dev_get(i) for i in range(lib.ggml_backend_dev_count())]
    by_name = {ffi.string(lib.ggml_backend_dev_name(d)).decode(): d for d in all_devs}
    if names is not None:
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ValidationError(f"unknown device(s) {unknown}; this machine has {sorted(by_name)}",
                                  param="devices")
        return [by_name[n] for n in names]
    # What llama.cpp picks by default: GPUs (it lists RPC devices itself only when they are
    # registered globally, which we do not do), never the CPU, which holds what is not offloaded.
    chosen = [d for d in all_devs if lib.ggml_backend_dev_type(d) not in (_DEV_CPU, _DEV_ACCEL)]
    if for_server and not chosen:
        chosen = [d for d in all_devs if lib.ggml_backend_dev_type(d) == _DEV_CPU][:1]
    return chosen


def model_devices(rpc_servers: Sequence[str] | None, devices: Sequence[str] | None) -> list:
    """The device list for ``llama_model_params.devices``: RPC workers first (llama.cpp's own
    order, so fewer activations cross the network), then local GPUs (or the named ones)."""
    lib = get_lib()
    remote = add_rpc_servers(rpc_servers) if rpc_servers else []
    return remote + _local_devices(lib, devices, for_server=False)


def serve_rpc(host: str = "127.0.0.1", port: int = 50052, *, devices: Sequence[str] | None = None,
              n_threads: int | None = None, cache_dir: str | os.PathLike | None = None,
              allow_remote: bool = False) -> None:
    """Serve this machine's devices to RPC clients; blocks until the process is stopped.

    ``host`` must be an IPv4 address (llama.cpp binds with ``inet_addr``); anything but
    loopback needs ``allow_remote=True``. ``devices`` names local devices (default: every
    GPU, else the CPU); ``n_threads`` is for the CPU device (default: half the cores);
    ``cache_dir`` lets clients skip re-sending tensors the worker has seen (by hash).
    """
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError:
        raise ValidationError(f"RPC server host must be an IPv4 address, got {host!r}", param="host") from None
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ValidationError(f"port must be in 1-65535, got {port!r}", param="port")
    if n_threads is not None and (not isinstance(n_threads, int) or not 0 < n_threads <= 1024):
        raise ValidationError(f"n_threads must be in 1-1024, got {n_threads!r}", param="n_threads")
    if not address.is_loopback:
        if not allow_remote:
            raise ValidationError(
                f"refusing to serve RPC on {host}: the protocol has no authentication, so anyone who "
                "reaches the port controls the worker. Pass allow_remote=True (CLI: --allow-remote) "
                "only on a private network you trust.", param="host")
        _warn_remote(host, port)
    _check_port_free(host, port)
    lib = get_lib()
    devs = _local_devices(lib, devices, for_server=True)
    if not devs:
        raise RpcError("no device to serve")
    if cache_dir is not None:
        os.makedirs(cache_dir, exist_ok=True)
    threads = n_threads or max(1, (os.cpu_count() or 2) // 2)
    endpoint = f"{host}:{port}".encode()
    c_cache = os.fsencode(cache_dir) if cache_dir is not None else ffi.NULL
    c_devs = ffi.new("ggml_backend_dev_t[]", devs)
    # The C loop never returns while it serves. It runs on a daemon thread so this thread
    # stays in Python, where Ctrl-C and signals are handled (cffi releases the GIL in C).
    done = threading.Event()

    def run() -> None:
        try:
            lib.ggml_backend_rpc_start_server(endpoint, c_cache, threads, len(devs), c_devs)
        finally:
            done.set()

    worker = threading.Thread(target=run, name=f"rpc-server-{port}", daemon=True)
    worker.start()
    logger.info("RPC server on %s:%d serving %d device(s)", host, port, len(devs))
    while not done.wait(0.5):
        pass
    # It only returns when binding or accepting failed (llama.cpp printed why on stderr).
    raise RpcError(f"the RPC server on {host}:{port} stopped: could not bind or accept "
                   "(see the message above)", f"{host}:{port}")


def _check_port_free(host: str, port: int) -> None:
    """Fail in Python with a clear message if the port is taken (llama.cpp just returns)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as llama.cpp binds
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise RpcError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", f"{host}:{port}") from None


def _warn_remote(host: str, port: int) -> None:
    message = (f"RPC server listening on {host}:{port}, beyond loopback. The RPC protocol has NO "
               "authentication or encryption and has had remote-code-execution bugs: anyone who "
               "can reach this port controls this worker. Never expose it to the internet or an "
               "untrusted network; firewall it to the client machines.")
    logger.warning(message)
    configured = logging.getLogger().handlers or any(
        not isinstance(h, logging.NullHandler) for h in logger.handlers)
    if not configured:
        # The package logger only has a NullHandler unless the application set logging up;
        # a security warning must be seen all the same.
        banner = "!" * 78
        print(f"\n{banner}\nWARNING: {message}\n{banner}\n", file=sys.stderr, flush=True)
