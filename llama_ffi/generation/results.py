"""OpenAI-shaped pieces that ``Llama`` and the server return alike."""

from __future__ import annotations

import time
import uuid

__all__ = ["completion_id", "now", "usage"]


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_id(kind: str = "cmpl") -> str:
    """``cmpl-...`` for text completions, ``chatcmpl-...`` for chat."""
    return f"{kind}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())
