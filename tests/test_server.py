"""The OpenAI-compatible server, driven by the official ``openai`` client over a real socket."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from server_harness import running_server

KEY = "sk-test-key"
GREEDY = {"temperature": 0.0}
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def server(model_path):
    from llama_ffi.server.config import ModelSettings, ServerSettings

    settings = ServerSettings(api_key=KEY, max_body_bytes=64 * 1024, models=[
        ModelSettings(model=str(model_path), model_alias="smol", n_ctx=2048, n_parallel=4, n_gpu_layers=0)])
    with running_server(settings) as (url, srv):
        yield url, srv


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=server[0] + "/v1", api_key=KEY, max_retries=0, timeout=120) as c:
        yield c


def post(server, path: str, body, key: str | None = KEY, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(server[0] + path, json=body, headers=headers, timeout=120, **kwargs)


# --- completions ---------------------------------------------------------------------------
def test_models_lists_the_alias(client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["smol"]


def test_completion_and_its_stream_agree(client):
    whole = client.completions.create(model="smol", prompt="The capital of France is", max_tokens=12, **GREEDY)
    choice = whole.choices[0]
    assert choice.text and choice.finish_reason in ("stop", "length")
    assert whole.usage.completion_tokens <= 12 and whole.usage.prompt_tokens > 0
    chunks = list(client.completions.create(model="smol", prompt="The capital of France is", max_tokens=12,
                                            stream=True, stream_options={"include_usage": True}, **GREEDY))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == choice.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == choice.finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_completion_n_seed_stop_and_logprobs(client):
    kwargs = {"model": "smol", "prompt": "Once upon a time", "max_tokens": 10, "n": 3, "seed": 7, "temperature": 0.9}
    first = client.completions.create(**kwargs)
    assert [c.index for c in first.choices] == [0, 1, 2]
    # each choice gets seed + index; outputs are not bit-reproducible across calls because
    # batch composition (and the prefix cache) changes the floating-point sums
    assert len({c.text for c in first.choices}) >= 2 and all(c.text for c in first.choices)
    stopped = client.completions.create(model="smol", prompt="1, 2, 3, 4,", max_tokens=20, stop=[" 6"], **GREEDY)
    assert " 6" not in stopped.choices[0].text and stopped.choices[0].finish_reason == "stop"
    out = client.completions.create(model="smol", prompt="Hello", max_tokens=4, logprobs=2, **GREEDY)
    lp = out.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == 4 and all(len(t) >= 2 for t in lp.top_logprobs)
    assert "".join(lp.tokens) == out.choices[0].text


def test_batch_of_token_prompts(client):
    out = client.completions.create(model="smol", prompt=[[504, 3575, 282], [19556, 28]], max_tokens=3, **GREEDY)
    assert [c.index for c in out.choices] == [0, 1] and out.usage.prompt_tokens == 5


# --- chat --------------------------------------------------------------------------------
def test_chat_matches_llama_create_chat_completion(client, llama):
    """Both go through llama_ffi.chat.pipeline: same prompt, same greedy answer."""
    ours = client.chat.completions.create(model="smol", messages=MESSAGES, max_tokens=10, **GREEDY)
    reference = llama.create_chat_completion(MESSAGES, max_tokens=10, **GREEDY)
    assert ours.choices[0].message.content == reference["choices"][0]["message"]["content"]
    assert ours.usage.prompt_tokens == reference["usage"]["prompt_tokens"]


def test_chat_stream_deltas_join_to_the_answer(client):
    whole = client.chat.completions.create(model="smol", messages=MESSAGES, max_tokens=10, **GREEDY)
    chunks = list(client.chat.completions.create(model="smol", messages=MESSAGES, max_tokens=10, stream=True,
                                                 stream_options={"include_usage": True}, **GREEDY))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].usage.total_tokens == whole.usage.total_tokens
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")


def test_required_tool_choice_is_grammar_forced(client):
    out = client.chat.completions.create(model="smol", messages=[{"role": "user", "content": "Weather in Paris?"}],
                                         tools=TOOLS, tool_choice="required", max_tokens=60, **GREEDY)
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather" and call.id
    assert isinstance(json.loads(call.function.arguments)["city"], str)
    stream = list(client.chat.completions.create(
        model="smol", messages=[{"role": "user", "content": "Weather in Rome?"}], tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}}, max_tokens=60, stream=True, **GREEDY))
    calls = [tc for c in stream for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls and calls[0].function.name == "get_weather" and calls[0].index == 0
    assert stream[-1].choices[0].finish_reason == "tool_calls"


def test_json_schema_response_format(client):
    jsonschema = pytest.importorskip("jsonschema")
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                               "age": {"type": "integer", "minimum": 0, "maximum": 120}},
              "required": ["name", "age"], "additionalProperties": False}
    out = client.chat.completions.create(
        model="smol", messages=[{"role": "user", "content": "Describe a person as JSON."}], max_tokens=80,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}}, **GREEDY)
    jsonschema.validate(json.loads(out.choices[0].message.content), schema)


def test_chat_logprobs_and_n(client):
    out = client.chat.completions.create(model="smol", messages=MESSAGES, max_tokens=3, logprobs=True,
                                         top_logprobs=2, n=2, **GREEDY)
    assert len(out.choices) == 2 and out.choices[0].message.content == out.choices[1].message.content
    content = out.choices[0].logprobs.content
    assert len(content) == 3 and all(len(t.top_logprobs) == 2 for t in content)


# --- embeddings, rerank, tokenize, health, metrics ---------------------------------------
def test_embeddings_float_and_base64(client, server):
    out = client.embeddings.create(model="smol", input=["hello world", "goodbye"])  # the client asks for base64
    assert [d.index for d in out.data] == [0, 1] and out.usage.prompt_tokens > 0
    vectors = np.asarray([d.embedding for d in out.data])
    assert vectors.shape == (2, 576) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    raw = post(server, "/v1/embeddings", {"input": "hello world", "encoding_format": "float"}).json()
    assert np.allclose(raw["data"][0]["embedding"], vectors[0], atol=1e-5)
    b64 = post(server, "/v1/embeddings", {"input": "hello world", "encoding_format": "base64"}).json()
    assert np.allclose(np.frombuffer(base64.b64decode(b64["data"][0]["embedding"]), "<f4"), vectors[0], atol=1e-6)


def test_rerank_needs_a_reranking_model(server):
    r = post(server, "/v1/rerank", {"query": "capital", "documents": ["Paris", "cheese"]})
    assert r.status_code == 400 and "rerank" in r.json()["error"]["message"]


def test_tokenize_detokenize_round_trip(server):
    tokens = post(server, "/tokenize", {"content": "Hello world", "add_special": False}).json()["tokens"]
    assert tokens and all(isinstance(t, int) for t in tokens)
    assert post(server, "/detokenize", {"tokens": tokens}).json() == {"content": "Hello world"}
    assert post(server, "/detokenize", {"tokens": [10 ** 7]}).status_code == 400


def test_health_is_open_and_metrics_are_prometheus(server):
    assert httpx.get(server[0] + "/health").json() == {"status": "ok"}
    text = httpx.get(server[0] + "/metrics", headers={"Authorization": f"Bearer {KEY}"}).text
    for name in ("llama_ffi_queue_depth", "llama_ffi_running_sequences", "llama_ffi_tokens_per_second",
                 "llama_ffi_kv_cache_usage_ratio", "llama_ffi_prefix_cache_hit_rate",
                 'llama_ffi_time_to_first_token_seconds{model="smol",quantile="0.99"}'):
        assert name in text
    assert httpx.get(server[0] + "/metrics").status_code == 401


# --- errors --------------------------------------------------------------------------------
def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


def test_bad_or_missing_api_key_is_401(server):
    with openai.OpenAI(base_url=server[0] + "/v1", api_key="wrong", max_retries=0) as bad, \
            pytest.raises(openai.AuthenticationError):
        bad.models.list()
    assert _error(post(server, "/v1/models", None, key=None), 401)["code"] == "invalid_api_key"


def test_unknown_model_is_404(client, server):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-4", messages=MESSAGES)
    assert info.value.body["code"] == "model_not_found"
    _error(post(server, "/v1/nowhere", {}), 404)


@pytest.mark.parametrize("body, param", [
    ({"prompt": "hi", "max_tokens": "lots"}, "max_tokens"),
    ({"prompt": "hi", "temperature": "hot"}, "temperature"),
    ({"prompt": "hi", "temperature": 7}, "temperature"),
    ({"prompt": 5}, "prompt"),
    ({"prompt": "hi", "n": 0}, "n"),
    ({"prompt": "hi", "stream": "yes"}, "stream"),
    ({"prompt": "hi", "logit_bias": {"99999999": 1}}, "logit_bias"),
    ({"prompt": "hi", "grammar": "root ::= nonsense"}, None),
    ({"prompt": "hi", "frobnicate": 1}, "frobnicate"),
    ({"prompt": "hi", "cache_prompt": "yes"}, "cache_prompt"),
    ({}, "prompt"),
])
def test_wrong_fields_are_400(server, body, param):
    error = _error(post(server, "/v1/completions", {"model": "smol", **body}), 400)
    assert error["type"] == "invalid_request_error"
    if param:
        assert error["param"] and error["param"].startswith(param)


def test_llama_server_cache_prompt_is_accepted_and_changes_nothing(client, server):
    greedy = {"model": "smol", "messages": MESSAGES, "max_tokens": 12, "temperature": 0}
    plain = client.chat.completions.create(**greedy).choices[0].message.content
    for cache_prompt in (True, False):
        reply = client.chat.completions.create(**greedy, extra_body={"cache_prompt": cache_prompt})
        assert reply.choices[0].message.content == plain


def test_chat_errors_are_400(client, server):
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="smol", messages=[{"role": "wizard", "content": "x"}])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="smol", messages=MESSAGES, tools=TOOLS, tool_choice="required",
                                       response_format={"type": "json_object"}, extra_body={"grammar": "root ::= \"a\""})
    _error(post(server, "/v1/chat/completions", {"model": "smol", "messages": []}), 400)
    _error(post(server, "/v1/chat/completions", {"model": "smol", "messages": MESSAGES,
                                                 "response_format": {"type": "xml"}}), 400)
    raw = httpx.post(server[0] + "/v1/chat/completions", content=b"{not json", timeout=30,
                     headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert "JSON" in _error(raw, 400)["message"]


def test_context_overflow_is_400(server):
    error = _error(post(server, "/v1/completions", {"model": "smol", "prompt": "word " * 3000}), 400)
    assert error["code"] == "context_length_exceeded" and error["param"] == "prompt"


def test_oversized_body_is_413(client, server):
    with pytest.raises(openai.APIStatusError) as info:
        client.completions.create(model="smol", prompt="x" * 70_000, max_tokens=1)
    assert info.value.status_code == 413
    chunked = httpx.post(server[0] + "/v1/completions", content=iter([b"{" + b" " * 40_000] * 3),
                         headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert _error(chunked, 413)["code"] == "request_too_large"
