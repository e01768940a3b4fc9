"""``POST /v1/responses`` driven by the official ``openai`` client over a real socket, on the
real small model. Besides the client's own parsing (which is lenient), every body and every
stream event is validated against the client's pydantic types (``Response``,
``ResponseStreamEvent``), so a field of the wrong shape fails here."""

from __future__ import annotations

import json
import time

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from pydantic import TypeAdapter
from server_harness import running_server

from openai.types.responses import Response, ResponseStreamEvent

KEY = "sk-responses"
GREEDY = {"temperature": 0.0, "extra_body": {"seed": 11}}
WEATHER = {"type": "function", "name": "get_weather", "description": "Current weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
QUESTION = "What is the capital of France?"
HELLO = "Say hello."  # greedy, SmolLM2 answers it in about 40 tokens
EVENTS = TypeAdapter(ResponseStreamEvent)


@pytest.fixture(scope="module")
def served(model_path):
    from llama_ffi.server.config import ModelSettings, ServerSettings

    settings = ServerSettings(api_key=KEY, models=[
        ModelSettings(model=str(model_path), model_alias="smol", n_ctx=2048, n_parallel=2, n_gpu_layers=0)])
    with running_server(settings) as served:
        yield served


@pytest.fixture(scope="module")
def server(served):
    return served[0]


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0, timeout=120) as c:
        yield c


def post(server: str, body: dict, path: str = "/v1/responses") -> httpx.Response:
    return httpx.post(server + path, json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=120)


def valid_response(raw: dict) -> Response:
    """The body, validated (not just constructed) as the client's Response type."""
    assert "output_text" not in raw  # the client computes it; a server field would shadow the property
    return Response.model_validate(raw)


def raw_events(server: str, body: dict) -> list[tuple[str, dict]]:
    """(event name, data) of each server-sent event, each data validated as a stream event."""
    out = []
    with httpx.stream("POST", server + "/v1/responses", json={**body, "stream": True}, timeout=120,
                      headers={"Authorization": f"Bearer {KEY}"}) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()
    for block in filter(None, text.split("\n\n")):
        name_line, data_line = block.split("\n")
        assert name_line.startswith("event: ") and data_line.startswith("data: "), block
        data = json.loads(data_line[6:])
        EVENTS.validate_python(data)
        assert data["type"] == name_line[7:]
        out.append((name_line[7:], data))
    assert [d["sequence_number"] for _, d in out] == list(range(len(out)))
    return out


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["type"] == "invalid_request_error"
    return error


# --- text ----------------------------------------------------------------------------------
def test_text_answer_is_the_chat_answer(client, server):
    out = client.responses.create(model="smol", input=QUESTION, instructions="Answer in one short sentence.",
                                  max_output_tokens=40, metadata={"case": "text"}, **GREEDY)
    raw = post(server, {"model": "smol", "input": QUESTION, "instructions": "Answer in one short sentence.",
                        "max_output_tokens": 40, "temperature": 0.0, "seed": 11}).json()
    parsed = valid_response(raw)
    assert out.object == "response" and out.id.startswith("resp_") and out.model == "smol"
    assert out.status == "completed" and out.incomplete_details is None and out.error is None
    assert out.metadata == {"case": "text"} and out.instructions == "Answer in one short sentence."
    [message] = out.output
    assert message.type == "message" and message.role == "assistant" and message.status == "completed"
    assert message.id.startswith("msg_") and [c.type for c in message.content] == ["output_text"]
    assert out.output_text == message.content[0].text and out.output_text.strip()
    assert parsed.output_text == out.output_text  # the same request, sent twice, greedy
    usage = out.usage
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens and 0 < usage.output_tokens <= 40
    assert usage.output_tokens_details.reasoning_tokens == 0 and usage.input_tokens_details.cached_tokens == 0
    # instructions are the chat request's system message: the chat endpoint answers the same
    chat = client.chat.completions.create(model="smol", max_tokens=40, seed=11, temperature=0.0, messages=[
        {"role": "system", "content": "Answer in one short sentence."}, {"role": "user", "content": QUESTION}])
    assert chat.choices[0].message.content == out.output_text
    assert chat.usage.prompt_tokens == usage.input_tokens


def test_input_items_and_a_string_are_the_same_conversation(client):
    as_text = client.responses.create(model="smol", input=QUESTION, max_output_tokens=12, **GREEDY)
    as_items = client.responses.create(model="smol", max_output_tokens=12, **GREEDY, input=[
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": QUESTION}]}])
    assert as_items.output_text == as_text.output_text
    assert as_items.usage.input_tokens == as_text.usage.input_tokens
    # an earlier answer sent back (output items as input) becomes an assistant turn
    follow = client.responses.create(model="smol", max_output_tokens=12, **GREEDY, input=[
        {"role": "user", "content": QUESTION}, *[item.model_dump(exclude_none=True) for item in as_text.output],
        {"role": "user", "content": "And of Italy?"}])
    assert follow.status in ("completed", "incomplete") and follow.usage.input_tokens > as_text.usage.input_tokens


def test_stream_deltas_join_to_the_whole_answer(client, server):
    whole = client.responses.create(model="smol", input=HELLO, max_output_tokens=100, **GREEDY)
    events = list(client.responses.create(model="smol", input=HELLO, max_output_tokens=100, stream=True, **GREEDY))
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 1 and "".join(deltas) == whole.output_text
    assert events[-4].text == whole.output_text and events[-2].item.content[0].text == whole.output_text
    final = events[-1].response
    assert final.status == "completed" and final.output_text == whole.output_text
    assert final.usage.output_tokens == whole.usage.output_tokens
    assert len({e.response.id for e in events if hasattr(e, "response")}) == 1
    assert [e.sequence_number for e in events] == list(range(len(events)))
    # the raw stream, event by event, against the client's types
    raw = raw_events(server, {"model": "smol", "input": HELLO, "max_output_tokens": 100, "temperature": 0.0,
                              "seed": 11})
    assert [name for name, _ in raw] == kinds
    valid_response(raw[-1][1]["response"])
    # the client's stream helper accumulates the same answer
    with client.responses.stream(model="smol", input=HELLO, max_output_tokens=100, **GREEDY) as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        assert stream.get_final_response().output_text == text == whole.output_text


# --- structured output -------------------------------------------------------------------
def test_json_schema_format(client):
    jsonschema = pytest.importorskip("jsonschema")
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30},
                                               "population": {"type": "integer", "minimum": 0}},
              "required": ["city", "population"], "additionalProperties": False}
    fmt = {"type": "json_schema", "name": "city", "schema": schema, "strict": True}
    out = client.responses.create(model="smol", input="Describe Paris as JSON.", text={"format": fmt},
                                  max_output_tokens=80, **GREEDY)
    assert out.status == "completed", out.output_text
    jsonschema.validate(json.loads(out.output_text), schema)
    assert out.text.format.type == "json_schema" and out.text.format.schema_ == schema
    streamed = client.responses.create(model="smol", input="Describe Paris as JSON.", text={"format": fmt},
                                       max_output_tokens=80, stream=True, **GREEDY)
    text = "".join(e.delta for e in streamed if e.type == "response.output_text.delta")
    jsonschema.validate(json.loads(text), schema)
    loose = client.responses.create(model="smol", input="Give me a JSON object about Paris.",
                                    text={"format": {"type": "json_object"}}, max_output_tokens=80, **GREEDY)
    assert loose.text.format.type == "json_object" and loose.output_text.lstrip().startswith("{")
    if loose.status == "completed":  # greedy, SmolLM2 may fill all 80 tokens with one object
        assert isinstance(json.loads(loose.output_text), dict)


# --- tools ---------------------------------------------------------------------------------
def test_tool_call_round_trip(client, server):
    question = {"role": "user", "content": "What is the weather in Paris?"}
    first = client.responses.create(model="smol", input=[question], tools=[WEATHER], max_output_tokens=60,
                                    tool_choice={"type": "function", "name": "get_weather"}, **GREEDY)
    valid_response(post(server, {"input": [question], "tools": [WEATHER], "max_output_tokens": 60,
                                 "tool_choice": "required", "temperature": 0.0}).json())
    assert first.status == "completed" and first.tool_choice.name == "get_weather"
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.call_id and call.id.startswith("fc_") and call.status == "completed"
    assert isinstance(json.loads(call.arguments)["city"], str)
    assert first.tools[0].name == "get_weather" and first.tools[0].parameters == WEATHER["parameters"]
    # the function's result goes back as a function_call_output item; the answer is text
    result = {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 degrees Celsius."}
    second = client.responses.create(model="smol", input=[question, call.model_dump(exclude_none=True), result],
                                     tools=[WEATHER], tool_choice="none", max_output_tokens=40, **GREEDY)
    assert [item.type for item in second.output] == ["message"] and second.output_text.strip()
    # the call and its result reached the prompt (the template renders both)
    without = client.responses.create(model="smol", input=[question], tools=[WEATHER], tool_choice="none",
                                      max_output_tokens=1, **GREEDY)
    assert second.usage.input_tokens > without.usage.input_tokens + 10


def test_streamed_tool_call(server):
    events = raw_events(server, {"input": "Weather in Rome?", "tools": [WEATHER], "tool_choice": "required",
                                 "max_output_tokens": 60, "temperature": 0.0, "seed": 3})
    names = [name for name, _ in events]
    assert names == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.function_call_arguments.delta", "response.function_call_arguments.done",
                     "response.output_item.done", "response.completed"]
    added, delta, done, item_done = (data for _, data in events[2:6])
    assert added["item"]["type"] == "function_call" and added["item"]["arguments"] == ""
    assert delta["item_id"] == done["item_id"] == added["item"]["id"] == item_done["item"]["id"]
    assert delta["delta"] == done["arguments"] == item_done["item"]["arguments"]
    assert json.loads(done["arguments"])["city"] and item_done["item"]["name"] == "get_weather"
    assert events[-1][1]["response"]["output"] == [item_done["item"]]


# --- max_output_tokens -------------------------------------------------------------------
def test_max_output_tokens_makes_it_incomplete(client, server):
    out = client.responses.create(model="smol", input="Tell me a long story about a dragon.", max_output_tokens=3,
                                  **GREEDY)
    assert out.status == "incomplete" and out.incomplete_details.reason == "max_output_tokens"
    assert out.usage.output_tokens == 3 and out.output[0].status == "incomplete" and out.output_text
    events = raw_events(server, {"input": "Tell me a long story about a dragon.", "max_output_tokens": 3,
                                 "temperature": 0.0, "seed": 11})
    assert events[-1][0] == "response.incomplete"
    final = valid_response(events[-1][1]["response"])
    assert final.incomplete_details.reason == "max_output_tokens" and final.output_text == out.output_text
    assert events[-2][1]["item"]["status"] == "incomplete"


# --- reasoning (SmolLM2 does not reason: the chat pipeline's own output for a Qwen 3 answer) ---
def test_reasoning_becomes_a_reasoning_item_whole_and_streamed(model):
    from types import SimpleNamespace

    from llama_ffi.chat.families import get_family
    from llama_ffi.chat.pipeline import ChatRequest as Prepared
    from llama_ffi.chat.pipeline import DeltaPipeline, chat_message
    from llama_ffi.server import responses

    text = "<think>\nThe user greets me.\n</think>\n\nHello there!"
    prepared = Prepared("", False, (), get_family("qwen3"))
    message, finish = chat_message(prepared, text, "stop")
    usage = {"prompt_tokens": 5, "completion_tokens": 20, "total_tokens": 25}
    entry = SimpleNamespace(name="m", vocab=model.vocab)
    shape = responses._Shape(responses.ResponsesRequest(input="hi"), entry)
    whole = responses.response(shape, {"choices": [{"message": message, "finish_reason": finish}], "usage": usage})
    parsed = valid_response(whole)
    assert [item.type for item in parsed.output] == ["reasoning", "message"]
    assert parsed.output[0].content[0].text == "The user greets me." and parsed.output_text == "Hello there!"
    n_reasoning = len(model.vocab.tokenize("The user greets me.", add_special=False))
    assert parsed.usage.output_tokens_details.reasoning_tokens == n_reasoning > 0
    # the same answer streamed a character at a time
    state, pipeline = responses._Events(shape), DeltaPipeline(prepared)
    events = state.start()
    for i, char in enumerate(text):
        for delta in pipeline.feed(char, final=i == len(text) - 1):
            events += state.delta(delta)
    events += state.finish(pipeline.finish_reason("stop"), usage)
    for event in events:
        EVENTS.validate_python(event)
    kinds = [e["type"] for e in events]
    assert kinds[2:4] == ["response.output_item.added", "response.content_part.added"]
    assert kinds.index("response.reasoning_text.done") < kinds.index("response.output_text.delta")
    assert "".join(e["delta"] for e in events if e["type"] == "response.reasoning_text.delta") == "The user greets me."
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "Hello there!"
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed" and final["usage"] == whole["usage"]
    assert [(o["type"], o["content"]) for o in final["output"]] == [(o["type"], o["content"]) for o in whole["output"]]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


# --- errors --------------------------------------------------------------------------------
@pytest.mark.parametrize("body, param, words", [
    ({"input": ""}, "input", "empty"),
    ({"input": []}, "input", "empty"),
    ({}, "input", "Field required"),
    ({"input": 5}, "input", "string or a list"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://x.test/a.png"}]}]},
     "input", "data URI"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input", "no files"),
    ({"input": [{"type": "web_search_call", "id": "w"}]}, "input.items.0", "input items must be"),
    ({"input": [{"type": "function_call_output", "call_id": "nope", "output": "x"}]}, "input", "no function_call"),
    ({"input": "hi", "previous_response_id": "resp_1"}, "previous_response_id", "stateless"),
    ({"input": "hi", "max_output_tokens": 0}, "max_output_tokens", "greater than or equal to 1"),
    ({"input": "hi", "max_output_tokens": "5"}, "max_output_tokens", "valid integer"),
    ({"input": "hi", "temperature": 3}, "temperature", "less than or equal to 2"),
    ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools.0.type", "'function'"),
    ({"input": "hi", "tools": [WEATHER], "tool_choice": {"type": "function", "name": "other"}},
     "tool_choice.name", "unknown tool"),
    ({"input": "hi", "tool_choice": "required"}, "tool_choice", "at least one tool"),
    ({"input": "hi", "tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": []}}, "tool_choice",
     "tool_choice must be"),
    ({"input": "hi", "tool_choice": "maybe"}, "tool_choice.mode", "'none', 'auto' or 'required'"),
    ({"input": "hi", "text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema", "schema"),
    ({"input": "hi", "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "nonsense"}}}},
     "text.format", ""),
    ({"input": "hi", "frequency_penalty": 1}, "frequency_penalty", "Unrecognized request argument"),
    ({"input": "hi", "metadata": {"k" * 65: "v"}}, f"metadata.{'k' * 65}.[key]", "at most 64"),
    ({"input": "hi", "metadata": {str(i): "v" for i in range(17)}}, "metadata", "at most 16"),
])
def test_bad_requests_are_400_in_openai_shape(server, body, param, words):
    error = error_of(post(server, body), 400)
    assert error["param"] == param and words in error["message"], error


def test_a_prompt_over_the_context_is_a_400(server):
    error = error_of(post(server, {"input": "word " * 3000}), 400)
    assert error["code"] == "context_length_exceeded" and error["param"] == "input"


def test_leaving_a_stream_early_cancels_its_generation(served):
    url, srv = served
    # greedy, SmolLM2 loops on this question until the cap: only a cancel ends it early
    body = {"input": QUESTION, "stream": True, "max_output_tokens": 800, "temperature": 0.0}
    entry = srv.registry.entries["smol"]
    before = entry.engine.stats()["generated_tokens"]
    with httpx.stream("POST", url + "/v1/responses", json=body, timeout=120,
                      headers={"Authorization": f"Bearer {KEY}"}) as response:
        assert any("response.output_text.delta" in line for line in response.iter_lines())  # stops at the first
    deadline = time.monotonic() + 30
    while (entry.engine.stats()["running"] or entry.active) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert entry.engine.stats()["running"] == 0 and not entry.active
    assert entry.engine.stats()["generated_tokens"] - before < 100


def test_errors_reach_the_official_client(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(model="nope", input="hi")
    assert info.value.body["code"] == "model_not_found" and info.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError, match="stateless"):
        client.responses.create(model="smol", input="hi", previous_response_id="resp_123")


def test_store_is_accepted_and_ignored(client):
    out = client.responses.create(model="smol", input="hi", store=True, max_output_tokens=2, **GREEDY)
    assert out.status in ("completed", "incomplete") and out.id.startswith("resp_")


def test_route_is_in_the_openapi_schema():
    from llama_ffi.server.app import ROUTES, create_app
    from llama_ffi.server.config import ServerSettings
    from llama_ffi.server.registry import Registry

    paths = create_app(ServerSettings(), Registry([])).openapi()["paths"]
    assert "requestBody" in paths["/v1/responses"]["post"] and "/v1/responses" in ROUTES
