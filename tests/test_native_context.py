"""Context: decoding, zero-copy outputs, KV memory per sequence, state, abort."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from llama_ffi import (Batch, CancelledError, Context, ContextParams, KVCacheFullError, Sampler,
                       SamplerChain, StateError, ValidationError)
from llama_ffi.native.loop import TokenLoop

PROMPT = "The three primary colours are"


def greedy_continuation(ctx, tokens, n, seq_id=0, start_pos=0):
    with SamplerChain([Sampler.greedy()]) as chain:
        loop = TokenLoop(ctx, chain, seq_id=seq_id)
        loop.prefill(tokens, start_pos)
        return list(loop.run(n))


def test_logits_are_a_zero_copy_view(context, model):
    tokens = model.vocab.tokenize(PROMPT)
    batch = Batch(64)
    batch.add(tokens, 0)
    context.decode(batch)
    first, again = context.logits(), context.logits()
    assert first.shape == (model.vocab.n_tokens,) and first.dtype == np.float32
    assert np.shares_memory(first, again)
    assert np.isfinite(first).all()


def test_copy_sequence_shares_cells_and_continues_identically(context, model):
    tokens = model.vocab.tokenize(PROMPT)
    expected = greedy_continuation(context, tokens, 8, seq_id=0)
    context.memory_clear()
    batch = Batch(64)
    batch.add(tokens[:-1], 0, seq_id=0, logits="none")
    context.decode(batch)
    context.memory_seq_cp(0, 1)
    assert context.memory_seq_pos_range(1) == (0, len(tokens) - 2)
    # the last prompt token is decoded separately on sequence 1: its cells came from 0
    got = greedy_continuation(context, tokens[-1:], 8, seq_id=1, start_pos=len(tokens) - 1)
    assert got == expected
    context.memory_seq_rm(1)
    assert context.memory_seq_pos_range(1) == (-1, -1)


def test_state_round_trip_restores_the_same_logits(context, model):
    batch = Batch(64)
    batch.add(model.vocab.tokenize(PROMPT), 0)
    context.decode(batch)
    want = context.logits().copy()
    state = context.state_bytes()
    context.memory_clear()
    context.load_state_bytes(state)
    np.testing.assert_array_equal(context.logits(), want)


def test_state_file_round_trip(context, model, tmp_path):
    tokens = model.vocab.tokenize(PROMPT)
    batch = Batch(64)
    batch.add(tokens, 0)
    context.decode(batch)
    context.save_state_file(tmp_path / "s.bin", tokens)
    context.memory_clear()
    assert context.load_state_file(tmp_path / "s.bin") == tokens
    assert context.memory_seq_pos_range(0) == (0, len(tokens) - 1)


@pytest.mark.parametrize("corrupt", [lambda s: s[: len(s) // 2], lambda s: s[:16], lambda s: b"\xff" * 64])
def test_bad_state_raises_state_error(context, model, corrupt):
    batch = Batch(64)
    batch.add(model.vocab.tokenize(PROMPT), 0)
    context.decode(batch)
    with pytest.raises(StateError):
        context.load_state_bytes(corrupt(context.state_bytes()))


def test_missing_state_file(context, tmp_path):
    with pytest.raises(StateError, match="no state file"):
        context.load_state_file(tmp_path / "absent.bin")


def test_bad_batches_are_refused_before_c(context, model):
    batch = Batch(8)
    with pytest.raises(ValidationError, match="empty"):
        context.decode(batch)
    batch.add([1, 2, 49152], 0)
    with pytest.raises(ValidationError, match="token ids"):
        context.decode(batch)
    batch.clear()
    batch.add([1, 2], 0, seq_id=9)
    with pytest.raises(ValidationError, match="sequence ids"):
        context.decode(batch)
    batch.clear()
    batch.add([1, 2], 10**6)
    with pytest.raises(ValidationError, match="positions"):
        context.decode(batch)
    with pytest.raises(ValidationError, match="cannot add"):
        batch.add(list(range(20)), 0)


def test_full_cache_is_recoverable(model):
    # Two sequences share 256 cells: the second cannot fit while the first holds 200.
    with Context(model, ContextParams(n_ctx=256, n_batch=256, n_seq_max=2, kv_unified=True)) as ctx:
        batch = Batch(256)
        batch.add(np.full(200, 100), 0, seq_id=0, logits="none")
        ctx.decode(batch)
        batch.clear()
        batch.add(np.full(100, 100), 0, seq_id=1)
        with pytest.raises(KVCacheFullError) as info:
            ctx.decode(batch)
        assert info.value.status == 1
        ctx.memory_seq_rm(0)
        ctx.decode(batch)  # room again: the same batch now fits
        assert ctx.memory_seq_pos_range(1) == (0, 99)


def test_abort_from_another_thread_cancels_a_running_decode(model):
    with Context(model, ContextParams(n_ctx=2048, n_batch=2048, n_ubatch=512, n_threads=1)) as ctx:
        batch = Batch(2048)
        batch.add(np.full(2048, 1000), 0)
        timer = threading.Timer(0.05, ctx.abort)
        timer.start()
        start = time.perf_counter()
        with pytest.raises(CancelledError):
            ctx.decode(batch)
        assert time.perf_counter() - start < 5
        ctx.memory_clear()
        batch.clear()
        batch.add([1, 2, 3], 0)
        ctx.decode(batch)  # the flag was reset: the context works again


def test_context_params_are_validated(model):
    with pytest.raises(ValidationError, match="n_seq_max"):
        Context(model, ContextParams(n_seq_max=0))
    with pytest.raises(ValidationError, match="type_k"):
        Context(model, ContextParams(type_k="q3_weird"))


def test_embeddings_of_a_generative_model(model):
    with Context(model, ContextParams(n_ctx=256, embeddings=True, pooling_type="mean")) as ctx:
        batch = Batch(64)
        batch.add(model.vocab.tokenize(PROMPT), 0, logits="all")
        ctx.decode(batch)
        pooled = ctx.sequence_embeddings(0)
        assert pooled.shape == (model.n_embd,) and np.isfinite(pooled).all()
        assert np.linalg.norm(pooled) > 0


def test_backend_sampling_gives_the_same_greedy_tokens(model):
    tokens = model.vocab.tokenize(PROMPT)
    with Context(model, ContextParams(n_ctx=256)) as ctx:
        expected = greedy_continuation(ctx, tokens, 10)
    with Context(model, ContextParams(n_ctx=256)) as ctx:
        chain = SamplerChain([Sampler.greedy()])
        ctx.set_sampler(0, chain)
        loop = TokenLoop(ctx, chain)
        loop.prefill(tokens)
        assert list(loop.run(10)) == expected
        with pytest.raises(ValidationError, match="already attached"):
            ctx.set_sampler(0, chain)  # llama.cpp would assert: refused in Python
        chain.close()  # detaches before freeing
        ctx.memory_clear()
        with SamplerChain([Sampler.greedy()]) as plain:
            loop = TokenLoop(ctx, plain)
            loop.prefill(tokens)
            assert list(loop.run(3)) == expected[:3]


def test_partial_copy_across_streams_is_refused_not_an_abort(model):
    # A cache that is not unified keeps one stream per sequence; llama.cpp asserts (and
    # kills the process) on a partial copy between streams. A whole copy works.
    tokens = model.vocab.tokenize(PROMPT)
    with Context(model, ContextParams(n_ctx=512, n_seq_max=2, kv_unified=False, n_threads=2)) as ctx:
        assert ctx.n_streams == 2
        batch = Batch(64)
        batch.add(tokens, 0, seq_id=0, logits="none")
        ctx.decode(batch)
        with pytest.raises(ValidationError, match="copied whole"):
            ctx.memory_seq_cp(0, 1, 0, 3)
        ctx.memory_seq_cp(0, 1)
        ctx.memory_seq_rm(1, 3, -1)
        assert ctx.memory_seq_pos_range(1) == (0, 2)
