"""What people see: notebook views of completions and progress bars while loading.

``notebook.py``: ``show``, ``display_stream``, ``display_stream_async`` and the table
``Llama`` renders as in Jupyter. ``progress.py``: ``tqdm`` bars drawn only when a person is
watching (a terminal or a notebook); ``Llama`` and the CLI pass one as the ``progress=``
callback of a model load, and hub downloads use it. ``native`` draws nothing itself.

Imported only by ``llama`` and ``cli``; it imports nothing else of llama_ffi, so the
layers below stay free of presentation (tests/test_layering.py).
"""

from .notebook import CompletionView, display_stream, display_stream_async, show

__all__ = ["CompletionView", "display_stream", "display_stream_async", "show"]
