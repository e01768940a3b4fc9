"""Ownership: any close order, double close, use after close, leaks warned, clean exit."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap

import pytest

from llama_ffi import ClosedError, Context, ContextParams, Model, Sampler, SamplerChain


def test_closing_the_model_closes_its_contexts_first(model_path):
    model = Model.load(model_path, n_gpu_layers=0)
    ctx = Context(model, ContextParams(n_ctx=128))
    model.close()
    assert ctx.closed and model.closed
    with pytest.raises(ClosedError):
        ctx.n_ctx_now = ctx.ptr
    ctx.close()


def test_closing_context_then_model(model_path):
    with Model.load(model_path, n_gpu_layers=0) as model:
        ctx = Context(model, ContextParams(n_ctx=128))
        ctx.close()
        ctx.close()
        assert not model.closed


def test_leaked_objects_warn_and_are_freed(model_path):
    model = Model.load(model_path, n_gpu_layers=0)
    with pytest.warns(ResourceWarning, match="unclosed"):
        Context(model, ContextParams(n_ctx=128))
        gc.collect()
    with pytest.warns(ResourceWarning, match="unclosed"):
        del model
        gc.collect()


def test_context_keeps_its_model_alive(model_path):
    ctx = Context(Model.load(model_path, n_gpu_layers=0), ContextParams(n_ctx=128))
    gc.collect()
    assert ctx.model.n_params > 0  # the model was not collected under the context
    ctx.model.close()


def test_interpreter_exit_with_live_objects_is_clean(model_path):
    code = textwrap.dedent(f"""
        import llama_ffi, warnings
        warnings.simplefilter("ignore")
        m = llama_ffi.Model.load({str(model_path)!r}, n_gpu_layers=0)
        c = llama_ffi.Context(m, llama_ffi.ContextParams(n_ctx=128))
        s = llama_ffi.SamplerChain([llama_ffi.Sampler.greedy()])
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_repr_never_raises(model):
    chain = SamplerChain([Sampler.top_k(3), Sampler.greedy()])
    assert "top-k -> greedy" in repr(chain)
    chain.close()
    assert "closed" in repr(chain)
