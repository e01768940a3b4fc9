"""Slots seen from outside: what each one holds, and its KV cells saved to or restored from a file.

Every function here takes the engine's ``Scheduler`` and must run on the engine thread
between two steps (``Engine.call(lambda s: save_slot(s, 0, path))``): slots and cells change
at every step. A slot running a request is refused (``SlotBusyError``); an idle slot holds
the cells of its last request as a cached prefix, which is what is saved. A restored slot is
an idle slot like any other, so the next request whose prompt starts with its tokens reuses
its cells (``Engine.stats()['cached_prompt_tokens']`` counts them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import LlamaError, StateError, ValidationError
from ..generation.sampling import SamplingParams
from .slots import Slot, SlotTable

__all__ = ["SlotBusyError", "SlotInfo", "erase_slot", "restore_slot", "save_slot", "slot_infos"]


class SlotBusyError(LlamaError):
    """The slot is running a request; saving, restoring or erasing it would corrupt that."""

    def __init__(self, seq_id: int) -> None:
        super().__init__(f"slot {seq_id} is processing a request; try again when it is idle")
        self.seq_id = seq_id


@dataclass
class SlotInfo:
    id: int
    n_ctx: int  # positions this slot may use
    is_processing: bool
    n_cached: int  # tokens whose cells this slot holds (its cached prefix when idle)
    task_id: int = -1  # the running request's id
    state: str = "idle"  # or the request's state: queued, prefill, decode
    n_prompt: int = 0
    n_decoded: int = 0
    max_tokens: int = 0
    sampling: SamplingParams | None = None


def slot_infos(scheduler) -> list[SlotInfo]:
    n_ctx = scheduler.ctx.n_ctx_seq
    out = []
    for slot in scheduler.slots.slots:
        info = SlotInfo(id=slot.seq_id, n_ctx=n_ctx, is_processing=slot.busy, n_cached=slot.n_past)
        request = slot.request
        if request is not None:
            info.task_id, info.state = request.id, request.state.value
            info.n_prompt, info.n_decoded, info.max_tokens = request.n_prompt, request.n_generated, request.max_tokens
            info.sampling = request.sampling
        out.append(info)
    return out


def _idle_slot(scheduler, seq_id) -> Slot:
    slots = scheduler.slots.slots
    if isinstance(seq_id, bool) or not isinstance(seq_id, int) or not 0 <= seq_id < len(slots):
        raise ValidationError(f"slot id {seq_id!r} outside [0, {len(slots)})", param="id_slot")
    slot = slots[seq_id]
    if slot.busy:
        raise SlotBusyError(seq_id)
    return slot


def save_slot(scheduler, seq_id: int, path: str | os.PathLike) -> tuple[int, int]:
    """Write slot ``seq_id``'s cached cells and tokens to ``path``: (tokens, bytes written).
    Written beside the target and renamed, so a failed save leaves no half file behind."""
    slot = _idle_slot(scheduler, seq_id)
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    try:
        written = scheduler.ctx.save_seq_state_file(partial, seq_id, slot.tokens[: slot.n_past])
        os.replace(partial, path)
    except OSError as exc:  # a folder of that name, a full disk...
        raise StateError(f"could not write {path.name}: {exc.strerror or exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    return slot.n_past, written


def restore_slot(scheduler, seq_id: int, path: str | os.PathLike) -> tuple[int, int]:
    """Replace slot ``seq_id``'s cells by those saved in ``path``: (tokens, bytes read).
    On failure the slot is left empty (never half restored)."""
    slot = _idle_slot(scheduler, seq_id)
    ctx = scheduler.ctx
    _clear(ctx, slot)
    try:
        tokens = np.asarray(ctx.load_seq_state_file(path, seq_id), dtype=np.int32)
        if tokens.size and (tokens.min() < 0 or tokens.max() >= scheduler.vocab.n_tokens):
            raise StateError(f"{path} holds token ids outside this model's vocabulary")
        last = ctx.memory_seq_pos_range(seq_id)[1]
        if last + 1 != len(tokens):  # cells for exactly positions 0..n-1, as the scheduler assumes
            raise StateError(f"{path} holds {len(tokens)} tokens but cells up to position {last}")
    except BaseException:
        _clear(ctx, slot)
        raise
    slot.set_tokens(tokens)
    slot.n_past = len(tokens)
    slot.loras = scheduler.default_loras  # a file does not say which adapters computed its cells
    SlotTable.touch(slot)
    return len(tokens), Path(path).stat().st_size


def erase_slot(scheduler, seq_id: int) -> int:
    """Drop slot ``seq_id``'s cached cells; the number of tokens they held."""
    slot = _idle_slot(scheduler, seq_id)
    n = slot.n_past
    _clear(scheduler.ctx, slot)
    return n


def _clear(ctx, slot: Slot) -> None:
    ctx.memory_seq_rm(slot.seq_id)
    slot.set_tokens(np.zeros(0, dtype=np.int32))
    slot.n_past = 0
