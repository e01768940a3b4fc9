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


# --- native tool grammars on the real model ----------------------------------------------
# SmolLM2's family is "smollm": calls are a JSON answer (``{"name", "arguments"}``, a list of
# them, or ``{"tool_calls": [...]}``). Its template has no tools slot, so the pipeline
# describes the tools in the system message.
WEATHER_PARAMS = {"type": "object", "properties": {
    "city": {"type": "string", "enum": ["Rome", "Oslo", "Paris"]},
    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"], "additionalProperties": False}
TIME_PARAMS = {"type": "object", "properties": {"tz": {"type": "string", "maxLength": 30}},
               "required": ["tz"], "additionalProperties": False}
PARAMS = {"get_weather": WEATHER_PARAMS, "get_time": TIME_PARAMS}
STRICT_TOOLS = [{"type": "function", "function": {"name": name, "description": f"{name} for a place",
                                                  "parameters": params}} for name, params in PARAMS.items()]


def _shot(city):
    return [{"role": "user", "content": f"Weather in {city}?"},
            {"role": "assistant", "content": json.dumps({"name": "get_weather", "arguments": {"city": city}})}]


# Two examples of a call that leaves out "unit": unconstrained, the model copies that.
FEW_SHOT = [*_shot("Paris"), *_shot("Berlin"), {"role": "user", "content": "Weather in Rome?"}]


@pytest.fixture(scope="module")
def llm(model_path):
    """One thread for decode and batches: the test machine is small and shared."""
    with Llama(str(model_path), n_ctx=1024, n_batch=256, n_threads=1, n_threads_batch=1, verbose=False) as llm:
        yield llm


def _free_text(llm, messages, max_tokens, **chat):
    """What the model writes for the chat's prompt with no grammar at all."""
    from llama_ffi.chat.pipeline import build_chat

    prompt = build_chat(llm.model, None, messages, {"tools": STRICT_TOOLS, **chat}).prompt
    tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)
    return llm(tokens, max_tokens=max_tokens, **GREEDY)["choices"][0]["text"]


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_time"}}],
                         ids=["required", "named"])
@pytest.mark.parametrize(("seed", "question"), [(0, "What's the weather in Rome?"),
                                                (1, "What time is it in Tokyo?"), (2, "Tell me a joke.")])
def test_forced_tool_call_follows_the_schema(llm, choice, seed, question):
    jsonschema = pytest.importorskip("jsonschema")
    out = llm.create_chat_completion([{"role": "user", "content": question}], tools=STRICT_TOOLS,
                                     tool_choice=choice, max_tokens=60, temperature=0.8, seed=seed)
    result = out["choices"][0]
    assert result["finish_reason"] == "tool_calls" and result["message"]["content"] is None
    (call,) = result["message"]["tool_calls"]
    name = call["function"]["name"]
    assert name == "get_time" if isinstance(choice, dict) else name in PARAMS
    jsonschema.validate(json.loads(call["function"]["arguments"]), PARAMS[name])
    assert call["type"] == "function" and call["id"].startswith("call_")


def test_requests_carry_the_native_tool_grammar(llm):
    from llama_ffi.chat.pipeline import build_chat
    from llama_ffi.chat.tool_grammar import ToolGrammarSpec
    from llama_ffi.grammar import LlamaGrammar

    def build(**chat):
        return build_chat(llm.model, None, MESSAGES, {"tools": STRICT_TOOLS, **chat})

    forced, auto, none = build(tool_choice="required"), build(), build(tool_choice="none")
    assert forced.tool_mode == "native" and isinstance(forced.grammar, ToolGrammarSpec) and not forced.grammar.lazy
    assert auto.tool_mode == "native" and auto.grammar is None and auto.auto_grammar.lazy
    assert none.tool_mode == "none" and none.grammar is None and none.auto_grammar is None
    assert "get_weather" in auto.prompt and "get_weather" not in none.prompt  # tools described
    mine = LlamaGrammar.from_string('root ::= "yes" | "no"')
    assert auto.grammar_for() is auto.auto_grammar and auto.grammar_for(mine) is mine
    with pytest.raises(ValidationError):
        forced.grammar_for(mine)
    with_format = build(response_format={"type": "json_object"})
    assert with_format.auto_grammar is None and with_format.grammar_for() is with_format.grammar


def test_a_schema_without_a_grammar_still_parses_in_auto(llm):
    """Parameters the JSON Schema converter rejects: "auto" falls back to parsing only
    (as before tool grammars), a forced call reports the schema."""
    from llama_ffi.chat.pipeline import build_chat
    from llama_ffi.errors import GrammarError

    odd = {"type": "object", "properties": {"code": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5}}}
    chat = {"tools": [{"type": "function", "function": {"name": "f", "parameters": odd}}]}
    auto = build_chat(llm.model, None, MESSAGES, chat)
    assert auto.tool_mode == "native" and auto.grammar_for() is None
    with pytest.raises(GrammarError):
        build_chat(llm.model, None, MESSAGES, {**chat, "tool_choice": "required"})
    with pytest.raises(ValidationError, match="parallel_tool_calls"):
        build_chat(llm.model, None, MESSAGES, {**chat, "parallel_tool_calls": "yes"})


def test_auto_answers_in_prose_under_the_lazy_grammar(llm):
    messages = [{"role": "user", "content": "Name one fruit."}]
    out = llm.create_chat_completion(messages, tools=STRICT_TOOLS, max_tokens=24, **GREEDY)
    result = out["choices"][0]
    assert "tool_calls" not in result["message"] and result["finish_reason"] in ("stop", "length")
    assert result["message"]["content"].strip()
    # The grammar never woke: token for token what the model writes with no grammar.
    assert result["message"]["content"] == _free_text(llm, messages, 24)


def test_auto_call_is_constrained_once_started(llm):
    jsonschema = pytest.importorskip("jsonschema")
    free = _free_text(llm, FEW_SHOT, 40)
    assert '"get_weather"' in free and "unit" not in free  # the model starts a call, unconstrained
    out = llm.create_chat_completion(FEW_SHOT, tools=STRICT_TOOLS, max_tokens=40, **GREEDY)
    result = out["choices"][0]
    assert result["finish_reason"] == "tool_calls" and result["message"]["content"] is None
    (call,) = result["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    jsonschema.validate(json.loads(call["function"]["arguments"]), WEATHER_PARAMS)  # "unit" is there now
    chunks = list(llm.create_chat_completion(FEW_SHOT, tools=STRICT_TOOLS, max_tokens=40, stream=True, **GREEDY))
    streamed = [tc for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    assert [tc["function"] for tc in streamed] == [call["function"]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_tool_choice_none_never_yields_tool_calls(llm):
    out = llm.create_chat_completion(FEW_SHOT, tools=STRICT_TOOLS, tool_choice="none", max_tokens=40, **GREEDY)
    result = out["choices"][0]
    assert "tool_calls" not in result["message"] and result["finish_reason"] != "tool_calls"
    assert '"get_weather"' in result["message"]["content"]  # a call-shaped answer, left as text
    chunks = list(llm.create_chat_completion(FEW_SHOT, tools=STRICT_TOOLS, tool_choice="none", max_tokens=40,
                                             stream=True, **GREEDY))
    assert not any("tool_calls" in c["choices"][0]["delta"] for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] != "tool_calls"


def test_families_without_a_native_grammar_keep_the_json_fallback(llm, monkeypatch):
    """Functionary v3.2 has no tool grammar: a forced call is one JSON object under the
    whole-answer grammar, read back as the call."""
    jsonschema = pytest.importorskip("jsonschema")
    from llama_ffi.chat import families
    from llama_ffi.chat.pipeline import build_chat

    monkeypatch.setattr(families, "detect_family", lambda *a, **k: families.get_family("functionary-v3.2"))
    chat = {"tools": STRICT_TOOLS, "tool_choice": "required"}
    assert build_chat(llm.model, None, MESSAGES, chat).tool_mode == "json"
    out = llm.create_chat_completion([{"role": "user", "content": "Weather in Oslo?"}], max_tokens=60, **chat,
                                     **GREEDY)
    (call,) = out["choices"][0]["message"]["tool_calls"]
    jsonschema.validate(json.loads(call["function"]["arguments"]), PARAMS[call["function"]["name"]])
    assert out["choices"][0]["finish_reason"] == "tool_calls"


# --- the OpenAI tool loop: the history comes back with content None and tool_calls ---------
# SmolLM2's template concatenates message['content'] and knows nothing of tools: the pipeline
# polyfills the history (llama_ffi.chat.polyfill) instead of failing on the second turn.
def _tool_loop_history(calls, result='{"temp": 18}'):
    return [{"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": calls},
            *({"role": "tool", "tool_call_id": call["id"], "content": result} for call in calls)]


def test_openai_tool_loop_second_turn(llm):
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather of a city",
                                               "parameters": WEATHER_PARAMS}}]
    first = llm.create_chat_completion([{"role": "user", "content": "What is the weather in Paris?"}], tools=tools,
                                       tool_choice="required", max_tokens=60, **GREEDY)
    assert first["choices"][0]["finish_reason"] == "tool_calls"
    calls = first["choices"][0]["message"]["tool_calls"]
    history = _tool_loop_history(calls)
    history_before = json.dumps(history)
    second = llm.create_chat_completion(history, tools=tools, tool_choice="none", max_tokens=16, **GREEDY)
    result = second["choices"][0]
    assert result["message"]["role"] == "assistant" and "tool_calls" not in result["message"]
    assert isinstance(result["message"]["content"], str) and result["finish_reason"] in ("stop", "length")
    auto = llm.create_chat_completion(history, tools=tools, tool_choice="auto", max_tokens=16, **GREEDY)
    message = auto["choices"][0]["message"]
    assert isinstance(message["content"], str) or message.get("tool_calls")
    assert json.dumps(history) == history_before  # the caller's messages are not rewritten


def test_tool_loop_prompt_carries_the_call_and_its_result(llm):
    from llama_ffi.chat.pipeline import build_chat
    from llama_ffi.chat.tools import parse_tool_calls

    calls = [{"id": "call_1", "type": "function",
              "function": {"name": "get_weather", "arguments": '{"city":"Paris","unit":"celsius"}'}}]
    request = build_chat(llm.model, None, _tool_loop_history(calls), {"tools": STRICT_TOOLS})
    written = '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}'
    assert f"<|im_start|>assistant\n{written}<|im_end|>" in request.prompt
    assert '<|im_start|>tool\n{"temp": 18}<|im_end|>' in request.prompt
    assert request.prompt.endswith("<|im_start|>assistant\n")
    # written the way the model is asked to answer, so it reads back as the same call
    (call,) = parse_tool_calls(written, request.family, STRICT_TOOLS).tool_calls
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}
    named = build_chat(llm.model, "chatml", _tool_loop_history(calls), {"tools": STRICT_TOOLS}).prompt
    assert written in named and '<|im_start|>tool\n{"temp": 18}' in named  # named formats too


def test_tool_loop_on_a_template_without_system_or_tool_roles(llm, monkeypatch):
    """The same model under Gemma 2's template, which raises on a system message and on
    any role but user/assistant: the tools' note and the system text fold into the first
    user turn, the tool result becomes a user turn."""
    from pathlib import Path

    from llama_ffi.chat.pipeline import build_chat

    path = Path(__file__).resolve().parents[1] / "vendor/llama.cpp/models/templates/google-gemma-2-2b-it.jinja"
    if not path.exists():
        pytest.skip("vendor/llama.cpp not present")
    monkeypatch.setattr(llm.model, "chat_template", lambda name=None: path.read_text(encoding="utf-8"))
    calls = [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}]
    history = [{"role": "system", "content": "Be brief."}, *_tool_loop_history(calls)]
    request = build_chat(llm.model, None, history, {"tools": STRICT_TOOLS})
    assert request.family.name == "gemma" and "system" not in request.prompt
    _, first_user, tool_turn = request.prompt.split("<start_of_turn>user\n")
    assert first_user.startswith("Be brief.\n\nYou can call these functions.") and "get_time" in first_user
    assert '<start_of_turn>model\n{"name": "get_weather", "arguments": {"city": "Oslo"}}<end_of_turn>' in request.prompt
    assert json.loads(tool_turn.split("<end_of_turn>")[0]) == {
        "tool_response": {"name": "get_weather", "tool_call_id": "call_1", "content": {"temp": 18}}}
