"""Chat prompts: Jinja chat templates, named chat formats, BOS handling.

``render_chat`` and ``ChatTemplate`` render a model's own Jinja template in a
bounded sandbox (output checked against Hugging Face transformers);
``get_chat_format`` gives the classic hand-written formats by name
(``"chatml"``, ``"llama-3"``, ``"mistral-instruct"`` ...) with their stop
strings.
"""

from __future__ import annotations

from .formats import (
    ChatFormat,
    ChatPrompt,
    chat_format_names,
    get_chat_format,
    guess_chat_format,
    register_chat_format,
)
from .template import ChatTemplate, RenderLimits, reconcile_bos, render_chat

# --- families / reasoning / tool calls (another module owner adds imports here) ---
# --- end of that section ---

__all__ = [
    "ChatFormat",
    "ChatPrompt",
    "ChatTemplate",
    "RenderLimits",
    "chat_format_names",
    "get_chat_format",
    "guess_chat_format",
    "reconcile_bos",
    "register_chat_format",
    "render_chat",
    # --- families / reasoning / tool calls names go here, kept sorted ---
]
