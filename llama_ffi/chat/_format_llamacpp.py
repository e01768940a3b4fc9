"""llama.cpp's built-in chat formats, rendered like ``llama_chat_apply_template``.

Layouts follow ``llm_chat_apply_template`` in llama.cpp's
``src/llama-chat.cpp`` and are tested against the expected outputs in its
``tests/test-chat-template.cpp``, so a prompt built here equals the one the C
library would build for the same format.
"""

from __future__ import annotations

from collections.abc import Callable

from ._format_defs import ALL, TurnStyle, _fmt, _llama2_llamacpp
from .formats import ChatFormat, Turn

_LLAMA_CPP = "llama.cpp src/llama-chat.cpp"
_DS = "<｜end▁of▁sentence｜>"


def _mistral(*, lead: str, trail: str, trim_answers: bool) -> Callable[[list[Turn], bool], str]:
    # Mistral's v1/v3/v3-tekken instruct layouts, system text before the user's.
    # https://github.com/mistralai/cookbook/blob/main/concept-deep-dive/tokenization/chat_templates.md
    def render(turns: list[Turn], add_generation_prompt: bool) -> str:
        out, inside = [], False
        for role, content in turns:
            if not inside:
                out.append(f"{lead}[INST]{trail}")
                inside = True
            if role == "system":
                out.append(content + "\n\n")
            elif role == "user":
                out.append(content + lead + "[/INST]")
            else:
                out.append(trail + (content.strip() if trim_answers else content) + "</s>")
                inside = False
        return "".join(out)

    return render


def _gigachat(turns: list[Turn], add_generation_prompt: bool) -> str:
    # llama.cpp "gigachat" (ai-sage/GigaChat-20B-A3B-instruct).
    out = ["<s>"]
    if turns and turns[0][0] == "system":
        out.append(turns[0][1] + "<|message_sep|>")
        turns = turns[1:]
    for role, content in turns:
        if role == "user":
            out.append(f"user<|role_sep|>{content}<|message_sep|>available functions<|role_sep|>[]<|message_sep|>")
        elif role == "assistant":
            out.append(f"assistant<|role_sep|>{content}<|message_sep|>")
    if add_generation_prompt:
        out.append("assistant<|role_sep|>")
    return "".join(out)


def _rwkv_world(turns: list[Turn], add_generation_prompt: bool) -> str:
    # llama.cpp "rwkv-world": the model's EOT is "\n\n"; the prompt for the
    # answer follows the last user turn whatever add_generation_prompt says.
    names = {"system": "System", "user": "User", "assistant": "Assistant"}
    out = [f"{names[r]}: {c.strip()}\n\n" for r, c in turns if r in names]
    if turns and turns[-1][0] == "user":
        out.append("Assistant:")
    return "".join(out)


LLAMA_CPP_FORMATS: tuple[ChatFormat, ...] = (
    _fmt("llama2-sys", _llama2_llamacpp(system_tags=True, bos_inside=False, strip=False), ("</s>",), _LLAMA_CPP),
    _fmt("llama2-sys-bos", _llama2_llamacpp(system_tags=True, bos_inside=True, strip=False), ("</s>",), _LLAMA_CPP),
    _fmt("llama2-sys-strip", _llama2_llamacpp(system_tags=True, bos_inside=False, strip=True), ("</s>",), _LLAMA_CPP),
    _fmt("mistral-v1", _mistral(lead=" ", trail=" ", trim_answers=False), ("</s>",), _LLAMA_CPP),
    _fmt("mistral-v3", _mistral(lead="", trail=" ", trim_answers=True), ("</s>",), _LLAMA_CPP),
    _fmt("mistral-v3-tekken", _mistral(lead="", trail="", trim_answers=False), ("</s>",), _LLAMA_CPP),
    _fmt(
        "mistral-v7",
        TurnStyle(
            turns={
                "system": ("[SYSTEM_PROMPT] ", "[/SYSTEM_PROMPT]"),
                "user": ("[INST] ", "[/INST]"),
                ALL: (" ", "</s>"),
            }
        ),
        ("</s>",),
        _LLAMA_CPP,
    ),
    _fmt(
        "mistral-v7-tekken",
        TurnStyle(
            turns={"system": ("[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]"), "user": ("[INST]", "[/INST]"), ALL: ("", "</s>")}
        ),
        ("</s>",),
        _LLAMA_CPP,
    ),
    _fmt(
        "phi-4",
        TurnStyle(
            turns={ALL: ("<|im_start|>{role}<|im_sep|>", "<|im_end|>")}, generation="<|im_start|>assistant<|im_sep|>"
        ),
        ("<|im_end|>",),
        _LLAMA_CPP,
        aliases=("phi4",),
    ),
    _fmt(
        "falcon3",
        TurnStyle(turns={ALL: ("<|{role}|>\n", "\n")}, generation="<|assistant|>\n"),
        ("<|endoftext|>", "<|user|>"),
        _LLAMA_CPP,
    ),
    _fmt(
        "stablelm-zephyr",
        TurnStyle(turns={ALL: ("<|{role}|>\n", "<|endoftext|>\n")}, generation="<|assistant|>\n"),
        ("<|endoftext|>",),
        _LLAMA_CPP + ' ("zephyr")',
    ),
    _fmt(
        "monarch",
        TurnStyle(turns={ALL: ("<s>{role}\n", "</s>\n")}, generation="<s>assistant\n", leading_bos="<s>"),
        ("</s>",),
        _LLAMA_CPP,
    ),
    _fmt(
        "orion",
        TurnStyle(turns={"user": ("Human: ", "\n\nAssistant: </s>"), "assistant": ("", "</s>")}, system="merge"),
        ("</s>",),
        _LLAMA_CPP,
    ),
    _fmt(
        "vicuna-newline",
        TurnStyle(
            turns={"system": ("", "\n\n"), "user": ("USER: ", "\n"), "assistant": ("ASSISTANT: ", "</s>\n")},
            generation="ASSISTANT:",
        ),
        ("</s>", "USER:"),
        _LLAMA_CPP + ' ("vicuna")',
    ),
    _fmt(
        "vicuna-orca",
        TurnStyle(
            turns={"system": ("SYSTEM: ", "\n"), "user": ("USER: ", "\n"), "assistant": ("ASSISTANT: ", "</s>\n")},
            generation="ASSISTANT:",
        ),
        ("</s>", "USER:"),
        _LLAMA_CPP,
    ),
    _fmt(
        "deepseek",
        TurnStyle(
            turns={
                "system": ("", ""),
                "user": ("### Instruction:\n", "\n"),
                "assistant": ("### Response:\n", "\n<|EOT|>\n"),
            },
            generation="### Response:\n",
        ),
        ("<|EOT|>",),
        _LLAMA_CPP,
    ),
    _fmt(
        "deepseek2",
        TurnStyle(
            turns={"system": ("", "\n\n"), "user": ("User: ", "\n\n"), "assistant": ("Assistant: ", _DS)},
            generation="Assistant:",
        ),
        (_DS,),
        _LLAMA_CPP,
    ),
    _fmt(
        "deepseek3",
        TurnStyle(
            turns={"system": ("", "\n\n"), "user": ("<｜User｜>", ""), "assistant": ("<｜Assistant｜>", _DS)},
            generation="<｜Assistant｜>",
        ),
        (_DS,),
        _LLAMA_CPP,
    ),
    _fmt(
        "command-r",
        TurnStyle(
            turns={
                "system": ("<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>", "<|END_OF_TURN_TOKEN|>"),
                "user": ("<|START_OF_TURN_TOKEN|><|USER_TOKEN|>", "<|END_OF_TURN_TOKEN|>"),
                "assistant": ("<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>", "<|END_OF_TURN_TOKEN|>"),
            },
            generation="<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>",
            trim=frozenset(ALL),
        ),
        ("<|END_OF_TURN_TOKEN|>",),
        _LLAMA_CPP,
    ),
    _fmt(
        "llama4",
        TurnStyle(
            turns={ALL: ("<|header_start|>{role}<|header_end|>\n\n", "<|eot|>")},
            generation="<|header_start|>assistant<|header_end|>\n\n",
            trim=frozenset(ALL),
        ),
        ("<|eot|>",),
        _LLAMA_CPP,
    ),
    _fmt(
        "chatglm4",
        TurnStyle(turns={ALL: ("<|{role}|>\n", "")}, start="[gMASK]<sop>", generation="<|assistant|>\n"),
        ("<|user|>", "<|observation|>", "<|endoftext|>"),
        _LLAMA_CPP,
    ),
    _fmt(
        "glmedge", TurnStyle(turns={ALL: ("<|{role}|>\n", "")}, generation="<|assistant|>"), ("<|user|>",), _LLAMA_CPP
    ),
    _fmt(
        "minicpm",
        TurnStyle(turns={"user": ("<用户>", "<AI>"), ALL: ("", "")}, trim=frozenset(ALL)),
        ("<用户>",),
        _LLAMA_CPP,
    ),
    _fmt(
        "exaone3",
        TurnStyle(
            turns={
                "system": ("[|system|]", "[|endofturn|]\n"),
                "user": ("[|user|]", "\n"),
                "assistant": ("[|assistant|]", "[|endofturn|]\n"),
            },
            generation="[|assistant|]",
            trim=frozenset(ALL),
        ),
        ("[|endofturn|]",),
        _LLAMA_CPP,
    ),
    _fmt("rwkv-world", _rwkv_world, ("\n\n",), _LLAMA_CPP),
    _fmt(
        "granite",
        TurnStyle(
            turns={ALL: ("<|start_of_role|>{role}<|end_of_role|>", "<|end_of_text|>\n")},
            generation="<|start_of_role|>assistant<|end_of_role|>",
        ),
        ("<|end_of_text|>",),
        _LLAMA_CPP,
    ),
    _fmt("gigachat", _gigachat, ("<|message_sep|>",), _LLAMA_CPP),
    _fmt(
        "megrez",
        TurnStyle(
            turns={ALL: ("<|role_start|>{role}<|role_end|>", "<|turn_end|>")},
            generation="<|role_start|>assistant<|role_end|>",
        ),
        ("<|turn_end|>",),
        _LLAMA_CPP,
    ),
    _fmt(
        "yandex",
        TurnStyle(
            turns={"user": (" Пользователь: ", "\n\n"), "assistant": (" Ассистент: ", "\n\n")},
            system="drop",
            generation=" Ассистент:[SEP]",
        ),
        ("\n\n",),
        _LLAMA_CPP,
    ),
    _fmt(
        "bailing",
        TurnStyle(
            turns={ALL: ("<role>{role}</role>", "")},
            rename={"user": "HUMAN"},
            case=str.upper,
            generation="<role>ASSISTANT</role>",
        ),
        ("<role>HUMAN</role>",),
        _LLAMA_CPP,
    ),
    _fmt(
        "kimi-k2",
        TurnStyle(
            turns={
                "system": ("<|im_system|>system<|im_middle|>", "<|im_end|>"),
                "user": ("<|im_user|>user<|im_middle|>", "<|im_end|>"),
                "assistant": ("<|im_assistant|>assistant<|im_middle|>", "<|im_end|>"),
                "tool": ("<|im_system|>tool<|im_middle|>", "<|im_end|>"),
            },
            generation="<|im_assistant|>assistant<|im_middle|>",
        ),
        ("<|im_end|>",),
        _LLAMA_CPP,
    ),
    _fmt(
        "seed-oss",
        TurnStyle(
            turns={ALL: ("<seed:bos>{role}\n", "<seed:eos>")},
            trim=frozenset({"assistant"}),
            generation="<seed:bos>assistant\n",
        ),
        ("<seed:eos>",),
        _LLAMA_CPP,
        aliases=("seed_oss",),
    ),
    _fmt(
        "grok-2",
        TurnStyle(
            turns={
                "system": ("System: ", "<|separator|>\n\n"),
                "user": ("Human: ", "<|separator|>\n\n"),
                "assistant": ("Assistant: ", "<|separator|>\n\n"),
            },
            trim=frozenset({"system", "user"}),
            generation="Assistant:",
        ),
        ("<|separator|>",),
        _LLAMA_CPP,
    ),
    _fmt(
        "solar-open",
        TurnStyle(turns={ALL: ("<|begin|>{role}<|content|>", "<|end|>")}, generation="<|begin|>assistant"),
        ("<|end|>",),
        _LLAMA_CPP,
    ),
)
