"""LoRA adapter sets per engine request: requests of different sets never share a decode step
or KV cells, so each generates what it generates alone, in any mix."""

from __future__ import annotations

import asyncio
import math
import threading
import time

import pytest
from test_llama_lora import GGUF_PY, make_adapter

from llama_ffi import ValidationError
from llama_ffi.engine import Engine
from llama_ffi.generation import SamplingParams
from llama_ffi.native import LoraAdapter

GREEDY = SamplingParams(temperature=0)
PROMPTS = ["The capital of France is", "Once upon a time,"]
# long enough to be a shared prefix (slots.MIN_SHARED_PREFIX tokens and more)
SHARED = "You are a helpful assistant. Answer in one short sentence, politely. Question: "


@pytest.fixture(scope="module")
def adapters(model, tmp_path_factory):
    if not GGUF_PY.exists():
        pytest.skip("llama.cpp's gguf-py not vendored")
    folder = tmp_path_factory.mktemp("lora")
    loaded = [LoraAdapter(model, make_adapter(folder / "a.gguf", 0)), LoraAdapter(model, make_adapter(folder / "b.gguf", 1))]
    yield loaded
    for adapter in loaded:
        adapter.close()


@pytest.fixture()
def engine(model):
    with Engine(model, n_ctx=2048, n_seq_max=6, n_batch=256, n_threads=1) as eng:
        yield eng


def alone(engine, prompt, loras, n=8):
    return engine.complete_sync(prompt, sampling=GREEDY, max_tokens=n, loras=loras)


def sets(adapters):
    first, second = adapters
    return [None, {first: 1.0}, {second: 1.0}, {first: 0.5, second: 1.0}]


def test_each_set_generates_what_it_generates_alone_in_any_mix(engine, adapters):
    expected = {(p, i): alone(engine, p, s).tokens for p in PROMPTS for i, s in enumerate(sets(adapters))}
    base, first, second, both = (expected[(PROMPTS[0], i)] for i in range(4))
    assert len({tuple(base), tuple(first), tuple(second), tuple(both)}) == 4  # every set changes the output
    assert alone(engine, PROMPTS[0], {adapters[0]: 0.0}).tokens == base  # scale 0: the adapter is off

    async def together():
        jobs = [(p, i, s) for _ in range(2) for p in PROMPTS for i, s in enumerate(sets(adapters))]
        outs = await asyncio.gather(*[engine.complete(p, sampling=GREEDY, max_tokens=8, loras=s) for p, _, s in jobs])
        return [((p, i), out.tokens) for (p, i, _), out in zip(jobs, outs)]

    switches = engine.stats()["lora_switches"]
    for key, tokens in asyncio.run(together()):
        assert tokens == expected[key], key
    assert engine.stats()["lora_switches"] > switches  # the mix did run under several sets


def test_prefix_cells_are_reused_only_under_the_set_that_computed_them(engine, adapters):
    first, second = adapters
    prompt = SHARED + "What is the capital of France?"
    computed = alone(engine, prompt, {first: 1.0})
    assert computed.cached_tokens == 0
    other = alone(engine, prompt, {second: 1.0})
    assert other.cached_tokens == 0  # the same tokens, other weights: nothing reused
    assert alone(engine, prompt, None).cached_tokens == 0
    again = alone(engine, prompt, {first: 1.0})
    assert again.cached_tokens > 0 and again.tokens == computed.tokens
    assert alone(engine, prompt, {second: 1.0}).cached_tokens > 0
    # a scale is part of the set: 0.5 of the first adapter is other weights again
    assert alone(engine, prompt, {first: 0.5}).cached_tokens == 0


def test_running_prefixes_are_not_shared_across_sets(engine, adapters):
    prompt = SHARED + "Name a large planet."
    expected = {i: alone(engine, prompt + f" ({i})", s, n=16).tokens for i, s in enumerate(sets(adapters))}

    async def together():
        return await asyncio.gather(*[engine.complete(prompt + f" ({i})", sampling=GREEDY, max_tokens=16, loras=s)
                                      for i, s in enumerate(sets(adapters))])

    for i, out in enumerate(asyncio.run(together())):
        assert out.tokens == expected[i], i


def test_the_default_set_applies_to_later_requests(engine, adapters):
    first, _ = adapters
    base = alone(engine, PROMPTS[0], None).tokens
    with_first = alone(engine, PROMPTS[0], {first: 1.0}).tokens
    engine.set_loras({first: 1.0}).result(timeout=30)
    assert alone(engine, PROMPTS[0], None).tokens == with_first
    assert alone(engine, PROMPTS[0], {}).tokens == base  # {}: no adapters for this request
    engine.set_loras({}).result(timeout=30)
    assert alone(engine, PROMPTS[0], None).tokens == base


def test_a_waiting_set_is_served_after_the_switch_bound(model, adapters):
    """A long request of one set runs; a request of another set arrives, then more of the
    first set. With a small bound the later ones wait for the other set's turn."""
    first, second = adapters
    for bound, later_first in ((2, False), (10_000, True)):  # bound: steps
        with Engine(model, n_ctx=2048, n_seq_max=6, n_batch=256, n_threads=1, lora_switch_after=bound) as engine:
            started = threading.Event()
            long = engine.submit(PROMPTS[0], sampling=GREEDY, max_tokens=40, loras={first: 1.0},
                                 sink=lambda e: started.set())
            assert started.wait(60)
            done = {}

            def sink_for(name):
                finished = threading.Event()
                done[name] = finished
                return lambda e: finished.set() if e.finish_reason else None

            other = engine.submit(PROMPTS[1], sampling=GREEDY, max_tokens=4, loras={second: 1.0}, sink=sink_for("o"))
            steps = engine.call(lambda s: s.counters.steps).result(timeout=30)  # queued by now
            while engine.stats()["steps"] < steps + 4 and long.state.value != "finished":
                time.sleep(0.01)  # the other set has waited more than the small bound
            later = engine.submit(PROMPTS[1], sampling=GREEDY, max_tokens=4, loras={first: 1.0}, sink=sink_for("l"))
            assert done["o"].wait(60) and done["l"].wait(60), (bound, long.state, other.state, later.state)
            assert (later.first_token_at < other.first_token_at) is later_first, bound
            assert long.n_generated >= 20  # it was still running when the others came


def test_bad_sets_are_validation_errors(engine, adapters, model_path):
    first, _ = adapters
    for bad in ({first: math.nan}, {first: math.inf}, {first: "1"}, {first: True}, [(first, 1.0)], {"a.gguf": 1.0}):
        with pytest.raises(ValidationError):
            engine.submit(PROMPTS[0], loras=bad)
        with pytest.raises(ValidationError):
            engine.set_loras(bad)
    from llama_ffi.native import Model, ModelParams

    with Model(model_path, ModelParams(n_gpu_layers=0)) as other_model:
        foreign = LoraAdapter(other_model, first.path)
        with pytest.raises(ValidationError):
            engine.submit(PROMPTS[0], loras={foreign: 1.0})
        foreign.close()
    assert alone(engine, PROMPTS[0], None).finish_reason == "length"  # still serving
