"""Embeddings and reranking for ``Llama(embedding=True)``.

Many inputs go through the model together: each input is one sequence of a shared batch
(up to ``n_seq_max`` sequences and ``n_batch`` tokens per decode), and the pooled vectors
are read per sequence. Pooling is the context's (``pooling_type=`` at construction; the
model's default otherwise); with ``"none"`` every token's vector is returned.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ContextOverflowError, ValidationError
from ..native import Batch

__all__ = ["create_embedding", "embed", "rerank"]

_POOLING_NONE, _POOLING_RANK = 0, 4


def _require_embeddings(llama) -> None:
    if not llama.context_params.embeddings:
        raise ValidationError("Llama model must be created with embedding=True to call this method",
                              param="embedding")


def _inputs(value, param: str = "input") -> tuple[list[str], bool]:
    """(texts, was_single)."""
    if isinstance(value, str):
        return [value], True
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)) \
            and all(isinstance(v, str) for v in value):
        if not value:
            raise ValidationError(f"{param} is an empty list", param=param)
        return list(value), False
    raise ValidationError(f"{param} must be a string or a list of strings", param=param)


def _encode_all(llama, token_lists: list[list[int]]) -> list[np.ndarray]:
    """One array per input: pooled (n_embd,) or per token (n_tokens, n_embd)."""
    ctx = llama.context
    session = llama._session
    pooled = ctx.pooling_type != _POOLING_NONE
    n_batch, n_seq = ctx.n_batch, ctx.n_seq_max
    results: list[np.ndarray | None] = [None] * len(token_lists)
    batch = Batch(n_batch)
    pending: list[tuple[int, int, slice]] = []  # (input index, sequence id, batch span)

    def flush() -> None:
        if not pending:
            return
        ctx.memory_clear()
        if llama.model.has_encoder and not llama.model.has_decoder:
            ctx.encode(batch)
        else:
            ctx.decode(batch)
        for index, seq, span in pending:
            if pooled:
                results[index] = ctx.sequence_embeddings(seq).copy()
            else:
                results[index] = np.stack([ctx.embeddings(i).copy() for i in range(span.start, span.stop)])
        batch.clear()
        pending.clear()

    session.acquire()
    try:
        session.invalidate()  # the KV cache is about to hold other sequences
        for index, tokens in enumerate(token_lists):
            if batch.n_tokens + len(tokens) > n_batch or len(pending) == n_seq:
                flush()
            span = batch.add(tokens, 0, len(pending), logits="all")
            pending.append((index, len(pending), span))
        flush()
    finally:
        ctx.memory_clear()
        session.loop.pos = 0
        session.release()
    return results  # type: ignore[return-value]


def _tokenize(llama, texts: list[str], truncate: bool) -> list[list[int]]:
    limit = min(llama.context.n_batch, llama.n_ctx())
    out = []
    for text in texts:
        tokens = llama.model.vocab.tokenize(text, add_special=True) or _bos(llama)
        if len(tokens) > limit:
            if not truncate:
                raise ContextOverflowError(f"input of {len(tokens)} tokens exceeds the batch size {limit}",
                                           n_tokens=len(tokens), n_ctx=limit, param="input")
            tokens = tokens[:limit]
        out.append(tokens)
    return out


def _bos(llama) -> list[int]:
    bos = llama.model.vocab.bos
    if bos is None:
        raise ValidationError("cannot embed an empty string with a model that has no BOS token", param="input")
    return [bos]


def embed(llama, input, *, normalize: bool = False, truncate: bool = True,  # noqa: A002
          return_count: bool = False):
    """llama-cpp-python's ``Llama.embed``: a list of floats per input (a list of lists per
    input with pooling ``none``); a single string gives a single result."""
    _require_embeddings(llama)
    texts, single = _inputs(input)
    token_lists = _tokenize(llama, texts, truncate)
    vectors = _encode_all(llama, token_lists)
    if normalize:
        vectors = [_normalize(v) for v in vectors]
    out = [v.tolist() for v in vectors]
    result = out[0] if single else out
    count = sum(len(t) for t in token_lists)
    return (result, count) if return_count else result


def _normalize(vector: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(vector, axis=-1, keepdims=True)
    return vector / np.where(norm == 0, 1, norm)


def create_embedding(llama, input, *, model: str | None = None) -> dict:  # noqa: A002
    """The OpenAI ``list`` of ``embedding`` objects, with usage."""
    texts, _ = _inputs(input)
    vectors, count = embed(llama, texts, return_count=True)
    return {
        "object": "list",
        "data": [{"object": "embedding", "embedding": v, "index": i} for i, v in enumerate(vectors)],
        "model": model if model is not None else llama.model_path,
        "usage": {"prompt_tokens": count, "total_tokens": count},
    }


def rerank(llama, query: str, documents: Sequence[str]) -> list[float]:
    """Relevance score of each document for ``query`` (a reranker: pooling ``rank``)."""
    _require_embeddings(llama)
    if llama.context.pooling_type != _POOLING_RANK:
        raise ValidationError("rerank needs a reranking model loaded with pooling_type='rank'",
                              param="pooling_type")
    if not isinstance(query, str):
        raise ValidationError("query must be a string", param="query")
    docs, _ = _inputs(documents, "documents")
    token_lists = [_pair_tokens(llama, query, doc) for doc in docs]
    limit = min(llama.context.n_batch, llama.n_ctx())
    token_lists = [t[:limit] for t in token_lists]
    return [float(v[0]) for v in _encode_all(llama, token_lists)]


def _pair_tokens(llama, query: str, document: str) -> list[int]:
    """The model's rerank template when it has one, else [BOS] q [EOS] [SEP] d [EOS]."""
    vocab = llama.model.vocab
    template = llama.model.chat_template("rerank")
    if template:
        text = template.replace("{query}", query).replace("{document}", document)
        return vocab.tokenize(text, add_special=True, parse_special=True)
    head = [vocab.bos] if vocab.bos is not None else []
    eos = [vocab.eos] if vocab.eos is not None else []
    sep = [vocab.sep] if vocab.sep is not None else []
    return (head + vocab.tokenize(query, add_special=False) + eos + sep
            + vocab.tokenize(document, add_special=False) + eos)
