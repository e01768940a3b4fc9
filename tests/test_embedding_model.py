"""A real embedding model: all-MiniLM-L6-v2 (BERT) converted with the pinned tree's
convert_hf_to_gguf.py, checked against a reference computed from the same safetensors
weights without llama.cpp (Hugging Face tokenizer + a numpy BERT that matches
transformers.BertModel). Both files come from scripts/make_embedding_model.py, which
scripts/test.sh runs; this module needs neither torch nor transformers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llama_ffi import ContextOverflowError, Llama, ValidationError

MODELS = Path(__file__).resolve().parents[1] / "models"
GGUF = MODELS / "all-MiniLM-L6-v2.f32.gguf"
REFERENCE = MODELS / "all-MiniLM-L6-v2.reference.npz"
MIN_COSINE = 0.999

pytestmark = pytest.mark.skipif(
    not (GGUF.exists() and REFERENCE.exists()),
    reason="all-MiniLM-L6-v2 GGUF or its reference missing: run scripts/make_embedding_model.py "
           "(scripts/test.sh does; it needs torch==2.13.0 installable for the converter)")


@pytest.fixture(scope="module")
def ref():
    with np.load(REFERENCE) as data:
        out = {k: data[k] for k in data.files}
    bounds = list(zip(out["offsets"][:-1], out["offsets"][1:]))
    out["ids"] = [out["token_ids"][a:b].tolist() for a, b in bounds]
    out["tokens"] = [out["hidden"][a:b] for a, b in bounds]
    out["sentences"] = [str(s) for s in out["sentences"]]
    return out


def _llama(pooling: str | None = None, **kw) -> Llama:
    if pooling is not None:
        kw["pooling_type"] = pooling
    return Llama(str(GGUF), embedding=True, n_ctx=kw.pop("n_ctx", 512), verbose=False, **kw)


@pytest.fixture(scope="module")
def minilm():
    with _llama() as llm:  # the model's own pooling (mean, from the converted metadata)
        yield llm


def _cosines(a, b) -> np.ndarray:
    a, b = np.atleast_2d(np.asarray(a, np.float64)), np.atleast_2d(np.asarray(b, np.float64))
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def test_reference_is_trustworthy(ref):
    # The script refuses to write a reference whose numpy BERT strays from transformers'.
    assert float(ref["transformers_max_abs_diff"]) < 1e-6
    assert len(ref["sentences"]) >= 10


def test_tokens_match_hugging_face(minilm, ref):
    for text, ids in zip(ref["sentences"], ref["ids"]):
        assert minilm.model.vocab.tokenize(text, add_special=True) == ids, text


def test_default_pooling_is_the_models_mean(minilm):
    assert minilm.context.pooling_type == 1  # LLAMA_POOLING_TYPE_MEAN, from 1_Pooling/config.json
    assert minilm.n_embd() == 384


def test_mean_pooled_normalized_match_reference(minilm, ref):
    vectors = np.array(minilm.embed(ref["sentences"], normalize=True))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    cos = _cosines(vectors, ref["mean_normalized"])
    assert cos.min() > MIN_COSINE, dict(zip(ref["sentences"], cos.round(6)))


def test_create_embedding_matches_reference(minilm, ref):
    out = minilm.create_embedding(ref["sentences"])
    vectors = [d["embedding"] for d in out["data"]]
    assert _cosines(vectors, ref["mean_normalized"]).min() > MIN_COSINE
    n_tokens = sum(len(ids) for ids in ref["ids"])
    assert out["usage"] == {"prompt_tokens": n_tokens, "total_tokens": n_tokens}


def test_many_inputs_packed_equal_one_at_a_time(minilm, ref):
    texts = [f"{s} ({i})" for i, s in enumerate(ref["sentences"] * 3)]  # 36 inputs > n_seq_max
    assert len(texts) > minilm.context.n_seq_max
    packed = np.array(minilm.embed(texts, normalize=True))
    single = np.array([minilm.embed(t, normalize=True) for t in texts])
    np.testing.assert_allclose(packed, single, atol=1e-4)
    # and a packed call gives the same vector for the same text wherever it sits in the batch
    again = np.array(minilm.embed(list(reversed(ref["sentences"])), normalize=True))[::-1]
    np.testing.assert_allclose(again, np.array(minilm.embed(ref["sentences"], normalize=True)), atol=1e-4)


def test_similarity_ordering(minilm, ref):
    v = np.array(minilm.embed(ref["sentences"][:8], normalize=True))
    sims = v @ v.T
    for a, b in ((0, 1), (2, 3), (4, 5)):  # paraphrase pairs, each nearer than any unrelated sentence
        others = [j for j in range(8) if j not in (a, b)]
        assert sims[a, b] > sims[a, others].max(), (a, b)
        assert sims[b, a] > sims[b, others].max(), (a, b)
    expected = ref["mean_normalized"][:8] @ ref["mean_normalized"][:8].T
    np.testing.assert_allclose(sims, expected, atol=2e-3)


def test_pooling_cls_is_the_first_tokens_state(ref):
    with _llama("cls") as llm:
        assert llm.context.pooling_type == 2
        vectors = llm.embed(ref["sentences"])
    assert _cosines(vectors, ref["cls"]).min() > MIN_COSINE
    # CLS is not the mean: the two poolings give different vectors
    assert _cosines(vectors, ref["mean_normalized"]).max() < 0.99


def test_pooling_none_gives_every_tokens_state(ref):
    with _llama("none") as llm:
        out = llm.embed(ref["sentences"])
    for text, tokens, expected in zip(ref["sentences"], out, ref["tokens"]):
        got = np.array(tokens)
        assert got.shape == expected.shape, text
        assert _cosines(got, expected).min() > MIN_COSINE, text
        # mean pooling is the average of these rows
        mean = got.mean(0)
        assert _cosines(mean, ref["mean_normalized"][ref["sentences"].index(text)])[0] > MIN_COSINE


def test_pooling_last_is_the_last_tokens_state(ref):
    with _llama("last") as llm:
        vectors = np.array(llm.embed(ref["sentences"][:3]))
    last_rows = np.stack([t[-1] for t in ref["tokens"][:3]])  # [SEP]'s state
    assert _cosines(vectors, last_rows).min() > MIN_COSINE


@pytest.mark.parametrize("value", [[], [1, 2], ["ok", None], b"bytes", None, 3.5])
def test_bad_inputs_are_refused(minilm, value):
    with pytest.raises(ValidationError):
        minilm.embed(value)
    with pytest.raises(ValidationError):
        minilm.create_embedding(value)


def test_input_longer_than_the_context():
    with _llama(n_ctx=64, n_batch=64) as llm:
        long = " ".join(["word"] * 200)
        with pytest.raises(ContextOverflowError) as info:
            llm.embed(long, truncate=False)
        assert isinstance(info.value, ValidationError)
        # truncate=True (llama-cpp-python's default) embeds the first n_ctx tokens
        vector, count = llm.embed(long, return_count=True)
        assert count == 64 and len(vector) == 384
        short = llm.embed(["short one", long, "another"], normalize=True)  # a long input among short ones
        assert len(short) == 3


def test_rerank_refused_for_an_embedding_model(minilm):
    with pytest.raises(ValidationError):
        minilm.rerank("query", ["document"])


def test_generative_model_embeddings_still_work(embedder):
    vectors = np.array(embedder.embed(["The cat sat on the mat.", "A kitten rested on a rug."], normalize=True))
    assert vectors.shape == (2, embedder.n_embd()) and np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
