"""Greedy generation through llama_ffi equals the native llama-simple from the same source."""

from __future__ import annotations

import subprocess

import pytest

from conftest import native_tool
from llama_ffi import Context, ContextParams, Sampler, SamplerChain
from llama_ffi.native.loop import TokenLoop

N_PREDICT = 24


@pytest.mark.parametrize("prompt", [
    "The capital of France is",
    "def fibonacci(n):",
    "<|im_start|>user\nName three fruits.<|im_end|>\n<|im_start|>assistant\n",
    "Als ich gestern nach Hause kam,",
])
def test_greedy_tokens_match_llama_simple(model, model_path, prompt):
    simple = native_tool("llama-simple")
    native = subprocess.run([str(simple), "-m", str(model_path), "-n", str(N_PREDICT), "-ngl", "0", prompt],
                            capture_output=True, timeout=300)
    assert native.returncode == 0, native.stderr.decode(errors="replace")[-2000:]

    vocab = model.vocab
    tokens = vocab.tokenize(prompt, add_special=True, parse_special=True)
    # llama-simple sizes its context and batch from the prompt; do the same.
    params = ContextParams(n_ctx=len(tokens) + N_PREDICT - 1, n_batch=len(tokens), n_threads=4)
    with Context(model, params) as ctx, SamplerChain([Sampler.greedy()]) as chain:
        loop = TokenLoop(ctx, chain)
        loop.prefill(tokens)
        generated = []
        for token in loop.run(N_PREDICT):
            if vocab.is_eog(token):
                break
            generated.append(token)
    # llama-simple prints every prompt piece, then every generated piece, then a newline.
    ours = b"".join(vocab.token_to_piece(t) for t in tokens + generated) + b"\n"
    assert native.stdout == ours
