"""llama-cpp-python's token-level ``Llama`` API: ``eval``, ``sample``, ``generate``, the
``n_tokens``/``input_ids``/``scores`` view of the KV cache, and ``LlamaTokenizer``.

What the KV cache holds has one record: the session's ``cache`` (the tokens of
sequence 0, in order). ``eval`` appends to it, so a completion whose prompt starts with
evaluated tokens decodes only the rest; a completion rewrites it, and ``n_tokens`` and
``input_ids`` follow. ``scores[i]`` are the logits after token ``i``: with
``logits_all=True`` ``eval`` (and so ``generate``) fills a row per token, as
llama-cpp-python does; otherwise no row is filled (llama-cpp-python fills none either) and
``eval_logits`` gives the live last row. Completions sample in C and fill no rows; rows of
tokens the KV cache no longer holds read as zeros.

``generate`` holds the ``Llama`` from its first token until it ends or is closed, like a
stream: starting another call on the same ``Llama`` inside the loop raises GenerationError.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from ..errors import ContextOverflowError, ValidationError

__all__ = ["LlamaTokenizer", "Scores", "evaluate", "generate", "logits_to_logprobs", "longest_token_prefix",
           "sample"]

# llama-cpp-python's sample()/generate() keywords and defaults (note: temp, not temperature).
# tfs_z and penalize_nl are accepted with no effect, there as here.
SAMPLE_DEFAULTS: dict[str, Any] = {
    "top_k": 40, "top_p": 0.95, "min_p": 0.05, "typical_p": 1.0, "temp": 0.80, "repeat_penalty": 1.0,
    "frequency_penalty": 0.0, "presence_penalty": 0.0, "tfs_z": 1.0, "mirostat_mode": 0,
    "mirostat_eta": 0.1, "mirostat_tau": 5.0, "penalize_nl": True,
}


# --- text <-> tokens ------------------------------------------------------------------------
def tokenize(vocab, text: bytes | str, add_bos: bool, special: bool) -> list[int]:
    """Token ids of UTF-8 ``text`` (bytes, as in llama-cpp-python, or str)."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValidationError(f"text is not valid UTF-8: {exc}", param="text") from None
    if not isinstance(text, str):
        raise ValidationError("text must be bytes or str", param="text")
    return vocab.tokenize(text, add_special=bool(add_bos), parse_special=bool(special))


def detokenize(vocab, tokens: Sequence[int], prev_tokens: Sequence[int] | None, special: bool) -> bytes:
    """The bytes ``tokens`` spell; with ``prev_tokens`` only what ``tokens`` add after them."""
    if not prev_tokens:
        return vocab.detokenize(tokens, unparse_special=special)
    whole = vocab.detokenize(list(prev_tokens) + list(tokens), unparse_special=special)
    head = vocab.detokenize(prev_tokens, unparse_special=special)
    return whole[len(head):] if whole.startswith(head) else whole


class LlamaTokenizer:
    """llama-cpp-python's ``LlamaTokenizer`` over a model's vocabulary (``Llama.tokenizer()``).

    Note llama-cpp-python's defaults: here ``special=True``, in ``Llama.tokenize`` False."""

    def __init__(self, llama, *, owns_model: bool = False) -> None:
        from ..native import Model

        self._model = llama if isinstance(llama, Model) else llama.model
        self._owns_model = owns_model

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = True) -> list[int]:
        return tokenize(self._model.vocab, text, add_bos, special)

    def detokenize(self, tokens: Sequence[int], prev_tokens: Sequence[int] | None = None,
                   special: bool = False) -> bytes:
        return detokenize(self._model.vocab, tokens, prev_tokens, special)

    def encode(self, text: str, add_bos: bool = True, special: bool = True) -> list[int]:
        return self.tokenize(text.encode("utf-8", errors="ignore"), add_bos=add_bos, special=special)

    def decode(self, tokens: Sequence[int]) -> str:
        return self.detokenize(tokens).decode("utf-8", errors="ignore")

    @classmethod
    def from_ggml_file(cls, path) -> "LlamaTokenizer":
        """A tokenizer from a GGUF file, loading its vocabulary only."""
        from ..native import Model, ModelParams

        return cls(Model(path, ModelParams(vocab_only=True, n_gpu_layers=0)), owns_model=True)

    def close(self) -> None:
        """Free the vocabulary-only model ``from_ggml_file`` loaded (a no-op otherwise)."""
        if self._owns_model:
            self._model.close()

    def __enter__(self) -> "LlamaTokenizer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# --- numeric helpers (llama-cpp-python's static methods) --------------------------------------
def logits_to_logprobs(logits, axis: int = -1) -> np.ndarray:
    """Log-softmax of ``logits`` along ``axis``, as float32 (a row of -inf stays -inf/nan)."""
    x = np.asarray(logits, dtype=np.single)
    top = np.amax(x, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, np.single(0))
    shifted = np.subtract(x, top, dtype=np.single)
    with np.errstate(divide="ignore"):
        log_total = np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))
    return (shifted - log_total).astype(np.single)


def longest_token_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(diff[0]) if diff.size else n


# --- what the KV cache holds --------------------------------------------------------------------
class Scores:
    """The ``scores`` array of one Llama (allocated at first use), the tokens its rows
    belong to, and which rows ``eval`` filled (the others are zero)."""

    def __init__(self, n_rows: int, n_vocab: int) -> None:
        self.shape = (n_rows, n_vocab)
        self.tokens: list[int] = []
        self.filled = np.zeros(n_rows, dtype=bool)
        self._array: np.ndarray | None = None

    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.zeros(self.shape, dtype=np.single)  # calloc: pages come on first write
        return self._array

    def sync(self, held: Sequence[int]) -> None:
        """Zero the rows of tokens the KV cache no longer holds."""
        keep = longest_token_prefix(self.tokens, held)
        if keep < len(self.tokens):
            if self._array is not None:
                self._array[keep:len(self.tokens)] = 0
            self.filled[keep:] = False
            del self.tokens[keep:]

    def row(self, held: Sequence[int], idx: int) -> np.ndarray | None:
        """A copy of the row after token ``idx``, if eval filled it."""
        self.sync(held)
        return self._array[idx].copy() if idx < len(self.tokens) and self.filled[idx] else None

    def restore(self, held: Sequence[int], rows: np.ndarray | None) -> None:
        """After a state load: its rows (when it carried them) for the tokens it holds."""
        self.sync(())
        if rows is None or rows.ndim != 2 or rows.shape[1] != self.shape[1]:
            return
        n = min(len(rows), len(held), self.shape[0])
        self.array()[:n] = rows[:n]
        self.filled[:n] = rows[:n].any(axis=1)
        self.tokens = list(held[:n])


def scores(llama) -> np.ndarray:
    llama._scores.sync(llama._session.cache)
    return llama._scores.array()


def input_ids(llama) -> np.ndarray:
    """llama-cpp-python's ``input_ids``: ``(n_ctx,)`` intc, the first ``n_tokens`` valid."""
    held = llama._session.cache
    ids = np.zeros(llama.n_ctx(), dtype=np.intc)
    ids[: len(held)] = held
    return ids


def eval_logits(llama) -> deque:
    """Logits rows of the evaluated tokens (every row with logits_all, else the last)."""
    n = len(llama._session.cache)
    if llama.settings.logits_all:
        return deque(scores(llama)[:n].tolist(), maxlen=llama.n_ctx())
    if n == 0:
        return deque(maxlen=1)
    try:
        row = llama.context.logits(-1)
    except ValidationError:  # the last batch produced no logits (e.g. a state was just loaded)
        return deque(maxlen=1)
    return deque([row.tolist()], maxlen=1)


def set_n_tokens(llama, n: int) -> None:
    """Keep the first ``n`` evaluated tokens, forget the rest (llama-cpp-python's
    ``llm.n_tokens = n``)."""
    session = llama._session
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= len(session.cache):
        raise ValidationError(f"n_tokens must be an integer in [0, {len(session.cache)}]", param="n_tokens")
    session.acquire()
    try:
        _truncate(llama, int(n))
    finally:
        session.release()


def _truncate(llama, keep: int) -> None:
    session, ctx = llama._session, llama.context
    if keep < len(session.cache) and not ctx.memory_seq_rm(0, keep, -1):
        ctx.memory_clear()  # a recurrent model cannot drop a tail: start over
        keep = 0
    session.cache = session.cache[:keep]
    session.loop.pos = keep


def _token_list(llama, tokens: Iterable[int]) -> list[int]:
    values = list(tokens) if not isinstance(tokens, np.ndarray) else tokens.tolist()
    if not all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in values):
        raise ValidationError("tokens must be integer token ids", param="tokens")
    return llama.model.vocab.check_tokens(values).tolist()


# --- eval --------------------------------------------------------------------------------------------
def evaluate(llama, tokens: Iterable[int]) -> None:
    """Decode ``tokens`` after the ``n_tokens`` already evaluated (llama-cpp-python's ``eval``)."""
    ids = _token_list(llama, tokens)
    session = llama._session
    session.acquire()
    try:
        _eval(llama, ids)
    finally:
        session.release()


def _eval(llama, ids: list[int]) -> None:
    session, ctx = llama._session, llama.context
    session._apply_loras(None)  # the adapters set at construction, as for completions
    start = len(session.cache)
    if start + len(ids) > ctx.n_ctx_seq:
        raise ContextOverflowError(f"Requested tokens ({start + len(ids)}) exceed context window of {ctx.n_ctx_seq}",
                                   n_tokens=start + len(ids), n_ctx=ctx.n_ctx_seq, param="tokens")
    if not ids:
        return
    ctx.memory_seq_rm(0, start, -1)  # anything past n_tokens (llama-cpp-python does the same)
    on_chunk = None
    if llama.settings.logits_all:
        llama._scores.sync(session.cache)
        rows = llama._scores.array()

        def on_chunk(offset: int, n: int) -> None:
            for j in range(n):
                rows[start + offset + j] = ctx.logits(j)
            llama._scores.filled[start + offset: start + offset + n] = True
    try:
        session.loop.prefill(ids, start, on_chunk=on_chunk)
    except BaseException:
        ctx.memory_seq_rm(0, start, -1)  # a failed decode may have left part of a chunk
        session.loop.pos = start
        raise
    session.cache = session.cache + ids
    if on_chunk is not None:
        llama._scores.tokens = list(session.cache)


# --- sample ------------------------------------------------------------------------------------------
def _params(llama, knobs: dict[str, Any]):
    """A SamplingParams for llama-cpp-python's sampling keywords (seed and penalty window:
    the Llama's)."""
    unknown = sorted(set(knobs) - set(SAMPLE_DEFAULTS))
    if unknown:
        raise TypeError(f"unexpected keyword argument {unknown[0]!r}")
    k = {**SAMPLE_DEFAULTS, **knobs}
    temp = k["temp"]
    if isinstance(temp, (int, float)) and not isinstance(temp, bool) and temp < 0:
        # llama-cpp-python: a negative temperature samples the plain softmax
        k.update(temp=1.0, top_k=0, top_p=1.0, min_p=0.0, typical_p=1.0, mirostat_mode=0)
    params = type(llama.sampling)(
        temperature=k["temp"], top_k=k["top_k"], top_p=k["top_p"], min_p=k["min_p"], typical_p=k["typical_p"],
        repeat_penalty=k["repeat_penalty"], frequency_penalty=k["frequency_penalty"],
        presence_penalty=k["presence_penalty"], penalty_last_n=llama.sampling.penalty_last_n,
        mirostat_mode=k["mirostat_mode"], mirostat_tau=k["mirostat_tau"], mirostat_eta=k["mirostat_eta"],
        seed=llama.sampling.seed)
    params.validate()
    return params


def _processors(value) -> list:
    if value is None:
        return []
    procs = [value] if callable(value) and not isinstance(value, (list, tuple)) else list(value)
    if not all(callable(p) for p in procs):
        raise ValidationError("logits_processor must be a callable or a list of callables", param="logits_processor")
    return procs


def _chain(llama, params, grammar):
    vocab = llama.model.vocab
    return params.build_chain(vocab, grammar=_grammar_sampler(grammar, vocab))


def _grammar_sampler(grammar, vocab):
    """A grammar sampler for a ``LlamaGrammar`` or GBNF text (None: no grammar)."""
    if grammar is None:
        return None
    from ..grammar import LlamaGrammar
    from ..native.sampler import Sampler

    if isinstance(grammar, (str, bytes)):
        grammar = LlamaGrammar.from_string(grammar)
    if not isinstance(grammar, LlamaGrammar):
        raise ValidationError("grammar must be a LlamaGrammar or GBNF text", param="grammar")
    return Sampler.grammar(vocab, grammar.text, grammar.root)


def sample(llama, *, idx: int | None = None, logits_processor=None, grammar=None, **knobs: Any) -> int:
    """A token sampled from the logits of evaluated token ``idx`` (default: the last)."""
    params, procs = _params(llama, knobs), _processors(logits_processor)
    session = llama._session
    session.acquire()
    chain = None
    try:
        chain = _chain(llama, params, grammar)
        return _sample(llama, chain, idx, procs)[0]
    finally:
        if chain is not None:
            chain.close()
        session.release()


_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])  # struct llama_token_data


def _sample(llama, chain, idx: int | None, procs: list) -> tuple[int, np.ndarray]:
    """(token, the logits row it was drawn from): processors edit a copy of the row, and
    the chain runs over it in C (llama_sampler_sample's steps: apply, then accept)."""
    row = _row(llama, idx)
    if procs:
        ids = np.asarray(llama._session.cache, dtype=np.intc)
        for proc in procs:
            result = proc(ids, row)
            if result is not None and result is not row:
                row[:] = result
    candidates = np.empty(len(row), dtype=_TOKEN_DATA)
    candidates["id"], candidates["logit"], candidates["p"] = np.arange(len(row)), row, 0.0
    token = int(chain.apply(candidates)[0]["id"])
    chain.accept(token)
    return token, row


def _row(llama, idx: int | None) -> np.ndarray:
    """A copy of the logits after evaluated token ``idx`` (default: the last)."""
    held = llama._session.cache
    n = len(held)
    if n == 0:
        raise ValidationError("nothing is evaluated: call eval(tokens) before sample()", param="idx")
    if idx is None or idx == n - 1:
        return llama.context.logits(-1).copy()  # ValidationError when the last batch made none
    if isinstance(idx, bool) or not isinstance(idx, (int, np.integer)) or not 0 <= idx < n:
        raise ValidationError(f"idx must be an evaluated position in [0, {n})", param="idx")
    row = llama._scores.row(held, int(idx)) if llama.settings.logits_all else None
    if row is not None:
        return row
    raise ValidationError(f"no logits kept for position {idx}: eval() keeps every position's logits only "
                          "with Llama(logits_all=True), and completions keep none", param="idx")


# --- generate ----------------------------------------------------------------------------------------
def generate(llama, tokens: Sequence[int], *, reset: bool = True, logits_processor=None, stopping_criteria=None,
             grammar=None, **knobs: Any) -> Iterator[int]:
    """llama-cpp-python's ``generate``: yield sampled token ids without end (end-of-generation
    tokens included) until the caller stops, ``stopping_criteria(input_ids, logits)`` is
    true, or the context is full. ``reset=True`` keeps only the evaluated tokens the prompt
    starts with; ``reset=False`` continues after them. ``send(tokens)`` appends tokens after
    the one just yielded."""
    if isinstance(tokens, (str, bytes, bytearray)):
        raise ValidationError("generate() takes token ids, as llama-cpp-python's does (llm.tokenize(text)); "
                              "for text use generate_text() or create_completion()", param="tokens")
    ids = _token_list(llama, tokens)
    if not ids and (reset or not llama._session.cache):
        raise ValidationError("generate() needs at least one prompt token", param="tokens")
    if stopping_criteria is not None and not callable(stopping_criteria):
        raise ValidationError("stopping_criteria must be callable(input_ids, logits) -> bool",
                              param="stopping_criteria")
    params, procs = _params(llama, knobs), _processors(logits_processor)
    return _generate(llama, ids, params, bool(reset), procs, stopping_criteria, grammar)


def _generate(llama, ids: list[int], params, reset: bool, procs: list, criteria,
              grammar) -> Iterator[int]:
    session, ctx = llama._session, llama.context
    session.acquire()
    chain = None
    try:
        chain = _chain(llama, params, grammar)
        session._apply_loras(None)  # first: switching adapters empties the KV cache
        if reset:
            keep = min(longest_token_prefix(session.cache, ids), len(ids) - 1)  # the last one gives the logits
            _truncate(llama, keep)
            ids = ids[keep:]
        while len(session.cache) + len(ids) <= ctx.n_ctx_seq:
            _eval(llama, ids)
            token, row = _sample(llama, chain, None, procs)
            if criteria is not None and criteria(np.asarray(session.cache, dtype=np.intc), row):
                return
            sent = yield token
            ids = [token, *(_token_list(llama, sent) if sent is not None else ())]
    finally:
        if chain is not None:
            chain.close()
        session.release()
