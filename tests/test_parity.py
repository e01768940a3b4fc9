"""The same request through ``Llama``, ``Engine`` and the server gives the same result.

All three drive the one generation core (``llama_ffi.generation``); these tests hold them to
it over a table of option combinations: the same tokens (greedy, and seeded sampling, whose
chain runs the same way on the CPU), the same stops, logprobs and finish reasons, and the
same errors for the same bad input. Expected values come from ``Llama``'s run of the same
request, never from a hard-coded answer.

The three run with the same numerics: flash attention off (``Llama``'s llama-cpp-python
default) and a KV stream per sequence of ``Llama``'s size. With flash attention on, or in a
unified cache where a reused slot's new cells land elsewhere among masked ones, CPU logits
move by up to 0.1 nats: the kernels' summation order, not the generation code.
"""

from __future__ import annotations

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from server_harness import running_server  # noqa: E402

PROMPT = "The capital of France is"
GREEDY = {"temperature": 0.0}
GBNF = 'root ::= ("yes" | "no") " because " [a-z ]+ "."'

# name -> (keyword arguments as llama-cpp-python takes them, whether the server takes them too)
CASES = {
    "greedy": ({**GREEDY, "max_tokens": 12}, True),
    "stop string": ({**GREEDY, "max_tokens": 16, "stop": [" Paris", "."]}, True),
    "logprobs": ({**GREEDY, "max_tokens": 6, "logprobs": 3}, True),
    "penalties": ({**GREEDY, "max_tokens": 16, "repeat_penalty": 1.3, "presence_penalty": 0.5}, True),
    "logit bias": ({**GREEDY, "max_tokens": 8, "logit_bias": {"7042": -100.0}}, True),  # " Paris"
    "grammar": ({**GREEDY, "max_tokens": 24, "grammar": GBNF}, True),
    "seeded sampling": ({"temperature": 0.8, "top_k": 40, "top_p": 0.9, "seed": 7, "max_tokens": 16}, True),
    "min-p and typical": ({"temperature": 0.7, "min_p": 0.1, "typical_p": 0.9, "seed": 3, "max_tokens": 12}, True),
    "length": ({**GREEDY, "max_tokens": 3}, True),
}

BAD = {
    "stop entry not text": {"stop": [b"x"]},
    "too many stops": {"stop": [f"s{i}" for i in range(200)]},
    "logprobs too many": {"logprobs": 101},
    "max_tokens below -1": {"max_tokens": -2},
    "top_p out of range": {"top_p": 3.0},
    "logit bias outside the vocabulary": {"logit_bias": {"10000000": 1.0}},
}


@pytest.fixture(scope="module")
def engine(model_path):
    from llama_ffi import Engine

    with Engine(str(model_path), n_ctx=2048, n_batch=256, n_seq_max=4, kv_unified=False, n_gpu_layers=0,
                flash_attn="off") as eng:
        yield eng


@pytest.fixture(scope="module")
def server_url(model_path):
    from llama_ffi.server.config import ModelSettings, ServerSettings

    settings = ServerSettings(models=[ModelSettings(model=str(model_path), model_alias="smol", n_ctx=2048, n_batch=256,
                                                    n_parallel=4, kv_unified=False, n_gpu_layers=0,
                                                    flash_attn="off")])
    with running_server(settings) as (url, _):
        yield url


def through_llama(llama, options: dict) -> dict:
    out = llama.create_completion(PROMPT, **options)
    choice = out["choices"][0]
    return {"text": choice["text"], "finish_reason": choice["finish_reason"],
            "completion_tokens": out["usage"]["completion_tokens"], "logprobs": choice["logprobs"]}


def through_engine(engine, options: dict) -> dict:
    from llama_ffi import LlamaGrammar, SamplingParams
    from llama_ffi.generation.output import completion_logprobs

    options = dict(options)
    request = {name: options.pop(name) for name in ("max_tokens", "stop", "logprobs") if name in options}
    if "grammar" in options:
        request["grammar"] = LlamaGrammar.from_string(options.pop("grammar"))
    if "logit_bias" in options:
        options["logit_bias"] = {int(k): v for k, v in options["logit_bias"].items()}
    done = engine.complete_sync(PROMPT, sampling=SamplingParams(**options), **request)
    logprobs = None
    if done.logprobs is not None:
        logprobs = completion_logprobs(done.logprobs, engine.model.vocab.pieces)
    return {"text": done.text, "finish_reason": done.finish_reason, "completion_tokens": len(done.tokens),
            "logprobs": logprobs}


def through_server(url: str, options: dict) -> dict:
    response = httpx.post(url + "/v1/completions", json={"model": "smol", "prompt": PROMPT, **options}, timeout=120)
    assert response.status_code == 200, response.text
    body = response.json()
    choice = body["choices"][0]
    return {"text": choice["text"], "finish_reason": choice["finish_reason"],
            "completion_tokens": body["usage"]["completion_tokens"], "logprobs": choice["logprobs"]}


def assert_same(got: dict, want: dict, where: str) -> None:
    assert got["text"] == want["text"], where
    assert got["finish_reason"] == want["finish_reason"], where
    assert got["completion_tokens"] == want["completion_tokens"], where
    if want["logprobs"] is None:
        assert got["logprobs"] is None, where
        return
    assert got["logprobs"]["tokens"] == want["logprobs"]["tokens"], where
    assert got["logprobs"]["text_offset"] == want["logprobs"]["text_offset"], where
    assert got["logprobs"]["token_logprobs"] == pytest.approx(want["logprobs"]["token_logprobs"], abs=1e-3), where
    for mine, theirs in zip(got["logprobs"]["top_logprobs"], want["logprobs"]["top_logprobs"]):
        assert mine.keys() == theirs.keys(), where
        assert list(mine.values()) == pytest.approx(list(theirs.values()), abs=1e-3), where


@pytest.mark.parametrize("name", list(CASES))
def test_llama_engine_and_server_agree(name, llama, engine, server_url):
    """Greedy rows are sampled in bulk by the engine (generation/batched.py), sampled rows by
    a llama.cpp chain per sequence as in Llama, so seeded draws match too."""
    options, on_server = CASES[name]
    want = through_llama(llama, options)
    assert want["completion_tokens"] > 0
    assert_same(through_engine(engine, options), want, f"{name}: Engine")
    if on_server:
        assert_same(through_server(server_url, options), want, f"{name}: server")


def test_the_cases_exercise_what_they_name(llama):
    """Guard against a table that no longer tests anything: stops, bias, grammar, length bite."""
    plain = through_llama(llama, CASES["greedy"][0])
    assert through_llama(llama, CASES["stop string"][0])["finish_reason"] == "stop"
    assert through_llama(llama, CASES["length"][0])["finish_reason"] == "length"
    assert " Paris" in plain["text"]  # so the logit-bias row changes the answer
    assert through_llama(llama, CASES["logit bias"][0])["text"] != plain["text"]
    assert llama.tokenize(b" Paris", add_bos=False) == [7042]
    answer = through_llama(llama, CASES["grammar"][0])["text"]
    from llama_ffi import LlamaGrammar

    assert LlamaGrammar.from_string(GBNF).matches(answer) or through_llama(
        llama, CASES["grammar"][0])["finish_reason"] == "length"


def test_a_stop_token_id_ends_both_drivers_alike(llama, engine):
    plain = llama.create_completion(PROMPT, max_tokens=12, logprobs=0, **GREEDY)["choices"][0]
    third = llama.tokenize(plain["logprobs"]["tokens"][2].encode(), add_bos=False)
    assert len(third) == 1
    want = through_llama(llama, {**GREEDY, "max_tokens": 12, "stop": third})
    assert want["finish_reason"] == "stop" and want["completion_tokens"] == 2
    assert_same(through_engine(engine, {**GREEDY, "max_tokens": 12, "stop": third}), want, "Engine")


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_is_refused_alike(name, llama, engine, server_url):
    from llama_ffi import ValidationError

    options = {**GREEDY, "max_tokens": 4, **BAD[name]}
    with pytest.raises(ValidationError) as on_llama:
        llama.create_completion(PROMPT, **options)
    with pytest.raises(ValidationError) as on_engine:
        through_engine(engine, options)
    assert on_llama.value.param == on_engine.value.param
    if isinstance(options.get("stop", [""])[0], str):  # the server's schema takes text stops only
        response = httpx.post(server_url + "/v1/completions", json={"model": "smol", "prompt": PROMPT, **options},
                              timeout=60)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["type"] == "invalid_request_error"
    assert through_llama(llama, CASES["length"][0])["completion_tokens"] == 3  # both still serve
    assert through_engine(engine, CASES["length"][0])["completion_tokens"] == 3
