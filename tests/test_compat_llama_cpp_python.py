"""Snippets written for llama-cpp-python (its README and docs), run unchanged but for the
import line. Each checks the shape that code written for llama-cpp-python relies on.

Then every public name of llama-cpp-python 0.3.36's ``Llama``: the list (checked against the
pinned sdist), a test that fails when one is missing, and each added name exercised on the
real model against a fact read elsewhere (the GGUF, llama.h, the C library, a raw context)."""

from __future__ import annotations

import ast
import json
import os
import pickle
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from llama_ffi import Llama, LlamaGrammar  # was: from llama_cpp import Llama, LlamaGrammar
from llama_ffi import GenerationError, ValidationError
from llama_ffi import LlamaRAMCache  # was: from llama_cpp import LlamaRAMCache
from llama_ffi import LlamaTokenizer  # was: from llama_cpp.llama_tokenizer import LlamaTokenizer


@pytest.fixture(scope="module")
def model_file(model_path):
    return str(model_path)


def test_readme_high_level_completion(model_file):
    llm = Llama(
        model_path=model_file,
        # n_gpu_layers=-1, # Uncomment to use GPU acceleration
        seed=1337,  # Uncomment to set a specific seed
        # n_ctx=2048, # Uncomment to increase the context window
        verbose=False,
    )
    output = llm(
        "Q: Name the planets in the solar system? A: ",  # Prompt
        max_tokens=32,  # Generate up to 32 tokens, set to None to generate up to the end of the context window
        stop=["Q:", "\n"],  # Stop generating just before the model would generate a new question
        echo=True,  # Echo the prompt back in the output
    )  # Generate a completion, can also call create_completion
    assert output["object"] == "text_completion"
    text = output["choices"][0]["text"]
    assert text.startswith("Q: Name the planets in the solar system? A: ")
    assert "Q:" not in text[len("Q: Name the planets"):] and "\n" not in text
    assert output["usage"]["completion_tokens"] <= 32
    llm.close()


def test_readme_streaming(model_file):
    # Seeded: unseeded, this model ends at once (EOS first) in about 1 run of 15, as
    # llama-cpp-python's would; the stream must match the same seed's whole completion.
    llm = Llama(model_path=model_file, verbose=False)
    prompt = "Q: What is the capital of France? A:"
    pieces = []
    for chunk in llm(prompt, max_tokens=16, stream=True, seed=7):
        assert chunk["object"] == "text_completion"
        pieces.append(chunk["choices"][0]["text"])
    whole = llm(prompt, max_tokens=16, seed=7)["choices"][0]["text"]
    assert "".join(pieces) == whole and whole
    llm.close()


def test_readme_chat_completion(model_file):
    llm = Llama(model_path=model_file, chat_format="chatml", verbose=False)
    response = llm.create_chat_completion(
        messages=[
            {"role": "system", "content": "You are an assistant who perfectly describes images."},
            {"role": "user", "content": "Describe this image in detail please."},
        ],
        max_tokens=16,
    )
    assert response["choices"][0]["message"]["role"] == "assistant"
    assert isinstance(response["choices"][0]["message"]["content"], str)
    llm.close()


def test_readme_chat_streaming(model_file):
    llm = Llama(model_path=model_file, verbose=False)
    text = ""
    for chunk in llm.create_chat_completion(messages=[{"role": "user", "content": "Hi"}], stream=True, max_tokens=8,
                                             seed=7):  # seeded: EOS first is possible
        delta = chunk["choices"][0]["delta"]
        if "content" in delta:
            text += delta["content"]
    assert text
    llm.close()


def test_readme_json_mode(model_file):
    llm = Llama(model_path=model_file, chat_format="chatml", verbose=False)
    out = llm.create_chat_completion(
        messages=[
            {"role": "system", "content": "You are a helpful assistant that outputs in JSON."},
            {"role": "user", "content": "Who won the world series in 2020"},
        ],
        response_format={"type": "json_object"},
        temperature=0.7,
        max_tokens=48,
    )
    content = out["choices"][0]["message"]["content"]
    assert content.lstrip().startswith("{")
    if out["choices"][0]["finish_reason"] == "stop":
        assert isinstance(json.loads(content), dict)
    llm.close()


def test_readme_json_schema_mode(model_file):
    llm = Llama(model_path=model_file, chat_format="chatml", verbose=False)
    out = llm.create_chat_completion(
        messages=[
            {"role": "system", "content": "You are a helpful assistant that outputs in JSON."},
            {"role": "user", "content": "Who won the world series in 2020"},
        ],
        response_format={
            "type": "json_object",
            "schema": {
                "type": "object",
                "properties": {"team_name": {"type": "string"}},
                "required": ["team_name"],
            },
        },
        temperature=0.7,
        # Beyond the README: a seed and a token bound keep CI deterministic and fast (a
        # 135M model can ramble inside a string at 0.7 and run out of tokens otherwise).
        seed=1234,
        max_tokens=200,
    )
    assert out["choices"][0]["finish_reason"] == "stop"
    assert isinstance(json.loads(out["choices"][0]["message"]["content"])["team_name"], str)
    llm.close()


def test_readme_function_calling(model_file):
    llm = Llama(model_path=model_file, chat_format="chatml-function-calling", verbose=False)
    out = llm.create_chat_completion(
        messages=[
            {"role": "system", "content": "A chat between a curious user and an artificial intelligence assistant. "
                                          "The assistant gives helpful, detailed, and polite answers to the user's "
                                          "questions. The assistant calls functions with appropriate input when "
                                          "necessary"},
            {"role": "user", "content": "Extract Jason is 25 years old"},
        ],
        tools=[{
            "type": "function",
            "function": {
                "name": "UserDetail",
                "parameters": {
                    "type": "object",
                    "title": "UserDetail",
                    "properties": {
                        "name": {"title": "Name", "type": "string"},
                        "age": {"title": "Age", "type": "integer"},
                    },
                    "required": ["name", "age"],
                },
            },
        }],
        tool_choice={"type": "function", "function": {"name": "UserDetail"}},
        max_tokens=60,
    )
    call = out["choices"][0]["message"]["tool_calls"][0]
    args = json.loads(call["function"]["arguments"])
    assert call["function"]["name"] == "UserDetail" and isinstance(args["age"], int)
    llm.close()


def test_readme_embeddings(model_file):
    llm = Llama(model_path=model_file, embedding=True, verbose=False)
    embeddings = llm.create_embedding("Hello, world!")
    assert len(embeddings["data"]) == 1
    embeddings = llm.create_embedding(["Hello, world!", "Goodbye, world!"])
    assert [d["index"] for d in embeddings["data"]] == [0, 1]
    llm.close()


def test_grammar(model_file):
    grammar = LlamaGrammar.from_string(r'''
root ::= answer
answer ::= "The answer is " [0-9]+ "."
''')
    llm = Llama(model_path=model_file, verbose=False)
    output = llm("Q: What is 2 + 2? A:", grammar=grammar, max_tokens=12)
    text = output["choices"][0]["text"]
    assert text.startswith("The answer is ")
    llm.close()


def test_json_schema_grammar(model_file):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    grammar = LlamaGrammar.from_json_schema(json.dumps(schema))
    llm = Llama(model_path=model_file, verbose=False)
    output = llm("A city as JSON:", grammar=grammar, max_tokens=40, temperature=0)
    assert isinstance(json.loads(output["choices"][0]["text"])["city"], str)
    llm.close()


def test_tokenize_state_and_sizes(model_file):
    llm = Llama(model_path=model_file, n_ctx=256, verbose=False)
    tokens = llm.tokenize(b"Hello, world!")
    assert llm.detokenize(tokens) == b"Hello, world!"
    assert llm.n_ctx() == 256 and llm.n_vocab() > 0 and llm.n_embd() > 0
    assert llm.token_eos() >= 0 and isinstance(llm.metadata, dict)
    llm("Hello", max_tokens=2, temperature=0)
    state = llm.save_state()
    after = llm("Hello", max_tokens=6, temperature=0)["choices"][0]["text"]
    llm.reset()
    llm.load_state(state)
    assert state.n_tokens == len(state.input_ids) > 0
    assert llm("Hello", max_tokens=6, temperature=0)["choices"][0]["text"] == after
    llm.close()
    llm.close()  # idempotent


def test_context_manager(model_file):
    with Llama(model_path=model_file, n_ctx=128, verbose=False) as llm:
        assert llm.create_completion("Hi", max_tokens=1)["choices"][0]["finish_reason"] in ("length", "stop")


# --- every public name of llama-cpp-python 0.3.36's Llama (docs/api.md has the table) ---------------
REPO = Path(__file__).resolve().parents[1]
SDIST = "llama_cpp_python-0.3.36.tar.gz"

# From llama_cpp/llama.py of the pinned sdist, class Llama: its public methods and properties
# (in source order), then the public attributes its methods assign on self.
LLAMA_CPP_PYTHON_NAMES = (
    "__init__", "ctx", "model", "eval_tokens", "eval_logits", "tokenize", "detokenize", "set_cache",
    "set_seed", "reset", "eval", "sample", "generate", "create_embedding", "embed", "create_completion",
    "__call__", "create_chat_completion", "create_chat_completion_openai_v1", "__getstate__", "__setstate__",
    "save_state", "load_state", "n_ctx", "n_embd", "n_vocab", "tokenizer", "token_eos", "token_bos",
    "token_nl", "pooling_type", "close", "__del__", "logits_to_logprobs", "longest_token_prefix",
    "from_pretrained",
    "cache", "chat_format", "chat_handler", "context_params", "draft_model", "input_ids", "kv_overrides",
    "last_n_tokens_size", "lora_base", "lora_path", "lora_scale", "metadata", "model_params", "model_path",
    "n_batch", "n_threads", "n_threads_batch", "n_tokens", "numa", "scores", "spm_infill", "tensor_split",
    "tokenizer_", "verbose",
)
# Name -> why ours has no such member. Empty: every name above exists on our Llama.
DELIBERATELY_ABSENT: dict[str, str] = {}


def _their_names_from_sdist() -> tuple[list[str], list[str]] | None:
    cache = Path(os.environ.get("LLAMA_FFI_CACHE", Path.home() / ".cache" / "llama_ffi"))
    sdist = cache / "downloads" / SDIST
    if not sdist.exists():
        return None
    with tarfile.open(sdist) as tar:
        source = tar.extractfile("llama_cpp_python-0.3.36/llama_cpp/llama.py").read().decode()
    cls = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == "Llama")
    methods = [n.name for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    assigned = {t.attr for node in ast.walk(cls) if isinstance(node, (ast.Assign, ast.AnnAssign))
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"}

    def public(name: str) -> bool:
        return not name.startswith("_") or (name.startswith("__") and name.endswith("__"))
    return [m for m in methods if public(m)], sorted(a for a in assigned if public(a) and a not in methods)


def test_the_name_list_is_their_source():
    names = _their_names_from_sdist()
    if names is None:
        pytest.skip(f"{SDIST} not in the download cache: run scripts/setup.sh")
    methods, attributes = names
    assert tuple(methods + attributes) == LLAMA_CPP_PYTHON_NAMES


def test_every_llama_cpp_python_name_exists_or_is_listed_absent(llama):
    missing = [n for n in LLAMA_CPP_PYTHON_NAMES if n not in DELIBERATELY_ABSENT and not hasattr(llama, n)]
    assert not missing, f"llama-cpp-python's Llama has {missing}; add them or list them in DELIBERATELY_ABSENT"
    assert set(DELIBERATELY_ABSENT) <= set(LLAMA_CPP_PYTHON_NAMES)
    assert not [n for n in DELIBERATELY_ABSENT if hasattr(llama, n)], "stale DELIBERATELY_ABSENT entry"


def test_the_docs_table_covers_every_name():
    text = (REPO / "docs" / "api.md").read_text()
    section = text[text.index("## Compatibility with llama-cpp-python's Llama"):]
    rows = {line.split("|")[1].strip().strip("`").split("(")[0] for line in section.splitlines()
            if line.startswith("| `")}
    assert set(LLAMA_CPP_PYTHON_NAMES) <= rows, set(LLAMA_CPP_PYTHON_NAMES) - rows


# --- sizes, special tokens and attributes, each against a fact read elsewhere --------------------------
def _gguf_fields(path) -> dict:
    gguf_py = REPO / "vendor" / "llama.cpp" / "gguf-py"
    if not gguf_py.exists():
        pytest.skip("llama.cpp's gguf-py not vendored")
    if str(gguf_py) not in sys.path:
        sys.path.insert(0, str(gguf_py))
    gguf = pytest.importorskip("gguf")
    return gguf.GGUFReader(str(path)).fields


def test_sizes_and_special_tokens_match_the_gguf(llama, model_path):
    from llama_ffi.native._lib import get_lib

    fields = _gguf_fields(model_path)
    tokens = fields["tokenizer.ggml.tokens"]
    arch = fields["general.architecture"].contents()
    assert llama.n_vocab() == len(tokens.data)
    assert llama.n_embd() == fields[f"{arch}.embedding_length"].contents()
    assert llama.token_bos() == fields["tokenizer.ggml.bos_token_id"].contents()
    assert llama.token_eos() == fields["tokenizer.ggml.eos_token_id"].contents()
    assert llama.token_eos() in llama.model.vocab.eog_tokens
    assert bytes(tokens.parts[tokens.data[llama.token_eos()]]).decode() == "<|im_end|>"
    assert llama.detokenize([llama.token_nl()]) == b"\n"
    lib = get_lib()  # the C library's own answers, through the raw pointer
    assert lib.llama_n_ctx(llama.ctx) == llama.n_ctx() == 512
    assert lib.llama_n_batch(llama.ctx) == llama.n_batch == 256
    assert lib.llama_n_threads(llama.ctx) == llama.n_threads
    assert lib.llama_n_threads_batch(llama.ctx) == llama.n_threads_batch


def test_pooling_type_is_llama_h_enum(embedder, llama_cpp_tree):
    header = (llama_cpp_tree / "include" / "llama.h").read_text()
    mean = int(header.split("LLAMA_POOLING_TYPE_MEAN")[1].split("=")[1].split(",")[0])
    assert embedder.pooling_type() == mean == 1


def test_attributes_mirror_the_constructor(model_file):
    kw = dict(n_ctx=256, n_batch=64, n_threads=1, n_threads_batch=2, last_n_tokens_size=8, lora_scale=0.5,
              spm_infill=True, numa=False, chat_format="chatml", kv_overrides={"tokenizer.ggml.add_bos_token": True})
    with Llama(model_file, verbose=False, **kw) as llm:
        for name in ("n_batch", "n_threads", "n_threads_batch", "last_n_tokens_size", "lora_scale", "spm_infill",
                     "numa", "chat_format", "kv_overrides"):
            assert getattr(llm, name) == kw[name], name
        assert llm.tokenize(b"Hi")[0] == llm.token_bos()  # the override reached llama.cpp (SmolLM2 adds no BOS)
        assert llm.sampling.penalty_last_n == 8  # the repeat penalties' window, as in llama-cpp-python
        assert llm.verbose is False and llm.tensor_split is None and llm.draft_model is None
        assert llm.lora_path is None and llm.lora_base is None and llm.cache is None
        assert llm.model_params.kv_overrides == kw["kv_overrides"] and llm.context_params.n_batch == 64
        assert os.path.samefile(llm.model_path, model_file)


def test_tokenizer_objects(llama, model_path):
    fields = _gguf_fields(model_path)
    tokens = fields["tokenizer.ggml.tokens"]
    tok = llama.tokenizer()
    assert isinstance(tok, LlamaTokenizer) and isinstance(llama.tokenizer_, LlamaTokenizer)
    ids = tok.encode("Hello <|im_start|>")  # LlamaTokenizer parses special tokens by default
    assert ids == llama.tokenize(b"Hello <|im_start|>", special=True) == tok.tokenize(b"Hello <|im_start|>")
    assert bytes(tokens.parts[tokens.data[ids[-1]]]).decode() == "<|im_start|>"  # one token, per the GGUF
    assert llama.tokenize(b"Hello <|im_start|>") != ids  # Llama.tokenize does not, by default
    assert tok.decode(tok.encode("Hello, world!", add_bos=False)) == "Hello, world!"
    assert tok.detokenize(ids, special=True) == b"Hello <|im_start|>"
    with LlamaTokenizer.from_ggml_file(model_path) as standalone:
        assert standalone.encode("Hello <|im_start|>") == ids


def test_logits_to_logprobs_and_longest_token_prefix():
    logits = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, -np.inf]], dtype=np.single)
    out = Llama.logits_to_logprobs(logits)
    want = logits.astype(np.float64) - np.log(np.exp(logits.astype(np.float64)).sum(axis=-1, keepdims=True))
    assert out.dtype == np.single and out.shape == logits.shape
    np.testing.assert_allclose(out, want, rtol=1e-6)
    column = Llama.logits_to_logprobs(logits, axis=0)[:, 0]
    np.testing.assert_allclose(column, np.log([np.e / (np.e + 1), 1 / (np.e + 1)]), rtol=1e-6)
    assert Llama.longest_token_prefix([1, 2, 3], [1, 2, 4, 5]) == 2
    assert Llama.longest_token_prefix((1, 2), [1, 2, 3]) == 2 and Llama.longest_token_prefix([], [1]) == 0


# --- the token-level API: eval, sample, generate, n_tokens/input_ids/scores ----------------------------
@pytest.fixture(scope="module")
def scored(model_file):
    """logits_all=True (every evaluated token's logits kept) and a tiny batch, so eval decodes in chunks."""
    with Llama(model_path=model_file, n_ctx=256, n_batch=8, logits_all=True, verbose=False) as llm:
        yield llm


def _reference_logits(model, tokens: list[int]) -> np.ndarray:
    """The logits after each token, from a fresh native context: one batch, every row."""
    from llama_ffi import Batch, Context, ContextParams

    with Context(model, ContextParams(n_ctx=256, n_batch=256, flash_attn=False)) as ctx:
        batch = Batch(256)
        batch.add(tokens, 0, 0, logits="all")
        ctx.decode(batch)
        return np.stack([ctx.logits(i).copy() for i in range(len(tokens))])


PANGRAM = b"The quick brown fox jumps over the lazy"


def test_eval_fills_input_ids_and_scores(scored, model):
    tokens = scored.tokenize(PANGRAM)
    n = len(tokens)
    scored.reset()
    assert scored.n_tokens == 0 and not scored.scores.any()
    scored.eval(tokens[:3])
    scored.eval(tokens[3:])  # appends after n_tokens
    assert scored.n_tokens == n and list(scored.eval_tokens) == tokens
    ids = scored.input_ids
    assert ids.shape == (scored.n_ctx(),) and ids.dtype == np.intc and ids[:n].tolist() == tokens
    scores = scored.scores
    assert scores.shape == (scored.n_ctx(), scored.n_vocab()) and scores.dtype == np.single
    want = _reference_logits(model, tokens)
    np.testing.assert_allclose(scores[:n], want, rtol=1e-3, atol=1e-3)
    assert not scores[n:].any()
    rows = scored.eval_logits
    assert len(rows) == n and np.allclose(rows[-1], want[-1], atol=1e-3)
    scored.n_tokens = 4  # llama-cpp-python's way to drop the tail
    assert scored.input_ids[:4].tolist() == tokens[:4] and not scored.scores[4:].any()
    with pytest.raises(ValidationError):
        scored.n_tokens = 5


def test_sample_reads_the_evaluated_logits(scored, model):
    tokens = scored.tokenize(PANGRAM)
    want = _reference_logits(model, tokens)
    scored.reset()
    scored.eval(tokens)
    assert scored.sample(temp=0) == int(np.argmax(want[-1]))
    assert scored.sample(temp=0, idx=2) == int(np.argmax(want[2]))  # any kept row, with logits_all
    best, second = np.argsort(want[-1])[::-1][:2]
    seen = []

    def ban_best(input_ids, logits):
        seen.append(input_ids.tolist())
        logits[best] = -np.inf
        return logits
    assert scored.sample(temp=0, logits_processor=[ban_best]) == int(second)
    assert seen == [tokens]
    assert scored.sample(temp=0) == int(best)  # the processor edited a copy, not the context's logits
    top3 = set(np.argsort(want[-1])[::-1][:3].tolist())
    assert {scored.sample(temp=1.0, top_k=3) for _ in range(20)} <= top3
    with pytest.raises(ValidationError):
        scored.sample(idx=len(tokens))
    scored("Hello there, how", max_tokens=3, temperature=0)  # a completion replaces the tokens, fills no rows
    assert not scored.scores.any() and scored.n_tokens >= 4
    with pytest.raises(ValidationError):
        scored.sample(idx=1)


def test_sample_without_logits_all_has_only_the_last_row(llama):
    tokens = llama.tokenize(PANGRAM)
    llama.reset()
    with pytest.raises(ValidationError):
        llama.sample()  # nothing evaluated
    llama.eval(tokens)
    last = np.asarray(llama.eval_logits[-1])
    assert len(llama.eval_logits) == 1 and llama.sample(temp=0) == int(np.argmax(last))
    with pytest.raises(ValidationError):
        llama.sample(idx=0)
    llama.reset()


def test_generate_yields_the_greedy_token_ids(llama):
    tokens = llama.tokenize(PANGRAM)
    out = []
    for token in llama.generate(tokens, temp=0):
        out.append(token)
        if token in llama.model.vocab.eog_tokens or len(out) == 12:
            break
    assert all(isinstance(t, int) for t in out)
    text = llama.create_completion(PANGRAM.decode(), max_tokens=len(out), temperature=0)["choices"][0]["text"]
    assert llama.detokenize([t for t in out if t not in llama.model.vocab.eog_tokens]).decode() == text
    assert llama.n_tokens >= len(tokens)


def test_generate_is_llama_cpp_pythons_generator(llama):
    tokens = llama.tokenize(PANGRAM)
    with pytest.raises(ValidationError):
        llama.generate("text, not tokens")  # raised at the call, not at the first next()
    gen = llama.generate(tokens, temp=0)
    first = next(gen)
    with pytest.raises(GenerationError):
        llama.create_completion("Hi", max_tokens=1)  # the generator holds the Llama, like a stream
    forced = llama.tokenize(b" cat", add_bos=False)
    after = gen.send(forced)  # llama-cpp-python's send(): tokens appended after the yielded one
    gen.close()
    assert llama.input_ids[: llama.n_tokens].tolist()[: len(tokens) + 1 + len(forced)] == tokens + [first] + forced
    llama.reset()
    llama.eval(tokens + [first] + forced)
    assert after == llama.sample(temp=0)
    calls = []

    def stop_after_two(input_ids, logits):
        calls.append(len(input_ids))
        return len(calls) == 3
    assert len(list(llama.generate(tokens, temp=0, stopping_criteria=stop_after_two))) == 2
    assert calls == [len(tokens), len(tokens) + 1, len(tokens) + 2]  # the evaluated tokens each time
    llama.reset()


def test_generate_text_keeps_the_text_shortcut(llama):
    text = llama.generate_text(PANGRAM.decode(), max_tokens=5, temperature=0)
    assert text == llama(PANGRAM.decode(), max_tokens=5, temperature=0)["choices"][0]["text"]


# --- state: pickling, save/load with scores, the prompt cache ------------------------------------------
def test_pickle_round_trips_and_generates_the_same(model_file):
    with Llama(model_path=model_file, n_ctx=256, seed=7, chat_format="chatml", verbose=False) as llm:
        tokens = llm.tokenize(PANGRAM)
        want = _first(llm.generate(tokens, temp=0), 8)
        llm.set_seed(11)
        clone = pickle.loads(pickle.dumps(llm))
        try:
            assert clone is not llm and clone.n_ctx() == llm.n_ctx() and clone.model_path == llm.model_path
            assert clone.chat_format == "chatml" and clone.sampling.seed == 11 and clone.n_tokens == 0
            assert _first(clone.generate(tokens, temp=0), 8) == want
        finally:
            clone.close()


def _first(gen, n: int) -> list[int]:
    out = [next(gen) for _ in range(n)]
    gen.close()
    return out


def test_save_and_load_state_carry_scores_and_seed(scored):
    tokens = scored.tokenize(PANGRAM)
    scored.reset()
    scored.eval(tokens)
    scored.set_seed(1234)
    state = scored.save_state()
    rows = scored.scores[: len(tokens)].copy()
    assert state.scores.shape == rows.shape and np.array_equal(state.scores, rows) and state.seed == 1234
    scored.reset()
    scored.set_seed(1)
    scored.load_state(state)
    assert scored.input_ids[: scored.n_tokens].tolist() == tokens and scored.sampling.seed == 1234
    assert np.array_equal(scored.scores[: len(tokens)], rows)
    assert scored.sample(temp=0) == int(np.argmax(rows[-1]))


def test_set_cache_restores_a_conversation_that_was_displaced(model_file):
    a = "Once upon a time in a land far away, there lived"
    b = "The three primary colors are red, yellow and"
    results = {}
    for use_cache in (False, True):
        with Llama(model_path=model_file, n_ctx=256, verbose=False) as llm:
            if use_cache:
                llm.set_cache(LlamaRAMCache())
            first = llm(a, max_tokens=4, temperature=0)["choices"][0]["text"]
            llm(b, max_tokens=4, temperature=0)  # displaces a's tokens from the KV cache
            again = llm(a, max_tokens=4, temperature=0)["choices"][0]["text"]
            results[use_cache] = (first, again, llm.stats.last_reused)
            if use_cache:
                n_prompt = len(llm.tokenize(a.encode()))
                assert llm.tokenize(a.encode()) in llm.cache and llm.cache.cache_size > 0
    assert results[False][:2] == results[True][:2] and results[True][0] == results[True][1]
    assert results[False][2] == 0  # without a cache, nothing of a was left to reuse
    assert results[True][2] == n_prompt - 1  # with one, a's state came back (the last token is re-read)


# --- create_chat_completion_openai_v1 -------------------------------------------------------------------
def test_create_chat_completion_openai_v1(llama):
    chat = pytest.importorskip("openai.types.chat")
    messages = [{"role": "user", "content": "Hi"}]
    out = llama.create_chat_completion_openai_v1(messages=messages, max_tokens=4, temperature=0)
    assert isinstance(out, chat.ChatCompletion) and out.choices[0].message.role == "assistant"
    plain = llama.create_chat_completion(messages=messages, max_tokens=4, temperature=0)
    assert out.choices[0].message.content == plain["choices"][0]["message"]["content"]
    chunks = list(llama.create_chat_completion_openai_v1(messages=messages, max_tokens=4, temperature=0, stream=True))
    assert all(isinstance(c, chat.ChatCompletionChunk) for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == out.choices[0].message.content
