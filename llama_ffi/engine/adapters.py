"""LoRA adapter sets of engine requests, and when the context switches between them.

llama.cpp attaches adapters to a whole context (``llama_set_adapters_lora``), so one decode
step runs under one set of adapters and scales. A request carries its set (``{adapter:
scale}``, normalised: zero scales dropped); the scheduler decodes only requests of the
context's current set and switches sets between steps, when nothing of the current set
runs, or after a request of another set has waited ``switch_after`` steps (then no new
request of the current set is admitted, the running ones finish, and the context switches).

Sets are interned: equal sets are the same frozenset object, so the scheduler compares
them with ``is`` (one pointer comparison per request at admission, nothing per step).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping

from ..errors import ValidationError

__all__ = ["AdapterSets"]

MAX_INTERNED = 1024  # distinct sets remembered (clients may send any scales)


class AdapterSets:
    """Interned adapter sets of one model. ``get`` may be called from any thread."""

    def __init__(self, model) -> None:
        self.model = model
        self._known: dict[frozenset, frozenset] = {}
        self._lock = threading.Lock()
        self.empty = self.get({})

    def get(self, scales: Mapping) -> frozenset:
        """``{adapter: scale}`` as the interned frozenset of its ``(adapter, scale)`` pairs."""
        if not isinstance(scales, Mapping):
            raise ValidationError("loras must be a mapping {LoraAdapter: scale}", param="lora")
        pairs = []
        for adapter, scale in scales.items():
            if getattr(adapter, "model", None) is not self.model:
                raise ValidationError("a LoRA adapter can only be used with the model it was loaded for",
                                      param="lora")
            if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
                raise ValidationError(f"a LoRA scale must be a finite number, got {scale!r}", param="lora")
            if scale != 0:  # scale 0 is the adapter left out: the same weights, the same cells
                pairs.append((adapter, float(scale)))
        key = frozenset(pairs)
        with self._lock:
            if len(self._known) >= MAX_INTERNED and key not in self._known:
                # Forgetting is safe: an equal set interned anew is another object, which the
                # scheduler treats as another set (a switch, no shared prefix), never as the same.
                self._known = {self.empty: self.empty}
            return self._known.setdefault(key, key)

    @staticmethod
    def scales(lora_set: frozenset) -> dict:
        """The set as ``{adapter: scale}`` (what ``Context.set_loras`` takes)."""
        return dict(lora_set)
