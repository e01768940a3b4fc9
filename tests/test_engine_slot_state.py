"""Engine.call (work on the engine thread between steps) and slot files at the engine level,
in both KV layouts (one pool of cells, a stream per sequence); the real small model."""

from __future__ import annotations

import time

import pytest

from llama_ffi.engine import Engine
from llama_ffi.engine.slot_state import SlotBusyError, erase_slot, restore_slot, save_slot, slot_infos
from llama_ffi.errors import ClosedError, StateError, ValidationError
from llama_ffi.generation.sampling import SamplingParams

PROMPT = "Slots at the engine level: saved, erased and restored between two steps. " * 4
GREEDY = SamplingParams(temperature=0.0)


@pytest.fixture(scope="module", params=[True, False], ids=["unified", "streams"])
def engine(model, request):
    with Engine(model, n_ctx=2048, n_seq_max=2, n_gpu_layers=0, kv_unified=request.param) as eng:
        yield eng


def run(engine, fn):
    return engine.call(fn).result(timeout=60)


def test_call_returns_and_raises_on_the_callers_side(engine):
    import threading

    assert run(engine, lambda s: threading.current_thread().name) == engine._thread.name
    with pytest.raises(ValidationError, match="outside"):
        run(engine, lambda s: erase_slot(s, 7))
    assert engine.complete_sync("Still working?", max_tokens=2, sampling=GREEDY).tokens  # the thread lives on


def test_restored_cells_serve_the_next_prompt(engine, tmp_path):
    for slot in range(2):
        run(engine, lambda s, i=slot: erase_slot(s, i))
    first = engine.complete_sync(PROMPT, max_tokens=3, sampling=GREEDY)
    (holder,) = [i for i in run(engine, slot_infos) if i.n_cached]
    n, size = run(engine, lambda s: save_slot(s, holder.id, tmp_path / "a.bin"))
    assert n == holder.n_cached and size == (tmp_path / "a.bin").stat().st_size
    assert run(engine, lambda s: erase_slot(s, holder.id)) == n
    other = 1 - holder.id
    assert run(engine, lambda s: restore_slot(s, other, tmp_path / "a.bin"))[0] == n
    assert engine.context.memory_seq_pos_range(other) == (0, n - 1)
    again = engine.complete_sync(PROMPT + " More.", max_tokens=3, sampling=GREEDY)
    assert again.cached_tokens >= first.prompt_tokens - 1


def test_busy_slots_and_bad_files_are_refused(engine, tmp_path):
    stream = engine.generate_sync("Count: 1, 2, 3,", max_tokens=200, sampling=GREEDY)
    next(stream)
    try:
        (busy,) = [i for i in run(engine, slot_infos) if i.is_processing]
        assert busy.state == "decode" and busy.max_tokens == 200 and busy.sampling.temperature == 0.0
        for action in (lambda s: save_slot(s, busy.id, tmp_path / "b.bin"), lambda s: erase_slot(s, busy.id),
                       lambda s: restore_slot(s, busy.id, tmp_path / "b.bin")):
            with pytest.raises(SlotBusyError):
                run(engine, action)
    finally:
        stream.close()  # cancels; the slot is freed at the next step
    deadline = time.monotonic() + 30
    while any(i.is_processing for i in run(engine, slot_infos)) and time.monotonic() < deadline:
        time.sleep(0.02)
    (tmp_path / "junk.bin").write_bytes(b"\0" * 64)
    with pytest.raises(StateError):
        run(engine, lambda s: restore_slot(s, 0, tmp_path / "junk.bin"))
    assert engine.context.memory_seq_pos_range(0) == (-1, -1)


def test_call_after_close_is_refused(model):
    engine = Engine(model, n_ctx=256, n_seq_max=1, n_gpu_layers=0)
    engine.close()
    with pytest.raises(ClosedError):
        engine.call(lambda s: None)
