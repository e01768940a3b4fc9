"""Server settings (command line, llama-cpp-python's config file) and model selection,
through httpx's ASGI transport (no socket)."""

from __future__ import annotations

import asyncio
import json

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from llama_ffi.errors import ValidationError
from llama_ffi.server.config import parse_args


def test_defaults_bind_loopback_only(model_path):
    settings = parse_args(["-m", str(model_path)])
    assert settings.host == "127.0.0.1" and settings.api_key is None and settings.cors == []
    assert settings.models[0].name == model_path.name


def test_llama_cpp_python_config_file(tmp_path, model_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"host": "127.0.0.1", "port": 9000, "models": [
        {"model": str(model_path), "model_alias": "a", "n_ctx": 1024, "n_gpu_layers": 0, "verbose": False,
         "use_mmap": True, "chat_format": "chatml"},
        {"model": str(model_path), "model_alias": "b", "n_ctx": 512, "n_parallel": 2}]}))
    settings = parse_args(["--config_file", str(config), "--api-key", "k", "--cors", "http://x.test"])
    assert settings.port == 9000 and settings.api_key == "k" and settings.cors == ["http://x.test"]
    assert [(m.name, m.n_ctx, m.chat_format) for m in settings.models] == [("a", 1024, "chatml"), ("b", 512, None)]


@pytest.mark.parametrize("models, message", [
    ([{"model": "/no/such.gguf"}], "not found"),
    ([{"model": "M", "n_ctx": "big"}], "n_ctx"),
    ([{"model": "M", "frobnicate": 1}], "unknown model key"),
    ([{"model": "M"}, {"model": "M"}], "share the name"),
    ([{"n_ctx": 1}], "'model' path"),
])
def test_bad_config_files_are_refused(tmp_path, model_path, models, message):
    for m in models:
        if m.get("model") == "M":
            m["model"] = str(model_path)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"models": models}))
    with pytest.raises(ValidationError, match=message):
        parse_args(["--config-file", str(config)])


def test_main_reports_usage_errors(capsys):
    from llama_ffi.server import main

    assert main([]) == 2 and "no model to serve" in capsys.readouterr().err


def test_requests_select_the_model_by_name(tmp_path, model_path):
    from llama_ffi.server import create_app

    config = tmp_path / "config.json"
    config.write_text(json.dumps({"models": [{"model": str(model_path), "model_alias": a, "n_ctx": 512,
                                              "n_parallel": 2, "n_gpu_layers": 0} for a in ("a", "b")]}))
    app = create_app(parse_args(["--config-file", str(config), "--cors", "http://ok.test"]))

    async def calls():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            models = (await client.get("/v1/models")).json()
            body = {"prompt": "Hi", "max_tokens": 2, "temperature": 0}
            a = (await client.post("/v1/completions", json={**body, "model": "a"})).json()
            b = (await client.post("/v1/completions", json={**body, "model": "b"})).json()
            missing = await client.post("/v1/completions", json={**body, "model": "c"})
            preflight = await client.options("/v1/completions", headers={
                "Origin": "http://ok.test", "Access-Control-Request-Method": "POST"})
            return models, a, b, missing, preflight

    try:
        models, a, b, missing, preflight = asyncio.run(calls())
    finally:
        app.state.registry.close()
    assert [m["id"] for m in models["data"]] == ["a", "b"]
    assert (a["model"], b["model"]) == ("a", "b") and a["choices"][0]["text"] == b["choices"][0]["text"]
    assert app.state.registry.entries["a"].engine._closed
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    assert preflight.headers["access-control-allow-origin"] == "http://ok.test"


def test_max_tokens_default_caps_a_chat_without_max_tokens(tmp_path, model_path):
    from llama_ffi.server import create_app

    config = tmp_path / "config.json"
    config.write_text(json.dumps({"models": [{"model": str(model_path), "model_alias": "m", "n_ctx": 512,
                                              "n_parallel": 2, "n_gpu_layers": 0, "max_tokens_default": 3}]}))
    app = create_app(parse_args(["--config-file", str(config)]))
    # End-of-generation banned, so only the cap can end the answer.
    body = {"model": "m", "messages": [{"role": "user", "content": "Tell me a long story."}], "temperature": 0,
            "logit_bias": {"0": -100, "1": -100, "2": -100}}

    async def call():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return (await client.post("/v1/chat/completions", json=body)).json()

    try:
        reply = asyncio.run(call())
    finally:
        app.state.registry.close()
    assert reply["usage"]["completion_tokens"] == 3 and reply["choices"][0]["finish_reason"] == "length", reply


def test_grammar_errors_name_the_field(tmp_path, model_path):
    from llama_ffi.server import create_app

    app = create_app(parse_args(["-m", str(model_path), "-a", "m", "-c", "512", "-np", "2", "-ngl", "0"]))
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    bad_schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}

    async def calls():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            grammar = await client.post("/v1/completions", json={"model": "m", "prompt": "hi", "grammar": "root ::= x"})
            schema = await client.post("/v1/chat/completions", json={**chat, "response_format": bad_schema})
            return grammar, schema

    try:
        grammar, schema = asyncio.run(calls())
    finally:
        app.state.registry.close()
    assert grammar.status_code == 400 and grammar.json()["error"]["param"] == "grammar", grammar.json()
    assert schema.status_code == 400 and schema.json()["error"]["param"] == "response_format", schema.json()
