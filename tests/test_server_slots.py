"""llama-server's /slots routes: the slot list, and a slot's KV cells saved to a file, erased
and restored; a real server on the real small model, over a loopback socket."""

from __future__ import annotations

import json
import os
import time

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from server_harness import running_server

from llama_ffi.errors import ValidationError
from llama_ffi.server.config import ModelSettings, ServerSettings, parse_args

N_PARALLEL = 3
PROMPT = "A slot keeps the cells of its last request so the next one can reuse them. " * 6
GREEDY = {"temperature": 0, "seed": 7}
NO_EOS = {"0": -100, "2": -100}  # <|endoftext|>, <|im_end|>: keep a stream running


@pytest.fixture(scope="module")
def save_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("slots")


@pytest.fixture(scope="module")
def server(model_path, save_dir):
    settings = ServerSettings(slot_save_path=str(save_dir), models=[
        ModelSettings(model=str(model_path), model_alias="smol", n_ctx=2048, n_parallel=N_PARALLEL, n_gpu_layers=0)])
    with running_server(settings) as (url, srv):
        yield url, srv.registry.entries["smol"].engine


def slots(url: str) -> list[dict]:
    response = httpx.get(url + "/slots", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def action(url: str, slot: int, name: str, filename: str | None = None) -> httpx.Response:
    body = {} if filename is None else {"filename": filename}
    return httpx.post(f"{url}/slots/{slot}", params={"action": name}, json=body, timeout=60)


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


def complete(url: str, prompt: str, **extra) -> dict:
    body = {"prompt": prompt, "max_tokens": 4, **GREEDY, **extra}
    response = httpx.post(url + "/v1/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def erase_all(url: str) -> None:
    for slot in range(N_PARALLEL):
        assert action(url, slot, "erase").status_code == 200
    assert all(s["n_cached"] == 0 for s in slots(url))


def cached_during(engine, fn) -> int:
    """Prompt tokens the engine took from its prefix cache while ``fn`` ran."""
    before = engine.stats()["cached_prompt_tokens"]
    fn()
    return engine.stats()["cached_prompt_tokens"] - before


# --- GET /slots -------------------------------------------------------------------------------------
def test_slots_lists_every_slot_as_llama_server(server):
    url, engine = server
    erase_all(url)
    listed = slots(url)
    assert [s["id"] for s in listed] == list(range(N_PARALLEL))
    for s in listed:
        assert {"id", "id_task", "n_ctx", "is_processing", "params", "next_token"} <= set(s)
        assert s["n_ctx"] == engine.context.n_ctx_seq and s["is_processing"] is False and s["params"] is None
    out = complete(url, PROMPT)
    holding = [s for s in slots(url) if s["n_cached"]]
    assert len(holding) == 1  # the finished request's cells stay as a cached prefix
    usage, finish = out["usage"], out["choices"][0]["finish_reason"]
    last_undecoded = 1 if finish == "length" else 0  # a token sampled at the limit is never decoded
    assert holding[0]["n_cached"] == usage["prompt_tokens"] + usage["completion_tokens"] - last_undecoded


def test_a_running_request_shows_and_its_slot_refuses_every_action(server):
    url, _ = server
    assert action(url, 0, "save", "busy.bin").status_code == 200  # a file to try restoring
    body = {"prompt": "Count: 1, 2, 3,", "max_tokens": 400, "stream": True, "temperature": 0.5, "top_k": 17,
            "seed": 3, "logit_bias": NO_EOS}
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as stream:
        lines = stream.iter_lines()  # held: a dropped iterator closes the stream (and cancels)
        first = next(lines)
        assert "error" not in first and '"finish_reason":null' in first, first  # generating now
        busy = [s for s in slots(url) if s["is_processing"]]
        assert len(busy) == 1, busy
        slot = busy[0]
        assert slot["params"]["top_k"] == 17 and slot["params"]["temperature"] == pytest.approx(0.5)
        assert slot["params"]["n_predict"] == 400 and slot["id_task"] > 0 and slot["state"] in ("prefill", "decode")
        assert slot["next_token"]["has_next_token"] and 0 < slot["next_token"]["n_remain"] <= 400
        for name, filename in (("save", "busy.bin"), ("restore", "busy.bin"), ("erase", None)):
            error = error_of(action(url, slot["id"], name, filename), 409)
            assert error["code"] == "slot_busy" and "processing" in error["message"]
        assert any(not s["is_processing"] for s in slots(url))  # the other slots answer as usual
    deadline = time.monotonic() + 30
    while any(s["is_processing"] for s in slots(url)) and time.monotonic() < deadline:
        time.sleep(0.05)  # leaving the stream cancels the request at the next step
    assert not any(s["is_processing"] for s in slots(url))


def test_fail_on_no_slot(server):
    url, _ = server
    assert httpx.get(url + "/slots", params={"fail_on_no_slot": 1}, timeout=30).status_code == 200


# --- save, erase, restore -------------------------------------------------------------------------
def test_saved_slot_restored_into_another_slot_is_reused_as_a_prefix(server, save_dir):
    url, engine = server
    erase_all(url)
    first = complete(url, PROMPT)
    (holding,) = [s for s in slots(url) if s["n_cached"]]
    saved = action(url, holding["id"], "save", "prefix.bin")
    assert saved.status_code == 200, saved.text
    out = saved.json()
    assert out["id_slot"] == holding["id"] and out["filename"] == "prefix.bin"
    assert out["n_saved"] == holding["n_cached"] and out["n_written"] == os.path.getsize(save_dir / "prefix.bin")
    assert out["timings"]["save_ms"] >= 0
    assert not list(save_dir.glob("*.partial"))

    # control: with every slot erased, nothing of the prompt is cached
    erase_all(url)
    fresh = {}
    assert cached_during(engine, lambda: fresh.update(complete(url, PROMPT + " Again"))) == 0

    erase_all(url)
    target = (holding["id"] + 1) % N_PARALLEL
    restored = action(url, target, "restore", "prefix.bin")
    assert restored.status_code == 200, restored.text
    assert restored.json()["n_restored"] == holding["n_cached"] and restored.json()["id_slot"] == target
    assert [s["n_cached"] for s in slots(url) if s["id"] == target] == [holding["n_cached"]]
    again = {}
    reused = cached_during(engine, lambda: again.update(complete(url, PROMPT + " Again")))
    n_prompt = first["usage"]["prompt_tokens"]
    assert reused >= n_prompt - 1  # the whole shared prompt came from the restored cells
    assert again["choices"][0]["text"] == fresh["choices"][0]["text"]  # and they hold the right keys and values


def test_erase_reports_what_it_dropped(server):
    url, _ = server
    erase_all(url)
    complete(url, PROMPT)
    (holding,) = [s for s in slots(url) if s["n_cached"]]
    out = action(url, holding["id"], "erase")
    assert out.json() == {"id_slot": holding["id"], "n_erased": holding["n_cached"]}
    assert action(url, holding["id"], "erase").json()["n_erased"] == 0


@pytest.mark.parametrize("filename", ["../escape.bin", "..", "/etc/passwd", "a/b.bin", "a\\b.bin", ".hidden",
                                      "x..y", "", "name with space", "nul\x00byte", "é.bin", "a" * 200])
def test_file_names_that_are_not_plain_names_are_refused(server, save_dir, filename):
    url, _ = server
    before = set(os.listdir(save_dir.parent))
    for name in ("save", "restore"):
        error = error_of(action(url, 0, name, filename), 400)
        assert error["param"] == "filename"
    assert set(os.listdir(save_dir.parent)) == before
    assert not (save_dir.parent / "escape.bin").exists()


def test_a_link_out_of_the_folder_is_refused(server, save_dir, tmp_path):
    url, _ = server
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"")
    (save_dir / "link.bin").symlink_to(outside)
    try:
        error = error_of(action(url, 0, "save", "link.bin"), 400)
        assert "outside" in error["message"] and outside.read_bytes() == b""
    finally:
        (save_dir / "link.bin").unlink()


def test_a_folder_in_the_way_is_a_400(server, save_dir):
    url, _ = server
    (save_dir / "taken").mkdir()
    error = error_of(action(url, 0, "save", "taken"), 400)
    assert "could not write taken" in error["message"] and (save_dir / "taken").is_dir()
    assert error_of(action(url, 0, "restore", "taken"), 404)["code"] == "file_not_found"


def test_restore_refuses_missing_and_broken_files_and_leaves_the_slot_empty(server, save_dir):
    url, _ = server
    erase_all(url)
    assert error_of(action(url, 0, "restore", "missing.bin"), 404)["code"] == "file_not_found"
    (save_dir / "junk.bin").write_bytes(b"not a slot file at all" * 10)
    assert error_of(action(url, 0, "restore", "junk.bin"), 400)["code"] == "invalid_slot_file"
    complete(url, PROMPT)
    (holding,) = [s for s in slots(url) if s["n_cached"]]
    assert action(url, holding["id"], "save", "whole.bin").status_code == 200
    data = (save_dir / "whole.bin").read_bytes()
    (save_dir / "cut.bin").write_bytes(data[: len(data) // 2])
    error = error_of(action(url, holding["id"], "restore", "cut.bin"), 400)
    assert error["code"] == "invalid_slot_file"
    assert [s["n_cached"] for s in slots(url) if s["id"] == holding["id"]] == [0]  # not half restored
    assert complete(url, "Still fine?")["choices"][0]["finish_reason"] in ("stop", "length")


@pytest.mark.parametrize("path, params, body", [
    ("/slots/99", {"action": "erase"}, {}), ("/slots/-1", {"action": "erase"}, {}),
    ("/slots/x", {"action": "erase"}, {}), ("/slots/0", {"action": "delete"}, {}), ("/slots/0", {}, {}),
    ("/slots/0", {"action": "save"}, {}), ("/slots/0", {"action": "save"}, {"filename": 5}),
    ("/slots/0", {"action": "save"}, {"filename": "a.bin", "other": 1}),
])
def test_bad_slot_requests_are_400(server, path, params, body):
    url, _ = server
    error_of(httpx.post(url + path, params=params, json=body, timeout=30), 400)


def test_unknown_model_is_404(server):
    url, _ = server
    assert httpx.get(url + "/slots", params={"model": "nope"}, timeout=30).status_code == 404


def test_slot_files_are_off_without_a_save_path(model_path):
    settings = ServerSettings(models=[ModelSettings(model=str(model_path), n_ctx=512, n_parallel=1, n_gpu_layers=0)])
    with running_server(settings) as (url, _):
        for name in ("save", "restore"):
            error = error_of(action(url, 0, name, "a.bin"), 400)
            assert "--slot-save-path" in error["message"]
        assert action(url, 0, "erase").json() == {"id_slot": 0, "n_erased": 0}  # needs no folder


def test_save_path_option(model_path, tmp_path):
    settings = parse_args(["-m", str(model_path), "--slot-save-path", str(tmp_path)])
    assert settings.slot_save_path == str(tmp_path)
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"slot_save_path": str(tmp_path), "models": [{"model": str(model_path)}]}))
    assert parse_args(["--config-file", str(config)]).slot_save_path == str(tmp_path)
    with pytest.raises(ValidationError, match="slot_save_path"):
        parse_args(["-m", str(model_path), "--slot-save-path", str(tmp_path / "missing")])


# --- the file format is llama.cpp's own ---------------------------------------------------------
def _fill(context, seq_id: int, tokens) -> None:
    from llama_ffi import Batch

    batch = Batch(len(tokens))
    batch.add(tokens, 0, seq_id, logits="last")
    context.decode(batch)


def test_slot_files_are_llama_cpps_sequence_state_files(context, model, tmp_path):
    """Written and read in Python (llama.cpp's file loader asserts on a truncated file), in
    the format llama.cpp's own llama_state_seq_save_file / _load_file use, both ways."""
    from llama_ffi.native._lib import ffi

    tokens = model.vocab.tokenize("Sequence state files are shared with llama-server.", add_special=False)
    _fill(context, 0, tokens)
    ours = tmp_path / "ours.bin"
    size = context.save_seq_state_file(ours, 0, tokens)
    assert size == ours.stat().st_size
    lib = context._lib
    out, count = ffi.new("llama_token[]", 64), ffi.new("size_t *")
    assert lib.llama_state_seq_load_file(context.ptr, str(ours).encode(), 1, out, 64, count) == size
    assert ffi.unpack(out, count[0]) == tokens
    assert context.memory_seq_pos_range(1) == (0, len(tokens) - 1)

    theirs = tmp_path / "theirs.bin"
    ids = ffi.new("llama_token[]", tokens)
    assert lib.llama_state_seq_save_file(context.ptr, str(theirs).encode(), 0, ids, len(tokens)) == size
    assert theirs.read_bytes() == ours.read_bytes()
    assert context.load_seq_state_file(theirs, 2) == tokens
    assert context.memory_seq_pos_range(2) == (0, len(tokens) - 1)


def test_metrics_label_slot_actions_by_route_template(server):
    """/slots/0 and /slots/1 count under one label, not one per slot id (nor "other")."""
    url, _ = server

    def count() -> float:
        text = httpx.get(url + "/metrics", timeout=30).text
        line = [x for x in text.splitlines() if x.startswith('llama_ffi_http_requests_total{path="/slots/{id_slot}",status="200"}')]
        return float(line[0].rsplit(" ", 1)[1]) if line else 0.0

    before = count()
    assert action(url, 0, "erase").status_code == 200
    assert action(url, 1, "erase").status_code == 200
    assert count() == before + 2
    assert 'path="/slots/0"' not in httpx.get(url + "/metrics", timeout=30).text
