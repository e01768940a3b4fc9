"""``GenerationSpec``: one request, validated and tokenized once, whoever runs it.

``Llama`` (one sequence) and ``Engine`` (many) both start from :func:`prepare`, so the same
prompt tokenizes the same way, the same stop list is accepted or refused with the same
message, and the same ``max_tokens`` means the same budget on both paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import ValidationError
from .options import check_logit_bias, check_logprobs, check_max_tokens, check_stop
from .sampling import SamplingParams

__all__ = ["GenerationSpec", "budget", "common_prefix", "prepare", "prompt_tokens"]


@dataclass(kw_only=True, eq=False)
class GenerationSpec:
    """What to generate: checked, tokenized, ready for a driver."""

    prompt: list[int]
    prompt_text: str | None = None  # the prompt as given, when it was text (for echo)
    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_tokens: int | None = 16  # None, 0, -1: to the end of the context
    stop: tuple[str, ...] = ()
    stop_tokens: frozenset[int] = frozenset()  # besides the model's end-of-generation tokens
    grammar: object = None  # see chains.grammar_sampler
    logprobs: int | None = None  # top alternatives per token; None: no logprobs


def prepare(vocab, prompt, *, sampling: SamplingParams | None = None, max_tokens: int | None = 16,
            stop=None, grammar=None, logprobs: int | None = None, add_special: bool = True,
            parse_special: bool = True, suffix: str | None = None) -> GenerationSpec:
    """Check every field and tokenize; no C state is touched (safe before taking a lock)."""
    sampling = sampling or SamplingParams()
    sampling.validate()
    check_logit_bias(sampling.logit_bias, vocab.n_tokens)
    check_max_tokens(max_tokens)
    check_logprobs(logprobs)
    strings, tokens = check_stop(stop, vocab.n_tokens)
    ids, text = prompt_tokens(vocab, prompt, add_special=add_special, parse_special=parse_special, suffix=suffix)
    return GenerationSpec(prompt=ids, prompt_text=text, sampling=sampling, max_tokens=max_tokens, stop=strings,
                          stop_tokens=tokens, grammar=grammar, logprobs=logprobs)


def budget(max_tokens: int | None, room: int) -> int:
    """Tokens a request may generate when ``room`` cells are left in its sequence."""
    return room if not max_tokens or max_tokens <= 0 else min(max_tokens, room)


def common_prefix(a, b) -> int:
    """How many leading tokens two token sequences share (prefix reuse on both drivers)."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(diff[0]) if diff.size else n


def prompt_tokens(vocab, prompt, *, add_special: bool = True, parse_special: bool = True,
                  suffix: str | None = None) -> tuple[list[int], str | None]:
    """(token ids, the text they came from or None). Special-token text is parsed by default,
    as llama-cpp-python and llama-server do; an empty prompt becomes BOS (as there too)."""
    if isinstance(prompt, (bytes, bytearray)):
        try:
            prompt = bytes(prompt).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValidationError(f"prompt bytes are not valid UTF-8: {exc}", param="prompt") from None
    if isinstance(prompt, str):
        if suffix is not None:
            if not isinstance(suffix, str):
                raise ValidationError("suffix must be a string", param="suffix")
            tokens = _infill_tokens(vocab, prompt, suffix)
        else:
            tokens = vocab.tokenize(prompt, add_special=add_special, parse_special=parse_special)
        text: str | None = prompt
    elif isinstance(prompt, (list, tuple, np.ndarray)):
        if suffix is not None:
            raise ValidationError("suffix needs a text prompt", param="suffix")
        if not _all_ints(prompt):
            raise ValidationError("a token prompt must hold integers only", param="prompt")
        tokens = vocab.check_tokens(prompt).tolist()
        text = None
    else:
        raise ValidationError("prompt must be a string or a list of token ids", param="prompt")
    if not tokens:
        if vocab.bos is None:
            raise ValidationError("the prompt is empty and the model has no BOS token", param="prompt")
        tokens = [vocab.bos]
    return list(tokens), text


def _infill_tokens(vocab, prefix: str, suffix: str) -> list[int]:
    pre, suf, mid = vocab.fim("pre"), vocab.fim("suf"), vocab.fim("mid")
    if None in (pre, suf, mid):
        raise ValidationError("suffix (fill-in-the-middle) needs a model with FIM tokens", param="suffix")
    head = [vocab.bos] if vocab.add_bos and vocab.bos is not None else []
    return head + [pre, *vocab.tokenize(prefix, add_special=False), suf, *vocab.tokenize(suffix, add_special=False), mid]


def _all_ints(values: Sequence) -> bool:
    if isinstance(values, np.ndarray):
        return values.dtype.kind in "iu"
    return all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values)
