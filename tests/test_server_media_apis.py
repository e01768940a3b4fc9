"""Images through ``/v1/responses`` (``input_image``) and ``/v1/messages`` (Anthropic ``image``
blocks): the official ``openai`` and ``anthropic`` clients against a live server running the real
SmolLM2 with a real random-weight projector (scripts/make_test_mmproj.py), over a loopback socket.

Both routes translate to a chat request and reuse the chat route's media path, so the image
counts exactly its embeddings (``script.IMAGE_SIZE // script.PATCH_SIZE`` squared) in the usage,
and every refusal is a 400 in the route's own error shape. The projector's answers mean nothing;
the fixtures and PNG maker are those of tests/test_llama_vision.py (which skips cleanly when
libmtmd is not built).
"""

from __future__ import annotations

import base64

import pytest

from test_llama_vision import ASK, data_uri, png_bytes, projector, script  # noqa: F401 - fixtures

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from pydantic import TypeAdapter  # noqa: E402
from test_engine_vision import MAX_MEDIA_BYTES, MAX_MEDIA_ITEMS, server  # noqa: E402,F401 - the server fixture

from openai.types.responses import Response, ResponseStreamEvent  # noqa: E402

PNG = png_bytes(40, 30, seed=1)
EVENTS = TypeAdapter(ResponseStreamEvent)
OPENAI_GREEDY = {"temperature": 0.0, "extra_body": {"seed": 7}}
ANTHROPIC_GREEDY = {"extra_body": {"temperature": 0}}  # the newest clients dropped the sampling keywords


@pytest.fixture(scope="module")
def n_image(script) -> int:
    """Embeddings the test projector gives one image (a LLaVA projector: one per patch)."""
    return (script.IMAGE_SIZE // script.PATCH_SIZE) ** 2


@pytest.fixture(scope="module")
def oai(server):
    with openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def claude(server):
    with anthropic.Anthropic(base_url=server, api_key="unused", max_retries=0, timeout=120) as client:
        yield client


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def chat_prompt_tokens(server: str, url: str) -> int:
    """``usage.prompt_tokens`` of the same image question through ``/v1/chat/completions``."""
    out = httpx.post(server + "/v1/chat/completions", timeout=120, json={
        "model": "vis", "max_tokens": 1, "temperature": 0,
        "messages": [{"role": "user", "content": [{"type": "text", "text": ASK},
                                                  {"type": "image_url", "image_url": {"url": url}}]}]})
    assert out.status_code == 200, out.text
    return out.json()["usage"]["prompt_tokens"]


# --- /v1/responses ------------------------------------------------------------------------------
def image_input(url: str = data_uri(PNG), text: str = ASK, **image) -> list[dict]:
    return [{"role": "user", "content": [{"type": "input_text", "text": text},
                                         {"type": "input_image", "image_url": url, **image}]}]


def responses_error(server: str, body: dict, match: str, model: str = "vis") -> dict:
    out = httpx.post(server + "/v1/responses", timeout=120, json={"model": model, "max_output_tokens": 4, **body})
    assert out.status_code == 400, out.text
    error = out.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert error["param"] == "input" and match in error["message"], error
    return error


def test_responses_image_answers_and_counts_the_image(oai, server, n_image):
    out = oai.responses.create(model="vis", input=image_input(detail="auto"), max_output_tokens=5, **OPENAI_GREEDY)
    raw = out.model_dump(mode="json", exclude={"output_text"})
    Response.model_validate(raw)  # every field of the client's type, not the lenient parse
    assert out.status in ("completed", "incomplete") and out.output[0].type == "message"
    assert isinstance(out.output_text, str) and 1 <= out.usage.output_tokens <= 5
    text_only = oai.responses.create(model="vis", input=[{"role": "user", "content": [
        {"type": "input_text", "text": ASK + "\n"}]}], max_output_tokens=1, **OPENAI_GREEDY)
    # the image replaces its marker line with exactly its embeddings, as on the chat route
    assert out.usage.input_tokens == text_only.usage.input_tokens + n_image
    assert out.usage.input_tokens == chat_prompt_tokens(server, data_uri(PNG))
    assert out.usage.total_tokens == out.usage.input_tokens + out.usage.output_tokens


def test_responses_image_streams(oai):
    whole = oai.responses.create(model="vis", input=image_input(), max_output_tokens=6, **OPENAI_GREEDY)
    events = list(oai.responses.create(model="vis", input=image_input(), max_output_tokens=6, stream=True,
                                       **OPENAI_GREEDY))
    for event in events:
        EVENTS.validate_python(event.model_dump(mode="json"))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1]
    assert final.type in ("response.completed", "response.incomplete")
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas and final.response.output_text == deltas
    assert final.response.usage.input_tokens == whole.usage.input_tokens
    assert 1 <= final.response.usage.output_tokens <= 6


def test_responses_two_images_count_both(oai, n_image):
    one = oai.responses.create(model="vis", input=image_input(), max_output_tokens=1, **OPENAI_GREEDY)
    two = [{"role": "user", "content": [{"type": "input_text", "text": ASK},
                                        {"type": "input_image", "image_url": data_uri(PNG)},
                                        {"type": "input_image", "image_url": data_uri(png_bytes(8, 8, seed=2))}]}]
    both = oai.responses.create(model="vis", input=two, max_output_tokens=1, **OPENAI_GREEDY)
    assert both.usage.input_tokens - one.usage.input_tokens >= n_image


def test_responses_refusals_are_openai_400s(oai, server):
    png = data_uri(PNG)
    responses_error(server, {"input": image_input()}, "no projector (mmproj)", model="text")
    # with instructions the chat messages are numbered one further: the error names the input item
    error = responses_error(server, {"instructions": "Be terse.", "input": image_input()}, "no projector",
                            model="text")
    assert error["message"].startswith("input[0]:"), error
    responses_error(server, {"input": image_input(None, file_id="file-abc")}, "no file store")
    responses_error(server, {"input": image_input(png, file_id="file-abc")}, "file_id")
    responses_error(server, {"input": image_input(None)}, "needs image_url")
    responses_error(server, {"input": image_input("https://example.com/cat.png")}, "data URI")
    responses_error(server, {"input": image_input("/etc/hosts")}, "data URI")
    error = responses_error(server, {"instructions": "Be terse.", "input": image_input("data:image/png;base64,@@")},
                            "base64")
    assert error["message"].startswith("input[0].content[1]:"), error
    responses_error(server, {"input": image_input(data_uri(PNG, "text/plain"))}, "not an image type")
    responses_error(server, {"input": image_input(data_uri(b"just some text, not an image"))}, "could not decode")
    big = png_bytes(200, 200, seed=3)
    assert len(big) > MAX_MEDIA_BYTES
    responses_error(server, {"input": image_input(data_uri(big))}, "byte limit")
    many = [{"type": "input_image", "image_url": png}] * (MAX_MEDIA_ITEMS + 1)
    responses_error(server, {"input": [{"role": "user", "content": [{"type": "input_text", "text": ASK}, *many]}]},
                    "too many")
    responses_error(server, {"input": [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": [
        {"type": "input_image", "image_url": png}]}, {"role": "user", "content": "Again."}]}, "user messages")
    responses_error(server, {"input": [{"role": "user", "content": [
        {"type": "input_file", "file_data": "data:application/pdf;base64,JVBERi0="}]}]}, "no files")
    with pytest.raises(openai.BadRequestError) as caught:  # the client reads it as a 400 too
        oai.responses.create(model="vis", input=image_input("https://example.com/cat.png"), max_output_tokens=2)
    assert "data URI" in caught.value.body["message"] and caught.value.body["param"] == "input"


# --- /v1/messages -------------------------------------------------------------------------------
def image_block(data: str = b64(PNG), media_type: str = "image/png") -> dict:
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def image_message(*blocks: dict, text: str = ASK) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": text}, *(blocks or [image_block()])]}]


def messages_error(server: str, messages: list[dict], match: str, model: str = "vis",
                   path: str = "/v1/messages", **body) -> str:
    extra = {"max_tokens": 4} if path == "/v1/messages" else {}
    out = httpx.post(server + path, timeout=120, json={"model": model, "messages": messages, **extra, **body})
    assert out.status_code == 400, out.text
    error = out.json()
    assert error["type"] == "error" and set(error["error"]) == {"type", "message"}, error
    assert error["error"]["type"] == "invalid_request_error" and match in error["error"]["message"], error
    return error["error"]["message"]


def texts(message) -> str:
    return "".join(b.text for b in message.content if b.type == "text")


def test_messages_image_answers_and_counts_the_image(claude, server, n_image):
    message = claude.messages.create(model="vis", max_tokens=5, messages=image_message(), **ANTHROPIC_GREEDY)
    assert message.type == "message" and message.role == "assistant"
    assert message.stop_reason in ("end_turn", "max_tokens") and 1 <= message.usage.output_tokens <= 5
    assert [b.type for b in message.content] in (["text"], [])
    text_only = claude.messages.count_tokens(model="vis", messages=[{"role": "user", "content": ASK + "\n"}])
    assert message.usage.input_tokens == text_only.input_tokens + n_image
    assert message.usage.input_tokens == chat_prompt_tokens(server, data_uri(PNG))
    # count_tokens decodes and tokenizes the image as generation does
    assert claude.messages.count_tokens(model="vis", messages=image_message()).input_tokens == \
        message.usage.input_tokens


def test_messages_image_streams(claude):
    kwargs = dict(model="vis", max_tokens=6, messages=image_message(), **ANTHROPIC_GREEDY)
    whole = claude.messages.create(**kwargs)
    with claude.messages.stream(**kwargs) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == texts(final) and final.stop_reason in ("end_turn", "max_tokens")
    assert final.usage.input_tokens == whole.usage.input_tokens
    assert 1 <= final.usage.output_tokens <= 6


@pytest.mark.parametrize("media_type, data", [("image/png", PNG), ("image/jpeg", b"\xff\xd8\xff\xe0" + bytes(60)),
                                              ("image/gif", b"GIF89a" + bytes(60)),
                                              ("image/webp", b"RIFF\x40\0\0\0WEBPVP8 " + bytes(52))])
def test_messages_media_types_that_match_their_bytes_pass_the_type_check(server, media_type, data):
    """Only the PNG is a whole image: the others pass Anthropic's type check and reach the decoder."""
    out = httpx.post(server + "/v1/messages/count_tokens", timeout=120, json={
        "model": "vis", "messages": image_message(image_block(b64(data), media_type))})
    if media_type == "image/png":
        assert out.status_code == 200 and out.json()["input_tokens"] > 0, out.text
    else:
        assert out.status_code == 400 and "could not decode" in out.json()["error"]["message"], out.text


def test_messages_image_in_a_tool_result(claude, n_image):
    def conversation(*result: dict) -> list[dict]:
        return [{"role": "user", "content": "Take a photo."},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "camera",
                                                   "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                              "content": [{"type": "text", "text": "Here it is."}, *result]}]}]

    tools = [{"name": "camera", "description": "Takes a photo", "input_schema": {"type": "object"}}]
    with_image = conversation(image_block())
    counted = claude.messages.count_tokens(model="vis", tools=tools, messages=with_image).input_tokens
    text_only = claude.messages.count_tokens(model="vis", tools=tools, messages=conversation(
        {"type": "text", "text": ""})).input_tokens  # "Here it is.\n": the line the marker took
    assert counted == text_only + n_image
    message = claude.messages.create(model="vis", max_tokens=4, tools=tools, messages=with_image, **ANTHROPIC_GREEDY)
    assert message.usage.input_tokens == counted


def test_messages_refusals_are_anthropic_400s(server, projector):
    png = b64(PNG)
    messages_error(server, image_message(), "no projector (mmproj)", model="text")
    messages_error(server, image_message(), "no projector (mmproj)", model="text", path="/v1/messages/count_tokens")
    url = {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}
    messages_error(server, image_message(url), "does not fetch URLs")
    messages_error(server, image_message(url), "does not fetch URLs", path="/v1/messages/count_tokens")
    messages_error(server, image_message({"type": "image", "source": {"type": "file", "file_id": "file_1"}}),
                   "no file store")
    messages_error(server, image_message(image_block(png, "image/bmp")), "is not one of image/jpeg")
    messages_error(server, image_message(image_block(png, "image/jpeg")), "is image/png, not the image/jpeg")
    messages_error(server, image_message(image_block(b64(b"just some text, not an image"))), "is not image/png")
    messages_error(server, image_message(image_block(b64(b"\x89PNG\r\n\x1a\n" + bytes(64)))), "could not decode")
    big = png_bytes(200, 200, seed=3)
    messages_error(server, image_message(image_block(b64(big))), "byte limit")
    messages_error(server, image_message(*[image_block()] * (MAX_MEDIA_ITEMS + 1)), "too many")
    # the chat route numbers messages differently (system, tool results): the error names Anthropic's block
    turns = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."},
             *image_message(image_block("@@not base64@@"))]
    message = messages_error(server, turns, "base64", system="Be terse.")
    assert message.startswith("messages[2].content[1]:"), message
    messages_error(server, [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": [image_block()]},
                            {"role": "user", "content": "Again."}], "belong in user messages")
    document = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}
    messages_error(server, image_message(document), "document blocks are not supported")
    messages_error(server, image_message({"type": "image", "source": {"type": "base64", "data": png}}),
                   "media_type")  # the schema's own 400, in Anthropic's shape


def test_anthropic_client_raises_bad_request(claude):
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude.messages.create(model="vis", max_tokens=2, messages=image_message(
            image_block(b64(PNG), "image/gif")))
    assert "not the image/gif" in caught.value.body["error"]["message"]


def test_the_server_serves_after_the_refusals(oai, claude):
    assert oai.responses.create(model="vis", input="Say hi.", max_output_tokens=3).status in ("completed",
                                                                                              "incomplete")
    assert oai.responses.create(model="vis", input=image_input(), max_output_tokens=3).usage.input_tokens > 0
    assert claude.messages.create(model="vis", max_tokens=3, messages=image_message()).usage.output_tokens >= 1
    assert claude.messages.create(model="text", max_tokens=3, messages=[{"role": "user", "content": "Hi."}]) \
        .usage.output_tokens >= 1
