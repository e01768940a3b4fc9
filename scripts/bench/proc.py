"""Child processes: run one, time it, read its peak RSS, and speak the worker protocol.

A worker prints one line ``BENCH_RESULT {json}`` on stdout; anything else it prints (and
all of stderr) is kept only for error messages.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass

from .env import REPO

MARKER = "BENCH_RESULT "


class WorkerError(RuntimeError):
    """A child failed: non-zero exit, a signal, a timeout, or no result line."""


@dataclass
class Completed:
    returncode: int
    stdout: str
    stderr: str
    maxrss_mib: float  # peak resident set of the child (ru_maxrss)
    timed_out: bool = False

    def describe(self) -> str:
        if self.timed_out:
            why = "timed out"
        elif self.returncode < 0:
            why = f"killed by signal {signal.Signals(-self.returncode).name}"
        else:
            why = f"exit status {self.returncode}"
        tail = (self.stderr.strip() or self.stdout.strip())[-600:]
        return f"{why}: {tail}" if tail else why


def run(cmd: list[str], *, env: dict | None = None, timeout: float = 600, cwd=REPO) -> Completed:
    """Run ``cmd`` to completion; capture its output and its peak RSS (os.wait4)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=cwd, stdin=subprocess.DEVNULL)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timed_out = not timer.is_alive()
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Completed(proc.returncode, out.read().decode(errors="replace"),
                         err.read().decode(errors="replace"), usage.ru_maxrss / 1024, timed_out)


def child_env(extra: dict | None = None, pythonpath: list[str] | None = None) -> dict:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([*pythonpath, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra or {})
    return env


def run_worker(task: str, params: dict, *, env: dict | None = None, timeout: float = 600) -> dict:
    """Run ``python -m scripts.bench.worker TASK PARAMS`` and return its result dict.

    The dict gains ``maxrss_mib``, the child's peak RSS."""
    done = run([sys.executable, "-m", "scripts.bench.worker", task, json.dumps(params)],
               env=env, timeout=timeout)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(MARKER) and done.returncode == 0:
            result = json.loads(line[len(MARKER):])
            if "error" in result:
                raise WorkerError(result["error"])
            result["maxrss_mib"] = done.maxrss_mib
            return result
    raise WorkerError(f"worker {task} {done.describe()}")


def emit(result: dict) -> None:
    """Worker side: print the result line."""
    sys.stdout.write(MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()
