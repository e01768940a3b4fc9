"""Turn child runs into Result rows; a failure becomes a row with status "error", never a crash."""

from __future__ import annotations

import sys
import time
from typing import Callable

from . import proc
from .native import ToolMissing
from .stats import Result, skipped


def progress(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def row(key: str, workload: str, name: str, measure: Callable[[], dict], *, unit: str = "t/s",
        baseline: str | None = None, skip: str | None = None) -> Result:
    """``measure()`` returns {"samples": [...], "note": ...}; exceptions become error rows."""
    higher = unit == "t/s"
    if skip:
        return skipped(key, workload, name, unit, skip, higher_is_better=higher, baseline=baseline)
    progress(f"{workload}: {name}")
    t0 = time.perf_counter()
    try:
        got = measure()
    except ToolMissing as exc:
        return skipped(key, workload, name, unit, str(exc), higher_is_better=higher, baseline=baseline)
    except proc.WorkerError as exc:
        return skipped(key, workload, name, unit, str(exc)[-500:], higher_is_better=higher,
                       baseline=baseline, status="error")
    progress(f"  done in {time.perf_counter() - t0:.1f} s")
    return Result(key=key, workload=workload, name=name, unit=unit, higher_is_better=higher,
                  samples=list(got["samples"]), baseline=baseline, note=got.get("note", ""),
                  extra={k: v for k, v in got.items() if k not in ("samples", "note")})


def worker(task: str, params: dict, env: dict | None = None) -> Callable[[], dict]:
    """One child that measures ``params['reps']`` times itself."""
    return lambda: proc.run_worker(task, params, env=env)


def worker_each(task: str, params: dict, runs: int, env: dict | None = None) -> Callable[[], dict]:
    """``runs`` children, one sample each (load time: every run starts a fresh process)."""
    def measure() -> dict:
        samples = []
        for _ in range(runs):
            samples += proc.run_worker(task, params, env=env)["samples"]
        return {"samples": samples}
    return measure
