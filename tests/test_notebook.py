"""docs/quickstart.ipynb runs top to bottom in a real Jupyter kernel, and shows what it should.

Needs nbclient, nbformat and ipykernel (the ``test`` extra); skipped without them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "docs" / "quickstart.ipynb"


def _text(output) -> str:
    if output.get("output_type") == "stream":
        return output.get("text", "")
    data = output.get("data", {})
    return data.get("text/html") or data.get("text/plain") or ""


@pytest.fixture(scope="module")
def executed(model_path, tmp_path_factory):
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "LLAMA_FFI_MODEL": str(model_path)}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)  # the kernel process inherits them
    try:
        nb = nbformat.read(NOTEBOOK, as_version=4)
        client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                         resources={"metadata": {"path": str(tmp_path_factory.mktemp("nb"))}})
        client.execute()  # raises CellExecutionError on the first failing cell
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return [c for c in nb.cells if c.cell_type == "code"]


@pytest.mark.slow
def test_quickstart_runs_without_errors(executed):
    errors = [o for c in executed for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert all(c.get("execution_count") for c in executed)


@pytest.mark.slow
def test_quickstart_shows_what_it_promises(executed):
    out = ["".join(_text(o) for o in c.get("outputs", [])) for c in executed]
    llama_table, generated, streamed, chat, _async, json_cell, embeddings, model_table, _close = out
    assert "llama_ffi.Llama" in llama_table and "CPU" in llama_table and "<table>" in llama_table
    assert "Paris" in generated
    assert "Moon" in streamed or len(streamed) > 40  # the live-updated display holds the whole text
    assert "Paris" in chat and "finish:" in chat
    assert "['city', 'country']" in json_cell
    assert "(3, 576)" in embeddings and "cat~kitten" in embeddings
    assert "llama_ffi.Model" in model_table and "architecture" in model_table
