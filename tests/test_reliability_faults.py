"""Issue 7, faults: concurrent callers, cancellation mid-prefill and mid-decode, double close,
and interpreter exit with live objects and a running Engine."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from llama_ffi import CancelledError

REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["The capital of France is", "Water boils at", "My favourite colour is", "Two plus two is"]
GREEDY = {"max_tokens": 8, "temperature": 0.0}


def test_two_threads_on_one_llama_equal_sequential(llama):
    want = {p: llama.generate_text(p, **GREEDY) for p in PROMPTS}
    got: dict[str, str] = {}
    errors: list[BaseException] = []

    def worker(prompts):
        try:
            for _ in range(2):
                for p in prompts:
                    text = llama.generate_text(p, **GREEDY)
                    assert got.setdefault(p, text) == text
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(PROMPTS[i::2] + PROMPTS[::-1],)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and got == want


def test_cancel_mid_prefill_then_reuse(model_path):
    from llama_ffi import Llama

    with Llama(str(model_path), n_ctx=2048, n_batch=512, verbose=False) as llm:
        prompt = "alpha beta gamma delta " * 380  # ~1,500 tokens
        want = llm.generate_text("Hello", **GREEDY)
        cancel = threading.Event()
        timer = threading.Timer(0.05, cancel.set)
        timer.start()
        with pytest.raises(CancelledError, match="prompt"):
            llm.create_completion(prompt, cancel=cancel, **GREEDY)
        timer.join()
        assert 0 < llm.stats.last_prefill  # it had started
        assert len(llm._session.cache) < len(llm.tokenize(prompt.encode()))  # and had not finished
        assert llm.generate_text("Hello", **GREEDY) == want
        assert llm.generate_text(prompt[:200], **GREEDY)  # a prefix of the cancelled prompt is fine too


def test_cancel_mid_decode_then_reuse(llama):
    want = llama.generate_text("Once upon a time", **GREEDY)
    cancel = threading.Event()
    timer = threading.Timer(0.3, cancel.set)
    timer.start()
    eos = llama.token_eos()
    with pytest.raises(CancelledError, match="after"):
        llama.create_completion("Tell me a story.", max_tokens=400, temperature=0.8, logit_bias={eos: -100.0},
                                cancel=cancel)
    timer.join()
    assert 0 < llama.stats.generated_tokens
    stream = llama.create_completion("Tell me a story.", max_tokens=400, stream=True, cancel=cancel)
    with pytest.raises(CancelledError):  # already set: stops at the first token
        list(stream)
    assert llama.generate_text("Once upon a time", **GREEDY) == want


def test_engine_cancel_then_reuse(model):
    from llama_ffi import Engine

    with Engine(model, n_ctx=512, n_seq_max=2, n_batch=128) as engine:
        want = engine.complete_sync("Hello", max_tokens=6, sampling=_greedy()).text
        request = engine.submit("Tell me a story.", max_tokens=400)
        time.sleep(0.2)
        engine.cancel(request)
        assert engine.complete_sync("Hello", max_tokens=6, sampling=_greedy()).text == want


def _greedy():
    from llama_ffi import SamplingParams

    return SamplingParams(temperature=0.0)


def test_close_twice_everywhere(model_path):
    from llama_ffi import Context, ContextParams, Engine, Llama, Model

    llm = Llama(str(model_path), n_ctx=128, verbose=False)
    llm.close()
    llm.close()
    model = Model.load(model_path, n_gpu_layers=0)
    ctx = Context(model, ContextParams(n_ctx=128))
    engine = Engine(model, n_ctx=128, n_seq_max=1, n_batch=64)
    for obj in (engine, engine, ctx, ctx, model, model):  # the engine's context is closed by it, then model
        obj.close()
    assert "closed" in repr(llm) and "closed" in repr(ctx)


EXIT_SCRIPT = textwrap.dedent("""
    import sys, threading, time
    from llama_ffi import Context, ContextParams, Engine, Llama, Model, SamplingParams
    path = sys.argv[1]
    model = Model.load(path, n_gpu_layers=0)
    ctx = Context(model, ContextParams(n_ctx=256))
    llm = Llama(path, n_ctx=512, verbose=False)
    engine = Engine(path, n_ctx=1024, n_seq_max=2, n_batch=256, n_gpu_layers=0)
    no_eos = SamplingParams(temperature=0.8, logit_bias={llm.token_eos(): -100.0})
    engine.submit("Tell me a long story " * 20, max_tokens=900, sampling=no_eos)
    worker = threading.Thread(target=llm.generate, args=("Once upon a time",),
                              kwargs={"max_tokens": 400, "logit_bias": {llm.token_eos(): -100.0}}, daemon=True)
    worker.start()
    time.sleep(float(sys.argv[2]))
    print("exiting", flush=True)
""")


@pytest.mark.parametrize("delay", [0.0, 0.5, 1.5])
def test_interpreter_exit_with_live_objects_and_a_running_engine(model_path, tmp_path, delay):
    """Before the exit gate (native/_exit.py) this died with SIGSEGV: the engine thread was
    inside llama_decode while C++ static destructors ran."""
    script = tmp_path / "exit.py"
    script.write_text(EXIT_SCRIPT)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-W", "error::ResourceWarning", str(script), str(model_path), str(delay)],
                          capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "exiting" in proc.stdout
    assert time.monotonic() - start < 90
