"""Tool calls: each family's native syntax -> OpenAI tool_calls, whole and streamed."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from llama_ffi.chat.families import detect_family, get_family
from llama_ffi.chat.reasoning import ReasoningStreamSplitter, prompt_opens_reasoning, split_reasoning
from llama_ffi.chat.tools import (
    ToolCallStreamParser,
    ToolChoice,
    normalize_tool_choice,
    parse_tool_calls,
    tool_schemas,
    validate_tools,
)
from llama_ffi.errors import ValidationError

TEMPLATES = Path(__file__).resolve().parents[1] / "vendor" / "llama.cpp" / "models" / "templates"

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Current time",
            "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}},
        },
    },
]
WEATHER = ("get_weather", {"city": "Paris", "days": 3})
TIME = ("get_time", {"tz": "Europe/Paris"})


def calls_of(tool_calls):
    return [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in tool_calls]


def squash(text):
    return " ".join(text.split())


def random_chunks(text, rng):
    chunks, pos = [], 0
    while pos < len(text):
        size = rng.choice([1, 1, 2, 3, 4, 7, 11])
        chunks.append(text[pos : pos + size])
        pos += size
    return chunks


def stream_tools(family, chunks, tools=None):
    parser = ToolCallStreamParser(family, tools)
    content, calls = "", []
    for chunk in chunks:
        step = parser.feed(chunk)
        content += step.content
        calls += step.tool_calls
    step = parser.finish()
    return content + step.content, calls + step.tool_calls


# --- hand-written outputs in each native format ---------------------------------

# (family, model output, expected calls, expected content)
OUTPUTS = [
    (
        "hermes",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}\n</tool_call>',
        [WEATHER],
        "",
    ),
    (
        "qwen3",
        'Let me check both.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_time", "arguments": "{\\"tz\\": \\"Europe/Paris\\"}"}\n</tool_call>',
        [WEATHER, TIME],
        "Let me check both.",
    ),
    (
        "qwen2.5",
        '<tool_call>\n{"name": "get_time", "arguments": {"tz": "Europe/Paris"}}',
        [TIME],
        "",
    ),  # stopped before </tool_call>
    (
        "granite4",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}\n</tool_call>',
        [WEATHER],
        "",
    ),
    ("llama3", '{"name": "get_weather", "parameters": {"city": "Paris", "days": 3}}', [WEATHER], ""),
    ("llama3", '{"type": "function", "name": "get_time", "parameters": {"tz": "Europe/Paris"}}', [TIME], ""),
    (
        "llama3",
        '{"name": "get_weather", "parameters": {"city": "Paris", "days": 3}}; {"name": "get_time", "parameters": {"tz": "Europe/Paris"}}',
        [WEATHER, TIME],
        "",
    ),
    ("llama3", '<|python_tag|>{"name": "get_time", "parameters": {"tz": "Europe/Paris"}}', [TIME], ""),
    (
        "llama3",
        '<|python_tag|>brave_search.call(query="Paris weather", count=3)',
        [("brave_search", {"query": "Paris weather", "count": 3})],
        "",
    ),
    ("llama3", "<|python_tag|>print(2 ** 10)", [("python", {"code": "print(2 ** 10)"})], ""),
    (
        "mistral",
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}, "id": "a1b2c3d4e"}, '
        '{"name": "get_time", "arguments": {"tz": "Europe/Paris"}, "id": "f5g6h7i8j"}]',
        [WEATHER, TIME],
        "",
    ),
    ("mistral", 'Sure.[TOOL_CALLS]get_weather[CALL_ID]a1b2c3d4e[ARGS]{"city": "Paris", "days": 3}', [WEATHER], "Sure."),
    (
        "devstral",
        '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris", "days": 3}[TOOL_CALLS]get_time[ARGS]{"tz": "Europe/Paris"}',
        [WEATHER, TIME],
        "",
    ),
    (
        "deepseek-r1",
        "I'll look it up.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
        '{"city": "Paris", "days": 3}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n```json\n'
        '{"tz": "Europe/Paris"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>',
        [WEATHER, TIME],
        "I'll look it up.",
    ),
    (
        "deepseek-r1",  # R1 sometimes spells the markers with '_'
        '<｜tool_calls_begin｜><｜tool_call_begin｜>function<｜tool_sep｜>get_time\n```json\n{"tz": "Europe/Paris"}\n```<｜tool_call_end｜><｜tool_calls_end｜>',
        [TIME],
        "",
    ),
    (
        "deepseek-v3",
        '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"city": "Paris", "days": 3}<｜tool▁call▁end｜>'
        '<｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{"tz": "Europe/Paris"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>',
        [WEATHER, TIME],
        "",
    ),
    (
        "gpt-oss",
        '<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris", "days": 3}<|call|>',
        [WEATHER],
        "",
    ),
    ("gpt-oss", ' to=functions.get_time<|channel|>commentary json<|message|>{"tz": "Europe/Paris"}', [TIME], ""),
    (
        "functionary-v3.1",
        'Checking.<function=get_weather>{"city": "Paris", "days": 3}</function>',
        [WEATHER],
        "Checking.",
    ),
    (
        "functionary-v3.1",
        "<|python_tag|>import math\nprint(math.pi)",
        [("python", {"code": "import math\nprint(math.pi)"})],
        "",
    ),
    (
        "functionary-v3.2",
        'all\nOne moment.>>>get_weather\n{"city": "Paris", "days": 3}>>>get_time\n{"tz": "Europe/Paris"}',
        [WEATHER, TIME],
        "One moment.",
    ),
    ("functionary-v3.2", 'get_time\n{"tz": "Europe/Paris"}', [TIME], ""),
    ("functionary-v3.2", "all\nJust text.", [], "Just text."),
    (
        "glm4",
        "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n<arg_key>days</arg_key>\n"
        "<arg_value>3</arg_value>\n</tool_call><tool_call>get_time\n<arg_key>tz</arg_key>\n<arg_value>Europe/Paris</arg_value>\n</tool_call>",
        [WEATHER, TIME],
        "",
    ),
    ("glm4", '<tool_call>get_time\n{"tz": "Europe/Paris"}</tool_call>', [TIME], ""),
    ("granite", '<|tool_call|>[{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}]', [WEATHER], ""),
    ("phi4", '<|tool_call|>[{"name": "get_time", "arguments": {"tz": "Europe/Paris"}}]<|/tool_call|>', [TIME], ""),
    (
        "gemma4",
        '<|tool_call>call:get_weather{city:<|"|>Paris<|"|>,days:3}<tool_call|><|tool_call>call:get_time{tz:<|"|>Europe/Paris<|"|>}<tool_call|>',
        [WEATHER, TIME],
        "",
    ),
    (
        "gemma4",
        '<|tool_call>call:plan{steps:[<|"|>a, b<|"|>,<|"|>c<|"|>],opts:{fast:true,ratio:-1.5e2,note:null}}<tool_call|>',
        [("plan", {"steps": ["a, b", "c"], "opts": {"fast": True, "ratio": -150.0, "note": None}})],
        "",
    ),
    (
        "qwen3.5",
        "I will call it.\n<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n<parameter=days>\n3\n"
        "</parameter>\n</function>\n</tool_call>\n<tool_call>\n<function=get_time>\n<parameter=tz>\nEurope/Paris\n"
        "</parameter>\n</function>\n</tool_call>",
        [WEATHER, TIME],
        "I will call it.",
    ),
    ("qwen3-coder", "<function=get_time>\n<parameter=tz>\nEurope/Paris\n</parameter>\n</function>", [TIME], ""),
    ("generic", '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}]}', [WEATHER], ""),
    ("gemma", '```json\n{"tool_call": {"name": "get_time", "arguments": {"tz": "Europe/Paris"}}}\n```', [TIME], ""),
    ("phi3", '[{"name": "get_time", "arguments": {"tz": "Europe/Paris"}}]', [TIME], ""),
]


@pytest.mark.parametrize(("name", "text", "expected", "content"), OUTPUTS)
def test_parse_native_output(name, text, expected, content):
    result = parse_tool_calls(text, get_family(name), TOOLS)
    assert calls_of(result.tool_calls) == expected
    assert result.content == content


@pytest.mark.parametrize(("name", "text", "expected", "content"), OUTPUTS)
def test_streaming_matches_whole_answer(name, text, expected, content):
    family = get_family(name)
    for seed in range(25):
        chunks = random_chunks(text, random.Random(seed))
        streamed, calls = stream_tools(family, chunks, TOOLS)
        assert calls_of(calls) == expected, chunks
        assert [c["index"] for c in calls] == list(range(len(calls)))
        assert squash(streamed) == squash(content), chunks
    streamed, calls = stream_tools(family, list(text), TOOLS)
    assert calls_of(calls) == expected


def test_openai_shape_and_unique_ids():
    result = parse_tool_calls(OUTPUTS[1][1], get_family("qwen3"))
    ids = [call["id"] for call in result.tool_calls]
    assert len(set(ids)) == len(ids)
    for call in result.tool_calls:
        assert set(call) == {"id", "type", "function"}
        assert call["type"] == "function"
        assert re.fullmatch(r"call_[0-9a-f]{24}", call["id"])
        assert isinstance(call["function"]["arguments"], str)
    again = parse_tool_calls(OUTPUTS[1][1], get_family("qwen3"))
    assert not set(ids) & {call["id"] for call in again.tool_calls}


def test_mistral_ids_satisfy_its_template():
    """Mistral templates raise unless ids are exactly 9 alphanumerics."""
    result = parse_tool_calls(OUTPUTS[10][1], get_family("mistral"))
    assert all(re.fullmatch(r"[0-9a-zA-Z]{9}", c["id"]) for c in result.tool_calls)


def test_text_formats_type_values_from_schema():
    family = get_family("qwen3.5")
    text = "<tool_call>\n<function=lookup>\n<parameter=zip>\n01234\n</parameter>\n<parameter=n>\n7\n</parameter>\n</function>\n</tool_call>"
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "parameters": {"type": "object", "properties": {"zip": {"type": "string"}, "n": {"type": "integer"}}},
            },
        }
    ]
    assert calls_of(parse_tool_calls(text, family, tools).tool_calls) == [("lookup", {"zip": "01234", "n": 7})]
    # Without schemas values that read as JSON become JSON.
    assert calls_of(parse_tool_calls(text.replace("01234", "true"), family).tool_calls) == [
        ("lookup", {"zip": True, "n": 7})
    ]
    glm = "<tool_call>lookup\n<arg_key>zip</arg_key>\n<arg_value>01234</arg_value>\n</tool_call>"
    assert calls_of(parse_tool_calls(glm, get_family("glm4"), tools).tool_calls) == [("lookup", {"zip": "01234"})]


# --- negative cases --------------------------------------------------------------

NEGATIVE = [
    ("hermes", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par\n</tool_call>'),  # truncated JSON
    ("hermes", "<tool_call>\nget_weather(city='Paris')\n</tool_call>"),
    ("hermes", '<tool_call>{"arguments": {"city": "Paris"}}</tool_call>'),  # no name
    ("hermes", '<tool_call>{"name": "get_weather", "arguments": [1, 2]}</tool_call>'),  # args not an object
    ("hermes", 'I use <tool_call> tags when {"calling": "tools"}.'),
    ("llama3", '{"name": "Alice", "age": 30}'),  # a JSON answer, not a call
    ("llama3", 'Here is JSON: {"name": "get_weather", "parameters": {}}'),  # not at the start
    ("mistral", '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": }]'),
    ("mistral", "[TOOL_CALLS]get_weather[ARGS]{oops}"),
    (
        "deepseek-v3",
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{bad json}<｜tool▁call▁end｜>",
    ),
    ("gpt-oss", "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{not json<|call|>"),
    ("gpt-oss", '<|channel|>commentary<|message|>{"just": "a preamble"}<|end|>'),
    ("functionary-v3.1", "<function=get_weather>{'city': 'Paris'}</function>"),
    ("glm4", "<tool_call>get_weather\nsome prose <arg_key>city</arg_key><arg_value>Paris</arg_value></tool_call>"),
    ("gemma4", '<|tool_call>call:get_weather{city:<|"|>Paris}<tool_call|>'),
    ("generic", '{"answer": 42}'),
    ("generic", "```python\nprint('hi')\n```"),
    ("granite", "<|tool_call|>not json at all"),
]


@pytest.mark.parametrize(("name", "text"), NEGATIVE)
def test_malformed_or_foreign_text_stays_content(name, text):
    result = parse_tool_calls(text, get_family(name), TOOLS)
    assert result.tool_calls == []
    assert result.content == text
    streamed, calls = stream_tools(get_family(name), random_chunks(text, random.Random(7)), TOOLS)
    assert calls == [] and streamed == text


def test_unknown_tool_names_are_ignored_only_for_bare_json_formats():
    text = '{"name": "delete_everything", "parameters": {}}'
    assert parse_tool_calls(text, get_family("llama3"), TOOLS).tool_calls == []
    assert len(parse_tool_calls(text, get_family("llama3")).tool_calls) == 1  # no tools given: accepted
    tagged = '<tool_call>{"name": "delete_everything", "arguments": {}}</tool_call>'
    assert len(parse_tool_calls(tagged, get_family("hermes"), TOOLS).tool_calls) == 1


def test_one_bad_call_does_not_drop_the_good_ones():
    text = (
        '<tool_call>{"name": "get_time", "arguments": {"tz": "UTC"}}</tool_call>\n'
        '<tool_call>{"name": "get_weather", "arguments": {oops}}</tool_call>'
    )
    result = parse_tool_calls(text, get_family("hermes"))
    assert calls_of(result.tool_calls) == [("get_time", {"tz": "UTC"})]
    assert result.content == '<tool_call>{"name": "get_weather", "arguments": {oops}}</tool_call>'


# --- streaming behaviour ------------------------------------------------------------


def test_stream_releases_content_until_a_marker_may_start():
    parser = ToolCallStreamParser(get_family("hermes"))
    assert parser.feed("Let me check").content == "Let me check"
    assert parser.feed(" <tool").content == " "  # "<tool" could open <tool_call>
    step = parser.feed('_call>\n{"name": "get_time", "arguments": {"tz": "UTC"}}\n</tool_call>')
    assert step.content == ""
    assert calls_of(step.tool_calls) == [("get_time", {"tz": "UTC"})]  # emitted before finish
    assert step.tool_calls[0]["index"] == 0
    assert parser.feed("\n<tool_call>\n").tool_calls == []
    step = parser.feed('{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>')
    assert [c["index"] for c in step.tool_calls] == [1]
    assert parser.finish() == ("", [])


def test_stream_partial_marker_that_never_completes_is_content():
    parser = ToolCallStreamParser(get_family("hermes"))
    assert parser.feed("a <tool").content == "a "
    assert parser.finish().content == "<tool"


def test_stream_llama3_holds_leading_json_only():
    parser = ToolCallStreamParser(get_family("llama3"))
    assert parser.feed("  ") == ("", [])
    assert parser.feed("Hello") == ("  Hello", [])
    parser = ToolCallStreamParser(get_family("llama3"))
    assert parser.feed('{"name": "Alice"') == ("", [])
    assert parser.finish() == ('{"name": "Alice"', [])


def test_stream_feed_after_finish_raises():
    parser = ToolCallStreamParser(get_family("mistral"))
    parser.finish()
    assert parser.finish() == ("", [])
    with pytest.raises(RuntimeError):
        parser.feed("x")
    assert "mistral" in repr(parser)


# --- round trip through the real templates -----------------------------------------


def _env():
    jinja2 = pytest.importorskip("jinja2")
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda v, indent=None, **kw: json.dumps(v, ensure_ascii=False, indent=indent)

    def raise_exception(message):
        raise jinja2.TemplateError(message)

    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: "2025-08-01"
    return env


def _assistant_output(stem, calls, string_args):
    """What the template renders for an assistant turn with tool calls: the
    text after the generation prompt, cut at the family's first stop string."""
    path = TEMPLATES / f"{stem}.jinja"
    if not path.is_file():
        pytest.skip("pinned llama.cpp templates not present")
    src = path.read_text(encoding="utf-8")
    family = detect_family({}, src)
    tool_calls = [
        {
            "id": f"abcdefgh{i}",
            "type": "function",
            "function": {"name": n, "arguments": json.dumps(a) if string_args else a},
        }
        for i, (n, a) in enumerate(calls)
    ]
    user = [{"role": "user", "content": "Weather and time in Paris?"}]
    assistant = {"role": "assistant", "content": "", "tool_calls": tool_calls}
    render = _env().from_string(src).render
    common = {"tools": TOOLS, "bos_token": "", "eos_token": "</s>", **family.template_kwargs()}
    prompt = render(messages=user, add_generation_prompt=True, **common)
    full = render(messages=[*user, assistant], add_generation_prompt=False, **common)
    cut = 0
    while cut < min(len(prompt), len(full)) and prompt[cut] == full[cut]:
        cut += 1
    if not full.startswith(prompt):  # diverged inside a marker: back up to its start
        while cut > 0 and full[cut - 1] not in ">]\n":
            cut -= 1
    output = full[cut:]
    for stop in (*family.stop_strings, "</s>"):
        output = output.split(stop)[0]
    opened = prompt_opens_reasoning(prompt, family)
    if opened and family.reasoning_end not in output:
        output = "The user wants weather and time." + family.reasoning_end + output
    return family, output, opened


ROUND_TRIP = [
    ("Qwen-Qwen3-0.6B", 2, False),
    ("Qwen-Qwen2.5-7B-Instruct", 2, False),
    ("Qwen-QwQ-32B", 2, False),
    ("Qwen3-Coder", 2, False),
    ("Qwen3.5-4B", 2, False),
    ("NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use", 2, False),
    ("NousResearch-Hermes-3-Llama-3.1-8B-tool_use", 2, False),
    ("meta-llama-Llama-3.1-8B-Instruct", 1, False),
    ("meta-llama-Llama-3.2-3B-Instruct", 1, False),
    ("meta-llama-Llama-3.3-70B-Instruct", 1, False),
    ("mistralai-Mistral-Nemo-Instruct-2407", 2, False),
    ("Mistral-Small-3.2-24B-Instruct-2506", 2, False),
    ("unsloth-mistral-Devstral-Small-2507", 2, False),
    ("mistralai-Ministral-3-14B-Reasoning-2512", 2, False),
    ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", 2, False),
    ("deepseek-ai-DeepSeek-V3.1", 2, False),
    ("GLM-4.6", 2, False),
    ("GLM-4.7-Flash", 2, False),
    ("google-gemma-4-31B-it", 2, False),
    ("ibm-granite-granite-4.0", 2, False),
    ("meetkai-functionary-medium-v3.1", 2, False),
    ("meetkai-functionary-medium-v3.2", 2, True),
    ("openai-gpt-oss-120b", 1, False),
]


@pytest.mark.parametrize(("stem", "n_calls", "string_args"), ROUND_TRIP, ids=[r[0] for r in ROUND_TRIP])
def test_round_trip_through_real_template(stem, n_calls, string_args):
    expected = [WEATHER, TIME][:n_calls]
    family, output, opened = _assistant_output(stem, expected, string_args)
    _, content = split_reasoning(output, family, start_in_reasoning=opened)
    result = parse_tool_calls(content, family, TOOLS)
    assert calls_of(result.tool_calls) == expected, output
    for marker in family.tool_format.start_markers:
        assert marker not in result.content, output
    # Streaming pipeline: reasoning splitter feeding the tool-call parser.
    for seed in range(10):
        splitter = ReasoningStreamSplitter(family, start_in_reasoning=opened)
        parser = ToolCallStreamParser(family, TOOLS)
        calls = []
        for chunk in [*random_chunks(output, random.Random(seed)), None]:
            _, piece = splitter.feed(chunk) if chunk is not None else splitter.finish()
            calls += parser.feed(piece).tool_calls
        calls += parser.finish().tool_calls
        assert calls_of(calls) == expected


@pytest.mark.parametrize(("stem", "n_calls", "string_args"), ROUND_TRIP, ids=[r[0] for r in ROUND_TRIP])
def test_native_grammar_accepts_real_template_output(stem, n_calls, string_args):
    """What each template renders for an assistant's calls is what its model writes, so
    the family's tool grammar must accept it: the forced grammar as the whole answer
    (reasoning included), the lazy one from where its trigger fires."""
    from llama_ffi.chat.tool_grammar import tool_call_grammar

    family, output, opened = _assistant_output(stem, [WEATHER, TIME][:n_calls], string_args)
    tools = validate_tools(TOOLS)
    forced = tool_call_grammar(family, tools, mode="required", reasoning_open=opened, parallel=n_calls > 1)
    if forced is None:
        assert stem in NO_GRAMMAR
        return
    assert forced.grammar.matches(output), output
    assert not forced.grammar.matches(output.replace("Paris", "Paris\""))  # it does check
    lazy = tool_call_grammar(family, tools, parallel=n_calls > 1)
    if lazy is None:
        assert family.has_reasoning  # lazy grammars skip families that may reason first
        return
    starts = [m.start(1) for end in range(1, len(output) + 1) for p in lazy.trigger_patterns
              if (m := re.search(p[:-1] + r"\Z", output[:end]))]
    assert starts, output
    assert lazy.grammar.matches(output[starts[0]:]), output


# XML-like, Harmony and Functionary formats: forced calls keep the JSON fallback grammar.
NO_GRAMMAR = {"Qwen3-Coder", "Qwen3.5-4B", "GLM-4.6", "GLM-4.7-Flash", "google-gemma-4-31B-it",
              "meetkai-functionary-medium-v3.1", "meetkai-functionary-medium-v3.2", "openai-gpt-oss-120b"}


# --- request validation --------------------------------------------------------------


def test_validate_tools_normalises():
    tools = validate_tools([{"type": "function", "function": {"name": "ping"}}, {"function": {"name": "a.b-c_d"}}])
    assert tools[0] == {
        "type": "function",
        "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}},
    }
    assert tools[1]["function"]["name"] == "a.b-c_d"
    assert validate_tools(None) == []
    assert tool_schemas(TOOLS)["get_time"]["properties"] == {"tz": {"type": "string"}}


@pytest.mark.parametrize(
    ("tools", "param"),
    [
        ("get_weather", "tools"),
        ([1], "tools[0]"),
        ([{"type": "retrieval", "function": {"name": "x"}}], "tools[0].type"),
        ([{"type": "function"}], "tools[0].function"),
        ([{"type": "function", "function": {"name": "has space"}}], "tools[0].function.name"),
        ([{"type": "function", "function": {"name": "x" * 65}}], "tools[0].function.name"),
        ([{"type": "function", "function": {"name": "x", "description": 3}}], "tools[0].function.description"),
        ([{"type": "function", "function": {"name": "x", "parameters": []}}], "tools[0].function.parameters"),
        (
            [{"type": "function", "function": {"name": "x", "parameters": {"type": "string"}}}],
            "tools[0].function.parameters.type",
        ),
        (
            [{"type": "function", "function": {"name": "x", "parameters": {"properties": []}}}],
            "tools[0].function.parameters.properties",
        ),
        (
            [{"type": "function", "function": {"name": "x", "parameters": {"required": "a"}}}],
            "tools[0].function.parameters.required",
        ),
        ([{"type": "function", "function": {"name": "x", "strict": "yes"}}], "tools[0].function.strict"),
        ([{"function": {"name": "x"}}, {"function": {"name": "x"}}], "tools[1].function.name"),
    ],
)
def test_validate_tools_names_the_bad_parameter(tools, param):
    with pytest.raises(ValidationError) as info:
        validate_tools(tools)
    assert info.value.param == param
    assert isinstance(info.value, ValueError)


def test_normalize_tool_choice():
    assert normalize_tool_choice(None, TOOLS) == ToolChoice("auto")
    assert normalize_tool_choice(None, None) == ToolChoice("none")
    assert normalize_tool_choice("auto", []) == ToolChoice("none")
    assert normalize_tool_choice("none", TOOLS) == ToolChoice("none")
    assert normalize_tool_choice("required", TOOLS) == ToolChoice("required")
    named = {"type": "function", "function": {"name": "get_time"}}
    assert normalize_tool_choice(named, TOOLS) == ToolChoice("required", "get_time")


@pytest.mark.parametrize(
    ("choice", "tools", "param"),
    [
        ("always", TOOLS, "tool_choice"),
        ("required", [], "tool_choice"),
        ({"type": "function", "function": {"name": "nope"}}, TOOLS, "tool_choice.function.name"),
        ({"type": "function", "function": {}}, TOOLS, "tool_choice.function.name"),
        ({"type": "function"}, TOOLS, "tool_choice.function.name"),
        ({"type": "allowed_tools"}, TOOLS, "tool_choice.type"),
        (["auto"], TOOLS, "tool_choice.type"),
        ("auto", [{"function": {"name": ""}}], "tools[0].function.name"),
    ],
)
def test_normalize_tool_choice_errors(choice, tools, param):
    with pytest.raises(ValidationError) as info:
        normalize_tool_choice(choice, tools)
    assert info.value.param == param
