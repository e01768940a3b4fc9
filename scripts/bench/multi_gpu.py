"""One model over several GPUs: ``python -m scripts.bench.multi_gpu MODEL [N_GEN]``.

For each split (one GPU; layers across all GPUs; rows across all GPUs) loads the model,
checks the greedy tokens against the one-GPU run, and measures prompt processing (512
tokens) and generation (greedy, N_GEN tokens, one sequence) plus the aggregate of the
engine with 64 sequences. Then data parallelism: an ``EnginePool`` of one engine per GPU
against one engine, 128 requests x 128 tokens. Prints Markdown tables. Run on a machine with
two or more GPUs.
"""

from __future__ import annotations

import asyncio
import sys
import time

import numpy as np

from llama_ffi import Batch, Context, ContextParams, Model, Sampler, SamplerChain, devices
from llama_ffi.engine import Engine, EngineConfig, EnginePool
from llama_ffi.native.loop import TokenLoop
from llama_ffi.generation import SamplingParams

SPLITS = {
    "one GPU": {"split_mode": "none", "main_gpu": 0},
    "layer split": {"split_mode": "layer"},
    "row split": {"split_mode": "row"},
}


def measure(model_path: str, n_gen: int, params: dict) -> dict:
    with Model.load(model_path, n_gpu_layers=-1, **params) as model:
        vocab = model.vocab
        rng = np.random.default_rng(0)
        prompt = rng.integers(200, vocab.n_tokens - 200, 512).astype(np.int32)
        with Context(model, ContextParams(n_ctx=2048, n_batch=512, flash_attn="on")) as ctx:
            batch = Batch(512)
            batch.add(prompt, 0, logits="last")
            ctx.decode(batch)  # warm-up
            ctx.memory_clear()
            start = time.perf_counter()
            ctx.decode(batch)
            ctx.synchronize()
            pp = 512 / (time.perf_counter() - start)
            ctx.memory_clear()
            with SamplerChain([Sampler.greedy()]) as chain:
                loop = TokenLoop(ctx, chain)
                loop.prefill(vocab.tokenize("The capital of France is"))
                start = time.perf_counter()
                tokens = list(loop.run(n_gen))
                tg = len(tokens) / (time.perf_counter() - start)
        with Engine(model, EngineConfig(n_ctx=64 * 160 + 64, n_seq_max=64, flash_attn="on")) as engine:
            crowd_rate(engine, vocab, 8, 8)  # warm-up
            agg = crowd_rate(engine, vocab, 64)
    return {"pp512": pp, "tg": tg, "tokens": tokens, "engine64": agg}


def crowd_rate(front, vocab, n: int, n_gen: int = 128) -> float:
    """Aggregate generated tokens/s of ``n`` concurrent requests through an engine or pool."""
    rng = np.random.default_rng(1)
    ban = {t: -100.0 for t in vocab.eog_tokens}
    prompts = [rng.integers(200, vocab.n_tokens - 200, 32).tolist() for _ in range(n)]

    async def crowd():
        return await asyncio.gather(*(front.complete(p, max_tokens=n_gen, sampling=SamplingParams(
            seed=i, logit_bias=ban)) for i, p in enumerate(prompts)))
    start = time.perf_counter()
    done = asyncio.run(crowd())
    return sum(len(c.tokens) for c in done) / (time.perf_counter() - start)


def data_parallel(model_path: str, n_gpus: int, n: int = 128) -> None:
    config = dict(n_ctx=64 * 160 + 64, n_seq_max=64, flash_attn="on")
    models = [Model.load(model_path, n_gpu_layers=-1, split_mode="none", main_gpu=i) for i in range(n_gpus)]
    try:
        with Engine(models[0], EngineConfig(**config)) as one:
            crowd_rate(one, models[0].vocab, 8, 8)  # warm-up
            single = crowd_rate(one, models[0].vocab, n)
        with EnginePool([Engine(m, EngineConfig(**config)) for m in models]) as pool:
            crowd_rate(pool, models[0].vocab, 8, 8)
            both = crowd_rate(pool, models[0].vocab, n)
    finally:
        for m in models:
            m.close()
    print(f"\n| data parallel, {n} requests x 128 tokens | t/s |\n|---|---:|")
    print(f"| one engine on GPU 0 (64 sequences) | {single:.0f} |")
    print(f"| EnginePool, one engine per GPU ({n_gpus} x 64 sequences) | {both:.0f} ({both / single:.2f}x) |", flush=True)


def main() -> None:
    model_path = sys.argv[1]
    n_gen = int(sys.argv[2]) if len(sys.argv) > 2 else 128
    gpus = [d for d in devices() if d.type == "gpu"]
    print(f"GPUs: {', '.join(f'{d.name} ({d.description})' for d in gpus)}; model {model_path}")
    print("| split | pp512 t/s | tg t/s (1 seq, greedy) | engine 64 x 128 t/s | greedy tokens vs one GPU |")
    print("|---|---:|---:|---:|---|")
    reference = None
    for name, params in SPLITS.items():
        if name != "one GPU" and len(gpus) < 2:
            continue
        r = measure(model_path, n_gen, params)
        if reference is None:
            reference, same = r["tokens"], "(reference)"
        else:
            equal = next((i for i, (a, b) in enumerate(zip(r["tokens"], reference)) if a != b), len(reference))
            same = "identical" if equal == len(reference) else f"first {equal} of {len(reference)} equal"
        print(f"| {name} | {r['pp512']:.0f} | {r['tg']:.1f} | {r['engine64']:.0f} | {same} |", flush=True)
    if len(gpus) >= 2:
        data_parallel(model_path, len(gpus))


if __name__ == "__main__":
    main()
