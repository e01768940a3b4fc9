"""generation/batched.py against llama.cpp's own samplers.

The oracle is llama.cpp: the same logits row runs through a real C chain (logit bias,
top-k, top-p, min-p, temperature: ``SamplerChain.apply``), whose survivors and their
softmax are the distribution our bulk sampler must draw from. Draws are then checked
against that distribution by frequency.
"""

from __future__ import annotations

import numpy as np
import pytest

from llama_ffi import Sampler, SamplerChain, SamplingParams
from llama_ffi.generation.batched import RowSampler, batchable, distribution, sample_rows
from llama_ffi.native.sampler import TOKEN_DATA

VOCAB = 6000

SETTINGS = [
    dict(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05),  # llama.cpp's defaults
    dict(temperature=1.0, top_k=40, top_p=1.0, min_p=0.0),
    dict(temperature=0.5, top_k=500, top_p=0.9, min_p=0.0),
    dict(temperature=1.3, top_k=3, top_p=0.5, min_p=0.2),
    dict(temperature=0.7, top_k=64, top_p=0.8, min_p=0.1, logit_bias={5: 6.0, 17: -100.0, 4000: 3.5}),
    dict(temperature=2.0, top_k=1, top_p=0.9, min_p=0.05),
]


def rows(seed: int) -> list[np.ndarray]:
    """Logits of the kinds a model gives: peaked, flat-ish, and with -inf entries."""
    rng = np.random.default_rng(seed)
    peaked = rng.normal(0, 2, VOCAB).astype(np.float32)
    peaked[rng.choice(VOCAB, 5, replace=False)] += rng.uniform(6, 10, 5).astype(np.float32)
    flat = rng.normal(0, 0.3, VOCAB).astype(np.float32)
    banned = rng.normal(0, 3, VOCAB).astype(np.float32)
    banned[rng.choice(VOCAB, VOCAB // 2, replace=False)] = -np.inf
    return [peaked, flat, banned]


def llama_cpp_distribution(row: np.ndarray, settings: dict) -> dict[int, float]:
    samplers = []
    if settings.get("logit_bias"):
        samplers.append(Sampler.logit_bias(VOCAB, settings["logit_bias"]))
    samplers += [Sampler.top_k(settings["top_k"]), Sampler.top_p(settings["top_p"]),
                 Sampler.min_p(settings["min_p"]), Sampler.temperature(settings["temperature"])]
    candidates = np.zeros(VOCAB, dtype=TOKEN_DATA)
    candidates["id"] = np.arange(VOCAB)
    candidates["logit"] = row
    with SamplerChain(samplers) as chain:
        survivors = chain.apply(candidates)
    logits = survivors["logit"].astype(np.float64)
    probs = np.exp(logits - logits.max())
    return dict(zip(survivors["id"].tolist(), (probs / probs.sum()).tolist()))


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items())[:60])
@pytest.mark.parametrize("seed", [0, 1])
def test_the_distribution_is_llama_cpps(settings, seed):
    sampler = RowSampler(SamplingParams(**settings))
    for row in rows(seed):
        want = llama_cpp_distribution(row, settings)
        ids, probs = distribution(row, sampler)
        assert set(ids.tolist()) == set(want), "survivors differ"
        assert probs == pytest.approx([want[i] for i in ids.tolist()], abs=1e-5)


def test_draws_follow_the_distribution():
    settings = SETTINGS[0]
    row = rows(3)[1]
    want = llama_cpp_distribution(row, settings)
    assert len(want) >= 3  # a row that really draws
    sampler = RowSampler(SamplingParams(seed=42, **settings))
    n = 20000
    drawn = np.array(sample_rows([row] * n, [sampler] * n))
    for token, p in want.items():
        assert abs(np.mean(drawn == token) - p) < 4 * np.sqrt(p * (1 - p) / n) + 1e-3, token
    assert set(np.unique(drawn).tolist()) <= set(want)


def test_seeds_reproduce_and_greedy_is_argmax_with_bias():
    row = rows(4)[1]
    first = [sample_rows([row.copy()], [RowSampler(SamplingParams(seed=9))])[0] for _ in range(2)]
    assert first[0] == first[1]
    bias = {int(np.argmin(row)): 50.0}
    greedy = RowSampler(SamplingParams(temperature=0, logit_bias=bias))
    assert sample_rows([row.copy()], [greedy]) == [int(np.argmin(row))]
    assert sample_rows([row.copy()], [RowSampler(SamplingParams(temperature=0))]) == [int(np.argmax(row))]


def test_only_plain_chains_are_batched():
    assert batchable(SamplingParams()) and batchable(SamplingParams(temperature=0))
    for other in (dict(repeat_penalty=1.1), dict(typical_p=0.9), dict(mirostat_mode=2), dict(top_k=0),
                  dict(xtc_probability=0.5), dict(dry_multiplier=0.8), dict(top_n_sigma=1.0)):
        assert not batchable(SamplingParams(**other)), other


def test_rows_scanned_on_a_thread_pool_draw_what_one_thread_draws(monkeypatch):
    """Many rows are scanned on a pool where cores allow: same tokens as the serial pass."""
    from concurrent.futures import ThreadPoolExecutor

    from llama_ffi.generation import batched

    logits = [r for seed in range(12) for r in rows(seed)]  # 36 rows: above the parallel threshold
    settings = [dict(SETTINGS[i % len(SETTINGS)], seed=i) if i % 5 else dict(temperature=0, logit_bias={3: 50.0})
                for i in range(len(logits))]

    def draw(pool):
        monkeypatch.setattr(batched, "_POOL", [pool])
        return sample_rows([r.copy() for r in logits], [RowSampler(SamplingParams(**s)) for s in settings])

    with ThreadPoolExecutor(3) as pool:
        parallel = draw(pool)
    serial = draw(None)
    assert parallel == serial
    for i in range(0, len(logits), 5):  # the greedy rows: the argmax after the bias
        biased = logits[i].copy()
        biased[3] += 50.0
        assert parallel[i] == int(np.argmax(biased))
    assert len(set(parallel)) > 5
