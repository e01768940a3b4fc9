"""Workloads that other issues will add. Each row says "not implemented yet" until the code
it needs exists; where llama.cpp's own tool gives the baseline today, that row is measured."""

from __future__ import annotations

import importlib.util

from . import native
from .runs import row
from .stats import Result


def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _pending(module: str, what: str) -> str:
    if _exists(module):
        return f"not implemented yet: {module} exists, the harness workload for {what} is still to write"
    return f"not implemented yet (needs {module})"


def w_concurrent(s: dict) -> list[Result]:
    parallel = [8, 32, 64, 128]  # 128: does throughput still grow past 64?
    n_gen = s["n_gen_concurrent"]
    from . import serving  # implemented in scripts/bench/serving.py

    def ours(n: int, **extra):
        return lambda: serving.child("concurrent", serving.engine_params(s, parallel=n, n_gen=n_gen, **extra))
    rows = [row(f"concurrent/ours-{n}", f"concurrent {n}",
                f"llama_ffi engine, {n} requests x {n_gen} tokens (aggregate, prefill included)", ours(n),
                baseline=f"concurrent/batched-{n}") for n in parallel]
    rows.append(row("concurrent/ours-8-one-at-a-time", "concurrent 8",
                    f"llama_ffi engine, 8 requests x {n_gen} tokens, one at a time", ours(8, sequential=True),
                    baseline="concurrent/ours-8"))
    speeds: dict[int, list[float]] = {n: [] for n in parallel}
    failure: list[Exception] = []

    def batched(n: int):
        def measure() -> dict:  # one llama-batched-bench run per repeat covers all three rows
            if failure:
                raise failure[0]
            if not speeds[n]:
                try:
                    for _ in range(s["reps_concurrent"]):
                        for k, v in native.batched_bench(s, n_prompt=32, n_gen=n_gen, parallel=parallel).items():
                            speeds[k].append(v)
                except Exception as exc:
                    failure.append(exc)
                    raise
            return {"samples": speeds[n]}
        return measure
    rows += [row(f"concurrent/batched-{n}", f"concurrent {n}",
                 f"llama-batched-bench {n} sequences, TG aggregate (no sampling)", batched(n))
             for n in parallel]
    return rows


def w_server(s: dict) -> list[Result]:
    from . import serving  # implemented in scripts/bench/serving.py

    n, n_gen, reps = 64, s["n_gen_concurrent"], s["reps_concurrent"]
    # The peer at its best documented flags (--backend-sampling samples in the graph, as we
    # do on a GPU) is the baseline; plain -kvu stays for comparison with earlier figures.
    best = "server/llama-server-bs"
    return [row("server/ours", "server", f"llama_ffi server, {n} concurrent /v1/completions x {n_gen} tokens",
                lambda: serving.measure_server("ours", s, n, n_gen, reps), baseline=best),
            row("server/ours-streams", "server", f"llama_ffi server --no-kv-unified, {n} concurrent /v1/completions "
                f"x {n_gen} tokens", lambda: serving.measure_server("ours-streams", s, n, n_gen, reps),
                baseline=best),
            row(best, "server", f"llama-server -np {n} -kvu --backend-sampling, {n} concurrent x {n_gen} tokens",
                lambda: serving.measure_server("lcpp-bs", s, n, n_gen, reps)),
            row("server/llama-server", "server", f"llama-server -np {n} -kvu, {n} concurrent x {n_gen} tokens",
                lambda: serving.measure_server("lcpp", s, n, n_gen, reps))]


def w_prefix(s: dict) -> list[Result]:
    from . import serving  # implemented in scripts/bench/serving.py

    params = serving.engine_params(s, parallel=64, n_gen=16 if s["quick"] else 32)
    return [row("prefix/ours", "shared prefix", "llama_ffi engine, 64 requests sharing a 1000-token prefix",
                lambda: serving.child("prefix", params))]


def w_embeddings(s: dict) -> list[Result]:
    from .embeddings import w_embeddings as measured

    return measured(s)  # implemented in scripts/bench/embeddings.py


def w_json_schema(s: dict) -> list[Result]:
    from .constrained import w_json

    return w_json(s)  # implemented in scripts/bench/constrained.py
