"""Speculative decoding through the server: llama-server's ``speculative.n_max``/``n_min`` and our
``speculative: true|{...}`` on /v1/completions and /v1/chat/completions, the per-model default
(``spec_default``, ``draft_max``, ``draft_min``), ``timings`` in the answers, and /metrics.

A real server on the real small model. The oracle for the text is the same request without
speculation; as in tests/test_speculative.py, a row of a verification batch is not
bit-identical to the same row decoded alone, so greedy outputs may part only where the plain
run was at a near-tie (its two best log-probabilities within ``NEAR_TIE``).
"""

from __future__ import annotations

import json

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from server_harness import running_server

from llama_ffi.errors import ValidationError
from llama_ffi.server.config import parse_args

LIST = ("Repeat this list exactly: apple, banana, cherry, date, elderberry, fig, grape, honeydew, kiwi, "
        "lemon, mango.\nList: apple,")
NEAR_TIE = 0.6
SPEC_COUNTERS = ("llama_ffi_spec_decode_num_drafts_total", "llama_ffi_spec_decode_num_draft_tokens_total",
                 "llama_ffi_spec_decode_num_accepted_tokens_total")


@pytest.fixture(scope="module")
def server(model_path):
    """'smol' speculates only when asked; 'smol-spec' for every request (--spec-default, --draft-max 6)."""
    from llama_ffi.server.config import ModelSettings, ServerSettings

    common = {"model": str(model_path), "n_ctx": 2048, "n_parallel": 2, "n_gpu_layers": 0}
    settings = ServerSettings(models=[ModelSettings(model_alias="smol", **common),
                                      ModelSettings(model_alias="smol-spec", spec_default=True, draft_max=6,
                                                    **common)])
    with running_server(settings) as (url, _):
        yield url


def post(url: str, path: str, body: dict, **kw) -> httpx.Response:
    return httpx.post(url + path, json=body, timeout=120, **kw)


def complete(url: str, **fields) -> dict:
    body = {"model": "smol", "prompt": LIST, "max_tokens": 40, "temperature": 0.0, **fields}
    response = post(url, "/v1/completions", body)
    assert response.status_code == 200, response.text
    return response.json()


def chat(url: str, **fields) -> dict:
    body = {"model": "smol", "messages": [{"role": "user", "content": LIST}], "max_tokens": 40,
            "temperature": 0.0, **fields}
    response = post(url, "/v1/chat/completions", body)
    assert response.status_code == 200, response.text
    return response.json()


def assert_same_greedy(plain: dict, spec: dict) -> None:
    """Identical tokens, or parted only at a near-tie of the plain run (nothing compared after)."""
    want, got = plain["choices"][0]["logprobs"], spec["choices"][0]["logprobs"]
    for i, (a, b) in enumerate(zip(want["tokens"], got["tokens"])):
        if a != b:
            best = sorted(want["top_logprobs"][i].values(), reverse=True)
            margin = best[0] - best[1] if len(best) > 1 else float("inf")
            assert margin < NEAR_TIE, f"parted at token {i} ({a!r} vs {b!r}) with margin {margin:.3f}"
            return
    assert want["tokens"] == got["tokens"]
    assert plain["choices"][0]["text"] == spec["choices"][0]["text"]
    assert plain["choices"][0]["finish_reason"] == spec["choices"][0]["finish_reason"]


def metric(url: str, name: str, model: str = "smol") -> float:
    text = httpx.get(url + "/metrics", timeout=30).text
    series = f'{name}{{model="{model}"}} '
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(series)]
    assert len(values) == 1, f"{name} not (once) in /metrics"
    return values[0]


# --- output and timings --------------------------------------------------------------------
@pytest.mark.parametrize("fields", [{"speculative": {"n_max": 8}}, {"speculative": True},
                                    {"speculative.n_max": 4, "speculative.n_min": 1}])
def test_greedy_completion_agrees_with_and_without_speculation(server, fields):
    plain = complete(server, logprobs=2)
    spec = complete(server, logprobs=2, **fields)
    assert "timings" not in plain  # only where speculation ran
    assert_same_greedy(plain, spec)
    timings = spec["timings"]
    assert timings["predicted_n"] == spec["usage"]["completion_tokens"]
    assert 0 <= timings["prompt_n"] <= spec["usage"]["prompt_tokens"]
    assert 0 <= timings["draft_n_accepted"] <= timings["draft_n"]


def test_repetitive_prompt_drafts_and_keeps_drafts(server):
    before = {name: metric(server, name) for name in SPEC_COUNTERS}
    out = complete(server, **{"speculative.n_max": 8})
    timings = out["timings"]
    assert timings["draft_n"] > 0 and timings["draft_n_accepted"] > 0, timings
    after = {name: metric(server, name) for name in SPEC_COUNTERS}
    # nothing else runs on this server meanwhile: the counters moved by exactly this request's drafts
    assert after[SPEC_COUNTERS[1]] - before[SPEC_COUNTERS[1]] == timings["draft_n"]
    assert after[SPEC_COUNTERS[2]] - before[SPEC_COUNTERS[2]] == timings["draft_n_accepted"]
    assert after[SPEC_COUNTERS[0]] > before[SPEC_COUNTERS[0]]


def test_chat_with_speculation_agrees_and_reports_timings(server):
    plain = chat(server, logprobs=True, top_logprobs=2)
    spec = chat(server, logprobs=True, top_logprobs=2, speculative={"n_max": 8, "ngram_size": 3})
    want = [e["token"] for e in plain["choices"][0]["logprobs"]["content"]]
    got = [e["token"] for e in spec["choices"][0]["logprobs"]["content"]]
    for i, (a, b) in enumerate(zip(want, got)):
        if a != b:
            top = [t["logprob"] for t in plain["choices"][0]["logprobs"]["content"][i]["top_logprobs"]]
            assert top[0] - top[1] < NEAR_TIE, (i, a, b)
            break
    else:
        assert plain["choices"][0]["message"] == spec["choices"][0]["message"]
    assert "timings" not in plain
    assert spec["timings"]["predicted_n"] == spec["usage"]["completion_tokens"]
    assert spec["timings"]["draft_n"] >= spec["timings"]["draft_n_accepted"] >= 0


def _stream(url: str, path: str, body: dict) -> list[dict]:
    chunks = []
    with httpx.stream("POST", url + path, json={**body, "stream": True}, timeout=120) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[6:]))
    return chunks


@pytest.mark.parametrize("path, body", [
    ("/v1/completions", {"prompt": LIST}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": LIST}]}),
])
def test_streamed_final_chunk_carries_timings(server, path, body):
    body = {"model": "smol", "max_tokens": 30, "temperature": 0.0, "speculative.n_max": 8, "n": 2,
            "stream_options": {"include_usage": True}, **body}
    chunks = _stream(server, path, body)
    with_timings = [i for i, c in enumerate(chunks) if "timings" in c]
    finishing = [i for i, c in enumerate(chunks) if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finishing) == 2 and with_timings == finishing[-1:]  # once, on the last choice's end
    timings = chunks[with_timings[0]]["timings"]
    assert timings["predicted_n"] == chunks[-1]["usage"]["completion_tokens"]  # both choices summed
    assert timings["draft_n"] >= timings["draft_n_accepted"] >= 0
    plain = _stream(server, path, {k: v for k, v in body.items() if not k.startswith("speculative")})
    assert not any("timings" in c for c in plain)


def test_model_default_speculates_unless_the_request_says_false(server):
    on = complete(server, model="smol-spec")
    assert on["timings"]["draft_n"] > 0
    off = complete(server, model="smol-spec", speculative=False)
    assert "timings" not in off
    # a request's n_min above the model's draft_max (6) without its own n_max: a clear 400
    error = post(server, "/v1/completions", {"model": "smol-spec", "prompt": "x", "speculative.n_min": 7})
    assert error.status_code == 400 and error.json()["error"]["param"] == "speculative.n_min"
    chat_on = chat(server, model="smol-spec")
    assert "timings" in chat_on


def test_openai_client_tolerates_timings(server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server + "/v1", api_key="none", max_retries=0)
    out = client.completions.create(model="smol", prompt=LIST, max_tokens=20, temperature=0,
                                    extra_body={"speculative": {"n_max": 8}})
    assert out.choices[0].text and out.model_extra["timings"]["draft_n"] >= 0
    reply = client.chat.completions.create(model="smol", messages=[{"role": "user", "content": LIST}],
                                           max_tokens=20, temperature=0, extra_body={"speculative.n_max": 8})
    assert reply.choices[0].message.content is not None and "timings" in reply.model_extra
    chunks = list(client.chat.completions.create(model="smol", messages=[{"role": "user", "content": LIST}],
                                                 max_tokens=20, temperature=0, stream=True,
                                                 extra_body={"speculative": True}))
    assert chunks[-1].choices[0].finish_reason and "timings" in chunks[-1].model_extra


# --- bad values ----------------------------------------------------------------------------
BAD = [
    ({"speculative.n_max": -1}, "speculative.n_max"),
    ({"speculative.n_max": 0}, "speculative.n_max"),
    ({"speculative.n_max": 10 ** 9}, "speculative.n_max"),
    ({"speculative.n_max": "8"}, "speculative.n_max"),
    ({"speculative.n_max": 8.0}, "speculative.n_max"),
    ({"speculative.n_max": True}, "speculative.n_max"),
    ({"speculative.n_min": -3}, "speculative.n_min"),
    ({"speculative.n_max": 2, "speculative.n_min": 5}, "speculative.n_min"),
    ({"speculative": "yes"}, "speculative"),
    ({"speculative": 1}, "speculative"),
    ({"speculative": [8]}, "speculative"),
    ({"speculative": {"n_max": 0}}, "speculative.n_max"),
    ({"speculative": {"n_max": 1 << 70}}, "speculative.n_max"),
    ({"speculative": {"ngram_size": 0}}, "speculative.ngram_size"),
    ({"speculative": {"bogus": 1}}, "speculative.bogus"),
    ({"speculative": {"n_max": 4, "n_min": 8}}, "speculative.n_min"),
    ({"speculative_n_max": 4}, "speculative_n_max"),  # only llama-server's dotted spelling
    ({"speculative.p_min": 0.5}, "speculative.p_min"),  # a draft model's option: not here
]


@pytest.mark.parametrize("path, body", [
    ("/v1/completions", {"prompt": "Hi"}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]}),
    ("/infill", {"input_prefix": "def f(", "input_suffix": ")"}),
])
@pytest.mark.parametrize("fields, param", BAD)
def test_bad_speculative_values_are_openai_400s(server, path, body, fields, param):
    response = post(server, path, {"model": "smol", "max_tokens": 4, **body, **fields})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert error["param"].startswith(param.split(".")[0]) and param.split(".")[-1] in error["param"]


@pytest.mark.parametrize("path, body", [
    ("/v1/responses", {"input": "Hi"}),
    ("/v1/messages", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}),
])
def test_responses_and_messages_refuse_speculative_fields(server, path, body):
    """Their bodies follow OpenAI's and Anthropic's schemas; the model's default still applies."""
    for fields in ({"speculative": True}, {"speculative.n_max": 4}):
        response = post(server, path, {"model": "smol", **body, **fields})
        assert response.status_code == 400, response.text
        assert "speculative" in json.dumps(response.json())


def test_server_is_idle_after_the_bad_requests(server):
    assert complete(server, max_tokens=4)["choices"][0]["finish_reason"] == "length"
    assert metric(server, "llama_ffi_running_sequences") == 0


# --- settings ------------------------------------------------------------------------------
def test_cli_flags_set_the_model_default(model_path):
    settings = parse_args(["-m", str(model_path), "--spec-default", "--draft-max", "8", "--draft-min", "2",
                           "--spec-max-running", "3"])
    (model,) = settings.models
    assert (model.spec_default, model.draft_max, model.draft_min, model.spec_max_running) == (True, 8, 2, 3)
    assert model.engine_config().spec_max_running == 3
    assert parse_args(["-m", str(model_path)]).models[0].spec_default is False
    assert parse_args(["-m", str(model_path), "--draft", "5"]).models[0].draft_max == 5  # llama-server alias
    for argv in (["--draft-max", "0"], ["--draft-max", "65"], ["--draft-min", "9", "--draft-max", "8"],
                 ["--spec-max-running", "-1"]):
        with pytest.raises(ValidationError):
            parse_args(["-m", str(model_path), *argv])


def test_config_file_keys(model_path, tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"models": [{"model": str(model_path), "spec_default": True, "draft_max": 12}]}))
    (model,) = parse_args(["--config-file", str(config)]).models
    assert model.spec_default and model.speculative_options().n_max == 12
    config.write_text(json.dumps({"models": [{"model": str(model_path), "spec_default": "yes"}]}))
    with pytest.raises(ValidationError, match="spec_default"):
        parse_args(["--config-file", str(config)])


def test_infill_speculates_and_reports_timings(model_path):
    """/infill (llama-server's) takes the same fields; its ``timings`` gain the draft counts."""
    from llama_ffi.engine import Engine
    from llama_ffi.native import Model, ModelParams
    from llama_ffi.server.config import ModelSettings, ServerSettings
    from llama_ffi.server.registry import Registry

    # SmolLM2 has no FIM tokens: <issue_start>, <issue_comment>, <issue_closed> and <file_sep> stand in
    fim = {"tokenizer.ggml.fim_pre_token_id": 8, "tokenizer.ggml.fim_suf_token_id": 9,
           "tokenizer.ggml.fim_mid_token_id": 10, "tokenizer.ggml.fim_sep_token_id": 5}
    model = Model(str(model_path), ModelParams(n_gpu_layers=0, kv_overrides=fim))
    settings = ServerSettings(models=[ModelSettings(model=str(model_path), model_alias="fim", n_ctx=1024,
                                                    n_parallel=1, n_gpu_layers=0)])
    registry = Registry.load(settings.models, engine_factory=lambda path, config: Engine(model, config))
    body = {"input_prefix": LIST, "input_suffix": "\n", "max_tokens": 24, "temperature": 0}
    try:
        with running_server(settings, registry) as (url, _):
            plain = post(url, "/infill", body).json()
            spec = post(url, "/infill", {**body, "speculative": {"n_max": 8}}).json()
    finally:
        model.close()
    assert set(plain["timings"]) == {"total_ms"}
    timings = spec["timings"]
    assert timings["predicted_n"] == spec["tokens_predicted"] and timings["total_ms"] > 0
    assert timings["draft_n"] >= timings["draft_n_accepted"] >= 0
