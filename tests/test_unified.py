"""UnifiedLLM on the real SmolLM2: plain chat, forced tool calls, JSON answers, streaming."""

from __future__ import annotations

import json

import pytest

import llama_ffi
from llama_ffi import ClosedError, UnifiedLLM
from llama_ffi.llama.unified import ChatDelta, ChatResult

jsonschema = pytest.importorskip("jsonschema")  # a test dependency; absent on the GPU machine

WEATHER = {"type": "object", "properties": {
    "city": {"type": "string", "maxLength": 30},
    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"], "additionalProperties": False}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather of a city",
                                      "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "Local time of a city",
                                      "parameters": {"type": "object", "properties": {
                                          "city": {"type": "string", "maxLength": 30}},
                                          "required": ["city"], "additionalProperties": False}}},
]
SEEDED = {"temperature": 0.8, "seed": 7}


@pytest.fixture(scope="module")
def llm(model_path):
    # One thread: on 2 shared, busy cores a second llama.cpp thread mostly waits.
    with UnifiedLLM(model_path, n_ctx=1024, n_threads=1) as unified:
        yield unified


def test_exported_lazily():
    assert "UnifiedLLM" in llama_ffi.__all__ and llama_ffi.UnifiedLLM is UnifiedLLM


def test_chat_returns_content(llm):
    out = llm.chat("Name one fruit.", max_tokens=16, **SEEDED)
    assert isinstance(out, ChatResult)
    assert out.content and out.tool_calls == () and out.reasoning is None
    assert out.finish_reason in ("stop", "length")
    assert out.usage["total_tokens"] == out.usage["prompt_tokens"] + out.usage["completion_tokens"]
    assert llm.family.name == "smollm"


def test_messages_and_string_agree(llm):
    one = llm.chat("Say hi.", max_tokens=8, temperature=0.0)
    two = llm.chat([{"role": "user", "content": "Say hi."}], max_tokens=8, temperature=0.0)
    assert one.content == two.content


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_required_tool_call_validates(llm, seed):
    out = llm.chat("What is the weather in Rome?", tools=TOOLS, tool_choice="required",
                   max_tokens=96, temperature=0.8, seed=seed)
    assert out.finish_reason == "tool_calls" and out.content is None
    (call,) = out.tool_calls
    params = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    jsonschema.validate(json.loads(call.arguments), params[call.name])
    assert call.id


def test_named_tool_call_validates(llm):
    choice = {"type": "function", "function": {"name": "get_time"}}
    out = llm.chat("What time is it in Oslo?", tools=TOOLS, tool_choice=choice, max_tokens=64, **SEEDED)
    assert [c.name for c in out.tool_calls] == ["get_time"]
    jsonschema.validate(json.loads(out.tool_calls[0].arguments), TOOLS[1]["function"]["parameters"])


def test_json_schema_response_format(llm):
    fmt = {"type": "json_schema", "json_schema": {"name": "weather", "schema": WEATHER}}
    out = llm.chat("Give the weather in Paris as JSON.", response_format=fmt, max_tokens=96, **SEEDED)
    assert out.finish_reason == "stop"
    jsonschema.validate(json.loads(out.content), WEATHER)


def test_json_object_response_format(llm):
    out = llm.chat('Give a JSON object {"name": ..., "age": ...} for a person.',
                   response_format={"type": "json_object"}, max_tokens=256,
                   temperature=0.8, top_k=10, repeat_penalty=1.1, seed=1)
    assert out.finish_reason == "stop", out.content
    assert isinstance(json.loads(out.content), dict)


def test_stream_matches_whole_answer(llm):
    deltas = list(llm.chat("Name one fruit.", stream=True, max_tokens=12, temperature=0.0))
    assert all(isinstance(d, ChatDelta) for d in deltas)
    assert deltas[-1].finish_reason in ("stop", "length")
    whole = llm.chat("Name one fruit.", max_tokens=12, temperature=0.0)
    assert "".join(d.content for d in deltas) == whole.content


def test_stream_tool_call(llm):
    deltas = list(llm.chat("Weather in Rome?", tools=TOOLS, tool_choice="required", stream=True,
                           max_tokens=96, **SEEDED))
    calls = [c for d in deltas for c in d.tool_calls]
    assert len(calls) == 1 and deltas[-1].finish_reason == "tool_calls"
    json.loads(calls[0].arguments)


def test_owns_what_it_builds(model_path):
    with UnifiedLLM(model_path, n_ctx=256) as own:
        assert "smollm" in repr(own) or "UnifiedLLM" in repr(own)
        inner = own.llama
    assert repr(own) == "<UnifiedLLM (closed)>"
    with pytest.raises(ClosedError):
        own.chat("hi")
    with pytest.raises(ClosedError):
        inner.create_completion("hi", max_tokens=1)


def test_shared_llama_is_left_open(llama):
    UnifiedLLM(llama).close()
    assert llama.create_completion("Hi", max_tokens=1, temperature=0.0)["choices"]
    with pytest.raises(llama_ffi.ValidationError):
        UnifiedLLM(llama, n_ctx=128)
