"""Where an engine step's time goes: ``python -m scripts.bench.engine_profile MODEL [N] [N_GEN]``.

Runs N concurrent requests of N_GEN tokens through ``Engine`` under several variants
(plain chains sampled in bulk on the host, or a llama.cpp chain per sequence in the graph
or on the host; greedy or temperature; an asyncio consumer or none)
and prints, per variant, aggregate tokens/s and the mean step split into llama_decode,
sampling (where a GPU is waited on) and the rest (Python: batch filling, events). A
diagnostic for the engine's per-step overhead, not a harness workload: read it next to
``python -m scripts.bench --workloads concurrent``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time

import numpy as np

from llama_ffi.engine import Engine, EngineConfig
from llama_ffi.generation import SamplingParams, batched

from .serving import _prompts


def _run(engine: Engine, n: int, n_gen: int, sampling, consumer: str) -> tuple[float, int]:
    ban = {t: -100.0 for t in engine.model.vocab.eog_tokens}
    prompts = [[7] + p for p in _prompts(engine, n, 32)]
    start = time.perf_counter()
    if consumer == "asyncio":
        async def one(i, prompt):
            count = 0
            async for event in engine.generate(prompt, max_tokens=n_gen, sampling=sampling(i, ban)):
                count += len(event.tokens)
            return count

        async def crowd():
            return sum(await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts))))
        tokens = asyncio.run(crowd())
    else:  # "none": events counted on the engine thread, the caller only waits
        done, counts = threading.Semaphore(0), [0] * n

        def sink_for(i):
            def sink(event):
                counts[i] += len(event.tokens)
                if event.finish_reason is not None:
                    done.release()
            return sink
        for i, p in enumerate(prompts):
            engine.submit(p, max_tokens=n_gen, sampling=sampling(i, ban), sink=sink_for(i))
        for _ in range(n):
            done.acquire()
        tokens = sum(counts)
    return time.perf_counter() - start, tokens


def _temp(i, ban):
    return SamplingParams(seed=i, logit_bias=ban)


def _greedy(i, ban):
    return SamplingParams(temperature=0, logit_bias=ban)


_CHAINS = {"batched_sampling": False}  # a llama.cpp chain per sequence
_BULK = {"batched_sampling": "all"}  # every plain chain sampled in numpy (one_thread: without the row pool)

VARIANTS = {
    # name: (EngineConfig overrides, sampling factory, consumer)
    "temp0.8 bulk asyncio": (_BULK, _temp, "asyncio"),
    "temp0.8 bulk one-thread asyncio": ({**_BULK, "one_thread": True}, _temp, "asyncio"),
    "temp0.8 bulk asyncio kv-streams": ({**_BULK, "kv_unified": False}, _temp, "asyncio"),
    "greedy bulk asyncio": ({}, _greedy, "asyncio"),
    "temp0.8 device-split asyncio": ({"backend_sampling": True, **_CHAINS}, _temp, "asyncio"),
    "temp0.8 device-split no-consumer": ({"backend_sampling": True, **_CHAINS}, _temp, "none"),
    "temp0.8 device-whole asyncio": ({"backend_sampling": True, "backend_chain": "whole", **_CHAINS}, _temp, "asyncio"),
    "temp0.8 device-split no-bias": ({"backend_sampling": True, **_CHAINS}, lambda i, ban: SamplingParams(seed=i),
                                     "asyncio"),
    "temp0.8 host-chains asyncio": ({"backend_sampling": False, **_CHAINS}, _temp, "asyncio"),
    "greedy device asyncio": ({"backend_sampling": True, **_CHAINS}, _greedy, "asyncio"),
    "greedy device asyncio kv-streams": ({"backend_sampling": True, "kv_unified": False, **_CHAINS}, _greedy, "asyncio"),
}


def decode_floor(model: str, n: int, n_gen: int, ngl: int, unified: bool) -> float:
    """Tokens/s of bare llama_decode steps (one token for each of n sequences, nothing
    sampled or read back but the last step's logits): the engine's ceiling with these
    context settings, comparable with llama-batched-bench's TG figure."""
    from llama_ffi import Batch, Context, ContextParams, Model

    with Model.load(model, n_gpu_layers=ngl) as m, Context(m, ContextParams(
            n_ctx=n * (40 + n_gen) + 64, n_batch=2048, n_ubatch=512, n_seq_max=n, kv_unified=unified,
            flash_attn="on")) as ctx:
        batch = Batch(2048)
        for seq in range(n):
            batch.add(list(range(100, 132)), 0, seq_id=seq, logits="last")
        ctx.decode(batch)
        ids = np.arange(n, dtype=np.int32)
        start = time.perf_counter()
        for step in range(n_gen):
            batch.clear()
            batch.add_tokens(np.full(n, 200, np.int32), np.full(n, 32 + step, np.int32), ids, 1)
            ctx.decode(batch)
        ctx.logits(0)  # waits for the last step
        return n * n_gen / (time.perf_counter() - start)


def main() -> None:
    model = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    n_gen = int(sys.argv[3]) if len(sys.argv) > 3 else 128
    only = os.environ.get("VARIANTS")
    ngl = int(os.environ.get("N_GPU_LAYERS", "99"))
    if os.environ.get("SWITCH_INTERVAL"):  # the GIL hand-over interval, seconds (default 0.005)
        sys.setswitchinterval(float(os.environ["SWITCH_INTERVAL"]))
    print("| variant | t/s | steps | step ms | decode ms | sample ms | other ms | wall/step ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, (overrides, sampling, consumer) in VARIANTS.items():
        if only and not any(word in name for word in only.split(",")):
            continue
        overrides = dict(overrides)
        batched._POOL[:] = [None] if overrides.pop("one_thread", False) else []
        engine = Engine(model, EngineConfig(n_ctx=n * (40 + n_gen) + 64, n_seq_max=n, n_gpu_layers=ngl,
                                            flash_attn="on", **overrides))
        try:
            _run(engine, 4, 8, sampling, consumer)  # warm-up
            before = engine.stats()
            wall, tokens = _run(engine, n, n_gen, sampling, consumer)
            after = engine.stats()
        finally:
            engine.close()
        d = {k: after[k] - before[k] for k in ("steps", "step_seconds", "decode_seconds", "sample_seconds")}
        steps = max(d["steps"], 1)
        other = d["step_seconds"] - d["decode_seconds"] - d["sample_seconds"]
        ms = [1000 * x / steps for x in (d["step_seconds"], d["decode_seconds"], d["sample_seconds"], other, wall)]
        print(f"| {name} | {tokens / wall:.0f} | {d['steps']} | " + " | ".join(f"{x:.2f}" for x in ms) + " |",
              flush=True)
    if not only:
        for unified in (True, False):
            rate = decode_floor(model, n, n_gen, ngl, unified)
            print(f"| bare llama_decode, {'unified cache' if unified else 'a stream per sequence'} | {rate:.0f} "
                  "| | | | | | |", flush=True)


if __name__ == "__main__":
    main()
