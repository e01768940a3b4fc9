"""llama.cpp's own tools as baselines: build the command line, run, parse.

Each tool runs as its own process; a missing tool is reported, not fatal.
"""

from __future__ import annotations

import json
import os

from . import proc
from .env import VENDOR_BIN, VENDOR_LIB


class ToolMissing(RuntimeError):
    pass


def tool(name: str) -> str:
    path = VENDOR_BIN / name
    if not path.exists():
        raise ToolMissing(f"{name} not built: run `python3 scripts/build_libllama.py --tools bench`")
    return str(path)


def _env() -> dict:
    """Tools find vendor/lib by RPATH. $BENCH_TOOL_LIB_PATH adds folders for what the tools
    link besides (libllama-*-impl.so, libllama-common.so: scripts/build_libllama.py does not
    copy those yet, so point this at its build folder's bin/)."""
    extra = [p for p in (os.environ.get("BENCH_TOOL_LIB_PATH", ""),) if p]
    if not extra:
        return dict(os.environ)
    return dict(os.environ, LD_LIBRARY_PATH=os.pathsep.join([str(VENDOR_LIB), *extra]))


def _run(cmd: list[str], name: str) -> proc.Completed:
    done = proc.run(cmd, env=_env(), timeout=900)
    if done.returncode != 0:
        hint = ""
        if "error while loading shared libraries" in done.stderr:
            hint = " (set BENCH_TOOL_LIB_PATH to the folder holding the missing library)"
        raise proc.WorkerError(f"{name} {done.describe()}{hint}")
    return done


def _fa(flash_attn: bool) -> str:
    return "on" if flash_attn else "off"


def llama_bench(s: dict, *, n_prompt: int, n_gen: int, reps: int) -> list[float]:
    """t/s of each repetition (llama-bench's samples_ts): ``-p N -n 0`` or ``-p 0 -n N``."""
    cmd = [tool("llama-bench"), "-m", s["model"], "-p", str(n_prompt), "-n", str(n_gen), "-r", str(reps),
           "-t", str(s["threads"]), "-ngl", str(s["n_gpu_layers"]), "-fa", _fa(s["flash_attn"]),
           "-ub", str(min(512, max(n_prompt, 1))), "-o", "json"]
    done = _run(cmd, "llama-bench")
    rows = json.loads(done.stdout)
    return [float(x) for x in rows[0]["samples_ts"]]


def batched_bench(s: dict, *, n_prompt: int, n_gen: int, parallel: list[int]) -> dict[int, float]:
    """TG t/s (aggregate over the sequences) for each number of parallel sequences, one run."""
    n_ctx = max(parallel) * (n_prompt + n_gen) + 16
    cmd = [tool("llama-batched-bench"), "-m", s["model"], "-c", str(n_ctx), "-b", "2048", "-ub", "512",
           "-npp", str(n_prompt), "-ntg", str(n_gen), "-npl", ",".join(map(str, parallel)),
           "-t", str(s["threads"]), "-tb", str(s["threads"]), "-ngl", str(s["n_gpu_layers"]),
           "-fa", _fa(s["flash_attn"]), "--output-format", "jsonl"]
    done = _run(cmd, "llama-batched-bench")
    speeds = {}
    for line in (done.stdout + "\n" + done.stderr).splitlines():
        line = line.strip()
        if line.startswith("{") and '"speed_tg"' in line:
            row = json.loads(line)
            speeds[int(row["pl"])] = float(row["speed_tg"])
    if not speeds:
        raise proc.WorkerError(f"llama-batched-bench printed no results: {done.stdout[-300:]}")
    return speeds


def llama_simple_rss(s: dict, *, prompt: str, n_gen: int) -> float:
    """Peak RSS (MiB) of llama-simple loading the model and generating ``n_gen`` tokens."""
    cmd = [tool("llama-simple"), "-m", s["model"], "-n", str(n_gen), "-ngl", str(s["n_gpu_layers"]), prompt]
    done = _run(cmd, "llama-simple")
    return done.maxrss_mib
