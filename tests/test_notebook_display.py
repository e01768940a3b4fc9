"""llama_ffi.display and the _repr_html_ hooks, outside Jupyter (the kernel run is test_notebook.py)."""

from __future__ import annotations

import asyncio
import io
import sys

import pytest

from llama_ffi.display.notebook import CompletionView, chunk_text, display_stream, display_stream_async, show
from llama_ffi.display.progress import interactive, tqdm_class


def test_display_stream_prints_pieces_and_chunks_outside_ipython():
    out = io.StringIO()
    items = ["Hel", {"choices": [{"text": "lo"}]}, {"choices": [{"delta": {"content": ", you"}}]},
             {"choices": [{"delta": {}}]}, b"!"]
    assert display_stream(items, out=out) == "Hello, you!"
    assert out.getvalue() == "Hello, you!\n"


def test_display_stream_async_consumes_an_async_iterator():
    async def pieces():
        for p in ("a", "b", "c"):
            await asyncio.sleep(0)
            yield {"choices": [{"text": p}]}

    out = io.StringIO()
    assert asyncio.run(display_stream_async(pieces(), out=out)) == "abc"


def test_display_stream_closes_the_stream_it_leaves():
    closed = []

    def stream():
        try:
            yield "a"
            yield "b"
        finally:
            closed.append(True)  # for a Llama stream: generation stops here

    class Interrupting(io.StringIO):
        def write(self, text):
            if text == "b":
                raise KeyboardInterrupt  # as when a notebook cell is interrupted
            return super().write(text)

    with pytest.raises(KeyboardInterrupt):
        display_stream(stream(), out=Interrupting())
    assert closed == [True]


def test_show_renders_chat_answers_escaped(llama):
    reply = llama.create_chat_completion([{"role": "user", "content": "Say <b>hi</b>"}], max_tokens=6,
                                        temperature=0)
    view = show(reply)
    assert isinstance(view, CompletionView) and view.text == chunk_text(reply)
    html = view._repr_html_()
    assert "finish:" in html and "tokens:" in html and "<b>" not in html.split("<div", 2)[1]
    assert repr(view).startswith(view.text)


def test_model_and_llama_render_as_tables(llama, model_path):
    from llama_ffi import Model

    html = llama._repr_html_()
    assert html.startswith("<table>") and "llama_ffi.Llama" in html and "CPU" in html and "512" in html
    model = Model.load(model_path, vocab_only=True)
    summary = model.summary()
    assert summary["architecture"] == "llama" and summary["parameters"].endswith("M")
    assert "vocabulary only" in model._repr_html_()
    model.close()
    assert model._repr_html_().startswith("<code>")  # closed: says so, never raises


def test_no_progress_bars_when_nobody_watches(monkeypatch):
    # pytest captures stderr; another test may have imported ipykernel into this process
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    assert not interactive()
    assert tqdm_class() is None


def test_the_load_bar_comes_from_llama_not_from_native(monkeypatch, model_path):
    """native draws nothing (no default progress callback); Llama passes a bar when a person
    is watching."""
    from llama_ffi import Llama, Model
    from llama_ffi.display import progress

    bars = []

    class Bar:
        def __init__(self, **kwargs):
            self.n = 0
            bars.append(self)

        def update(self, step):
            self.n += step

        def close(self):
            pass

    monkeypatch.setattr(progress, "tqdm_class", lambda: Bar)
    Model.load(model_path, n_gpu_layers=0).close()
    assert bars == []
    with Llama(model_path, n_ctx=64, verbose=False):
        pass
    assert len(bars) == 1 and bars[0].n > 0
