"""Anthropic's Messages API (``POST /v1/messages``, ``/v1/messages/count_tokens``): the official
``anthropic`` client against a real server on the real small model, over a loopback socket.

Sampling is greedy (``temperature`` 0, sent as ``extra_body``: the newest clients dropped
the sampling keywords), so a streamed answer must equal the whole one, and an answer must
equal what ``/v1/chat/completions`` gives for the same conversation in OpenAI's shape.
"""

from __future__ import annotations

import json

import pytest

anthropic = pytest.importorskip("anthropic")
httpx = pytest.importorskip("httpx")
jsonschema = pytest.importorskip("jsonschema")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from server_harness import running_server

KEY = "sk-messages"
GREEDY = {"extra_body": {"temperature": 0}}
SYSTEM = "You are terse."
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["C", "F"]}},
                  "required": ["city", "unit"], "additionalProperties": False}
TOOLS = [{"name": "get_weather", "description": "Get the current weather in a city", "input_schema": WEATHER_SCHEMA},
         {"name": "get_time", "description": "Get the local time in a city",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
WEATHER_QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def server(model_path):
    from llama_ffi.server.config import ModelSettings, ServerSettings

    settings = ServerSettings(api_key=KEY, models=[
        ModelSettings(model=str(model_path), model_alias="smol", n_ctx=2048, n_parallel=2, n_gpu_layers=0)])
    with running_server(settings) as (url, srv):
        yield url


@pytest.fixture(scope="module")
def client(server):
    with anthropic.Anthropic(base_url=server, api_key=KEY, max_retries=0, timeout=120) as c:
        yield c


def post(server, path: str, body, key: str | None = KEY) -> httpx.Response:
    headers = {"x-api-key": key} if key else {}
    return httpx.post(server + path, json=body, headers=headers, timeout=120)


def chat_completion(server, messages: list[dict], **extra) -> dict:
    out = httpx.post(server + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, timeout=120,
                     json={"model": "smol", "messages": messages, "temperature": 0, **extra})
    assert out.status_code == 200, out.text
    return out.json()


def texts(message) -> str:
    return "".join(b.text for b in message.content if b.type == "text")


def sse_events(response: httpx.Response) -> list[tuple[str, dict]]:
    events = []
    for frame in response.text.split("\n\n"):
        if not frame.strip():
            continue
        name, data = frame.split("\n")
        assert name.startswith("event: ") and data.startswith("data: "), frame
        events.append((name[7:], json.loads(data[6:])))
    return events


# --- text ---------------------------------------------------------------------------------
def test_create_answers_as_chat_completions_does(client, server):
    message = client.messages.create(model="smol", max_tokens=40, system=SYSTEM, messages=QUESTION, **GREEDY)
    assert message.type == "message" and message.role == "assistant" and message.model == "smol"
    assert message.id.startswith("msg_") and [b.type for b in message.content] == ["text"]
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    # the same conversation through the OpenAI route: the same prompt, the same greedy answer
    expected = chat_completion(server, [{"role": "system", "content": SYSTEM}, *QUESTION], max_tokens=40)
    assert texts(message) == expected["choices"][0]["message"]["content"] and texts(message).strip()
    assert message.usage.input_tokens == expected["usage"]["prompt_tokens"]
    assert message.usage.output_tokens == expected["usage"]["completion_tokens"]


def test_system_as_text_blocks_is_the_system_string(client):
    blocks = [{"type": "text", "text": "You are"}, {"type": "text", "text": "terse."}]
    as_blocks = client.messages.count_tokens(model="smol", system=blocks, messages=QUESTION).input_tokens
    joined = client.messages.count_tokens(model="smol", system="You are\nterse.", messages=QUESTION)
    without = client.messages.count_tokens(model="smol", messages=QUESTION).input_tokens
    assert as_blocks == joined.input_tokens and as_blocks != without


def test_stream_equals_create(client, server):
    kwargs = dict(model="smol", max_tokens=40, system=SYSTEM, messages=QUESTION, **GREEDY)
    whole = client.messages.create(**kwargs)
    with client.messages.stream(**kwargs) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == texts(whole) == texts(final)
    assert (final.stop_reason, final.usage.input_tokens, final.usage.output_tokens) == \
        (whole.stop_reason, whole.usage.input_tokens, whole.usage.output_tokens)


def test_stream_events_in_order(server):
    out = post(server, "/v1/messages", {"model": "smol", "max_tokens": 12, "temperature": 0, "stream": True,
                                        "messages": QUESTION})
    assert out.status_code == 200 and out.headers["content-type"].startswith("text/event-stream")
    events = sse_events(out)
    names = [name for name, _ in events]
    assert all(name == data["type"] for name, data in events)
    assert names[:2] == ["message_start", "ping"] and names[-2:] == ["message_delta", "message_stop"]
    assert names[2] == "content_block_start" and names[-3] == "content_block_stop"
    assert set(names[3:-3]) == {"content_block_delta"}
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["usage"]["input_tokens"] > 0
    deltas = [data["delta"] for name, data in events if name == "content_block_delta"]
    assert all(d["type"] == "text_delta" for d in deltas)
    end = events[-2][1]
    assert end["delta"]["stop_reason"] in ("end_turn", "max_tokens") and 1 <= end["usage"]["output_tokens"] <= 12


def test_seed_makes_sampling_repeatable(client):
    kwargs = dict(model="smol", max_tokens=16, messages=[{"role": "user", "content": "Tell me about cats."}],
                  extra_body={"temperature": 1.0, "seed": 1234})
    assert texts(client.messages.create(**kwargs)) == texts(client.messages.create(**kwargs))


def test_final_assistant_message_is_a_prefill_the_answer_continues(client, server):
    prefill = "The capital of France is"
    kwargs = dict(model="smol", max_tokens=12, system=SYSTEM,
                  messages=[*QUESTION, {"role": "assistant", "content": prefill}], **GREEDY)
    message = client.messages.create(**kwargs)
    # the same as completing the rendered chat prompt followed by the prefill
    rendered = httpx.post(server + "/apply-template", headers={"x-api-key": KEY}, timeout=30,
                          json={"messages": [{"role": "system", "content": SYSTEM}, *QUESTION]}).json()["prompt"]
    expected = httpx.post(server + "/v1/completions", headers={"x-api-key": KEY}, timeout=120, json={
        "model": "smol", "prompt": rendered + prefill, "max_tokens": 12, "temperature": 0}).json()
    assert texts(message) == expected["choices"][0]["text"] and not texts(message).startswith(prefill)
    assert message.usage.input_tokens == expected["usage"]["prompt_tokens"] == \
        client.messages.count_tokens(model="smol", system=SYSTEM, messages=kwargs["messages"]).input_tokens
    with client.messages.stream(**kwargs) as stream:
        assert "".join(stream.text_stream) == texts(message)


# --- stop reasons -------------------------------------------------------------------------
def test_stop_sequence_is_reported_with_the_one_that_matched(client):
    answer = texts(client.messages.create(model="smol", max_tokens=40, system=SYSTEM, messages=QUESTION, **GREEDY))
    word = answer.split()[2]  # a word the greedy answer is known to reach, mid-sentence
    kwargs = dict(model="smol", max_tokens=40, system=SYSTEM, messages=QUESTION,
                  stop_sequences=["never-in-the-answer", word], **GREEDY)
    message = client.messages.create(**kwargs)
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == word
    assert texts(message) == answer[:answer.index(word)]
    with client.messages.stream(**kwargs) as stream:
        final = stream.get_final_message()
    assert (final.stop_reason, final.stop_sequence, texts(final)) == ("stop_sequence", word, texts(message))


def test_max_tokens_is_the_stop_reason_when_the_budget_runs_out(client):
    story = [{"role": "user", "content": "Write a long story about a dragon."}]
    kwargs = dict(model="smol", max_tokens=4, messages=story, **GREEDY)
    message = client.messages.create(**kwargs)
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 4
    with client.messages.stream(**kwargs) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "max_tokens" and texts(final) == texts(message)


# --- tools --------------------------------------------------------------------------------
@pytest.mark.parametrize("choice", [{"type": "tool", "name": "get_weather"}, {"type": "any"}])
def test_forced_tool_gives_a_tool_use_block_that_fits_its_schema(client, choice):
    kwargs = dict(model="smol", max_tokens=80, tools=TOOLS, tool_choice=choice, messages=WEATHER_QUESTION, **GREEDY)
    message = client.messages.create(**kwargs)
    assert message.stop_reason == "tool_use"
    calls = [b for b in message.content if b.type == "tool_use"]
    assert len(calls) == 1 and calls[0].id.startswith("toolu_")
    schemas = {t["name"]: t["input_schema"] for t in TOOLS}
    if choice["type"] == "tool":
        assert calls[0].name == "get_weather"
    jsonschema.validate(calls[0].input, schemas[calls[0].name])
    with client.messages.stream(**kwargs) as stream:
        final = stream.get_final_message()
    streamed = [b for b in final.content if b.type == "tool_use"]
    assert final.stop_reason == "tool_use" and len(streamed) == 1
    assert (streamed[0].name, streamed[0].input) == (calls[0].name, calls[0].input)


def test_tool_choice_none_answers_in_text(client):
    message = client.messages.create(model="smol", max_tokens=20, tools=TOOLS, tool_choice={"type": "none"},
                                     messages=WEATHER_QUESTION, **GREEDY)
    assert all(b.type == "text" for b in message.content) and message.stop_reason in ("end_turn", "max_tokens")


def test_tool_result_round_trip_is_the_openai_tool_loop(client, server):
    first = client.messages.create(model="smol", max_tokens=80, tools=TOOLS, messages=WEATHER_QUESTION,
                                   tool_choice={"type": "tool", "name": "get_weather"}, **GREEDY)
    call = next(b for b in first.content if b.type == "tool_use")
    result = "22 degrees and sunny"
    conversation = [*WEATHER_QUESTION,
                    {"role": "assistant", "content": [{"type": "tool_use", "id": call.id, "name": call.name,
                                                       "input": call.input}]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                                  "content": [{"type": "text", "text": result}]}]}]
    second = client.messages.create(model="smol", max_tokens=40, tools=TOOLS, messages=conversation, **GREEDY)
    assert second.usage.input_tokens == client.messages.count_tokens(model="smol", tools=TOOLS,
                                                                      messages=conversation).input_tokens
    # the same loop in OpenAI's shape: the same prompt, so the same tokens and the same greedy answer
    openai_tools = [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                                      "parameters": t["input_schema"]}} for t in TOOLS]
    expected = chat_completion(server, [
        *WEATHER_QUESTION,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": json.dumps(call.input)}}]},
        {"role": "tool", "tool_call_id": call.id, "content": result}], tools=openai_tools, max_tokens=40)
    assert second.usage.input_tokens == expected["usage"]["prompt_tokens"]
    message = expected["choices"][0]["message"]
    assert texts(second) == (message["content"] or "")
    assert [(b.name, b.input) for b in second.content if b.type == "tool_use"] == \
        [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in message.get("tool_calls") or ()]


# --- structured output, count_tokens ------------------------------------------------------
def test_output_config_format_is_enforced(client):
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "lives": {"type": "integer"}},
              "required": ["name", "lives"], "additionalProperties": False}
    # sent as extra_body: older clients have no output_config keyword
    message = client.messages.create(model="smol", max_tokens=60,
                                     messages=[{"role": "user", "content": "Describe a cat as JSON."}],
                                     extra_body={"temperature": 0, "output_config": {
                                         "format": {"type": "json_schema", "schema": schema}}})
    assert message.stop_reason == "end_turn"
    jsonschema.validate(json.loads(texts(message)), schema)


def test_count_tokens_is_the_input_tokens_of_the_same_request(client):
    for kwargs in (dict(messages=QUESTION, system=SYSTEM), dict(messages=WEATHER_QUESTION, tools=TOOLS)):
        counted = client.messages.count_tokens(model="smol", **kwargs).input_tokens
        used = client.messages.create(model="smol", max_tokens=1, **kwargs, **GREEDY).usage.input_tokens
        assert counted == used > 0
    with_tools = client.messages.count_tokens(model="smol", messages=WEATHER_QUESTION, tools=TOOLS).input_tokens
    assert with_tools > client.messages.count_tokens(model="smol", messages=WEATHER_QUESTION).input_tokens


# --- errors -------------------------------------------------------------------------------
def anthropic_error(response: httpx.Response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"} and body["error"]["type"] == kind
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]["message"]


def test_missing_max_tokens_is_an_invalid_request(server):
    message = anthropic_error(post(server, "/v1/messages", {"model": "smol", "messages": QUESTION}), 400,
                              "invalid_request_error")
    assert "max_tokens" in message


@pytest.mark.parametrize("messages, needle", [
    ([{"role": "system", "content": "hi"}], "role"),
    ([], "messages"),
    ([{"role": "user", "content": []}], "empty"),
    ([{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}], "assistant"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": [
        {"type": "tool_use", "id": "t", "name": "f", "input": {}}]}], "text only"),
    ([{"role": "assistant", "content": "Hello"}], "user message"),
    ([{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "http://x/y.png"}}]}], "image"),
])
def test_bad_messages_are_bad_request_errors(client, messages, needle):
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="smol", max_tokens=4, messages=messages)
    assert caught.value.status_code == 400
    assert caught.value.body["type"] == "error" and caught.value.body["error"]["type"] == "invalid_request_error"
    assert needle in caught.value.body["error"]["message"]


def test_unknown_model_is_not_found(client, server):
    for call in (lambda: client.messages.create(model="claude-nope", max_tokens=4, messages=QUESTION),
                 lambda: client.messages.stream(model="claude-nope", max_tokens=4, messages=QUESTION).__enter__(),
                 lambda: client.messages.count_tokens(model="claude-nope", messages=QUESTION)):
        with pytest.raises(anthropic.NotFoundError) as caught:
            call()
        assert caught.value.status_code == 404 and caught.value.body["error"]["type"] == "not_found_error"
    message = anthropic_error(post(server, "/v1/messages", {"model": "claude-nope", "max_tokens": 4,
                                                            "messages": QUESTION}), 404, "not_found_error")
    assert "claude-nope" in message and "smol" in message


def test_api_key_is_checked_in_anthropic_shape(server):
    with anthropic.Anthropic(base_url=server, api_key="wrong", max_retries=0) as bad:
        with pytest.raises(anthropic.AuthenticationError) as caught:
            bad.messages.create(model="smol", max_tokens=4, messages=QUESTION)
    assert caught.value.status_code == 401 and caught.value.body["error"]["type"] == "authentication_error"
    anthropic_error(post(server, "/v1/messages", {"model": "smol", "max_tokens": 4, "messages": QUESTION}, key=None),
                    401, "authentication_error")
    anthropic_error(post(server, "/v1/messages/count_tokens", {"model": "smol", "messages": QUESTION}, key="x"),
                    401, "authentication_error")
    # other routes keep OpenAI's shape
    out = httpx.post(server + "/v1/chat/completions", headers={"x-api-key": "x"}, timeout=30,
                     json={"model": "smol", "max_tokens": 1, "messages": QUESTION})
    assert out.status_code == 401 and out.json()["error"]["code"] == "invalid_api_key"


def test_body_over_the_limit_is_request_too_large(server):
    body = {"model": "smol", "max_tokens": 1, "messages": [{"role": "user", "content": "x" * (9 << 20)}]}
    anthropic_error(post(server, "/v1/messages", body), 413, "request_too_large")


def test_unknown_fields_and_bad_values_are_invalid_requests(server):
    for body in ({"model": "smol", "max_tokens": 4, "messages": QUESTION, "n": 2},
                 {"model": "smol", "max_tokens": 0, "messages": QUESTION},
                 {"model": "smol", "max_tokens": 4, "messages": QUESTION, "temperature": 1.5},
                 {"model": "smol", "max_tokens": 4, "messages": QUESTION, "tools": TOOLS,
                  "tool_choice": {"type": "tool", "name": "not_a_tool"}}):
        anthropic_error(post(server, "/v1/messages", body), 400, "invalid_request_error")
    out = httpx.post(server + "/v1/messages", content=b"{not json", timeout=30,
                     headers={"x-api-key": KEY, "content-type": "application/json"})
    anthropic_error(out, 400, "invalid_request_error")


def test_overloaded_is_529_in_anthropic_shape():
    from llama_ffi.server.errors import error_body, shape_for_path

    status, body = shape_for_path("/v1/messages", 503, error_body("queue full", "server_overloaded"))
    assert (status, body) == (529, {"type": "error", "error": {"type": "overloaded_error", "message": "queue full"}})
    assert shape_for_path("/v1/messages/count_tokens", 500, error_body("bug"))[1]["error"]["type"] == "api_error"
    assert shape_for_path("/v1/messagesx", 503, error_body("x")) == (503, error_body("x"))


# --- thinking blocks (SmolLM2 does not reason: the shaping is checked on its own) --------
def test_reasoning_becomes_a_thinking_block():
    from llama_ffi.server.messages import _Blocks, _content

    blocks = _content({"role": "assistant", "reasoning_content": "Paris, surely.", "content": "Paris."})
    assert blocks == [{"type": "thinking", "thinking": "Paris, surely.", "signature": ""},
                      {"type": "text", "text": "Paris."}]
    stream = _Blocks()
    events = stream.feed({"reasoning_content": "Paris"}) + stream.feed({"reasoning_content": ", surely."}) \
        + stream.feed({"content": "Paris."}) + stream.close()
    assert [(e["type"], e["index"]) for e in events] == [
        ("content_block_start", 0), ("content_block_delta", 0), ("content_block_delta", 0), ("content_block_stop", 0),
        ("content_block_start", 1), ("content_block_delta", 1), ("content_block_stop", 1)]
    assert events[1]["delta"] == {"type": "thinking_delta", "thinking": "Paris"}
    assert events[5]["delta"] == {"type": "text_delta", "text": "Paris."}
