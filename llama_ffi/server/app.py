"""The FastAPI application: routes, middleware, lifespan.

``create_app(settings, registry)`` builds it for any ASGI server (tests use it with
httpx's ASGI transport or uvicorn on a loopback port); ``serve`` runs it under uvicorn
with a graceful shutdown: on the first signal new requests get 503, requests in flight
are cancelled (their streams end with an error event), then the engines are closed.
"""

from __future__ import annotations

import base64
import contextlib

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, StreamingResponse

from ..errors import ValidationError
from . import chat, completions, extras, messages, metrics, native_routes, responses
from .config import ServerSettings
from .errors import (
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    install_handlers,
    json_response,
)
from .generation import SSE_HEADERS, Jobs, sse_stream, whole_answer
from .registry import Registry
from .schemas import (
    ChatRequest,
    CompletionRequest,
    DetokenizeRequest,
    EmbeddingRequest,
    RerankRequest,
    TokenizeRequest,
)

ROUTES = frozenset({"/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/v1/rerank", "/v1/models",
                    "/tokenize", "/detokenize", "/health", "/metrics"}) | extras.ROUTES | responses.ROUTES \
    | native_routes.ROUTES | messages.ROUTES


def create_app(settings: ServerSettings, registry: Registry) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        registry.close()

    api = FastAPI(title="llama_ffi", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    api.state.registry = registry
    install_handlers(api)
    _generation_routes(api, registry)
    _other_routes(api, registry)
    extras.register(api, registry)
    messages.register(api, registry)
    native_routes.register(api, registry, settings)
    responses.register(api, registry)
    api.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    if settings.api_key:
        api.add_middleware(ApiKeyMiddleware, api_key=settings.api_key)
    if settings.cors:
        from fastapi.middleware.cors import CORSMiddleware

        api.add_middleware(CORSMiddleware, allow_origins=settings.cors, allow_methods=["GET", "POST", "OPTIONS"],
                           allow_headers=["Authorization", "Content-Type", "X-Api-Key"])
    api.state.http_counts = counter = metrics.HttpCounter(None, ROUTES)
    api.add_middleware(_Counting, counter=counter)
    return api


class _Counting:
    """Routes the outermost ASGI call through the shared HttpCounter."""

    def __init__(self, app, counter: metrics.HttpCounter) -> None:
        counter.app = app
        self.counter = counter

    async def __call__(self, scope, receive, send) -> None:
        await self.counter(scope, receive, send)


def _streaming(chunks, jobs: Jobs) -> StreamingResponse:
    return StreamingResponse(sse_stream(chunks, jobs), media_type="text/event-stream", headers=SSE_HEADERS)


def _generation_routes(api: FastAPI, registry: Registry) -> None:
    @api.post("/v1/completions")
    async def create_completion(body: CompletionRequest, http_request: Request):
        entry = registry.get(body.model)
        jobs, prompts = completions.submit(body, entry)
        if body.stream:
            return _streaming(completions.stream(body, entry, jobs, prompts), jobs)
        return await whole_answer(http_request, jobs, lambda c: completions.response(body, entry, jobs, prompts, c))

    @api.post("/v1/chat/completions")
    async def create_chat_completion(body: ChatRequest, http_request: Request):
        entry = registry.get(body.model)
        jobs, request = chat.submit(body, entry)
        if body.stream:
            return _streaming(chat.stream(body, entry, jobs, request), jobs)
        return await whole_answer(http_request, jobs, lambda c: chat.response(body, entry, jobs, request, c))


def _other_routes(api: FastAPI, registry: Registry) -> None:
    @api.post("/v1/embeddings")
    async def create_embedding(body: EmbeddingRequest):
        entry = registry.get(body.model)
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not texts:
            raise ValidationError("input is an empty list", param="input")
        vectors, count = await entry.embedding_call("embed", texts, normalize=True, return_count=True)
        if body.dimensions is not None and body.dimensions != len(vectors[0]):
            raise ValidationError(f"this model has {len(vectors[0])} dimensions", param="dimensions")
        data = [{"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
                for i, v in enumerate(vectors)]
        return {"object": "list", "data": data, "model": body.model or entry.name,
                "usage": {"prompt_tokens": count, "total_tokens": count}}

    @api.post("/v1/rerank")
    async def rerank(body: RerankRequest):
        entry = registry.get(body.model)
        scores = await entry.embedding_call("rerank", body.query, body.documents)
        order = sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)[: body.top_n]
        results = [{"index": i, "relevance_score": scores[i],
                    **({"document": {"text": body.documents[i]}} if body.return_documents else {})} for i in order]
        return {"object": "list", "model": body.model or entry.name, "results": results}

    @api.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": e.created, "owned_by": "llama_ffi",
             "modalities": extras.modalities(e),
             "meta": {"n_ctx": e.engine.context.n_ctx, "n_parallel": e.engine.context.n_seq_max,
                      "n_vocab": e.vocab.n_tokens}} for name, e in registry.entries.items()]}

    @api.post("/tokenize")
    async def tokenize(body: TokenizeRequest):
        vocab = registry.get(body.model).vocab
        tokens = vocab.tokenize(body.content, add_special=body.add_special, parse_special=body.parse_special)
        if body.with_pieces:
            return {"tokens": [{"id": t, "piece": vocab.pieces[t].decode("utf-8", "replace")} for t in tokens]}
        return {"tokens": tokens}

    @api.post("/detokenize")
    async def detokenize(body: DetokenizeRequest):
        vocab = registry.get(body.model).vocab
        return {"content": vocab.detokenize(body.tokens).decode("utf-8", "replace")}

    @api.get("/health")
    async def health():
        if registry.closing:
            return json_response(503, {"status": "shutting down"})
        return {"status": "ok"}

    @api.get("/metrics")
    async def prometheus(http_request: Request):
        return PlainTextResponse(metrics.render(registry, http_request.app.state.http_counts),
                                 media_type="text/plain; version=0.0.4")


def _encode(vector, encoding: str):
    if encoding == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
    return vector
