"""Images through ``Llama``: real SmolLM2, the real libmtmd, a random-weight projector.

The projector (scripts/make_test_mmproj.py) turns an image into noise embeddings of the text
model's width: the answers mean nothing, but they depend on the pixels, which is what prefix
reuse must respect. PNGs are made here (zlib + struct); errors must leave the Llama usable.
"""

from __future__ import annotations

import base64
import importlib.util
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from llama_ffi import ContextOverflowError, Llama, Llava15ChatHandler, MtmdChatHandler, ValidationError

REPO = Path(__file__).resolve().parents[1]
ASK = "Describe this image."


@pytest.fixture(scope="module")
def script():
    try:
        from llama_ffi.native import _mtmd_lib

        _mtmd_lib.load_mtmd()
    except Exception as exc:  # noqa: BLE001 - any reason it cannot load is a reason to skip
        pytest.skip(f"libmtmd not available ({type(exc).__name__}: {' '.join(str(exc).split())[:300]}); "
                    "scripts/build_libllama.py builds it")
    if not (REPO / "vendor" / "llama.cpp" / "gguf-py").exists():
        pytest.skip("pinned llama.cpp tree (its gguf-py) missing: run scripts/setup.sh")
    spec = importlib.util.spec_from_file_location("make_test_mmproj", REPO / "scripts" / "make_test_mmproj.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def projector(tmp_path_factory, script):
    return script.write_mmproj(tmp_path_factory.mktemp("mmproj") / "proj.gguf", 576, seed=0)


@pytest.fixture(scope="module")
def vlm(model_path, projector):
    with Llama(str(model_path), mmproj=str(projector), n_ctx=1024, n_threads=2, verbose=False) as llm:
        yield llm


def png_bytes(width: int, height: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, 256, size=(height, width * 3), dtype=np.uint8)
    raw = b"".join(b"\0" + row.tobytes() for row in rows)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def image_chat(*urls: str, text: str = ASK) -> list[dict]:
    parts = [{"type": "text", "text": text}] + [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    return [{"role": "user", "content": parts}]


def first_row(llm, messages, **options) -> np.ndarray:
    """The logits the first answer token is sampled from."""
    rows = []

    def keep(ids, logits):
        if not rows:
            rows.append(np.array(logits, copy=True))
        return logits
    llm.create_chat_completion(messages, max_tokens=1, temperature=0, logits_processor=[keep], **options)
    return rows[0]


def greedy(llm, messages, n: int = 12) -> str:
    return llm.create_chat_completion(messages, max_tokens=n, temperature=0)["choices"][0]["message"]["content"]


def text_works(llm) -> None:
    out = llm.create_chat_completion([{"role": "user", "content": "Say hi."}], max_tokens=4, temperature=0, seed=1)
    assert out["choices"][0]["message"]["role"] == "assistant"
    assert out["usage"]["completion_tokens"] >= 1


# --- the happy path ----------------------------------------------------------------------------
def test_image_chat_has_the_openai_shape_and_counts_the_image_tokens(vlm, script):
    n_image = (script.IMAGE_SIZE // script.PATCH_SIZE) ** 2  # LLaVA: one embedding per patch
    out = vlm.create_chat_completion(image_chat(data_uri(png_bytes(40, 30, seed=1))), max_tokens=6,
                                     temperature=0.7, seed=3)
    assert out["object"] == "chat.completion" and out["id"].startswith("chatcmpl-")
    choice = out["choices"][0]
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length")
    # the same chat with the text only: the image adds exactly its embeddings
    text_only = vlm.create_chat_completion([{"role": "user", "content": ASK + "\n"}], max_tokens=1, temperature=0)
    usage = out["usage"]
    assert usage["prompt_tokens"] == text_only["usage"]["prompt_tokens"] + n_image
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert 1 <= usage["completion_tokens"] <= 6


def test_the_answer_depends_on_the_image_and_reuse_never_mixes_images(vlm):
    a, b = data_uri(png_bytes(32, 32, seed=10)), data_uri(png_bytes(32, 32, seed=11))
    row_a = first_row(vlm, image_chat(a))
    row_b = first_row(vlm, image_chat(b))  # same text before the image: its prefix is reused
    assert vlm.stats.last_reused > 0
    row_a_again = first_row(vlm, image_chat(a))
    assert np.abs(row_a - row_b).max() > 1e-2  # the pixels reach the model
    np.testing.assert_allclose(row_a_again, row_a, atol=1e-3)  # and B's cells were not reused for A
    assert greedy(vlm, image_chat(a)) == greedy(vlm, image_chat(a))
    # a fresh Llama, whose cache never saw B, agrees with the reused one
    with Llama(vlm.model_path, mmproj=str(vlm.mtmd.path), n_ctx=1024, n_threads=2, verbose=False) as fresh:
        np.testing.assert_allclose(first_row(fresh, image_chat(a)), row_a, atol=1e-3)


def test_file_urls_paths_and_two_images(vlm, tmp_path):
    data = png_bytes(24, 24, seed=5)
    path = tmp_path / "picture.png"
    path.write_bytes(data)
    row_uri = first_row(vlm, image_chat(data_uri(data)))
    np.testing.assert_allclose(first_row(vlm, image_chat(path.as_uri())), row_uri, atol=1e-3)
    np.testing.assert_allclose(first_row(vlm, image_chat(str(path))), row_uri, atol=1e-3)
    one = vlm.create_chat_completion(image_chat(str(path)), max_tokens=1)["usage"]["prompt_tokens"]
    two = vlm.create_chat_completion(image_chat(str(path), data_uri(png_bytes(8, 8))), max_tokens=1)
    assert two["usage"]["prompt_tokens"] > one


def test_stream_yields_chunks_that_add_up_to_the_answer(vlm):
    messages = image_chat(data_uri(png_bytes(16, 16, seed=2)))
    whole = greedy(vlm, messages, n=8)
    chunks = list(vlm.create_chat_completion(messages, max_tokens=8, temperature=0, stream=True))
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == whole


def test_grammar_logprobs_and_seeded_sampling_work_with_an_image(vlm):
    import json

    messages = image_chat(data_uri(png_bytes(16, 16, seed=4)), text="Answer in JSON.")
    out = vlm.create_chat_completion(messages, max_tokens=24, temperature=0.8, seed=7, logprobs=True, top_logprobs=2,
                                     response_format={"type": "json_object"})
    content = out["choices"][0]["message"]["content"]
    if out["choices"][0]["finish_reason"] == "stop":
        assert isinstance(json.loads(content), dict)
    else:
        assert content.lstrip().startswith("{")
    entries = out["choices"][0]["logprobs"]["content"]
    assert len(entries) == out["usage"]["completion_tokens"] and all(e["logprob"] <= 0 for e in entries)
    again = vlm.create_chat_completion(messages, max_tokens=24, temperature=0.8, seed=7,
                                       response_format={"type": "json_object"})
    assert again["choices"][0]["message"]["content"] == content


def test_a_text_chat_on_a_vision_llama_is_unchanged(vlm, llama):
    messages = [{"role": "user", "content": "Name a colour."}]
    assert greedy(vlm, messages, n=6) == greedy(llama, messages, n=6)


# --- errors: each a clear exception, and the Llama works afterwards -----------------------------
def wav_bytes() -> bytes:
    pcm = (np.sin(np.arange(1600) / 5) * 8000).astype("<i2").tobytes()
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)  # PCM, mono, 16 kHz, 16 bit
    return b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVEfmt " + fmt + b"data" + struct.pack("<I", len(pcm)) + pcm


@pytest.mark.parametrize(("url", "words"), [
    ("https://example.com/cat.png", "remote"),
    ("http://example.com/cat.png", "remote"),
    ("data:text/plain;base64,aGVsbG8=", "image type"),
    ("data:image/png;base64,!!!notbase64", "base64"),
    ("data:image/png,rawbytes", "base64"),
    (data_uri(b"this is not an image at all"), "could not decode"),
    (data_uri(png_bytes(16, 16)[:60]), "could not decode"),
    ("relative/picture.png", "absolute"),
    ("/no/such/picture.png", "cannot read"),
    ("ftp://host/picture.png", "not supported"),
])
def test_bad_images_are_validation_errors(vlm, url, words):
    with pytest.raises(ValidationError, match=words):
        vlm.create_chat_completion(image_chat(url), max_tokens=2)
    text_works(vlm)


def test_media_limits(model_path, projector, script):
    n_image = (script.IMAGE_SIZE // script.PATCH_SIZE) ** 2
    with Llama(str(model_path), mmproj=str(projector), n_ctx=512, n_threads=2, verbose=False,
               max_media_bytes=2000, max_media_items=40) as llm:
        with pytest.raises(ValidationError, match="byte limit"):
            llm.create_chat_completion(image_chat(data_uri(png_bytes(64, 64))), max_tokens=2)
        small = data_uri(png_bytes(4, 4))
        with pytest.raises(ValidationError, match="at most 40"):
            llm.create_chat_completion(image_chat(*[small] * 41), max_tokens=2)
        too_many = 512 // n_image + 1  # their positions alone pass the context
        with pytest.raises(ContextOverflowError):
            llm.create_chat_completion(image_chat(*[small] * too_many), max_tokens=2)
        text_works(llm)
        assert llm.create_chat_completion(image_chat(small), max_tokens=2)["usage"]["prompt_tokens"] > n_image
    with pytest.raises(ValidationError, match="max_media_items"):
        Llama(str(model_path), max_media_items=0, verbose=False)


def test_default_limits_are_20_mb_and_16_items(vlm):
    assert (vlm.settings.max_media_bytes, vlm.settings.max_media_items) == (20 << 20, 16)
    huge = "data:image/png;base64," + "A" * ((20 << 20) // 3 * 4 + 400)
    with pytest.raises(ValidationError, match="byte limit"):
        vlm.create_chat_completion(image_chat(huge), max_tokens=2)
    with pytest.raises(ValidationError, match="at most 16"):
        vlm.create_chat_completion(image_chat(*["data:image/png;base64,AAAA"] * 17), max_tokens=2)


def test_audio_parts_need_an_audio_projector(vlm):
    audio = [{"role": "user", "content": [{"type": "text", "text": "Transcribe."}, {
        "type": "input_audio", "input_audio": {"data": base64.b64encode(wav_bytes()).decode(), "format": "wav"}}]}]
    with pytest.raises(ValidationError, match="no audio encoder"):
        vlm.create_chat_completion(audio, max_tokens=2)
    audio[0]["content"][1]["input_audio"]["format"] = "ogg"
    with pytest.raises(ValidationError, match="format"):
        vlm.create_chat_completion(audio, max_tokens=2)
    with pytest.raises(ValidationError, match="sent as image but its bytes are audio"):
        vlm.create_chat_completion(image_chat(data_uri(wav_bytes())), max_tokens=2)
    text_works(vlm)


def test_the_marker_typed_by_a_user_cannot_smuggle_a_missing_image(vlm):
    messages = image_chat(data_uri(png_bytes(8, 8)), text="look: <__media__>")
    with pytest.raises(ValidationError, match="marker"):
        vlm.create_chat_completion(messages, max_tokens=2)
    text_works(vlm)


def test_a_llama_without_mmproj_names_it(llama):
    with pytest.raises(ValidationError, match="mmproj") as info:
        llama.create_chat_completion(image_chat(data_uri(png_bytes(8, 8))), max_tokens=2)
    assert info.value.param == "mmproj"
    text_works(llama)


def test_projector_problems_fail_at_construction(model_path, script, tmp_path):
    with pytest.raises(ValidationError, match="mmproj"):
        Llama(str(model_path), mmproj=str(tmp_path / "missing.gguf"), verbose=False)
    other = script.write_mmproj(tmp_path / "other.gguf", 320, seed=0)  # made for a model 320 wide
    with pytest.raises(ValidationError):
        Llama(str(model_path), mmproj=str(other), verbose=False)


def test_the_projector_closes_with_the_llama(model_path, projector):
    llm = Llama(str(model_path), mmproj=str(projector), n_ctx=512, verbose=False)
    mtmd = llm.mtmd
    assert mtmd is not None and not mtmd.closed and mtmd.supports_vision
    llm.close()
    assert mtmd.closed
    llm.close()  # twice is fine


# --- llama-cpp-python's spelling -----------------------------------------------------------------
def test_llava15_chat_handler_carries_the_projector(model_path, projector, vlm):
    handler = Llava15ChatHandler(clip_model_path=str(projector), verbose=False)
    assert isinstance(handler, MtmdChatHandler)
    messages = image_chat(data_uri(png_bytes(20, 20, seed=7)))
    with Llama(str(model_path), chat_handler=handler, n_ctx=1024, n_threads=2, verbose=False) as llm:
        assert llm.chat_handler is handler and llm.mtmd is not None
        assert greedy(llm, messages) == greedy(vlm, messages)
    with pytest.raises(ValidationError, match="different projectors"):
        Llama(str(model_path), chat_handler=handler, mmproj="/elsewhere/proj.gguf", verbose=False)


def test_from_pretrained_fetches_the_projector_from_the_same_repo(monkeypatch, tmp_path):
    from llama_ffi.llama import hub

    calls = []

    def fake_download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename))
        return [tmp_path / filename.replace("*", "x")]
    made = {}

    class Recorder:
        def __init__(self, **kwargs):
            made.update(kwargs)
    monkeypatch.setattr(hub, "download", fake_download)
    hub.from_pretrained(Recorder, "org/vlm-GGUF", "*Q4_K_M.gguf", mmproj="mmproj-*.gguf", n_ctx=2048)
    assert calls == [("org/vlm-GGUF", "*Q4_K_M.gguf"), ("org/vlm-GGUF", "mmproj-*.gguf")]
    assert made == {"model_path": str(tmp_path / "xQ4_K_M.gguf"), "mmproj": str(tmp_path / "mmproj-x.gguf"),
                    "n_ctx": 2048}
    handler = Llava15ChatHandler.from_pretrained("org/vlm-GGUF", "*mmproj*", verbose=False)
    assert calls[-1] == ("org/vlm-GGUF", "*mmproj*")
    assert handler.clip_model_path == str(tmp_path / "xmmprojx")


# --- the command line -------------------------------------------------------------------------
def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "llama_ffi.cli", *args], capture_output=True, text=True,
                          env=env, timeout=180, cwd=REPO, input="")


def test_cli_run_and_chat_take_an_image(model_path, projector, tmp_path, vlm):
    path = tmp_path / "in.png"
    path.write_bytes(png_bytes(20, 20, seed=9))
    common = ["--model", str(model_path), "--mmproj", str(projector), "--image", str(path), "--temp", "0",
              "--max-tokens", "6", "--n-ctx", "1024", "--device", "cpu"]
    done = cli("run", ASK, *common)
    assert done.returncode == 0, done.stderr
    expected = greedy(vlm, image_chat(str(path)), n=6)
    assert done.stdout.strip() == expected.strip()
    chat = subprocess.run([sys.executable, "-m", "llama_ffi.cli", "chat", *common], input=f"{ASK}\n/exit\n",
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=180,
                          cwd=REPO)
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout.strip() == expected.strip()


def test_cli_image_usage_errors(model_path, projector, tmp_path):
    no_proj = cli("run", "hi", "--model", str(model_path), "--image", str(tmp_path / "x.png"))
    assert no_proj.returncode == 2 and "--mmproj" in no_proj.stderr
    missing = cli("run", "hi", "--model", str(model_path), "--mmproj", str(projector), "--image",
                  str(tmp_path / "none.png"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a picture")
    bad = cli("run", "hi", "--model", str(model_path), "--mmproj", str(projector), "--image", str(junk),
              "--n-ctx", "1024")
    assert bad.returncode == 1 and "could not decode" in bad.stderr and "Traceback" not in bad.stderr
