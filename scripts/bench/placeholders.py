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
    parallel = [8, 32, 64]
    n_gen = s["n_gen_concurrent"]
    rows = [row(f"concurrent/ours-{n}", f"concurrent {n}", f"llama_ffi engine, {n} sequences x {n_gen} tokens",
                lambda: {}, baseline=f"concurrent/batched-{n}",
                skip=_pending("llama_ffi.engine", "concurrent generation")) for n in parallel]
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
    return [row("server/ours", "server", "llama_ffi server, 64 concurrent requests", lambda: {},
                baseline="server/llama-server", skip=_pending("llama_ffi.server", "the server")),
            row("server/llama-server", "server", "llama-server -np 64 -kvu, 64 concurrent requests", lambda: {},
                skip="not implemented yet (needs an HTTP load generator in the harness)")]


def w_prefix(s: dict) -> list[Result]:
    return [row("prefix/ours", "shared prefix", "llama_ffi engine, requests sharing a long prefix",
                lambda: {}, skip=_pending("llama_ffi.engine", "shared prefixes"))]


def w_embeddings(s: dict) -> list[Result]:
    from .embeddings import w_embeddings as measured

    return measured(s)  # implemented in scripts/bench/embeddings.py


def w_json_schema(s: dict) -> list[Result]:
    return [row("json/ours", "json-schema", "llama_ffi create_completion, JSON-schema constrained", lambda: {},
                baseline="json/ours-free", skip=_pending("llama_ffi.grammar.json_schema", "constrained output")),
            row("json/ours-free", "json-schema", "llama_ffi create_completion, unconstrained", lambda: {},
                skip="not implemented yet")]
