"""The server under load, disconnects, a full queue and shutdown (real sockets, real engine)."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from server_harness import running_server

# End-of-generation tokens banned: a LONG request really runs for max_tokens.
LONG = {"model": "smol", "prompt": "Write a very long story about a dragon.", "max_tokens": 800, "temperature": 0.8,
        "logit_bias": {"0": -100, "1": -100, "2": -100}}


def _settings(model_path, **model):
    from llama_ffi.server.config import ModelSettings, ServerSettings

    return ServerSettings(shutdown_timeout=3, models=[
        ModelSettings(model=str(model_path), model_alias="smol", n_gpu_layers=0, **model)])


def _engine(server):
    return server.registry.entries["smol"].engine


def _wait_idle(engine, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = engine.stats()
        if stats["running"] == 0 and stats["queued"] == 0:
            return stats
        time.sleep(0.05)
    raise AssertionError(f"engine still busy: {engine.stats()}")


@pytest.mark.slow
def test_64_concurrent_streaming_clients(model_path):
    """256 streamed chat requests from 64 concurrent clients: none lost, all well-formed."""
    rounds, clients = 4, 64

    async def one_client(url: str, who: int) -> list[tuple[str, str, int]]:
        out = []
        async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=300) as client:
            for r in range(rounds):
                stream = await client.chat.completions.create(
                    model="smol", messages=[{"role": "user", "content": f"Say a word about the number {who * rounds + r}."}],
                    max_tokens=8, temperature=0.8, stream=True, stream_options={"include_usage": True})
                chunks = [c async for c in stream]
                assert chunks[0].choices[0].delta.role == "assistant"
                assert len({c.id for c in chunks}) == 1
                finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                out.append((chunks[0].id, finals[-1] if len(finals) == 1 else "bad", chunks[-1].usage.completion_tokens))
                assert text or chunks[-1].usage.completion_tokens == 0
        return out

    async def crowd(url: str):
        return await asyncio.gather(*(one_client(url, i) for i in range(clients)))

    with running_server(_settings(model_path, n_ctx=4096, n_parallel=64)) as (url, server):
        started = time.perf_counter()
        results = [r for per_client in asyncio.run(crowd(url)) for r in per_client]
        elapsed = time.perf_counter() - started
        stats = _wait_idle(_engine(server))
    assert len(results) == rounds * clients and len({r[0] for r in results}) == len(results)
    assert all(r[1] in ("stop", "length") for r in results)
    assert all(1 <= r[2] <= 8 or r[1] == "stop" for r in results)
    assert stats["finished"] >= rounds * clients
    print(f"\n{len(results)} streamed requests in {elapsed:.1f}s, {stats['generated_tokens'] / elapsed:.0f} t/s")


@pytest.fixture(scope="module")
def tiny(model_path):
    """One sequence slot and a queue of one: easy to fill."""
    with running_server(_settings(model_path, n_ctx=1024, n_parallel=1, max_queued_requests=1)) as (url, server):
        yield url, server


def test_disconnect_mid_stream_frees_the_slot(tiny):
    url, server = tiny
    with httpx.stream("POST", url + "/v1/completions", json={**LONG, "stream": True}, timeout=60) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        got = [next(lines) for _ in range(6)]
        assert any(line.startswith("data: {") for line in got)
        assert _engine(server).stats()["running"] == 1
    _wait_idle(_engine(server))
    out = httpx.post(url + "/v1/completions", json={**LONG, "max_tokens": 2}, timeout=60).json()
    assert out["choices"][0]["text"] is not None


def test_disconnect_while_waiting_for_a_whole_answer_cancels_it(tiny):
    url, server = tiny
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url + "/v1/completions", json=LONG, timeout=httpx.Timeout(60, read=1.0))
    _wait_idle(_engine(server))


def test_full_queue_is_503_with_retry_after(tiny):
    url, server = tiny

    async def burst():
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(*(client.post(url + "/v1/completions", json={**LONG, "max_tokens": 60})
                                          for _ in range(6)))

    responses = asyncio.run(burst())
    codes = sorted(r.status_code for r in responses)
    assert 200 in codes and 503 in codes, codes
    refused = next(r for r in responses if r.status_code == 503)
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["error"]["type"] == "server_overloaded"
    engine = _engine(server)
    with httpx.Client(timeout=60) as http, openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0) as client, \
            http.stream("POST", url + "/v1/completions", json={**LONG, "stream": True}), \
            http.stream("POST", url + "/v1/completions", json={**LONG, "stream": True}):
        deadline = time.monotonic() + 10  # one running, one queued: the queue is full
        while (engine.stats()["running"], engine.stats()["queued"]) != (1, 1) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (engine.stats()["running"], engine.stats()["queued"]) == (1, 1), engine.stats()
        with pytest.raises(openai.APIStatusError) as info:
            client.completions.create(**LONG, timeout=30)
    assert info.value.status_code == 503 and info.value.response.headers["retry-after"]
    _wait_idle(_engine(server))


def test_shutdown_ends_open_streams_with_an_error_event(model_path):
    with running_server(_settings(model_path, n_ctx=1024, n_parallel=2)) as (url, server):
        engine = _engine(server)
        with openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=60) as client:
            stream = client.completions.create(**{**LONG, "stream": True})
            first = next(iter(stream))
            assert first.choices
            server.handle_exit(signal.SIGINT, None)
            with pytest.raises(openai.APIError, match="shutting down"):
                for _ in stream:
                    pass
        assert server.registry.closing and server.should_exit  # new connections are refused from now on
    assert engine._closed and engine.stats()["running"] == 0
