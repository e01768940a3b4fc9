"""Chat formats under llama-cpp-python's names, and the shared machinery.

Most layouts are "each role gets a prefix and a suffix" and are described by
:class:`TurnStyle`; the few that group turns (Llama 2) have small functions.
Each entry names the document it follows. llama.cpp's own built-in formats
live in :mod:`._format_llamacpp`, which reuses :class:`TurnStyle`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from .formats import ChatFormat, Turn

ALL = "*"  # role wildcard in TurnStyle tables


@dataclasses.dataclass(frozen=True, kw_only=True)
class TurnStyle:
    """Prefix/suffix per role; ``{role}`` in a prefix is the (renamed) role.

    ``system``: "turn" renders system messages like any role, "merge" folds
    them into the next user message (joined by ``merge_join``), "drop" skips
    them. Roles missing from ``turns`` (and no ``"*"``) are skipped.
    """

    turns: Mapping[str, tuple[str, str]]
    generation: str = ""
    start: str = ""
    trim: frozenset[str] = frozenset()  # roles whose content is stripped; "*" for all
    system: str = "turn"
    merge_join: str = "\n\n"
    default_system: str | None = None
    rename: Mapping[str, str] = dataclasses.field(default_factory=dict)
    case: Callable[[str], str] | None = None
    leading_bos: str = ""  # dropped from the very start: the tokenizer adds BOS

    def __call__(self, turns: list[Turn], add_generation_prompt: bool) -> str:
        if self.default_system is not None and not any(role == "system" for role, _ in turns):
            turns = [("system", self.default_system), *turns]
        out, pending = [self.start], ""
        for role, content in turns:
            if ALL in self.trim or role in self.trim:
                content = content.strip()
            if role == "system" and self.system != "turn":
                pending += content if self.system == "merge" else ""
                continue
            if pending and role == "user":
                content, pending = pending + self.merge_join + content, ""
            out.append(self._one(role, content))
        if add_generation_prompt:
            out.append(self.generation)
        text = "".join(out)
        return text[len(self.leading_bos) :] if self.leading_bos and text.startswith(self.leading_bos) else text

    def _one(self, role: str, content: str) -> str:
        prefix, suffix = self.turns.get(role) or self.turns.get(ALL) or ("", None)  # type: ignore[assignment]
        if suffix is None:
            return ""
        shown = self.rename.get(role, role)
        shown = self.case(shown) if self.case else shown
        return prefix.replace("{role}", shown) + content + suffix


def _fmt(
    name: str,
    renderer: Callable[[list[Turn], bool], str],
    stop: tuple[str, ...],
    source: str,
    aliases: tuple[str, ...] = (),
) -> ChatFormat:
    return ChatFormat(name=name, renderer=renderer, stop=stop, source=source, aliases=aliases)


def _title(role: str) -> str:
    return role[:1].upper() + role[1:]


# --------------------------------------------------------- grouped layouts


def _llama2_official(turns: list[Turn], add_generation_prompt: bool) -> str:
    # Meta's Llama 2 chat layout, as the official HF template writes it:
    # <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {answer} </s><s>[INST] ...
    # https://huggingface.co/blog/llama2#how-to-prompt-llama-2
    system = turns[0][1] if turns and turns[0][0] == "system" else None
    out = []
    for index, (role, content) in enumerate(turns[1:] if system is not None else turns):
        if index == 0 and system is not None:
            content = f"<<SYS>>\n{system}\n<</SYS>>\n\n{content}"
        if role == "user":
            out.append(f"<s>[INST] {content.strip()} [/INST]")
        elif role == "assistant":
            out.append(f" {content.strip()} </s>")
    return "".join(out).removeprefix("<s>")


def _llama2_llamacpp(*, system_tags: bool, bos_inside: bool, strip: bool) -> Callable[[list[Turn], bool], str]:
    # llama.cpp's "llama2" family: system folded into the first [INST].
    def render(turns: list[Turn], add_generation_prompt: bool) -> str:
        out, inside = ["[INST] "], True
        for role, content in turns:
            content = content.strip() if strip else content
            if not inside:
                out.append("<s>[INST] " if bos_inside else "[INST] ")
                inside = True
            if role == "system":
                out.append(f"<<SYS>>\n{content}\n<</SYS>>\n\n" if system_tags else content + "\n")
            elif role == "user":
                out.append(content + " [/INST]")
            else:
                out.append(content + "</s>")
                inside = False
        return "".join(out)

    return render


# ---------------------------------------------------------------- constants

_VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
_ALPACA_SYSTEM = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)
_ORCA_SYSTEM = (
    "You are a helpful assistant. Please answer truthfully and write out your thinking step by step to be sure "
    "you get the right answer. If you make a mistake or encounter an error in your thinking, say so out loud and "
    "attempt to correct it. If you don't know or aren't sure about something, say so clearly. You will act as a "
    "professional logician, mathematician, and physicist. You will also act as the most appropriate type of "
    "expert to answer any particular question or solve the relevant problem; state which expert type your are, "
    "if so. Also think of any particular named expert that would be ideal to answer the relevant question or "
    "solve the relevant problem; name and act as them, if appropriate."
)
_CHATML = TurnStyle(turns={ALL: ("<|im_start|>{role}\n", "<|im_end|>\n")}, generation="<|im_start|>assistant\n")


# ------------------------------------------------------------------- table

CLASSIC_FORMATS: tuple[ChatFormat, ...] = (
    # llama-cpp-python names, laid out as their model cards say
    # -- llama-cpp-python names, laid out as their model cards say -----------
    _fmt("chatml", _CHATML, ("<|im_end|>",), "https://huggingface.co/teknium/OpenHermes-2.5-Mistral-7B"),
    _fmt(
        "qwen",
        dataclasses.replace(_CHATML, default_system="You are a helpful assistant."),
        ("<|im_end|>", "<|endoftext|>"),
        "https://huggingface.co/Qwen/Qwen1.5-7B-Chat (tokenizer_config.json)",
    ),
    _fmt("llama-2", _llama2_official, ("</s>",), "https://huggingface.co/blog/llama2#how-to-prompt-llama-2"),
    _fmt(
        "llama-3",
        TurnStyle(
            turns={ALL: ("<|start_header_id|>{role}<|end_header_id|>\n\n", "<|eot_id|>")},
            generation="<|start_header_id|>assistant<|end_header_id|>\n\n",
            trim=frozenset(ALL),
        ),
        ("<|eot_id|>",),
        "https://www.llama.com/docs/model-cards-and-prompt-formats/meta-llama-3/",
        aliases=("llama3",),
    ),
    # Mistral-7B-Instruct v0.1/v0.2: no system role; it is folded into the first [INST].
    _fmt(
        "mistral-instruct",
        _llama2_llamacpp(system_tags=False, bos_inside=False, strip=False),
        ("</s>",),
        "https://huggingface.co/mistralai/Mistral-7B-Instruct-v0.2",
        aliases=("llama2",),
    ),
    _fmt(
        "gemma",
        TurnStyle(
            turns={ALL: ("<start_of_turn>{role}\n", "<end_of_turn>\n")},
            rename={"assistant": "model"},
            generation="<start_of_turn>model\n",
            trim=frozenset(ALL),
            system="merge",
        ),
        ("<end_of_turn>",),
        "https://ai.google.dev/gemma/docs/core/prompt-structure",
    ),
    _fmt(
        "phi-3",
        TurnStyle(turns={ALL: ("<|{role}|>\n", "<|end|>\n")}, generation="<|assistant|>\n"),
        ("<|end|>", "<|endoftext|>"),
        "https://huggingface.co/microsoft/Phi-3-mini-4k-instruct",
        aliases=("phi3",),
    ),
    _fmt(
        "zephyr",
        TurnStyle(turns={ALL: ("<|{role}|>\n", "</s>\n")}, generation="<|assistant|>\n"),
        ("</s>",),
        "https://huggingface.co/HuggingFaceH4/zephyr-7b-beta",
    ),
    _fmt(
        "alpaca",
        TurnStyle(
            turns={
                "system": ("", "\n\n"),
                "user": ("### Instruction:\n", "\n\n"),
                "assistant": ("### Response:\n", "\n\n"),
            },
            generation="### Response:\n",
            default_system=_ALPACA_SYSTEM,
        ),
        ("### Instruction:",),
        "https://github.com/tatsu-lab/stanford_alpaca#data-release",
    ),
    # FastChat's vicuna_v1.1: "{system} USER: {u} ASSISTANT: {a}</s>USER: ..."
    _fmt(
        "vicuna",
        TurnStyle(
            turns={"system": ("", " "), "user": ("USER: ", " "), "assistant": ("ASSISTANT: ", "</s>")},
            generation="ASSISTANT:",
            default_system=_VICUNA_SYSTEM,
        ),
        ("</s>", "USER:"),
        "https://github.com/lm-sys/FastChat/blob/main/docs/vicuna_weights_version.md",
    ),
    _fmt(
        "openchat",
        TurnStyle(
            turns={"system": ("", "<|end_of_turn|>"), ALL: ("GPT4 Correct {role}: ", "<|end_of_turn|>")},
            case=_title,
            generation="GPT4 Correct Assistant:",
        ),
        ("<|end_of_turn|>",),
        "https://huggingface.co/openchat/openchat-3.5-0106",
    ),
    _fmt(
        "saiga",
        TurnStyle(
            turns={ALL: ("<s>{role}\n", "</s>")}, rename={"assistant": "bot"}, generation="<s>bot\n", leading_bos="<s>"
        ),
        ("</s>",),
        "https://huggingface.co/IlyaGusev/saiga_mistral_7b_lora",
    ),
    _fmt(
        "baichuan-2",
        TurnStyle(
            turns={"system": ("", ""), "user": ("<reserved_106>", ""), "assistant": ("<reserved_107>", "")},
            generation="<reserved_107>",
        ),
        ("</s>",),
        "https://huggingface.co/baichuan-inc/Baichuan2-7B-Chat (generation_utils.py)",
    ),
    _fmt(
        "baichuan",
        TurnStyle(
            turns={"system": ("", ""), "user": ("<reserved_102>", ""), "assistant": ("<reserved_103>", "")},
            generation="<reserved_103>",
        ),
        ("</s>",),
        "https://huggingface.co/baichuan-inc/Baichuan-13B-Chat",
    ),
    _fmt(
        "chatglm3",
        TurnStyle(turns={ALL: ("<|{role}|>\n ", "")}, start="[gMASK]sop", generation="<|assistant|>"),
        ("<|user|>", "<|observation|>"),
        "https://huggingface.co/THUDM/chatglm3-6b",
    ),
    _fmt(
        "oasst_llama",
        TurnStyle(
            turns={
                "system": ("[INST] <<SYS>>\n", "\n<</SYS>>\n\n"),
                "user": ("<|prompter|>", "</s>"),
                "assistant": ("<|assistant|>", "</s>"),
            },
            generation="<|assistant|>",
        ),
        ("</s>",),
        "https://huggingface.co/OpenAssistant/llama2-13b-orca-8k-3319",
    ),
    _fmt(
        "openbuddy",
        TurnStyle(
            turns={"system": ("", "\n"), "user": ("User: ", "\n"), "assistant": ("Assistant: ", "\n")},
            generation="Assistant:",
        ),
        ("User:",),
        "https://huggingface.co/OpenBuddy/openbuddy-llama2-13b-v8.1-fp16",
    ),
    _fmt(
        "redpajama-incite",
        TurnStyle(
            turns={"system": ("", "\n"), "user": ("<human>: ", "\n"), "assistant": ("<bot>: ", "\n")},
            generation="<bot>:",
        ),
        ("<human>",),
        "https://huggingface.co/togethercomputer/RedPajama-INCITE-Chat-3B-v1",
    ),
    _fmt(
        "snoozy",
        TurnStyle(
            turns={
                "system": ("### Instruction:\n", "\n"),
                "user": ("### Prompt:\n", "\n"),
                "assistant": ("### Response:\n", "\n"),
            },
            generation="### Response:\n",
            default_system="The prompt below is a question to answer, a task to complete, or a "
            "conversation to respond to; decide which and write an appropriate response.",
        ),
        ("###",),
        "https://huggingface.co/nomic-ai/gpt4all-13b-snoozy",
    ),
    _fmt(
        "phind",
        TurnStyle(
            turns={
                "system": ("### System Prompt\n", "\n\n"),
                "user": ("### User Message\n", "\n\n"),
                "assistant": ("### Assistant\n", "\n\n"),
            },
            generation="### Assistant\n",
            default_system="You are an intelligent programming assistant.",
        ),
        ("### User Message",),
        "https://huggingface.co/Phind/Phind-CodeLlama-34B-v2",
    ),
    _fmt(
        "intel",
        TurnStyle(
            turns={
                "system": ("### System:\n", "\n"),
                "user": ("### User:\n", "\n"),
                "assistant": ("### Assistant:\n", "\n"),
            },
            generation="### Assistant:\n",
        ),
        ("### User:",),
        "https://huggingface.co/Intel/neural-chat-7b-v3-1",
    ),
    _fmt(
        "open-orca",
        TurnStyle(
            turns={
                "system": ("", "<|end_of_turn|>\n"),
                "user": ("User: ", "<|end_of_turn|>\n"),
                "assistant": ("Assistant: ", "<|end_of_turn|>\n"),
            },
            generation="Assistant: ",
            default_system=_ORCA_SYSTEM,
        ),
        ("User:", "<|end_of_turn|>"),
        "https://huggingface.co/Open-Orca/OpenOrcaxOpenChat-Preview2-13B",
    ),
    _fmt(
        "mistrallite",
        TurnStyle(
            turns={
                "system": ("<|system|>", "</s>"),
                "user": ("<|prompter|>", "</s>"),
                "assistant": ("<|assistant|>", "</s>"),
            },
            generation="<|assistant|>",
        ),
        ("</s>",),
        "https://huggingface.co/amazon/MistralLite",
    ),
    _fmt(
        "pygmalion",
        TurnStyle(
            turns={"system": ("<|system|>", ""), "user": ("<|user|>", ""), "assistant": ("<|model|>", "")},
            generation="<|model|>",
        ),
        ("<|user|>",),
        "https://huggingface.co/PygmalionAI/pygmalion-2-7b",
    ),
)
