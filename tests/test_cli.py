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


# --- help, delegation and exit statuses of every command ------------------------------------
COMMANDS = ["run", "chat", "info", "tokenize", "bench", "quantize", "download", "rpc-server"]


def test_top_level_help_documents_commands_and_exit_statuses():
    result = cli("--help")
    assert result.returncode == 0
    for word in [*COMMANDS, "serve", "exit status", "130", "usage error", "runtime error"]:
        assert word in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_examples(command):
    result = cli(command, "--help")
    assert result.returncode == 0 and result.stderr == ""
    assert "examples:" in result.stdout
    assert f"llama-ffi {command}" in result.stdout


def test_interrupt_exits_130(monkeypatch, capsys):
    from llama_ffi.cli import tokens

    def interrupted(*_args):
        raise KeyboardInterrupt

    monkeypatch.setattr(tokens, "_tokenize", interrupted)
    assert main(["tokenize", "x"]) == 130
    assert "interrupted" in capsys.readouterr().err


# --- tokenize ------------------------------------------------------------------------------
def test_tokenize_ids_pieces_json_and_stdin(model_path, llama):
    expected = llama.tokenize(b"Hello, world")
    out = io.StringIO()
    assert main(["tokenize", "Hello, world", "--ids", "--model", str(model_path)], stdout=out) == 0
    assert [int(t) for t in out.getvalue().split()] == expected
    out = io.StringIO()
    assert main(["tokenize", "--json", "--model", str(model_path)], stdout=out, stdin=io.StringIO("Hello, world")) == 0
    rows = json.loads(out.getvalue())
    assert [r["id"] for r in rows] == expected and "".join(r["piece"] for r in rows).endswith("Hello, world")
    out = io.StringIO()
    assert main(["tokenize", "Hello", "--pieces", "--no-bos", "--model", str(model_path)], stdout=out) == 0
    assert out.getvalue() == "'Hello'\n"
    special = io.StringIO()
    assert main(["tokenize", "<|im_start|>", "--ids", "--special", "--no-bos", "--model", str(model_path)],
                stdout=special) == 0
    assert len(special.getvalue().split()) == 1  # one control token, not its characters


def test_tokenize_usage_error():
    result = cli("tokenize", "x", "--ids", "--json")
    assert result.returncode == 2 and "not allowed with" in result.stderr


# --- bench ---------------------------------------------------------------------------------
def test_bench_reports_prompt_and_generation_speed(model_path):
    out = io.StringIO()
    args = ["bench", "--model", str(model_path), "-p", "16", "-n", "4", "-r", "1", "--threads", "2"]
    assert main([*args, "--json"], stdout=out) == 0
    report = json.loads(out.getvalue())
    assert [r["test"] for r in report["results"]] == ["pp16", "tg4"]
    assert all(r["tokens_per_s"] > 0 for r in report["results"]) and report["setup"]["devices"] == "CPU"
    out = io.StringIO()
    assert main([*args, "-n", "0"], stdout=out) == 0
    assert "pp16" in out.getvalue() and "tg" not in out.getvalue()


def test_bench_usage_errors():
    assert cli("bench", "-p", "0", "-n", "0").returncode == 2
    assert "scripts.bench" in cli("bench", "--help").stdout


# --- quantize ------------------------------------------------------------------------------
def test_quantize_writes_a_loadable_model(model_path, tmp_path):
    out = io.StringIO()
    dst = tmp_path / "smol-Q8_0.gguf"
    assert main(["quantize", str(model_path), str(dst), "q8_0", "--allow-requantize", "--threads", "2"],
                stdout=out) == 0
    assert str(dst) in out.getvalue() and "Q8_0" in out.getvalue()
    info = io.StringIO()
    assert main(["info", "--model", str(dst)], stdout=info) == 0
    assert json.loads(info.getvalue())["metadata"]["general.file_type"] == "7"


def test_quantize_errors_are_clean(model_path, tmp_path):
    result = cli("quantize", str(model_path), str(tmp_path / "x.gguf"), "Q4_0")  # already quantized
    assert result.returncode == 1 and "allow_requantize" in result.stderr and "Traceback" not in result.stderr
    result = cli("quantize", str(model_path), str(tmp_path / "x.gguf"), "Q9_9")
    assert result.returncode == 2 and "unknown quantization type" in result.stderr
    result = cli("quantize", "--list")
    assert result.returncode == 0 and "Q4_K_M" in result.stdout.split()


# --- download (against the local stand-in of tests/test_llama_hub.py) ----------------------
from test_llama_hub import hub  # noqa: E402, F401  (the fixture, imported to share it)


def test_download_prints_the_path_and_stays_quiet(hub, tmp_path):  # noqa: F811
    result = cli("download", "test-org/smol-GGUF", "*Q4_1.gguf", "--endpoint", hub, "--cache-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    path = result.stdout.strip()
    assert path.endswith("smol-Q4_1.gguf") and path.startswith(str(tmp_path)) and os.path.getsize(path) > 1 << 20
    assert result.stderr == ""  # no progress bar when nobody watches


def test_download_failures_are_one_line(hub, tmp_path):  # noqa: F811
    result = cli("download", "test-org/smol-GGUF", "*Q8_0.gguf", "--endpoint", hub, "--cache-dir", str(tmp_path))
    assert result.returncode == 1 and "no file matches" in result.stderr and "Traceback" not in result.stderr
    result = cli("download", "test-org/missing", "*.gguf", "--endpoint", hub, "--cache-dir", str(tmp_path))
    assert result.returncode == 1 and result.stderr.startswith("llama-ffi: error:") and "Traceback" not in result.stderr
    assert cli("download", "only-one-arg").returncode == 2


# --- serve and rpc-server hand their arguments over ----------------------------------------
def test_serve_delegates_to_the_server_main(monkeypatch):
    import types

    seen = []
    fake = types.ModuleType("llama_ffi.server")
    fake.main = lambda argv: seen.append(argv) or 3
    monkeypatch.setitem(sys.modules, "llama_ffi.server", fake)
    assert main(["serve", "--port", "8001", "--help"]) == 3
    assert seen == [["--port", "8001", "--help"]]


def test_serve_without_the_server_says_what_to_install(monkeypatch, capsys):
    import types

    monkeypatch.setitem(sys.modules, "llama_ffi.server", None)  # as if the package were absent
    assert main(["serve"]) == 1
    assert "pip install 'llama-ffi[server]'" in capsys.readouterr().err
    fake = types.ModuleType("llama_ffi.server")

    def needs_fastapi(argv):
        import fastapi  # noqa: F401

    fake.main = needs_fastapi
    monkeypatch.setitem(sys.modules, "llama_ffi.server", fake)
    monkeypatch.setitem(sys.modules, "fastapi", None)
    assert main(["serve"]) == 1
    err = capsys.readouterr().err
    assert "fastapi" in err and "pip install 'llama-ffi[server]'" in err and err.count("\n") == 1


def test_rpc_server_delegates_and_refuses_remote_without_consent():
    result = cli("rpc-server", "--host", "0.0.0.0", "--port", "50999")
    assert result.returncode == 2 and "allow_remote" in result.stderr and "Traceback" not in result.stderr
    result = cli("rpc-server", "--help")
    assert result.returncode == 0 and "--allow-remote" in result.stdout and "llama-ffi rpc-server" in result.stdout
