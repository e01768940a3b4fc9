"""A generation request as the engine sees it, and the events it streams back."""

from __future__ import annotations

import enum
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..generation.spec import GenerationSpec

_ids = itertools.count(1)


class State(enum.Enum):
    QUEUED = "queued"
    PREFILL = "prefill"
    DECODE = "decode"
    FINISHED = "finished"


@dataclass
class Event:
    """One step's worth of output for one request."""

    text: str = ""
    tokens: tuple[int, ...] = ()
    logprobs: list | None = None  # LogprobCollector entries: (token, logprob, [(token, logprob), ...])
    finish_reason: str | None = None  # "stop", "length", "cancelled", "error"
    error: BaseException | None = None


@dataclass(eq=False)
class Request:
    """What to generate. ``sink`` receives Events on the engine thread and must be quick."""

    prompt: np.ndarray  # int32 token ids; grows by the output so far when preempted
    spec: GenerationSpec  # what generation.prepare checked
    max_tokens: int  # the budget: spec.max_tokens resolved against the sequence's room
    sink: Callable[[Event], None]
    id: int = field(default_factory=lambda: next(_ids))
    submitted_at: float = field(default_factory=time.perf_counter)
    # engine-side state
    state: State = State.QUEUED
    first_token_at: float | None = None
    n_generated: int = 0
    n_cached: int = 0  # prompt tokens reused from the prefix cache
    n_submitted: int = -1  # prompt tokens as submitted; ``prompt`` grows when preempted
    output: object = None  # its generation.SequenceOutput, from the first admission on
    row_sampler: object = None  # its generation.batched.RowSampler, when its chain is sampled in bulk
    speculative: object = None  # generation.drafting.SpeculativeOptions: draft by prompt lookup when few run
    loras: frozenset | None = None  # its LoRA adapter set (engine.adapters); None: the engine's default
    drafter: object = None  # its PromptLookupDrafter, from the first admission on
    draft_window: object = None  # native.loop.DraftWindow: how many drafts to ask for next
    n_drafted: int = 0  # draft tokens checked by the model, and those it kept
    n_draft_accepted: int = 0
    # a MediaPrompt (llama.vision): its prefix tokens and libmtmd chunks, evaluated at admission;
    # ``prompt`` then holds its ``cells``: negative keys for the cells a media chunk fills
    media: object = None
    _cancel: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        if self.n_submitted < 0:
            self.n_submitted = len(self.prompt)

    def cancel(self) -> None:
        """Stop at the engine's next step; the sequence's cells are freed then."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def sampling(self):
        return self.spec.sampling

    @property
    def grammar(self):
        return self.spec.grammar

    @property
    def logprobs(self) -> int | None:
        return self.spec.logprobs

    @property
    def n_prompt(self) -> int:
        """Prompt tokens for ``usage``: an image counts its embeddings."""
        return self.n_submitted if self.media is None else self.media.n_tokens

    def close_media(self) -> None:
        if self.media is not None:
            self.media.close()

    @property
    def resumed_tokens(self) -> np.ndarray:
        """Tokens generated before a preemption, now part of ``prompt`` to be recomputed."""
        return self.prompt[self.n_submitted:]
