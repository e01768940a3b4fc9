"""Tool-call grammars in a family's native syntax, switched on lazily at a safe trigger.

``tool_call_grammar(family, tools, ...)`` returns a :class:`ToolGrammarSpec`: GBNF
``text`` and ``root`` in the family's own tool-call syntax, whether it is ``lazy``, and
its trigger patterns and tokens; ``spec.sampler(vocab)`` builds the grammar sampler
(``llama_sampler_init_grammar_lazy_patterns`` when lazy). Because the syntax is the
family's own, the family's parser (``chat.tools.parse_tool_calls``) reads the result.

Modes: ``"required"`` and a named tool are not lazy: the grammar covers the whole answer
(an optional reasoning block for tag-reasoning families, then the call), so a call is
guaranteed. ``"auto"`` is lazy: the model writes freely until it starts a call, and the
call then follows the tools' schemas.

Why the triggers are built here instead of taken from the family's llama.cpp-style
patterns. When a lazy grammar triggers, llama.cpp feeds it the text from the pattern's
capture group up to the end of the token that completed the match; if the grammar rejects
any of that text, llama.cpp throws a C++ exception through the C API and the process
aborts (nothing can turn it into a Python exception). So every pattern here ends with
``$`` and admits after the marker only whitespace and a prefix of the call's fixed opening
(``{"name": "get_weather", "arguments":``): the text that fires it is always text the
grammar accepts, which :func:`tool_call_grammar` checks with the Python matcher before
it returns. A marker glued to other text inside one token does not fire: that call is
unconstrained, and still parsed. The patterns also avoid unbounded repetition, because
libstdc++'s regex recurses once per repeated character and overflows the stack on long
outputs (measured: a ``[\\s\\S]*?`` pattern crashes near 50,000 characters). That rules
out the reasoning-aware patterns of ``ModelFamily.grammar_triggers``, so ``"auto"``
returns None for tag-reasoning families unless the prompt already closed the reasoning
block (``reasoning_done``, e.g. Qwen 3 with thinking switched off).

Covered: tagged JSON (Hermes, Qwen 2.5/3, SmolLM3, Granite, Phi-4), Llama 3, Mistral
(``[TOOL_CALLS]`` with a JSON array or ``name[ARGS]{...}``), DeepSeek R1/V3 and the
generic JSON answer. Functionary, Harmony and the XML-like formats (Qwen 3.5, GLM,
Gemma 4) get None; callers keep the whole-answer JSON grammar for them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from ..grammar import GrammarMatcher, LlamaGrammar, schema_to_gbnf
from .families import ModelFamily
from .markers import regex_escape
from .toolcall_formats import (
    DeepSeekFormat,
    GenericJsonFormat,
    Llama3Format,
    MistralFormat,
    TaggedJsonFormat,
)

__all__ = ["ToolGrammarSpec", "tool_call_grammar"]

_ROOT = "tool-root"
# Whitespace between markers and JSON: bounded, so a small model cannot loop on newlines.
_WS_RULE = "tool-ws ::= [ \\t\\n]{0,3}"
_WS_RE = "[ \\t\\n]{0,3}"  # the regex twin of tool-ws
_LEAD_WS_RE = "\\s{0,8}"  # before a call that opens the answer (bounded: see the module doc)
_FENCE_RE = "(?:```(?:json)?\\n?)?"  # the generic format's optional fence, as its grammar has it
# JSON is written with "bounded" whitespace: what models write (one space, or a newline and
# an indent) and no more. _JSON_WS_RE is the regex twin of that ws rule.
_JSON_WS = "bounded"
_JSON_WS_RE = "(?: |\\n[ \\t]{0,40})?"
_WS_SLOT = None  # in a head's symbols: where the JSON may hold whitespace
_DS_CALLS = ("<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>")
_DS_CALL = ("<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>")


@dataclass(frozen=True)
class ToolGrammarSpec:
    """A tool-call grammar: GBNF ``text`` with start rule ``root``, ``lazy``, ECMAScript
    ``trigger_patterns`` and ``trigger_tokens`` as texts (ids: :meth:`trigger_token_ids`).

    ``text`` and ``root`` make it usable wherever a ``LlamaGrammar`` is read for those two;
    :meth:`sampler` builds the sampler that honours ``lazy`` and the triggers."""

    text: str
    root: str
    lazy: bool
    trigger_patterns: tuple[str, ...] = ()
    trigger_tokens: tuple[str, ...] = ()

    @cached_property
    def grammar(self) -> LlamaGrammar:
        """The text parsed and checked in Python (raises ``GrammarError``), once."""
        return LlamaGrammar(self.text, self.root)

    def trigger_token_ids(self, vocab) -> list[int]:
        """Ids of the trigger texts that are one token in ``vocab``; the others are
        skipped (the patterns still fire on the text)."""
        ids = []
        for text in self.trigger_tokens:
            tokens = vocab.tokenize(text, add_special=False, parse_special=True)
            if len(tokens) == 1:
                ids.append(tokens[0])
        return ids

    def sampler_args(self, vocab) -> dict[str, Any]:
        """Keyword arguments for ``Sampler.grammar(vocab, **spec.sampler_args(vocab))``."""
        return {"grammar": self.grammar.text, "root": self.root, "lazy": self.lazy,
                "trigger_patterns": list(self.trigger_patterns),
                "trigger_tokens": self.trigger_token_ids(vocab)}

    def sampler(self, vocab):
        """The grammar :class:`~llama_ffi.native.Sampler` for ``vocab`` (lazy when ``lazy``)."""
        from ..native.sampler import Sampler

        return Sampler.grammar(vocab, **self.sampler_args(vocab))


@dataclass(frozen=True)
class _Opening:
    """Where a call starts, for the triggers: ``marker`` then optional whitespace, or
    (``marker=None``) the start of the answer; then one of ``heads``, the fixed text every
    call of that shape opens with."""

    marker: str | None
    heads: tuple[tuple[str, ...], ...]  # JSON tokens (whitespace may come between them)
    fence: bool = False


@dataclass(frozen=True)
class _Body:
    gbnf: str
    calls: str  # GBNF for the call, or the calls when parallel
    openings: tuple[_Opening, ...]


def tool_call_grammar(family: ModelFamily, tools: Sequence[Mapping[str, Any]], *,
                      mode: str = "auto", name: str | None = None, reasoning_open: bool = False,
                      reasoning_done: bool = False, parallel: bool = False) -> ToolGrammarSpec | None:
    """The tool-call grammar for ``family`` over ``tools`` (validated OpenAI tools,
    ``chat.tools.validate_tools``), or None when it has none.

    ``mode``: ``"auto"`` (lazy) or ``"required"`` (whole answer); ``name`` restricts
    calls to one tool (implies required). ``reasoning_open``: the prompt opened a
    reasoning block (``reasoning.prompt_opens_reasoning``); ``reasoning_done``: it opened
    and closed one, so the answer holds no reasoning. ``parallel``: allow several calls
    (one call otherwise). Raises ``GrammarError`` for a schema the converter rejects.
    """
    if mode not in ("auto", "required"):
        raise ValueError(f"mode must be 'auto' or 'required', not {mode!r}")
    functions = [t["function"] for t in tools]
    if name is not None:
        functions = [f for f in functions if f["name"] == name]
        if not functions:
            raise ValueError(f"no tool named {name!r}")
        mode = "required"
    if not functions:
        raise ValueError("tool_call_grammar needs at least one tool")
    tag_reasoning = family.reasoning_style == "tags" and family.reasoning_start is not None
    if mode == "auto" and tag_reasoning and not reasoning_done:
        return None  # no trigger can skip a reasoning block safely (module doc)
    body = _body(family.tool_format, functions, parallel)
    if body is None:
        return None
    if mode == "auto":
        patterns, tokens = _triggers(body.openings)
        spec = ToolGrammarSpec(_join(f"{_ROOT} ::= {body.calls}", body.gbnf, _WS_RULE) + "\n", _ROOT, True,
                               patterns, tokens)
        _check_openings(spec, body.openings)
        return spec
    lead = () if reasoning_done else _reasoning_rules(family, reasoning_open)
    root = f"{_ROOT} ::= {lead[0]}tool-ws {body.calls}" if lead else f"{_ROOT} ::= tool-ws {body.calls}"
    spec = ToolGrammarSpec(_join(root, body.gbnf, *lead[1:], _WS_RULE) + "\n", _ROOT, False)
    _ = spec.grammar  # parse now: a bad grammar must fail here, never in C
    return spec


# --- one call in each format ------------------------------------------------------------
def _body(fmt, functions: list[Mapping[str, Any]], parallel: bool) -> _Body | None:
    if isinstance(fmt, TaggedJsonFormat):
        return _tagged(fmt, functions, parallel)
    if isinstance(fmt, Llama3Format):
        return _llama3(functions, parallel)
    if isinstance(fmt, MistralFormat):
        return _mistral(functions, parallel)
    if isinstance(fmt, DeepSeekFormat):
        return _deepseek(functions, parallel)
    if isinstance(fmt, GenericJsonFormat):
        return _generic(functions, parallel)
    return None


def _tagged(fmt: TaggedJsonFormat, functions, parallel: bool) -> _Body:
    """Hermes ``<tool_call>{json}</tool_call>``; Granite 3 ``<|tool_call|>[json, ...]``."""
    call = _call_schema(functions, "arguments")
    heads = _heads(functions, "arguments")
    if fmt.close_tag:
        gbnf, start = _schema_gbnf(call, "tj-")
        rule = f"tool-call ::= {_lit(fmt.open_tag)} tool-ws {start} tool-ws {_lit(fmt.close_tag)}"
        return _Body(_join(gbnf, rule), _repeat("tool-call", parallel), (_Opening(fmt.open_tag, heads),))
    gbnf, start = _schema_gbnf(_list_schema(call, parallel), "tj-")  # a bare opening tag wraps a list
    rule = f"tool-call ::= {_lit(fmt.open_tag)} tool-ws {start}"
    return _Body(_join(gbnf, rule), "tool-call", (_Opening(fmt.open_tag, tuple(("[", *h) for h in heads)),))


def _llama3(functions, parallel: bool) -> _Body:
    """``{"name", "parameters"}``, bare at the start of the answer or after ``<|python_tag|>``."""
    gbnf, start = _schema_gbnf(_call_schema(functions, "parameters"), "tj-")
    rule = f'tool-call ::= ("<|python_tag|>" tool-ws)? {start}'
    calls = '( tool-call ( tool-ws ";"? tool-ws tool-call )* )' if parallel else "tool-call"
    heads = _heads(functions, "parameters")
    return _Body(_join(gbnf, rule), calls, (_Opening("<|python_tag|>", heads), _Opening(None, heads)))


def _generic(functions, parallel: bool) -> _Body:
    """The whole answer is JSON, maybe fenced: a call, a list of calls or ``{"tool_calls": [...]}``."""
    call = _call_schema(functions, "arguments")
    listed = _list_schema(call, parallel)
    schema = {"anyOf": [call, listed, {"type": "object", "properties": {"tool_calls": listed},
                                       "required": ["tool_calls"], "additionalProperties": False}]}
    gbnf, start = _schema_gbnf(schema, "tj-")
    rule = f'tool-call ::= {start} | "```" "json"? "\\n"? {start} tool-ws "```"'
    heads = _heads(functions, "arguments")
    heads = heads + tuple(("[", *h) for h in heads) + tuple(("{", '"tool_calls"', ":", "[", *h) for h in heads)
    return _Body(_join(gbnf, rule), "tool-call", (_Opening(None, heads, fence=True),))


def _mistral(functions, parallel: bool) -> _Body:
    """``[TOOL_CALLS][{"name", "arguments", "id"?}, ...]`` (Nemo) or
    ``[TOOL_CALLS]name[CALL_ID]id[ARGS]{...}`` with ``[CALL_ID]id`` optional (newer models).
    Both are allowed: the model writes the one it was trained on."""
    item = _call_schema(functions, "arguments", optional={"id": {"type": "string", "pattern": "^[a-zA-Z0-9]{9}$"}})
    listed, listed_start = _schema_gbnf(_list_schema(item, parallel), "tj-")
    parts, named = [listed], []
    for i, f in enumerate(functions):
        gbnf, start = _schema_gbnf(f["parameters"], f"ta{i}-")
        parts.append(_join(gbnf, f'tool-m{i} ::= {_lit(f["name"])} ("[CALL_ID]" [a-zA-Z0-9]{{9}})? "[ARGS]" {start}'))
        named.append(f"tool-m{i}")
    rule = f'tool-call ::= "[TOOL_CALLS]" tool-ws ( {listed_start} | {" | ".join(named)} )'
    heads = tuple(("[", *h) for h in _heads(functions, "arguments")) + tuple((f["name"] + "[",) for f in functions)
    return _Body(_join(*parts, rule), _repeat("tool-call", parallel), (_Opening("[TOOL_CALLS]", heads),))


def _deepseek(functions, parallel: bool) -> _Body:
    """Inside ``<｜tool▁calls▁begin｜>...<｜tool▁calls▁end｜>``, each call is
    ``<｜tool▁call▁begin｜>`` + V3's ``NAME<｜tool▁sep｜>{..}`` or R1's
    ``function<｜tool▁sep｜>NAME`` and a fenced JSON block + ``<｜tool▁call▁end｜>``."""
    begin, end, sep = _DS_CALL
    parts, named, heads = [], [], []
    for i, f in enumerate(functions):
        gbnf, start = _schema_gbnf(f["parameters"], f"ta{i}-")
        v3, r1 = f["name"] + sep, f"function{sep}{f['name']}\n```json\n"
        parts.append(_join(gbnf, f'tool-d{i} ::= {_lit(v3)} {start} | {_lit(r1)} {start} "\\n```"'))
        named.append(f"tool-d{i}")
        heads += [(begin + v3,), (begin + r1,)]
    one = f'tool-ds ::= {_lit(begin)} ( {" | ".join(named)} ) {_lit(end)}'
    rule = f"tool-call ::= {_lit(_DS_CALLS[0])} tool-ws {_repeat('tool-ds', parallel)} tool-ws {_lit(_DS_CALLS[1])}"
    return _Body(_join(*parts, one, rule), "tool-call", (_Opening(_DS_CALLS[0], tuple(heads)),))


def _call_schema(functions, args_key: str, optional: Mapping[str, Any] | None = None) -> dict[str, Any]:
    options = [{"type": "object",
                "properties": {"name": {"const": f["name"]}, args_key: f["parameters"], **(optional or {})},
                "required": ["name", args_key], "additionalProperties": False} for f in functions]
    return options[0] if len(options) == 1 else {"anyOf": options}


def _list_schema(item: Mapping[str, Any], parallel: bool) -> dict[str, Any]:
    return {"type": "array", "items": item, "minItems": 1, **({} if parallel else {"maxItems": 1})}


def _heads(functions, args_key: str) -> tuple[tuple[str, ...], ...]:
    """How each call object opens, as JSON tokens."""
    return tuple(("{", '"name"', ":", f'"{f["name"]}"', ",", f'"{args_key}"', ":") for f in functions)


def _repeat(rule: str, parallel: bool) -> str:
    return f"( {rule} ( tool-ws {rule} )* )" if parallel else rule


# --- GBNF helpers -----------------------------------------------------------------------
# A GBNF token: a literal, a character class, a {m,n} bound, a rule name, anything else.
_GBNF_TOKEN = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|\{[0-9,\s]*\}|[A-Za-z0-9-]+|\s+|.', re.DOTALL)


def _schema_gbnf(schema: Mapping[str, Any], prefix: str) -> tuple[str, str]:
    """The schema's GBNF with every rule name prefixed (several schemas then share one
    grammar without clashes, and none clashes with ours), and its start rule."""
    text = schema_to_gbnf(schema, whitespace=_JSON_WS)
    tokens = _GBNF_TOKEN.findall(text)
    renamed = "".join(prefix + t if t[0].isalnum() or t[0] == "-" else t for t in tokens)
    return renamed, prefix + "root"


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
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _join(*parts: str) -> str:
    return "\n".join(p.rstrip("\n") for p in parts if p)


# --- triggers ---------------------------------------------------------------------------
def _triggers(openings: Sequence[_Opening]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(patterns, token texts) that fire only on text the grammar accepts (module doc)."""
    patterns, tokens = [], []
    for opening in openings:
        if opening.marker is not None:
            heads = [_symbols(h) for h in opening.heads]
            patterns.append(f"({regex_escape(opening.marker)}){_WS_RE}{_prefix_regex(heads)}$")
            tokens.append(opening.marker)
            continue
        # At the start of the answer: fire once the first key is written (a lone "{" may
        # open any JSON answer), then allow any prefix of the rest of the head.
        by_key: dict[tuple[str, ...], list[list]] = {}
        for head in opening.heads:
            key = next(i for i, token in enumerate(head) if token.startswith('"')) + 1
            by_key.setdefault(head[:key], []).append([_WS_SLOT, *_symbols(head[key:])])
        options = "|".join(_symbols_regex(_symbols(key)) + _prefix_regex(rests) for key, rests in by_key.items())
        fence = _FENCE_RE if opening.fence else ""
        patterns.append(f"^{_LEAD_WS_RE}({fence}(?:{options}))$")
    return tuple(patterns), tuple(dict.fromkeys(tokens))


def _symbols(tokens: Sequence[str]) -> list:
    """The characters of ``tokens``, with a whitespace slot between every two."""
    out: list = []
    for i, token in enumerate(tokens):
        out.extend(([_WS_SLOT] if i else []) + list(token))
    return out


def _symbols_regex(symbols: Sequence) -> str:
    return "".join(_JSON_WS_RE if s is _WS_SLOT else regex_escape(s) for s in symbols)


def _prefix_regex(sequences: Sequence[Sequence]) -> str:
    """A regex for any prefix (the empty one too) of any of the symbol ``sequences``."""
    trie: dict = {}
    for sequence in sequences:
        node = trie
        for symbol in sequence:
            node = node.setdefault(symbol, {})

    def alternatives(node: dict) -> str:
        parts = [_symbols_regex([symbol]) + (f"(?:{alternatives(sub)})?" if sub else "")
                 for symbol, sub in node.items()]
        return parts[0] if len(parts) == 1 else "(?:" + "|".join(parts) + ")"
    return f"(?:{alternatives(trie)})?" if trie else ""


def _check_openings(spec: ToolGrammarSpec, openings: Sequence[_Opening]) -> None:
    """Every text a trigger can hand over must be a prefix the grammar accepts: one the
    grammar rejects aborts the process inside llama.cpp. Checked for heads written
    compact, with spaces, and with newlines and indents."""
    matcher = GrammarMatcher(spec.grammar.compiled)
    for opening in openings:
        starts = [opening.marker, opening.marker + " \t\n"] if opening.marker is not None else [""]
        if opening.fence:
            starts += ["```", "```json", "```\n", "```json\n"]
        for start in starts:
            for head in opening.heads:
                for ws in ("", " ", "\n  "):
                    text = start + ws.join(head)
                    matcher.reset()
                    if not matcher.feed(text):
                        raise RuntimeError(f"tool grammar rejects its own trigger text {text!r}")
