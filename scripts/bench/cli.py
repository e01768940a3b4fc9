"""``python -m scripts.bench``: run workloads, print the table, write results.json/results.md."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from . import env, lcpp, placeholders, report, workloads
from .runs import progress
from .stats import Result

WORKLOADS = {
    "import": workloads.w_import,
    "load": workloads.w_load,
    "pp512": workloads.w_pp512,
    "tg": workloads.w_tg,
    "rss": workloads.w_rss,
    "concurrent": placeholders.w_concurrent,
    "server": placeholders.w_server,
    "prefix": placeholders.w_prefix,
    "embeddings": placeholders.w_embeddings,
    "json": placeholders.w_json_schema,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m scripts.bench", description=__doc__)
    p.add_argument("--model", type=Path, default=env.DEFAULT_MODEL)
    p.add_argument("--workloads", default=",".join(WORKLOADS),
                   help=f"comma list of {', '.join(WORKLOADS)} (default: all)")
    p.add_argument("--repeat", type=int, default=None, help="runs per figure (default 5; --quick: 2)")
    p.add_argument("--n-gpu-layers", type=int, default=0, help="layers to offload (99: all; default 0)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads for every implementation")
    p.add_argument("--no-flash-attn", dest="flash_attn", action="store_false", help="flash attention off everywhere")
    p.add_argument("--n-gen", type=int, default=None, help="tokens to generate (default 256; --quick: 64)")
    p.add_argument("--out", type=Path, default=None, help="folder for results.json and results.md")
    p.add_argument("--quick", action="store_true", help="fewer repeats and shorter runs, for a fast look")
    args = p.parse_args(argv)
    unknown = [w for w in args.workloads.split(",") if w and w not in WORKLOADS]
    if unknown:
        p.error(f"unknown workloads {unknown}; choose from {', '.join(WORKLOADS)}")
    return args


def _llama_skip() -> str | None:
    """None when llama_ffi's Llama imports, else why its workloads are skipped."""
    for stmt in ("from llama_ffi import Llama", "from llama_ffi.llama import Llama"):
        done = subprocess.run([sys.executable, "-c", stmt], capture_output=True, text=True, cwd=env.REPO)
        if done.returncode == 0:
            return None
    return f"not implemented yet: llama_ffi.Llama does not import ({done.stderr.strip().splitlines()[-1:]})"


def settings(args: argparse.Namespace, workdir: Path) -> dict:
    quick = args.quick
    reps = args.repeat or (2 if quick else 5)
    n_gen = args.n_gen or (64 if quick else 256)
    lcpp_env, lcpp_why = lcpp.prepare(workdir)
    return {
        "model": str(args.model.resolve()), "threads": args.threads, "n_gpu_layers": args.n_gpu_layers,
        "flash_attn": args.flash_attn, "n_ctx": 2048, "n_batch": 512, "n_prompt": 512, "n_gen": n_gen,
        "reps": reps, "runs": max(reps, 3), "runs_rss": reps, "quick": quick,
        "n_gen_concurrent": 32 if quick else 128, "reps_concurrent": 1 if quick else min(reps, 3),
        "lcpp_env": lcpp_env, "lcpp_skip": f"skipped: {lcpp_why}" if lcpp_env is None else None,
        "llama_skip": _llama_skip(),
    }


def meta(args: argparse.Namespace, s: dict, argv: list[str]) -> dict:
    size = args.model.stat().st_size / 2**20 if args.model.exists() else None
    return {"date": env.now(), "device": env.device(args.n_gpu_layers), "build": env.build_info(),
            "model": args.model.name, "model_size_mib": round(size, 1) if size else None,
            "threads": s["threads"], "n_gpu_layers": s["n_gpu_layers"], "flash_attn": s["flash_attn"],
            "repeat": s["reps"], "n_gen": s["n_gen"], "quick": s["quick"], "repo_commit": env.repo_commit(),
            "python": sys.version.split()[0],
            "command": "python -m scripts.bench " + " ".join(shlex.quote(a) for a in argv)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if not args.model.exists():
        sys.exit(f"model not found: {args.model}")
    chosen = [w for w in args.workloads.split(",") if w]
    with tempfile.TemporaryDirectory(prefix="llama-ffi-bench-") as tmp:
        s = settings(args, Path(tmp))
        for why in (s["lcpp_skip"], s["llama_skip"]):
            if why:
                progress(why)
        results: list[Result] = []
        for name in chosen:
            results += WORKLOADS[name](s)
        info = meta(args, s, argv)
    markdown = report.render_markdown(info, results)
    print(markdown)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(report.to_json(info, results))
        (args.out / "results.md").write_text(markdown)
        progress(f"wrote {args.out / 'results.json'} and {args.out / 'results.md'}")
    return 0
