"""Samplers and sampler chains: every sampler ``llama.h`` offers, plus samplers in Python.

A ``Sampler`` owns its C object until it is added to a ``SamplerChain``; the chain then
owns it (llama.cpp frees chain members with the chain), and the Python object is marked
as transferred, so adding it twice or closing it afterwards is a Python error, not a
double free.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ..errors import GrammarError, ValidationError
from ._lib import ffi, get_lib
from .handle import Handle

UINT32_MAX = 0xFFFFFFFF
# struct llama_token_data {llama_token id; float logit; float p;}
TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])


def _finite(name: str, value, low=-np.inf, high=np.inf) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValidationError(f"{name} must be a number, got {value!r}", param=name) from None
    if not (np.isfinite(value) and low <= value <= high):
        raise ValidationError(f"{name} must be a finite number in [{low}, {high}], got {value}", param=name)
    return value


def _int(name: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise ValidationError(f"{name} must be an integer in [{low}, {high}], got {value!r}", param=name)
    return int(value)


def _seed(seed) -> int:
    return UINT32_MAX if seed is None or seed == -1 else _int("seed", seed, 0, UINT32_MAX)


class Sampler(Handle):
    """One sampling step. Build with the class methods (``Sampler.top_k(40)``...)."""

    _kind = "sampler"
    _owner = None  # the chain this sampler was transferred to

    def __init__(self, ptr, name: str, keep_alive=None) -> None:
        if ptr == ffi.NULL:
            error = GrammarError if name.startswith("grammar") else ValidationError
            raise error(f"llama.cpp refused to create the {name} sampler")
        self._lib = get_lib()
        self._adopt(ptr)
        self.name = name
        self._keep_alive = keep_alive  # Python objects the C sampler points at

    def _free(self, ptr) -> None:
        self._lib.llama_sampler_free(ptr)

    def close(self) -> None:
        if self._owner is None:
            super().close()

    def _describe(self) -> str:
        return self.name + (" (in a chain)" if self._owner is not None else "")

    # --- constructors, one per llama_sampler_init_* ------------------------------------------
    @classmethod
    def greedy(cls) -> "Sampler":
        return cls(get_lib().llama_sampler_init_greedy(), "greedy")

    @classmethod
    def dist(cls, seed: int | None = None) -> "Sampler":
        return cls(get_lib().llama_sampler_init_dist(_seed(seed)), "dist")

    @classmethod
    def top_k(cls, k: int) -> "Sampler":
        return cls(get_lib().llama_sampler_init_top_k(_int("top_k", k, -1, 1 << 30)), "top-k")

    @classmethod
    def top_p(cls, p: float, min_keep: int = 1) -> "Sampler":
        return cls(get_lib().llama_sampler_init_top_p(_finite("top_p", p, 0, 1), _int("min_keep", min_keep, 0, 1 << 20)), "top-p")

    @classmethod
    def min_p(cls, p: float, min_keep: int = 1) -> "Sampler":
        return cls(get_lib().llama_sampler_init_min_p(_finite("min_p", p, 0, 1), _int("min_keep", min_keep, 0, 1 << 20)), "min-p")

    @classmethod
    def typical(cls, p: float, min_keep: int = 1) -> "Sampler":
        return cls(get_lib().llama_sampler_init_typical(_finite("typical_p", p, 0, 1), _int("min_keep", min_keep, 0, 1 << 20)), "typical")

    @classmethod
    def temperature(cls, t: float, delta: float = 0.0, exponent: float = 1.0) -> "Sampler":
        t = _finite("temperature", t, 0, 1e6)
        if delta:
            ptr = get_lib().llama_sampler_init_temp_ext(t, _finite("dynatemp_range", delta, 0, 1e6),
                                                        _finite("dynatemp_exponent", exponent, 0, 1e6))
            return cls(ptr, "temp-ext")
        return cls(get_lib().llama_sampler_init_temp(t), "temp")

    @classmethod
    def xtc(cls, probability: float, threshold: float, min_keep: int = 1, seed: int | None = None) -> "Sampler":
        ptr = get_lib().llama_sampler_init_xtc(_finite("xtc_probability", probability, 0, 1),
                                              _finite("xtc_threshold", threshold, 0, 1),
                                              _int("min_keep", min_keep, 0, 1 << 20), _seed(seed))
        return cls(ptr, "xtc")

    @classmethod
    def top_n_sigma(cls, n: float) -> "Sampler":
        return cls(get_lib().llama_sampler_init_top_n_sigma(_finite("top_n_sigma", n, -1, 1e6)), "top-n-sigma")

    @classmethod
    def mirostat(cls, n_vocab: int, tau: float = 5.0, eta: float = 0.1, m: int = 100, seed: int | None = None) -> "Sampler":
        ptr = get_lib().llama_sampler_init_mirostat(n_vocab, _seed(seed), _finite("mirostat_tau", tau, 0, 1e6),
                                                    _finite("mirostat_eta", eta, 0, 1e6), _int("m", m, 1, n_vocab))
        return cls(ptr, "mirostat")

    @classmethod
    def mirostat_v2(cls, tau: float = 5.0, eta: float = 0.1, seed: int | None = None) -> "Sampler":
        ptr = get_lib().llama_sampler_init_mirostat_v2(_seed(seed), _finite("mirostat_tau", tau, 0, 1e6),
                                                       _finite("mirostat_eta", eta, 0, 1e6))
        return cls(ptr, "mirostat-v2")

    @classmethod
    def penalties(cls, n_vocab: int, last_n: int = 64, repeat: float = 1.0, frequency: float = 0.0,
                  presence: float = 0.0) -> "Sampler":
        ptr = get_lib().llama_sampler_init_penalties(
            n_vocab, _int("penalty_last_n", last_n, -1, 1 << 24), _finite("repeat_penalty", repeat, 1e-6, 1e6),
            _finite("frequency_penalty", frequency, -1e6, 1e6), _finite("presence_penalty", presence, -1e6, 1e6))
        return cls(ptr, "penalties")

    @classmethod
    def dry(cls, vocab, multiplier: float = 0.0, base: float = 1.75, allowed_length: int = 2,
            last_n: int = -1, breakers: Sequence[str] = ("\n", ":", '"', "*")) -> "Sampler":
        encoded = [ffi.new("char[]", b.encode()) for b in breakers]
        array = ffi.new("const char *[]", encoded or [ffi.NULL])
        ptr = get_lib().llama_sampler_init_dry(vocab.ptr, _finite("dry_multiplier", multiplier, 0, 1e6),
                                              _finite("dry_base", base, 0, 1e6), _int("dry_allowed_length", allowed_length, 0, 1 << 20),
                                              _int("dry_penalty_last_n", last_n, -1, 1 << 24), array, len(encoded))
        return cls(ptr, "dry", keep_alive=(encoded, array))

    @classmethod
    def logit_bias(cls, n_vocab: int, bias: dict[int, float]) -> "Sampler":
        items = ffi.new("llama_logit_bias[]", max(1, len(bias)))
        for item, (token, value) in zip(items, bias.items()):
            item.token = _int("logit_bias token", token, 0, n_vocab - 1)
            item.bias = _finite("logit_bias value", value) if value != float("-inf") else value
        return cls(get_lib().llama_sampler_init_logit_bias(n_vocab, len(bias), items), "logit-bias", keep_alive=items)

    @classmethod
    def grammar(cls, vocab, grammar: str, root: str = "root", *, trigger_patterns: Sequence[str] = (),
                trigger_tokens: Sequence[int] = (), lazy: bool = False) -> "Sampler":
        """A grammar sampler. The text must already be validated (``llama_ffi.grammar``
        does that): llama.cpp's own parser aborts on some malformed grammars."""
        lib = get_lib()
        if not lazy:
            return cls(lib.llama_sampler_init_grammar(vocab.ptr, grammar.encode(), root.encode()), "grammar")
        patterns = [ffi.new("char[]", p.encode()) for p in trigger_patterns]
        pattern_array = ffi.new("const char *[]", patterns or [ffi.NULL])
        tokens = ffi.new("llama_token[]", list(trigger_tokens) or [0])
        ptr = lib.llama_sampler_init_grammar_lazy_patterns(vocab.ptr, grammar.encode(), root.encode(),
                                                          pattern_array, len(patterns), tokens, len(trigger_tokens))
        return cls(ptr, "grammar-lazy", keep_alive=(patterns, pattern_array, tokens))

    @classmethod
    def infill(cls, vocab) -> "Sampler":
        return cls(get_lib().llama_sampler_init_infill(vocab.ptr), "infill")

    @classmethod
    def custom(cls, apply: Callable[[np.ndarray], None], *, name: str = "python",
               accept: Callable[[int], None] | None = None, reset: Callable[[], None] | None = None) -> "Sampler":
        """A sampler written in Python. ``apply(candidates)`` gets the candidates as a numpy
        structured array (fields ``id``, ``logit``, ``p``) viewing llama.cpp's memory, and
        edits it in place (e.g. ``candidates["logit"][mask] = -np.inf``)."""
        return PythonSampler(apply, name=name, accept=accept, reset=reset)


class PythonSampler(Sampler):
    """Bridges llama_sampler_i callbacks to Python. Exceptions raised by the callbacks are
    kept and re-raised by the chain once the C call returns; none crosses into C."""

    def __init__(self, apply, *, name, accept=None, reset=None) -> None:
        self._apply, self._accept_cb, self._reset_cb = apply, accept, reset
        self.error: BaseException | None = None
        self._name_c = ffi.new("char[]", name.encode())
        iface = ffi.new("struct llama_sampler_i *")
        self._callbacks = [
            ffi.callback("const char *(*)(const struct llama_sampler *)", self._c_name),
            ffi.callback("void (*)(struct llama_sampler *, llama_token)", self._c_accept),
            ffi.callback("void (*)(struct llama_sampler *, llama_token_data_array *)", self._c_apply),
            ffi.callback("void (*)(struct llama_sampler *)", self._c_reset),
        ]
        iface.name, iface.accept, iface.apply, iface.reset = self._callbacks
        iface.clone = ffi.NULL
        iface.free = ffi.NULL  # the Python object owns everything the C side points at
        self._iface = iface
        super().__init__(get_lib().llama_sampler_init(iface, ffi.NULL), name)

    def _c_name(self, _smpl):
        return self._name_c

    def _c_accept(self, _smpl, token):
        if self._accept_cb is not None and self.error is None:
            try:
                self._accept_cb(int(token))
            except BaseException as exc:  # noqa: BLE001 - stored, re-raised after the C call
                self.error = exc

    def _c_apply(self, _smpl, cur_p):
        if self.error is not None:
            return
        try:
            view = np.frombuffer(ffi.buffer(cur_p.data, cur_p.size * TOKEN_DATA.itemsize), dtype=TOKEN_DATA)
            self._apply(view)
            cur_p.sorted = False
        except BaseException as exc:  # noqa: BLE001
            self.error = exc

    def _c_reset(self, _smpl):
        if self._reset_cb is not None:
            try:
                self._reset_cb()
            except BaseException as exc:  # noqa: BLE001
                self.error = exc

    def take_error(self) -> BaseException | None:
        error, self.error = self.error, None
        return error


class SamplerChain(Handle):
    """Samplers applied in order; the last one must pick a token (greedy, dist, mirostat)."""

    _kind = "sampler chain"
    _attached = None      # (context, seq_id) of its one backend attachment, ever
    _attached_to = None   # the same while still attached

    def __init__(self, samplers: Sequence[Sampler] = (), *, no_perf: bool = True) -> None:
        lib = get_lib()
        params = lib.llama_sampler_chain_default_params()
        params.no_perf = no_perf
        self._lib = lib
        self._adopt(lib.llama_sampler_chain_init(params))
        self.samplers: list[Sampler] = []
        for sampler in samplers:
            self.add(sampler)

    def add(self, sampler: Sampler) -> "SamplerChain":
        """Transfer ``sampler`` into the chain (it cannot be added elsewhere afterwards)."""
        if sampler._owner is not None:
            raise ValidationError(f"sampler {sampler.name} already belongs to a chain")
        self._lib.llama_sampler_chain_add(self.ptr, sampler.ptr)
        sampler._owner = self
        self.samplers.append(sampler)
        return self

    @property
    def has_python_samplers(self) -> bool:
        """True when a member is written in Python (its errors are re-raised after C returns)."""
        return any(isinstance(s, PythonSampler) for s in self.samplers)

    def _free(self, ptr) -> None:
        if self._attached_to is not None:  # detach first: the context must not keep a freed chain
            context, seq_id = self._attached_to
            if not context.closed:
                context.set_sampler(seq_id, None)
        self._lib.llama_sampler_free(ptr)  # frees the members too
        for sampler in self.samplers:
            sampler._ptr, sampler._closed = None, True

    def sample(self, context, i: int = -1) -> int:
        """Sample a token from output ``i`` of the context's last batch, and accept it."""
        token = self._lib.llama_sampler_sample(self.ptr, context.ptr, i)
        self._reraise()
        return int(token)

    def accept(self, token: int) -> None:
        self._lib.llama_sampler_accept(self.ptr, token)
        self._reraise()

    def apply(self, candidates: np.ndarray) -> np.ndarray:
        """Run the chain over a TOKEN_DATA array (ids/logits) in Python memory; returns the
        surviving candidates, selected one first when a picker ran."""
        arr = np.ascontiguousarray(candidates, dtype=TOKEN_DATA)
        data = ffi.new("llama_token_data_array *")
        data.data = ffi.cast("llama_token_data *", arr.ctypes.data)
        data.size, data.selected, data.sorted = len(arr), -1, False
        self._lib.llama_sampler_apply(self.ptr, data)
        self._reraise()
        out = arr[: data.size]
        if data.selected >= 0:
            out = np.concatenate([out[data.selected: data.selected + 1], np.delete(out, data.selected)])
        return out

    def reset(self) -> None:
        self._lib.llama_sampler_reset(self.ptr)
        self._reraise()

    @property
    def seed(self) -> int:
        return int(self._lib.llama_sampler_get_seed(self.ptr))

    def _reraise(self) -> None:
        for sampler in self.samplers:
            if isinstance(sampler, PythonSampler):
                error = sampler.take_error()
                if error is not None:
                    raise error

    def _describe(self) -> str:
        return " -> ".join(s.name for s in self.samplers) or "empty"

    def __len__(self) -> int:
        return len(self.samplers)
