"""The continuous-batching engine: batching, prefix cache, preemption and cancellation
never change what a request generates; bad input and overload are clean errors."""

from __future__ import annotations

import asyncio
import time

import pytest

from llama_ffi import ContextOverflowError, OverloadedError, ValidationError
from llama_ffi.engine import Engine, EnginePool
from llama_ffi.generation import SamplingParams

GREEDY = SamplingParams(temperature=0)
PROMPTS = ["The capital of France is", "def add(a, b):", "Once upon a time,", "Water boils at",
           "The largest planet is", "Roses are red,"]


@pytest.fixture(scope="module")
def engine(model):
    with Engine(model, n_ctx=2048, n_seq_max=8, n_batch=512, n_threads=2) as eng:
        yield eng


def alone(engine, prompt, n=12):
    return engine.complete_sync(prompt, sampling=GREEDY, max_tokens=n).tokens


def test_single_request_matches_token_loop(engine, model, context):
    from llama_ffi import Sampler, SamplerChain
    from llama_ffi.native.loop import TokenLoop

    tokens = model.vocab.tokenize(PROMPTS[0], add_special=True, parse_special=True)
    with SamplerChain([Sampler.greedy()]) as chain:
        loop = TokenLoop(context, chain)
        loop.prefill(tokens)
        expected = [t for t in loop.run(12, stop_tokens=model.vocab.eog_tokens)]
    got = engine.complete_sync(PROMPTS[0], sampling=GREEDY, max_tokens=12)
    assert got.tokens == expected
    assert got.text == model.vocab.detokenize(expected).decode()
    assert got.finish_reason == "length" and got.usage["completion_tokens"] == 12


def test_concurrent_requests_generate_what_they_would_alone(engine):
    expected = {p: alone(engine, p) for p in PROMPTS}

    async def together():
        return await asyncio.gather(*[engine.complete(p, sampling=GREEDY, max_tokens=12) for p in PROMPTS])

    results = asyncio.run(together())
    assert {p: r.tokens for p, r in zip(PROMPTS, results)} == expected


def test_prefix_cache_reuses_cells_and_keeps_output(engine):
    shared = "You are a careful assistant. " * 12
    first = engine.complete_sync(shared + "Question one?", sampling=GREEDY, max_tokens=6)
    before = engine.stats()["cached_prompt_tokens"]
    second = engine.complete_sync(shared + "Question one?", sampling=GREEDY, max_tokens=6)
    reused = engine.stats()["cached_prompt_tokens"] - before
    assert reused >= first.prompt_tokens - 1
    assert second.tokens == first.tokens


def test_shared_prefix_sent_together_is_computed_once(engine):
    system = "System: answer briefly and politely, in English. " * 10
    prompts = [system + f"User {i}: hello" for i in range(6)]
    start = engine.stats()

    async def burst():
        return await asyncio.gather(*[engine.complete(p, sampling=GREEDY, max_tokens=4) for p in prompts])

    asyncio.run(burst())
    end = engine.stats()
    prompt = end["prompt_tokens"] - start["prompt_tokens"]
    cached = end["cached_prompt_tokens"] - start["cached_prompt_tokens"]
    n_system = len(engine.model.vocab.tokenize(system))
    assert cached >= 5 * (n_system - 2), (prompt, cached)


def test_cache_pressure_preempts_and_resumes_without_corruption(model):
    prompts = [f"Story number {i}: the dragon" for i in range(4)]
    with Engine(model, n_ctx=256, n_seq_max=4, n_batch=256, n_threads=2) as small:
        expected = {p: alone(small, p, 40) for p in prompts}

        async def crowd():
            return await asyncio.gather(*[small.complete(p, sampling=GREEDY, max_tokens=40) for p in prompts])

        results = asyncio.run(crowd())
        assert {p: r.tokens for p, r in zip(prompts, results)} == expected
        assert all(r.finish_reason in ("length", "stop") for r in results)


def test_a_burst_behind_one_long_prefix_is_admitted_together(model):
    # Six requests share a ~280-token system prompt in a 1,024-cell cache. Counting the
    # shared cells once (and only max_tokens of growth), all six run together: one step for
    # the prefix, one for the six tails, then the decode steps. Counting the prefix per
    # request admitted two at a time (13 steps here).
    system = "System: you are a helpful assistant who answers in one short sentence. " * 20
    with Engine(model, n_ctx=1024, n_seq_max=8, n_batch=512, n_threads=2) as small:
        async def burst():
            return await asyncio.gather(*[small.complete(system + f"User {i}: hi", sampling=GREEDY, max_tokens=4)
                                          for i in range(6)])

        results = asyncio.run(burst())
        stats = small.stats()
    assert [r.finish_reason for r in results] == ["length"] * 6
    assert stats["preemptions"] == 0 and stats["steps"] <= 7, stats


def test_a_stream_per_sequence_batches_and_shares_prefixes_the_same(model):
    # kv_unified=False: each sequence has its own cells. Sent one at a time, each prompt
    # reuses the previous one's slot in place; sent together, the three later prompts wait
    # for the first to compute the shared part and get it as a copy of its stream.
    system = "System: answer briefly and politely, in English. " * 6
    prompts = [system + f"User {i}: hello" for i in range(4)]
    config = dict(n_ctx=2048, n_seq_max=4, n_batch=512, n_threads=2, kv_unified=False)
    with Engine(model, **config) as one_by_one:
        assert one_by_one.context.n_streams == 4 and one_by_one.context.n_ctx_seq == 512
        expected = {p: alone(one_by_one, p, 8) for p in prompts}
    with Engine(model, **config) as together:
        async def burst():
            return await asyncio.gather(*[together.complete(p, sampling=GREEDY, max_tokens=8) for p in prompts])

        results = asyncio.run(burst())
        stats = together.stats()
    assert stats["cached_prompt_tokens"] >= 3 * (len(model.vocab.tokenize(system)) - 2)
    # Wrong copied cells would show at once; later tokens may part on a near-tie because the
    # prompts' tails were computed in batches of other shapes.
    assert all(r.tokens[:4] == expected[p][:4] for p, r in zip(prompts, results))


def test_a_preempted_grammar_request_resumes_where_it_was(model):
    # Resuming rebuilds the sampler chain: the grammar must be fed the tokens generated
    # before the preemption, or it would demand the opening "x" again mid-answer.
    import re

    from llama_ffi import LlamaGrammar

    grammar = LlamaGrammar.from_string('root ::= "x" [0-9 ]+')
    prompts = [f"Write digits, take {i}:" for i in range(3)]
    # All three are admitted (3 x (prompt + 128 reserved) < 512) but need ~3 x 180 cells.
    with Engine(model, n_ctx=512, n_seq_max=4, n_batch=256, n_threads=2) as small:
        async def crowd():
            return await asyncio.gather(*[small.complete(p, sampling=GREEDY, max_tokens=170, grammar=grammar)
                                          for p in prompts])

        results = asyncio.run(crowd())
        stats = small.stats()
    assert stats["preemptions"] > 0, "the test needs the cache to overflow"
    assert all(r.finish_reason == "length" and len(r.tokens) == 170 for r in results)  # resumed, not cut
    for prompt, r in zip(prompts, results):
        assert re.fullmatch(r"x[0-9 ]+", r.text), r.text
        assert r.usage["prompt_tokens"] == len(model.vocab.tokenize(prompt, add_special=True, parse_special=True))


def test_leaving_the_stream_cancels_and_frees_the_slot(engine):
    stream = engine.generate_sync("Count forever: 1, 2, 3,", sampling=GREEDY, max_tokens=5000)
    for i, _event in enumerate(stream):
        if i == 3:
            break
    stream.close()
    deadline = time.time() + 10
    while engine.stats()["running"] and time.time() < deadline:
        time.sleep(0.01)
    assert engine.stats()["running"] == 0


def test_async_stream_and_cancel(engine):
    async def first_events():
        seen = []
        async for event in engine.generate("Tell me about the sea.", sampling=GREEDY, max_tokens=500):
            seen.append(event)
            if len(seen) == 2:
                break
        return seen

    events = asyncio.run(first_events())
    assert len(events) == 2 and all(e.tokens for e in events)


def test_stop_strings_and_logprobs(engine):
    full = engine.complete_sync(PROMPTS[0], sampling=GREEDY, max_tokens=12)
    cut = full.text.strip().split()[1]
    stopped = engine.complete_sync(PROMPTS[0], sampling=GREEDY, max_tokens=12, stop=[cut])
    assert stopped.finish_reason == "stop" and cut not in stopped.text
    assert full.text.startswith(stopped.text)
    with_lp = engine.complete_sync(PROMPTS[0], sampling=GREEDY, max_tokens=3, logprobs=2)
    assert [token for token, _, _ in with_lp.logprobs] == with_lp.tokens
    for token, logprob, top in with_lp.logprobs:  # greedy picks the most likely token
        assert top[0][0] == token and logprob <= 0


@pytest.mark.parametrize("kwargs, error", [
    ({"max_tokens": -2}, ValidationError), ({"max_tokens": "many"}, ValidationError),
    ({"stop": [b"x"]}, ValidationError), ({"stop": ["s"] * 200}, ValidationError),
    ({"logprobs": 101}, ValidationError), ({"sampling": SamplingParams(top_p=3.0)}, ValidationError),
    ({"stop_tokens": [10**7]}, ValidationError),
])
def test_bad_requests_are_refused(engine, kwargs, error):
    with pytest.raises(error):
        engine.submit("hi", **kwargs)


def test_bad_prompts(engine):
    with pytest.raises(ValidationError):
        engine.submit([1, 2, -5])
    with pytest.raises(ContextOverflowError):
        engine.submit([1] * 5000)
    assert engine.complete_sync(PROMPTS[0], sampling=GREEDY, max_tokens=2).tokens  # still serving


def test_full_queue_is_an_overload_error(model):
    with Engine(model, n_ctx=512, n_seq_max=1, max_queued_requests=2, n_threads=2) as tiny:
        requests = []
        with pytest.raises(OverloadedError):
            for _ in range(50):
                requests.append(tiny.submit("hello", max_tokens=200))
        for r in requests:
            r.cancel()


def test_pool_spreads_requests(model):
    with Engine(model, n_ctx=512, n_seq_max=2, n_threads=1) as a, Engine(model, n_ctx=512, n_seq_max=2, n_threads=1) as b:
        pool = EnginePool([a, b])
        results = [pool.complete_sync(p, sampling=GREEDY, max_tokens=4) for p in PROMPTS[:2]]
        assert all(len(r.tokens) == 4 for r in results)
        assert a.stats()["finished"] + b.stats()["finished"] == 2


def test_sampling_split_between_graph_and_host_matches_host_sampling(model):
    """The GPU path (top-k in the graph, the rest on the host) forced on, on the CPU backend:
    seeded samples equal those of the plain host chain. (Chains, not bulk sampling, on both.)"""
    sampling = SamplingParams(temperature=0.9, top_k=40, top_p=0.9, min_p=0.02, seed=11)
    with Engine(model, n_ctx=1024, n_seq_max=4, n_threads=2, backend_sampling=False, batched_sampling=False) as host:
        expected = [host.complete_sync(p, sampling=sampling, max_tokens=10).tokens for p in PROMPTS[:3]]
    with Engine(model, n_ctx=1024, n_seq_max=4, n_threads=2, backend_sampling=True, batched_sampling=False) as split:
        got = [split.complete_sync(p, sampling=sampling, max_tokens=10).tokens for p in PROMPTS[:3]]
        greedy = split.complete_sync(PROMPTS[0], sampling=GREEDY, max_tokens=8).tokens  # whole chain in the graph
    assert got == expected
    assert greedy == alone_engine_greedy(model, PROMPTS[0], 8)


def alone_engine_greedy(model, prompt, n):
    with Engine(model, n_ctx=512, n_seq_max=1, n_threads=2, backend_sampling=False) as plain:
        return plain.complete_sync(prompt, sampling=GREEDY, max_tokens=n).tokens


class _UnbuildableSampling(SamplingParams):
    """A seam: settings that validate but whose sampler chain fails to build on the engine
    thread (as a sampler llama.cpp refuses would)."""

    def build_chain(self, *args, **kwargs):
        raise RuntimeError("sampler refused")

    def backend_split(self, vocab):
        return None


def test_a_request_whose_sampler_cannot_be_built_fails_alone(engine):
    # That request fails with the reason; the others go on, and its slot is not taken.
    async def mixed():
        # (a penalty keeps it on a llama.cpp chain: plain chains are sampled in bulk, unbuilt)
        bad = engine.complete(PROMPTS[0], sampling=_UnbuildableSampling(temperature=0, repeat_penalty=1.1),
                              max_tokens=4)
        good = engine.complete(PROMPTS[1], sampling=GREEDY, max_tokens=6)
        return await asyncio.gather(bad, good, return_exceptions=True)

    bad, good = asyncio.run(mixed())
    from llama_ffi import GenerationError

    assert isinstance(bad, GenerationError), bad
    assert good.tokens == alone(engine, PROMPTS[1], 6)
    assert engine.stats()["running"] == 0
    assert engine.complete_sync(PROMPTS[0], sampling=GREEDY, max_tokens=3).finish_reason == "length"


def test_bulk_sampled_requests_batch_with_chained_ones(model):
    """Plain chains sampled in bulk (generation/batched.py) and a penalty chain (a llama.cpp
    chain) in the same steps: each gets what it would get alone; seeds reproduce. (A KV
    stream per sequence, so that a row's logits do not depend on its neighbours' cells.)"""
    seeded = SamplingParams(temperature=0.8, seed=5)
    penalised = SamplingParams(temperature=0, repeat_penalty=1.3)
    with Engine(model, n_ctx=1536, n_seq_max=3, n_threads=2, kv_unified=False, batched_sampling="all") as engine:
        async def together():
            return await asyncio.gather(engine.complete(PROMPTS[0], sampling=seeded, max_tokens=12),
                                        engine.complete(PROMPTS[1], sampling=penalised, max_tokens=12),
                                        engine.complete(PROMPTS[2], sampling=GREEDY, max_tokens=12))
        a, b, c = asyncio.run(together())
        assert len(a.tokens) == len(b.tokens) == len(c.tokens) == 12
        assert a.tokens == engine.complete_sync(PROMPTS[0], sampling=seeded, max_tokens=12).tokens
        assert b.tokens == engine.complete_sync(PROMPTS[1], sampling=penalised, max_tokens=12).tokens
        assert c.tokens == engine.complete_sync(PROMPTS[2], sampling=GREEDY, max_tokens=12).tokens
