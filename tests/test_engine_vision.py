"""Images through the Engine and the server: real SmolLM2, the real libmtmd, a random-weight projector.

The projector (scripts/make_test_mmproj.py) turns an image into noise embeddings: answers mean
nothing, but they depend on the pixels. The fixtures, PNG maker and chat builders are those of
tests/test_llama_vision.py, which also skips cleanly when libmtmd is not built.
"""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from llama_ffi.chat.media import MediaInput
from llama_ffi.engine import Engine
from llama_ffi.errors import ValidationError
from llama_ffi.generation.sampling import SamplingParams
from llama_ffi.llama.vision import media_prompt
from test_llama_vision import ASK, data_uri, image_chat, png_bytes, projector, script, vlm  # noqa: F401 - fixtures

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from server_harness import running_server  # noqa: E402

GREEDY = SamplingParams(temperature=0)
TEXT_PROMPT = "<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\n"
MAX_MEDIA_BYTES = 64_000
MAX_MEDIA_ITEMS = 3


@pytest.fixture(scope="module")
def engine(model_path, projector):
    with Engine(str(model_path), n_ctx=2048, n_seq_max=3, n_gpu_layers=0, n_threads=2, mmproj=str(projector)) as eng:
        yield eng


def image_prompt(engine, *images: bytes, text: str = ASK):
    markers = "".join(f"\n{engine.mtmd.marker}" for _ in images)
    prompt = f"<|im_start|>user\n{text}{markers}<|im_end|>\n<|im_start|>assistant\n"
    with engine.media_lock:
        return media_prompt(engine.mtmd, engine.model.vocab, prompt,
                            [MediaInput("image", data, "test") for data in images], add_bos=False)


def image_completion(engine, data: bytes, **kwargs):
    return engine.complete_sync("", media=image_prompt(engine, data), sampling=GREEDY, **kwargs)


# --- the engine ------------------------------------------------------------------------------
def test_an_image_request_completes_and_counts_the_image(engine, script):
    media = image_prompt(engine, png_bytes(40, 30, seed=1))
    n_image = (script.IMAGE_SIZE // script.PATCH_SIZE) ** 2
    expected = len(media.prefix) + sum(c.n_tokens for c in media.chunks)
    assert sum(c.n_tokens for c in media.media_chunks) == n_image
    out = engine.complete_sync("", media=media, max_tokens=6, sampling=SamplingParams(temperature=0.7, seed=3))
    assert out.finish_reason in ("stop", "length") and 1 <= len(out.tokens) <= 6
    assert out.prompt_tokens == expected
    assert out.cached_tokens == 0
    assert media.chunks.closed  # the engine freed the chunks once evaluated


def test_same_image_same_answer_other_image_other_logits(engine):
    a, b = png_bytes(32, 32, seed=10), png_bytes(32, 32, seed=11)
    first = image_completion(engine, a, max_tokens=8, logprobs=3)
    again = image_completion(engine, a, max_tokens=8, logprobs=3)
    other = image_completion(engine, b, max_tokens=8, logprobs=3)
    assert first.tokens == again.tokens
    assert first.logprobs[0][1] == pytest.approx(again.logprobs[0][1], abs=1e-4)
    # the image's cells are never reused for another image (no cached prefix past the text)
    assert other.tokens != first.tokens or abs(other.logprobs[0][1] - first.logprobs[0][1]) > 1e-4 \
        or other.logprobs[0][2] != first.logprobs[0][2]


def test_a_repeated_image_reuses_its_cells_and_another_image_does_not(engine, script):
    a, b = png_bytes(30, 30, seed=21), png_bytes(30, 30, seed=22)
    n_prefix = len(image_prompt(engine, a).prefix)  # the text before the image
    n_image = (script.IMAGE_SIZE // script.PATCH_SIZE) ** 2
    first = image_completion(engine, a, max_tokens=6, logprobs=2)
    again = image_completion(engine, a, max_tokens=6, logprobs=2)
    # the text and the image are kept; the text after the image is evaluated again
    assert again.cached_tokens == n_prefix + n_image
    assert again.tokens == first.tokens
    assert again.logprobs[0][1] == pytest.approx(first.logprobs[0][1], abs=1e-4)
    other = image_completion(engine, b, max_tokens=6)
    assert other.cached_tokens <= n_prefix  # another image: nothing past the text before it
    assert engine.complete_sync(TEXT_PROMPT, max_tokens=4, sampling=GREEDY).finish_reason in ("stop", "length")


def test_image_and_text_requests_run_together(engine):
    alone = engine.complete_sync(TEXT_PROMPT, max_tokens=12, sampling=GREEDY)
    image_alone = image_completion(engine, png_bytes(24, 24, seed=5), max_tokens=10)

    async def both():
        return await asyncio.gather(
            engine.complete("", media=image_prompt(engine, png_bytes(24, 24, seed=5)), max_tokens=10,
                            sampling=GREEDY),
            engine.complete(TEXT_PROMPT, max_tokens=12, sampling=GREEDY))

    image_out, text_out = asyncio.run(both())
    assert text_out.tokens == alone.tokens and text_out.text == alone.text
    assert image_out.tokens == image_alone.tokens
    assert image_out.finish_reason in ("stop", "length")


def test_media_without_projector_and_from_another_projector_are_refused(model_path, engine):
    with Engine(str(model_path), n_ctx=256, n_seq_max=1, n_gpu_layers=0, n_threads=2) as plain:
        assert plain.mtmd is None
        media = image_prompt(engine, png_bytes(16, 16))
        with pytest.raises(ValidationError, match="no projector"):
            plain.submit("", media=media)
        assert media.chunks.closed
    with pytest.raises(ValidationError, match="mmproj file does not exist"):
        Engine(str(model_path), n_ctx=256, n_seq_max=1, n_gpu_layers=0, mmproj="/nonexistent/proj.gguf")


# --- the server ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(model_path, projector):
    from llama_ffi.server.config import ModelSettings, ServerSettings

    settings = ServerSettings(models=[
        ModelSettings(model=str(model_path), model_alias="vis", n_ctx=2048, n_parallel=2, n_gpu_layers=0, n_threads=2,
                      mmproj=str(projector), max_media_bytes=MAX_MEDIA_BYTES, max_media_items=MAX_MEDIA_ITEMS),
        ModelSettings(model=str(model_path), model_alias="text", n_ctx=512, n_parallel=1, n_gpu_layers=0,
                      n_threads=2)])
    with running_server(settings) as (url, _):
        yield url


def chat(url: str, messages, model: str = "vis", **body) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", json={"model": model, "messages": messages, **body}, timeout=120)


def error_of(response: httpx.Response, match: str) -> dict:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert match in error["message"], error["message"]
    return error


def test_server_image_chat_counts_as_llama_does(server, vlm):
    messages = image_chat(data_uri(png_bytes(40, 30, seed=1)))
    out = chat(server, messages, max_tokens=5, temperature=0)
    assert out.status_code == 200, out.text
    body = out.json()
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["finish_reason"] in ("stop", "length")
    expected = vlm.create_chat_completion(messages, max_tokens=1, temperature=0)["usage"]["prompt_tokens"]
    assert body["usage"]["prompt_tokens"] == expected


def test_server_streams_an_image_chat_with_two_choices(server):
    # (the choices are not compared token for token: like text requests, sequences whose cells
    # sit elsewhere in the shared KV cache may differ in the last float bits)
    messages = image_chat(data_uri(png_bytes(32, 32, seed=2)))
    one = chat(server, messages, max_tokens=6, temperature=0).json()
    whole = chat(server, messages, max_tokens=6, temperature=0, n=2).json()
    assert [c["index"] for c in whole["choices"]] == [0, 1]
    assert all(c["message"]["content"] and c["finish_reason"] in ("stop", "length") for c in whole["choices"])
    assert whole["usage"]["prompt_tokens"] == one["usage"]["prompt_tokens"]  # one prompt, sent twice
    with httpx.stream("POST", server + "/v1/chat/completions", timeout=120, json={
            "model": "vis", "messages": messages, "max_tokens": 6, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}) as r:
        assert r.status_code == 200
        chunks = [json.loads(line[6:]) for line in r.iter_lines()
                  if line.startswith("data: ") and line != "data: [DONE]"]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text and chunks[-1]["usage"]["prompt_tokens"] == one["usage"]["prompt_tokens"]
    assert any(c["choices"] and c["choices"][0]["finish_reason"] in ("stop", "length") for c in chunks)


def test_server_modalities(server):
    models = {m["id"]: m for m in httpx.get(server + "/v1/models", timeout=30).json()["data"]}
    assert models["vis"]["modalities"] == {"vision": True, "audio": False}
    assert models["text"]["modalities"] == {"vision": False, "audio": False}
    props = httpx.get(server + "/props", params={"model": "vis"}, timeout=30).json()
    assert props["modalities"]["vision"] is True


def test_server_refusals_are_400_and_the_server_lives_on(server, tmp_path):
    png = png_bytes(16, 16)
    path = tmp_path / "a.png"
    path.write_bytes(png)
    error_of(chat(server, image_chat(data_uri(png)), model="text"), "no projector (mmproj)")
    error_of(chat(server, image_chat(f"file://{path}")), "data URI")
    error_of(chat(server, image_chat(str(path))), "data URI")
    error_of(chat(server, image_chat("https://example.com/a.png")), "data URI")
    error_of(chat(server, image_chat(data_uri(png, "text/plain"))), "not an image type")
    error_of(chat(server, image_chat("data:image/png;base64,@@@not base64@@@")), "base64")
    error_of(chat(server, image_chat(data_uri(b"\x89PNG\r\n\x1a\n" + b"\0" * 64))), "media #1")
    error_of(chat(server, image_chat(data_uri(b"just some text, not an image"))), "could not decode")
    big = png_bytes(200, 200, seed=3)
    assert len(big) > MAX_MEDIA_BYTES
    error_of(chat(server, image_chat(data_uri(big))), "byte limit")
    error_of(chat(server, image_chat(*[data_uri(png)] * (MAX_MEDIA_ITEMS + 1))), "too many")
    error_of(chat(server, [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": "x"}},
                                                         {"type": "image_url", "image_url": {"url": data_uri(png)}}]}]),
             "not supported")
    wav = b"RIFF" + (36).to_bytes(4, "little") + b"WAVEfmt " + bytes(28)
    audio = [{"role": "user", "content": [{"type": "text", "text": "Listen."}, {"type": "input_audio", "input_audio": {
        "data": base64.b64encode(wav).decode(), "format": "wav"}}]}]
    error_of(chat(server, audio), "no audio encoder")  # the test projector has vision only
    # alive, for text and for images
    assert chat(server, [{"role": "user", "content": "Say hi."}], max_tokens=3, seed=1).status_code == 200
    assert chat(server, image_chat(data_uri(png)), max_tokens=3, seed=1).status_code == 200
    assert chat(server, [{"role": "user", "content": "Say hi."}], model="text", max_tokens=3, seed=1).status_code == 200


def test_clip_model_path_is_the_projector(model_path, projector):
    from llama_ffi.server.config import ModelSettings

    settings = ModelSettings.from_dict({"model": str(model_path), "clip_model_path": str(projector)}, "models[0]")
    assert settings.mmproj == str(projector) and settings.engine_config().mmproj == str(projector)
    with pytest.raises(ValidationError, match="mmproj file not found"):
        ModelSettings.from_dict({"model": str(model_path), "mmproj": "/nonexistent.gguf"}, "models[0]")
