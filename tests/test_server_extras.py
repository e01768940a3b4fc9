"""llama-cpp-python's /extras routes, llama-server's /apply-template and /props, and YAML
config files: a real server on the real small model, driven over a loopback socket."""

from __future__ import annotations

import json

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from server_harness import running_server

from llama_ffi.errors import ValidationError
from llama_ffi.server.config import parse_args

KEY = "sk-extras"
N_CTX = 2048
TEXT = "Hello, world! Ünïcödé and <|im_start|> text."


@pytest.fixture(scope="module")
def server(model_path):
    from llama_ffi.server.config import ModelSettings, ServerSettings

    settings = ServerSettings(api_key=KEY, models=[
        ModelSettings(model=str(model_path), model_alias="smol", n_ctx=N_CTX, n_parallel=3, n_gpu_layers=0)])
    with running_server(settings) as (url, srv):
        yield url


def post(url: str, path: str, body) -> httpx.Response:
    return httpx.post(url + path, json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    return error


# --- /extras/tokenize, /extras/tokenize/count, /extras/detokenize ------------------------
def test_tokenize_matches_llama_and_counts(server, llama):
    tokens = post(server, "/extras/tokenize", {"input": TEXT}).json()["tokens"]
    # llama-cpp-python's route: Llama.tokenize(text.encode(), special=True), BOS as the model adds it
    assert tokens == llama.tokenize(TEXT.encode(), special=True)
    assert tokens == post(server, "/tokenize", {"content": TEXT}).json()["tokens"]
    assert post(server, "/extras/tokenize/count", {"input": TEXT, "model": "smol"}).json() == {"count": len(tokens)}
    assert post(server, "/extras/tokenize/count", {"input": ""}).json()["count"] == len(llama.tokenize(b""))


def test_detokenize_round_trips(server, llama):
    plain = "Hello, world! Ünïcödé, 1234 and  two spaces."
    tokens = post(server, "/extras/tokenize", {"input": plain}).json()["tokens"]
    assert post(server, "/extras/detokenize", {"tokens": tokens}).json() == {"text": plain}
    assert post(server, "/extras/detokenize", {"tokens": []}).json() == {"text": ""}
    # as llama-cpp-python's route (Llama.detokenize, special=False): control tokens are left out
    tokens = post(server, "/extras/tokenize", {"input": TEXT}).json()["tokens"]
    text = post(server, "/extras/detokenize", {"tokens": tokens}).json()["text"]
    assert text == llama.detokenize(tokens).decode() == TEXT.replace("<|im_start|>", "")


@pytest.mark.parametrize("tokens", [[49152], [0, 1 << 31], [-1], [1 << 70]])
def test_out_of_vocabulary_ids_are_a_400(server, tokens):
    error = error_of(post(server, "/extras/detokenize", {"tokens": tokens}), 400)
    assert error["param"] == "tokens"


@pytest.mark.parametrize("path, body, param", [
    ("/extras/tokenize", {"input": 5}, "input"),
    ("/extras/tokenize", {}, "input"),
    ("/extras/tokenize/count", {"input": ["a"]}, "input"),
    ("/extras/tokenize", {"input": "a", "extra": 1}, "extra"),
    ("/extras/detokenize", {"tokens": ["1"]}, "tokens.0"),
    ("/extras/detokenize", {"tokens": 3}, "tokens"),
    ("/apply-template", {"messages": []}, "messages"),
    ("/apply-template", {"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
])
def test_bad_bodies_are_a_400(server, path, body, param):
    assert error_of(post(server, path, body), 400)["param"] == param


@pytest.mark.parametrize("path, body", [
    ("/extras/tokenize", {"input": "x", "model": "nope"}),
    ("/extras/detokenize", {"tokens": [1], "model": "nope"}),
    ("/apply-template", {"messages": [{"role": "user", "content": "x"}], "model": "nope"}),
])
def test_unknown_model_is_a_404(server, path, body):
    assert error_of(post(server, path, body), 404)["code"] == "model_not_found"
    response = httpx.get(server + "/props", params={"model": "nope"}, headers={"Authorization": f"Bearer {KEY}"})
    assert error_of(response, 404)["code"] == "model_not_found"


# --- /apply-template ---------------------------------------------------------------------
def test_apply_template_is_the_chat_prompt(server, llama):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
    prompt = post(server, "/apply-template", {"messages": messages}).json()["prompt"]
    assert "Be brief." in prompt and "Name a colour." in prompt
    assert prompt.count("<|im_start|>") == 3 and prompt.count("<|im_end|>") == 2
    assert prompt.endswith("<|im_start|>assistant\n")  # the generation prompt
    # the same prompt a chat completion is given: its prompt_tokens count it
    chat = llama.create_chat_completion(messages, max_tokens=1, temperature=0.0)
    count = post(server, "/extras/tokenize/count", {"input": prompt}).json()["count"]
    assert abs(count - chat["usage"]["prompt_tokens"]) <= 1  # at most the BOS the template leaves out


def test_apply_template_refuses_a_message_without_content(server):
    body = {"messages": [{"role": "user"}]}
    assert error_of(post(server, "/apply-template", body), 400)["param"] == "messages"


# --- /props --------------------------------------------------------------------------------
def test_props(server, model_path):
    response = httpx.get(server + "/props", headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 200
    props = response.json()
    assert props["default_generation_settings"]["n_ctx"] == N_CTX
    params = props["default_generation_settings"]["params"]
    assert params["temperature"] == 0.8 and params["top_k"] == 40 and params["n_predict"] == -1
    assert props["total_slots"] == 3 and props["model_path"] == str(model_path)
    assert "<|im_start|>" in props["chat_template"] and props["build_info"]
    assert props["modalities"] == {"vision": False, "audio": False}
    assert httpx.get(server + "/props").status_code == 401  # behind the API key like the rest


def test_new_routes_are_in_the_openapi_schema():
    from llama_ffi.server.app import create_app
    from llama_ffi.server.config import ServerSettings
    from llama_ffi.server.registry import Registry

    paths = create_app(ServerSettings(), Registry([])).openapi()["paths"]
    for path in ("/extras/tokenize", "/extras/tokenize/count", "/extras/detokenize", "/apply-template"):
        assert "requestBody" in paths[path]["post"], path
    assert "get" in paths["/props"]


# --- YAML config files ----------------------------------------------------------------------
def _config(model_path) -> dict:
    return {"host": "127.0.0.1", "port": 9001, "api_key": "k", "cors": ["http://x.test"], "models": [
        {"model": str(model_path), "model_alias": "a", "n_ctx": 1024, "n_parallel": 2, "verbose": False},
        {"model": str(model_path), "model_alias": "b", "n_ctx": 512, "chat_format": "chatml"}]}


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".YAML"])
def test_yaml_and_json_configs_agree(tmp_path, model_path, suffix):
    yaml = pytest.importorskip("yaml")
    as_json = tmp_path / "config.json"
    as_json.write_text(json.dumps(_config(model_path)))
    as_yaml = tmp_path / f"config{suffix}"
    as_yaml.write_text(yaml.safe_dump(_config(model_path)))
    assert as_yaml.read_text() != as_json.read_text()
    from_yaml = parse_args(["--config-file", str(as_yaml)])
    assert from_yaml == parse_args(["--config-file", str(as_json)])
    assert [m.n_ctx for m in from_yaml.models] == [1024, 512] and from_yaml.port == 9001


@pytest.mark.parametrize("text, message", [
    ("models: [unclosed", "cannot read config file"),
    ("- just\n- a list\n", "must hold a YAML mapping"),
    ("", "must hold a YAML mapping"),
])
def test_bad_yaml_is_refused(tmp_path, text, message):
    pytest.importorskip("yaml")
    config = tmp_path / "config.yml"
    config.write_text(text)
    with pytest.raises(ValidationError, match=message) as info:
        parse_args(["--config-file", str(config)])
    assert info.value.param == "config_file"


def test_yaml_without_pyyaml_says_what_to_install(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml now raises ImportError
    config = tmp_path / "config.yaml"
    config.write_text("models: []\n")
    with pytest.raises(ValidationError, match="needs PyYAML"):
        parse_args(["--config-file", str(config)])
