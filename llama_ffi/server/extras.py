"""Routes other servers have: llama-cpp-python's ``/extras/*`` and llama-server's
``/apply-template`` and ``/props``.

* ``POST /extras/tokenize``: ``{"input": str, "model"?}`` -> ``{"tokens": [int]}``
* ``POST /extras/tokenize/count``: the same body -> ``{"count": int}``
* ``POST /extras/detokenize``: ``{"tokens": [int], "model"?}`` -> ``{"text": str}``
* ``POST /apply-template``: ``{"messages": [...], "model"?, "tools"?}`` -> ``{"prompt": str}``
* ``GET /props`` (``?model=`` to pick one): context size, default sampling, slots, template

Tokenizing goes through the same ``Vocab`` calls as ``/tokenize`` and ``/detokenize``
(llama-cpp-python's defaults: BOS added, special-token text parsed); ``Vocab.detokenize``
refuses ids outside the vocabulary (400) before any reaches llama.cpp. ``/apply-template``
renders with the chat pipeline ``/v1/chat/completions`` uses, so the prompt is the one a chat
request would be given.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from ..chat.pipeline import build_chat
from ..errors import GrammarError
from ..generation.sampling import SamplingParams
from .chat import _messages as chat_messages
from .registry import ModelEntry, Registry
from .schemas import Message, Tool

__all__ = ["ROUTES", "register"]

ROUTES = frozenset({"/extras/tokenize", "/extras/tokenize/count", "/extras/detokenize", "/apply-template", "/props"})
_STRICT = ConfigDict(strict=True, extra="forbid")


class TokenizeInputRequest(BaseModel):
    model_config = _STRICT
    input: str = Field(description="The text to tokenize.")
    model: str | None = None


class DetokenizeInputRequest(BaseModel):
    model_config = _STRICT
    tokens: list[int] = Field(description="Token ids, each in [0, n_vocab).")
    model: str | None = None


class ApplyTemplateRequest(BaseModel):
    model_config = _STRICT
    messages: list[Message] = Field(min_length=1)
    model: str | None = None
    tools: list[Tool] | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    enable_thinking: bool | None = None


def _tokens(entry: ModelEntry, text: str) -> list[int]:
    # llama-cpp-python's Llama.tokenize(text, add_bos=True, special=True), as /tokenize defaults to
    return entry.vocab.tokenize(text, add_special=True, parse_special=True)


def modalities(entry: ModelEntry) -> dict:
    """What the model's projector reads (nothing without one)."""
    mtmd = getattr(entry.engine, "mtmd", None)
    return {"vision": bool(mtmd and mtmd.supports_vision), "audio": bool(mtmd and mtmd.supports_audio)}


def _props(entry: ModelEntry, n_slots: int) -> dict:
    from ..native import system_info

    info = system_info()
    params = {k: v for k, v in asdict(SamplingParams()).items() if k != "logit_bias"}
    params["n_predict"] = entry.settings.max_tokens_default or -1
    context = entry.engine.context
    return {
        "default_generation_settings": {"n_ctx": context.n_ctx_seq, "params": params},
        "total_slots": n_slots,
        "model_alias": entry.name,
        "model_path": entry.settings.model,
        "chat_template": entry.model.chat_template() or "",
        "build_info": f"{info['llama_version']}-{info['ggml_commit']}",
        "modalities": modalities(entry),
    }


def register(api: FastAPI, registry: Registry) -> None:
    @api.post("/extras/tokenize")
    async def extras_tokenize(body: TokenizeInputRequest):
        return {"tokens": _tokens(registry.get(body.model), body.input)}

    @api.post("/extras/tokenize/count")
    async def extras_tokenize_count(body: TokenizeInputRequest):
        return {"count": len(_tokens(registry.get(body.model), body.input))}

    @api.post("/extras/detokenize")
    async def extras_detokenize(body: DetokenizeInputRequest):
        text = registry.get(body.model).vocab.detokenize(body.tokens)  # ids checked in Python first
        return {"text": text.decode("utf-8", "replace")}

    @api.post("/apply-template")
    async def apply_template(body: ApplyTemplateRequest):
        entry = registry.get(body.model)
        options = {k: v for k, v in {"chat_template_kwargs": body.chat_template_kwargs,
                                     "enable_thinking": body.enable_thinking}.items() if v is not None}
        if body.tools is not None:
            options["tools"] = [t.model_dump(exclude_none=True) for t in body.tools]
        try:
            request = build_chat(entry.model, entry.settings.chat_format, chat_messages(body), options)
        except GrammarError as exc:
            exc.param = exc.param or "tools"
            raise
        return {"prompt": request.prompt}

    @api.get("/props")
    async def props(model: str | None = None):
        entry = registry.get(model)
        return _props(entry, entry.engine.context.n_seq_max)
