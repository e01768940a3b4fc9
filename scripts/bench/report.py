"""results.json and the Markdown table. Pure functions of (meta, results)."""

from __future__ import annotations

import json
from dataclasses import asdict

from .stats import Result, ratio

UNIT_HINT = {"t/s": "tokens per second, higher is better", "s": "seconds, lower is better",
             "MiB": "MiB, lower is better"}


def fmt(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value:.3f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def to_json(meta: dict, results: list[Result]) -> str:
    rows = []
    by_key = {r.key: r for r in results}
    for r in results:
        row = asdict(r)
        s = r.summary
        row["median"], row["min"], row["max"] = (s.median, s.low, s.high) if s else (None, None, None)
        base = by_key.get(r.baseline) if r.baseline else None
        row["ratio_to_baseline"] = ratio(r, base) if base else None
        rows.append(row)
    return json.dumps({"meta": meta, "results": rows}, indent=2, sort_keys=True) + "\n"


def _ratio_cell(r: Result, by_key: dict[str, Result]) -> str:
    if not r.baseline:
        return ""
    base = by_key.get(r.baseline)
    if base is None:
        return ""
    x = ratio(r, base)
    return f"{x:.2f}x {base.name}" if x is not None else f"- ({base.name})"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_table(results: list[Result]) -> str:
    by_key = {r.key: r for r in results}
    lines = ["| workload | implementation | median | min-max | n | unit | vs baseline (>1: ours better) | note |",
             "|---|---|---:|---:|---:|---|---|---|"]
    for r in results:
        s = r.summary
        if s is not None and r.status == "ok":
            median, spread = fmt(s.median, r.unit), f"{fmt(s.low, r.unit)}-{fmt(s.high, r.unit)}"
            n = str(s.n)
        else:
            median, spread, n = r.status, "", ""
        lines.append(f"| {r.workload} | {_cell(r.name)} | {median} | {spread} | {n} | {r.unit} "
                     f"| {_cell(_ratio_cell(r, by_key))} | {_cell(r.note)} |")
    return "\n".join(lines)


def render_meta(meta: dict) -> str:
    build = meta.get("build", {})
    lines = [
        f"- date: {meta.get('date', '?')}",
        f"- device: {meta.get('device', '?')}",
        f"- model: `{meta.get('model', '?')}` ({meta.get('model_size_mib', '?')} MiB)",
        f"- llama.cpp {build.get('llama_cpp_commit', '?')}, cuda={build.get('cuda', '?')}, "
        f"flags: `{' '.join(build.get('flags', []))}`",
        f"- threads {meta.get('threads')}, n_gpu_layers {meta.get('n_gpu_layers')}, "
        f"flash attention {meta.get('flash_attn')}, repeat {meta.get('repeat')}"
        + (", QUICK (shortened) run" if meta.get("quick") else ""),
        f"- command: `{meta.get('command', '?')}`",
    ]
    return "\n".join(lines)


def render_markdown(meta: dict, results: list[Result]) -> str:
    units = sorted({r.unit for r in results})
    legend = "; ".join(f"{u}: {UNIT_HINT[u]}" for u in units if u in UNIT_HINT)
    return (f"{render_meta(meta)}\n\n{render_table(results)}\n\n"
            f"Units: {legend}. Median of n runs; min-max is the spread over those runs.\n")
