"""llama-server's /lora-adapters: the adapters of a model's ``lora`` setting, listed and scaled
at run time; a real server on the real small model with two small random adapters."""

from __future__ import annotations

import json
import time

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


def text(url: str) -> str:
    out = httpx.post(url + "/v1/completions", json={"prompt": PROMPT, "max_tokens": 6, "temperature": 0, "seed": 1},
                     timeout=60)
    assert out.status_code == 200, out.text
    return out.json()["choices"][0]["text"]


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
    slots = httpx.get(server + "/slots", timeout=30).json()
    assert all(s["n_cached"] == 0 for s in slots)  # cells computed with the adapter were dropped
    base = text(server)
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


def test_scales_do_not_change_under_running_requests(server):
    body = {"prompt": "Count: 1, 2, 3,", "max_tokens": 300, "stream": True, "temperature": 0,
            "logit_bias": {"0": -100, "2": -100}}
    before = httpx.get(server + "/lora-adapters", timeout=30).json()
    with httpx.stream("POST", server + "/v1/completions", json=body, timeout=60) as stream:
        lines = stream.iter_lines()  # held: a dropped iterator closes the stream
        assert "finish_reason\":null" in next(lines)
        out = scale(server, [])
        assert out.status_code == 409 and out.json()["error"]["code"] == "slot_busy", out.text
    assert httpx.get(server + "/lora-adapters", timeout=30).json() == before
    deadline = time.monotonic() + 30
    while scale(server, [{"id": 0, "scale": 1.0}]).status_code == 409 and time.monotonic() < deadline:
        time.sleep(0.1)  # the cancelled stream ends at the next step


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
