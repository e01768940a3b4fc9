"""Summaries of repeated measurements: median, spread, ratio to a baseline. Pure functions."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass(kw_only=True)
class Result:
    """One figure: an implementation measured on a workload, several times.

    ``key`` is unique in a run ("tg/ours/tokenloop"); ``baseline`` names the key of the row it
    is compared with. ``status`` is "ok", "skipped" (``note`` says why) or "error".
    """

    key: str
    workload: str
    name: str
    unit: str
    higher_is_better: bool
    samples: list[float] = field(default_factory=list)
    baseline: str | None = None
    status: str = "ok"
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def summary(self) -> "Summary | None":
        return summarize(self.samples) if self.samples else None


@dataclass(frozen=True)
class Summary:
    median: float
    low: float
    high: float
    n: int

    @property
    def spread(self) -> float:
        """(max - min) / median: the relative width of the range."""
        return (self.high - self.low) / self.median if self.median else 0.0


def summarize(samples: list[float]) -> Summary:
    if not samples:
        raise ValueError("no samples to summarize")
    return Summary(median=statistics.median(samples), low=min(samples), high=max(samples), n=len(samples))


def ratio(ours: Result, base: Result) -> float | None:
    """How many times better ``ours`` is than ``base`` (>1: better, whatever the unit's direction).

    Throughput: ours / base. Time or memory: base / ours. None when either has no figure."""
    a, b = ours.summary, base.summary
    if a is None or b is None or ours.status != "ok" or base.status != "ok":
        return None
    if ours.higher_is_better:
        return a.median / b.median if b.median else None
    return b.median / a.median if a.median else None


def skipped(key: str, workload: str, name: str, unit: str, note: str, *, higher_is_better: bool = True,
            baseline: str | None = None, status: str = "skipped") -> Result:
    """A row that has no figure, with the reason in ``note``."""
    return Result(key=key, workload=workload, name=name, unit=unit, higher_is_better=higher_is_better,
                  baseline=baseline, status=status, note=note)
