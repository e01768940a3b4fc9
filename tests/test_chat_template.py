"""Chat template rendering: fidelity to transformers, sandboxing, limits, BOS."""

from __future__ import annotations

import copy
import json
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from llama_ffi.chat import ChatTemplate, RenderLimits, reconcile_bos, render_chat
from llama_ffi.errors import TemplateError, ValidationError

LLAMA_CPP = Path(__file__).resolve().parents[1] / "vendor" / "llama.cpp"
TEMPLATE_DIR = LLAMA_CPP / "models" / "templates"
TEMPLATES = sorted(TEMPLATE_DIR.glob("*.jinja")) if TEMPLATE_DIR.is_dir() else []

USER = [{"role": "user", "content": "Hello"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the weather for a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "City name"}},
                "required": ["city"],
            },
        },
    }
]
CONVERSATIONS = {
    "plain": (USER, None),
    "multi-turn": (
        [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Who are you?"},
        ],
        None,
    ),
    "system-less": (
        [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "  Hello, with spaces.  "},
            {"role": "user", "content": "Again, ünïcödé ✓"},
        ],
        None,
    ),
    "tool-call": (
        [
            {"role": "system", "content": "Use tools."},
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": '{"temp": 21}'},
        ],
        TOOLS,
    ),
    # String arguments and a 9-character id: what Mistral and functionary v3.2 templates require.
    "tool-call, string arguments": (
        [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "abc123XYZ",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "abc123XYZ", "name": "get_weather", "content": "21 C"},
            {"role": "assistant", "content": "It is 21 C."},
        ],
        TOOLS,
    ),
    "reasoning": (
        [
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4", "reasoning_content": "a simple sum"},
            {"role": "user", "content": "3+3?"},
        ],
        None,
    ),
}
SPECIAL = {"bos_token": "<s>", "eos_token": "</s>"}
# Variables a template requires beyond the standard ones (it raises without them).
EXTRA_VARIABLES = {
    "fireworks-ai-llama-3-firefunction-v2": {"functions": "[]", "datetime": "2024-07-26"},
}


# ----------------------------------------------------- fidelity to transformers


def _reference(
    template: str, messages: list, tools: list | None, add_generation_prompt: bool, variables: dict
) -> str | Exception:
    utils = pytest.importorskip("transformers.utils.chat_template_utils")
    if not hasattr(utils, "render_jinja_template"):
        pytest.skip("transformers too old to have render_jinja_template")
    try:
        rendered, _ = utils.render_jinja_template(
            [messages],
            tools=tools,
            chat_template=template,
            add_generation_prompt=add_generation_prompt,
            **SPECIAL,
            **variables,
        )
        return rendered[0]
    except Exception as exc:  # the reference raising is a legitimate outcome
        return exc


def _ours(
    template: str, messages: list, tools: list | None, add_generation_prompt: bool, variables: dict
) -> str | TemplateError:
    try:
        return render_chat(
            template, messages, tools=tools, add_generation_prompt=add_generation_prompt, **SPECIAL, **variables
        )
    except TemplateError as exc:
        return exc


@pytest.mark.skipif(not TEMPLATES, reason="vendor/llama.cpp not present")
@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_matches_transformers(path: Path) -> None:
    template = path.read_text(encoding="utf-8")
    variables = EXTRA_VARIABLES.get(path.stem, {})
    rendered_any = False
    for name, (messages, tools) in CONVERSATIONS.items():
        for add_generation_prompt in (True, False):
            expected = _reference(template, messages, tools, add_generation_prompt, variables)
            actual = _ours(template, messages, tools, add_generation_prompt, variables)
            where = f"{name}, add_generation_prompt={add_generation_prompt}"
            if isinstance(expected, Exception):
                # transformers raised: so must we, and only TemplateError
                assert isinstance(actual, TemplateError), f"{where}: transformers raised {expected!r}"
            else:
                assert actual == expected, where
                rendered_any = True
    assert rendered_any, "every conversation raised: the test exercises nothing"


def test_template_count() -> None:
    if not TEMPLATES:
        pytest.skip("vendor/llama.cpp not present")
    assert len(TEMPLATES) >= 70


# ------------------------------------------------------- transformers' globals


def test_raise_exception_keeps_the_templates_message() -> None:
    with pytest.raises(TemplateError) as info:
        render_chat("{{ raise_exception('Roles must alternate') }}", USER)
    assert str(info.value) == "Roles must alternate"
    assert isinstance(info.value, ValidationError) and isinstance(info.value, ValueError)


def test_tojson_formats_like_transformers() -> None:
    data = {"b": "é<>&'", "a": [1, 2]}
    assert render_chat("{{ x|tojson }}", [], x=data) == json.dumps(data, ensure_ascii=False)
    assert render_chat("{{ x|tojson(indent=2) }}", [], x=data) == json.dumps(data, ensure_ascii=False, indent=2)
    assert render_chat("{{ x|tojson(ensure_ascii=True, sort_keys=True) }}", [], x=data) == json.dumps(
        data, ensure_ascii=True, sort_keys=True
    )
    assert render_chat("{{ x|tojson(separators=(',', ':')) }}", [], x=data) == json.dumps(
        data, ensure_ascii=False, separators=(",", ":")
    )


def test_strftime_now() -> None:
    assert render_chat("{{ strftime_now('%Y') }}", []) == str(datetime.now().year)


def test_generation_block_renders_its_body() -> None:
    source = "{% for m in messages %}{% generation %}[{{ m.content }}]{% endgeneration %}{% endfor %}"
    assert render_chat(source, USER) == "[Hello]"


def test_loop_controls_namespace_and_dict() -> None:
    source = (
        "{% set ns = namespace(n=0) %}{% for i in range(10) %}{% if i == 3 %}{% break %}{% endif %}"
        "{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }} {{ dict(a=1)|tojson }} {{ dict.fromkeys(['k'])|tojson }}"
    )
    assert render_chat(source, []) == '3 {"a": 1} {"k": null}'


def test_trim_and_lstrip_blocks() -> None:
    source = "{% for m in messages %}\n    {% if true %}\n{{ m.content }}\n    {% endif %}\n{% endfor %}"
    assert render_chat(source, USER) == "Hello\n"


def test_inputs_become_plain_data_and_reasoning_is_aliased() -> None:
    messages = [{"role": "assistant", "content": "4", "reasoning": "sum"}]
    before = copy.deepcopy(messages)
    source = "{{ messages[0].thinking }}|{{ messages[0].reasoning_content }}|{{ messages[0]|tojson }}"
    out = render_chat(source, messages)
    assert out.startswith("sum|sum|")
    assert list(json.loads(out.split("|", 2)[2])) == ["thinking", "role", "content", "reasoning", "reasoning_content"]
    assert messages == before  # the caller's messages are not touched


def test_defaults_and_variables() -> None:
    source = "{{ bos_token }}{{ add_generation_prompt }}{{ tools }}{{ documents }}{{ enable_thinking }}{{ eos_token }}"
    assert render_chat(source, [], enable_thinking=False) == "TrueNoneNoneFalse"
    template = ChatTemplate(source, bos_token="<s>", eos_token="</s>")
    assert template.render([], add_generation_prompt=False) == "<s>FalseNoneNone</s>"
    assert template.render([], bos_token="", eos_token="") == "TrueNoneNone"
    assert {"bos_token", "enable_thinking", "tools"} <= template.variables


def test_chat_template_repr_and_reuse() -> None:
    template = ChatTemplate("{% for m in messages %}{{ m.role }}:{{ m.content }}\n{% endfor %}")
    assert "ChatTemplate" in repr(template)
    assert [template.render([{"role": "user", "content": str(i)}]) for i in range(3)] == [
        "user:0\n",
        "user:1\n",
        "user:2\n",
    ]


def test_render_chat_accepts_a_compiled_template() -> None:
    template = ChatTemplate("{{ messages|length }}")
    assert render_chat(template, USER) == "1"


def test_threads_render_independently() -> None:
    template = ChatTemplate("{% for i in range(2000) %}{{ messages[0].content }}{% endfor %}")
    results: list[str] = []

    def work(text: str) -> None:
        results.append(template.render([{"role": "user", "content": text}]))

    threads = [threading.Thread(target=work, args=(c,)) for c in "abcd"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [c * 2000 for c in "abcd"]


# ------------------------------------------------------------- bad input


@pytest.mark.parametrize("messages", ["hello", [1], [["role", "user"]], None, {"role": "user"}])
def test_bad_messages_raise_template_error(messages: object) -> None:
    with pytest.raises(TemplateError):
        render_chat("{{ messages }}", messages)  # type: ignore[arg-type]


@pytest.mark.parametrize("tools", ["tool", [1], {"type": "function"}])
def test_bad_tools_raise_template_error(tools: object) -> None:
    with pytest.raises(TemplateError):
        render_chat("{{ tools }}", USER, tools=tools)  # type: ignore[arg-type]


@pytest.mark.parametrize("source", ["{% for %}", "{{ x", "{% endfor %}", "{% generation %}"])
def test_syntax_errors_raise_template_error(source: str) -> None:
    with pytest.raises(TemplateError, match="syntax error"):
        ChatTemplate(source)


def test_non_string_template() -> None:
    with pytest.raises(TemplateError):
        render_chat(b"{{ 1 }}", USER)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "source",
    [
        "{{ 1 / 0 }}",
        "{{ foo() }}",
        "{{ messages[5].content }}",
        "{% for x in none %}{% endfor %}",
        "{{ 'a' + 1 }}",
        "{{ (10**5000)|string }}",
    ],
)
def test_runtime_failures_raise_template_error(source: str) -> None:
    with pytest.raises(TemplateError):
        render_chat(source, [])


def test_rich_objects_reach_the_template_as_placeholders() -> None:
    # As in transformers: only plain data gets in; anything else is named, not exposed.
    assert render_chat("{{ x|tojson }} {{ y }}", [], x=object(), y=(1, "a")) == "\"<object>\" (1, 'a')"


# ------------------------------------------------------------- the sandbox


@pytest.mark.parametrize(
    "source",
    [
        "{{ raise_exception.__globals__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{{ self.__init__.__globals__ }}",
        "{{ namespace.__init__.__globals__ }}",
        "{{ messages.__class__ }}",
        "{% if ''.__class__ is defined %}leak{% endif %}",
        "{{ ''.__class__|default('quiet') }}",
        "{{ '{0.__class__.__mro__}'.format('') }}",
        "{{ '{0.__init__.__globals__}'.format(cycler) }}",
        "{{ messages.append(1) }}",
        "{{ messages[0].update(role='system') }}",
        "{% set ns = namespace(__class__=1) %}",
        "{% set ns = namespace() %}{% set ns._x = 1 %}",
        "{{ (range(3)|list).pop() }}",
        "{{ lipsum.__globals__['os'].system('true') }}",
    ],
)
def test_escape_attempts_raise_template_error(source: str) -> None:
    with pytest.raises(TemplateError):
        render_chat(source, USER)


SMALL = RenderLimits(timeout=2.0, max_steps=200_000, max_chars=1_000_000)

RUNAWAY = {
    "huge range": "{% for i in range(10**9) %}x{% endfor %}",
    "nested loops": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "nested lists": "{% set a = range(100000)|list %}{% for i in a %}{% for j in a %}{% endfor %}{% endfor %}",
    "deep recursion": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "exponential macro": "{% macro f(n) %}{% if n < 60 %}{{ f(n+1) }}{{ f(n+1) }}{% endif %}{% endmacro %}{{ f(0) }}",
    "recursive loop": "{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}",
    "string repeat": "{{ 'x' * 10**10 }}",
    "list repeat": "{{ ([0] * 10**9)|length }}",
    "big power": "{{ 7 ** (10**9) }}",
    "squaring": "{% set ns = namespace(x=3) %}{% for i in range(64) %}{% set ns.x = ns.x * ns.x %}{% endfor %}",
    "doubling ~": "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "doubling +": "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "block set": "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set t %}{{ ns.s }}{{ ns.s }}{% endset %}"
    "{% set ns.s = t %}{% endfor %}",
    "join": "{% set s = 'x' * 900000 %}{{ ([s] * 100000)|join }}",
    "str.join": "{% set s = 'x' * 900000 %}{{ ''.join([s] * 100000) }}",
    "tojson": "{% set s = 'x' * 900000 %}{{ ([s] * 100000)|tojson }}",
    "tojson indent": "{{ (range(50000)|list)|tojson(indent=900000) }}",
    "print list": "{% set s = 'x' * 900000 %}{{ [s] * 100000 }}",
    "concat list": "{% set s = 'x' * 900000 %}{{ ([s] * 100000) ~ '' }}",
    "replace": "{% set s = 'x' * 900000 %}{{ s.replace('x', s) }}",
    "replace filter": "{% set s = 'x' * 900000 %}{{ s|replace('x', s) }}",
    "center": "{{ 'x'|center(10**9) }}",
    "ljust": "{{ 'x'.ljust(10**9) }}",
    "format filter": "{{ '%999999999s'|format('x') }}",
    "str.format": "{{ '{:>999999999}'.format('x') }}",
    "percent": "{{ '%999999999s' % 'x' }}",
    "format star": "{{ '%*s' % (10**9, 'x') }}",
    "indent": "{% set s = 'x\n' * 400000 %}{{ s|indent(s) }}",
    "expandtabs": "{% set s = '\t' * 900000 %}{{ s.expandtabs(1000) }}",
    "wordwrap": "{% set s = 'x' * 900000 %}{{ s|wordwrap(1, wrapstring=s) }}",
    "sum lists": "{% set l = [[1] * 10000] * 10000 %}{{ l|sum(start=[])|length }}",
    "slice": "{{ [1]|slice(10**9)|list|length }}",
    "lipsum": "{{ lipsum(10**6) }}",
    "output": "{% for i in range(100000) %}{{ 'x' * 900 }}{% endfor %}",
}


@pytest.mark.parametrize("source", list(RUNAWAY.values()), ids=list(RUNAWAY))
def test_runaway_templates_are_stopped(source: str) -> None:
    template = ChatTemplate(source, limits=SMALL)  # compiling must not run anything big either
    started = time.monotonic()
    with pytest.raises(TemplateError):
        template.render(USER)
    assert time.monotonic() - started < 10


def test_default_limits_stop_nested_loops_quickly() -> None:
    started = time.monotonic()
    with pytest.raises(TemplateError, match="steps|time"):
        render_chat(RUNAWAY["nested loops"], USER)
    assert time.monotonic() - started < 15


def test_timeout_is_enforced() -> None:
    limits = RenderLimits(timeout=0.3, max_steps=10**12)
    started = time.monotonic()
    with pytest.raises(TemplateError, match="time limit"):
        ChatTemplate(RUNAWAY["exponential macro"], limits=limits).render(USER)
    assert time.monotonic() - started < 3


def test_limits_leave_ordinary_templates_alone() -> None:
    source = "{% for m in messages %}{{ m.content * 3 }}{{ m|tojson(indent=2) }}{% endfor %}"
    assert render_chat(source, USER).startswith("HelloHelloHello{")


@pytest.mark.parametrize("field, value", [("timeout", 0), ("max_steps", -1), ("max_chars", 0)])
def test_render_limits_must_be_positive(field: str, value: int) -> None:
    with pytest.raises(ValueError):
        RenderLimits(**{field: value})


# ------------------------------------------------------------------ BOS


@pytest.mark.parametrize(
    "text, add_bos, expected",
    [
        ("<s>[INST] hi", True, ("[INST] hi", True)),
        ("<s>[INST] hi", False, ("<s>[INST] hi", False)),
        ("<s><s>[INST] hi", True, ("[INST] hi", True)),
        ("<s><s>[INST] hi", False, ("<s>[INST] hi", False)),
        ("[INST] hi", True, ("[INST] hi", True)),
        ("[INST] hi", False, ("[INST] hi", False)),
        (" <s>hi", True, (" <s>hi", True)),
    ],
)
def test_reconcile_bos(text: str, add_bos: bool, expected: tuple[str, bool]) -> None:
    assert reconcile_bos(text, bos_token="<s>", add_bos=add_bos) == expected


@pytest.mark.parametrize("bos", ["", None])
def test_reconcile_bos_without_bos_text(bos: str | None) -> None:
    assert reconcile_bos("<s>hi", bos_token=bos, add_bos=True) == ("<s>hi", True)


def test_reconcile_bos_with_a_real_template() -> None:
    if not TEMPLATES:
        pytest.skip("vendor/llama.cpp not present")
    source = (TEMPLATE_DIR / "meta-llama-Llama-3.1-8B-Instruct.jinja").read_text(encoding="utf-8")
    text = render_chat(source, USER, bos_token="<|begin_of_text|>")
    stripped, add_bos = reconcile_bos(text, bos_token="<|begin_of_text|>", add_bos=True)
    assert text.startswith("<|begin_of_text|>") and not stripped.startswith("<|begin_of_text|>") and add_bos


# ------------------------------------------- the chat pipeline's polyfill (chat.polyfill)
# The history an OpenAI client sends back in a tool loop: the call as the API returned it
# (content None, arguments as JSON text), then the tool's answer.
OPENAI_LOOP = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 18}'},
]
# SmolLM2-135M-Instruct's own template: ChatML that concatenates message['content'].
SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _vendor(stem: str) -> str:
    if not TEMPLATES:
        pytest.skip("vendor/llama.cpp not present")
    return (TEMPLATE_DIR / f"{stem}.jinja").read_text(encoding="utf-8")


def _polyfilled(source: str, messages: list = OPENAI_LOOP) -> list:
    """What the pipeline hands the template (pipeline._render does exactly this)."""
    from llama_ffi.chat.families import detect_family
    from llama_ffi.chat.polyfill import polyfill_messages, template_caps

    return polyfill_messages(messages, template_caps(source), detect_family({}, source).tool_format)


@pytest.mark.parametrize(
    "stem",
    ["NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use", "Qwen-Qwen2.5-7B-Instruct", "meta-llama-Llama-3.1-8B-Instruct"],
)
def test_polyfill_leaves_templates_that_render_tool_calls_alone(stem: str) -> None:
    from llama_ffi.chat.polyfill import template_caps

    source = _vendor(stem)
    caps = template_caps(source)
    assert caps.tool_calls and caps.null_content and not caps.object_arguments
    assert _polyfilled(source) == OPENAI_LOOP
    plain = render_chat(source, OPENAI_LOOP, tools=TOOLS)
    assert render_chat(source, _polyfilled(source), tools=TOOLS) == plain
    assert "Paris" in plain.split("Weather in Paris?")[1]  # the template itself wrote the call


def test_polyfill_writes_the_call_and_result_for_a_template_without_tools() -> None:
    from llama_ffi.chat.polyfill import template_caps

    with pytest.raises(TemplateError):  # what every OpenAI client hit on its second turn
        render_chat(SMOLLM2, OPENAI_LOOP)
    caps = template_caps(SMOLLM2)
    assert not caps.tool_calls and caps.tool_role and caps.system_role and not caps.typed_content
    text = render_chat(SMOLLM2, _polyfilled(SMOLLM2))
    assert '<|im_start|>assistant\n{"name": "get_weather", "arguments": {"city": "Paris"}}<|im_end|>' in text
    assert '<|im_start|>tool\n{"temp": 18}<|im_end|>' in text  # ChatML renders any role: kept
    assert OPENAI_LOOP[2]["content"] is None and "tool_calls" in OPENAI_LOOP[2]  # the caller's list untouched


def test_polyfilled_calls_read_back_as_the_same_calls() -> None:
    """Past calls are written in the syntax the family's parser reads: generic JSON for
    SmolLM2, ``<|tool_call|>[...]`` for Granite 3.3 (whose template ignores tool_calls)."""
    from llama_ffi.chat.families import detect_family
    from llama_ffi.chat.tools import parse_tool_calls

    calls = [
        {"id": f"call_{i}", "type": "function", "function": {"name": "get_weather", "arguments": json.dumps(args)}}
        for i, args in enumerate([{"city": "Paris"}, {"city": "Rome", "unit": "celsius"}])
    ]
    for source in (SMOLLM2, _vendor("ibm-granite-granite-3.3-2B-Instruct")):
        for sent in (calls[:1], calls):
            (written,) = _polyfilled(source, [{"role": "assistant", "content": None, "tool_calls": sent}])
            assert "tool_calls" not in written
            parsed = parse_tool_calls(written["content"], detect_family({}, source), TOOLS).tool_calls
            assert [c["function"] for c in parsed] == [c["function"] for c in sent]


def test_polyfill_makes_user_turns_where_the_template_has_no_tool_role() -> None:
    """Gemma 2 raises on a system message and on any role but user/assistant."""
    source = _vendor("google-gemma-2-2b-it")
    second = {"role": "tool", "tool_call_id": "call_2", "name": "get_sky", "content": "sunny"}  # name given
    messages = _polyfilled(source, [*OPENAI_LOOP, second])
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[0]["content"] == "Be brief.\n\nWeather in Paris?"
    responses = [json.loads(line)["tool_response"] for line in messages[2]["content"].splitlines()]
    assert responses == [
        {"name": "get_weather", "tool_call_id": "call_1", "content": {"temp": 18}},  # name from the call
        {"name": "get_sky", "tool_call_id": "call_2", "content": "sunny"},
    ]
    assert render_chat(source, messages).endswith("<end_of_turn>\n<start_of_turn>model\n")


@pytest.mark.parametrize(
    ("stem", "fix"),
    [("Qwen-Qwen3-0.6B", "null_content"), ("GLM-4.6", "object_arguments")],
)
def test_polyfill_gives_a_tool_template_only_the_shape_it_needs(stem: str, fix: str) -> None:
    """Qwen 3 tests ``'</think>' in content`` (None fails); GLM iterates the arguments
    object. Only that changes; the tool message stays a tool message."""
    from llama_ffi.chat.polyfill import template_caps

    source = _vendor(stem)
    with pytest.raises(TemplateError):
        render_chat(source, OPENAI_LOOP, tools=TOOLS)
    caps = template_caps(source)
    assert caps.tool_calls and (not caps.null_content if fix == "null_content" else caps.object_arguments)
    messages = _polyfilled(source)
    call = messages[2]
    assert call["content"] == ("" if fix == "null_content" else None)
    assert call["tool_calls"][0]["function"]["arguments"] == ('{"city":"Paris"}' if fix == "null_content" else
                                                              {"city": "Paris"})
    assert messages[3] == OPENAI_LOOP[3]
    assert "Paris" in render_chat(source, messages, tools=TOOLS).split("Weather in Paris?")[1]


def test_polyfill_joins_content_parts_for_string_only_templates() -> None:
    parts = [{"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]}]
    with pytest.raises(TemplateError):
        render_chat(SMOLLM2, parts)
    assert "<|im_start|>user\nHi\nthere<|im_end|>" in render_chat(SMOLLM2, _polyfilled(SMOLLM2, parts))
    gemma4 = _vendor("google-gemma-4-31B-it")  # renders parts itself: left as they are
    assert _polyfilled(gemma4, parts) == parts


@pytest.mark.skipif(not TEMPLATES, reason="vendor/llama.cpp not present")
@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_every_template_renders_the_openai_tool_loop(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    variables = EXTRA_VARIABLES.get(path.stem, {})
    # Mistral templates want 9-character ids, as the mistral family issues them.
    loop = json.loads(json.dumps(OPENAI_LOOP).replace("call_1", "abc123XYZ"))
    messages = _polyfilled(source, loop)
    try:
        text = render_chat(source, messages, tools=TOOLS, **SPECIAL, **variables)
    except TemplateError:  # llama-cpp-deepseek-r1 cannot dump its tools (a generator): turn 2 with tool_choice none
        text = render_chat(source, messages, **SPECIAL, **variables)
    after = text.split("Weather in Paris?", 1)[1]
    assert "Paris" in after and "18" in after  # the call's arguments and the tool's result
