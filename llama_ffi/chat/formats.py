"""Named chat formats: hand-written prompt layouts with their stop strings.

Most models ship a Jinja chat template, rendered by :mod:`.template`. These
named formats cover the rest: older models without a template, explicit
overrides (``chat_format="chatml"``), and a fallback when a template cannot
be rendered. Two naming schemes are served:

* llama-cpp-python's ``chat_format`` names (``"llama-2"``, ``"chatml"``,
  ``"mistral-instruct"``, ``"alpaca"``, ``"vicuna"`` ...), laid out as the
  model cards describe them (llama-cpp-python's own output has known slips,
  e.g. its ``"phind"`` adds colons the model card does not have);
* llama.cpp's built-in template names (``"llama2-sys"``, ``"mistral-v7"``,
  ``"deepseek3"`` ...), rendered exactly like ``llama_chat_apply_template``,
  so the Python and C paths agree. Where both projects use the same name for
  different layouts (``"zephyr"``, ``"vicuna"``), llama-cpp-python keeps the
  name and the llama.cpp layout gets a distinct one.

Conventions: a format never writes the *leading* BOS (the tokenizer adds it;
see :func:`.template.reconcile_bos`), but does write BOS/EOS tokens that
belong inside the conversation (``</s><s>[INST]`` in Llama 2).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..errors import ValidationError

__all__ = [
    "ChatFormat",
    "ChatPrompt",
    "chat_format_names",
    "get_chat_format",
    "guess_chat_format",
    "register_chat_format",
]

Turn = tuple[str, str]  # (role, text content)
Renderer = Callable[[list[Turn], bool], str]


@dataclasses.dataclass(frozen=True)
class ChatPrompt:
    """A rendered prompt and the strings that end the assistant's turn."""

    prompt: str
    stop: tuple[str, ...]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChatFormat:
    """A named prompt layout. Call :meth:`apply` to render a conversation."""

    name: str
    renderer: Renderer = dataclasses.field(repr=False)
    stop: tuple[str, ...] = ()
    source: str = ""  # where the layout is documented
    aliases: tuple[str, ...] = ()

    def apply(self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True) -> ChatPrompt:
        """Render OpenAI-style ``messages``; text parts of list contents are joined."""
        turns = [_turn(index, message) for index, message in enumerate(messages)]
        return ChatPrompt(self.renderer(turns, add_generation_prompt), self.stop)


def _turn(index: int, message: Mapping[str, Any]) -> Turn:
    if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
        raise ValidationError(f"messages[{index}] needs a string 'role'", param="messages")
    return message["role"], _text(message.get("content"))


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        # OpenAI content parts: keep the text ones, in order.
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping) and p.get("type") == "text")
    return str(content)


# ------------------------------------------------------------------ registry

_REGISTRY: dict[str, ChatFormat] = {}
_ALIASES: dict[str, str] = {}


def register_chat_format(chat_format: ChatFormat, *, replace: bool = False) -> ChatFormat:
    """Add a format (and its aliases) to the registry; returns it."""
    names = (chat_format.name, *chat_format.aliases)
    taken = [n for n in names if n in _REGISTRY or n in _ALIASES]
    if taken and not replace:
        raise ValidationError(f"chat format name already registered: {', '.join(taken)}", param="name")
    _REGISTRY[chat_format.name] = chat_format
    for alias in chat_format.aliases:
        _ALIASES[alias] = chat_format.name
    return chat_format


def chat_format_names(*, aliases: bool = False) -> list[str]:
    """Sorted names of the registered formats (with aliases if asked)."""
    _load_builtins()
    return sorted([*_REGISTRY, *(_ALIASES if aliases else ())])


def get_chat_format(name: str) -> ChatFormat:
    """The format registered as ``name`` (or an alias of it).

    Raises ValidationError naming every known format when there is none.
    """
    _load_builtins()
    key = _ALIASES.get(name, name) if isinstance(name, str) else None
    if key not in _REGISTRY:
        known = ", ".join(chat_format_names(aliases=True))
        raise ValidationError(f"unknown chat format {name!r}; known formats: {known}", param="chat_format")
    return _REGISTRY[key]


def _load_builtins() -> None:
    # Imported on first use: the table is plain data, but keeping it out of
    # import time keeps `import llama_ffi` cheap.
    if not _REGISTRY:
        from ._format_defs import CLASSIC_FORMATS
        from ._format_llamacpp import LLAMA_CPP_FORMATS

        for chat_format in (*CLASSIC_FORMATS, *LLAMA_CPP_FORMATS):
            register_chat_format(chat_format)


# ------------------------------------------------------------------ guessing


def guess_chat_format(template: str) -> str | None:
    """Name of the registered format a Jinja chat template corresponds to.

    Looks for each family's distinctive markers, in the spirit of llama.cpp's
    ``llm_chat_detect_template``, and returns the name whose rendering equals
    what ``llama_chat_apply_template`` produces for that template, or None.
    A template text that is itself a format name returns that name.
    """
    if not isinstance(template, str):
        return None
    _load_builtins()
    if template in _REGISTRY or template in _ALIASES:
        return _ALIASES.get(template, template)
    for rule in _RULES:
        name = rule(template)
        if name:
            return name
    return None


def _has(text: str, *needles: str) -> bool:
    return all(n in text for n in needles)


def _guess_im_start(t: str) -> str | None:
    if "<|im_start|>" not in t:
        return None
    if "<|im_sep|>" in t:
        return "phi-4"
    return None if "<end_of_utterance>" in t else "chatml"  # SmolVLM: not ChatML


def _guess_inst(t: str) -> str | None:
    if not (t.startswith("mistral") or "[INST]" in t):
        return None
    if "[SYSTEM_PROMPT]" in t:
        return "mistral-v7"
    if "' [INST] ' + system_message" in t or "[AVAILABLE_TOOLS]" in t:
        if " [INST]" in t:
            return "mistral-v1"
        return "mistral-v3-tekken" if '"[INST]"' in t else "mistral-v3"
    if "content.strip()" in t:
        return "llama2-sys-strip"
    if "bos_token + '[INST]" in t:
        return "llama2-sys-bos"
    return "llama2-sys" if "<<SYS>>" in t else "mistral-instruct"


def _guess_role_tags(t: str) -> str | None:
    if _has(t, "<|assistant|>", "<|end|>"):
        return "phi-3"
    if "[gMASK]<sop>" in t:
        return "chatglm4"
    if _has(t, "<|assistant|>", "<|user|>"):
        return "falcon3" if "</s>" in t else "glmedge"
    if _has(t, "<|{{ item['role'] }}|>", "<|begin_of_image|>"):
        return "glmedge"
    if _has(t, "<|user|>", "<|endoftext|>"):
        return "stablelm-zephyr"
    return None


def _marker_rule(table: Sequence[tuple[tuple[str, ...], str]]) -> Callable[[str], str | None]:
    def rule(t: str) -> str | None:
        return next((name for needles, name in table if _has(t, *needles)), None)

    return rule


# Checked in order; earlier entries win where markers overlap.
_MARKERS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("bos_token + message['role']",), "monarch"),
    (("<start_of_turn>",), "gemma"),
    (("'\\n\\nAssistant: ' + eos_token",), "orion"),
    (("GPT4 Correct ",), "openchat"),
    (("USER: ", "ASSISTANT: ", "SYSTEM: "), "vicuna-orca"),
    (("USER: ", "ASSISTANT: "), "vicuna-newline"),
    (("### Instruction:", "<|EOT|>"), "deepseek"),
    (("<|START_OF_TURN_TOKEN|>", "<|USER_TOKEN|>"), "command-r"),
    (("<|start_header_id|>", "<|end_header_id|>"), "llama-3"),
    (("[gMASK]sop",), "chatglm3"),
    (("<用户>",), "minicpm"),
    (("'Assistant: ' + message['content'] + eos_token",), "deepseek2"),
    (("<｜Assistant｜>", "<｜User｜>", "<｜end▁of▁sentence｜>"), "deepseek3"),
    (("[|system|]", "[|assistant|]", "[|endofturn|]"), "exaone3"),
    (("rwkv-world",), "rwkv-world"),
    (("{{- 'User: ' + message['content']|trim + '\\n\\n' -}}",), "rwkv-world"),
    (("<|start_of_role|>",), "granite"),
    (("additional_special_tokens[0] + message['content'] + additional_special_tokens[1]",), "gigachat"),
    (("<|role_start|>",), "megrez"),
    ((" Ассистент:",), "yandex"),
    (("<role>ASSISTANT</role>", "'HUMAN'"), "bailing"),
    (("<|header_start|>", "<|header_end|>"), "llama4"),
    (("<|im_assistant|>assistant<|im_middle|>",), "kimi-k2"),
    (("<seed:bos>",), "seed-oss"),
    (("'Assistant: '  + message['content'] + '<|separator|>",), "grok-2"),
    (("<|begin|>", "<|end|>", "<|content|>"), "solar-open"),
)

_RULES: tuple[Callable[[str], str | None], ...] = (
    _guess_im_start,
    _guess_inst,
    _guess_role_tags,
    _marker_rule(_MARKERS),
)
