"""An OpenAI-compatible HTTP server over llama_ffi engines (needs the ``server`` extra).

``llama-ffi serve -m model.gguf`` or ``python -m llama_ffi.server -m model.gguf``; see
docs/serving.md. Importing this package loads nothing: FastAPI and uvicorn are imported
when an app is built.
"""

from __future__ import annotations

__all__ = ["create_app", "main", "serve"]


def create_app(settings, registry=None):
    """The ASGI app for ``settings`` (a :class:`~llama_ffi.server.config.ServerSettings`);
    the models are loaded here unless a ready ``registry`` is given."""
    from .app import create_app as build
    from .registry import Registry

    return build(settings, registry if registry is not None else Registry.load(settings.models))


def serve(settings) -> int:
    from .run import serve as run

    return run(settings)


def main(argv: list[str] | None = None, prog: str = "llama-ffi serve") -> int:
    """Parse ``argv`` (``llama-ffi serve --help``) and serve until interrupted."""
    import sys

    from ..errors import ValidationError
    from .config import parse_args

    try:
        settings = parse_args(sys.argv[1:] if argv is None else argv, prog=prog)
    except ValidationError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    return serve(settings)
