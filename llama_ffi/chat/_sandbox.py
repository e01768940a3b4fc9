"""Bounds on what a chat template may cost: time, steps and size.

jinja2's ``ImmutableSandboxedEnvironment`` stops attribute-based escapes but not
denial of service: ``range`` is capped at 100,000 items, yet two nested loops
run 10**10 times, a recursive macro can fan out exponentially, and
``'x' * 10**10`` asks for ten gigabytes. Chat templates come from model files,
so they are untrusted input. This module adds three bounds, all checked from
hooks the sandbox already owns or from the compiled template itself:

* a step budget and a wall-clock deadline, ticked on every loop iteration
  (each ``for`` is rewritten to iterate through a checking wrapper), every
  call (macros included), attribute/item lookup, intercepted operator and
  output chunk;
* a size cap on every string or sequence the template builds: operators,
  ``~`` concatenation, output expressions and the filters/methods that can
  amplify their input (``join``, ``replace``, ``indent``, ``format`` ...) are
  checked *before* they allocate;
* private attributes (``__class__``, ``__globals__``, ``gi_frame`` ...) raise
  at once instead of returning a lazily failing undefined.

Everything here raises :class:`LimitExceeded` or jinja's ``SecurityError``;
``template.py`` maps both (and every other failure) to ``TemplateError``.
The bounds are best effort against memory use inside a single C-level
operation, but every such operation reachable from a template is size-checked.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import math
import re
import time
import types
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment, is_internal_attribute
from jinja2.utils import pass_context
from jinja2.visitor import NodeTransformer

__all__ = ["LimitExceeded", "RenderLimits", "SandboxEnvironment", "active_limits", "checked_filter", "instrument"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class RenderLimits:
    """Per-render bounds for a chat template.

    ``timeout``: wall-clock seconds one render may take.
    ``max_steps``: loop iterations + calls + lookups + operators one render
    may perform (deterministic, unlike the timeout).
    ``max_chars``: longest string (in characters) or sequence (in items) the
    template may build, and the longest prompt it may output.
    """

    timeout: float = 10.0
    max_steps: int = 10_000_000
    max_chars: int = 16_000_000

    def __post_init__(self) -> None:
        for name in ("timeout", "max_steps", "max_chars"):
            if not getattr(self, name) > 0:
                raise ValueError(f"RenderLimits.{name} must be positive")


class LimitExceeded(Exception):
    """A render went over one of its :class:`RenderLimits`."""


class _Budget:
    """Mutable per-render counters; one per render, found via a context var."""

    __slots__ = ("limits", "deadline", "steps")

    def __init__(self, limits: RenderLimits) -> None:
        self.limits = limits
        self.deadline = time.monotonic() + limits.timeout
        self.steps = 0

    def tick(self) -> None:
        self.steps += 1
        if self.steps > self.limits.max_steps:
            raise LimitExceeded(f"template exceeded {self.limits.max_steps} steps")
        # Reading the clock every 64 steps keeps the overhead negligible.
        if not self.steps & 63 and time.monotonic() > self.deadline:
            raise LimitExceeded(f"template exceeded its {self.limits.timeout:g} s time limit")

    def check_size(self, size: int, what: str) -> None:
        if size > self.limits.max_chars:
            raise LimitExceeded(f"template built a {what} over {self.limits.max_chars} items/characters")


# None outside a render: compile-time constant folding runs unchecked, which is
# fine because it only sees literals from the template text.
_ACTIVE: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("llama_ffi_chat_budget", default=None)


@contextmanager
def active_limits(limits: RenderLimits) -> Iterator[_Budget]:
    """Make ``limits`` the bounds of the render running in this context."""
    token = _ACTIVE.set(_Budget(limits))
    try:
        yield _ACTIVE.get()  # type: ignore[misc]
    finally:
        _ACTIVE.reset(token)


def _tick() -> _Budget | None:
    budget = _ACTIVE.get()
    if budget is not None:
        budget.tick()
    return budget


# ---------------------------------------------------------------- size estimates


def text_size(value: Any, limit: int) -> int:
    """Roughly how many characters ``str(value)``/``tojson`` would produce.

    Walks containers iteratively and stops as soon as ``limit`` is passed, so
    a list holding the same huge string a million times costs little to
    reject. Structures of more than ``limit // 16`` nodes count as too large:
    no prompt prints a million-node structure, and the walk stays under ~1 s.
    """
    total, stack, seen, max_nodes = 0, [value], 0, max(limit // 16, 1024)
    while stack:
        item = stack.pop()
        seen += 1
        kind = type(item)
        if kind is str or kind is bytes:
            total += len(item) + 2
        elif kind is int:
            total += max(1, item.bit_length() // 3)
        elif isinstance(item, (list, tuple, set, frozenset)):
            total += 2 + 2 * len(item)
            stack.extend(item)
        elif isinstance(item, Mapping):
            total += 2 + 4 * len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (str, bytes)):
            total += len(item) + 2
        else:
            total += 8
        if total > limit or seen > max_nodes:
            return limit + 1
    return total


def _seq_len(value: Any) -> int | None:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else None


_DIGITS = re.compile(r"\d+")


def _check_format_string(budget: _Budget, fmt: str, args: tuple, kwargs: Mapping) -> None:
    """Reject ``'%999999999s'``/``'{:>999999999}'`` style width amplification."""
    # Any digit run could be a width; a literal like "2024" is far below the cap.
    if any(int(d) > budget.limits.max_chars for d in _DIGITS.findall(fmt)):
        raise LimitExceeded("format string asks for a field wider than the size limit")
    _check_int_args(budget, args, kwargs)
    size = len(fmt) + sum(text_size(v, budget.limits.max_chars) for v in (*args, *kwargs.values()))
    budget.check_size(size, "formatted string")


def _check_int_args(budget: _Budget, args: tuple, kwargs: Mapping) -> None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > budget.limits.max_chars:
            raise LimitExceeded(f"integer argument {value} is over the size limit")


# ------------------------------------------------------ operators and method calls


_MAX_INT_BITS = 1 << 16  # 65536-bit integers: far beyond any template's need


def _check_binop(budget: _Budget, op: str, left: Any, right: Any) -> None:
    if op == "+":
        a, b = _seq_len(left), _seq_len(right)
        if a is not None and b is not None:
            budget.check_size(a + b, "concatenation")
    elif op == "*":
        _check_multiply(budget, left, right)
    elif op == "**":
        _check_power(left, right)
    elif op == "%" and isinstance(left, str):
        args = right if isinstance(right, tuple) else (right,)
        _check_format_string(budget, left, args, {})


def _check_multiply(budget: _Budget, left: Any, right: Any) -> None:
    for seq, count in ((left, right), (right, left)):
        size = _seq_len(seq)
        if size is not None and isinstance(count, int):
            budget.check_size(size * max(count, 0), "repeated sequence")
            return
    if isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > _MAX_INT_BITS:
        raise LimitExceeded("integer product too large")


def _check_power(base: Any, exponent: Any) -> None:
    big = isinstance(base, int) and isinstance(exponent, int) and abs(base) > 1 and exponent > 0
    if big and exponent * math.log2(abs(base)) > _MAX_INT_BITS:
        raise LimitExceeded("integer power too large")


def _method_target(obj: Any) -> tuple[Any, str] | None:
    """``(self, name)`` when ``obj`` is a bound str method (or the sandbox's
    wrapper around ``str.format``), else None."""
    target = getattr(obj, "__wrapped__", obj)
    if isinstance(target, types.BuiltinMethodType) and isinstance(target.__self__, str):
        return target.__self__, target.__name__
    return None


def _check_str_method(budget: _Budget, text: str, name: str, args: tuple, kwargs: Mapping) -> None:
    _check_int_args(budget, args, kwargs)
    if name in ("format", "format_map"):
        values = tuple(args[0].values()) if name == "format_map" and args and isinstance(args[0], Mapping) else args
        _check_format_string(budget, text, values, kwargs)
    elif name == "join" and args:
        _check_join(budget, text, args[0])
    elif name == "replace" and len(args) >= 2:
        _check_replace(budget, text, args[0], args[1])
    elif name == "expandtabs":
        width = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(width, int):
            budget.check_size(len(text) + text.count("\t") * max(width, 0), "expanded string")
    elif name in ("center", "ljust", "rjust", "zfill") and args and isinstance(args[0], int):
        budget.check_size(max(args[0], len(text)), "padded string")


def _check_join(budget: _Budget, sep: Any, items: Any) -> None:
    if isinstance(items, (list, tuple)):
        size = text_size(items, budget.limits.max_chars) + len(str(sep)) * len(items)
        budget.check_size(size, "joined string")


def _check_replace(budget: _Budget, text: Any, old: Any, new: Any) -> None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str):
        hits = len(text) + 1 if old == "" else text.count(old)
        budget.check_size(len(text) + hits * max(len(new) - len(old), 0), "replaced string")


# -------------------------------------------------------------------- filters


def checked_filter(name: str, func: Any) -> Any:
    """Wrap a builtin filter: size-check its arguments before, its result after."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        budget = _tick()
        if budget is None:
            # Compile-time constant folding: `'%999999999s'|format('x')` would
            # otherwise run unchecked. Impossible defers it to render time.
            raise nodes.Impossible()
        _check_filter_args(budget, name, _strip_pass_arg(func, args), kwargs)
        result = func(*args, **kwargs)
        if isinstance(result, (str, list, tuple)):
            budget.check_size(len(result), f"'{name}' result")
        return result

    return wrapper


def _strip_pass_arg(func: Any, args: tuple) -> tuple:
    # pass_context/pass_environment/pass_eval_context filters get jinja's object first.
    return args[1:] if hasattr(func, "jinja_pass_arg") else args


def _check_filter_args(budget: _Budget, name: str, args: tuple, kwargs: Mapping) -> None:
    if not args:
        return
    value, rest = args[0], args[1:]
    _check_int_args(budget, rest, kwargs)
    limit = budget.limits.max_chars
    if name == "join":
        _check_join(budget, rest[0] if rest else kwargs.get("d", ""), value)
    elif name == "replace" and len(rest) >= 2:
        _check_replace(budget, str(value), rest[0], rest[1])
    elif name == "format" and isinstance(value, str):
        _check_format_string(budget, value, rest, kwargs)
    elif name == "indent":
        width = rest[0] if rest else kwargs.get("width", 4)
        pad = len(width) if isinstance(width, str) else (width if isinstance(width, int) else 0)
        lines = str(value).count("\n") + 1
        budget.check_size(len(str(value)) + lines * max(pad, 0), "indented string")
    elif name == "wordwrap":
        wrap = rest[2] if len(rest) > 2 else kwargs.get("wrapstring") or "\n"
        width = rest[0] if rest else kwargs.get("width", 79)
        pieces = len(str(value)) // max(width if isinstance(width, int) else 1, 1) + 1
        budget.check_size(len(str(value)) + pieces * len(str(wrap)), "wrapped string")
    elif name == "sum" and isinstance(value, (list, tuple)):
        budget.check_size(text_size(value, limit), "sum")
    elif name == "tojson":
        # Indentation repeats per element and level; bound it crudely but safely.
        indent = rest[1] if len(rest) > 1 else kwargs.get("indent")
        width = len(indent) if isinstance(indent, str) else (indent if isinstance(indent, int) else 0)
        budget.check_size(text_size(value, limit) * (1 + max(width, 0)), "'tojson' output")
    elif name in ("string", "pprint", "xmlattr", "list", "center"):
        budget.check_size(text_size(value, limit), f"'{name}' input")


# ------------------------------------------------------------ AST instrumentation


_ITER_FILTER = "_llama_ffi_checked_iter"
_CONCAT_FILTER = "_llama_ffi_checked_concat"


@pass_context  # pass_context keeps the optimizer from folding it at compile time
def _checked_iter(_context: Any, iterable: Any) -> Iterator[Any]:
    budget = _ACTIVE.get()
    for item in iterable:
        if budget is not None:
            budget.tick()
        yield item


def _checked_concat(parts: tuple) -> str:
    # Same result as jinja's own ``str_join`` for the ``~`` operator.
    budget = _ACTIVE.get()
    if budget is not None:
        budget.tick()
        budget.check_size(sum(text_size(p, budget.limits.max_chars) for p in parts), "concatenation")
    return "".join(map(str, parts))


class _Instrumenter(NodeTransformer):
    """Route every ``for`` iterable and ``~`` through the checking filters."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, _ITER_FILTER, [], [], None, None, lineno=node.iter.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        parts = nodes.Tuple(node.nodes, "load", lineno=node.lineno)
        return nodes.Filter(parts, _CONCAT_FILTER, [], [], None, None, lineno=node.lineno)


def instrument(tree: nodes.Template) -> nodes.Template:
    """Rewrite a parsed template in place so its loops and concatenations are checked."""
    _Instrumenter().visit(tree)
    return tree


# ----------------------------------------------------------------- environment


def _finalize(value: Any) -> Any:
    budget = _ACTIVE.get()
    if budget is not None:
        size = len(value) if isinstance(value, str) else text_size(value, budget.limits.max_chars)
        budget.check_size(size, "printed value")
    return value


class SandboxEnvironment(ImmutableSandboxedEnvironment):
    """jinja's immutable sandbox with the bounds above wired into its hooks."""

    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=_finalize, **options)
        for name, func in list(self.filters.items()):
            self.filters[name] = checked_filter(name, func)
        self.filters[_ITER_FILTER] = _checked_iter
        self.filters[_CONCAT_FILTER] = _checked_concat

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        budget = _tick()
        if budget is not None:
            method = _method_target(__obj)
            if method is not None:
                _check_str_method(budget, method[0], method[1], args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = _tick()
        if budget is not None:
            _check_binop(budget, operator, left, right)
        return super().call_binop(context, operator, left, right)

    def getattr(self, obj: Any, attribute: str) -> Any:
        _tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _tick()
        return super().getitem(obj, argument)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        # Private and interpreter-internal attributes are only ever reached for
        # by escape attempts: fail now rather than hand back an undefined that
        # `is defined` or `|default` could quietly swallow. Mutating methods
        # (list.append ...) keep jinja's lazy behaviour, as transformers has it.
        if attribute.startswith("_") or is_internal_attribute(obj, attribute):
            raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe")
        return super().unsafe_undefined(obj, attribute)
