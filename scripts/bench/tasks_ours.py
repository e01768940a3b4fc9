"""Measurements made inside a child process with llama_ffi."""

from __future__ import annotations

import time

from .gen import PROMPT, completion_rates, llama_kwargs


def _model(p: dict):
    from llama_ffi import Model

    return Model.load(p["model"], n_gpu_layers=p["n_gpu_layers"])


def _context(model, p: dict, **over):
    from llama_ffi import Context, ContextParams

    kw = dict(n_ctx=p["n_ctx"], n_batch=p["n_batch"], n_ubatch=p["n_batch"], n_threads=p["threads"],
              n_threads_batch=p["threads"], flash_attn=p["flash_attn"])
    kw.update(over)
    return Context(model, ContextParams(**kw))


def _llama_class():
    try:
        from llama_ffi import Llama
    except ImportError:
        from llama_ffi.llama import Llama
    return Llama


def load(p: dict) -> dict:
    """Seconds for one model load (``mode`` "model") or one ``Llama(...)`` (weights + context)."""
    from llama_ffi import load_library

    load_library()  # the library itself is not part of the figure
    if p["mode"] == "model":
        t0 = time.perf_counter()
        model = _model(p)
        elapsed = time.perf_counter() - t0
        model.close()
    else:
        Llama = _llama_class()
        t0 = time.perf_counter()
        llm = Llama(p["model"], **llama_kwargs(p))
        elapsed = time.perf_counter() - t0
        llm.close()
    return {"samples": [elapsed]}


def pp(p: dict) -> dict:
    """Prompt processing: ``n_prompt`` random tokens in one Context.decode, as llama-bench does."""
    import numpy as np

    from llama_ffi import Batch

    n = p["n_prompt"]
    with _model(p) as model, _context(model, p, n_ctx=max(p["n_ctx"], n), n_batch=n,
                                       n_ubatch=min(n, 512)) as ctx:
        tokens = np.random.default_rng(0).integers(0, len(model.vocab), n).astype(np.int32)
        batch = Batch(n)
        samples = []
        for i in range(p["reps"] + 1):  # the first run warms up
            ctx.memory_clear()
            batch.clear()
            batch.add(tokens, 0, 0, logits="last")
            t0 = time.perf_counter()
            ctx.decode(batch)
            ctx.synchronize()
            if i:
                samples.append(n / (time.perf_counter() - t0))
    return {"samples": samples}


def tg_loop(p: dict) -> dict:
    """The bare hot loop: TokenLoop with a greedy chain, plus each token's piece."""
    from llama_ffi import Sampler, SamplerChain
    from llama_ffi.native.loop import TokenLoop

    with _model(p) as model, _context(model, p) as ctx, SamplerChain([Sampler.greedy()]) as chain:
        vocab = model.vocab
        prompt = vocab.tokenize(PROMPT)
        # backend: the chain samples inside the graph (on the GPU); else on the host
        loop = TokenLoop(ctx, chain, backend_sampling=bool(p.get("backend_sampling")))
        samples = []
        for i in range(p["reps"] + 1):
            ctx.memory_clear()
            chain.reset()
            loop.prefill(prompt)
            n = 0
            t0 = time.perf_counter()
            pieces = vocab.pieces
            for token in loop.run(p["n_gen"]):
                pieces[token]
                n += 1
            if i:
                samples.append(n / (time.perf_counter() - t0))
    return {"samples": samples}


def tg_completion(p: dict) -> dict:
    Llama = _llama_class()
    with Llama(p["model"], **llama_kwargs(p)) as llm:
        return completion_rates(llm, p["mode"], p["n_gen"], p["reps"])


def rss(p: dict) -> dict:
    """Load and generate like llama-simple does (same context size); the parent reads the peak RSS."""
    Llama = _llama_class()
    kw = llama_kwargs(p)
    n_prompt = p["n_prompt_tokens"]
    kw.update(n_ctx=n_prompt + p["n_gen"], n_batch=n_prompt, n_ubatch=n_prompt)
    with Llama(p["model"], **kw) as llm:
        out = llm.create_completion(PROMPT, max_tokens=p["n_gen"], temperature=0.0)
    return {"tokens": out["usage"]["completion_tokens"]}


def count_tokens(p: dict) -> dict:
    """Tokens in the benchmark prompt (a vocab-only load), so every RSS run sizes its context alike."""
    from llama_ffi import Model

    with Model.load(p["model"], vocab_only=True) as model:
        return {"n_prompt_tokens": len(model.vocab.tokenize(PROMPT))}


TASKS = {"count_tokens": count_tokens, "load": load, "pp": pp, "tg_loop": tg_loop, "tg_completion": tg_completion, "rss": rss}
