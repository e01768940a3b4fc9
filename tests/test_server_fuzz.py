"""Schema-driven fuzzing of the server: every endpoint of its OpenAPI description, fed by
schemathesis (valid and invalid bodies), against a live server running the real model.

What must hold for every generated request:

* no 5xx, except 503 with ``Retry-After`` (overload; 529 under ``/v1/messages``);
* every error body has OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``
  (Anthropic's, ``{"type": "error", "error": {"type", "message"}}``, under ``/v1/messages``);
* a 200 stream is well-formed server-sent events ending in ``data: [DONE]``;
* afterwards the process is alive, a normal request works and no sequence is left running.

Bounded for CI: ``SERVER_FUZZ_EXAMPLES`` examples per endpoint and mode (default 60), a
fixed seed (Hypothesis ``derandomize``; ``SERVER_FUZZ_SEED=N`` explores other inputs), no
shrinking, generation capped at 8 tokens.
"""

from __future__ import annotations

import collections
import json
import os
import time

import pytest

schemathesis = pytest.importorskip("schemathesis")
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
requests = pytest.importorskip("requests")

from hypothesis import HealthCheck, Phase, given, seed, settings
from schemathesis import GenerationMode
from server_harness import running_server

EXAMPLES = int(os.environ.get("SERVER_FUZZ_EXAMPLES", "60"))
SEED = os.environ.get("SERVER_FUZZ_SEED")
MAX_TOKENS = 8
ERROR_KEYS = {"message", "type", "param", "code"}
GENERATION = {"POST /v1/completions", "POST /v1/chat/completions", "POST /v1/responses", "POST /v1/messages"}
TOKEN_CAPS = ("max_tokens", "max_completion_tokens", "max_output_tokens")  # each endpoint's own name
# named-event streams (Responses) end with a final event rather than data: [DONE]
LAST_EVENTS = {"response.completed", "response.incomplete", "response.failed", "error", "message_stop"}
ANTHROPIC_ERRORS = {"invalid_request_error", "authentication_error", "not_found_error", "request_too_large",
                    "overloaded_error"}
TALLY: collections.Counter = collections.Counter()  # (label, mode, status) -> count, for the summary


def _openapi() -> dict:
    """The app's OpenAPI description, built without loading a model (routes only)."""
    from llama_ffi.server.app import create_app
    from llama_ffi.server.config import ServerSettings
    from llama_ffi.server.registry import Registry

    return create_app(ServerSettings(), Registry([])).openapi()


def _cases() -> list:
    schema = schemathesis.openapi.from_dict(_openapi())
    out = []
    for result in schema.get_all_operations():
        operation = result.ok()
        out.append(pytest.param(operation, GenerationMode.POSITIVE, id=f"{operation.label} valid"))
        if operation.body:  # nothing invalid can be generated for the GETs without parameters
            out.append(pytest.param(operation, GenerationMode.NEGATIVE, id=f"{operation.label} invalid"))
    return out


@pytest.fixture(scope="module")
def server(model_path):
    from llama_ffi.server.config import ModelSettings, ServerSettings

    settings = ServerSettings(max_body_bytes=64 * 1024, models=[
        ModelSettings(model=str(model_path), model_alias="smol", n_ctx=1024, n_parallel=4, n_threads=1,
                      n_gpu_layers=0)])
    with running_server(settings) as (url, srv):
        yield url, srv


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _bound(body, label: str, mode: GenerationMode) -> None:
    """Keep generation short (the fuzz is about inputs, not long outputs)."""
    if not isinstance(body, dict):
        return
    if mode == GenerationMode.POSITIVE and isinstance(body.get("model"), str):
        body["model"] = "smol"  # otherwise nearly every valid body is a 404 for its random model name
    if label in GENERATION:
        for key in TOKEN_CAPS:
            if _is_int(body.get(key)) and body[key] > MAX_TOKENS:
                body[key] = MAX_TOKENS
        cap = "max_output_tokens" if label == "POST /v1/responses" else "max_tokens"
        if not any(_is_int(body.get(k)) for k in TOKEN_CAPS) and cap not in body:
            body[cap] = MAX_TOKENS  # chat without a cap runs to the end of the context
        if _is_int(body.get("n")) and body["n"] > 2:
            body["n"] = 2
        if isinstance(body.get("prompt"), list) and body["prompt"] and not _is_int(body["prompt"][0]):
            del body["prompt"][4:]


def _check(response, label: str, body) -> None:
    where = f"{label} {json.dumps(body, default=str)[:2000]}"
    status = response.status_code
    assert status < 500 or (status in (503, 529) and "retry-after" in response.headers), \
        f"{status} for {where}: {response.text[:500]}"
    if status >= 400 and label.split()[-1].startswith("/v1/messages"):  # Anthropic's route, Anthropic's shape
        body = json.loads(response.text)
        assert body["type"] == "error" and set(body["error"]) == {"type", "message"}, where
        assert body["error"]["type"] in ANTHROPIC_ERRORS and body["error"]["message"], where
    elif status >= 400:
        try:
            error = json.loads(response.text)["error"]
        except (ValueError, KeyError, TypeError):
            raise AssertionError(f"{status} without an OpenAI error body for {where}: {response.text[:500]}") from None
        assert set(error) == ERROR_KEYS and isinstance(error["message"], str) and error["message"], where
        assert isinstance(error["type"], str) and (error["param"] is None or isinstance(error["param"], str)), where
    elif (response.headers.get("content-type") or [""])[0].startswith("text/event-stream"):
        events = [_sse_data(block, where) for block in response.text.split("\n\n") if block]
        assert events, where
        assert events[-1] == "[DONE]" or "error" in json.loads(events[-1]) \
            or json.loads(events[-1]).get("type") in LAST_EVENTS, where
    elif status == 200 and label != "GET /metrics":
        json.loads(response.text)


def _sse_data(block: str, where: str) -> str:
    """The data of one server-sent event: ``data: ...``, after an ``event: <name>`` line if named."""
    lines = block.split("\n")
    if lines[0].startswith("event: "):
        assert len(lines) == 2 and json.loads(lines[1][6:]).get("type") == lines[0][7:], where
        lines = lines[1:]
    assert len(lines) == 1 and lines[0].startswith("data: "), where
    return lines[0][6:]


@pytest.mark.slow
@pytest.mark.parametrize("operation, mode", _cases())
def test_fuzz_endpoint(server, operation, mode):
    url, _ = server
    label = operation.label
    session = requests.Session()

    @settings(max_examples=EXAMPLES, derandomize=SEED is None, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(operation.as_strategy(generation_mode=mode))
    def run(case):
        _bound(case.body, label, mode)
        response = case.call(base_url=url, session=session, timeout=60)
        TALLY[(label, mode.value, response.status_code)] += 1
        _check(response, label, case.body)

    if SEED is not None:
        run = seed(int(SEED))(run)
    try:
        run()
    finally:
        session.close()


# --- regressions for what the fuzz found ------------------------------------------------------
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
@pytest.mark.parametrize("penalty", [0.0, 5e-324, 1e-9])
def test_tiny_repeat_penalty_is_refused_up_front(server, path, penalty):
    """Were accepted, then the engine failed to build the sampler (llama.cpp's penalties
    sampler wants at least 1e-6) on its own thread and the request never finished: the
    client hung until its timeout."""
    started = time.monotonic()
    body = {"messages": [{"role": "user", "content": "hi"}]} if "chat" in path else {"prompt": "hi"}
    out = httpx.post(server[0] + path, timeout=30, json={**body, "max_tokens": 2, "repeat_penalty": penalty})
    assert out.status_code == 400 and out.json()["error"]["param"] == "repeat_penalty", out.text
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("key", ["\u00b3", "\u0663", "1" * 5000, "+5", " 5", "5\n"])
def test_logit_bias_keys_that_are_not_ascii_token_ids_are_400(server, key):
    """'\u00b3' (superscript three) passed str.isdigit() and then int() raised: a 500."""
    out = httpx.post(server[0] + "/v1/completions", timeout=30,
                     json={"prompt": "hi", "max_tokens": 1, "logit_bias": {key: 1.0}})
    assert out.status_code == 400 and out.json()["error"]["param"] == "logit_bias", out.text


@pytest.mark.parametrize("message", [{"role": "user"}, {"role": "user", "content": None},
                                     {"role": "tool", "tool_call_id": "x"}, {"role": "assistant", "content": None}])
def test_message_without_content_is_a_clear_400(server, message):
    """Was a 400 naming the chat template's internals ('dict object' has no attribute 'content')."""
    out = httpx.post(server[0] + "/v1/chat/completions", timeout=30,
                     json={"messages": [message], "max_tokens": 2})
    error = out.json()["error"]
    assert out.status_code == 400 and error["param"] == "messages" and "content is required" in error["message"]


def test_server_is_alive_and_idle_after_the_fuzz(server):
    url, srv = server
    assert httpx.get(url + "/health", timeout=30).json() == {"status": "ok"}
    out = httpx.post(url + "/v1/completions", timeout=60,
                     json={"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}).json()
    assert out["choices"][0]["finish_reason"] in ("stop", "length") and out["usage"]["completion_tokens"] >= 1
    engine = srv.registry.entries["smol"].engine
    deadline = time.monotonic() + 30
    while (engine.stats()["running"], engine.stats()["queued"]) != (0, 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (engine.stats()["running"], engine.stats()["queued"]) == (0, 0), engine.stats()
    assert not srv.registry.entries["smol"].active, "engine requests still tracked as in flight"
    if TALLY:
        by_status = collections.Counter()
        for (_, _, status), count in TALLY.items():
            by_status[status] += count
        print(f"\nserver fuzz: {sum(TALLY.values())} requests, by status {dict(sorted(by_status.items()))}")
