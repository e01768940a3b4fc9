"""Named chat formats: llama.cpp parity, model-card layouts, registry, guessing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from llama_ffi.chat import (
    ChatFormat,
    ChatPrompt,
    chat_format_names,
    get_chat_format,
    guess_chat_format,
    register_chat_format,
    render_chat,
)
from llama_ffi.errors import ValidationError

LLAMA_CPP = Path(__file__).resolve().parents[1] / "vendor" / "llama.cpp"
CPP_TESTS = LLAMA_CPP / "tests" / "test-chat-template.cpp"
TEMPLATE_DIR = LLAMA_CPP / "models" / "templates"
needs_llama_cpp = pytest.mark.skipif(not CPP_TESTS.is_file(), reason="vendor/llama.cpp not present")

# The conversation llama.cpp's own test uses (tests/test-chat-template.cpp).
CPP_CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant"},
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi there"},
    {"role": "user", "content": "Who are you"},
    {"role": "assistant", "content": "   I am an assistant   "},
    {"role": "user", "content": "Another question"},
]
SYS_USER = [{"role": "system", "content": "SYS"}, {"role": "user", "content": "Hi"}]
TWO_TURNS = [*SYS_USER, {"role": "assistant", "content": "Yo"}, {"role": "user", "content": "Q2"}]


# ----------------------------------------------- llama.cpp's expectations


_FIELD = re.compile(r"/\*\s*\.(\w+)\s*=?\s*\*/")
_LITERAL = re.compile(r'"((?:[^"\\]|\\.)*)"')
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "'": "'", "\\": "\\"}


def _cpp_string(segment: str) -> str:
    """Concatenate the C++ string literals in a segment (u8/U8C wrappers ignored)."""
    return "".join(re.sub(r"\\(.)", lambda m: _ESCAPES[m.group(1)], s) for s in _LITERAL.findall(segment))


def _cpp_cases() -> list[dict]:
    """The TestCase entries of test-chat-template.cpp, as dicts of their fields."""
    if not CPP_TESTS.is_file():
        return []
    source = CPP_TESTS.read_text(encoding="utf-8")
    body = source[source.index("std::vector<TestCase> test_cases {") : source.index("std::vector<char> formatted_chat")]
    marks = list(_FIELD.finditer(body))
    cases: list[dict] = []
    for mark, following in zip(marks, [*marks[1:], None], strict=True):
        segment = body[mark.end() : following.start() if following else len(body)].split("\n        }")[0]
        field = mark.group(1)
        if field == "name":
            cases.append({})
        cases[-1][field] = True if field == "extra_conversation" else _cpp_string(segment)
    return cases


CPP_CASES = [c for c in _cpp_cases() if "extra_conversation" not in c]


@needs_llama_cpp
def test_cpp_cases_were_parsed() -> None:
    assert len(CPP_CASES) >= 30
    assert all(c["template_str"] and c["expected_output"] for c in CPP_CASES)


@needs_llama_cpp
@pytest.mark.parametrize("case", CPP_CASES, ids=lambda c: c["name"][:60])
def test_guess_and_render_match_llama_cpp(case: dict) -> None:
    # llama_chat_apply_template(template_str) detects a built-in format from
    # the template text and renders it; guess + apply must give the same text.
    name = guess_chat_format(case["template_str"])
    assert name is not None
    assert get_chat_format(name).apply(CPP_CONVERSATION).prompt == case["expected_output"]


# ------------------------------------------------ model-card layouts


# Hand-checked against the cited model cards / official templates. Leading
# BOS is never written (the tokenizer adds it); interior BOS/EOS are.
MODEL_CARD = {
    # https://huggingface.co/teknium/OpenHermes-2.5-Mistral-7B ("Prompt Format")
    "chatml": "<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    # https://huggingface.co/blog/llama2#how-to-prompt-llama-2
    "llama-2": "[INST] <<SYS>>\nSYS\n<</SYS>>\n\nHi [/INST]",
    # https://www.llama.com/docs/model-cards-and-prompt-formats/meta-llama-3/
    "llama-3": "<|start_header_id|>system<|end_header_id|>\n\nSYS<|eot_id|><|start_header_id|>user<|end_header_id|>"
    "\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    # https://huggingface.co/mistralai/Mistral-7B-Instruct-v0.2 (no system role; folded into [INST])
    "mistral-instruct": "[INST] SYS\nHi [/INST]",
    # https://ai.google.dev/gemma/docs/core/prompt-structure (system text goes into the first user turn)
    "gemma": "<start_of_turn>user\nSYS\n\nHi<end_of_turn>\n<start_of_turn>model\n",
    # https://huggingface.co/microsoft/Phi-3-mini-4k-instruct ("Chat Format")
    "phi-3": "<|system|>\nSYS<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n",
    # https://huggingface.co/HuggingFaceH4/zephyr-7b-beta (template output with eos_token </s>)
    "zephyr": "<|system|>\nSYS</s>\n<|user|>\nHi</s>\n<|assistant|>\n",
    # https://github.com/tatsu-lab/stanford_alpaca (### Instruction / ### Response blocks)
    "alpaca": "SYS\n\n### Instruction:\nHi\n\n### Response:\n",
    # https://github.com/lm-sys/FastChat conversation template "vicuna_v1.1"
    "vicuna": "SYS USER: Hi ASSISTANT:",
    # https://huggingface.co/Qwen/Qwen1.5-7B-Chat (ChatML)
    "qwen": "<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    # https://huggingface.co/openchat/openchat-3.5-0106 ("GPT4 Correct User: ...<|end_of_turn|>GPT4 Correct Assistant:")
    "openchat": "SYS<|end_of_turn|>GPT4 Correct User: Hi<|end_of_turn|>GPT4 Correct Assistant:",
    # https://huggingface.co/IlyaGusev/saiga_mistral_7b_lora (<s>{role}\n{content}</s>, answer after "<s>bot\n")
    "saiga": "system\nSYS</s><s>user\nHi</s><s>bot\n",
    # https://huggingface.co/THUDM/chatglm3-6b (PROMPT.md: <|system|>\n {content} ...)
    "chatglm3": "[gMASK]sop<|system|>\n SYS<|user|>\n Hi<|assistant|>",
    # https://huggingface.co/Phind/Phind-CodeLlama-34B-v2 ("How to Prompt the Model")
    "phind": "### System Prompt\nSYS\n\n### User Message\nHi\n\n### Assistant\n",
    # https://huggingface.co/Intel/neural-chat-7b-v3-1 ("### System:\n...\n### User:\n...\n### Assistant:\n")
    "intel": "### System:\nSYS\n### User:\nHi\n### Assistant:\n",
    # https://huggingface.co/PygmalionAI/pygmalion-2-7b (<|system|>, <|user|>, <|model|> prefixes)
    "pygmalion": "<|system|>SYS<|user|>Hi<|model|>",
    # https://huggingface.co/amazon/MistralLite ("<|prompter|>{prompt}</s><|assistant|>")
    "mistrallite": "<|system|>SYS</s><|prompter|>Hi</s><|assistant|>",
    # https://huggingface.co/baichuan-inc/Baichuan2-7B-Chat (user <reserved_106>, assistant <reserved_107>)
    "baichuan-2": "SYS<reserved_106>Hi<reserved_107>",
    "baichuan": "SYS<reserved_102>Hi<reserved_103>",
}


@pytest.mark.parametrize("name", list(MODEL_CARD))
def test_model_card_layouts(name: str) -> None:
    assert get_chat_format(name).apply(SYS_USER).prompt == MODEL_CARD[name]


def test_llama2_multi_turn_has_interior_bos_and_eos() -> None:
    # Meta's layout: each exchange is <s>[INST] ... [/INST] answer </s>
    prompt = get_chat_format("llama-2").apply(TWO_TURNS).prompt
    assert prompt == "[INST] <<SYS>>\nSYS\n<</SYS>>\n\nHi [/INST] Yo </s><s>[INST] Q2 [/INST]"


def test_default_system_prompts() -> None:
    user = [{"role": "user", "content": "Hi"}]
    assert (
        get_chat_format("qwen")
        .apply(user)
        .prompt.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    )
    assert get_chat_format("vicuna").apply(user).prompt.startswith("A chat between a curious user")
    assert get_chat_format("chatml").apply(user).prompt == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_stop_strings() -> None:
    assert get_chat_format("chatml").apply(SYS_USER).stop == ("<|im_end|>",)
    assert "<|eot_id|>" in get_chat_format("llama-3").stop
    assert "<end_of_turn>" in get_chat_format("gemma").stop
    assert all(fmt_stop for fmt_stop in (get_chat_format(n).stop for n in chat_format_names()))


def test_add_generation_prompt_false() -> None:
    prompt = get_chat_format("chatml").apply(SYS_USER, add_generation_prompt=False).prompt
    assert prompt == "<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"


def test_content_parts_and_none() -> None:
    messages = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "a"}, {"type": "image_url"}, {"type": "text", "text": "b"}],
        },
        {"role": "assistant", "content": None},
    ]
    assert get_chat_format("chatml").apply(messages, add_generation_prompt=False).prompt == (
        "<|im_start|>user\nab<|im_end|>\n<|im_start|>assistant\n<|im_end|>\n"
    )


@pytest.mark.parametrize("name", chat_format_names())
def test_every_format_renders(name: str) -> None:
    fmt = get_chat_format(name)
    prompt = fmt.apply(TWO_TURNS + [{"role": "tool", "content": "T"}, {"role": "user", "content": "Q3"}])
    assert isinstance(prompt, ChatPrompt) and "Q3" in prompt.prompt and isinstance(prompt.stop, tuple)
    assert fmt.source and name in repr(fmt)


@pytest.mark.skipif(not TEMPLATE_DIR.is_dir(), reason="vendor/llama.cpp not present")
@pytest.mark.parametrize(
    "name, template, messages",
    [
        ("gemma", "google-gemma-2-2b-it", TWO_TURNS[1:]),  # gemma 2 refuses a system role
        ("phi-3", "microsoft-Phi-3.5-mini-instruct", TWO_TURNS),
        ("chatml", "Qwen-Qwen2.5-7B-Instruct", TWO_TURNS),  # Qwen2.5 with a system message is plain ChatML
    ],
)
def test_formats_agree_with_the_models_own_template(name: str, template: str, messages: list) -> None:
    source = (TEMPLATE_DIR / f"{template}.jinja").read_text(encoding="utf-8")
    rendered = render_chat(source, messages, bos_token="<bos>")
    assert rendered.removeprefix("<bos>") == get_chat_format(name).apply(messages).prompt


# ----------------------------------------------------------- registry


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ValidationError) as info:
        get_chat_format("no-such-format")
    assert "chatml" in str(info.value) and "llama-3" in str(info.value)
    assert info.value.param == "chat_format"


def test_aliases_resolve() -> None:
    assert get_chat_format("llama3") is get_chat_format("llama-3")
    assert get_chat_format("phi3").name == "phi-3"
    assert "llama3" in chat_format_names(aliases=True) and "llama3" not in chat_format_names()


def test_llama_cpp_python_names_are_present() -> None:
    expected = {
        "chatml",
        "llama-2",
        "llama-3",
        "mistral-instruct",
        "gemma",
        "phi-3",
        "zephyr",
        "alpaca",
        "vicuna",
        "qwen",
        "openchat",
        "saiga",
        "baichuan",
        "baichuan-2",
        "chatglm3",
        "oasst_llama",
        "openbuddy",
        "redpajama-incite",
        "snoozy",
        "phind",
        "intel",
        "open-orca",
        "mistrallite",
        "pygmalion",
    }
    assert expected <= set(chat_format_names())


def test_register_custom_format_and_refuse_duplicates() -> None:
    custom = ChatFormat(name="test-echo", renderer=lambda turns, gen: "|".join(c for _, c in turns), stop=("|",))
    register_chat_format(custom, replace=True)
    assert get_chat_format("test-echo").apply(SYS_USER).prompt == "SYS|Hi"
    with pytest.raises(ValidationError):
        register_chat_format(ChatFormat(name="chatml", renderer=custom.renderer))


def test_bad_messages() -> None:
    with pytest.raises(ValidationError):
        get_chat_format("chatml").apply([{"content": "no role"}])


# ----------------------------------------------------------- guessing


def test_guess_known_names_and_unknown_text() -> None:
    assert guess_chat_format("chatml") == "chatml"
    assert guess_chat_format("llama3") == "llama-3"
    assert guess_chat_format("{{ messages }}") is None
    assert guess_chat_format(None) is None  # type: ignore[arg-type]


@pytest.mark.skipif(not TEMPLATE_DIR.is_dir(), reason="vendor/llama.cpp not present")
@pytest.mark.parametrize(
    "template, name",
    [
        ("Qwen-Qwen2.5-7B-Instruct", "chatml"),
        ("google-gemma-2-2b-it", "gemma"),
        ("meta-llama-Llama-3.1-8B-Instruct", "llama-3"),
        ("microsoft-Phi-3.5-mini-instruct", "phi-3"),
        ("mistralai-Mistral-Nemo-Instruct-2407", "mistral-v3-tekken"),
        ("CohereForAI-c4ai-command-r-plus-tool_use", "command-r"),
        ("deepseek-ai-DeepSeek-V3.1", "deepseek3"),
        ("ibm-granite-granite-3.3-2B-Instruct", "granite"),
    ],
)
def test_guess_real_templates(template: str, name: str) -> None:
    assert guess_chat_format((TEMPLATE_DIR / f"{template}.jinja").read_text(encoding="utf-8")) == name
