"""RPC: a model spread over two worker processes generates what a local CPU run generates,
and bad endpoints, remote binds and dead workers are Python errors, never a crash."""

from __future__ import annotations

import logging
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from llama_ffi import (
    Context,
    ContextParams,
    Model,
    Sampler,
    SamplerChain,
    ValidationError,
)
from llama_ffi.errors import RpcError
from llama_ffi.native.loop import TokenLoop
from llama_ffi.native.params import ModelParams
from llama_ffi.native.rpc import (
    add_rpc_servers,
    parse_endpoint,
    probe_rpc_server,
    serve_rpc,
)

REPO = Path(__file__).resolve().parents[1]
PROMPT = "The three primary colours are"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def greedy(model: Model, n: int = 16) -> list[int]:
    with Context(model, ContextParams(n_ctx=256, n_batch=64)) as ctx, \
            SamplerChain([Sampler.greedy()]) as chain:
        loop = TokenLoop(ctx, chain)
        loop.prefill(model.vocab.tokenize(PROMPT))
        return list(loop.run(n))


@pytest.fixture(scope="module")
def workers():
    """Two RPC workers on loopback; killed (bounded wait) however the tests end."""
    procs, endpoints = [], []
    try:
        for _ in range(2):
            port = free_port()
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "llama_ffi.cli.rpc_server", "--host", "127.0.0.1",
                 "--port", str(port), "--threads", "1"],
                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
            endpoints.append(f"127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        for proc, endpoint in zip(procs, endpoints):
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"RPC worker exited: {proc.stderr.read().decode()[-2000:]}")
                try:
                    probe_rpc_server(endpoint, timeout=2)
                    break
                except RpcError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        yield endpoints
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            proc.stderr.close()


@pytest.mark.slow
def test_layers_on_two_rpc_workers_match_local_cpu(workers, model_path, caplog):
    with Model.load(model_path, n_gpu_layers=0, progress=lambda f: None) as local:
        expected = greedy(local)
    with caplog.at_level(logging.INFO, logger="llama_ffi"), \
            Model.load(model_path, n_gpu_layers=-1, rpc_servers=workers, progress=lambda f: None) as remote:
        got = greedy(remote)
    assert len(expected) == 16
    assert got == expected
    # llama.cpp's own account: both workers got weights, and every layer left this process.
    for endpoint in workers:
        assert re.search(rf"RPC\d+\[{re.escape(endpoint)}\] model buffer size", caplog.text)
    assert re.search(r"offloaded (\d+)/\1 layers", caplog.text)


def test_workers_expose_one_device_each(workers):
    devices = add_rpc_servers(workers)
    assert len(devices) == 2


@pytest.mark.parametrize("bad", ["localhost", "host:", ":50052", "host:0", "host:65536", "host:12ab",
                                 "::1:50052", "a b:1", "", 50052])
def test_bad_endpoint_is_a_validation_error(bad):
    with pytest.raises(ValidationError):
        parse_endpoint(bad)
    with pytest.raises(ValidationError):
        ModelParams(rpc_servers=[bad]).validate()


def test_rpc_servers_must_be_a_list():
    with pytest.raises(ValidationError):
        ModelParams(rpc_servers="127.0.0.1:50052").validate()


def test_non_loopback_bind_needs_allow_remote():
    with pytest.raises(ValidationError, match="allow_remote"):
        serve_rpc("0.0.0.0", free_port())
    with pytest.raises(ValidationError):
        serve_rpc("localhost", free_port())  # llama.cpp binds IPv4 literals only


def test_port_in_use_is_a_clean_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        with pytest.raises(RpcError, match="cannot listen"):
            serve_rpc("127.0.0.1", taken.getsockname()[1])


def test_server_not_running_is_a_python_error(model_path):
    endpoint = f"127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(RpcError) as info:
        add_rpc_servers([endpoint])
    assert info.value.endpoint == endpoint and isinstance(info.value, ConnectionError)
    with pytest.raises(RpcError):
        Model.load(model_path, n_gpu_layers=-1, rpc_servers=[endpoint], progress=lambda f: None)


def test_peer_that_is_not_an_rpc_server_is_refused():
    # A listener that accepts and hangs up: llama.cpp's client would abort the process here.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        endpoint = f"127.0.0.1:{listener.getsockname()[1]}"
        def hang_up():
            conn, _ = listener.accept()
            conn.close()
        thread = threading.Thread(target=hang_up, daemon=True)
        thread.start()
        with pytest.raises(RpcError):
            probe_rpc_server(endpoint, timeout=2)
        thread.join(5)


def test_server_entry_refuses_remote_without_flag():
    result = subprocess.run([sys.executable, "-m", "llama_ffi.cli.rpc_server", "--host", "0.0.0.0",
                             "--port", str(free_port())], cwd=REPO, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 2 and "allow_remote" in result.stderr
