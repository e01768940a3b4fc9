"""llama-server's /infill: the fill-in-the-middle prompt laid out from the model's FIM tokens,
generated like a completion. A real server on the real small model; SmolLM2 has no FIM
prefix/suffix/middle tokens, so a second copy of it is loaded with three of its unused
control tokens marked as FIM tokens through llama.cpp's metadata overrides."""

from __future__ import annotations

import json

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from server_harness import running_server

from llama_ffi.server.config import ModelSettings, ServerSettings

# SmolLM2's <issue_start>, <issue_comment>, <issue_closed> as FIM_PRE, FIM_SUF, FIM_MID, and its
# <file_sep> as FIM_SEP; llama.cpp finds <reponame> (4) as FIM_REP by itself.
PRE, SUF, MID, SEP, REP = 8, 9, 10, 5, 4
FIM_KEYS = {"tokenizer.ggml.fim_pre_token_id": PRE, "tokenizer.ggml.fim_suf_token_id": SUF,
            "tokenizer.ggml.fim_mid_token_id": MID, "tokenizer.ggml.fim_sep_token_id": SEP}
N_BATCH = 64


@pytest.fixture(scope="module")
def server(model_path):
    """Two models: 'smol' as it is, 'fim' with FIM tokens (and a small batch, to see the cuts)."""
    from llama_ffi.engine import Engine
    from llama_ffi.native import Model, ModelParams
    from llama_ffi.server.registry import Registry

    models = {}

    def engine(path, config):
        overrides = FIM_KEYS if config.n_batch == N_BATCH else None
        models[config.n_batch] = Model(path, ModelParams(n_gpu_layers=0, kv_overrides=overrides))
        return Engine(models[config.n_batch], config)

    settings = ServerSettings(models=[
        ModelSettings(model=str(model_path), model_alias="smol", n_ctx=1024, n_parallel=2, n_gpu_layers=0),
        ModelSettings(model=str(model_path), model_alias="fim", n_ctx=1024, n_parallel=2, n_gpu_layers=0,
                      n_batch=N_BATCH, n_ubatch=N_BATCH)])
    registry = Registry.load(settings.models, engine_factory=engine)
    with running_server(settings, registry) as (url, _):
        yield url
    for model in models.values():
        model.close()


def infill(url: str, **body) -> httpx.Response:
    return httpx.post(url + "/infill", json={"model": "fim", "max_tokens": 4, "temperature": 0, "seed": 1, **body},
                      timeout=60)


def tokens_of(url: str, text: str, special: bool = False) -> list[int]:
    out = httpx.post(url + "/tokenize", json={"content": text, "add_special": False, "parse_special": special,
                                              "model": "fim"}, timeout=30)
    return out.json()["tokens"]


def test_a_model_without_fim_tokens_is_a_clear_400(server):
    out = infill(server, model="smol", input_prefix="def add(a, b):\n    ", input_suffix="\n")
    assert out.status_code == 400, out.text
    assert "no fill-in-the-middle tokens" in out.json()["error"]["message"]


def test_prompt_layout_is_llama_servers(server):
    """[FIM_REP]myproject\\n [FIM_SEP]a.py\\n{a} [FIM_SEP]b.py\\n{b} [FIM_SEP]filename\\n
    [FIM_PRE]prefix [FIM_SUF]suffix [FIM_MID]prompt, checked token by token."""
    prefix, suffix, middle = "def add(a, b):\n    return", "\n\nprint(add(1, 2))\n", " a +"
    extra = [{"filename": "a.py", "text": "import math\n"}, {"filename": "b.py", "text": "X = 1\n"}]
    out = infill(server, input_prefix=prefix, input_suffix=suffix, input_extra=extra, prompt=middle)
    assert out.status_code == 200, out.text
    body = out.json()
    t = lambda text: tokens_of(server, text)  # noqa: E731
    expected = ([REP] + t("myproject\n") + [SEP] + t("a.py\n") + t("import math\n") + [SEP] + t("b.py\n")
                + t("X = 1\n") + [SEP] + t("filename\n") + [PRE] + t(prefix) + t(middle) + [SUF] + t(suffix) + [MID])
    assert tokens_of(server, body["prompt"], special=True) == expected
    assert body["tokens_evaluated"] == len(expected)
    assert body["stop"] is True and isinstance(body["content"], str)
    assert 1 <= body["tokens_predicted"] <= 4 and body["model"] == "fim"


def test_long_prefix_and_suffix_are_cut_as_llama_server_cuts_them(server):
    prefix = "".join(f"x{i} = {i}\n" for i in range(80))
    suffix = "".join(f"y{i} = {i}\n" for i in range(80))
    body = infill(server, input_prefix=prefix, input_suffix=suffix).json()
    got = tokens_of(server, body["prompt"], special=True)
    pre, suf = tokens_of(server, prefix), tokens_of(server, suffix)
    keep_pre, keep_suf = 3 * (N_BATCH // 4), N_BATCH // 4 - 2  # the last 3/4 of a batch, the first 1/4 less 2
    assert got[got.index(PRE) + 1: got.index(SUF)] == pre[-keep_pre:]
    assert got[got.index(SUF) + 1: got.index(MID)] == suf[:keep_suf]


def test_same_request_same_answer_and_stream_agrees(server):
    request = {"input_prefix": "def greet(name):\n    ", "input_suffix": "\n    return msg\n", "max_tokens": 6,
               "return_tokens": True}
    whole = infill(server, **request).json()
    assert infill(server, **request).json()["content"] == whole["content"]
    assert len(whole["tokens"]) == whole["tokens_predicted"]
    with httpx.stream("POST", server + "/infill", json={"model": "fim", "temperature": 0, "seed": 1, "stream": True,
                                                        **request}, timeout=60) as stream:
        events = [line[6:] for line in stream.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["content"] for c in chunks) == whole["content"]
    assert chunks[-1]["stop"] is True and all(c["stop"] is False for c in chunks[:-1])
    assert chunks[-1]["tokens_predicted"] == whole["tokens_predicted"]


@pytest.mark.parametrize("body", [{"input_extra": "x"}, {"input_extra": [{"filename": "a"}]},
                                  {"input_extra": [{"text": 1}]}, {"input_prefix": 5}, {"n": 2},
                                  {"max_tokens": 0}, {"unknown": 1}, {"temperature": -1},
                                  {"lora": [{"id": 0, "scale": 1.0}]}])  # this model has no adapters: not ignored
def test_bad_bodies_are_400(server, body):
    out = infill(server, **body)
    assert out.status_code == 400, out.text
    assert set(out.json()["error"]) == {"message", "type", "param", "code"}
