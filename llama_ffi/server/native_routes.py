"""llama-server's own routes: ``/slots``, ``/slots/{id}?action=...``, ``/infill``, ``/lora-adapters``.

* ``GET /slots`` (``?model=``, ``?fail_on_no_slot=1``): one object per sequence slot: ``id``,
  ``id_task``, ``n_ctx``, ``is_processing``, ``params`` (the running request's sampling),
  ``next_token`` and ``n_cached`` (tokens whose KV cells the slot holds: its cached prefix).
* ``POST /slots/{id}?action=save|restore`` with ``{"filename": "x.bin"}``: a slot's cells to
  or from a file in ``--slot-save-path``; ``action=erase`` drops them. A plain file name only
  (no folders, no ``..``): anything else is a 400. A slot running a request is a 409.
* ``POST /infill``: fill-in-the-middle (see ``infill.py``).
* ``GET /lora-adapters``: ``[{"id", "path", "scale"}]`` of the model's ``lora`` setting;
  ``POST /lora-adapters`` with ``[{"id", "scale"}]`` sets the scales (adapters left out: 0)
  of later requests, as llama-server does: running and queued ones keep theirs. A request's
  own ``"lora": [{"id", "scale"}]`` (completions, chat) overrides them for that request
  (adapters it leaves out: 0). The engine decodes requests of one adapter set per step and
  reuses a cached prefix only under the set that computed it (``engine/adapters.py``).

Everything that touches slots, cells or adapters runs on the engine thread between two
steps (``Engine.call``), so it never races a decode.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from dataclasses import asdict
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ..engine.slot_state import SlotBusyError, erase_slot, restore_slot, save_slot, slot_infos
from ..errors import StateError, ValidationError
from . import infill
from .config import ServerSettings
from .errors import error_body, json_response
from .generation import SSE_HEADERS, sse_stream, whole_answer
from .registry import ModelEntry, Registry
from .schemas import LoraScale

__all__ = ["ROUTES", "register"]

ROUTES = frozenset({"/slots", "/slots/{id_slot}", "/infill", "/lora-adapters"})  # /metrics labels: route templates
_STRICT = ConfigDict(strict=True, extra="forbid")
# A slot file name: a plain name in the save folder, never a path.
_FILENAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


class SlotFileRequest(BaseModel):
    model_config = _STRICT
    filename: str | None = Field(None, description="A file name in --slot-save-path (save and restore).",
                                 max_length=256)
    model: str | None = None


def register(api: FastAPI, registry: Registry, settings: ServerSettings | None = None) -> None:
    """Add the routes; LoRA adapters of each model's ``lora`` setting are loaded and applied now."""
    save_dir = Path(settings.slot_save_path).resolve() if settings and settings.slot_save_path else None
    adapters = {}
    for name, entry in registry.entries.items():
        adapters[name] = entry.lora = _Adapters(entry)
    _slot_routes(api, registry, save_dir)
    _infill_route(api, registry)
    _lora_routes(api, registry, adapters)


# --- /slots -------------------------------------------------------------------------------------
def _slot_json(info) -> dict:
    params = None
    if info.sampling is not None:
        params = {k: v for k, v in asdict(info.sampling).items() if k != "logit_bias"}
        params["n_predict"] = info.max_tokens
    return {"id": info.id, "id_task": info.task_id, "n_ctx": info.n_ctx, "speculative": False,
            "is_processing": info.is_processing, "state": info.state, "n_cached": info.n_cached,
            "params": params,
            "next_token": {"has_next_token": info.is_processing, "n_decoded": info.n_decoded,
                           "n_remain": info.max_tokens - info.n_decoded if info.is_processing else -1},
            "n_prompt_tokens": info.n_prompt}


async def _on_engine(entry: ModelEntry, fn):
    return await asyncio.wrap_future(entry.engine.call(fn))


def _slot_file(save_dir: Path | None, filename: str | None) -> Path:
    if save_dir is None:
        raise ValidationError("slot files are off: start the server with --slot-save-path DIR "
                              "(or 'slot_save_path' in the config file)", param="action")
    if not filename:
        raise ValidationError("filename is required for save and restore", param="filename")
    if not _FILENAME.fullmatch(filename) or ".." in filename:
        raise ValidationError("filename must be a plain file name (letters, digits, '_', '-', '.'; "
                              "no folders, no '..')", param="filename")
    path = save_dir / filename
    if path.resolve().parent != save_dir:  # a link in the folder pointing elsewhere
        raise ValidationError("filename resolves outside --slot-save-path", param="filename")
    return path


def _slot_routes(api: FastAPI, registry: Registry, save_dir: Path | None) -> None:
    @api.get("/slots")
    async def list_slots(model: str | None = None, fail_on_no_slot: bool = False):
        entry = registry.get(model)
        slots = [_slot_json(info) for info in await _on_engine(entry, slot_infos)]
        if fail_on_no_slot and all(s["is_processing"] for s in slots):
            return json_response(503, error_body("no slot available", "server_overloaded", code="no_slot_available"),
                                 {"Retry-After": "1"})
        return slots

    @api.post("/slots/{id_slot}")
    async def slot_action(id_slot: int, action: Literal["save", "restore", "erase"],
                          body: SlotFileRequest | None = None):
        body = body or SlotFileRequest()
        entry = registry.get(body.model)
        started = time.perf_counter()
        try:
            if action == "erase":
                n = await _on_engine(entry, lambda s: erase_slot(s, id_slot))
                return {"id_slot": id_slot, "n_erased": n}
            path = _slot_file(save_dir, body.filename)
            if action == "save":
                n, size = await _on_engine(entry, lambda s: save_slot(s, id_slot, path))
                return {"id_slot": id_slot, "filename": body.filename, "n_saved": n, "n_written": size,
                        "timings": {"save_ms": round((time.perf_counter() - started) * 1000, 3)}}
            if not path.is_file():
                return json_response(404, error_body(f"no slot file {body.filename!r} in --slot-save-path",
                                                     param="filename", code="file_not_found"))
            n, size = await _on_engine(entry, lambda s: restore_slot(s, id_slot, path))
            return {"id_slot": id_slot, "filename": body.filename, "n_restored": n, "n_read": size,
                    "timings": {"restore_ms": round((time.perf_counter() - started) * 1000, 3)}}
        except SlotBusyError as exc:
            return json_response(409, error_body(str(exc), param="id_slot", code="slot_busy"))
        except StateError as exc:
            return json_response(400, error_body(str(exc), param="filename", code="invalid_slot_file"))


# --- /infill ------------------------------------------------------------------------------------
def _infill_route(api: FastAPI, registry: Registry) -> None:
    @api.post("/infill")
    async def create_infill(body: infill.InfillRequest, http_request: Request):
        entry = registry.get(body.model)
        started = time.perf_counter()
        jobs, prompt = infill.submit(body, entry)
        if body.stream:
            return StreamingResponse(sse_stream(infill.stream(body, entry, jobs, prompt, started), jobs),
                                     media_type="text/event-stream", headers=SSE_HEADERS)
        return await whole_answer(http_request, jobs,
                                  lambda choices: infill.response(body, entry, jobs, prompt, choices, started))


# --- /lora-adapters -----------------------------------------------------------------------------
class _Adapters:
    """One model's adapters (its ``lora`` setting, loaded once) and their current scales."""

    def __init__(self, entry: ModelEntry) -> None:
        from ..native import LoraAdapter

        self.entry = entry
        configured = entry.settings.lora_entries(entry.name)
        self.paths = [item["path"] for item in configured]
        self.adapters = [LoraAdapter(entry.model, path) for path in self.paths]
        self.scales = [item["scale"] for item in configured]
        if self.adapters:
            entry.engine.set_loras(self._mapping(self.scales)).result()

    def listing(self) -> list[dict]:
        return [{"id": i, "path": p, "scale": s} for i, (p, s) in enumerate(zip(self.paths, self.scales))]

    async def set(self, changes: list[LoraScale]) -> None:
        scales = self._scales(changes, "id")
        await asyncio.wrap_future(self.entry.engine.set_loras(self._mapping(scales)))
        self.scales = scales

    def request_scales(self, items: list[LoraScale]) -> dict:
        """A request's ``lora`` as ``{adapter: scale}``; errors name the ``lora`` field."""
        return self._mapping(self._scales(items, "lora"))

    def _scales(self, items: list[LoraScale], param: str) -> list[float]:
        scales = [0.0] * len(self.adapters)  # llama-server: an adapter left out is off
        seen = set()
        for item in items:
            if item.id >= len(self.adapters):
                raise ValidationError(f"no LoRA adapter {item.id}: this model has {len(self.adapters)} "
                                      "(GET /lora-adapters lists them)", param=param)
            if item.id in seen:
                raise ValidationError(f"LoRA adapter {item.id} is listed twice", param=param)
            seen.add(item.id)
            scales[item.id] = item.scale
        return scales

    def _mapping(self, scales: list[float]) -> dict:
        return {a: s for a, s in zip(self.adapters, scales) if s != 0 and math.isfinite(s)}


def _lora_routes(api: FastAPI, registry: Registry, adapters: dict[str, _Adapters]) -> None:
    @api.get("/lora-adapters")
    async def list_lora_adapters(model: str | None = None):
        return adapters[registry.get(model).name].listing()

    @api.post("/lora-adapters")
    async def set_lora_adapters(body: list[LoraScale], model: str | None = None):
        entry = registry.get(model)
        await adapters[entry.name].set(body)
        return adapters[entry.name].listing()
