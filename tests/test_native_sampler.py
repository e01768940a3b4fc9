"""Samplers: every llama.h sampler, chains, ownership transfer, Python samplers."""

from __future__ import annotations

import numpy as np
import pytest

from llama_ffi import Sampler, SamplerChain, ValidationError
from llama_ffi.native.loop import TokenLoop
from llama_ffi.native.sampler import TOKEN_DATA


def candidates(logits):
    arr = np.zeros(len(logits), dtype=TOKEN_DATA)
    arr["id"] = np.arange(len(logits))
    arr["logit"] = logits
    return arr


def test_every_sampler_can_be_built(model):
    vocab = model.vocab
    n = vocab.n_tokens
    samplers = [
        Sampler.greedy(), Sampler.dist(42), Sampler.top_k(40), Sampler.top_p(0.9), Sampler.min_p(0.05),
        Sampler.typical(0.9), Sampler.temperature(0.7), Sampler.temperature(0.7, 0.2, 1.5),
        Sampler.xtc(0.5, 0.1), Sampler.top_n_sigma(2.0), Sampler.mirostat(n), Sampler.mirostat_v2(),
        Sampler.penalties(n, 64, 1.1, 0.1, 0.1), Sampler.dry(vocab, 0.8), Sampler.logit_bias(n, {5: -1.0}),
        Sampler.grammar(vocab, 'root ::= "yes" | "no"'), Sampler.infill(vocab),
        Sampler.grammar(vocab, 'root ::= "x"', lazy=True, trigger_patterns=["<tool_call>"]),
    ]
    names = [s.name for s in samplers]
    assert len(set(names)) >= 15
    for s in samplers:
        s.close()


def test_chain_filters_like_the_samplers_say():
    logits = np.array([1.0, 5.0, 3.0, 4.0, 2.0], dtype=np.float32)
    with SamplerChain([Sampler.top_k(2), Sampler.greedy()]) as chain:
        out = chain.apply(candidates(logits))
    assert out["id"][0] == 1 and sorted(out["id"]) == [1, 3]


def test_ownership_moves_into_the_chain():
    top_k = Sampler.top_k(5)
    chain = SamplerChain([top_k])
    with pytest.raises(ValidationError, match="already belongs"):
        SamplerChain([top_k])
    top_k.close()  # no-op: the chain owns it
    chain.close()
    assert top_k.closed and chain.closed
    chain.close()


def test_python_sampler_edits_candidates_in_place(model, context):
    banned = model.vocab.tokenize(" Paris", add_special=False)[0]

    def ban(cands):
        cands["logit"][cands["id"] == banned] = -np.inf

    prompt = model.vocab.tokenize("The capital of France is")
    with SamplerChain([Sampler.custom(ban), Sampler.greedy()]) as chain:
        loop = TokenLoop(context, chain)
        loop.prefill(prompt)
        tokens = list(loop.run(6))
    assert banned not in tokens
    context.memory_clear()
    with SamplerChain([Sampler.greedy()]) as plain:
        loop = TokenLoop(context, plain)
        loop.prefill(prompt)
        assert next(iter(loop.run(1))) == banned  # the ban is what changed the outcome


def test_python_sampler_exception_is_reraised_not_crashed(model, context):
    def fail(_cands):
        raise ZeroDivisionError("inside a sampler")

    with SamplerChain([Sampler.custom(fail), Sampler.greedy()]) as chain:
        loop = TokenLoop(context, chain)
        loop.prefill(model.vocab.tokenize("hi"))
        with pytest.raises(ZeroDivisionError, match="inside a sampler"):
            list(loop.run(3))


def test_grammar_sampler_constrains_generation(model, context):
    grammar = Sampler.grammar(model.vocab, 'root ::= ("yes" | "no") "."')
    with SamplerChain([grammar, Sampler.greedy()]) as chain:
        loop = TokenLoop(context, chain)
        loop.prefill(model.vocab.tokenize("Is the sky green? Answer:"))
        tokens = list(loop.run(8, stop_tokens=model.vocab.eog_tokens))
    assert model.vocab.detokenize(tokens).decode() in ("yes.", "no.")


def test_seeded_dist_is_reproducible(model, context):
    prompt = model.vocab.tokenize("Once upon a time")

    def sample(seed):
        context.memory_clear()
        with SamplerChain([Sampler.temperature(1.0), Sampler.dist(seed)]) as chain:
            loop = TokenLoop(context, chain)
            loop.prefill(prompt)
            return list(loop.run(12))

    assert sample(7) == sample(7)


@pytest.mark.parametrize("build", [
    lambda: Sampler.top_k("ten"), lambda: Sampler.top_p(1.5), lambda: Sampler.temperature(float("nan")),
    lambda: Sampler.dist(-7), lambda: Sampler.min_p(-0.1),
])
def test_bad_sampler_arguments(build):
    with pytest.raises(ValidationError):
        build()
