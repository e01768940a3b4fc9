"""create_chat_completion on the real model: shapes, streaming, template, JSON and tools."""

from __future__ import annotations

import json

import pytest

from llama_ffi import Llama, ValidationError

MESSAGES = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Name one fruit."}]
GREEDY = {"temperature": 0.0}
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def test_chat_completion_shape(llama):
    out = llama.create_chat_completion(MESSAGES, max_tokens=8, **GREEDY)
    assert out["object"] == "chat.completion" and out["id"].startswith("chatcmpl-")
    choice = out["choices"][0]
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length") and choice["logprobs"] is None
    usage = out["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_prompt_is_the_gguf_template(llama):
    from llama_ffi.chat import render_chat

    text = render_chat(llama.model.chat_template(), MESSAGES, add_generation_prompt=True)
    expected = len(llama.tokenize(text.encode(), add_bos=False, special=True))
    out = llama.create_chat_completion(MESSAGES, max_tokens=1, **GREEDY)
    assert out["usage"]["prompt_tokens"] == expected
    plain = llama(llama.tokenize(text.encode(), add_bos=False, special=True), max_tokens=10, **GREEDY)
    chat = llama.create_chat_completion(MESSAGES, max_tokens=10, **GREEDY)
    assert chat["choices"][0]["message"]["content"] == plain["choices"][0]["text"]


def test_chat_format_name_is_used(model_path, llama):
    llama.reset()  # decode the whole prompt at once in both, so the arithmetic is the same
    reference = llama.create_chat_completion(MESSAGES, max_tokens=6, **GREEDY)
    with Llama(str(model_path), n_ctx=512, n_batch=256, chat_format="chatml", verbose=False) as other:
        out = other.create_chat_completion(MESSAGES, max_tokens=6, **GREEDY)
    # SmolLM2's own template is ChatML too: both paths must give the same answer
    assert out["choices"][0]["message"]["content"] == reference["choices"][0]["message"]["content"]


def test_stream_chunks(llama):
    chunks = list(llama.create_chat_completion(MESSAGES, max_tokens=10, stream=True, **GREEDY))
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert chunks[-1]["choices"][0]["delta"] == {} and chunks[-1]["choices"][0]["finish_reason"] is not None
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    whole = llama.create_chat_completion(MESSAGES, max_tokens=10, **GREEDY)
    assert text == whole["choices"][0]["message"]["content"]
    assert len({c["id"] for c in chunks}) == 1


def test_response_format_json_schema(llama):
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"]}
    out = llama.create_chat_completion(
        [{"role": "user", "content": "Describe a person as JSON."}], max_tokens=80, **GREEDY,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}})
    data = json.loads(out["choices"][0]["message"]["content"])
    assert isinstance(data["name"], str) and isinstance(data["age"], int)


def test_response_format_json_object(llama):
    out = llama.create_chat_completion([{"role": "user", "content": "Give me JSON about a cat."}],
                                       max_tokens=60, response_format={"type": "json_object"}, **GREEDY)
    if out["choices"][0]["finish_reason"] == "stop":
        assert isinstance(json.loads(out["choices"][0]["message"]["content"]), dict)
    else:
        assert out["choices"][0]["message"]["content"].lstrip().startswith("{")


def test_named_tool_choice_returns_tool_calls(llama):
    out = llama.create_chat_completion(
        [{"role": "user", "content": "What is the weather in Paris?"}], tools=TOOLS, max_tokens=40,
        tool_choice={"type": "function", "function": {"name": "get_weather"}}, **GREEDY)
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert isinstance(json.loads(call["function"]["arguments"])["city"], str)
    assert call["id"]


def test_required_tool_choice_streams_a_call(llama):
    chunks = list(llama.create_chat_completion(
        [{"role": "user", "content": "Weather in Rome?"}], tools=TOOLS, tool_choice="required",
        max_tokens=60, stream=True, **GREEDY))
    calls = [tc for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    assert calls and calls[0]["function"]["name"] == "get_weather" and calls[0]["index"] == 0
    json.loads(calls[0]["function"]["arguments"])
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_auto_tools_give_a_valid_message(llama):
    out = llama.create_chat_completion([{"role": "user", "content": "Hi!"}], tools=TOOLS, max_tokens=12, **GREEDY)
    message = out["choices"][0]["message"]
    assert message["role"] == "assistant"
    assert isinstance(message.get("content"), str) or message.get("tool_calls")


def test_chat_logprobs(llama):
    out = llama.create_chat_completion(MESSAGES, max_tokens=3, logprobs=True, top_logprobs=2, **GREEDY)
    content = out["choices"][0]["logprobs"]["content"]
    assert len(content) == 3
    for entry in content:
        assert entry["logprob"] <= 0 and 2 <= len(entry["top_logprobs"]) <= 3
        assert entry["logprob"] == pytest.approx(max(t["logprob"] for t in entry["top_logprobs"]))


@pytest.mark.parametrize("kwargs", [
    {"tools": "nope"}, {"tool_choice": "required"}, {"response_format": {"type": "xml"}},
    {"response_format": {"type": "json_schema"}}, {"top_logprobs": 50, "logprobs": True},
])
def test_bad_chat_inputs(llama, kwargs):
    with pytest.raises(ValidationError):
        llama.create_chat_completion(MESSAGES, max_tokens=2, **kwargs)


def test_custom_chat_handler_gets_the_request(model_path):
    seen = {}

    def handler(*, llama, messages, **kwargs):
        seen.update(kwargs, messages=messages)
        return {"handled": True}

    with Llama(str(model_path), n_ctx=128, chat_handler=handler, verbose=False) as llm:
        assert llm.create_chat_completion(MESSAGES, temperature=0.3) == {"handled": True}
    assert seen["messages"] == MESSAGES and seen["temperature"] == 0.3
