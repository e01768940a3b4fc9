"""Run each atheris harness in tests/fuzz/ for a bounded time (FUZZ_SECONDS, 10 by default).

A harness fails when its target raises anything other than the documented error type
(GrammarError, ModelLoadError, TemplateError), or hangs past libFuzzer's -timeout. Run them
longer by hand: ``python tests/fuzz/fuzz_gbnf.py -max_total_time=600``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris")

FUZZ = Path(__file__).resolve().parent / "fuzz"
HARNESSES = sorted(p.stem for p in FUZZ.glob("fuzz_*.py"))
SECONDS = int(os.environ.get("FUZZ_SECONDS", "10"))


def test_every_harness_is_listed():
    assert HARNESSES == ["fuzz_gbnf", "fuzz_gguf", "fuzz_json_schema", "fuzz_template"]


@pytest.mark.slow
@pytest.mark.parametrize("harness", HARNESSES)
def test_fuzz_harness(harness, tmp_path):
    cmd = [sys.executable, str(FUZZ / f"{harness}.py"), f"-max_total_time={SECONDS}", "-timeout=20",
           "-rss_limit_mb=3072", f"-artifact_prefix={tmp_path}/", "-print_final_stats=1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=SECONDS + 120, cwd=tmp_path)
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-")))
    assert proc.returncode == 0 and not crashes, f"{crashes}\n{proc.stderr[-4000:]}"
    assert "stat::number_of_executed_units" in proc.stderr
