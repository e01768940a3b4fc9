"""``SamplingParams``: sampling settings reused across calls, turned into a C sampler chain.

The chain runs in C (``llama_sampler_sample``); its order follows llama.cpp's own
defaults: logit bias, grammar, penalties, DRY, top-n-sigma, top-k, typical, top-p, min-p,
XTC, temperature, then the picker (dist, mirostat, or greedy at temperature 0).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Mapping

from ..errors import ValidationError


@dataclass(kw_only=True)
class SamplingParams:
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    penalty_last_n: int = 64
    mirostat_mode: int = 0
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1
    xtc_probability: float = 0.0
    xtc_threshold: float = 0.1
    top_n_sigma: float = -1.0
    dry_multiplier: float = 0.0
    dry_base: float = 1.75
    dry_allowed_length: int = 2
    dry_penalty_last_n: int = -1
    seed: int | None = None
    logit_bias: Mapping[int, float] | None = field(default=None, repr=False)

    def updated(self, **changes) -> "SamplingParams":
        """A copy with ``changes`` applied (None values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def validate(self) -> None:
        def number(name, low, high):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not low <= value <= high:
                raise ValidationError(f"{name} must be a finite number in [{low}, {high}], got {value!r}", param=name)

        def integer(name, low, high):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValidationError(f"{name} must be an integer in [{low}, {high}], got {value!r}", param=name)

        number("temperature", 0.0, 100.0)
        number("top_p", 0.0, 1.0)
        number("min_p", 0.0, 1.0)
        number("typical_p", 0.0, 1.0)
        number("repeat_penalty", 1e-6, 100.0)  # as the penalties sampler takes it; 1.0 is off
        number("frequency_penalty", -100.0, 100.0)
        number("presence_penalty", -100.0, 100.0)
        number("mirostat_tau", 0.0, 100.0)
        number("mirostat_eta", 0.0, 1.0)
        number("xtc_probability", 0.0, 1.0)
        number("xtc_threshold", 0.0, 1.0)
        number("top_n_sigma", -1.0, 100.0)
        number("dry_multiplier", 0.0, 100.0)
        number("dry_base", 0.0, 100.0)
        integer("top_k", -1, 1 << 30)
        integer("penalty_last_n", -1, 1 << 24)
        integer("mirostat_mode", 0, 2)
        integer("dry_allowed_length", 0, 1 << 20)
        integer("dry_penalty_last_n", -1, 1 << 24)
        if self.seed is not None:
            integer("seed", -1, 0xFFFFFFFF)
        if self.logit_bias is not None and not isinstance(self.logit_bias, Mapping):
            raise ValidationError("logit_bias must map token ids to numbers", param="logit_bias")

    def build_chain(self, vocab, *, grammar=None, extra=()):
        """A :class:`SamplerChain` for ``vocab``; ``grammar`` is a ``(text, root, lazy
        triggers)`` sampler spec or a ready Sampler; ``extra`` samplers run after it."""
        from ..native.sampler import Sampler, SamplerChain

        self.validate()
        n_vocab, samplers = vocab.n_tokens, []
        if self.logit_bias:
            samplers.append(Sampler.logit_bias(n_vocab, {int(k): float(v) for k, v in self.logit_bias.items()}))
        if grammar is not None:
            samplers.append(grammar)
        samplers.extend(extra)
        if self.repeat_penalty != 1.0 or self.frequency_penalty or self.presence_penalty:
            samplers.append(Sampler.penalties(n_vocab, self.penalty_last_n, self.repeat_penalty,
                                              self.frequency_penalty, self.presence_penalty))
        if self.dry_multiplier > 0:
            samplers.append(Sampler.dry(vocab, self.dry_multiplier, self.dry_base,
                                        self.dry_allowed_length, self.dry_penalty_last_n))
        if self.temperature <= 0:
            samplers.append(Sampler.greedy())
            return SamplerChain(samplers)
        if self.mirostat_mode == 1:
            samplers += [Sampler.temperature(self.temperature),
                         Sampler.mirostat(n_vocab, self.mirostat_tau, self.mirostat_eta, seed=self.seed)]
            return SamplerChain(samplers)
        if self.mirostat_mode == 2:
            samplers += [Sampler.temperature(self.temperature),
                         Sampler.mirostat_v2(self.mirostat_tau, self.mirostat_eta, seed=self.seed)]
            return SamplerChain(samplers)
        if self.top_n_sigma > 0:
            samplers.append(Sampler.top_n_sigma(self.top_n_sigma))
        if self.top_k > 0:
            samplers.append(Sampler.top_k(self.top_k))
        if self.typical_p < 1.0:
            samplers.append(Sampler.typical(self.typical_p))
        if self.top_p < 1.0:
            samplers.append(Sampler.top_p(self.top_p))
        if self.min_p > 0.0:
            samplers.append(Sampler.min_p(self.min_p))
        if self.xtc_probability > 0:
            samplers.append(Sampler.xtc(self.xtc_probability, self.xtc_threshold, seed=self.seed))
        samplers += [Sampler.temperature(self.temperature), Sampler.dist(self.seed)]
        return SamplerChain(samplers)

    def backend_split(self, vocab):
        """``(backend, host)`` chains for sampling split across device and host, or None.

        The backend chain (logit bias, top-k) runs in the graph and hands the host only k
        candidates; the host chain finishes on those few (typical, top-p, min-p, XTC,
        temperature, dist). Exact: in llama.cpp's order every sampler after top-k only sees
        top-k's survivors anyway. Not for chains whose samplers must see the whole
        vocabulary or keep history (penalties, DRY, mirostat, top-n-sigma) or for greedy.
        """
        from ..native.sampler import Sampler, SamplerChain

        self.validate()
        if (self.temperature <= 0 or self.top_k <= 0 or self.mirostat_mode or self.top_n_sigma > 0
                or self.repeat_penalty != 1.0 or self.frequency_penalty or self.presence_penalty
                or self.dry_multiplier > 0):
            return None
        device = []
        if self.logit_bias:
            device.append(Sampler.logit_bias(vocab.n_tokens, {int(k): float(v) for k, v in self.logit_bias.items()}))
        device.append(Sampler.top_k(self.top_k))
        host = []
        if self.typical_p < 1.0:
            host.append(Sampler.typical(self.typical_p))
        if self.top_p < 1.0:
            host.append(Sampler.top_p(self.top_p))
        if self.min_p > 0.0:
            host.append(Sampler.min_p(self.min_p))
        if self.xtc_probability > 0:
            host.append(Sampler.xtc(self.xtc_probability, self.xtc_threshold, seed=self.seed))
        host += [Sampler.temperature(self.temperature), Sampler.dist(self.seed)]
        return SamplerChain(device), SamplerChain(host)

    def as_dict(self) -> dict:
        return asdict(self)
