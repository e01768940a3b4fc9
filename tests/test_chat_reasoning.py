"""Reasoning split: whole-answer and streaming must agree for every split."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from llama_ffi.chat.families import get_family
from llama_ffi.chat.reasoning import ReasoningStreamSplitter, prompt_opens_reasoning, split_reasoning

TEMPLATES = Path(__file__).resolve().parents[1] / "vendor" / "llama.cpp" / "models" / "templates"


def stream(family, text, chunks, *, start_in_reasoning=False):
    splitter = ReasoningStreamSplitter(family, start_in_reasoning=start_in_reasoning)
    reasoning = content = ""
    for chunk in chunks:
        r, c = splitter.feed(chunk)
        reasoning, content = reasoning + r, content + c
    r, c = splitter.finish()
    return (reasoning + r) or None, content + c


def random_chunks(text, rng):
    chunks, pos = [], 0
    while pos < len(text):
        size = rng.choice([0, 1, 1, 2, 3, 5, 8, 13])
        chunks.append(text[pos : pos + size])
        pos += size
    return chunks


# (family, model output, prompt opened reasoning, expected (reasoning, content))
CORPUS = [
    ("qwen3", "<think>\nThe user greets.\n</think>\n\nHello!", False, ("The user greets.", "Hello!")),
    ("qwen3", "<think>\n\n</think>\n\nHi there.", False, (None, "Hi there.")),
    ("qwen3", "Plain answer, no thinking.", False, (None, "Plain answer, no thinking.")),
    ("qwen3", "  \n<think>a < b and <th is not a tag</think>ok", False, ("a < b and <th is not a tag", "ok")),
    (
        "qwen3",
        "Answer mentions <think> later </think> too",
        False,
        (None, "Answer mentions <think> later </think> too"),
    ),
    ("qwen3", "<think>never closed because max_tokens hit", False, ("never closed because max_tokens hit", "")),
    ("qwen3", "<thin", False, (None, "<thin")),
    ("qwen3", "", False, (None, "")),
    ("qwen3", "   ", False, (None, "   ")),
    ("qwen3.5", "Let me compute 2+2.\n</think>\n\n4", True, ("Let me compute 2+2.", "4")),
    ("qwen3.5", "<think>\nre-opened by the model</think>x", True, ("re-opened by the model", "x")),
    ("qwen3.5", "   ", True, (None, "")),
    ("qwen3.5", "partial </thi", True, ("partial </thi", "")),
    (
        "deepseek-r1",
        "Okay, so 17 is prime.\n</think>\n\n**Yes**, 17 is prime.",
        True,
        ("Okay, so 17 is prime.", "**Yes**, 17 is prime."),
    ),
    ("deepseek-v3", "<think>short</think>Answer", False, ("short", "Answer")),
    ("glm4", "<think>GLM thinks</think>\nAnswer", False, ("GLM thinks", "Answer")),
    ("magistral", "[THINK]Check units.[/THINK]The answer is 3 m.", False, ("Check units.", "The answer is 3 m.")),
    ("gemma4", "<|channel>thought\nPlan it.<channel|>Done.", False, ("Plan it.", "Done.")),
    ("smollm3", "<think>\nsmol\n</think>\nok", False, ("smol", "ok")),
    ("granite", "<think>consider</think><response>Yes.</response>", False, ("consider", "<response>Yes.</response>")),
    ("llama3", "<think>not a llama marker</think>hi", False, (None, "<think>not a llama marker</think>hi")),
    ("mistral", "[THINK]not reasoning for plain mistral", False, (None, "[THINK]not reasoning for plain mistral")),
    (
        "gpt-oss",
        "<|channel|>analysis<|message|>User asks weather.<|end|><|start|>assistant<|channel|>final<|message|>It is sunny.<|return|>",
        False,
        ("User asks weather.", "It is sunny."),
    ),
    (
        "gpt-oss",
        "<|channel|>analysis<|message|>Step 1.<|end|><|start|>assistant<|channel|>analysis<|message|>Step 2.<|end|>"
        "<|start|>assistant<|channel|>commentary<|message|>Checking...<|end|>"
        "<|start|>assistant<|channel|>final<|message|>Done.",
        False,
        ("Step 1.\nStep 2.", "Checking...\nDone."),
    ),
    (
        "gpt-oss",
        "<|channel|>analysis<|message|>Need weather.<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather "
        '<|constrain|>json<|message|>{"city":"Paris"}<|call|>',
        False,
        (
            "Need weather.",
            '<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city":"Paris"}<|call|>',
        ),
    ),
    (
        "gpt-oss",
        ' to=functions.get_weather<|channel|>commentary json<|message|>{"city": "Paris"}',
        False,
        (None, ' to=functions.get_weather<|channel|>commentary json<|message|>{"city": "Paris"}<|call|>'),
    ),
    ("gpt-oss", "No special tokens were rendered here.", False, (None, "No special tokens were rendered here.")),
    ("gpt-oss", "<|channel|>analysis<|message|>cut off mid-thought", False, ("cut off mid-thought", "")),
    ("gpt-oss", "<|channel|>analysis<|message|>x<|end|><|start|>assistant<|chan", False, ("x", "")),
]


@pytest.mark.parametrize(("name", "text", "opened", "expected"), CORPUS)
def test_split_reasoning(name, text, opened, expected):
    assert split_reasoning(text, get_family(name), start_in_reasoning=opened) == expected


@pytest.mark.parametrize(("name", "text", "opened", "expected"), CORPUS)
def test_streaming_matches_whole_answer_for_random_splits(name, text, opened, expected):
    family = get_family(name)
    for seed in range(40):
        chunks = random_chunks(text, random.Random(seed))
        assert stream(family, text, chunks, start_in_reasoning=opened) == expected, chunks


@pytest.mark.parametrize(("name", "text", "opened", "expected"), CORPUS)
def test_streaming_char_by_char_and_whole(name, text, opened, expected):
    family = get_family(name)
    assert stream(family, text, list(text), start_in_reasoning=opened) == expected
    assert stream(family, text, [text], start_in_reasoning=opened) == expected


def test_markers_never_reach_either_side_while_streaming():
    family = get_family("qwen3")
    splitter = ReasoningStreamSplitter(family)
    pieces = []
    for ch in "<think>abc</think>def":
        pieces.append(splitter.feed(ch))
    pieces.append(splitter.finish())
    for reasoning, content in pieces:
        assert "<" not in reasoning and "<" not in content
    assert "".join(r for r, _ in pieces) == "abc"
    assert "".join(c for _, c in pieces) == "def"


def test_reasoning_is_streamed_before_the_end_marker():
    splitter = ReasoningStreamSplitter(get_family("qwen3"))
    assert splitter.feed("<think>") == ("", "")
    assert splitter.feed("Let me ") == ("Let me", "")  # trailing space held until more arrives
    assert splitter.feed("see") == (" see", "")
    assert splitter.feed("</th") == ("", "")
    assert splitter.feed("ink>\n\nHi") == ("", "Hi")


def test_random_fuzz_against_whole_answer():
    """Random texts built from marker fragments: streaming never disagrees."""
    fragments = ["<think>", "</think>", "<th", "</", "ink>", " ", "\n", "a", "b c", "<", ">", "</thi"]
    for name, opened in (("qwen3", False), ("qwen3.5", True), ("magistral", False)):
        family = get_family(name)
        for seed in range(300):
            rng = random.Random(seed)
            text = "".join(rng.choice(fragments) for _ in range(rng.randint(0, 12)))
            if name == "magistral":
                text = text.replace("<think>", "[THINK]").replace("</think>", "[/THINK]")
            expected = split_reasoning(text, family, start_in_reasoning=opened)
            assert stream(family, text, random_chunks(text, rng), start_in_reasoning=opened) == expected, text


def test_harmony_fuzz_against_whole_answer():
    family = get_family("gpt-oss")
    parts = [
        "<|channel|>analysis<|message|>",
        "<|channel|>final<|message|>",
        "<|channel|>commentary<|message|>",
        "<|start|>assistant",
        "<|end|>",
        "<|return|>",
        "<|call|>",
        " to=functions.f",
        "<|constrain|>json",
        "text",
        " ",
        "\n",
        "<|",
        '{"a":1}',
    ]
    for seed in range(400):
        rng = random.Random(seed)
        text = "".join(rng.choice(parts) for _ in range(rng.randint(0, 10)))
        expected = split_reasoning(text, family)
        assert stream(family, text, random_chunks(text, rng)) == expected, text


def test_feed_after_finish_raises_and_finish_is_idempotent():
    for name in ("qwen3", "gpt-oss"):
        splitter = ReasoningStreamSplitter(get_family(name))
        splitter.feed("hello")
        splitter.finish()
        assert splitter.finish() == ("", "")
        with pytest.raises(RuntimeError):
            splitter.feed("more")
    assert "qwen3" in repr(ReasoningStreamSplitter(get_family("qwen3")))


# --- prompts rendered from the real templates --------------------------------


def render_prompt(stem, **variables):
    jinja2 = pytest.importorskip("jinja2")
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    path = TEMPLATES / f"{stem}.jinja"
    if not path.is_file():
        pytest.skip("pinned llama.cpp templates not present")
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda v, **kw: json.dumps(v, ensure_ascii=False)

    def raise_exception(message):
        raise jinja2.TemplateError(message)

    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: "2025-08-01"
    messages = [{"role": "user", "content": "Is 17 prime?"}]
    return env.from_string(path.read_text(encoding="utf-8")).render(
        messages=messages, add_generation_prompt=True, bos_token="", eos_token="", **variables
    )


@pytest.mark.parametrize(
    ("stem", "family", "variables", "opened"),
    [
        ("Qwen-Qwen3-0.6B", "qwen3", {"enable_thinking": True}, False),  # the model writes <think> itself
        ("Qwen-Qwen3-0.6B", "qwen3", {"enable_thinking": False}, False),  # empty block already closed
        ("Qwen-QwQ-32B", "qwen3", {"enable_thinking": True}, True),
        ("Qwen3.5-4B", "qwen3.5", {"enable_thinking": True}, True),
        ("Qwen3.5-4B", "qwen3.5", {"enable_thinking": False}, False),
        ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", "deepseek-r1", {"enable_thinking": True}, True),
        ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", "deepseek-r1", {"enable_thinking": False}, False),
        ("deepseek-ai-DeepSeek-V3.1", "deepseek-v3", {"thinking": True}, True),
        ("deepseek-ai-DeepSeek-V3.1", "deepseek-v3", {"thinking": False}, False),
        ("GLM-4.7-Flash", "glm4", {"enable_thinking": True}, True),
        ("GLM-4.6", "glm4", {"enable_thinking": True}, False),
        ("google-gemma-4-31B-it", "gemma4", {"enable_thinking": False}, False),
        ("meta-llama-Llama-3.1-8B-Instruct", "llama3", {}, False),
        ("openai-gpt-oss-120b", "gpt-oss", {}, False),
    ],
)
def test_prompt_opens_reasoning_on_rendered_templates(stem, family, variables, opened):
    fam = get_family(family)
    prompt = render_prompt(stem, **{**fam.template_kwargs(), **variables})
    assert prompt_opens_reasoning(prompt, fam) is opened
    # End to end: what such a model writes next splits cleanly.
    output = "17 has no divisors but 1 and itself." + (fam.reasoning_end or "") + "\n\nYes." if opened else "Yes."
    assert split_reasoning(output, fam, start_in_reasoning=opened)[1] == "Yes."
