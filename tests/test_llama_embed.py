"""Embeddings on the real model: packed batches equal one-by-one, pooling, normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from llama_ffi import Llama, ValidationError

TEXTS = ["The cat sat on the mat.", "Stock markets fell sharply today.", "A kitten rested on a rug.", "ok"]


def test_create_embedding_shape(embedder):
    out = embedder.create_embedding(TEXTS)
    assert out["object"] == "list" and out["model"] == embedder.model_path
    assert [d["index"] for d in out["data"]] == list(range(len(TEXTS)))
    assert all(d["object"] == "embedding" and len(d["embedding"]) == embedder.n_embd() for d in out["data"])
    n_tokens = sum(len(embedder.tokenize(t.encode())) for t in TEXTS)
    assert out["usage"] == {"prompt_tokens": n_tokens, "total_tokens": n_tokens}


def test_packed_batch_equals_one_at_a_time(embedder):
    packed = np.array(embedder.embed(TEXTS))
    single = np.array([embedder.embed(t) for t in TEXTS])
    assert packed.shape == (len(TEXTS), embedder.n_embd())
    np.testing.assert_allclose(packed, single, rtol=1e-3, atol=1e-3)
    assert not np.allclose(packed[0], packed[1])


def test_normalize_and_similarity(embedder):
    vectors = np.array(embedder.embed(TEXTS[:3], normalize=True))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    sims = vectors @ vectors.T
    assert sims[0, 2] > sims[0, 1]  # cat/mat is nearer kitten/rug than stock markets


def test_return_count(embedder):
    vector, count = embedder.embed("hello world", return_count=True)
    assert len(vector) == embedder.n_embd() and count == len(embedder.tokenize(b"hello world"))


def test_more_inputs_than_sequences(embedder):
    many = [f"sentence number {i}" for i in range(embedder.context.n_seq_max + 5)]
    vectors = embedder.embed(many)
    assert len(vectors) == len(many)
    np.testing.assert_allclose(vectors[-1], embedder.embed(many[-1]), rtol=1e-3, atol=1e-3)


def test_pooling_none_gives_token_vectors(model_path):
    with Llama(str(model_path), n_ctx=256, embedding=True, pooling_type="none", verbose=False) as llm:
        out = llm.embed(["hello world", "a b c"])
        assert [len(v) for v in out] == [len(llm.tokenize(b"hello world")), len(llm.tokenize(b"a b c"))]
        assert all(len(row) == llm.n_embd() for row in out[0])


def test_generation_still_works_after_embedding(embedder):
    embedder.embed(TEXTS)
    a = embedder("Hello", max_tokens=4, temperature=0)["choices"][0]["text"]
    embedder.embed(TEXTS)
    assert embedder("Hello", max_tokens=4, temperature=0)["choices"][0]["text"] == a


def test_embedding_needs_embedding_mode(llama):
    with pytest.raises(ValidationError):
        llama.create_embedding("hi")


@pytest.mark.parametrize("value", [[], [1, 2], b"bytes", None])
def test_bad_embedding_input(embedder, value):
    with pytest.raises(ValidationError):
        embedder.embed(value)


def test_rerank_needs_a_rank_model(embedder):
    with pytest.raises(ValidationError):
        embedder.rerank("query", ["doc"])
