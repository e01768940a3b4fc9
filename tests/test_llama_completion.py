"""Llama.create_completion on the real SmolLM2 model: shapes, determinism, stops, logprobs,
echo, prefix reuse, cancellation, overflow, processors and input validation."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from llama_ffi import CancelledError, ContextOverflowError, GenerationError, Llama, SamplingParams, ValidationError

PROMPT = "The three primary colors are"
GREEDY = {"temperature": 0.0}


def text_of(result: dict) -> str:
    return result["choices"][0]["text"]


def test_response_shape_and_usage(llama):
    out = llama(PROMPT, max_tokens=6, **GREEDY)
    assert out["object"] == "text_completion" and out["id"].startswith("cmpl-")
    assert isinstance(out["created"], int) and out["model"] == llama.model_path
    choice = out["choices"][0]
    assert set(choice) == {"text", "index", "logprobs", "finish_reason"}
    assert choice["index"] == 0 and choice["logprobs"] is None and choice["finish_reason"] == "length"
    n_prompt = len(llama.tokenize(PROMPT.encode(), add_bos=True))
    usage = out["usage"]
    assert usage == {"prompt_tokens": n_prompt, "completion_tokens": 6, "total_tokens": n_prompt + 6}


def test_greedy_is_deterministic_and_matches_token_prefix(llama):
    first, second = text_of(llama(PROMPT, max_tokens=12, **GREEDY)), text_of(llama(PROMPT, max_tokens=12, **GREEDY))
    assert first == second and first
    shorter = text_of(llama(PROMPT, max_tokens=5, **GREEDY))
    assert first.startswith(shorter)


def test_seeded_sampling_repeats_and_seeds_differ(llama):
    kw = {"max_tokens": 12, "temperature": 1.5, "top_k": 0, "top_p": 1.0, "min_p": 0.0}
    a, b = text_of(llama(PROMPT, seed=7, **kw)), text_of(llama(PROMPT, seed=7, **kw))
    assert a == b
    others = {text_of(llama(PROMPT, seed=s, **kw)) for s in (1, 2, 3)}
    assert len(others | {a}) > 1


def test_prompt_as_tokens_equals_prompt_as_text(llama):
    tokens = llama.tokenize(PROMPT.encode())
    assert text_of(llama(tokens, max_tokens=8, **GREEDY)) == text_of(llama(PROMPT, max_tokens=8, **GREEDY))


def test_stop_string_is_honoured_across_tokens(llama):
    full = text_of(llama(PROMPT, max_tokens=24, **GREEDY))
    # A stop string taken from the middle of the model's own output, spanning characters
    # that need not align with token boundaries.
    middle = len(full) // 2
    stop = full[middle - 1: middle + 2]
    cut = full.index(stop)
    out = llama(PROMPT, max_tokens=24, stop=[stop, "never-appears-xyz"], **GREEDY)
    assert text_of(out) == full[:cut]
    assert out["choices"][0]["finish_reason"] == "stop"
    assert out["usage"]["completion_tokens"] < 24


def test_stop_token_id(llama):
    full_tokens = llama.tokenize(text_of(llama(PROMPT, max_tokens=10, **GREEDY)).encode(), add_bos=False)
    stop_id = full_tokens[3]
    out = llama(PROMPT, max_tokens=10, stop=[stop_id], **GREEDY)
    assert out["choices"][0]["finish_reason"] == "stop"
    assert out["usage"]["completion_tokens"] <= 3


def test_stream_concatenates_to_the_same_text(llama):
    chunks = list(llama(PROMPT, max_tokens=16, stream=True, **GREEDY))
    assert all(c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == text_of(llama(PROMPT, max_tokens=16, **GREEDY))
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "length"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])


def test_multibyte_text_is_never_split(llama):
    prompt = "Translate to Japanese: good morning ->"
    pieces = list(llama.generate_stream(prompt, max_tokens=20, **GREEDY))
    whole = llama.generate_text(prompt, max_tokens=20, **GREEDY)
    assert "".join(pieces) == whole
    assert all("\ufffd" not in p for p in pieces) or "\ufffd" in whole


def test_echo_returns_the_prompt(llama):
    out = text_of(llama(PROMPT, max_tokens=4, echo=True, **GREEDY))
    assert out.startswith(PROMPT) and out[len(PROMPT):] == text_of(llama(PROMPT, max_tokens=4, **GREEDY))


def test_logprobs_match_numpy_softmax(llama):
    seen = []
    out = llama(PROMPT, max_tokens=4, logprobs=3, logits_processor=lambda ids, logits: seen.append(logits.copy()),
                **GREEDY)
    lp = out["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == 4 == len(seen)
    for logits, value, top in zip(seen, lp["token_logprobs"], lp["top_logprobs"]):
        x = logits.astype(np.float64)
        ref = x - x.max() - np.log(np.exp(x - x.max()).sum())
        assert value == pytest.approx(ref.max(), abs=1e-4)  # greedy picks the argmax
        assert max(top.values()) == pytest.approx(value, abs=1e-6)
        assert sum(np.exp(v) for v in top.values()) <= 1.0 + 1e-5
        assert 3 <= len(top) <= 4
    assert lp["text_offset"][0] == 0
    assert "".join(lp["tokens"]) == text_of(out)


def test_echo_logprobs_cover_the_prompt(llama):
    out = llama(PROMPT, max_tokens=2, logprobs=1, echo=True, **GREEDY)
    lp = out["choices"][0]["logprobs"]
    n_prompt = out["usage"]["prompt_tokens"]
    assert len(lp["token_logprobs"]) == n_prompt + 2
    assert lp["token_logprobs"][0] is None and all(v <= 0 for v in lp["token_logprobs"][1:])


def test_prefix_reuse_decodes_only_new_tokens(llama):
    llama.reset()
    base = "A list of fruits: apple, banana, cherry,"
    llama(base, max_tokens=1, **GREEDY)
    n_base = llama.stats.last_prefill
    assert n_base == len(llama.tokenize(base.encode()))
    llama(base + " grape, melon,", max_tokens=1, **GREEDY)
    assert 0 < llama.stats.last_prefill <= 5
    assert llama.stats.last_reused >= n_base - 1
    # the reused cache must give exactly what a fresh context gives
    reused = text_of(llama(base + " grape, melon,", max_tokens=8, **GREEDY))
    llama.reset()
    assert text_of(llama(base + " grape, melon,", max_tokens=8, **GREEDY)) == reused
    assert llama.stats.last_reused == 0


def test_reset_kv_cache_false_continues_the_session(llama):
    llama.reset()
    first = "My favourite number is 42."
    whole = first + " Again, my favourite number is"
    llama(first, max_tokens=1, **GREEDY)
    cached = list(llama._session.cache)
    cont = llama(" Again, my favourite number is", max_tokens=4, reset_kv_cache=False, **GREEDY)
    assert cont["usage"]["prompt_tokens"] == len(llama.tokenize(b" Again, my favourite number is"))
    assert llama._session.cache[: len(cached)] == cached
    assert text_of(cont) == text_of(llama(cached + llama.tokenize(b" Again, my favourite number is"),
                                          max_tokens=4, **GREEDY))
    assert whole


def test_cancel_token_stops_promptly_and_llama_stays_usable(llama):
    cancel = threading.Event()
    count = []

    def processor(ids, logits):
        count.append(1)
        if len(count) == 3:
            cancel.set()

    with pytest.raises(CancelledError):
        llama(PROMPT, max_tokens=50, cancel=cancel, logits_processor=processor, **GREEDY)
    assert len(count) == 3
    assert text_of(llama(PROMPT, max_tokens=6, **GREEDY)) == text_of(llama(PROMPT, max_tokens=6, **GREEDY))


def test_breaking_out_of_a_stream_leaves_llama_usable(llama):
    reference = text_of(llama(PROMPT, max_tokens=8, **GREEDY))
    stream = llama(PROMPT, max_tokens=200, stream=True, **GREEDY)
    for i, _ in enumerate(stream):
        if i == 2:
            break
    stream.close()
    assert llama.stats.generated_tokens > 0
    assert text_of(llama(PROMPT, max_tokens=8, **GREEDY)) == reference


def test_an_open_stream_in_the_same_thread_is_reported_not_deadlocked(llama):
    stream = llama(PROMPT, max_tokens=20, stream=True, **GREEDY)
    next(stream)
    with pytest.raises(GenerationError):
        llama(PROMPT, max_tokens=2)
    stream.close()
    assert text_of(llama(PROMPT, max_tokens=2, **GREEDY))


def test_threads_share_one_llama_safely(llama):
    reference = text_of(llama(PROMPT, max_tokens=8, **GREEDY))
    results, errors = [], []

    def worker():
        try:
            results.append(text_of(llama(PROMPT, max_tokens=8, **GREEDY)))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [reference] * 3


def test_context_overflow_raises_and_truncate_left_fits(llama):
    long_prompt = "word " * 600
    with pytest.raises(ContextOverflowError) as info:
        llama(long_prompt, max_tokens=4)
    assert info.value.n_ctx == llama.n_ctx() and info.value.n_tokens >= 600
    out = llama(long_prompt, max_tokens=4, truncate="left", **GREEDY)
    assert out["usage"]["prompt_tokens"] <= llama.n_ctx() - 4
    assert out["usage"]["completion_tokens"] == 4


def test_max_tokens_none_runs_to_the_context_end(model_path):
    with Llama(str(model_path), n_ctx=64, verbose=False) as small:
        ban_eog = {t: float("-inf") for t in (0, 2, 4)}
        out = small("Count:", max_tokens=None, logit_bias=ban_eog, **GREEDY)
        assert out["choices"][0]["finish_reason"] == "length"
        assert out["usage"]["total_tokens"] == small.n_ctx()


def test_logits_processor_edits_in_place_and_logit_bias(llama):
    reference = llama.tokenize(text_of(llama(PROMPT, max_tokens=1, **GREEDY)).encode(), add_bos=False)[0]

    def ban(ids, logits):
        assert isinstance(ids, np.ndarray) and ids.dtype == np.intc
        logits[reference] = -np.inf

    out = llama(PROMPT, max_tokens=1, logits_processor=[ban], logprobs=0, **GREEDY)
    first = out["choices"][0]["logprobs"]["tokens"][0]
    assert first != llama.model.vocab.pieces[reference].decode("utf-8", "ignore")
    biased = llama(PROMPT, max_tokens=1, logit_bias={str(reference): -100.0}, logprobs=0, **GREEDY)
    assert biased["choices"][0]["logprobs"]["tokens"][0] == first


def test_stopping_criteria(llama):
    calls = []

    def criteria(ids, logits):
        calls.append(len(ids))
        return len(calls) == 2

    out = llama(PROMPT, max_tokens=10, stopping_criteria=criteria, **GREEDY)
    assert out["choices"][0]["finish_reason"] == "stop" and out["usage"]["completion_tokens"] == 2
    assert calls[1] == calls[0] + 1


def test_grammar_constrains_output(llama):
    from llama_ffi import LlamaGrammar

    grammar = LlamaGrammar.from_string('root ::= ("yes" | "no") "."')
    out = text_of(llama("Is the sky blue? Answer:", max_tokens=8, grammar=grammar, **GREEDY))
    assert out in ("yes.", "no.")


def test_sampling_params_object_is_reused(llama):
    params = SamplingParams(temperature=0.0)
    a = llama.generate_text(PROMPT, sampling=params, max_tokens=6)
    assert a == llama.generate_text(PROMPT, sampling=params, max_tokens=6) == text_of(llama(PROMPT, max_tokens=6, **GREEDY))


@pytest.mark.parametrize("kwargs", [
    {"max_tokens": -5}, {"max_tokens": 10**9}, {"max_tokens": "10"}, {"max_tokens": True},
    {"top_k": -7}, {"top_k": 1.5}, {"temperature": -1.0}, {"temperature": float("nan")},
    {"top_p": 2.0}, {"logprobs": -1}, {"logprobs": 10_000}, {"stop": ["x"] * 5000},
    {"stop": [10**7]}, {"stop": [b"bytes"]}, {"logit_bias": {10**7: 1.0}}, {"logit_bias": {"abc": 1.0}},
    {"mirostat_mode": 3}, {"seed": -2}, {"truncate": "middle"}, {"cancel": object()},
    {"logits_processor": 5}, {"echo": "yes"},
])
def test_bad_inputs_raise_validation_error(llama, kwargs):
    with pytest.raises(ValidationError):
        llama(PROMPT, **kwargs)


@pytest.mark.parametrize("prompt", [[10**7], [-1], [1.5], b"\xff\xfe bad utf-8", 42, None])
def test_bad_prompts_raise_validation_error(llama, prompt):
    with pytest.raises(ValidationError):
        llama(prompt, max_tokens=1)


def test_unknown_keyword_is_a_type_error(llama):
    with pytest.raises(TypeError):
        llama(PROMPT, max_tokens=1, temprature=0.5)


def test_suffix_needs_fim_tokens(llama):
    with pytest.raises(ValidationError):
        llama("def f(", suffix="return x", max_tokens=2)


def test_keyboard_interrupt_mid_generation_leaves_llama_usable(llama):
    reference = text_of(llama(PROMPT, max_tokens=6, **GREEDY))
    count = []

    def interrupt(ids, logits):
        count.append(1)
        if len(count) == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        llama(PROMPT, max_tokens=50, logits_processor=interrupt, **GREEDY)
    assert text_of(llama(PROMPT, max_tokens=6, **GREEDY)) == reference


def test_lora_inputs_are_checked(llama, tmp_path):
    from llama_ffi import ModelLoadError

    bad = tmp_path / "adapter.gguf"
    bad.write_bytes(b"not an adapter")
    with pytest.raises((ModelLoadError, ValidationError)):
        llama.load_lora(bad)
    with pytest.raises(ValidationError):
        llama(PROMPT, max_tokens=1, loras={"adapter.gguf": 1.0})
    # no adapters at all is the default, and saying so explicitly keeps the cache
    text = text_of(llama(PROMPT, max_tokens=3, loras={}, **GREEDY))
    assert text == text_of(llama(PROMPT, max_tokens=3, **GREEDY))


def test_save_load_state_round_trip(llama):
    llama.reset()
    llama("The sea is", max_tokens=1, **GREEDY)
    state = llama.save_state()
    expected = text_of(llama(" and the sky is", max_tokens=5, reset_kv_cache=False, **GREEDY))
    llama.reset()
    llama.load_state(state)
    assert llama._session.cache == list(state.input_ids)
    assert text_of(llama(" and the sky is", max_tokens=5, reset_kv_cache=False, **GREEDY)) == expected
    with pytest.raises(ValidationError):
        llama.load_state(b"junk")


def test_tokenize_detokenize_bytes(llama):
    tokens = llama.tokenize("Grüße 世界".encode())
    assert llama.detokenize(tokens) == "Grüße 世界".encode()
    assert llama.detokenize(tokens[2:], prev_tokens=tokens[:2]) == llama.detokenize(tokens)[
        len(llama.detokenize(tokens[:2])):]
    assert llama.tokenize(b"<|im_end|>", add_bos=False, special=True) == [2]
    with pytest.raises(ValidationError):
        llama.tokenize(b"\xff\xfe")


def test_verbose_default_routes_the_log_to_stderr(model_path, capfd):
    import logging

    logger = logging.getLogger("llama_ffi")
    before = list(logger.handlers)
    try:
        with Llama(str(model_path), n_ctx=64) as llm:  # verbose=True, like llama-cpp-python
            assert llm.verbose
        assert "llama" in capfd.readouterr().err.lower()
    finally:
        for handler in logger.handlers[:]:
            if handler not in before:
                logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


def test_backend_sampling_path_gives_the_same_tokens(llama):
    """The GPU path (sampling inside the graph) forced on, on the CPU backend."""
    session = llama._session
    expected = llama.create_completion("The capital of France is", max_tokens=12, temperature=0)
    session.backend_sampling = True
    try:
        got = llama.create_completion("The capital of France is", max_tokens=12, temperature=0)
        seeded = [llama.create_completion("Once upon a time", max_tokens=8, temperature=0.9, seed=3)
                  for _ in range(2)]
    finally:
        session.backend_sampling = False
    assert got["choices"][0]["text"] == expected["choices"][0]["text"]
    assert seeded[0]["choices"][0]["text"] == seeded[1]["choices"][0]["text"]
