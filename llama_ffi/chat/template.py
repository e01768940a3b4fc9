"""Render Hugging Face style chat templates, sandboxed and bounded.

A chat template is a Jinja2 program shipped inside a model file
(``tokenizer.chat_template``); it is untrusted input. llama-cpp-python once
rendered it in an unsandboxed environment and a GGUF could run code
(CVE-2024-34359). Here every template runs in jinja2's immutable sandbox, with
bounds on time, steps and size (see ``_sandbox``), and any failure at all
comes out as :class:`~llama_ffi.errors.TemplateError`.

The environment reproduces the one ``transformers`` renders with
(``transformers.utils.chat_template_utils``): ``trim_blocks``/``lstrip_blocks``,
the ``loopcontrols`` extension, a ``{% generation %}`` tag, the
``raise_exception``/``strftime_now``/``dict``/``namespace`` globals, its
``tojson`` filter, and the same preparation of inputs (plain JSON-like data,
reasoning fields aliased). The test suite checks the output against
transformers itself.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import traceback
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
import jinja2.meta
from jinja2 import nodes
from jinja2.exceptions import SecurityError

from ..errors import TemplateError
from ._sandbox import LimitExceeded, RenderLimits, SandboxEnvironment, active_limits, checked_filter, instrument

__all__ = ["ChatTemplate", "RenderLimits", "reconcile_bos", "render_chat"]

Message = Mapping[str, Any]


class _TemplateRaised(Exception):
    """raise_exception() was called by the template itself."""


# ------------------------------------------------------- transformers globals


def _raise_exception(message: Any) -> None:
    raise _TemplateRaised(str(message))


def _strftime_now(format: str) -> str:  # noqa: A002 - the name templates call it with
    return datetime.now().strftime(format)


def _tojson(
    value: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None, sort_keys: bool = False
) -> str:
    # Jinja's own tojson HTML-escapes <, >, & and ' and sorts keys; chat
    # templates expect plain json.dumps, which is what transformers provides.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


class _DictBuilder:
    """The ``dict`` global: builds dicts but exposes nothing of the type."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return dict.fromkeys(*args, **kwargs)


class _Namespace(jinja2.utils.Namespace):
    """``namespace()`` that refuses underscore names, so a template cannot
    shadow the internals jinja's Namespace keeps in its attributes."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # noqa: N805 - jinja's signature trick
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _Namespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _Namespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise SecurityError(f"namespace attribute {name!r} may not start with an underscore")


class _GenerationTag(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}`` marks assistant output for
    training masks in transformers; for inference it just renders its body."""

    tags = {"generation"}

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Any) -> str:
        return caller()


def _safe_lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002
    # jinja's default global, kept for compatibility, but bounded.
    if not (0 <= n <= 100 and 0 <= min <= max <= 1000):
        raise SecurityError("lipsum() arguments over the template limits")
    return jinja2.utils.generate_lorem_ipsum(n=n, html=html, min=min, max=max)


@functools.cache
def _environment() -> SandboxEnvironment:
    # Built on first use, never at import. One environment serves every
    # template: all per-render state lives in the budget context variable.
    env = SandboxEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_GenerationTag, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = checked_filter("tojson", _tojson)
    env.globals.update(
        raise_exception=_raise_exception,
        strftime_now=_strftime_now,
        dict=_DictBuilder(),
        namespace=_Namespace,
        lipsum=_safe_lipsum,
    )
    return env


# ------------------------------------------------------------ input handling


def _plain(value: Any) -> Any:
    """Rebuild inputs from plain JSON-like types, as transformers does, so the
    template never sees an object with methods the sandbox does not know."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return _plain_object(value)


def _plain_object(value: Any) -> Any:
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        return _plain(value.item())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if callable(getattr(value, "model_dump", None)):  # pydantic models
        return _plain(value.model_dump())
    return f"<{type(value).__name__}>"


_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


def _alias_reasoning(message: dict) -> dict:
    # Templates read reasoning as `reasoning_content` (Qwen, DeepSeek ...) or
    # `thinking` (gpt-oss); callers send either, or `reasoning`. Same key
    # order as transformers, since some templates dump whole messages.
    reasoning = next((message[k] for k in _REASONING_FIELDS if message.get(k) is not None), None)
    if reasoning is None:
        return message
    return {"thinking": reasoning, **message, "reasoning_content": reasoning}


def _prepare_messages(messages: Any) -> list[dict]:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise TemplateError("messages must be a list of message dicts", param="messages")
    prepared = []
    for index, message in enumerate(_plain(list(messages))):
        if not isinstance(message, dict):
            raise TemplateError(f"messages[{index}] is not a dict: {message!r}", param="messages")
        prepared.append(_alias_reasoning(message))
    return prepared


def _prepare_list(value: Any, param: str) -> list | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise TemplateError(f"{param} must be a list of dicts", param=param)
    items = _plain(list(value))
    if not all(isinstance(item, dict) for item in items):
        raise TemplateError(f"every item of {param} must be a dict (a JSON schema for tools)", param=param)
    return items


# -------------------------------------------------------------------- errors


def _template_line(exc: BaseException) -> int | None:
    # jinja rewrites tracebacks so template frames carry template line numbers.
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == "<template>":
            line = frame.lineno
    return line


def _render_error(exc: Exception) -> TemplateError:
    if isinstance(exc, _TemplateRaised):
        return TemplateError(str(exc))  # the template's own message, verbatim
    if isinstance(exc, LimitExceeded):
        return TemplateError(f"chat template stopped: {exc}")
    if isinstance(exc, SecurityError):
        return TemplateError(f"chat template refused by the sandbox: {exc}")
    if isinstance(exc, RecursionError):
        return TemplateError("chat template recursed too deeply")
    if isinstance(exc, MemoryError):
        return TemplateError("chat template ran out of memory")
    line = _template_line(exc)
    where = f" at line {line}" if line else ""
    return TemplateError(f"chat template failed{where}: {type(exc).__name__}: {exc}")


# ------------------------------------------------------------------ the API


class ChatTemplate:
    """A chat template compiled once, rendered many times.

    ``bos_token``/``eos_token`` are the model's token texts, used when a
    render does not pass its own. ``limits`` bounds each render.
    """

    _template: jinja2.Template | None = None

    def __init__(
        self, source: str, *, bos_token: str = "", eos_token: str = "", limits: RenderLimits | None = None
    ) -> None:
        if not isinstance(source, str):
            raise TemplateError("a chat template must be a str", param="template")
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.limits = limits or RenderLimits()
        env = _environment()
        try:
            tree = env.parse(source)
            self.variables = frozenset(jinja2.meta.find_undeclared_variables(tree))
            self._template = env.from_string(instrument(tree))
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"chat template syntax error at line {exc.lineno}: {exc.message}") from exc
        except Exception as exc:  # a template's text must never crash the caller
            raise TemplateError(f"chat template could not be compiled: {exc}") from exc

    def render(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        documents: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = True,
        bos_token: str | None = None,
        eos_token: str | None = None,
        **variables: Any,
    ) -> str:
        """Render a conversation to prompt text; raises only TemplateError."""
        context = {
            **_plain(variables),
            "messages": _prepare_messages(messages),
            "tools": _prepare_list(tools, "tools"),
            "documents": _prepare_list(documents, "documents"),
            "add_generation_prompt": bool(add_generation_prompt),
            "bos_token": self.bos_token if bos_token is None else bos_token,
            "eos_token": self.eos_token if eos_token is None else eos_token,
        }
        try:
            return self._generate(context)
        except TemplateError:
            raise
        except Exception as exc:
            raise _render_error(exc) from exc

    def _generate(self, context: dict) -> str:
        assert self._template is not None
        chunks: list[str] = []
        with active_limits(self.limits) as budget:
            size = 0
            for chunk in self._template.generate(context):
                size += len(chunk)
                budget.check_size(size, "prompt")
                budget.tick()
                chunks.append(chunk)
        return "".join(chunks)

    def __repr__(self) -> str:
        first = self.source.strip().splitlines()[0] if self.source.strip() else ""
        preview = first[:40] + ("..." if len(first) > 40 or "\n" in self.source.strip() else "")
        return f"<ChatTemplate {len(self.source)} chars: {preview!r}>"


@functools.lru_cache(maxsize=32)
def _cached_template(source: str) -> ChatTemplate:
    return ChatTemplate(source)


def render_chat(
    template: str | ChatTemplate,
    messages: Sequence[Message],
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    documents: Sequence[Mapping[str, Any]] | None = None,
    add_generation_prompt: bool = True,
    bos_token: str = "",
    eos_token: str = "",
    **variables: Any,
) -> str:
    """Render ``messages`` with a Jinja chat template, as transformers would.

    ``template`` is the template text (compiled templates are cached) or a
    :class:`ChatTemplate`. Extra keyword arguments become template variables
    (``enable_thinking=False``, ``date_string=...``). Raises TemplateError
    for anything that goes wrong, including the template's own
    ``raise_exception(...)``, sandbox violations and exceeded limits.
    """
    if isinstance(template, ChatTemplate):
        compiled = template
    elif isinstance(template, str):
        compiled = _cached_template(template)
    else:
        raise TemplateError("template must be a str or a ChatTemplate", param="template")
    return compiled.render(
        messages,
        tools=tools,
        documents=documents,
        add_generation_prompt=add_generation_prompt,
        bos_token=bos_token,
        eos_token=eos_token,
        **variables,
    )


def reconcile_bos(text: str, *, bos_token: str | None, add_bos: bool) -> tuple[str, bool]:
    """Return ``(text, add_bos)`` such that the prompt gets exactly one BOS.

    Many templates write ``{{ bos_token }}`` themselves while the tokenizer
    also adds BOS (``tokenizer.ggml.add_bos_token``): tokenizing both gives
    two BOS tokens, which degrades output. Leading copies of ``bos_token`` in
    ``text`` are removed when the tokenizer will add one, and reduced to one
    when it will not. Nothing changes when the model has no BOS text.
    """
    if not bos_token or not text.startswith(bos_token):
        return text, add_bos
    rest = text
    while rest.startswith(bos_token):
        rest = rest[len(bos_token) :]
    return (rest, True) if add_bos else (bos_token + rest, False)
