"""Model families: what a chat model writes besides plain text, and how to find it.

``detect_family(metadata, template)`` reads the chat template first (its
markers say how the model was trained to talk) and GGUF metadata second; the
file name is never consulted. The returned ``ModelFamily`` bundles reasoning
markers, the tool-call format, extra stop strings, lazy-grammar triggers and
template defaults for one family.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from .markers import regex_escape
from .toolcall_base import ToolCallFormat
from .toolcall_formats import (
    DeepSeekFormat,
    FunctionaryV31Format,
    FunctionaryV32Format,
    GenericJsonFormat,
    HarmonyFormat,
    Llama3Format,
    MistralFormat,
    TaggedJsonFormat,
)
from .toolcall_xml import Gemma4Format, GlmFormat, QwenXmlFormat

__all__ = ["FAMILIES", "GrammarTriggers", "ModelFamily", "detect_family", "get_family"]

_REASONING_STYLES = ("tags", "harmony")


@dataclass(frozen=True)
class GrammarTriggers:
    """Arguments for ``llama_sampler_init_grammar_lazy_patterns``: regexes
    (ECMAScript; the grammar starts at the first capture group) and token
    texts to resolve to ids (skip any that are not a single token)."""

    patterns: tuple[str, ...] = ()
    tokens: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelFamily:
    """How one family of chat models formats reasoning and tool calls.

    ``reasoning_start``/``reasoning_end``: markers around reasoning (None: the
    family does not reason in-band). ``reasoning_style``: ``"tags"`` for
    marker pairs, ``"harmony"`` for GPT-OSS channels. ``tool_trigger_*``
    default to the tool format's own triggers. ``thinking_switch`` is the
    template variable that turns reasoning on/off, with ``thinking_values``
    as its (on, off) values. ``call_id_length``: ids the templates accept
    (None: OpenAI style ``call_...``).
    """

    name: str
    reasoning_start: str | None = None
    reasoning_end: str | None = None
    reasoning_style: str = "tags"
    tool_format: ToolCallFormat = field(default_factory=GenericJsonFormat)
    stop_strings: tuple[str, ...] = ()
    tool_trigger_patterns: tuple[str, ...] | None = None
    tool_trigger_tokens: tuple[str, ...] | None = None
    thinking_switch: str | None = None
    thinking_values: tuple[Any, Any] = (True, False)
    template_defaults: Mapping[str, Any] = field(default_factory=dict, hash=False)
    call_id_length: int | None = None

    def __post_init__(self) -> None:
        if self.reasoning_style not in _REASONING_STYLES:
            raise ValueError(f"reasoning_style must be one of {_REASONING_STYLES}")
        if (self.reasoning_start is None) != (self.reasoning_end is None):
            raise ValueError("reasoning_start and reasoning_end go together")
        if self.tool_trigger_patterns is None:
            object.__setattr__(self, "tool_trigger_patterns", self.tool_format.trigger_patterns)
        if self.tool_trigger_tokens is None:
            object.__setattr__(self, "tool_trigger_tokens", self.tool_format.trigger_tokens)
        # Read-only so a shared family constant cannot be changed by a caller.
        object.__setattr__(self, "template_defaults", MappingProxyType(dict(self.template_defaults)))

    @property
    def has_reasoning(self) -> bool:
        return self.reasoning_start is not None

    def template_kwargs(self, enable_thinking: bool | None = None) -> dict[str, Any]:
        """Template variables: the family defaults, plus the thinking switch."""
        kwargs = dict(self.template_defaults)
        if enable_thinking is not None and self.thinking_switch:
            kwargs[self.thinking_switch] = self.thinking_values[0 if enable_thinking else 1]
        return kwargs

    def grammar_triggers(self, *, reasoning_open: bool = False) -> GrammarTriggers:
        """Lazy-grammar triggers that ignore tool markers written while reasoning.

        ``reasoning_open``: the prompt already opened a reasoning block (see
        ``reasoning.prompt_opens_reasoning``). Trigger tokens are dropped for
        tag-reasoning families, since a token would also fire mid-thought.

        These are llama.cpp-shaped (they describe the format). Our own lazy grammars
        use the stricter triggers of ``chat.tool_grammar``: these can hand a grammar
        text it rejects, and their ``[\\s\\S]*?`` overflows libstdc++'s regex stack on
        long outputs; either aborts the process.
        """
        patterns = tuple(self.tool_trigger_patterns or ())
        tokens = tuple(self.tool_trigger_tokens or ())
        if self.reasoning_style != "tags" or self.reasoning_start is None:
            return GrammarTriggers(patterns, tokens)
        start = regex_escape(self.reasoning_start)
        end = regex_escape(self.reasoning_end or "")
        if reasoning_open:
            prefix = rf"^[\s\S]*?{end}"
        else:  # either a whole reasoning block first, or none at all
            prefix = rf"^(?:\s*{start}[\s\S]*?{end}|(?!\s*{start}))"
        wrapped = tuple(
            prefix + (r"\s*" + p[1:] if p.startswith("^") else r"[\s\S]*?" + p) for p in patterns
        )
        return GrammarTriggers(wrapped, ())

    def __repr__(self) -> str:
        return f"<ModelFamily {self.name} tools={self.tool_format.name}>"


_CHATML_STOPS = ("<|im_end|>", "<|endoftext|>")
_LLAMA3_STOPS = ("<|eot_id|>", "<|eom_id|>")
_THINK = {"reasoning_start": "<think>", "reasoning_end": "</think>"}
_QWEN_THINKING = {**_THINK, "thinking_switch": "enable_thinking", "template_defaults": {"enable_thinking": True}}
_HERMES_FORMAT = TaggedJsonFormat("hermes", "<tool_call>", "</tool_call>")


def _families() -> dict[str, ModelFamily]:
    deepseek_stops = ("<｜end▁of▁sentence｜>",)
    mistral = {"tool_format": MistralFormat(), "stop_strings": ("</s>",), "call_id_length": 9}
    families = [
        ModelFamily("qwen3", tool_format=_HERMES_FORMAT, stop_strings=_CHATML_STOPS, **_QWEN_THINKING),
        ModelFamily("qwen3.5", tool_format=QwenXmlFormat(), stop_strings=_CHATML_STOPS, **_QWEN_THINKING),
        ModelFamily("qwen3-coder", tool_format=QwenXmlFormat(), stop_strings=_CHATML_STOPS),
        ModelFamily("qwen2.5", tool_format=_HERMES_FORMAT, stop_strings=_CHATML_STOPS),
        ModelFamily("hermes", tool_format=_HERMES_FORMAT, stop_strings=_CHATML_STOPS),
        ModelFamily("smollm", stop_strings=_CHATML_STOPS),
        ModelFamily("smollm3", tool_format=_HERMES_FORMAT, stop_strings=_CHATML_STOPS, **_QWEN_THINKING),
        ModelFamily("llama3", tool_format=Llama3Format(), stop_strings=_LLAMA3_STOPS),
        ModelFamily("mistral", **mistral),
        ModelFamily("devstral", **mistral),
        ModelFamily("magistral", reasoning_start="[THINK]", reasoning_end="[/THINK]", **mistral),
        ModelFamily("gemma", stop_strings=("<end_of_turn>",)),
        ModelFamily(
            "gemma4", reasoning_start="<|channel>thought", reasoning_end="<channel|>",
            tool_format=Gemma4Format(), stop_strings=("<turn|>",),
            thinking_switch="enable_thinking", template_defaults={"enable_thinking": False},
        ),
        ModelFamily("phi3", stop_strings=("<|end|>", "<|endoftext|>")),
        ModelFamily(
            "phi4", tool_format=TaggedJsonFormat("phi4", "<|tool_call|>", "<|/tool_call|>"),
            stop_strings=("<|im_end|>", "<|end|>", "<|endoftext|>"), **_THINK,
        ),
        ModelFamily(
            "gpt-oss", reasoning_start="<|channel|>analysis<|message|>", reasoning_end="<|end|>",
            reasoning_style="harmony", tool_format=HarmonyFormat(), stop_strings=("<|return|>", "<|call|>"),
            thinking_switch="reasoning_effort", thinking_values=("medium", "low"),
            template_defaults={"reasoning_effort": "medium"},
        ),
        ModelFamily(
            "deepseek-r1", tool_format=DeepSeekFormat(), stop_strings=deepseek_stops,
            **_QWEN_THINKING,
        ),
        ModelFamily(
            "deepseek-v3", tool_format=DeepSeekFormat(), stop_strings=deepseek_stops,
            thinking_switch="thinking", **_THINK,
        ),
        ModelFamily(
            "glm4", tool_format=GlmFormat(), stop_strings=("<|user|>", "<|observation|>", "<|endoftext|>"),
            **_QWEN_THINKING,
        ),
        ModelFamily(
            "granite", tool_format=TaggedJsonFormat("granite", "<|tool_call|>"),
            stop_strings=("<|end_of_text|>",), thinking_switch="thinking", **_THINK,
        ),
        ModelFamily("granite4", tool_format=_HERMES_FORMAT, stop_strings=("<|end_of_text|>",)),
        ModelFamily("functionary-v3.1", tool_format=FunctionaryV31Format(), stop_strings=_LLAMA3_STOPS),
        ModelFamily("functionary-v3.2", tool_format=FunctionaryV32Format(), stop_strings=_LLAMA3_STOPS),
        ModelFamily("generic"),
    ]
    return {family.name: family for family in families}


FAMILIES: Mapping[str, ModelFamily] = MappingProxyType(_families())


def get_family(name: str) -> ModelFamily:
    """The family registered under ``name`` (KeyError lists the known names)."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown model family {name!r}; known: {', '.join(sorted(FAMILIES))}") from None


def detect_family(metadata: Mapping[str, Any] | None = None, template: str | None = None) -> ModelFamily:
    """Family of a model from its chat template and GGUF metadata.

    ``template`` defaults to ``metadata["tokenizer.chat_template"]``. Template
    markers win over metadata, since fine-tunes (Hermes on Llama, R1 distilled
    into Qwen) keep the base architecture but talk in their own format.
    """
    metadata = metadata or {}
    if template is None:
        template = _text(metadata.get("tokenizer.chat_template"))
    hints = _Hints.from_metadata(metadata)
    name = (_from_template(template, hints) if template else None) or _from_metadata(hints)
    family = FAMILIES[name]
    if name == "generic" and template:
        family = _generic_for(template)
    return family


@dataclass(frozen=True)
class _Hints:
    arch: str
    model_name: str
    pre: str

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> _Hints:
        return cls(
            arch=_text(metadata.get("general.architecture")).lower(),
            model_name=(
                _text(metadata.get("general.name")) + " " + _text(metadata.get("general.basename"))
            ).lower(),
            pre=_text(metadata.get("tokenizer.ggml.pre")).lower(),
        )


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else ""


def _from_template(t: str, hints: _Hints) -> str | None:
    if "<|channel|>" in t and "<|message|>" in t:
        return "gpt-oss"
    if "<|tool_call>" in t or "<|turn>" in t:
        return "gemma4"
    if "<start_of_turn>" in t:
        return "gemma"
    if "<｜Assistant｜>" in t or "tool▁calls▁begin" in t:
        return "deepseek-r1" if "```json" in t or "deepseek-r1" in hints.model_name else "deepseek-v3"
    if "[INST]" in t or "[TOOL_CALLS]" in t:
        return _mistral_variant(t, hints)
    if ">>>all" in t:
        return "functionary-v3.2"
    if "<function=" in t and "<|start_header_id|>" in t:
        return "functionary-v3.1"
    if "<|start_of_role|>" in t:
        return "granite" if "<|tool_call|>" in t else "granite4"
    if "<arg_key>" in t or "<|observation|>" in t:
        return "glm4"
    if "<|im_sep|>" in t:
        return "phi4"
    if "<|assistant|>" in t and "<|end|>" in t and "<|content|>" not in t:  # not Apriel
        return "phi4" if "<|tool|>" in t or "<|tool_call|>" in t else "phi3"
    if "<|im_start|>" in t:
        return _chatml_variant(t, hints)
    if "<|start_header_id|>" in t:
        return "llama3"
    return None


def _mistral_variant(t: str, hints: _Hints) -> str:
    if "[THINK]" in t or "magistral" in hints.model_name:
        return "magistral"
    if "devstral" in hints.model_name or "Devstral" in t:
        return "devstral"
    return "mistral"


def _chatml_variant(t: str, hints: _Hints) -> str | None:
    thinks = "<think>" in t or "enable_thinking" in t
    if "<function=" in t and "<parameter=" in t:
        return "qwen3.5" if thinks else "qwen3-coder"
    if "SmolLM" in t or "smollm" in hints.model_name or hints.arch == "smollm3":
        return "smollm3" if thinks or hints.arch == "smollm3" else "smollm"
    if "<tool_call>" in t:
        if thinks:
            return "qwen3"
        return "qwen2.5" if "Qwen" in t or hints.arch.startswith("qwen") else "hermes"
    return _from_metadata(hints) if hints.arch else None


_ARCH_FAMILIES = {
    "qwen3": "qwen3", "qwen3moe": "qwen3", "qwen3next": "qwen3", "qwen3vl": "qwen3", "qwen3vlmoe": "qwen3",
    "qwen35": "qwen3.5", "qwen35moe": "qwen3.5",
    "qwen2": "qwen2.5", "qwen2moe": "qwen2.5", "qwen2vl": "qwen2.5",
    "mistral3": "mistral", "mistral4": "mistral",
    "gemma2": "gemma", "gemma3": "gemma", "gemma3n": "gemma", "gemma4": "gemma4",
    "phi3": "phi3", "phimoe": "phi3",
    "gpt-oss": "gpt-oss",
    "deepseek2": "deepseek-v3", "deepseek32": "deepseek-v3", "deepseek4": "deepseek-v3",
    "glm4": "glm4", "glm4moe": "glm4",
    "granite": "granite", "granitemoe": "granite", "granitehybrid": "granite4",
    "smollm3": "smollm3",
}

# general.name fragments that override the architecture (fine-tunes, distills).
_NAME_FAMILIES = (
    ("deepseek-r1", "deepseek-r1"), ("deepseek r1", "deepseek-r1"),
    ("hermes", "hermes"), ("functionary", "functionary-v3.1"),
    ("devstral", "devstral"), ("magistral", "magistral"), ("mistral", "mistral"), ("ministral", "mistral"),
    ("smollm3", "smollm3"), ("smollm", "smollm"), ("phi-4", "phi4"), ("phi4", "phi4"), ("phi 4", "phi4"),
    ("granite-4", "granite4"), ("granite 4", "granite4"),
)


def _from_metadata(hints: _Hints) -> str:
    for fragment, name in _NAME_FAMILIES:
        if fragment in hints.model_name:
            return name
    if hints.pre == "deepseek-r1-qwen":
        return "deepseek-r1"
    if hints.arch in _ARCH_FAMILIES:
        return _ARCH_FAMILIES[hints.arch]
    if hints.arch == "llama":
        return "mistral" if hints.pre == "tekken" else "llama3" if hints.pre in ("llama-bpe", "llama3") else "generic"
    return "generic"


def _generic_for(template: str) -> ModelFamily:
    """Unknown template: keep what its markers reveal (stop strings, <think>)."""
    stops = tuple(s for s in (*_CHATML_STOPS, *_LLAMA3_STOPS, "<end_of_turn>") if s in template)
    extra: dict[str, Any] = dict(_THINK) if "<think>" in template else {}
    return replace(FAMILIES["generic"], stop_strings=stops, **extra)
