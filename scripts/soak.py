#!/usr/bin/env python3
"""Soak: many short generations through Llama and through the Engine, watching RSS.

Usage: python scripts/soak.py [-n 1000] [--max-tokens 8] [--threads 1] [--model PATH] [--only llama|engine]

RSS (VmRSS from /proc/self/status) is sampled every --every generations; growth is the
median of the last window of samples minus the median of the first (MiB), printed as JSON.
Prompts vary (a counter in the text) so prefix reuse, tokenization and sampling all run.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _growth(samples: list[float], window: int) -> float:
    return statistics.median(samples[-window:]) - statistics.median(samples[:window])


def soak(generate, n: int, every: int, window: int) -> dict:
    samples, start = [], time.perf_counter()
    for i in range(n):
        generate(i)
        if (i + 1) % every == 0:
            gc.collect()
            samples.append(rss_mib())
    return {"generations": n, "seconds": round(time.perf_counter() - start, 1),
            "rss_first_mib": round(samples[0], 1), "rss_last_mib": round(samples[-1], 1),
            "growth_mib": round(_growth(samples, window), 2), "samples_mib": [round(s, 1) for s in samples]}


def prompt(i: int) -> str:
    return f"Request {i}: name a colour and a number below {i % 97 + 3}."


def run_llama(model: str, n: int, max_tokens: int, every: int, window: int, threads: int) -> dict:
    from llama_ffi import Llama

    with Llama(model, n_ctx=512, n_threads=threads, verbose=False) as llm:
        def generate(i: int) -> None:
            if i % 2:
                llm.create_completion(prompt(i), max_tokens=max_tokens, seed=i)
            else:
                for _ in llm.create_chat_completion([{"role": "user", "content": prompt(i)}],
                                                    max_tokens=max_tokens, stream=True, seed=i):
                    pass
        return soak(generate, n, every, window)


def run_engine(model: str, n: int, max_tokens: int, every: int, window: int, threads: int) -> dict:
    from llama_ffi import Engine

    with Engine(model, n_ctx=2048, n_seq_max=4, n_batch=512, n_gpu_layers=0, n_threads=threads) as engine:
        def generate(i: int) -> None:
            engine.complete_sync(prompt(i), max_tokens=max_tokens)
        return soak(generate, n, every, window)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=1000, help="generations per API (default 1000)")
    p.add_argument("--max-tokens", type=int, default=8)
    p.add_argument("--every", type=int, default=100, help="sample RSS every N generations")
    p.add_argument("--window", type=int, default=3, help="samples per median window (first vs last)")
    p.add_argument("--model", default=str(REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    p.add_argument("--only", choices=("llama", "engine"))
    # 1 by default: on a shared machine llama.cpp's spinning workers lose their cores and a
    # generation takes 30x longer (measured: 12 s instead of 0.3 s on 2 busy cores).
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    window = max(1, min(args.window, args.n // args.every // 2 or 1))
    report = {"model": Path(args.model).name, "max_tokens": args.max_tokens, "every": args.every,
              "window_samples": window, "threads": args.threads}
    for name, fn in (("llama", run_llama), ("engine", run_engine)):
        if args.only in (None, name):
            report[name] = fn(args.model, args.n, args.max_tokens, args.every, window, args.threads)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
