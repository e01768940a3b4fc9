"""Audio through ``Llama`` and the server: real SmolLM2, the real libmtmd, a random-weight audio projector.

The projector (scripts/make_test_mmproj.py ``write_audio_mmproj``: a one-block Whisper encoder
with an ``ultravox`` projector) turns sound into noise embeddings of the text model's width:
the answers mean nothing, but they depend on the samples. libmtmd pads each clip with 30 s of
silence and encodes it in whole 30 s chunks, 25 tokens each for this projector, so a clip under
30 s is 25 tokens and one of 31 s is 50. WAVs are made here with the stdlib ``wave`` module; the
MP3 is the pinned tree's own test file. Errors must leave the Llama (and the server) usable.
"""

from __future__ import annotations

import base64
import io
import os
import struct
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from llama_ffi import Llama, ValidationError
from test_llama_vision import data_uri, image_chat, png_bytes, script, text_works  # noqa: F401 - fixtures

REPO = Path(__file__).resolve().parents[1]
MP3 = REPO / "vendor" / "llama.cpp" / "tools" / "mtmd" / "test-2.mp3"
ASK = "Transcribe."
RATE = 16000


@pytest.fixture(scope="module")
def audio_projector(tmp_path_factory, script):
    return script.write_audio_mmproj(tmp_path_factory.mktemp("mmproj") / "audio.gguf", 576, seed=0)


@pytest.fixture(scope="module")
def alm(model_path, audio_projector):
    with Llama(str(model_path), mmproj=str(audio_projector), n_ctx=1024, n_threads=2, verbose=False) as llm:
        yield llm


def wav_bytes(seconds: float, freq: float = 440.0, rate: int = RATE) -> bytes:
    """A sine tone as a 16-bit mono WAV file."""
    t = np.arange(int(seconds * rate)) / rate
    pcm = (np.sin(2 * np.pi * freq * t) * 8000).astype("<i2").tobytes()
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return out.getvalue()


def audio_chat(data: bytes, fmt: str = "wav", text: str = ASK) -> list[dict]:
    part = {"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(), "format": fmt}}
    return [{"role": "user", "content": [{"type": "text", "text": text}, part]}]


def prompt_tokens(llm, messages) -> int:
    return llm.create_chat_completion(messages, max_tokens=1, temperature=0)["usage"]["prompt_tokens"]


def text_only_tokens(llm) -> int:
    # the media part becomes a marker in its own text part, which the template puts on a new line
    return prompt_tokens(llm, [{"role": "user", "content": ASK + "\n"}])


def first_row(llm, messages) -> np.ndarray:
    """The logits the first answer token is sampled from."""
    rows = []

    def keep(ids, logits):
        if not rows:
            rows.append(np.array(logits, copy=True))
        return logits
    llm.create_chat_completion(messages, max_tokens=1, temperature=0, logits_processor=[keep])
    return rows[0]


def lying_flac(total_samples: int) -> bytes:
    """A FLAC whose STREAMINFO declares ``total_samples`` at 16 kHz mono, with no audio after it."""
    packed = (RATE << 44) | (0 << 41) | (15 << 36) | total_samples  # rate, channels - 1, bits - 1, total
    info = struct.pack(">HH", 4096, 4096) + bytes(6) + packed.to_bytes(8, "big") + bytes(16)
    return b"fLaC" + bytes([0x80, 0, 0, len(info)]) + info + b"\xff\xf8" + bytes(64)


def lying_mp3(n_frames: int, keep_bytes: int) -> bytes:
    """The tree's MP3, cut to ``keep_bytes``, its Info tag claiming ``n_frames`` frames."""
    if not MP3.is_file():
        pytest.skip(f"{MP3} missing")
    data = bytearray(MP3.read_bytes())
    tag = data.index(b"Info")
    struct.pack_into(">I", data, tag + 8, n_frames)
    return bytes(data[:keep_bytes])


# --- the projector ---------------------------------------------------------------------------
def test_the_projector_reports_audio_only(alm, audio_projector, script):
    mtmd = alm.mtmd
    assert mtmd.supports_audio and not mtmd.supports_vision
    assert mtmd.audio_sample_rate == script.AUDIO_SAMPLE_RATE == RATE
    assert "audio" in repr(mtmd) and "vision" not in repr(mtmd)
    from llama_ffi.native.mmproj_guard import check_mmproj

    metadata = check_mmproj(audio_projector, 576)
    assert metadata["clip.projector_type"] == "ultravox" and metadata["clip.has_audio_encoder"] is True
    with pytest.raises(ValidationError):  # made for a 320-wide model: refused at construction
        Llama(alm.model_path, mmproj=str(script.write_audio_mmproj(audio_projector.parent / "other.gguf", 320)),
              verbose=False)


def test_the_script_writes_the_audio_projector_from_the_command_line(script, tmp_path, audio_projector):
    out = tmp_path / "cli.gguf"
    assert script.main([str(out), "--audio"]) == 0
    assert out.read_bytes() == audio_projector.read_bytes()  # seeded: same arguments, same bytes


def test_libmtmd_counts_the_chunks_as_the_script_says(alm, script):
    mtmd = alm.mtmd
    for seconds, n_chunks in ((0.5, 1), (29.0, 1), (31.0, 2)):
        with mtmd.bitmap_from_bytes(wav_bytes(seconds)) as clip:
            assert clip.is_audio and clip.nx == int(seconds * RATE)
            with mtmd.tokenize(f"{ASK}\n{mtmd.marker}\n", [clip]) as chunks:
                audio = [c for c in chunks if c.type == "audio"]
        assert len(audio) == n_chunks and all(c.n_tokens == script.AUDIO_TOKENS_PER_CHUNK for c in audio)
        assert sum(c.n_tokens for c in audio) == script.audio_tokens(seconds)


# --- the happy path ----------------------------------------------------------------------------
def test_wav_chat_has_the_openai_shape_and_counts_the_audio_tokens(alm, script):
    out = alm.create_chat_completion(audio_chat(wav_bytes(1.0)), max_tokens=6, temperature=0.7, seed=3)
    assert out["object"] == "chat.completion"
    choice = out["choices"][0]
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length")
    usage = out["usage"]
    assert usage["prompt_tokens"] == text_only_tokens(alm) + script.audio_tokens(1.0)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert 1 <= usage["completion_tokens"] <= 6


def test_longer_audio_gives_more_tokens(alm, script):
    base = text_only_tokens(alm)
    short, long = prompt_tokens(alm, audio_chat(wav_bytes(2.0))), prompt_tokens(alm, audio_chat(wav_bytes(31.0)))
    assert long > short
    assert (short - base, long - base) == (script.audio_tokens(2.0), script.audio_tokens(31.0))


def test_the_answer_depends_on_the_sound_and_reuse_never_mixes_clips(alm):
    low, high = audio_chat(wav_bytes(1.0, freq=220.0)), audio_chat(wav_bytes(1.0, freq=1760.0))
    row_low = first_row(alm, low)
    row_high = first_row(alm, high)  # the same text before the audio: its prefix is reused
    assert alm.stats.last_reused > 0
    assert np.abs(row_low - row_high).max() > 1e-2  # the samples reach the model
    np.testing.assert_allclose(first_row(alm, low), row_low, atol=1e-3)  # and high's cells were not reused


def test_mp3_is_decoded(alm, script):
    if not MP3.is_file():
        pytest.skip(f"{MP3} missing")
    data = MP3.read_bytes()
    with alm.mtmd.bitmap_from_bytes(data) as clip:
        seconds = clip.nx / RATE
    assert 15 < seconds < 20  # the file is 17.4 s of speech, resampled to 16 kHz
    out = alm.create_chat_completion(audio_chat(data, fmt="mp3"), max_tokens=4, temperature=0)
    assert out["choices"][0]["finish_reason"] in ("stop", "length")
    assert out["usage"]["prompt_tokens"] == text_only_tokens(alm) + script.audio_tokens(seconds)


def test_a_wav_cut_inside_its_samples_is_the_shorter_clip(alm, script):
    # miniaudio clamps a WAV's declared length to the bytes present: what is there is the audio
    whole = wav_bytes(31.0)
    cut = whole[:len(whole) // 2]
    with alm.mtmd.bitmap_from_bytes(cut) as clip:
        assert abs(clip.nx - 15.5 * RATE) < RATE // 100
    assert prompt_tokens(alm, audio_chat(cut)) == text_only_tokens(alm) + script.audio_tokens(15.5)


def test_two_clips_in_one_message(alm, script):
    one = audio_chat(wav_bytes(1.0))
    two = audio_chat(wav_bytes(1.0))
    two[0]["content"].append(audio_chat(wav_bytes(0.5, freq=880.0))[0]["content"][1])
    # the second clip's tokens, and the template's separator before its marker
    assert prompt_tokens(alm, two) >= prompt_tokens(alm, one) + script.audio_tokens(0.5)


# --- errors: each a clear exception, and the Llama works afterwards -----------------------------
@pytest.mark.parametrize(("make", "fmt", "words"), [
    (lambda: wav_bytes(1.0)[:30], "wav", "could not decode"),  # cut inside the header
    (lambda: wav_bytes(1.0)[:44], "wav", "could not decode"),  # a header and no samples
    (lambda: wav_bytes(1.0), "ogg", "format"),
    (lambda: wav_bytes(1.0), "", "format"),
    (lambda: b"this is plain text, not audio", "wav", "could not decode"),
    (lambda: bytes(range(256)) * 4, "mp3", "could not decode"),
    (lambda: png_bytes(16, 16), "wav", "sent as audio but its bytes are image"),
    # lies a regressed guard would survive (the fatal ones run in a child, below)
    (lambda: lying_flac(RATE * 3601), "flac", "over the limit of 3600 s"),
    (lambda: lying_mp3(669, 3000), "mp3", "truncated or corrupt"),  # the real tag, the file cut short
])
def test_bad_audio_is_a_validation_error(alm, make, fmt, words):
    with pytest.raises(ValidationError, match=words):
        alm.create_chat_completion(audio_chat(make(), fmt=fmt), max_tokens=2)
    text_works(alm)
    assert alm.create_chat_completion(audio_chat(wav_bytes(0.5)), max_tokens=2)["usage"]["completion_tokens"] >= 1


def test_an_image_to_an_audio_only_projector(alm):
    with pytest.raises(ValidationError, match="no vision encoder"):
        alm.create_chat_completion(image_chat(data_uri(png_bytes(16, 16))), max_tokens=2)
    with pytest.raises(ValidationError, match="sent as image but its bytes are audio"):
        alm.create_chat_completion(image_chat(data_uri(wav_bytes(0.5), "image/png")), max_tokens=2)
    text_works(alm)


def test_headers_that_lie_about_the_length_never_reach_the_decoder(model_path, audio_projector):
    # Without the guard, libmtmd allocates the declared length and the process dies of
    # std::bad_alloc; so this runs in a child, where a regression fails the test, not the run.
    code = f"""
import base64, struct, sys
sys.path.insert(0, {str(REPO / "tests")!r})
from test_llama_audio import audio_chat, lying_flac, lying_mp3, MP3
from llama_ffi import Llama, ValidationError
llm = Llama({str(model_path)!r}, mmproj={str(audio_projector)!r}, n_ctx=256, n_threads=2, verbose=False)
cases = [("flac", lying_flac((1 << 36) - 1))] + ([("mp3", lying_mp3(0x100000, 3000))] if MP3.is_file() else [])
for fmt, data in cases:
    try:
        llm.create_chat_completion(audio_chat(data, fmt=fmt), max_tokens=1)
        print(fmt, "accepted")
    except ValidationError as exc:
        print(fmt, "refused")
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=180,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "accepted" not in done.stdout and "flac refused" in done.stdout


def test_audio_limits(model_path, audio_projector):
    with Llama(str(model_path), mmproj=str(audio_projector), n_ctx=512, n_threads=2, verbose=False,
               max_media_bytes=40_000, max_media_items=2) as llm:
        with pytest.raises(ValidationError, match="byte limit"):
            llm.create_chat_completion(audio_chat(wav_bytes(2.0)), max_tokens=2)  # 64 kB
        three = audio_chat(wav_bytes(0.5))
        three[0]["content"] += three[0]["content"][1:] * 2
        with pytest.raises(ValidationError, match="at most 2"):
            llm.create_chat_completion(three, max_tokens=2)
        text_works(llm)


# --- the server, through the Engine ------------------------------------------------------------
@pytest.fixture(scope="module")
def server(model_path, audio_projector):
    pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from llama_ffi.server.config import ModelSettings, ServerSettings
    from server_harness import running_server

    settings = ServerSettings(models=[ModelSettings(
        model=str(model_path), model_alias="audio", n_ctx=1024, n_parallel=2, n_gpu_layers=0, n_threads=2,
        mmproj=str(audio_projector))])
    with running_server(settings) as (url, _):
        yield url


def test_server_audio_chat_counts_as_llama_does_and_reports_audio(server, alm, script):
    import httpx

    def chat(messages, **body):
        return httpx.post(server + "/v1/chat/completions", timeout=120,
                          json={"model": "audio", "messages": messages, **body})

    messages = audio_chat(wav_bytes(1.0))
    out = chat(messages, max_tokens=5, temperature=0)
    assert out.status_code == 200, out.text
    body = out.json()
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["finish_reason"] in ("stop", "length")
    assert body["usage"]["prompt_tokens"] == prompt_tokens(alm, messages)
    longer = chat(audio_chat(wav_bytes(31.0)), max_tokens=1, temperature=0).json()
    assert longer["usage"]["prompt_tokens"] == body["usage"]["prompt_tokens"] + script.AUDIO_TOKENS_PER_CHUNK

    models = {m["id"]: m for m in httpx.get(server + "/v1/models", timeout=30).json()["data"]}
    assert models["audio"]["modalities"] == {"vision": False, "audio": True}
    props = httpx.get(server + "/props", params={"model": "audio"}, timeout=30).json()
    assert props["modalities"]["audio"] is True and props["modalities"]["vision"] is False

    for bad, words in ((audio_chat(wav_bytes(1.0)[:30]), "could not decode"),
                       (audio_chat(wav_bytes(1.0), fmt="ogg"), "format"),
                       (audio_chat(lying_flac(RATE * 3601), fmt="flac"), "over the limit"),
                       (image_chat(data_uri(png_bytes(16, 16))), "no vision encoder")):
        refused = chat(bad, max_tokens=2)
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["type"] == "invalid_request_error" and words in error["message"], error
    again = chat(messages, max_tokens=5, temperature=0)  # alive, and the same answer as before
    assert again.status_code == 200 and again.json()["choices"][0]["message"] == body["choices"][0]["message"]
