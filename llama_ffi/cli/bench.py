"""``bench``: a quick single-stream benchmark through ``Llama`` (prompt processing, generation).

Measured like llama-bench's pp/tg tests: ppN decodes an N-token prompt from an
empty KV cache (and samples one token); tgN generates N tokens one at a time after a
one-token prompt, with end-of-generation tokens banned so every run is N long. Each test
runs --repetitions times after one warm-up; the report is the mean and standard
deviation of tokens per second. For the full harness (engine, server, llama-cpp-python,
several streams) run `python -m scripts.bench` from a repository checkout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import TextIO

from ._common import Formatter, UsageError, model_kwargs, model_options

EXAMPLES = """\
examples:
  llama-ffi bench                                   pp128 and tg64 on the default model, CPU
  llama-ffi bench -m model.gguf --device gpu -p 512 -n 128
  llama-ffi bench --threads 8 --json > result.json

the full harness (several streams, the engine, the server, llama-cpp-python side by side)
lives in the repository: python -m scripts.bench --help
"""

_FILLER = ("The quick brown fox jumps over the lazy dog while the committee reviews the annual "
           "budget, weather reports, train timetables and a long list of recipes. ")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("bench", parents=[model_options()], formatter_class=Formatter, epilog=EXAMPLES,
                            help="quick prompt/generation speed test",
                            description=__doc__.split("\n\n", 1)[1].strip())
    parser.add_argument("--n-prompt", "-p", type=int, default=128, metavar="N", help="prompt tokens (0: skip)")
    parser.add_argument("--n-gen", "-n", type=int, default=64, metavar="N", help="generated tokens (0: skip)")
    parser.add_argument("--repetitions", "-r", type=int, default=3, metavar="N", help="measured runs per test")
    parser.add_argument("--n-batch", type=int, default=512, metavar="N", help="prompt tokens per decode call")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(handler=_bench, usage=parser)


def _bench(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    from ..llama import Llama

    if args.n_prompt < 0 or args.n_gen < 0 or args.repetitions < 1 or args.n_prompt + args.n_gen == 0:
        raise UsageError("--n-prompt and --n-gen must be >= 0 (not both 0), --repetitions >= 1")
    kwargs = model_kwargs(args)
    kwargs["n_ctx"] = max(args.n_ctx, args.n_prompt + args.n_gen + 8)
    kwargs["n_batch"] = kwargs["n_ubatch"] = args.n_batch
    with Llama(**kwargs) as llm:
        results = []
        if args.n_prompt:
            prompt = _prompt(llm, args.n_prompt)
            results.append(_measure(llm, f"pp{args.n_prompt}", args.n_prompt, args.repetitions,
                                    lambda: llm.create_completion(prompt, max_tokens=1, temperature=0)))
        if args.n_gen:
            start = [llm.token_bos() if llm.token_bos() >= 0 else _prompt(llm, 1)[0]]
            ban = {t: float("-inf") for t in llm.model.vocab.eog_tokens}
            results.append(_measure(llm, f"tg{args.n_gen}", args.n_gen, args.repetitions,
                                    lambda: llm.create_completion(start, max_tokens=args.n_gen, temperature=0,
                                                                  logit_bias=ban)))
        setup = {"model": Path(llm.model_path).name, "description": llm.model.description,
                 "devices": llm.model.placement(), "n_threads": llm.context_params.n_threads,
                 "n_batch": args.n_batch}
    if args.json:
        json.dump({"setup": setup, "results": results}, out, indent=2)
        out.write("\n")
        return 0
    threads = setup["n_threads"] or "default"
    out.write(f"{setup['model']} ({setup['description']}) on {setup['devices']}, threads: {threads}\n")
    out.write(f"{'test':<8} {'tokens/s':>10} {'± sd':>8}\n")
    for r in results:
        out.write(f"{r['test']:<8} {r['tokens_per_s']:>10.1f} {r['stdev']:>8.1f}\n")
    return 0


def _prompt(llm, n: int) -> list[int]:
    """``n`` tokens of ordinary text (no BOS in the middle)."""
    piece = llm.tokenize(_FILLER.encode(), add_bos=False)
    tokens = (piece * (n // len(piece) + 1))[:n]
    return tokens


def _measure(llm, name: str, n_tokens: int, repetitions: int, call) -> dict:
    rates = []
    for i in range(repetitions + 1):  # the first run warms caches and is not counted
        llm.reset()
        start = time.perf_counter()
        call()
        elapsed = time.perf_counter() - start
        if i:
            rates.append(n_tokens / elapsed)
    return {"test": name, "tokens": n_tokens, "tokens_per_s": statistics.fmean(rates),
            "stdev": statistics.stdev(rates) if len(rates) > 1 else 0.0, "runs": rates}
