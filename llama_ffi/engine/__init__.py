"""Continuous batching: many requests served from one model in one context.

``Engine`` (one context, many sequences) and ``EnginePool`` (several engines, e.g. one
per GPU, behind one front door). Usable without the server.
"""

from .engine import Completion, Engine, EngineConfig
from .pool import EnginePool
from .request import Event, Request

__all__ = ["Completion", "Engine", "EngineConfig", "EnginePool", "Event", "Request"]
