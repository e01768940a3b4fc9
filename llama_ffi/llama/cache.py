"""llama-cpp-python's prompt caches: ``Llama.set_cache(LlamaRAMCache())``.

A cache maps token sequences to :class:`~llama_ffi.llama.LlamaState` snapshots. Before a
completion or chat, when the cache holds a state that shares a longer prefix with the
prompt than the live KV cache does, that state is loaded, so only the rest of the prompt
is decoded; afterwards the state is stored under the prompt plus the completion. The live
KV cache already serves a conversation that continues the previous call (prefix reuse);
a cache helps when several conversations take turns on one ``Llama``.

Any object with this interface works (``__getitem__`` returning the state whose key
shares the longest prefix with the given tokens, or raising KeyError; ``__setitem__``;
``__contains__``). A disk cache is not provided (llama-cpp-python's needs ``diskcache``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .tokens import longest_token_prefix

__all__ = ["BaseLlamaCache", "LlamaCache", "LlamaRAMCache", "cached"]


class BaseLlamaCache(ABC):
    """A store of saved states keyed by token sequences, looked up by longest prefix."""

    def __init__(self, capacity_bytes: int = 2 << 30) -> None:
        self.capacity_bytes = capacity_bytes

    @property
    @abstractmethod
    def cache_size(self) -> int:
        """Bytes held."""

    @abstractmethod
    def __getitem__(self, key: Sequence[int]):
        """The state whose key shares the longest prefix with ``key``; KeyError if none does."""

    @abstractmethod
    def __contains__(self, key: Sequence[int]) -> bool: ...

    @abstractmethod
    def __setitem__(self, key: Sequence[int], value) -> None: ...


class LlamaRAMCache(BaseLlamaCache):
    """States in memory, least recently used dropped first beyond ``capacity_bytes``."""

    def __init__(self, capacity_bytes: int = 2 << 30) -> None:
        super().__init__(capacity_bytes)
        self.cache_state: OrderedDict[tuple[int, ...], Any] = OrderedDict()

    @property
    def cache_size(self) -> int:
        return sum(state.llama_state_size for state in self.cache_state.values())

    def _find_longest_prefix_key(self, key: tuple[int, ...]) -> tuple[int, ...] | None:
        best, best_len = None, 0
        for candidate in self.cache_state:
            n = longest_token_prefix(candidate, key)
            if n > best_len:
                best, best_len = candidate, n
        return best

    def __getitem__(self, key: Sequence[int]):
        found = self._find_longest_prefix_key(tuple(key))
        if found is None:
            raise KeyError("no cached state shares a prefix with these tokens")
        self.cache_state.move_to_end(found)
        return self.cache_state[found]

    def __contains__(self, key: Sequence[int]) -> bool:
        return self._find_longest_prefix_key(tuple(key)) is not None

    def __setitem__(self, key: Sequence[int], value) -> None:
        key = tuple(key)
        self.cache_state.pop(key, None)
        self.cache_state[key] = value
        while self.cache_state and self.cache_size > self.capacity_bytes:
            self.cache_state.popitem(last=False)


LlamaCache = LlamaRAMCache  # llama-cpp-python's older name


def cached(llama, run, finish: Callable[[], Any], stream: bool):
    """``finish()`` (a completion or chat over ``run``) between a cache lookup and a store."""
    if llama.cache is None or not run.opts.reset_kv_cache:  # a continued session has no whole prompt
        return finish()
    _restore(llama, run.prompt_tokens)
    if stream:
        return _stored_after(llama, run, finish())
    result = finish()
    _store(llama, run)
    return result


def _stored_after(llama, run, chunks: Iterator[dict]) -> Iterator[dict]:
    yield from chunks
    _store(llama, run)


def _restore(llama, prompt_tokens: list[int]) -> None:
    try:
        state = llama.cache[prompt_tokens]
    except KeyError:
        return
    saved = [int(t) for t in state.input_ids[: state.n_tokens]]
    if longest_token_prefix(saved, prompt_tokens) > longest_token_prefix(llama._session.cache, prompt_tokens):
        llama.load_state(state)


def _store(llama, run) -> None:
    llama.cache[list(run.prompt_tokens) + list(run.tokens)] = llama.save_state()
