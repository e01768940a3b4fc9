"""chat.tool_grammar: native tool-call grammars, lazily switched on at the trigger.

The end-to-end tests run llama.cpp's lazy grammar sampler on SmolLM2 with the Hermes
``<tool_call>`` syntax (a few-shot prompt teaches the tag): text before the trigger is the
model's own, the call after it follows the tool's schema even where the model would not.
"""

from __future__ import annotations

import json

import pytest

from llama_ffi import Context, ContextParams, Sampler, SamplerChain
from llama_ffi.chat.families import get_family
from llama_ffi.chat.tool_grammar import tool_call_grammar
from llama_ffi.chat.tools import parse_tool_calls, validate_tools
from llama_ffi.native.loop import TokenLoop

jsonschema = pytest.importorskip("jsonschema")  # a test dependency; absent on the GPU machine

WEATHER = {"type": "object", "properties": {
    "city": {"type": "string", "enum": ["Rome", "Oslo"]},
    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"], "additionalProperties": False}
TOOLS = validate_tools([
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
])
HERMES = get_family("hermes")

# The examples show the tag but not the schema's "unit": unconstrained, the model leaves it out.
PROMPT = (
    "<|im_start|>system\nYou can call tools. Write a call as <tool_call>JSON</tool_call>.<|im_end|>\n"
    "<|im_start|>user\nWeather in Paris?<|im_end|>\n"
    '<|im_start|>assistant\nSure.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
    "</tool_call><|im_end|>\n"
    "<|im_start|>user\nWeather in Berlin?<|im_end|>\n"
    '<|im_start|>assistant\nSure.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Berlin"}}\n'
    "</tool_call><|im_end|>\n"
    "<|im_start|>user\nWeather in Rome?<|im_end|>\n<|im_start|>assistant\n"
)


def _generate(model, grammar_sampler=None, max_tokens=60) -> str:
    samplers = ([grammar_sampler] if grammar_sampler is not None else []) + [Sampler.greedy()]
    vocab = model.vocab
    with Context(model, ContextParams(n_ctx=512, n_batch=512)) as ctx, SamplerChain(samplers) as chain:
        loop = TokenLoop(ctx, chain)
        loop.prefill(vocab.tokenize(PROMPT, add_special=False, parse_special=True))
        tokens = list(loop.run(max_tokens, stop_tokens=vocab.eog_tokens))
    return vocab.detokenize(tokens).decode()


def test_lazy_grammar_starts_at_the_trigger_and_constrains_the_call(model):
    spec = tool_call_grammar(HERMES, TOOLS)
    assert spec.lazy and spec.trigger_patterns == ("(<tool_call>)",)
    free = _generate(model)
    lazy = _generate(model, Sampler.grammar(model.vocab, **spec.sampler_args(model.vocab)))
    # Before the trigger the grammar is asleep: the prose is the model's own, token for token.
    head = lazy[: lazy.index("<tool_call>")]
    assert head.strip() and free.startswith(head)
    assert not spec.grammar.matches(lazy[: len(head)] + "x")  # that prose is outside the grammar
    # After it, the call follows the schema, which the free output does not.
    parsed = parse_tool_calls(lazy, HERMES, TOOLS)
    assert len(parsed.tool_calls) == 1, lazy
    call = parsed.tool_calls[0]["function"]
    assert call["name"] == "get_weather"
    jsonschema.validate(json.loads(call["arguments"]), WEATHER)
    free_calls = parse_tool_calls(free, HERMES, TOOLS).tool_calls
    assert not free_calls or "unit" not in json.loads(free_calls[0]["function"]["arguments"])


def test_required_grammar_covers_the_whole_answer(model):
    spec = tool_call_grammar(HERMES, TOOLS, name="get_weather")
    assert not spec.lazy and spec.trigger_patterns == ()
    out = _generate(model, Sampler.grammar(model.vocab, **spec.sampler_args(model.vocab)))
    assert out.lstrip().startswith("<tool_call>")  # no prose: the grammar holds from the first token
    calls = parse_tool_calls(out, HERMES, TOOLS).tool_calls
    assert [c["function"]["name"] for c in calls] == ["get_weather"], out
    jsonschema.validate(json.loads(calls[0]["function"]["arguments"]), WEATHER)


@pytest.mark.parametrize(("family", "text"), [
    ("hermes", '<tool_call>\n{"name":"get_time","arguments":{}}\n</tool_call>'),
    ("granite", '<|tool_call|>[{"name":"get_time","arguments":{}}]'),
    ("phi4", '<|tool_call|>{"name":"get_time","arguments":{}}<|/tool_call|>'),
    ("llama3", '{"name":"get_time","parameters":{}}'),
    ("llama3", '<|python_tag|>{"name":"get_time","parameters":{}}'),
    ("smollm", '```json\n{"tool_calls":[{"name":"get_time","arguments":{}}]}\n```'),
    ("smollm", '[{"name":"get_weather","arguments":{"city":"Oslo","unit":"celsius"}}]'),
])
def test_grammar_accepts_the_native_syntax_and_the_parser_reads_it(family, text):
    fam = get_family(family)
    spec = tool_call_grammar(fam, TOOLS)
    assert spec.grammar.matches(text)
    assert not spec.grammar.matches(text.replace("get_", "got_"))
    assert parse_tool_calls(text, fam, TOOLS).tool_calls


def test_required_allows_a_reasoning_block_first():
    spec = tool_call_grammar(get_family("qwen3"), TOOLS, mode="required")
    call = '<tool_call>{"name":"get_time","arguments":{}}</tool_call>'
    assert spec.grammar.matches(call) and spec.grammar.matches("<think>a <b> c</think>\n" + call)
    opened = tool_call_grammar(get_family("qwen3"), TOOLS, mode="required", reasoning_open=True)
    assert opened.grammar.matches("hmm</think>" + call) and not opened.grammar.matches(call)


def test_lazy_triggers_skip_tool_tags_inside_reasoning():
    spec = tool_call_grammar(get_family("qwen3"), TOOLS)
    assert spec.lazy and spec.trigger_tokens == () and spec.trigger_patterns[0].startswith("^")


def test_parallel_calls_and_uncovered_formats():
    spec = tool_call_grammar(HERMES, TOOLS, parallel=True)
    one = '<tool_call>{"name":"get_time","arguments":{}}</tool_call>'
    assert spec.grammar.matches(one + "\n" + one)
    assert not tool_call_grammar(HERMES, TOOLS).grammar.matches(one + "\n" + one)
    assert tool_call_grammar(get_family("mistral"), TOOLS) is None
    with pytest.raises(ValueError, match="no tool named"):
        tool_call_grammar(HERMES, TOOLS, name="nope")
