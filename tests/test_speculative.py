"""Speculative decoding in ``Llama`` (generation/drafting.py, TokenLoop.run_speculative).

The oracle is the same model without speculation. One caveat shapes the comparisons: a row of
a (k+1)-token batch is not bit-identical to the same row decoded alone (other matmul kernels;
on this Q4_1 model on CPU the logits differ by ~0.2 on average). So greedy outputs are
compared token by token and may part only where the plain run itself was at a near-tie (its
top-2 log-probabilities within ``NEAR_TIE``), and sampling is checked as a distribution.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from llama_ffi import Llama, LlamaDraftModel, LlamaGrammar, LlamaPromptLookupDecoding, ValidationError
from llama_ffi.generation.drafting import Drafter, PromptLookupDrafter

LIST = ("Repeat this list exactly: apple, banana, cherry, date, elderberry, fig, grape, honeydew, kiwi, "
        "lemon, mango.\nList: apple,")
PROMPTS = [LIST, "The capital of France is", "def add(a, b):\n    return a + b\n\ndef sub(a, b):"]
GREEDY = {"temperature": 0.0}
NEAR_TIE = 0.6  # nats between the plain run's two best tokens where batch numerics may flip them


def _open(model_path, **kw) -> Llama:
    return Llama(str(model_path), **{"n_ctx": 512, "n_batch": 256, "verbose": False, **kw})


@pytest.fixture(scope="module")
def lookup(model_path):
    with _open(model_path, draft_model=LlamaPromptLookupDecoding(num_pred_tokens=8)) as llm:
        yield llm


def _tokens_and_margins(out: dict) -> tuple[list[str], list[float]]:
    lp = out["choices"][0]["logprobs"]
    margins = []
    for top in lp["top_logprobs"]:
        best = sorted(top.values(), reverse=True)
        margins.append(best[0] - best[1] if len(best) > 1 else float("inf"))
    return lp["tokens"], margins


def assert_same_greedy(plain: dict, spec: dict) -> None:
    """Identical tokens, or parted only at a near-tie of the plain run (nothing compared after)."""
    want, margins = _tokens_and_margins(plain)
    got, _ = _tokens_and_margins(spec)
    for i, (a, b) in enumerate(zip(want, got)):
        if a != b:
            assert margins[i] < NEAR_TIE, f"parted at token {i} ({a!r} vs {b!r}) with margin {margins[i]:.3f}"
            return
    assert len(want) == len(got), (want, got)
    assert plain["choices"][0]["finish_reason"] == spec["choices"][0]["finish_reason"]


# --- the drafters on their own ------------------------------------------------------------
def test_prompt_lookup_takes_the_newest_match_of_the_longest_ngram():
    d = PromptLookupDrafter(max_ngram_size=2, num_pred_tokens=3)
    # (5, 1) occurred at positions 4-5 and 9-10: the newest is followed by 2, 9, 9
    history = [7, 1, 2, 3, 5, 1, 8, 8, 8, 5, 1, 2, 9, 9, 4, 5, 1]
    assert d.draft(history, 10) == [2, 9, 9]
    assert d.draft(history, 2) == [2, 9]  # n_max caps
    # only the last token (4) recurs: a 1-gram match
    assert d.draft([4, 6, 6, 1, 4], 3) == [6, 6, 1]
    assert d.draft([1, 2, 3], 3) == []  # nothing recurs
    assert d.draft([], 3) == [] and d.draft([1, 1], 0) == []


def test_prompt_lookup_index_grows_and_rebuilds():
    rng = np.random.default_rng(0)
    history = rng.integers(0, 6, size=300).tolist()
    grown = PromptLookupDrafter(max_ngram_size=3, num_pred_tokens=5)
    for end in range(1, len(history)):
        fresh = PromptLookupDrafter(max_ngram_size=3, num_pred_tokens=5)
        assert grown.draft(history[:end], 5) == fresh.draft(history[:end], 5)
    other = [5, 4, 3, 5, 4]  # not an extension of what it saw: rebuilt, not mixed in
    assert grown.draft(other, 5) == [3, 5, 4]


def test_prompt_lookup_arguments_are_checked():
    with pytest.raises(ValidationError):
        LlamaPromptLookupDecoding(max_ngram_size=0)
    with pytest.raises(ValidationError):
        LlamaPromptLookupDecoding(num_pred_tokens="10")
    d = LlamaPromptLookupDecoding(max_ngram_size=2, num_pred_tokens=2)  # llama-cpp-python's call shape
    assert isinstance(d, LlamaDraftModel)
    out = d(np.array([3, 4, 5, 3, 4], dtype=np.intc))
    assert out.dtype == np.intc and out.tolist() == [5, 3]


# --- greedy: the same tokens as without speculation ----------------------------------------
@pytest.mark.parametrize("prompt", PROMPTS)
def test_prompt_lookup_greedy_matches_plain(llama, lookup, prompt):
    plain = llama(prompt, max_tokens=40, logprobs=2, **GREEDY)
    spec = lookup(prompt, max_tokens=40, logprobs=2, **GREEDY)
    assert_same_greedy(plain, spec)


def test_drafts_are_accepted_on_a_repetitive_prompt(llama, lookup):
    plain = llama(LIST, max_tokens=30, logprobs=2, **GREEDY)
    before = lookup.stats.accepted_tokens
    spec = lookup(LIST, max_tokens=30, logprobs=2, **GREEDY)
    stats = lookup.stats
    assert stats.last_accepted > 5 and stats.last_drafted >= stats.last_accepted
    assert stats.accepted_tokens == before + stats.last_accepted
    assert spec["choices"][0]["text"].startswith(" banana, cherry, date")
    assert_same_greedy(plain, spec)


def test_draft_model_gguf(llama, model_path):
    with _open(model_path, draft_model=str(model_path)) as llm:
        for prompt in PROMPTS[1:]:
            plain = llama(prompt, max_tokens=32, logprobs=2, **GREEDY)
            spec = llm(prompt, max_tokens=32, logprobs=2, **GREEDY)
            assert_same_greedy(plain, spec)
            # the draft is the target itself: nearly every draft is kept
            assert llm.stats.last_drafted > 0 and llm.stats.last_accepted >= 0.7 * llm.stats.last_drafted


def test_draft_model_with_another_vocabulary_is_refused(model_path, llama_cpp_tree):
    other = llama_cpp_tree / "models" / "ggml-vocab-gpt-2.gguf"
    with pytest.raises(ValidationError, match="vocabulary does not match"):
        _open(model_path, draft_model=str(other))
    with pytest.raises(ValidationError, match="does not exist"):
        _open(model_path, draft_model=str(model_path) + ".missing")
    with pytest.raises(ValidationError, match="draft_model"):
        _open(model_path, draft_model=42)


def test_llama_draft_model_subclass_and_bad_drafts(llama, model_path):
    class Echo(LlamaDraftModel):
        """Proposes the last five prompt tokens, then ids no vocabulary has."""

        calls = 0

        def __call__(self, input_ids, /, **kwargs):
            Echo.calls += 1
            assert isinstance(input_ids, np.ndarray)
            return np.concatenate([input_ids[-5:], [-3, 10**9]]).astype(np.intc)

    with _open(model_path, draft_model=Echo()) as llm:
        plain = llama(LIST, max_tokens=16, logprobs=2, **GREEDY)
        spec = llm(LIST, max_tokens=16, logprobs=2, **GREEDY)
    assert Echo.calls > 0
    assert_same_greedy(plain, spec)


# --- sampling: the target's distribution -----------------------------------------------------
class _Propose(Drafter):
    """Drafts ``token`` whenever the history ends with ``after``."""

    n_max = 4

    def __init__(self, after: int, token: int) -> None:
        self.after, self.token = after, token

    def draft(self, history, n_max):
        return [self.token] if history[-1] == self.after else []


def _row(llm, tokens) -> np.ndarray:
    """The plain model's logits after ``tokens`` (a fresh evaluation)."""
    llm.reset()
    llm.eval(tokens)
    return np.array(llm.context.logits(-1), dtype=np.float64)


def test_sampling_follows_the_target_distribution(llama, model_path):
    """With top_k=2 the second token, given the likeliest first one, is a coin whose odds the
    model gives; the drafter always proposes the less likely side. Accepting a draft without
    sampling it would show that side nearly always: the frequency must match the odds."""
    prompt = "My favourite colour is"
    ids = llama.tokenize(prompt.encode())
    first = int(np.argmax(_row(llama, ids)))
    row = _row(llama, ids + [first])
    likely, unlikely = (int(t) for t in np.argsort(row)[::-1][:2])
    p = 1.0 / (1.0 + np.exp(row[likely] - row[unlikely]))
    assert 0.1 < p < 0.45, p  # a real coin, the draft on its less likely side
    sampling = {"temperature": 1.0, "top_k": 2, "top_p": 1.0, "min_p": 0.0}
    seen = hits = 0
    with _open(model_path, draft_model=_Propose(first, unlikely)) as llm:
        for seed in range(160):
            llm(prompt, max_tokens=3, seed=seed, **sampling)
            cache = llm._session.cache  # the prompt and what was generated (all decoded)
            assert cache[: len(ids)] == ids
            generated = cache[len(ids):]
            if len(generated) >= 2 and generated[0] == first:
                seen += 1
                hits += generated[1] == unlikely
        assert llm.stats.drafted_tokens >= seen and 0 < llm.stats.accepted_tokens == hits
    assert seen >= 60
    freq = hits / seen
    # 4 standard errors, plus 0.05 for batch-vs-single numerics (module docstring)
    assert abs(freq - p) < 4 * np.sqrt(p * (1 - p) / seen) + 0.05, (freq, p, seen)


# --- stops, budgets, grammars, streams and the KV cache hold as without speculation -----------
def test_stop_string_cuts_the_same(llama, lookup):
    for stop in (", date", "fig", "grape"):
        plain = llama(LIST, max_tokens=40, stop=[stop], **GREEDY)["choices"][0]
        spec = lookup(LIST, max_tokens=40, stop=[stop], **GREEDY)["choices"][0]
        assert stop not in spec["text"] and spec["finish_reason"] == "stop"
        assert spec["text"] == plain["text"]  # these stops come before the first near-tie
        assert lookup.stats.last_accepted > 0


@pytest.mark.parametrize("max_tokens", [1, 2, 3, 7, 12])
def test_max_tokens_is_exact(llama, lookup, max_tokens):
    plain = llama(LIST, max_tokens=max_tokens, **GREEDY)
    spec = lookup(LIST, max_tokens=max_tokens, **GREEDY)
    assert spec["usage"]["completion_tokens"] == max_tokens == plain["usage"]["completion_tokens"]
    assert spec["choices"][0]["finish_reason"] == "length"
    assert spec["choices"][0]["text"] == plain["choices"][0]["text"]  # before the first near-tie


def test_context_end_is_respected(model_path):
    """No end of generation allowed: both runs fill the context window exactly."""
    counts = []
    for draft in (None, LlamaPromptLookupDecoding(num_pred_tokens=10)):
        with _open(model_path, n_ctx=256, draft_model=draft) as llm:
            n_ctx, n_prompt = llm.n_ctx(), len(llm.tokenize(LIST.encode()))
            no_end = {t: -100.0 for t in llm.model.vocab.eog_tokens}
            out = llm(LIST, max_tokens=None, logit_bias=no_end, **GREEDY)
            counts.append(out["usage"]["completion_tokens"])
            assert out["choices"][0]["finish_reason"] == "length"
            assert len(llm._session.cache) <= n_ctx
            assert llm.context.memory_seq_pos_range(0) == (0, len(llm._session.cache) - 1)
            if draft is not None:
                assert llm.stats.last_accepted > 0
    assert counts[0] == counts[1] == n_ctx - n_prompt


def test_json_schema_grammar_holds(lookup):
    schema = {"type": "object", "properties": {"fruits": {"type": "array", "items": {"type": "string"},
                                                          "maxItems": 4}},
              "required": ["fruits"], "additionalProperties": False}
    grammar = LlamaGrammar.from_json_schema(json.dumps(schema))
    prompt = LIST + " Now as JSON with the key fruits: "
    out = lookup(prompt, max_tokens=80, grammar=grammar, **GREEDY)["choices"][0]
    value = json.loads(out["text"])
    assert set(value) == {"fruits"} and len(value["fruits"]) <= 4
    assert all(isinstance(f, str) for f in value["fruits"])


def test_stream_matches_whole_completion(lookup):
    whole = lookup(LIST, max_tokens=30, seed=3, temperature=0.7)["choices"][0]["text"]
    chunks = list(lookup(LIST, max_tokens=30, seed=3, temperature=0.7, stream=True))
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert lookup.stats.last_accepted > 0


def test_closing_a_stream_early_leaves_the_cache_right(lookup):
    stream = lookup(LIST, max_tokens=30, stream=True, **GREEDY)
    next(stream)
    next(stream)
    stream.close()
    cache = lookup._session.cache
    assert lookup.context.memory_seq_pos_range(0) == (0, len(cache) - 1)  # no unverified drafts left


def test_prefix_reuse_after_a_speculative_call(lookup, model_path):
    first = lookup(LIST, max_tokens=20, **GREEDY)["choices"][0]["text"]
    cache = list(lookup._session.cache)
    assert lookup.stats.last_accepted > 0
    assert lookup.context.memory_seq_pos_range(0) == (0, len(cache) - 1)
    assert cache[: len(lookup.tokenize(LIST.encode()))] == lookup.tokenize(LIST.encode())
    follow = LIST + first + " And again:"
    again = lookup(follow, max_tokens=12, logprobs=2, **GREEDY)
    assert lookup.stats.last_reused >= len(cache) - 2  # the cached output was reused, not re-read
    with _open(model_path) as fresh:
        assert_same_greedy(fresh(follow, max_tokens=12, logprobs=2, **GREEDY), again)


def test_logprobs_come_from_the_verified_rows(llama, lookup):
    plain = llama(LIST, max_tokens=16, logprobs=3, **GREEDY)["choices"][0]["logprobs"]
    spec = lookup(LIST, max_tokens=16, logprobs=3, **GREEDY)["choices"][0]["logprobs"]
    assert lookup.stats.last_accepted > 0
    assert spec["tokens"] == plain["tokens"]
    np.testing.assert_allclose(spec["token_logprobs"], plain["token_logprobs"], atol=0.25)
    for top, token in zip(spec["top_logprobs"], spec["tokens"]):
        assert len(top) >= 3 and max(top, key=top.get) == token  # greedy picked the best row entry


def test_logits_processor_falls_back_to_plain_decoding(llama, lookup):
    seen = []

    def proc(ids, logits):
        seen.append(len(ids))
        return logits

    before = lookup.stats.drafted_tokens
    spec = lookup(LIST, max_tokens=8, logits_processor=[proc], **GREEDY)["choices"][0]["text"]
    assert lookup.stats.drafted_tokens == before and len(seen) == 8
    assert spec == llama(LIST, max_tokens=8, **GREEDY)["choices"][0]["text"]


# --- the engine: per-request speculation inside continuous batching -----------------------------
@pytest.fixture(scope="module")
def engine(model):
    from llama_ffi.engine import Engine

    with Engine(model, n_ctx=2048, n_seq_max=4, n_batch=512, n_threads=2) as eng:
        yield eng


def _engine_run(engine, prompt, n, **kw):
    from llama_ffi.generation import SamplingParams

    return engine.complete_sync(prompt, sampling=SamplingParams(temperature=0), max_tokens=n, logprobs=2, **kw)


def assert_same_engine_greedy(plain, spec) -> None:
    """As assert_same_greedy, over engine Completions (logprob entries: token, logprob, top)."""
    for i, (a, b) in enumerate(zip(plain.tokens, spec.tokens)):
        if a != b:
            top = sorted((lp for _, lp in plain.logprobs[i][2]), reverse=True)
            assert top[0] - top[1] < NEAR_TIE, f"parted at token {i} with margin {top[0] - top[1]:.3f}"
            return
    assert plain.tokens == spec.tokens and plain.finish_reason == spec.finish_reason


def _kv_matches_slots(engine) -> None:
    def check(scheduler):
        for slot in scheduler.slots.slots:
            held = scheduler.ctx.memory_seq_pos_range(slot.seq_id)
            assert held == ((0, slot.n_past - 1) if slot.n_past else (-1, -1)), (slot.seq_id, held, slot.n_past)
    engine.call(check).result(timeout=60)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_engine_greedy_matches_plain(engine, prompt):
    before = engine.stats()["draft_accepted"]
    plain = _engine_run(engine, prompt, 32)
    spec = _engine_run(engine, prompt, 32, speculative={"n_max": 8})
    assert_same_engine_greedy(plain, spec)
    _kv_matches_slots(engine)
    if prompt == LIST:
        assert spec.tokens[:10] == plain.tokens[:10]
        assert engine.stats()["draft_accepted"] > before


def test_engine_concurrent_speculative_requests(engine):
    import concurrent.futures

    alone = {p: _engine_run(engine, p, 24) for p in PROMPTS}
    with concurrent.futures.ThreadPoolExecutor(len(PROMPTS)) as pool:
        futures = {p: pool.submit(_engine_run, engine, p, 24, speculative=True) for p in PROMPTS}
        together = {p: f.result(timeout=300) for p, f in futures.items()}
    for p in PROMPTS:
        assert_same_engine_greedy(alone[p], together[p])
        assert len(together[p].tokens) <= 24
    _kv_matches_slots(engine)


def test_engine_stops_and_budget_hold(engine):
    from llama_ffi.generation import SamplingParams

    greedy = SamplingParams(temperature=0)
    for n in (1, 2, 5, 9):
        out = engine.complete_sync(LIST, sampling=greedy, max_tokens=n, speculative=True)
        assert len(out.tokens) == n and out.finish_reason == "length"
    out = engine.complete_sync(LIST, sampling=greedy, max_tokens=40, stop=["fig"], speculative=True)
    plain = engine.complete_sync(LIST, sampling=greedy, max_tokens=40, stop=["fig"])
    assert "fig" not in out.text and out.finish_reason == "stop" and out.text == plain.text
    _kv_matches_slots(engine)


def test_engine_speculation_threshold_and_bad_options(model, engine):
    from llama_ffi.engine import Engine

    with Engine(model, n_ctx=1024, n_seq_max=2, n_batch=256, n_threads=2, spec_max_running=0) as off:
        _engine_run(off, LIST, 12, speculative=True)
        assert off.stats()["draft_tokens"] == 0
    for bad in ({"n_max": 0}, {"n_min": 9, "n_max": 4}, {"speculative.n_max": "8"}, {"p_min": 0.5}, "yes"):
        with pytest.raises(ValidationError):
            _engine_run(engine, LIST, 4, speculative=bad)
    out = _engine_run(engine, LIST, 6, speculative={"speculative.n_max": 4, "speculative.n_min": 1})
    assert len(out.tokens) == 6


def test_metrics_expose_the_speculation_counters(engine):
    from llama_ffi.server.metrics import render

    _engine_run(engine, LIST, 16, speculative=True)

    class Entry:
        def __init__(self, eng):
            self.engine = eng

        def tokens_per_second(self, generated):
            return 0.0

    class Registry:
        entries = {"smol": Entry(engine)}

    text = render(Registry(), None)
    stats = engine.stats()
    assert stats["draft_accepted"] > 0 and stats["draft_tokens"] >= stats["draft_accepted"]
    for metric, key in (("llama_ffi_spec_decode_num_drafts_total", "draft_steps"),
                        ("llama_ffi_spec_decode_num_draft_tokens_total", "draft_tokens"),
                        ("llama_ffi_spec_decode_num_accepted_tokens_total", "draft_accepted")):
        assert f'{metric}{{model="smol"}} {float(stats[key]):g}\n' in text


def test_engine_speculating_grammar_requests_survive_a_full_cache(model, caplog):
    """As tests/test_engine.py's preemption test, with speculation: drafts inside a grammar, a
    cache that overflows with drafts in the batch (a finished request's cached cells are
    evicted, or the newest request is preempted and resumes drafting from its history)."""
    import asyncio
    import re

    from llama_ffi.engine import Engine
    from llama_ffi.generation import SamplingParams

    grammar = LlamaGrammar.from_string('root ::= "x" [0-9 ]+')
    prompts = [f"Write digits, take {i}:" for i in range(3)]
    with Engine(model, n_ctx=512, n_seq_max=4, n_batch=256, n_threads=2) as small:
        async def crowd():
            return await asyncio.gather(*[small.complete(p, sampling=SamplingParams(temperature=0), max_tokens=170,
                                                         grammar=grammar, speculative=True) for p in prompts])

        results = asyncio.run(crowd())
        stats = small.stats()
        _kv_matches_slots(small)
    assert any("failed to find a memory slot" in r.getMessage() for r in caplog.records), \
        "the test needs the cache to overflow"
    assert stats["draft_accepted"] > 0
    assert all(r.finish_reason == "length" and len(r.tokens) == 170 for r in results)
    for r in results:
        assert re.fullmatch(r"x[0-9 ]+", r.text), r.text


def test_a_failing_drafter_fails_the_call_and_leaves_the_llama_usable(llama, model_path):
    class Flaky(Drafter):
        n_max = 4
        calls = 0

        def draft(self, history, n_max):
            Flaky.calls += 1
            if Flaky.calls == 3:
                raise RuntimeError("drafter broke")
            return list(history[-2:])

    class Strings(LlamaDraftModel):
        def __call__(self, input_ids, /, **kwargs):
            return np.array(["a", "b"])

    with _open(model_path, draft_model=Flaky()) as llm:
        with pytest.raises(RuntimeError, match="drafter broke"):
            llm(LIST, max_tokens=20, **GREEDY)
        cache = llm._session.cache
        assert llm.context.memory_seq_pos_range(0) == (0, len(cache) - 1)
        again = llm(LIST, max_tokens=12, logprobs=2, **GREEDY)  # the drafter works again from call 4 on
        assert llm.stats.last_reused > 0
        assert_same_greedy(llama(LIST, max_tokens=12, logprobs=2, **GREEDY), again)
    with _open(model_path, draft_model=Strings()) as llm:
        with pytest.raises(ValidationError, match="integer token ids"):
            llm(LIST, max_tokens=8, **GREEDY)
        assert llm("Hello", max_tokens=1, **GREEDY)["usage"]["completion_tokens"] == 1  # no step drafts


def test_speculative_options_from_a_llama_server_body():
    from llama_ffi.generation.drafting import SpeculativeOptions

    assert SpeculativeOptions.from_body({"prompt": "x"}) is None
    assert SpeculativeOptions.from_body({"speculative": False, "speculative.n_max": 4}) is None
    assert SpeculativeOptions.from_body({"speculative": True}) == SpeculativeOptions()
    assert SpeculativeOptions.from_body({"speculative.n_max": 4, "speculative.n_min": 2}) == \
        SpeculativeOptions(n_max=4, n_min=2)
    assert SpeculativeOptions.from_body({"speculative": {"n_max": 8}, "speculative.n_min": 1}) == \
        SpeculativeOptions(n_max=8, n_min=1)
    for bad in ({"speculative": "on"}, {"speculative.n_max": 0}, {"speculative.p_max": 1}):
        with pytest.raises(ValidationError):
            SpeculativeOptions.from_body(bad)


def test_draft_window_backs_off_probes_that_keep_missing():
    from llama_ffi.native.loop import DraftWindow

    window = DraftWindow(8)
    assert window.next() == 8
    for _ in range(4):  # misses halve the window to 0
        window.update(window.next() or 1, kept_all=False)
    assert window.size == 0

    def steps_to_next_probe() -> int:
        n = 1
        while window.next() == 0:
            n += 1
        return n

    gaps = []
    for _ in range(6):  # every probe misses: the interval doubles, up to PROBE_MAX
        gaps.append(steps_to_next_probe())
        window.update(1, kept_all=False)
    assert gaps == [4, 8, 16, 32, 64, 64]
    assert steps_to_next_probe() == 64
    window.update(1, kept_all=True)  # a kept probe: the window grows and probes are cheap again
    assert window.size == 3 and window.probe_every == DraftWindow.PROBE_EVERY
