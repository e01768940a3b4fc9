#!/usr/bin/env python3
"""Soak: many short generations through Llama and through the Engine, watching RSS.

Usage: python scripts/soak.py [-n 1000] [--max-tokens 8] [--threads 1] [--model PATH]
                              [--only llama|engine] [--n-gpu-layers N]

RSS (VmRSS from /proc/self/status) is sampled every --every generations; growth is the
median of the last window of samples minus the median of the first (MiB), printed as JSON.
With layers on a GPU, the GPU memory this process holds (``nvidia-smi``'s per-process
figure) is sampled alongside and reported the same way.
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


def gpu_mib() -> float | None:
    """GPU memory held by this process (MiB, summed over GPUs), or None without nvidia-smi."""
    import os
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    rows = [line.split(",") for line in out.splitlines() if line.strip()]
    return float(sum(float(used) for pid, used in rows if int(pid) == os.getpid()))


def _growth(samples: list[float], window: int) -> float:
    return statistics.median(samples[-window:]) - statistics.median(samples[:window])


def soak(generate, n: int, every: int, window: int, gpu: bool = False) -> dict:
    samples, gpu_samples, start = [], [], time.perf_counter()
    for i in range(n):
        generate(i)
        if (i + 1) % every == 0:
            gc.collect()
            samples.append(rss_mib())
            if gpu:
                gpu_samples.append(gpu_mib())
    report = {"generations": n, "seconds": round(time.perf_counter() - start, 1),
              "rss_first_mib": round(samples[0], 1), "rss_last_mib": round(samples[-1], 1),
              "growth_mib": round(_growth(samples, window), 2), "samples_mib": [round(s, 1) for s in samples]}
    if gpu_samples and None not in gpu_samples:
        report.update(gpu_first_mib=gpu_samples[0], gpu_last_mib=gpu_samples[-1],
                      gpu_growth_mib=round(_growth(gpu_samples, window), 2), gpu_samples_mib=gpu_samples)
    return report


def prompt(i: int) -> str:
    return f"Request {i}: name a colour and a number below {i % 97 + 3}."


def run_llama(model: str, n: int, max_tokens: int, every: int, window: int, threads: int, ngl: int) -> dict:
    from llama_ffi import Llama

    with Llama(model, n_ctx=512, n_threads=threads, n_gpu_layers=ngl, verbose=False) as llm:
        def generate(i: int) -> None:
            if i % 2:
                llm.create_completion(prompt(i), max_tokens=max_tokens, seed=i)
            else:
                for _ in llm.create_chat_completion([{"role": "user", "content": prompt(i)}],
                                                    max_tokens=max_tokens, stream=True, seed=i):
                    pass
        return soak(generate, n, every, window, gpu=ngl != 0)


def run_engine(model: str, n: int, max_tokens: int, every: int, window: int, threads: int, ngl: int) -> dict:
    from llama_ffi import Engine

    with Engine(model, n_ctx=2048, n_seq_max=4, n_batch=512, n_gpu_layers=ngl, n_threads=threads) as engine:
        def generate(i: int) -> None:
            engine.complete_sync(prompt(i), max_tokens=max_tokens)
        return soak(generate, n, every, window, gpu=ngl != 0)


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
    p.add_argument("--n-gpu-layers", type=int, default=0, help="layers on the GPU (-1: all); GPU memory is then tracked")
    args = p.parse_args(argv)
    window = max(1, min(args.window, args.n // args.every // 2 or 1))
    report = {"model": Path(args.model).name, "max_tokens": args.max_tokens, "every": args.every,
              "window_samples": window, "threads": args.threads, "n_gpu_layers": args.n_gpu_layers}
    for name, fn in (("llama", run_llama), ("engine", run_engine)):
        if args.only in (None, name):
            report[name] = fn(args.model, args.n, args.max_tokens, args.every, window, args.threads,
                              args.n_gpu_layers)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
