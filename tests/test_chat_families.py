"""Model-family detection from real chat templates and GGUF metadata."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from llama_ffi.chat.families import FAMILIES, ModelFamily, detect_family, get_family
from llama_ffi.chat.toolcall_formats import TaggedJsonFormat

TEMPLATES = Path(__file__).resolve().parents[1] / "vendor" / "llama.cpp" / "models" / "templates"


def template(stem: str) -> str:
    path = TEMPLATES / f"{stem}.jinja"
    if not path.is_file():
        pytest.skip(f"pinned llama.cpp templates not present ({path})")
    return path.read_text(encoding="utf-8")


# (template file, realistic GGUF metadata, expected family)
CASES = [
    (
        "Qwen-Qwen3-0.6B",
        {"general.architecture": "qwen3", "general.name": "Qwen3 0.6B", "tokenizer.ggml.pre": "qwen2"},
        "qwen3",
    ),
    ("Qwen-QwQ-32B", {"general.architecture": "qwen2", "general.name": "QwQ 32B"}, "qwen3"),
    ("Qwen-Qwen2.5-7B-Instruct", {"general.architecture": "qwen2", "general.name": "Qwen2.5 7B Instruct"}, "qwen2.5"),
    (
        "Qwen3-Coder",
        {"general.architecture": "qwen3moe", "general.name": "Qwen3 Coder 30B A3B Instruct"},
        "qwen3-coder",
    ),
    ("Qwen3.5-4B", {"general.architecture": "qwen35", "general.name": "Qwen3.5 4B"}, "qwen3.5"),
    (
        "meta-llama-Llama-3.1-8B-Instruct",
        {"general.architecture": "llama", "tokenizer.ggml.pre": "llama-bpe"},
        "llama3",
    ),
    (
        "meta-llama-Llama-3.2-3B-Instruct",
        {"general.architecture": "llama", "general.name": "Llama 3.2 3B Instruct"},
        "llama3",
    ),
    ("meta-llama-Llama-3.3-70B-Instruct", {"general.architecture": "llama"}, "llama3"),
    (
        "mistralai-Mistral-Nemo-Instruct-2407",
        {"general.architecture": "llama", "tokenizer.ggml.pre": "tekken"},
        "mistral",
    ),
    ("Mistral-Small-3.2-24B-Instruct-2506", {"general.architecture": "mistral3"}, "mistral"),
    (
        "unsloth-mistral-Devstral-Small-2507",
        {"general.architecture": "llama", "general.name": "Devstral Small 2507"},
        "devstral",
    ),
    ("mistralai-Ministral-3-14B-Reasoning-2512", {"general.architecture": "mistral3"}, "magistral"),
    ("google-gemma-2-2b-it", {"general.architecture": "gemma2", "general.name": "Gemma 2 2b It"}, "gemma"),
    ("google-gemma-4-31B-it", {"general.architecture": "gemma4"}, "gemma4"),
    ("google-gemma-4-31B-it-interleaved", {"general.architecture": "gemma4"}, "gemma4"),
    (
        "microsoft-Phi-3.5-mini-instruct",
        {"general.architecture": "phi3", "general.name": "Phi 3.5 Mini Instruct"},
        "phi3",
    ),
    ("openai-gpt-oss-120b", {"general.architecture": "gpt-oss", "tokenizer.ggml.pre": "gpt-4o"}, "gpt-oss"),
    (
        "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B",
        {"general.architecture": "qwen2", "tokenizer.ggml.pre": "deepseek-r1-qwen"},
        "deepseek-r1",
    ),
    (
        "deepseek-ai-DeepSeek-R1-Distill-Llama-8B",
        {"general.architecture": "llama", "tokenizer.ggml.pre": "llama-bpe"},
        "deepseek-r1",
    ),
    ("llama-cpp-deepseek-r1", {"general.architecture": "deepseek2"}, "deepseek-r1"),
    (
        "deepseek-ai-DeepSeek-V3.1",
        {"general.architecture": "deepseek2", "tokenizer.ggml.pre": "deepseek-v3"},
        "deepseek-v3",
    ),
    ("GLM-4.6", {"general.architecture": "glm4moe", "tokenizer.ggml.pre": "glm4"}, "glm4"),
    ("GLM-4.7-Flash", {"general.architecture": "glm4moe"}, "glm4"),
    ("ibm-granite-granite-3.3-2B-Instruct", {"general.architecture": "granite"}, "granite"),
    ("ibm-granite-granite-4.0", {"general.architecture": "granitehybrid"}, "granite4"),
    (
        "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use",
        {"general.architecture": "llama", "tokenizer.ggml.pre": "llama-bpe"},
        "hermes",
    ),
    ("NousResearch-Hermes-3-Llama-3.1-8B-tool_use", {"general.architecture": "llama"}, "hermes"),
    ("meetkai-functionary-medium-v3.1", {"general.architecture": "llama"}, "functionary-v3.1"),
    ("meetkai-functionary-medium-v3.2", {"general.architecture": "llama"}, "functionary-v3.2"),
    ("HuggingFaceTB-SmolLM3-3B", {"general.architecture": "smollm3", "tokenizer.ggml.pre": "smollm"}, "smollm3"),
]


@pytest.mark.parametrize(("stem", "metadata", "expected"), CASES, ids=[c[0] for c in CASES])
def test_detect_from_real_template(stem, metadata, expected):
    src = template(stem)
    assert detect_family(metadata, src).name == expected
    # The template alone decides too; metadata only breaks ties.
    assert detect_family({}, src).name == expected
    # ...and it may come from the GGUF key itself.
    assert detect_family({**metadata, "tokenizer.chat_template": src}).name == expected


@pytest.mark.parametrize(("stem", "metadata", "expected"), CASES, ids=[c[0] for c in CASES])
def test_tool_and_reasoning_markers_appear_in_template(stem, metadata, expected):
    """The markers a family parses are ones its real template actually writes."""
    src = template(stem)
    family = detect_family(metadata, src)
    markers = family.tool_format.start_markers
    if markers and expected not in ("gpt-oss", "phi3", "gemma", "granite", "smollm3", "llama3"):
        assert any(m in src for m in markers), (expected, markers)
    if (
        family.reasoning_style == "tags"
        and family.reasoning_start
        and expected
        in {
            "qwen3",
            "qwen3.5",
            "magistral",
            "deepseek-r1",
            "glm4",
            "gemma4",
        }
    ):
        assert family.reasoning_end in src


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"general.architecture": "qwen3", "general.name": "Qwen3 8B"}, "qwen3"),
        ({"general.architecture": "qwen3moe"}, "qwen3"),
        ({"general.architecture": "qwen2", "general.name": "Qwen2.5 1.5B Instruct"}, "qwen2.5"),
        ({"general.architecture": "qwen2", "general.name": "DeepSeek R1 Distill Qwen 7B"}, "deepseek-r1"),
        ({"general.architecture": "qwen2", "tokenizer.ggml.pre": "deepseek-r1-qwen"}, "deepseek-r1"),
        ({"general.architecture": "llama", "tokenizer.ggml.pre": "llama-bpe"}, "llama3"),
        ({"general.architecture": "llama", "general.name": "Hermes 3 Llama 3.1 8B"}, "hermes"),
        ({"general.architecture": "llama", "tokenizer.ggml.pre": "tekken"}, "mistral"),
        ({"general.architecture": "mistral3", "general.name": "Devstral Small 2505"}, "devstral"),
        ({"general.architecture": "mistral3", "general.name": "Magistral Small 2509"}, "magistral"),
        ({"general.architecture": "gemma3", "general.name": "Gemma 3 4b It"}, "gemma"),
        ({"general.architecture": "gemma4"}, "gemma4"),
        ({"general.architecture": "phi3", "general.name": "Phi 4 Mini Instruct"}, "phi4"),
        ({"general.architecture": "phi3"}, "phi3"),
        ({"general.architecture": "gpt-oss"}, "gpt-oss"),
        ({"general.architecture": "deepseek2", "general.name": "DeepSeek V3 0324"}, "deepseek-v3"),
        ({"general.architecture": "deepseek2", "general.name": "DeepSeek-R1-0528"}, "deepseek-r1"),
        ({"general.architecture": "glm4moe"}, "glm4"),
        ({"general.architecture": "granite"}, "granite"),
        ({"general.architecture": "granitehybrid"}, "granite4"),
        ({"general.architecture": "llama", "general.name": "SmolLM2 1.7B Instruct"}, "smollm"),
        ({"general.architecture": "smollm3"}, "smollm3"),
        ({"general.architecture": "rwkv7"}, "generic"),
        ({}, "generic"),
    ],
)
def test_detect_from_metadata_only(metadata, expected):
    assert detect_family(metadata, None).name == expected


def test_template_beats_architecture():
    """A Hermes fine-tune of Llama and an R1 distill of Qwen talk their own format."""
    hermes = template("NousResearch-Hermes-3-Llama-3.1-8B-tool_use")
    assert detect_family({"general.architecture": "llama", "tokenizer.ggml.pre": "llama-bpe"}, hermes).name == "hermes"
    r1 = template("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B")
    assert detect_family({"general.architecture": "qwen2"}, r1).name == "deepseek-r1"


def test_file_name_is_not_consulted():
    meta = {"general.architecture": "llama", "general.source.url": "qwen3-8b-q4_k_m.gguf"}
    assert detect_family(meta, None).name == "generic"


def test_unknown_template_keeps_visible_markers():
    chatml_thinking = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>{% endfor %}<think>"
    family = detect_family({}, chatml_thinking)
    assert family.name == "generic"
    assert "<|im_end|>" in family.stop_strings
    assert (family.reasoning_start, family.reasoning_end) == ("<think>", "</think>")
    assert detect_family({}, "{{ messages }}").stop_strings == ()


def test_metadata_values_may_be_bytes_or_numbers():
    meta = {"general.architecture": b"qwen3", "general.name": 7, "tokenizer.ggml.pre": None}
    assert detect_family(meta).name == "qwen3"


def test_family_is_frozen_and_defaults_read_only():
    family = get_family("qwen3")
    with pytest.raises(dataclasses.FrozenInstanceError):
        family.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        family.template_defaults["enable_thinking"] = False  # type: ignore[index]
    assert hash(family) == hash(get_family("qwen3"))
    assert "qwen3" in repr(family)


def test_template_kwargs_thinking_switch():
    qwen = get_family("qwen3")
    assert qwen.template_kwargs() == {"enable_thinking": True}
    assert qwen.template_kwargs(enable_thinking=False) == {"enable_thinking": False}
    oss = get_family("gpt-oss")
    assert oss.template_kwargs(enable_thinking=False) == {"reasoning_effort": "low"}
    assert get_family("llama3").template_kwargs(enable_thinking=True) == {}


def test_get_family_unknown_lists_names():
    with pytest.raises(KeyError, match="qwen3"):
        get_family("nope")


def test_invalid_family_definitions_refused():
    with pytest.raises(ValueError):
        ModelFamily("x", reasoning_start="<think>")
    with pytest.raises(ValueError):
        ModelFamily("x", reasoning_style="channels")


def test_every_family_has_consistent_triggers():
    for family in FAMILIES.values():
        for pattern in family.tool_trigger_patterns or ():
            assert re.compile(pattern).groups >= 1, (family.name, pattern)
        for pattern in family.grammar_triggers().patterns + family.grammar_triggers(reasoning_open=True).patterns:
            re.compile(pattern)


def _trigger_start(patterns, text):
    """Where llama.cpp's lazy grammar would start: first non-empty group of the first match."""
    for pattern in patterns:
        match = re.search(pattern, text)
        if match:
            groups = [i for i in range(1, len(match.groups()) + 1) if match.group(i)]
            return match.start(groups[0]) if groups else match.start()
    return None


def test_grammar_triggers_skip_markers_inside_reasoning():
    qwen = get_family("qwen3")
    closed = qwen.grammar_triggers()
    assert closed.tokens == ()  # a token would fire inside <think> too
    thought = "<think>\nMaybe <tool_call> now?\n</think>\n\n"
    assert _trigger_start(closed.patterns, thought) is None
    assert _trigger_start(closed.patterns, thought + "<tool_call>\n{") == len(thought)
    assert _trigger_start(closed.patterns, "<tool_call>\n{") == 0
    assert _trigger_start(closed.patterns, "<think>still thinking <tool_call>") is None
    opened = qwen.grammar_triggers(reasoning_open=True)
    assert _trigger_start(opened.patterns, "so <tool_call> maybe") is None
    assert _trigger_start(opened.patterns, "so.</think>\n<tool_call>{") == len("so.</think>\n")


def test_grammar_triggers_without_reasoning_keep_tokens():
    hermes = get_family("hermes").grammar_triggers()
    assert hermes.tokens == ("<tool_call>",)
    llama = get_family("llama3").grammar_triggers()
    assert "<|python_tag|>" in llama.tokens
    assert _trigger_start(llama.patterns, '  {"name": "f"') == 2
    assert _trigger_start(llama.patterns, 'Sure: {"name": "f"') is None
    mistral = get_family("mistral").grammar_triggers()
    assert mistral.tokens == ("[TOOL_CALLS]",)
    fv32 = get_family("functionary-v3.2").grammar_triggers()
    assert _trigger_start(fv32.patterns, "all\nHello") is None
    assert _trigger_start(fv32.patterns, "get_weather\n{") == 0
    assert _trigger_start(fv32.patterns, "all\nHi>>>get_weather\n{") == len("all\nHi>>>")


def test_harmony_triggers():
    oss = get_family("gpt-oss").grammar_triggers()
    text = "<|channel|>analysis<|message|>think<|end|><|start|>assistant<|channel|>commentary to=functions.f"
    assert _trigger_start(oss.patterns, text) == text.index("<|channel|>commentary")


def test_custom_family_inherits_format_triggers():
    fmt = TaggedJsonFormat("custom", "<call>", "</call>", token=False)
    family = ModelFamily("custom", tool_format=fmt)
    assert family.tool_trigger_patterns == (r"(<call>)",)
    assert family.tool_trigger_tokens == ()
    assert ModelFamily("x", tool_format=fmt, tool_trigger_patterns=()).tool_trigger_patterns == ()
    assert ModelFamily("y") == ModelFamily("y")  # formats compare by value
    assert hash(ModelFamily("y")) == hash(ModelFamily("y"))


def test_stop_strings_per_family():
    assert "<|im_end|>" in get_family("qwen3").stop_strings
    assert "<|eot_id|>" in get_family("llama3").stop_strings
    assert "<|eom_id|>" in get_family("llama3").stop_strings
    assert "<end_of_turn>" in get_family("gemma").stop_strings
    assert "<|return|>" in get_family("gpt-oss").stop_strings
    assert "<|call|>" in get_family("gpt-oss").stop_strings
    assert "<｜end▁of▁sentence｜>" in get_family("deepseek-r1").stop_strings
    assert "<|observation|>" in get_family("glm4").stop_strings
    assert get_family("mistral").call_id_length == 9
