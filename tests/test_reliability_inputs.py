"""Issue 7, bad input: each input below raises a clear LlamaError and the process stays usable
(every test ends with a generation that must still give the reference answer).

docs/reliability.md lists each input with where it is stopped."""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llama_ffi import (
    ContextOverflowError,
    GrammarError,
    LlamaError,
    LlamaGrammar,
    ModelLoadError,
    StateError,
    ValidationError,
)

REPO = Path(__file__).resolve().parents[1]
EMBED_MODEL = REPO / "models" / "all-MiniLM-L6-v2.f32.gguf"
GREEDY = {"max_tokens": 6, "temperature": 0.0}
PROBE = "The capital of France is"


@pytest.fixture(scope="module")
def llm(model_path):
    """A small-batch Llama (n_batch 64 < n_ctx 512) so long prompts need several chunks."""
    from llama_ffi import Llama

    with Llama(str(model_path), n_ctx=512, n_batch=64, verbose=False) as llm:
        yield llm


@pytest.fixture(scope="module")
def reference(llm):
    return llm.generate_text(PROBE, **GREEDY)


@pytest.fixture
def alive(llm, reference):
    """After the test: the same Llama still gives the reference answer."""
    yield
    assert llm.generate_text(PROBE, **GREEDY) == reference


# --- prompts -------------------------------------------------------------------------------
def test_prompt_longer_than_n_batch_is_chunked(llm, alive):
    prompt = "one two three four " * 60  # ~240 tokens: four chunks of 64
    n = len(llm.tokenize(prompt.encode()))
    assert 64 < n < 500
    out = llm.create_completion(prompt, **GREEDY)
    assert out["usage"]["prompt_tokens"] == n
    assert llm.stats.last_prefill == n


def test_prompt_longer_than_n_ctx(llm, alive):
    with pytest.raises(ContextOverflowError) as info:
        llm.create_completion("word " * 600, **GREEDY)
    assert info.value.n_ctx == 512 and info.value.n_tokens > 512


@pytest.mark.parametrize("prompt", [b"\xff\xfe abc", b"abc \xc3", b"\xed\xa0\x80 surrogate", b"\xc0\xaf overlong"])
def test_invalid_utf8_prompt(llm, alive, prompt):
    with pytest.raises(ValidationError, match="UTF-8"):
        llm.create_completion(prompt, **GREEDY)


@pytest.mark.parametrize("tokens", [[1, -1], [-(2**31)], [1, 49152], [2**31], [2**40], [1, 10**30]])
def test_token_ids_outside_the_vocabulary(llm, alive, tokens):
    with pytest.raises(ValidationError, match="vocabulary|integers"):
        llm.create_completion(tokens, **GREEDY)


def test_token_ids_of_wrong_type(llm, alive):
    for tokens in ([1.5, 2], ["a"], [None], [True, 2]):
        with pytest.raises(ValidationError):
            llm.create_completion(tokens, **GREEDY)


# --- sampling and output options ------------------------------------------------------------
BAD_OPTIONS = [
    ("max_tokens", -5), ("max_tokens", -(2**63)), ("max_tokens", 10**12), ("max_tokens", 2.5),
    ("top_k", -100), ("top_k", 10**12), ("top_k", 1.5),
    ("logprobs", -1), ("logprobs", 10**6), ("logprobs", True),
    ("temperature", math.nan), ("temperature", math.inf), ("temperature", -1.0), ("temperature", 1e9),
    ("top_p", math.nan), ("top_p", 2.0), ("min_p", -0.1), ("typical_p", math.inf),
    ("repeat_penalty", math.nan), ("frequency_penalty", 1e300), ("presence_penalty", -math.inf),
    ("penalty_last_n", -2), ("penalty_last_n", 2**40), ("mirostat_mode", 7), ("mirostat_tau", math.nan),
    ("dry_multiplier", math.inf), ("dry_allowed_length", -1), ("xtc_probability", 1.5),
    ("top_n_sigma", -math.inf), ("seed", -5), ("seed", 2**64),
    ("logit_bias", {-1: 1.0}), ("logit_bias", {10**9: 1.0}), ("logit_bias", {1: math.nan}), ("logit_bias", {"x": 1}),
]


@pytest.mark.parametrize(("name", "value"), BAD_OPTIONS, ids=[f"{n}={v!r}" for n, v in BAD_OPTIONS])
def test_bad_sampling_values(llm, alive, name, value):
    opts = {**GREEDY, name: value}
    with pytest.raises(ValidationError) as info:
        llm.create_completion("Hi", **opts)
    assert info.value.param == name


def test_n_probs_is_not_an_option(llm, alive):
    with pytest.raises(TypeError, match="n_probs"):
        llm.create_completion("Hi", n_probs=5, **GREEDY)


def test_thousands_of_stop_strings(llm, alive):
    with pytest.raises(ValidationError, match="stop"):
        llm.create_completion("Hi", stop=[f"s{i}" for i in range(5000)], **GREEDY)
    with pytest.raises(ValidationError, match="stop"):
        llm.create_completion("Hi", stop=["x" * 100_000], **GREEDY)
    with pytest.raises(ValidationError, match="stop"):
        llm.create_completion("Hi", stop=[10**9], **GREEDY)


def test_engine_refuses_the_same_inputs(model, llm):
    """Engine and Llama check requests with the same code (generation.prepare): the same
    inputs are refused by both, and the same edge cases mean the same thing on both."""
    from llama_ffi import Engine, SamplingParams

    with Engine(model, n_ctx=256, n_seq_max=2, n_batch=64) as engine:
        bad = [dict(prompt=[1, -1]), dict(prompt=[10**9]), dict(prompt="x", max_tokens=-2),
               dict(prompt="x", logprobs=10**6), dict(prompt="x", stop=[f"s{i}" for i in range(5000)]),
               dict(prompt="x", stop=["x" * 100_000]), dict(prompt="x", stop=[10**9]),
               dict(prompt="x", sampling=SamplingParams(temperature=math.nan))]
        for kwargs in bad:
            prompt = kwargs.pop("prompt")
            with pytest.raises(ValidationError):
                engine.submit(prompt, **kwargs)
            sampling = kwargs.pop("sampling", None)
            with pytest.raises(ValidationError):
                llm.create_completion(prompt, **kwargs, **(sampling.as_dict() if sampling else {}))
        with pytest.raises(ContextOverflowError):  # longer than the engine's sequence context
            engine.submit("word " * 400)
        # an empty prompt is BOS, and max_tokens -1 runs to the end of the context, on both
        assert engine.complete_sync("", sampling=SamplingParams(temperature=0), max_tokens=2).prompt_tokens == 1
        assert llm.create_completion("", **GREEDY)["usage"]["prompt_tokens"] == 1
        tail = engine.complete_sync("Hi", sampling=SamplingParams(temperature=0, logit_bias={t: -100.0 for t in
                                    model.vocab.eog_tokens}), max_tokens=-1)
        assert tail.finish_reason == "length" and tail.prompt_tokens + len(tail.tokens) >= 255


# --- JSON Schema ------------------------------------------------------------------------------
UNSUPPORTED_PATTERNS = ["(?<=a)b", "(a)\\1", "(?i)abc", "\\p{L}+", "a{5,2}", "[z-a]", "a**", "[", "^$^$",
                        "(" * 200 + "a" + ")" * 200, "(a|b)*c" * 500]


@pytest.mark.parametrize("pattern", UNSUPPORTED_PATTERNS, ids=lambda p: p[:20])
def test_schema_pattern_not_supported(llm, alive, pattern):
    with pytest.raises(GrammarError):
        LlamaGrammar.from_json_schema(json.dumps({"type": "string", "pattern": pattern}))


@pytest.mark.parametrize("schema", [
    {"type": "string", "minLength": 10**9},
    {"type": "array", "minItems": 10**9},
    {"type": "string", "minLength": 5, "maxLength": 2},
    {"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/a"}}},
])
def test_schema_repetitions_too_large_or_looping(llm, alive, schema):
    with pytest.raises(GrammarError):
        LlamaGrammar.from_json_schema(json.dumps(schema))


def test_nested_repetitions_that_compile_generate_validly(llm, alive):
    schema = {"type": "string", "pattern": "^((a{0,20}){0,20}){0,20}$"}
    grammar = LlamaGrammar.from_json_schema(json.dumps(schema))
    text = llm.create_completion("Say a:", grammar=grammar, max_tokens=4, temperature=0.0)["choices"][0]["text"]
    assert set(text) <= {'"', "a"}


SLOW_GRAMMARS = [
    'root ::= "a"{1000000}',  # llama.cpp would refuse it too (MAX_REPETITION_THRESHOLD)
    'root ::= ("a"{0,1000}){0,1000}',  # idem: a million helper rules
    'x ::= "a"?\nroot ::= x{2000}',  # compiles in C, then hours per token
    'x ::= "a"?\ny ::= x{40}\nz ::= y{40}\nroot ::= z{40}',  # nested: 64,000 matcher stacks
]


@pytest.mark.parametrize("text", SLOW_GRAMMARS,
                         ids=["a{1e6}", "(a{0,1000}){0,1000}", "(a?){2000}", "(((a?){40}){40}){40}"])
def test_slow_grammars_are_refused_before_sampling(llm, alive, text):
    started = time.perf_counter()
    with pytest.raises(GrammarError) as info:
        llm.create_completion("a", grammar=LlamaGrammar.from_string(text), max_tokens=4)
    assert info.value.line is not None and time.perf_counter() - started < 2


@pytest.mark.parametrize("grammar", [
    'root ::= ("a"{1000}){1000}',
    {"type": "string", "pattern": "^a{1000000}$"},
    {"type": "string", "maxLength": 1_000_000},
    {"type": "array", "items": {"type": "integer"}, "maxItems": 100_000},
], ids=["(a{1000}){1000}", "pattern a{1e6}", "maxLength 1e6", "maxItems 1e5"])
def test_huge_repetitions_that_compile_are_small_and_sample_in_time(llm, alive, grammar):
    """A million-character repetition is a few hundred characters of GBNF (blocks of 1,000)
    and samples at the usual speed: nothing expands it up front."""
    compiled = LlamaGrammar.from_string(grammar) if isinstance(grammar, str) else LlamaGrammar.from_json_schema(grammar)
    assert len(compiled.text) < 2000
    started = time.perf_counter()
    text = llm.create_completion("Write:", grammar=compiled, max_tokens=24, temperature=0.0,
                                 logit_bias={0: -100, 1: -100, 2: -100})["choices"][0]["text"]
    assert time.perf_counter() - started < 30, "sampling under a large repetition is slow"
    assert text and compiled.compiled is not None


@pytest.mark.parametrize("schema, message", [
    ({"type": "array", "maxItems": 10**7}, "too large"),
    ({"type": "string", "minLength": 10**7}, "too large"),
    ({"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(600)}}, "ambiguous"),
])
def test_schemas_beyond_the_limits_get_a_clear_error(llm, alive, schema, message):
    with pytest.raises(GrammarError, match=message) as info:
        LlamaGrammar.from_json_schema(schema)
    assert "line" not in str(info.value)  # names the schema or the rule, not a line of generated text


# --- saved states ---------------------------------------------------------------------------
@pytest.fixture
def saved(llm, tmp_path):
    llm.create_completion(PROBE, **GREEDY)
    path = tmp_path / "state.bin"
    llm.context.save_state_file(path, llm.tokenize(PROBE.encode()))
    return path.read_bytes(), llm.context.state_bytes(), llm.context.state_bytes(0)


def _load_file(llm, tmp_path, data: bytes):
    path = tmp_path / "bad.bin"
    path.write_bytes(data)
    llm.reset()  # a failed load empties the KV cache: make the Llama forget it, as load_state does
    return llm.context.load_state_file(path)


@pytest.mark.parametrize("cut", [0.0, 0.02, 0.5, 0.99])
def test_truncated_state(llm, alive, tmp_path, saved, cut):
    file_data, whole, seq = saved
    with pytest.raises(StateError):
        _load_file(llm, tmp_path, file_data[: int(len(file_data) * cut)])
    if cut:
        with pytest.raises(StateError):
            llm.context.load_state_bytes(whole[: int(len(whole) * cut)])
        with pytest.raises(StateError):
            llm.context.load_state_bytes(seq[: int(len(seq) * cut)], seq_id=0)
    llm.reset()


# Layout of a state file: magic, version, n_tokens (u32 each), tokens, then the state:
# arch string (u32 length + bytes), n_stream (u32), cell_count (u32), cells...
LIES = {"n_tokens": (8, 0xFFFFFFFF), "arch_length": (None, 0xFFFFFFF0), "n_stream": ("after_arch", 7),
        "cell_count": ("after_arch+4", 0x7FFFFFFF)}


@pytest.mark.parametrize("field", list(LIES))
def test_state_file_with_lying_sizes(llm, alive, tmp_path, saved, field):
    data = bytearray(saved[0])
    n_tokens = struct.unpack_from("<I", data, 8)[0]
    arch_at = 12 + 4 * n_tokens
    after_arch = arch_at + 4 + struct.unpack_from("<I", data, arch_at)[0]
    where, value = LIES[field]
    offset = {8: 8, None: arch_at, "after_arch": after_arch, "after_arch+4": after_arch + 4}[where]
    struct.pack_into("<I", data, offset, value)
    with pytest.raises(StateError):
        _load_file(llm, tmp_path, bytes(data))
    llm.reset()


def test_state_bytes_with_random_flips_never_crash(llm, alive, saved):
    """40 seeded mutations of the header region: each one loads or raises StateError, and a
    decode after a successful load either works or raises a LlamaError."""
    import random

    from llama_ffi import Batch

    whole = saved[1]
    rng = random.Random(7)
    for _ in range(40):
        data = bytearray(whole)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(min(len(data), 512))] = rng.randrange(256)
        try:
            llm.context.load_state_bytes(bytes(data))
            end = llm.context.memory_seq_pos_range(0)[1] + 1
            batch = Batch(2)
            batch.add([1], min(end, 500))
            llm.context.decode(batch)
        except LlamaError:
            pass
    llm.reset()


def test_state_from_another_model(llm, alive, tmp_path, model_path):
    from llama_ffi import Llama

    if not EMBED_MODEL.exists():
        pytest.skip("embedding model missing: run scripts/make_embedding_model.py")
    with Llama(str(EMBED_MODEL), n_ctx=128, embedding=True, verbose=False) as other:
        other.embed("a few words")
        other.context.save_state_file(tmp_path / "other.bin", [1, 2])
        foreign = other.context.state_bytes()
    with pytest.raises(StateError):
        llm.context.load_state_bytes(foreign)
    with pytest.raises(StateError):
        _load_file(llm, tmp_path, (tmp_path / "other.bin").read_bytes())
    llm.reset()


def test_state_from_a_larger_context(llm, alive, model_path):
    from llama_ffi import Llama

    with Llama(str(model_path), n_ctx=1024, verbose=False) as big:
        big.create_completion("word " * 700, max_tokens=1)
        with pytest.raises(StateError):
            llm.context.load_state_bytes(big.context.state_bytes())
    llm.reset()


@pytest.mark.slow
def test_state_from_a_model_of_the_same_architecture(llm, alive, tmp_path):
    """Same arch string ("llama"), other shapes: llama.cpp's layer-count check must refuse it."""
    from llama_ffi import Llama

    tiny = tmp_path / "tiny.gguf"
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_8b_model.py"), "--tiny", "--out", str(tiny)],
                   check=True, capture_output=True, timeout=300)
    with Llama(str(tiny), n_ctx=256, verbose=False) as other:
        other.create_completion("Hello there", max_tokens=3)
        foreign, foreign_seq = other.context.state_bytes(), other.context.state_bytes(0)
    with pytest.raises(StateError):
        llm.context.load_state_bytes(foreign)
    with pytest.raises(StateError):
        llm.context.load_state_bytes(foreign_seq, seq_id=0)
    llm.reset()


# --- LoRA adapters -------------------------------------------------------------------------------
@pytest.fixture
def adapter_bytes(tmp_path):
    from test_llama_lora import GGUF_PY, make_adapter

    if not GGUF_PY.exists():
        pytest.skip("llama.cpp's gguf-py not vendored")
    return make_adapter(tmp_path / "good.gguf", 0).read_bytes()


ARCH = struct.pack("<Q", 5) + b"llama"
LORA_DEFECTS = {
    "truncated_half": lambda b: b[: len(b) // 2],
    "truncated_header": lambda b: b[:100],
    "empty": lambda b: b"",
    "tensor_count_lies": lambda b: b[:8] + struct.pack("<Q", 2**40) + b[16:],
    "kv_count_lies": lambda b: b[:16] + struct.pack("<Q", 2**40) + b[24:],
    "shape_lies_lora_a": lambda b: b.replace(struct.pack("<QQ", 1536, 8), struct.pack("<QQ", 8, 1536), 1),
    "shape_lies_lora_b": lambda b: b.replace(struct.pack("<QQ", 8, 576), struct.pack("<QQ", 576, 8), 1),
    "dim_too_large": lambda b: b.replace(struct.pack("<QQ", 1536, 8), struct.pack("<QQ", 2**62, 8), 1),
    "wrong_architecture": lambda b: b.replace(ARCH, struct.pack("<Q", 5) + b"qwen2", 1),
    "missing_pair": lambda b: b.replace(b"blk.27.ffn_down.weight.lora_a", b"blk.27.ffn_down.weight.lora_x", 1),
    "layer_not_in_model": lambda b: b.replace(b"blk.27.", b"blk.97.", 2),
    "not_an_adapter": lambda b: b.replace(b"adapter", b"adaptor", 1),
}


@pytest.mark.parametrize("defect", list(LORA_DEFECTS))
def test_bad_lora_adapter(llm, alive, tmp_path, adapter_bytes, defect):
    path = tmp_path / "bad.gguf"
    path.write_bytes(LORA_DEFECTS[defect](adapter_bytes))
    with pytest.raises(ModelLoadError):
        llm.load_lora(path)


def test_lora_with_nan_alpha_loads_and_generates(llm, alive, tmp_path, adapter_bytes):
    """Not refused (llama.cpp reads alpha as any float): the output is noise, the process lives."""
    path = tmp_path / "nan.gguf"
    path.write_bytes(adapter_bytes.replace(struct.pack("<f", 8.0), struct.pack("<f", math.nan), 1))
    adapter = llm.load_lora(path)
    llm.generate_text("Hi", loras={adapter: 1.0}, max_tokens=3, temperature=0.8)
    with pytest.raises(ValidationError):
        llm.generate_text("Hi", loras={adapter: math.inf}, max_tokens=3)
