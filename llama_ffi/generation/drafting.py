"""Drafters for speculative decoding: cheap guesses at the next tokens, checked by the target.

A drafter proposes up to ``n_max`` tokens that might follow ``history`` (the prompt and the
output so far, ending with the token about to be decoded). The driver decodes the token and
the drafts in one batch and keeps the drafts the target model itself samples (see
``native/loop.py``, ``TokenLoop.run_speculative``). Every drafter here is deterministic: a
draft is a point mass, so sampling the target row by row and stopping at the first
disagreement gives exactly the target's distribution, whatever the sampler chain.

- :class:`PromptLookupDrafter`: n-gram lookup in the history (no model; good when the output
  quotes the input: code edits, summaries with quotes, lists repeated back);
- :class:`DraftModelDrafter`: a small GGUF with the same vocabulary, drafting greedily;
- :class:`LlamaDraftModel` / :class:`LlamaPromptLookupDecoding`: llama-cpp-python's names
  (``llama_cpp.llama_speculative``); any ``LlamaDraftModel`` subclass works through
  :func:`as_drafter`.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ValidationError

__all__ = ["CallableDrafter", "DraftModelDrafter", "Drafter", "LlamaDraftModel", "LlamaPromptLookupDecoding",
           "PromptLookupDrafter", "SpeculativeOptions", "as_drafter", "check_same_vocab"]


class Drafter:
    """The interface the drivers use. ``reset()`` runs at the start of every call; ``n_max``
    caps the drafts of one step."""

    n_max: int = 16

    def draft(self, history: Sequence[int], n_max: int) -> list[int]:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget per-call state (the history of the next call may be unrelated)."""

    def close(self) -> None:
        """Free native resources, if any."""


class PromptLookupDrafter(Drafter):
    """Copy what followed the newest earlier occurrence of the history's last n-gram.

    The longest suffix n-gram (``max_ngram_size`` tokens, down to 1) that occurred before
    wins; its newest occurrence gives up to ``num_pred_tokens`` tokens. An index from each
    n-gram to the position after its newest occurrence is extended with the tokens added
    since the last call, so a step costs O(new tokens), not O(history)."""

    def __init__(self, max_ngram_size: int = 2, num_pred_tokens: int = 10) -> None:
        for name, value in (("max_ngram_size", max_ngram_size), ("num_pred_tokens", num_pred_tokens)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 64:
                raise ValidationError(f"{name} must be an integer in [1, 64]", param=name)
        self.max_ngram_size = max_ngram_size
        self.num_pred_tokens = num_pred_tokens
        self.n_max = num_pred_tokens
        self.reset()

    def reset(self) -> None:
        self._tokens: list[int] = []
        self._index: dict[tuple[int, ...], int] = {}

    def _sync(self, history: Sequence[int]) -> None:
        """Bring the index up to ``history``; rebuild when it is not an extension of the last one.
        (Checked at the ends only: within one call the driver only ever appends.)"""
        known = self._tokens
        if len(history) < len(known) or (known and (history[len(known) - 1] != known[-1] or history[0] != known[0])):
            self.reset()
            known = self._tokens
        start = len(known)
        known.extend(int(t) for t in history[start:])
        index, n_max = self._index, self.max_ngram_size
        # An n-gram ending just before position e maps to e, the token that followed it. The
        # history's own last n-grams get no entry until a token follows them.
        for end in range(max(start, 1), len(known)):
            for n in range(1, min(n_max, end) + 1):
                index[tuple(known[end - n: end])] = end

    def draft(self, history: Sequence[int], n_max: int) -> list[int]:
        n_max = min(n_max, self.num_pred_tokens)
        if n_max <= 0 or len(history) == 0:
            return []
        self._sync(history)
        known, index = self._tokens, self._index
        for n in range(min(self.max_ngram_size, len(known)), 0, -1):
            end = index.get(tuple(known[len(known) - n:]))
            if end is not None:
                return known[end: end + n_max]
        return []


class LlamaDraftModel(abc.ABC):
    """llama-cpp-python's base class for draft models: ``__call__(input_ids) -> draft ids``."""

    @abc.abstractmethod
    def __call__(self, input_ids: np.ndarray, /, **kwargs: Any) -> np.ndarray:
        raise NotImplementedError


class LlamaPromptLookupDecoding(LlamaDraftModel, PromptLookupDrafter):
    """llama-cpp-python's prompt-lookup draft model (same arguments), usable as
    ``Llama(draft_model=LlamaPromptLookupDecoding(num_pred_tokens=10))``."""

    def __init__(self, max_ngram_size: int = 2, num_pred_tokens: int = 10) -> None:
        PromptLookupDrafter.__init__(self, max_ngram_size=max_ngram_size, num_pred_tokens=num_pred_tokens)

    def __call__(self, input_ids: np.ndarray, /, **kwargs: Any) -> np.ndarray:
        return np.asarray(self.draft(np.asarray(input_ids).tolist(), self.num_pred_tokens), dtype=np.intc)


class CallableDrafter(Drafter):
    """Adapts a llama-cpp-python ``LlamaDraftModel`` (or any ``f(input_ids) -> ids``)."""

    def __init__(self, model) -> None:
        self.model = model

    def draft(self, history: Sequence[int], n_max: int) -> list[int]:
        if n_max <= 0:
            return []
        out = self.model(np.asarray(history, dtype=np.intc))
        if out is None:
            return []
        ids = np.asarray(out).reshape(-1)[:n_max]
        if ids.size and ids.dtype.kind not in "iu":
            raise ValidationError(f"a draft model must return integer token ids, not {ids.dtype}",
                                  param="draft_model")
        return ids.tolist()  # ids outside the vocabulary end the draft (the driver checks them)


def check_same_vocab(target_vocab, draft_vocab, *, what: str = "draft model") -> None:
    """Refuse a draft whose tokens would mean something else to the target: same size, same
    special tokens, same text for a spread of ids (as llama.cpp's speculative example)."""
    def refuse(why: str):
        raise ValidationError(f"the {what}'s vocabulary does not match the target model's: {why}",
                              param="draft_model")

    n = target_vocab.n_tokens
    if draft_vocab.n_tokens != n:
        refuse(f"{draft_vocab.n_tokens} tokens vs {n}")
    for name in ("bos", "eos", "eot"):
        if getattr(draft_vocab, name) != getattr(target_vocab, name):
            refuse(f"special token {name} is {getattr(draft_vocab, name)} vs {getattr(target_vocab, name)}")
    step = max(1, n // 512)
    for token in list(range(0, n, step)) + [n - 1]:
        if draft_vocab.token_to_piece(token) != target_vocab.token_to_piece(token):
            refuse(f"token {token} is {draft_vocab.token_to_piece(token)!r} "
                   f"vs {target_vocab.token_to_piece(token)!r}")


class DraftModelDrafter(Drafter):
    """A small model with the target's vocabulary, drafting greedily on its own context.

    ``model``: a GGUF path (its vocabulary is checked before the weights load) or a loaded
    native ``Model``; ``target_vocab`` is checked against it when given. Its KV cache follows
    the history: what the last call left beyond the common prefix (rejected drafts) is
    removed with ``memory_seq_rm`` before the next draft."""

    _context = None
    _model = None
    _owns_model = False

    def __init__(self, model, *, target_vocab=None, n_max: int = 8, n_ctx: int = 4096, n_gpu_layers: int = 0,
                 n_threads: int | None = None) -> None:
        if isinstance(n_max, bool) or not isinstance(n_max, int) or not 1 <= n_max <= 64:
            raise ValidationError("n_max must be an integer in [1, 64]", param="n_max")
        self.n_max = n_max
        from ..native import Batch, Context, ContextParams, Model, ModelParams, Sampler, SamplerChain

        if isinstance(model, (str, os.PathLike)):
            if not os.path.exists(model):
                raise ValidationError(f"draft model path does not exist: {model}", param="draft_model")
            if target_vocab is not None:
                with Model(model, ModelParams(vocab_only=True)) as vocab_model:
                    check_same_vocab(target_vocab, vocab_model.vocab)
            model = Model(model, ModelParams(n_gpu_layers=n_gpu_layers))
            self._owns_model = True
        elif target_vocab is not None:
            check_same_vocab(target_vocab, model.vocab)
        self._model = model
        try:
            self._context = Context(model, ContextParams(n_ctx=n_ctx, n_batch=min(n_ctx, 512),
                                                         n_threads=n_threads, n_threads_batch=n_threads))
            self._greedy = SamplerChain([Sampler.greedy()])
        except BaseException:
            self.close()
            raise
        self._cache: list[int] = []  # tokens the draft KV cache holds
        self._prefill = Batch(self._context.n_batch)
        self._step = Batch(1)

    def close(self) -> None:
        if self._context is not None:
            self._context.close()
            self._context = None
        if self._owns_model and self._model is not None:
            self._model.close()
        self._model = None

    def reset(self) -> None:
        """Nothing to forget: the KV cache is matched against each history (prefix reuse)."""

    def _catch_up(self, history: Sequence[int]) -> None:
        """Make the draft KV hold ``history`` with logits for its last token."""
        ctx, cache = self._context, self._cache
        keep = 0
        limit = min(len(cache), len(history) - 1)  # the last token is decoded again for its logits
        while keep < limit and cache[keep] == history[keep]:
            keep += 1
        if keep < len(cache) and not ctx.memory_seq_rm(0, keep, -1):
            ctx.memory_clear()
            keep = 0
        del cache[keep:]
        batch = self._prefill
        for at in range(keep, len(history), ctx.n_batch):
            chunk = history[at: at + ctx.n_batch]
            batch.clear()
            batch.add(chunk, at, 0, logits="last")
            ctx.decode(batch)
        cache.extend(int(t) for t in history[keep:])

    def draft(self, history: Sequence[int], n_max: int) -> list[int]:
        ctx = self._context
        if ctx is None:
            raise ValidationError("the draft model is closed", param="draft_model")
        n_max = min(n_max, ctx.n_ctx_seq - len(history))  # the draft context is full: no drafts
        if n_max <= 0 or len(history) == 0:
            return []
        self._catch_up(history)
        out: list[int] = []
        step = self._step
        for _ in range(n_max):
            token = self._greedy.sample(ctx, -1)
            out.append(token)
            if len(out) == n_max:
                break
            step.clear()
            step.add([token], len(self._cache), 0, logits="last")
            ctx.decode(step)
            self._cache.append(token)
        return out


def as_drafter(draft_model, *, target_vocab=None, **draft_params) -> Drafter | None:
    """A :class:`Drafter` for what ``Llama(draft_model=...)`` accepts: None, a Drafter, a
    ``LlamaDraftModel`` (or callable), or the path of a draft GGUF."""
    if draft_model is None or isinstance(draft_model, Drafter):
        if isinstance(draft_model, DraftModelDrafter) and target_vocab is not None:
            check_same_vocab(target_vocab, draft_model._model.vocab)
        return draft_model
    if isinstance(draft_model, (str, os.PathLike)):
        return DraftModelDrafter(draft_model, target_vocab=target_vocab, **draft_params)
    if callable(draft_model):
        return CallableDrafter(draft_model)
    raise ValidationError("draft_model must be a GGUF path, a Drafter or a LlamaDraftModel", param="draft_model")


@dataclass(kw_only=True)
class SpeculativeOptions:
    """One engine request's speculation (llama-server's ``speculative.n_max``/``n_min``).

    ``n_max``: drafts per step at most; ``n_min``: fewer drafts than this are not tried;
    ``ngram_size``: the prompt-lookup n-gram (the engine drafts by prompt lookup only: a draft
    model would need a context of its own for every sequence)."""

    n_max: int = 16
    n_min: int = 0
    ngram_size: int = 2

    def validate(self) -> None:
        for name, low, high in (("n_max", 1, 64), ("n_min", 0, 64), ("ngram_size", 1, 64)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValidationError(f"speculative.{name} must be an integer in [{low}, {high}]",
                                      param=f"speculative.{name}")
        if self.n_min > self.n_max:
            raise ValidationError("speculative.n_min must not exceed speculative.n_max", param="speculative.n_min")

    @classmethod
    def parse(cls, value) -> "SpeculativeOptions | None":
        """None/False (off), True (defaults), a SpeculativeOptions, or a mapping with keys
        ``n_max``/``n_min``/``ngram_size`` (also spelled ``speculative.n_max`` as llama-server)."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, cls):
            value.validate()
            return value
        if not isinstance(value, Mapping):
            raise ValidationError("speculative must be true, false or an object", param="speculative")
        fields = {str(k).removeprefix("speculative."): v for k, v in value.items()}
        unknown = set(fields) - {"n_max", "n_min", "ngram_size"}
        if unknown:
            raise ValidationError(f"unknown speculative option(s): {', '.join(sorted(unknown))}", param="speculative")
        options = cls(**fields)
        options.validate()
        return options

    @classmethod
    def from_body(cls, body: Mapping) -> "SpeculativeOptions | None":
        """From a llama-server request body: ``"speculative": true|{...}`` and/or flat
        ``"speculative.n_max"``-style keys (any of those turns speculation on)."""
        flat = {k: v for k, v in body.items() if isinstance(k, str) and k.startswith("speculative.")}
        base = body.get("speculative")
        if base is False or (base is None and not flat):
            return None
        if isinstance(base, Mapping):
            flat = {**base, **flat}
        elif base not in (None, True):
            raise ValidationError("speculative must be true, false or an object", param="speculative")
        return cls.parse(flat or True)
