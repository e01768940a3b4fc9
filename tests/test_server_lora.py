"""llama-server's /lora-adapters: the adapters of a model's ``lora`` setting, listed and scaled
at run time; a real server on the real small model with two small random adapters."""

from __future__ import annotations

import json

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from server_harness import running_server
from test_llama_lora import GGUF_PY, make_adapter

from llama_ffi.errors import ValidationError
from llama_ffi.server.config import ModelSettings, ServerSettings, parse_args

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    if not GGUF_PY.exists():
        pytest.skip("llama.cpp's gguf-py not vendored")
    folder = tmp_path_factory.mktemp("lora")
    return str(make_adapter(folder / "a.gguf", 0)), str(make_adapter(folder / "b.gguf", 1))


@pytest.fixture(scope="module")
def server(model_path, adapters):
    first, second = adapters
    settings = ServerSettings(models=[ModelSettings(model=str(model_path), model_alias="smol", n_ctx=1024,
                                                    n_parallel=2, n_gpu_layers=0,
                                                    lora=[first, {"path": second, "scale": 0}])])
    with running_server(settings) as (url, _):
        yield url


def text(url: str, prompt: str = PROMPT, **extra) -> str:
    out = httpx.post(url + "/v1/completions", json={"prompt": prompt, "max_tokens": 6, "temperature": 0, "seed": 1,
                                                    **extra}, timeout=60)
    assert out.status_code == 200, out.text
    return out.json()["choices"][0]["text"]


def chat(url: str, **extra) -> str:
    out = httpx.post(url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "Name a color."}],
                                                         "max_tokens": 6, "temperature": 0, **extra}, timeout=60)
    assert out.status_code == 200, out.text
    return out.json()["choices"][0]["message"]["content"]


def streamed_text(lines) -> str:
    return "".join(json.loads(line[6:])["choices"][0]["text"] for line in lines if line.startswith("data: {"))


def cached_prompt_tokens(url: str) -> float:
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        if line.startswith("llama_ffi_cached_prompt_tokens_total"):
            return float(line.split()[-1])
    raise AssertionError("no cached-prompt counter in /metrics")


def scale(url: str, body) -> httpx.Response:
    return httpx.post(url + "/lora-adapters", json=body, timeout=60)


def test_lists_the_configured_adapters(server, adapters):
    first, second = adapters
    assert httpx.get(server + "/lora-adapters", timeout=30).json() == [
        {"id": 0, "path": first, "scale": 1.0}, {"id": 1, "path": second, "scale": 0.0}]


def test_scales_change_the_output_and_the_cache_never_mixes_weights(server):
    with_first = text(server)  # adapter 0 at 1.0, as configured
    out = scale(server, [])  # llama-server: adapters left out are off
    assert out.status_code == 200 and [a["scale"] for a in out.json()] == [0.0, 0.0]
    base = text(server)  # the cached prefix of the adapter's weights is not reused under none
    assert base != with_first
    assert scale(server, [{"id": 1, "scale": 1.0}, {"id": 0, "scale": 1.0}]).status_code == 200
    both = text(server)
    assert both not in (base, with_first)
    assert [a["scale"] for a in scale(server, [{"id": 0, "scale": 1.0}]).json()] == [1.0, 0.0]
    assert text(server) == with_first  # back to the configured weights, not a stale cache


@pytest.mark.parametrize("body", [[{"id": 2, "scale": 1.0}], [{"id": 0, "scale": 1}, {"id": 0, "scale": 0.5}],
                                  [{"id": -1, "scale": 1.0}], [{"id": 0}], [{"id": 0, "scale": "1"}],
                                  {"id": 0, "scale": 1.0}, [{"id": 0, "scale": 1.0, "x": 1}]])
def test_bad_bodies_are_400_and_change_nothing(server, body):
    before = httpx.get(server + "/lora-adapters", timeout=30).json()
    out = scale(server, body)
    assert out.status_code == 400, out.text
    assert set(out.json()["error"]) == {"message", "type", "param", "code"}
    assert httpx.get(server + "/lora-adapters", timeout=30).json() == before


def test_scales_change_under_running_requests_for_later_ones(server):
    """As llama-server: POST sets the scales of later requests; a running one keeps its weights."""
    body = {"prompt": PROMPT, "max_tokens": 24, "stream": True, "temperature": 0, "logit_bias": {"2": -100}}
    assert scale(server, [{"id": 0, "scale": 1.0}]).status_code == 200
    with httpx.stream("POST", server + "/v1/completions", json=body, timeout=60) as stream:
        alone = streamed_text(list(stream.iter_lines()))
    with httpx.stream("POST", server + "/v1/completions", json=body, timeout=60) as stream:
        lines = stream.iter_lines()
        first = next(lines)
        assert "finish_reason\":null" in first
        out = scale(server, [])
        assert out.status_code == 200, out.text
        rest = [first, *lines]
    assert streamed_text(rest) == alone  # the whole stream ran under the scales it started with
    assert text(server) != text(server, lora=[{"id": 0, "scale": 1.0}])  # later requests: adapters off
    assert scale(server, [{"id": 0, "scale": 1.0}]).status_code == 200


def test_per_request_lora_overrides_the_scales_for_that_request(server):
    assert scale(server, [{"id": 0, "scale": 1.0}]).status_code == 200
    with_first = text(server)
    assert text(server, lora=[{"id": 0, "scale": 1.0}]) == with_first
    base = text(server, lora=[])  # adapters left out are off
    assert base != with_first
    second = text(server, lora=[{"id": 1, "scale": 1.0}])
    assert second not in (base, with_first)
    assert text(server, lora=[{"id": 0, "scale": 0}, {"id": 1, "scale": 1.0}]) == second
    assert text(server) == with_first  # the model's scales are unchanged
    assert chat(server, lora=[]) != chat(server)
    assert [a["scale"] for a in httpx.get(server + "/lora-adapters", timeout=30).json()] == [1.0, 0.0]


def test_concurrent_requests_of_different_sets_do_not_mix(server):
    """Greedy outputs of requests with different adapters, sent together, equal each one alone."""
    import concurrent.futures

    sets = [None, [], [{"id": 1, "scale": 1.0}], [{"id": 0, "scale": 0.5}, {"id": 1, "scale": 0.5}]]
    prompts = [PROMPT, "Once upon a time,"]
    jobs = [(p, s) for p in prompts for s in sets]

    def run(job):
        prompt, lora = job
        return text(server, prompt, **({} if lora is None else {"lora": lora}))

    expected = [run(job) for job in jobs]
    assert len(set(expected[:4])) == 4
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        assert list(pool.map(run, jobs * 2)) == expected * 2


def test_prefix_reuse_never_crosses_adapter_sets(server):
    prompt = "You are a helpful assistant. Answer in one short sentence, politely. Question: why is the sky blue?"
    text(server, prompt, lora=[{"id": 1, "scale": 1.0}])
    before = cached_prompt_tokens(server)
    text(server, prompt, lora=[{"id": 1, "scale": 0.5}])  # another scale: other weights
    assert cached_prompt_tokens(server) == before  # (it takes the other of the 2 slots)
    text(server, prompt, lora=[{"id": 1, "scale": 1.0}])
    assert cached_prompt_tokens(server) > before  # the same set again: its cells are reused


@pytest.mark.parametrize("lora", [[{"id": 2, "scale": 1.0}], [{"id": 0, "scale": 1}, {"id": 0, "scale": 0.5}],
                                  [{"id": -1, "scale": 1.0}], [{"id": 0}], [{"id": 0, "scale": "1"}],
                                  [{"id": 0, "scale": 11.0}], [{"id": 0, "scale": 1.0, "x": 1}],
                                  {"id": 0, "scale": 1.0}, "0", [0]])
@pytest.mark.parametrize("route", ["/v1/completions", "/v1/chat/completions"])
def test_bad_request_lora_is_400(server, route, lora):
    body = {"prompt": PROMPT} if route == "/v1/completions" else {"messages": [{"role": "user", "content": "Hi"}]}
    out = httpx.post(server + route, json={**body, "max_tokens": 2, "lora": lora}, timeout=60)
    assert out.status_code == 400, out.text
    error = out.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert error["param"] is not None and "lora" in error["param"]


def test_a_model_without_adapters_lists_none(model_path):
    settings = ServerSettings(models=[ModelSettings(model=str(model_path), n_ctx=512, n_parallel=1, n_gpu_layers=0)])
    with running_server(settings) as (url, _):
        assert httpx.get(url + "/lora-adapters", timeout=30).json() == []
        assert scale(url, []).json() == []
        assert scale(url, [{"id": 0, "scale": 1.0}]).status_code == 400


def test_lora_setting(model_path, adapters, tmp_path):
    first, second = adapters
    settings = parse_args(["-m", str(model_path), "--lora", first, "--lora", second])
    assert settings.models[0].lora == [{"path": first, "scale": 1.0}, {"path": second, "scale": 1.0}]
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"models": [{"model": str(model_path), "lora": [{"path": first, "scale": 0.5}]}]}))
    assert parse_args(["--config-file", str(config)]).models[0].lora == [{"path": first, "scale": 0.5}]
    for bad in (first, [str(tmp_path / "missing.gguf")], [{"path": first, "scale": "x"}], [{"file": first}], [5]):
        config.write_text(json.dumps({"models": [{"model": str(model_path), "lora": bad}]}))
        with pytest.raises(ValidationError) as caught:
            parse_args(["--config-file", str(config)])
        assert caught.value.param == "lora"
