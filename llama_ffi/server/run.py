"""Running the app under uvicorn, with a graceful shutdown."""

from __future__ import annotations

import ipaddress
import logging

import uvicorn

from .app import create_app
from .config import ServerSettings
from .registry import Registry

log = logging.getLogger("llama_ffi.server")


class _Server(uvicorn.Server):
    """On the first signal: refuse new requests and cancel those in flight, so open streams
    end with an error event instead of being cut; uvicorn then drains and the lifespan
    closes the engines."""

    def __init__(self, config: uvicorn.Config, registry: Registry) -> None:
        super().__init__(config)
        self.registry = registry

    def handle_exit(self, sig, frame) -> None:
        if not self.registry.closing:
            self.registry.begin_shutdown()
        super().handle_exit(sig, frame)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_server(settings: ServerSettings, registry: Registry | None = None) -> _Server:
    registry = registry if registry is not None else Registry.load(settings.models)
    app = create_app(settings, registry)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info",
                            timeout_graceful_shutdown=settings.shutdown_timeout, access_log=False)
    return _Server(config, registry)


def serve(settings: ServerSettings) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    if not _is_loopback(settings.host) and not settings.api_key:
        log.warning("listening on %s without --api-key: anyone who can reach this port can use the models",
                    settings.host)
    server = build_server(settings)
    names = ", ".join(server.registry.entries)
    log.info("serving %s on http://%s:%d/v1", names, settings.host, settings.port)
    server.run()
    return 0
