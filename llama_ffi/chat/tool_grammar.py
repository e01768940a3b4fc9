"""Tool-call grammars in a family's native syntax, switched on lazily at its trigger.

``tool_call_grammar(family, tools, ...)`` returns a :class:`ToolGrammarSpec`: GBNF text
whose root starts *at the trigger* (``<tool_call>`` for Hermes/Qwen, ``{"name":`` for
Llama 3, ...), plus the trigger patterns and tokens. Handed to
``Sampler.grammar(vocab, spec.text, spec.root, lazy=spec.lazy,
trigger_patterns=spec.trigger_patterns, trigger_tokens=spec.trigger_token_ids(vocab))``,
llama.cpp leaves the model free until the trigger appears, then feeds the grammar the
text from the trigger's capture group on. Because the syntax is the family's own, the
family's parser (``chat.tools.parse_tool_calls``) reads the result as usual.

Modes: ``"auto"`` is lazy (the model may answer in prose); ``"required"`` and a named
tool are not lazy: the grammar covers the whole answer (an optional leading reasoning
block for tag-reasoning families, then the call), so a call is guaranteed.

Formats with JSON bodies are covered (tagged JSON: Hermes, Qwen 2.5/3, SmolLM3,
Granite, Phi-4; Llama 3; the generic JSON answer). For the others (Mistral, DeepSeek,
Functionary, Harmony, the XML-like Qwen 3.5/GLM/Gemma 4) ``tool_call_grammar`` returns
None and callers keep the whole-output JSON grammar.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..grammar import LlamaGrammar, schema_to_gbnf
from .families import ModelFamily
from .toolcall_formats import GenericJsonFormat, Llama3Format, TaggedJsonFormat

__all__ = ["ToolGrammarSpec", "tool_call_grammar"]

_ROOT = "tool-root"
# Whitespace between markers and JSON: bounded, so a small model cannot loop on newlines.
_WS_RULE = 'tool-ws ::= [ \\t\\n]{0,3}'


@dataclass(frozen=True)
class ToolGrammarSpec:
    """What ``Sampler.grammar`` takes: GBNF ``text`` with start rule ``root``,
    ``lazy``, ECMAScript ``trigger_patterns`` and ``trigger_tokens`` as texts
    (resolve them with :meth:`trigger_token_ids`)."""

    text: str
    root: str
    lazy: bool
    trigger_patterns: tuple[str, ...] = ()
    trigger_tokens: tuple[str, ...] = ()

    @property
    def grammar(self) -> LlamaGrammar:
        """The text checked in Python (raises ``GrammarError``); cheap enough per request."""
        return LlamaGrammar(self.text, self.root)

    def trigger_token_ids(self, vocab) -> list[int]:
        """Ids of the trigger texts that are one token in ``vocab``; the others are
        skipped (their patterns still fire on the text)."""
        ids = []
        for text in self.trigger_tokens:
            tokens = vocab.tokenize(text, add_special=False, parse_special=True)
            if len(tokens) == 1:
                ids.append(tokens[0])
        return ids

    def sampler_args(self, vocab) -> dict[str, Any]:
        """Keyword arguments for ``Sampler.grammar(vocab, **spec.sampler_args(vocab))``."""
        return {"grammar": self.text, "root": self.root, "lazy": self.lazy,
                "trigger_patterns": list(self.trigger_patterns),
                "trigger_tokens": self.trigger_token_ids(vocab)}


def tool_call_grammar(family: ModelFamily, tools: Sequence[Mapping[str, Any]], *,
                      mode: str = "auto", name: str | None = None,
                      reasoning_open: bool = False, parallel: bool = False) -> ToolGrammarSpec | None:
    """The tool-call grammar for ``family`` over ``tools`` (validated OpenAI tools,
    ``chat.tools.validate_tools``).

    ``mode``: ``"auto"`` (lazy) or ``"required"`` (whole answer); ``name`` restricts
    calls to one tool (implies required). ``reasoning_open``: the prompt already
    opened a reasoning block (``reasoning.prompt_opens_reasoning``). ``parallel``:
    allow several calls in a row. None when the family's format is not covered.
    """
    if mode not in ("auto", "required"):
        raise ValueError(f"mode must be 'auto' or 'required', not {mode!r}")
    fmt = family.tool_format
    functions = [t["function"] for t in tools]
    if name is not None:
        functions = [f for f in functions if f["name"] == name]
        if not functions:
            raise ValueError(f"no tool named {name!r}")
        mode = "required"
    if not functions:
        raise ValueError("tool_call_grammar needs at least one tool")
    body = _body(fmt, functions)
    if body is None:
        return None
    gbnf, call_rule = body
    calls = f"{call_rule} (tool-ws {call_rule})*" if parallel else call_rule
    if mode == "auto":
        triggers = family.grammar_triggers(reasoning_open=reasoning_open)
        root = f"{_ROOT} ::= {calls}"
        return ToolGrammarSpec(_join(root, gbnf, _WS_RULE) + "\n", _ROOT, True, triggers.patterns, triggers.tokens)
    lead = _reasoning_rules(family, reasoning_open)
    root = f"{_ROOT} ::= {lead[0]}tool-ws {calls}" if lead else f"{_ROOT} ::= tool-ws {calls}"
    return ToolGrammarSpec(_join(root, gbnf, *lead[1:], _WS_RULE) + "\n", _ROOT, False)


def _body(fmt, functions: list[Mapping[str, Any]]) -> tuple[str, str] | None:
    """GBNF of one call in the format's syntax, and the name of the rule that holds it."""
    if isinstance(fmt, TaggedJsonFormat):
        call = _call_schema(functions, "arguments")
        # A closing tag wraps one object; a bare opening tag (Granite 3) a list.
        schema = call if fmt.close_tag else {"type": "array", "items": call, "minItems": 1}
        close = f" tool-ws {_lit(fmt.close_tag)}" if fmt.close_tag else ""
        rule = f"tool-call ::= {_lit(fmt.open_tag)} tool-ws tool-json{close}"
        return _join(_schema_gbnf(schema), rule), "tool-call"
    if isinstance(fmt, Llama3Format):
        schema = _call_schema(functions, "parameters")
        rule = 'tool-call ::= ("<|python_tag|>" tool-ws)? tool-json'
        return _join(_schema_gbnf(schema), rule), "tool-call"
    if isinstance(fmt, GenericJsonFormat):
        call = _call_schema(functions, "arguments")
        listed = {"type": "array", "items": call, "minItems": 1}
        schema = {"anyOf": [call, listed, {"type": "object", "properties": {"tool_calls": listed},
                                           "required": ["tool_calls"], "additionalProperties": False}]}
        rule = 'tool-call ::= tool-json | "```" "json"? "\\n"? tool-json tool-ws "```"'
        return _join(_schema_gbnf(schema), rule), "tool-call"
    return None


def _call_schema(functions: list[Mapping[str, Any]], args_key: str) -> dict[str, Any]:
    options = [{"type": "object", "properties": {"name": {"const": f["name"]}, args_key: f["parameters"]},
                "required": ["name", args_key], "additionalProperties": False} for f in functions]
    return options[0] if len(options) == 1 else {"anyOf": options}


def _schema_gbnf(schema: Mapping[str, Any]) -> str:
    """The schema's GBNF with its start rule renamed ``tool-json`` (our root is ``tool-root``)."""
    text = schema_to_gbnf(schema, whitespace="compact")
    return "\n".join("tool-json ::=" + line[len("root ::="):] if line.startswith("root ::=") else line
                     for line in text.splitlines())


def _reasoning_rules(family: ModelFamily, reasoning_open: bool) -> tuple[str, ...]:
    """(prefix for the root, rules): an optional reasoning block before a forced call.

    The block's text may hold any character but cannot contain ``</``, an
    approximation that keeps the grammar small and the closing marker reachable.
    """
    if family.reasoning_style != "tags" or family.reasoning_start is None:
        return ()
    text_rule = 'tool-think ::= ( [^<] | "<" [^/] )*'
    end = _lit(family.reasoning_end or "")
    if reasoning_open:
        return (f"tool-think {end} ", text_rule)
    return (f"(tool-ws {_lit(family.reasoning_start)} tool-think {end})? ", text_rule)


def _lit(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _join(*parts: str) -> str:
    return "\n".join(p.rstrip("\n") for p in parts if p)
