"""One function per workload. Each takes the run settings and returns Result rows: ours
first, then the baselines they are compared with (``baseline=`` names a row's key).

Settings (a dict, see cli.settings): model, threads, n_gpu_layers, flash_attn, n_ctx,
n_batch, n_prompt, n_gen, reps, runs (fresh processes for import/load), lcpp_env or
lcpp_skip, llama_skip, quick.
"""

from __future__ import annotations

import subprocess
import sys
import time

from . import native, proc
from .gen import MODES, PROMPT
from .runs import row, worker, worker_each
from .stats import Result

LCPP = "llama-cpp-python 0.3.36"


def _import_wall(stmt: str, runs: int, env: dict | None) -> dict:
    """Wall time of ``python -c STMT`` in fresh processes (after one discarded warm-up run)."""
    cmd = [sys.executable, "-c", stmt]
    samples = []
    for i in range(runs + 1):
        t0 = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - t0
        if done.returncode != 0:
            raise proc.WorkerError(f"`python -c {stmt!r}` failed: {done.stderr.strip()[-400:]}")
        if i:
            samples.append(elapsed)
    return {"samples": samples}


def w_import(s: dict) -> list[Result]:
    first_use = "import llama_ffi; llama_ffi.load_library(); from llama_ffi.llama import Llama"
    return [
        row("import/ours", "import", "python -c 'import llama_ffi' (lazy: no library yet)",
            lambda: _import_wall("import llama_ffi", s["runs"], None), unit="s", baseline="import/lcpp"),
        row("import/ours-use", "import", "python -c: import llama_ffi + Llama class + load libllama",
            lambda: _import_wall(first_use, s["runs"], None), unit="s", baseline="import/lcpp",
            skip=s["llama_skip"]),
        row("import/lcpp", "import", f"python -c 'import llama_cpp' ({LCPP}, loads libllama)",
            lambda: _import_wall("import llama_cpp", s["runs"], s["lcpp_env"]), unit="s", skip=s["lcpp_skip"]),
        row("import/python", "import", "python -c 'import numpy' (interpreter + numpy, for reference)",
            lambda: _import_wall("import numpy", s["runs"], None), unit="s"),
    ]


def w_load(s: dict) -> list[Result]:
    return [
        row("load/ours-model", "load", "llama_ffi Model.load (weights only)",
            worker_each("ours.load", dict(s, mode="model"), s["runs"]), unit="s"),
        row("load/ours-llama", "load", "llama_ffi Llama(...) (weights + context)",
            worker_each("ours.load", dict(s, mode="llama"), s["runs"]), unit="s", baseline="load/lcpp",
            skip=s["llama_skip"]),
        row("load/lcpp", "load", f"{LCPP} Llama(...) (weights + context)",
            worker_each("lcpp.load", s, s["runs"], env=s["lcpp_env"]), unit="s", skip=s["lcpp_skip"]),
    ]


def w_pp512(s: dict) -> list[Result]:
    n = s["n_prompt"]
    return [
        row("pp/ours", f"pp{n}", f"llama_ffi Context.decode, {n} random tokens",
            worker("ours.pp", s), baseline="pp/llama-bench"),
        row("pp/llama-bench", f"pp{n}", f"llama-bench -p {n} -n 0",
            lambda: {"samples": native.llama_bench(s, n_prompt=n, n_gen=0, reps=s["reps"])}),
    ]


def _batched_one(s: dict) -> dict:
    return {"samples": [native.batched_bench(s, n_prompt=32, n_gen=s["n_gen"], parallel=[1])[1]
                        for _ in range(s["reps"])]}


def w_tg(s: dict) -> list[Result]:
    n, wl = s["n_gen"], f"tg{s['n_gen']}"
    rows = [
        row("tg/ours-loop", wl, "llama_ffi TokenLoop: decode + greedy sample on the host + piece",
            worker("ours.tg_loop", s), baseline="tg/batched-bench"),
        row("tg/ours-loop-backend", wl, "llama_ffi TokenLoop: decode + greedy sample in the graph + piece",
            worker("ours.tg_loop", dict(s, backend_sampling=True)), baseline="tg/batched-bench"),
    ]
    for mode in MODES:
        rows.append(row(f"tg/ours-{mode}", wl, f"llama_ffi Llama.create_completion {mode}",
                        worker("ours.tg_completion", dict(s, mode=mode)), baseline=f"tg/lcpp-{mode}",
                        skip=s["llama_skip"]))
    rows += [
        row("tg/llama-bench", wl, f"llama-bench -p 0 -n {n} (decode only, no sampling)",
            lambda: {"samples": native.llama_bench(s, n_prompt=0, n_gen=n, reps=s["reps"])}),
        row("tg/batched-bench", wl, f"llama-batched-bench 1 sequence, TG {n} (no sampling)",
            lambda: _batched_one(s), baseline="tg/llama-bench"),
        row("tg/lcpp-generate", wl, f"{LCPP} Llama.generate greedy + detokenize",
            worker("lcpp.tg_generate", s, env=s["lcpp_env"]), baseline="tg/llama-bench", skip=s["lcpp_skip"]),
    ]
    for mode in MODES:
        rows.append(row(f"tg/lcpp-{mode}", wl, f"{LCPP} create_completion {mode}",
                        worker("lcpp.tg_completion", dict(s, mode=mode), env=s["lcpp_env"]),
                        baseline="tg/llama-bench", skip=s["lcpp_skip"]))
    return rows


def _peaks(task: str, s: dict, env: dict | None) -> dict:
    peaks = [proc.run_worker(task, s, env=env)["maxrss_mib"] for _ in range(s["runs_rss"])]
    return {"samples": peaks}


def w_rss(s: dict) -> list[Result]:
    """Peak RSS of a load + greedy generation, and how much of it lies beyond what the C
    program llama-simple needs for the same model and context (the library's own buffers)."""
    n = s["n_gen"]
    try:
        s = dict(s, n_prompt_tokens=proc.run_worker("ours.count_tokens", s)["n_prompt_tokens"])
    except proc.WorkerError as exc:
        return [row("rss/ours", "rss", "llama_ffi", lambda: {}, unit="MiB", skip=f"error: {exc}")]
    simple = row("rss/simple", "rss", f"llama-simple -n {n} peak RSS (library buffers + a C program)",
                 lambda: {"samples": [native.llama_simple_rss(s, prompt=PROMPT, n_gen=n)
                                      for _ in range(s["runs_rss"])]}, unit="MiB")
    ours = row("rss/ours", "rss", "llama_ffi Llama: load + generate, peak RSS",
               lambda: _peaks("ours.rss", s, None), unit="MiB", skip=s["llama_skip"])
    lcpp = row("rss/lcpp", "rss", f"{LCPP} Llama: load + generate, peak RSS",
               lambda: _peaks("lcpp.rss", s, s["lcpp_env"]), unit="MiB", skip=s["lcpp_skip"])
    python = row("rss/python", "rss", "python3 + numpy alone, peak RSS (for reference)",
                 lambda: {"samples": [proc.run([sys.executable, "-c", "import numpy"]).maxrss_mib
                                      for _ in range(s["runs_rss"])]}, unit="MiB")
    rows = [simple, ours, lcpp, python]
    for key, name, full, base in (("rss/ours-extra", "llama_ffi: peak RSS beyond llama-simple", ours,
                                   "rss/lcpp-extra"),
                                  ("rss/lcpp-extra", f"{LCPP}: peak RSS beyond llama-simple", lcpp, None)):
        if full.samples and simple.samples:
            ref = simple.summary.median
            rows.append(Result(key=key, workload="rss", name=name, unit="MiB", higher_is_better=False,
                               samples=[x - ref for x in full.samples], baseline=base,
                               note="peak minus llama-simple's median peak"))
    return rows
