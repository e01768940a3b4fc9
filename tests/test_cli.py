"""The llama-ffi command line: run, chat, info, and its exit codes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from llama_ffi.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": REPO}
    return subprocess.run([sys.executable, "-m", "llama_ffi.cli", *args], capture_output=True, text=True,
                          input=stdin, env=env, timeout=120, cwd=REPO)


def test_run_streams_the_chat_answer(model_path, llama):
    out = io.StringIO()
    code = main(["run", "Name one fruit.", "--model", str(model_path), "--temp", "0", "--max-tokens", "8",
                 "--n-ctx", "256", "--device", "cpu"], stdout=out)
    assert code == 0
    expected = llama.create_chat_completion([{"role": "user", "content": "Name one fruit."}], max_tokens=8,
                                            temperature=0)["choices"][0]["message"]["content"]
    assert out.getvalue() == expected + "\n"


def test_chat_keeps_history(model_path):
    out = io.StringIO()
    code = main(["chat", "--model", str(model_path), "--temp", "0", "--max-tokens", "4", "--n-ctx", "256",
                 "--system", "Be brief."], stdout=out, stdin=io.StringIO("Hello\n\nWhat did I say?\n/exit\n"))
    assert code == 0
    assert out.getvalue().count("\n") == 2  # two answers, one line each


def test_info_reports_metadata_devices_and_build(model_path):
    out = io.StringIO()
    assert main(["info", "--model", str(model_path)], stdout=out) == 0
    report = json.loads(out.getvalue())
    assert report["metadata"]["general.architecture"] == "llama"
    assert any(d["type"] == "cpu" for d in report["devices"])
    assert report["system"]["llama_version"] and "default" in report["chat_templates"]


@pytest.mark.parametrize("args", [[], ["run"], ["bogus"], ["run", "x", "--temp", "hot"], ["run", "x", "--device", "tpu"]])
def test_usage_errors_exit_2(args):
    result = cli(*args)
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_runtime_error_exits_1_without_traceback(tmp_path):
    result = cli("run", "hi", "--model", str(tmp_path / "missing.gguf"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "missing.gguf" in result.stderr
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all")
    result = cli("run", "hi", "--model", str(bad))
    assert result.returncode == 1 and "Traceback" not in result.stderr


def test_bad_numbers_are_runtime_errors(model_path):
    result = cli("run", "hi", "--model", str(model_path), "--temp", "-3", "--max-tokens", "2")
    assert result.returncode == 1 and "temperature" in result.stderr and "Traceback" not in result.stderr
