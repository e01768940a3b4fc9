"""chat.tool_grammar: native tool-call grammars, lazily switched on at a safe trigger.

The end-to-end tests run llama.cpp's lazy grammar sampler on SmolLM2 with the Hermes
``<tool_call>`` syntax (a few-shot prompt teaches the tag) and with SmolLM2's own generic
JSON syntax: text before the trigger is the model's own, the call after it follows the
tool's schema even where the model would not. The trigger tests guard the one way a lazy
grammar can take the process down: a trigger that hands the grammar text it rejects.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from llama_ffi import Context, ContextParams, Sampler, SamplerChain
from llama_ffi.chat.families import FAMILIES, get_family
from llama_ffi.chat.tool_grammar import tool_call_grammar
from llama_ffi.chat.tools import parse_tool_calls, validate_tools
from llama_ffi.grammar import GrammarMatcher
from llama_ffi.native.loop import TokenLoop
from llama_ffi.native.sampler import TOKEN_DATA

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
PROSE_PROMPT = "<|im_start|>user\nName one fruit.<|im_end|>\n<|im_start|>assistant\n"


def _generate(model, grammar_sampler=None, max_tokens=60, prompt=PROMPT) -> str:
    samplers = ([grammar_sampler] if grammar_sampler is not None else []) + [Sampler.greedy()]
    vocab = model.vocab
    with Context(model, ContextParams(n_ctx=512, n_batch=512, n_threads=1, n_threads_batch=1)) as ctx, \
            SamplerChain(samplers) as chain:
        loop = TokenLoop(ctx, chain)
        loop.prefill(vocab.tokenize(prompt, add_special=False, parse_special=True))
        tokens = list(loop.run(max_tokens, stop_tokens=vocab.eog_tokens))
    return vocab.detokenize(tokens).decode()


def _fires(pattern: str, text: str):
    """Python's reading of a trigger pattern (ECMAScript's ``$`` is Python's ``\\Z``)."""
    return re.search(pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern, text)


def test_lazy_grammar_starts_at_the_trigger_and_constrains_the_call(model):
    spec = tool_call_grammar(HERMES, TOOLS)
    assert spec.lazy and spec.trigger_tokens == ("<tool_call>",)
    assert _fires(spec.trigger_patterns[0], "Sure.\n<tool_call>\n")
    free = _generate(model)
    lazy = _generate(model, spec.sampler(model.vocab))
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
    out = _generate(model, spec.sampler(model.vocab))
    assert out.lstrip().startswith("<tool_call>")  # no prose: the grammar holds from the first token
    calls = parse_tool_calls(out, HERMES, TOOLS).tool_calls
    assert [c["function"]["name"] for c in calls] == ["get_weather"], out
    jsonschema.validate(json.loads(calls[0]["function"]["arguments"]), WEATHER)


def test_lazy_sampler_masks_nothing_until_the_trigger(model):
    vocab = model.vocab
    candidates = np.zeros(vocab.n_tokens, dtype=TOKEN_DATA)
    candidates["id"] = np.arange(vocab.n_tokens)

    def masked(chain) -> int:
        return int(np.isinf(chain.apply(candidates)["logit"]).sum())

    spec = tool_call_grammar(HERMES, TOOLS)
    hello, brace = (vocab.tokenize(t, add_special=False)[0] for t in ("Hello", '{"'))
    with SamplerChain([spec.sampler(vocab)]) as chain:
        for token in vocab.tokenize("Let me check the weather for you.\n", add_special=False):
            assert masked(chain) == 0  # asleep: any token may come
            chain.accept(token)
        assert masked(chain) == 0
        for token in vocab.tokenize("<tool_call>\n", add_special=False, parse_special=True):
            chain.accept(token)
        logits = chain.apply(candidates)["logit"]
        assert np.isinf(logits[hello]) and not np.isinf(logits[brace])  # awake: only the call
        assert masked(chain) > vocab.n_tokens - 100


def test_generic_lazy_grammar_leaves_prose_alone(model):
    """SmolLM2's own family: a call is a JSON answer; a prose answer never wakes the grammar."""
    spec = tool_call_grammar(get_family("smollm"), TOOLS)
    assert spec.lazy and spec.trigger_tokens == ()
    free = _generate(model, prompt=PROSE_PROMPT, max_tokens=24)
    lazy = _generate(model, spec.sampler(model.vocab), prompt=PROSE_PROMPT, max_tokens=24)
    assert lazy == free and lazy.strip()
    assert not GrammarMatcher(spec.grammar.compiled).feed(lazy)  # not even a start of a call


# Text after an opener: calls written compact and spaced, and text that only looks like one.
_TAILS = [
    "", "\n", " \t\n", '{"name": "get_weather", "arguments": {"city": "Rome", "unit": "celsius"}}',
    '{"name":"get_time","arguments":{}}', '\n{\n  "name": "get_time",\n  "arguments": {}\n}',
    '[{"name": "get_time", "arguments": {}}]', '{"tool_calls": [{"name": "get_time", "arguments": {}}]}',
    '```json\n{"name": "get_time", "arguments": {}}\n```', "```python\nprint(1)\n```",
    '{"name": "Bob", "age": 3}', '{"nome": 1}', '{"fruit": "apple"}', "[1, 2, 3]", "Hello", ", then",
    '": x', "get_time[ARGS]{}", "get_weather[CALL_ID]abcdefgh0[ARGS]", "get_timer[ARGS]",
    '<｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{}', "<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n```json\n",
]
_LAZY = sorted(name for name, fam in FAMILIES.items() if tool_call_grammar(fam, TOOLS) is not None)


@pytest.mark.parametrize("family", _LAZY)
def test_triggers_fire_only_on_text_the_grammar_accepts(family):
    """llama.cpp checks the patterns after every token and hands the grammar the text from
    the capture group on; text the grammar rejects there aborts the process. So wherever a
    pattern matches a growing buffer, that text must be a prefix the grammar accepts."""
    fam = get_family(family)
    spec = tool_call_grammar(fam, TOOLS)
    matcher = GrammarMatcher(spec.grammar.compiled)
    openers = [""] + [t for t in ("<tool_call>", "<|tool_call|>", "<|python_tag|>", "[TOOL_CALLS]")
                      if t in fam.tool_format.start_markers]
    fired = 0
    for lead in ("", "Let me check. "):
        for opener in openers:
            for tail in _TAILS:
                text = lead + opener + tail
                for end in range(1, len(text) + 1):
                    for pattern in spec.trigger_patterns:
                        match = _fires(pattern, text[:end])
                        if match:
                            fired += 1
                            matcher.reset()
                            assert matcher.feed(text[match.start(1): end]), (pattern, text[:end])
    assert fired  # the check above is not vacuous
    assert all(len(p) < 20_000 for p in spec.trigger_patterns)


@pytest.mark.parametrize(("family", "text", "fires"), [
    ("hermes", "Sure.\n<tool_call>", True),
    ("hermes", 'Sure.\n<tool_call>\n{"name": "get_', True),
    ("hermes", "Use <tool_call>, then stop.", False),  # glued to other text in one token
    ("smollm", '{"name": "get_time", "arg', True),
    ("smollm", '```json\n{"name"', True),
    ("smollm", "{", False),  # a JSON answer need not be a call: wait for the key
    ("smollm", '{"fruit": "apple"}', False),
    ("smollm", 'Here: {"name": "get_time"', False),  # a bare call opens the answer
    ("llama3", '{"name": "get_weather", "parameters":', True),
    ("llama3", '{"name": "get_weather", "parameters": {"', False),  # past the head: fired earlier
    ("llama3", "<|python_tag|>", True),
    ("mistral", "[TOOL_CALLS]get_w", True),
    ("mistral", "[TOOL_CALLS][{", True),
    ("mistral", "The [TOOL_CALLS]: marker", False),
])
def test_trigger_examples(family, text, fires):
    spec = tool_call_grammar(get_family(family), TOOLS)
    assert any(_fires(p, text) for p in spec.trigger_patterns) == fires


_GLUED = """
import sys
from llama_ffi import Model, SamplerChain, Sampler
from llama_ffi.chat.families import get_family
from llama_ffi.chat.tool_grammar import tool_call_grammar
from llama_ffi.chat.tools import validate_tools
tools = validate_tools([{"type": "function", "function": {"name": "get_time", "parameters": {}}}])
with Model.load(sys.argv[1], n_gpu_layers=0) as model:
    vocab = model.vocab
    for family, text in (("hermes", "Use <tool_call>, then stop."), ("mistral", "The [TOOL_CALLS]: marker")):
        spec = tool_call_grammar(get_family(family), tools)
        patterns = list(get_family(family).tool_trigger_patterns if sys.argv[2] == "family" else spec.trigger_patterns)
        sampler = Sampler.grammar(vocab, spec.text, spec.root, lazy=True, trigger_patterns=patterns)
        with SamplerChain([sampler]) as chain:
            for token in vocab.tokenize(text, add_special=False):
                chain.accept(token)
print("survived")
"""


@pytest.mark.parametrize(("patterns", "survives"), [("ours", True), ("family", False)])
def test_a_marker_glued_to_other_text_does_not_abort(model_path, patterns, survives):
    """SmolLM2 writes '>,' and ']:' as single tokens, so a plain marker pattern hands the
    grammar ',' or ':' after the marker, which it rejects: llama.cpp aborts the process.
    The family's llama.cpp-style patterns show that; ours must not fire there."""
    env = {**os.environ, "GGML_NO_BACKTRACE": "1"}  # no gdb attach when it aborts
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(_GLUED), str(model_path), patterns],
                          capture_output=True, text=True, timeout=120, check=False, env=env)
    assert (proc.returncode == 0 and "survived" in proc.stdout) == survives, proc.stderr[-2000:]
    if not survives:
        assert "Unexpected empty grammar stack" in proc.stderr


@pytest.mark.parametrize(("family", "text", "mode"), [
    ("hermes", '<tool_call>\n{"name":"get_time","arguments":{}}\n</tool_call>', "auto"),
    ("hermes", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}}\n</tool_call>',
     "auto"),
    ("granite", '<|tool_call|>[{"name":"get_time","arguments":{}}]', "required"),
    ("phi4", '<|tool_call|>{"name":"get_time","arguments":{}}<|/tool_call|>', "required"),
    ("llama3", '{"name":"get_time","parameters":{}}', "auto"),
    ("llama3", '<|python_tag|>{"name": "get_time", "parameters": {}}', "auto"),
    ("smollm", '```json\n{"tool_calls":[{"name":"get_time","arguments":{}}]}\n```', "auto"),
    ("smollm", '[{"name":"get_weather","arguments":{"city":"Oslo","unit":"celsius"}}]', "auto"),
    ("mistral", '[TOOL_CALLS][{"name": "get_time", "arguments": {}, "id": "abcdefgh0"}]', "auto"),
    ("mistral", '[TOOL_CALLS]get_weather[ARGS]{"city": "Oslo", "unit": "celsius"}', "auto"),
    ("devstral", "[TOOL_CALLS]get_time[CALL_ID]abcdefgh0[ARGS]{}", "required"),
    ("deepseek-v3", ("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{}<｜tool▁call▁end｜>"
                     "<｜tool▁calls▁end｜>"), "required"),
    ("deepseek-r1", ("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n```json\n{}\n```"
                     "<｜tool▁call▁end｜><｜tool▁calls▁end｜>"), "required"),
])
def test_grammar_accepts_the_native_syntax_and_the_parser_reads_it(family, text, mode):
    fam = get_family(family)
    spec = tool_call_grammar(fam, TOOLS, mode=mode)
    assert spec.grammar.matches(text)
    assert not spec.grammar.matches(text.replace("get_", "got_"))
    assert parse_tool_calls(text, fam, TOOLS).tool_calls


def test_required_allows_a_reasoning_block_first():
    spec = tool_call_grammar(get_family("qwen3"), TOOLS, mode="required")
    call = '<tool_call>{"name":"get_time","arguments":{}}</tool_call>'
    assert spec.grammar.matches(call) and spec.grammar.matches("<think>a <b> c</think>\n" + call)
    opened = tool_call_grammar(get_family("qwen3"), TOOLS, mode="required", reasoning_open=True)
    assert opened.grammar.matches("hmm</think>" + call) and not opened.grammar.matches(call)
    done = tool_call_grammar(get_family("qwen3"), TOOLS, mode="required", reasoning_done=True)
    assert done.grammar.matches(call) and not done.grammar.matches("<think>a</think>" + call)


def test_auto_has_no_lazy_grammar_while_reasoning_may_come():
    """A trigger that skips a reasoning block needs a pattern over the whole thought, which
    overflows libstdc++'s regex stack on long thoughts: no lazy grammar then."""
    qwen3 = get_family("qwen3")
    assert tool_call_grammar(qwen3, TOOLS) is None
    assert tool_call_grammar(qwen3, TOOLS, reasoning_open=True) is None
    done = tool_call_grammar(qwen3, TOOLS, reasoning_done=True)
    assert done.lazy and done.trigger_tokens == ("<tool_call>",)
    assert not any("[\\s\\S]*" in p for p in done.trigger_patterns)


def test_parallel_calls_and_uncovered_formats():
    spec = tool_call_grammar(HERMES, TOOLS, parallel=True)
    one = '<tool_call>{"name":"get_time","arguments":{}}</tool_call>'
    assert spec.grammar.matches(one + "\n" + one)
    assert not tool_call_grammar(HERMES, TOOLS).grammar.matches(one + "\n" + one)
    two = "[TOOL_CALLS]get_time[ARGS]{}[TOOL_CALLS]get_time[ARGS]{}"
    assert tool_call_grammar(get_family("mistral"), TOOLS, parallel=True).grammar.matches(two)
    assert not tool_call_grammar(get_family("mistral"), TOOLS).grammar.matches(two)
    for uncovered in ("qwen3.5", "glm4", "gpt-oss", "functionary-v3.2", "gemma4"):
        assert tool_call_grammar(get_family(uncovered), TOOLS, mode="required") is None
    with pytest.raises(ValueError, match="no tool named"):
        tool_call_grammar(HERMES, TOOLS, name="nope")


def test_rule_names_from_schemas_cannot_clash():
    """Property names become rule names; a tool whose parameters are called like our own
    rules ("tool-call", "root") must not redefine them."""
    clash = {"type": "object", "properties": {"tool-call": {"type": "integer"}, "root": {"type": "string"}},
             "required": ["tool-call", "root"]}
    tools = validate_tools([{"type": "function", "function": {"name": "f", "parameters": clash}}])
    for family in ("hermes", "mistral"):
        spec = tool_call_grammar(get_family(family), tools, mode="required")
        text = {"hermes": '<tool_call>{"name":"f","arguments":{"tool-call":1,"root":"x"}}</tool_call>',
                "mistral": '[TOOL_CALLS]f[ARGS]{"tool-call": 1, "root": "x"}'}[family]
        assert spec.grammar.matches(text)
