"""Failures in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``.

========================================  ======  ==========================================
cause                                     status  type / code
========================================  ======  ==========================================
bad field, bad JSON (pydantic's 422)      400     invalid_request_error
``ValidationError`` (ours)                400     invalid_request_error (its ``param``)
``ContextOverflowError``                  400     invalid_request_error / context_length_exceeded
missing or wrong API key                  401     authentication_error / invalid_api_key
unknown model                             404     invalid_request_error / model_not_found
unknown path / method                     404/405 invalid_request_error
body over ``--max-body-bytes``            413     invalid_request_error / request_too_large
engine queue full (``OverloadedError``)   503     server_overloaded, with Retry-After
shutting down (``ClosedError``)           503     server_overloaded, with Retry-After
anything else                             500     server_error
========================================  ======  ==========================================

Under ``/v1/messages`` (Anthropic's Messages API) the same failures take Anthropic's shape,
``{"type": "error", "error": {"type", "message"}}``, with its types (``not_found_error``,
``authentication_error``, ``api_error``...) and 529 ``overloaded_error`` for 503
(:func:`shape_for_path`): the route decides, so a client of either API reads its own errors.

Also the two pieces of ASGI middleware that answer before any route runs: the API-key
check and the body-size limit (which also counts chunked bodies as they arrive).
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..errors import (
    ClosedError,
    ContextOverflowError,
    LlamaError,
    OverloadedError,
    ValidationError,
)
from .registry import ModelNotFound

log = logging.getLogger("llama_ffi.server")

PUBLIC_PATHS = frozenset({"/health"})


def error_body(message: str, type_: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def json_response(status: int, body: dict, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


ANTHROPIC_ROUTE = "/v1/messages"
_ANTHROPIC_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                    413: "request_too_large", 429: "rate_limit_error", 529: "overloaded_error"}


def anthropic_error(status: int, message: str) -> tuple[int, dict]:
    """(status, body) in Anthropic's shape; its "overloaded" status is 529 where ours is 503."""
    status = 529 if status == 503 else status
    kind = _ANTHROPIC_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
    return status, {"type": "error", "error": {"type": kind, "message": message}}


def shape_for_path(path: str, status: int, body: dict) -> tuple[int, dict]:
    """An OpenAI error body, reshaped for Anthropic's routes; other paths keep it."""
    if path == ANTHROPIC_ROUTE or path.startswith(ANTHROPIC_ROUTE + "/"):
        return anthropic_error(status, body["error"]["message"])
    return status, body


def describe(exc: BaseException) -> tuple[int, dict, dict]:
    """(status, body, headers) for an exception raised while serving a request."""
    if isinstance(exc, ContextOverflowError):
        return 400, error_body(str(exc), param=exc.param or "messages", code="context_length_exceeded"), {}
    if isinstance(exc, ValidationError):
        return 400, error_body(str(exc), param=exc.param), {}
    if isinstance(exc, ModelNotFound):
        return 404, error_body(str(exc), param="model", code="model_not_found"), {}
    if isinstance(exc, OverloadedError):
        retry = str(max(1, round(exc.retry_after)))
        return 503, error_body(str(exc), "server_overloaded", code="queue_full"), {"Retry-After": retry}
    if isinstance(exc, ClosedError):
        return 503, error_body(str(exc), "server_overloaded", code="shutting_down"), {"Retry-After": "5"}
    log.exception("request failed", exc_info=exc)
    return 500, error_body(f"internal error: {type(exc).__name__}: {exc}", "server_error"), {}


def install_handlers(app) -> None:
    def respond(request, status: int, body: dict, headers: dict | None = None) -> JSONResponse:
        return json_response(*shape_for_path(request.scope["path"], status, body), headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        return respond(request, 400, _pydantic_error(exc.errors()))

    @app.exception_handler(HTTPException)
    async def _http(request, exc: HTTPException):
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        code = "request_too_large" if exc.status_code == 413 else None
        return respond(request, exc.status_code, error_body(str(exc.detail), kind, code=code),
                       getattr(exc, "headers", None))

    @app.exception_handler(LlamaError)  # ours, answered without a traceback in the log
    async def _ours(request, exc: LlamaError):
        return respond(request, *describe(exc))

    @app.exception_handler(Exception)  # a bug: 500 in the same shape, traceback logged
    async def _any(request, exc: Exception):
        return respond(request, *describe(exc))


def _pydantic_error(errors: list[dict[str, Any]]) -> dict:
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    if first.get("type") == "json_invalid":
        return error_body(f"the request body is not valid JSON: {first.get('ctx', {}).get('error', '')}".rstrip(": "))
    if first.get("type") == "extra_forbidden":
        return error_body(f"Unrecognized request argument supplied: {param}", param=param)
    got = first.get("input")
    shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {json.dumps(got)[:80]})"
    message = f"{param}: {first.get('msg', 'invalid value')}{shown}" if param else first.get("msg", "invalid request")
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return error_body(message + more, param=param)


# --- ASGI middleware ------------------------------------------------------------------------
async def _send_error(scope, send, status: int, body: dict, headers: dict | None = None) -> None:
    status, body = shape_for_path(scope["path"], status, body)
    raw = json.dumps(body).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    head += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": raw})


class ApiKeyMiddleware:
    """401 unless ``Authorization: Bearer KEY`` (or ``x-api-key: KEY``) matches; /health is open."""

    def __init__(self, app, api_key: str) -> None:
        self.app = app
        self.key = api_key.encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS or scope["method"] == "OPTIONS":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        given = headers.get(b"authorization", b"")
        given = given[7:].strip() if given[:7].lower() == b"bearer " else headers.get(b"x-api-key", b"")
        if not hmac.compare_digest(given, self.key):
            why = "Incorrect API key provided" if given else \
                "Missing API key: send 'Authorization: Bearer KEY' or 'x-api-key: KEY'"
            body = error_body(why, "authentication_error", code="invalid_api_key")
            return await _send_error(scope, send, 401, body, {"WWW-Authenticate": "Bearer"})
        return await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """413 for a body over ``limit`` bytes: by Content-Length up front, else as it arrives."""

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._too_large(scope, send)
        seen = 0
        started = False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge(self.limit)
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._too_large(scope, send)

    async def _too_large(self, scope, send) -> None:
        await _send_error(scope, send, 413, error_body(f"request body is larger than {self.limit} bytes",
                                                       code="request_too_large"))


class _TooLarge(HTTPException):
    """Raised from ``receive``: FastAPI re-raises HTTPExceptions met while reading a body."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than {limit} bytes")
