"""Per-request options, checked in Python before anything reaches C.

``create_completion(prompt, **options)`` takes llama-cpp-python's keyword names. They are
split here, once, into two typed groups: the sampling fields (a :class:`SamplingParams`,
reusable across calls) and :class:`CompletionOptions` (what to generate and return). No
other signature repeats them. The checks that every request shares (stop lists, logprobs,
max_tokens, logit bias) are module functions here, used by ``Llama`` and ``Engine`` alike.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from ..errors import ValidationError
from .sampling import SamplingParams

__all__ = ["CompletionOptions", "check_logit_bias", "check_logprobs", "check_max_tokens", "check_stop",
           "parse_logit_bias", "split_options"]

MAX_STOP_STRINGS = 128
MAX_STOP_CHARS = 1024
MAX_TOKENS_LIMIT = 1 << 24
MAX_LOGPROBS = 100
TRUNCATE_POLICIES = (None, "error", "left")
_TOKEN_ID = re.compile(r"-?[0-9]{1,10}")

_SAMPLING_FIELDS = frozenset(f.name for f in fields(SamplingParams))
# Accepted for compatibility, with no effect: tail-free sampling left llama.cpp in 2024.
_IGNORED = frozenset({"tfs_z"})


@dataclass(kw_only=True)
class CompletionOptions:
    """What to generate and what to return (sampling lives in :class:`SamplingParams`).

    ``max_tokens``: None, 0 or -1 generate until an end-of-generation token or the end of
    the context. ``stop``: strings and/or token ids. ``cancel``: any object with
    ``is_set()`` (a ``threading.Event``); when set, generation stops and CancelledError is
    raised. ``reset_kv_cache=False`` appends the prompt to what the KV cache holds (a
    continued session) instead of treating it as the whole text (prefix reuse applies then).
    ``truncate``: ``None``/``"error"`` raise ContextOverflowError when the prompt does not
    fit; ``"left"`` drops the oldest prompt tokens (keeping a leading BOS) so that the prompt
    plus room for the answer (``max_tokens``, at most half the context) fits.
    """

    max_tokens: int | None = 16
    suffix: str | None = None
    stop: str | Sequence[str | int] | None = None
    logprobs: int | None = None
    echo: bool = False
    stream: bool = False
    grammar: Any = None
    logits_processor: Any = None
    stopping_criteria: Any = None
    cancel: Any = None
    loras: Mapping[Any, float] | None = None
    reset_kv_cache: bool = True
    truncate: str | None = None
    model: str | None = None
    add_special: bool = True
    parse_special: bool = True  # as llama-cpp-python's create_completion and llama-server

    def validate(self) -> None:
        check_max_tokens(self.max_tokens)
        if self.suffix is not None and not isinstance(self.suffix, str):
            raise ValidationError("suffix must be a string", param="suffix")
        check_logprobs(self.logprobs)
        for name in ("echo", "stream", "reset_kv_cache", "add_special", "parse_special"):
            if not isinstance(getattr(self, name), bool):
                raise ValidationError(f"{name} must be True or False", param=name)
        if self.truncate not in TRUNCATE_POLICIES:
            raise ValidationError(f"truncate must be one of {TRUNCATE_POLICIES}", param="truncate")
        if self.cancel is not None and not callable(getattr(self.cancel, "is_set", None)):
            raise ValidationError("cancel must have an is_set() method (e.g. threading.Event)", param="cancel")
        if self.stopping_criteria is not None and not callable(self.stopping_criteria):
            raise ValidationError("stopping_criteria must be callable(input_ids, logits) -> bool",
                                  param="stopping_criteria")
        if self.model is not None and not isinstance(self.model, str):
            raise ValidationError("model must be a string", param="model")
        self.logits_processor = _processors(self.logits_processor)
        self.loras = _loras(self.loras)


_OPTION_FIELDS = frozenset(f.name for f in fields(CompletionOptions))


def _processors(value) -> tuple[Callable, ...] | None:
    if value is None:
        return None
    procs = (value,) if callable(value) and not isinstance(value, (list, tuple)) else value
    try:
        procs = tuple(procs)
    except TypeError:
        raise ValidationError("logits_processor must be a callable or a list of callables",
                              param="logits_processor") from None
    if not all(callable(p) for p in procs):
        raise ValidationError("logits_processor must be a callable or a list of callables", param="logits_processor")
    return procs or None


def _loras(value) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValidationError("loras must map adapters (from Llama.load_lora) to scales", param="loras")
    out = {}
    for adapter, scale in value.items():
        if not hasattr(adapter, "model") or not hasattr(adapter, "ptr"):
            raise ValidationError("loras keys must be adapters returned by Llama.load_lora", param="loras")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) \
                or abs(scale) > 100:
            raise ValidationError(f"LoRA scale must be a finite number in [-100, 100], got {scale!r}", param="loras")
        out[adapter] = float(scale)
    return out


def split_options(options: Mapping[str, Any], base: SamplingParams) -> tuple[CompletionOptions, SamplingParams]:
    """Route llama-cpp-python style keyword arguments to the two typed groups.

    ``sampling=SamplingParams(...)`` replaces ``base``; loose sampling keywords then
    override its fields. Unknown names raise TypeError, as for any Python call."""
    sampling = options.get("sampling", None) or base
    if not isinstance(sampling, SamplingParams):
        raise ValidationError("sampling must be a SamplingParams", param="sampling")
    changes, opts = {}, {}
    for key, value in options.items():
        if key in _SAMPLING_FIELDS:
            changes[key] = value
        elif key in _OPTION_FIELDS:
            opts[key] = value
        elif key not in _IGNORED and key != "sampling":
            raise TypeError(f"unexpected keyword argument {key!r}")
    if "logit_bias" in changes and changes["logit_bias"] is not None:
        changes["logit_bias"] = parse_logit_bias(changes["logit_bias"])
    params = sampling.updated(**changes)
    params.validate()
    return CompletionOptions(**opts), params


def parse_logit_bias(bias, *, clamp: float | None = None) -> dict[int, float]:
    """Keys may be ints or ASCII digit strings (JSON objects have string keys); ``clamp``
    bounds the values (OpenAI's API takes [-100, 100]; llama-cpp-python allows -inf)."""
    if not isinstance(bias, Mapping):
        raise ValidationError("logit_bias must map token ids to numbers", param="logit_bias")
    out = {}
    for key, value in bias.items():
        if isinstance(key, str) and _TOKEN_ID.fullmatch(key):  # not str.isdigit(): it passes '³'
            token = int(key)
        elif isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            token = int(key)
        else:
            raise ValidationError(f"logit_bias key {key!r} is not a token id", param="logit_bias")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise ValidationError(f"logit_bias[{key!r}] must be a number", param="logit_bias")
        out[token] = float(value) if clamp is None else max(-clamp, min(clamp, float(value)))
    return out


def check_logit_bias(bias: Mapping[int, float] | None, n_vocab: int) -> None:
    for token in bias or ():
        if not 0 <= token < n_vocab:
            raise ValidationError(f"logit_bias token {token} is outside the vocabulary [0, {n_vocab})",
                                  param="logit_bias")


def check_stop(stop, n_vocab: int) -> tuple[tuple[str, ...], frozenset[int]]:
    """(stop strings, stop token ids) from a string, a token id, or a list of them."""
    if stop is None:
        return (), frozenset()
    items = [stop] if isinstance(stop, (str, int)) else stop
    if not isinstance(items, Iterable) or isinstance(items, (bytes, Mapping)):
        raise ValidationError("stop must be a string, a token id, or a list of them", param="stop")
    items = list(items)
    if len(items) > MAX_STOP_STRINGS:
        raise ValidationError(f"at most {MAX_STOP_STRINGS} stop entries, got {len(items)}", param="stop")
    strings, tokens = [], set()
    for item in items:
        if isinstance(item, str):
            if len(item) > MAX_STOP_CHARS:
                raise ValidationError(f"stop strings are limited to {MAX_STOP_CHARS} characters", param="stop")
            if item:
                strings.append(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            if not 0 <= item < n_vocab:
                raise ValidationError(f"stop token {item} is outside the vocabulary [0, {n_vocab})",
                                      param="stop")
            tokens.add(item)
        else:
            raise ValidationError(f"stop entries must be strings or token ids, got {item!r}", param="stop")
    return tuple(dict.fromkeys(strings)), frozenset(tokens)


def check_max_tokens(value) -> None:
    """None, 0 or -1: until an end-of-generation token or the end of the context."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or not -1 <= value <= MAX_TOKENS_LIMIT):
        raise ValidationError(f"max_tokens must be None or an integer in [-1, {MAX_TOKENS_LIMIT}] "
                              f"(0 or -1: until the context ends), got {value!r}", param="max_tokens")


def check_logprobs(value) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LOGPROBS):
        raise ValidationError(f"logprobs must be None or an integer in [0, {MAX_LOGPROBS}], got {value!r}",
                              param="logprobs")
