"""Single-stream tokens/s with and without speculative decoding, on one model.

    python -m scripts.bench.speculative --model models/SmolLM2-135M-Instruct.Q4_1.gguf
    python -m scripts.bench.speculative --model big.gguf --draft small.gguf --n-gpu-layers -1
    python -m scripts.bench.speculative --model M.gguf --engine 1,4,16,64 --n-gpu-layers -1

Tasks: a repetitive one (an edit that quotes its input, where prompt lookup shines) and free
text (where it rarely helps). Modes: plain, prompt lookup, and a draft GGUF when ``--draft``
is given. Greedy; each cell is the best of ``--repeat`` runs, after one warm-up call. Prints a
markdown table: tokens/s, speed-up over plain, drafts accepted/drafted. Runs on CPU or GPU.

``--server``: also llama-server, single stream, the same tasks, greedy, no prompt reuse: plain,
n-gram drafts with our prompt lookup's settings (``--spec-type ngram-simple``, lookup
``--max-ngram-size`` tokens, draft ``--num-pred-tokens``), n-gram at llama-server's own defaults,
and ``--draft`` as its draft model with the same draft length.

``--engine N1,N2,...``: instead, the engine's aggregate tokens/s with N concurrent requests
(the tasks in turn), every request speculating (the running-count limit lifted) or none: where
speculation stops paying is where ``EngineConfig.spec_max_running`` belongs.
"""

from __future__ import annotations

import argparse
import time

CODE = '''def total_price(items):
    total = 0
    for item in items:
        total = total + item.price * item.quantity
    return total


def total_weight(items):
    total = 0
    for item in items:
        total = total + item.weight * item.quantity
    return total
'''

TASKS = {
    "code-edit": ("Rewrite this Python code, renaming the variable `total` to `result`. Output only the code.\n\n"
                  f"{CODE}\nRewritten code:\n"),
    "quote-list": ("Repeat this list exactly, one per line: apple, banana, cherry, date, elderberry, fig, grape, "
                   "honeydew, kiwi, lemon, mango, nectarine, orange, papaya, quince, raspberry.\nList:\napple\n"),
    "free-text": "Write a short story about a lighthouse keeper who finds a message in a bottle.\n\n",
}


def run_once(llm, prompt: str, n_gen: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    out = llm(prompt, max_tokens=n_gen, temperature=0.0)
    return time.perf_counter() - t0, out["usage"]["completion_tokens"]


def measure(llm, prompt: str, n_gen: int, repeat: int) -> tuple[float, int, int]:
    """(best tokens/s, drafted, accepted) over ``repeat`` runs after a warm-up."""
    run_once(llm, prompt, 8)
    best = 0.0
    for _ in range(repeat):
        llm.reset()  # time the prompt too, as a new request would see it
        seconds, tokens = run_once(llm, prompt, n_gen)
        best = max(best, tokens / seconds)
    return best, llm.stats.last_drafted, llm.stats.last_accepted


def server_modes(args) -> dict[str, list[str]]:
    ngram = ["--spec-type", "ngram-simple", "--spec-draft-n-max", str(args.num_pred_tokens)]
    modes = {"plain": [],
             "ngram-simple (our settings)": [*ngram, "--spec-ngram-simple-size-n", str(args.max_ngram_size),
                                             "--spec-ngram-simple-size-m", str(args.num_pred_tokens)],
             "ngram-simple (its defaults)": ["--spec-type", "ngram-simple"]}
    if args.draft:
        modes["draft-model"] = ["--spec-type", "draft-simple", "-md", args.draft, "-ngld", str(args.n_gpu_layers), "--spec-draft-n-max",
                                str(args.num_pred_tokens)]
    return modes


def llama_server_rows(args, tasks: list[str]) -> dict[tuple[str, str], tuple[float, int, int]]:
    """(mode, task) -> (best tokens/s, drafted, accepted) for llama-server over /completion."""
    import subprocess

    import httpx

    from .env import REPO, VENDOR_BIN
    from .serving import _free_port, _wait_healthy, stop

    results = {}
    for mode, flags in server_modes(args).items():
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [str(VENDOR_BIN / "llama-server"), "-m", args.model, "--host", "127.0.0.1", "--port", str(port),
               "-c", str(args.n_ctx), "-np", "1", "-ngl", str(args.n_gpu_layers), "-fa", "on", "--no-webui", *flags]
        server = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  stdin=subprocess.DEVNULL)
        try:
            _wait_healthy(url, server, timeout=300)

            def one(prompt: str, n_gen: int) -> tuple[float, dict]:
                body = {"prompt": prompt, "n_predict": n_gen, "temperature": 0.0, "cache_prompt": False}
                t0 = time.perf_counter()
                reply = httpx.post(url + "/completion", json=body, timeout=600)
                reply.raise_for_status()
                return time.perf_counter() - t0, reply.json()["timings"]

            for task in tasks:
                one(TASKS[task], 8)
                best, timings = 0.0, {}
                for _ in range(args.repeat):
                    seconds, timings = one(TASKS[task], args.n_gen)
                    best = max(best, timings["predicted_n"] / seconds)
                results[mode, task] = (best, timings.get("draft_n", 0), timings.get("draft_n_accepted", 0))
        finally:
            stop(server)
    return results


def engine_rows(args, tasks: list[str]) -> None:
    """Aggregate t/s of N concurrent greedy requests with prompt-lookup speculation on and off."""
    import asyncio

    from llama_ffi.engine import Engine
    from llama_ffi.generation import SamplingParams

    counts = [int(n) for n in args.engine.split(",")]
    top = max(counts)

    async def wave(eng, n: int, speculative) -> tuple[float, int]:
        prompts = [TASKS[tasks[i % len(tasks)]] for i in range(n)]
        t0 = time.perf_counter()
        done = await asyncio.gather(*(eng.complete(p, sampling=SamplingParams(temperature=0),
                                                   max_tokens=args.n_gen, speculative=speculative) for p in prompts))
        return time.perf_counter() - t0, sum(len(c.tokens) for c in done)

    print(f"model: {args.model}  n_gen: {args.n_gen}  n_gpu_layers: {args.n_gpu_layers}  engine, greedy, "
          f"tasks {','.join(tasks)} in turn, best of {args.repeat}\n")
    print("| concurrent | plain t/s | speculative t/s | speed-up | accepted/drafted |")
    print("|---:|---:|---:|---:|---:|")
    with Engine(args.model, n_ctx=top * (args.n_gen + 256), n_seq_max=top, n_gpu_layers=args.n_gpu_layers,
                spec_max_running=top) as eng:
        asyncio.run(wave(eng, 2, None))  # warm-up
        for n in counts:
            asyncio.run(wave(eng, n, None))  # both measured waves then find the prompts cached alike
            rates = {}
            for label, spec in (("plain", None), ("spec", {"n_max": args.num_pred_tokens})):
                before = eng.stats()
                best = 0.0
                for _ in range(args.repeat):
                    seconds, tokens = asyncio.run(wave(eng, n, spec))
                    best = max(best, tokens / seconds)
                after = eng.stats()
                rates[label] = best
                drafted = after["draft_tokens"] - before["draft_tokens"]
                accepted = after["draft_accepted"] - before["draft_accepted"]
            print(f"| {n} | {rates['plain']:.0f} | {rates['spec']:.0f} | {rates['spec'] / rates['plain']:.2f}x "
                  f"| {accepted}/{drafted} |", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--draft", help="a draft GGUF with the same vocabulary")
    ap.add_argument("--n-gen", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--n-gpu-layers", type=int, default=0)
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--num-pred-tokens", type=int, default=10)
    ap.add_argument("--max-ngram-size", type=int, default=2)
    ap.add_argument("--server", action="store_true", help="also measure llama-server with the same settings")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--engine", help="comma-separated concurrency levels: measure the engine instead")
    args = ap.parse_args(argv)
    if args.engine:
        engine_rows(args, [t for t in args.tasks.split(",") if t])
        return 0

    from llama_ffi import Llama, LlamaPromptLookupDecoding

    modes = {"plain": None, "prompt-lookup": lambda: LlamaPromptLookupDecoding(
        max_ngram_size=args.max_ngram_size, num_pred_tokens=args.num_pred_tokens)}
    if args.draft:
        modes["draft-model"] = lambda: args.draft
    tasks = [t for t in args.tasks.split(",") if t]
    results: dict[tuple[str, str], tuple[float, int, int]] = {}
    for mode, make in modes.items():
        with Llama(args.model, n_ctx=args.n_ctx, n_batch=512, n_gpu_layers=args.n_gpu_layers, verbose=False,
                   draft_model=make() if make else None) as llm:
            for task in tasks:
                results[mode, task] = measure(llm, TASKS[task], args.n_gen, args.repeat)
    peer_modes = []
    if args.server:
        peer = llama_server_rows(args, tasks)
        peer_modes = list(server_modes(args))
        results.update({(f"llama-server {mode}", task): r for (mode, task), r in peer.items()})
    print(f"model: {args.model}  n_gen: {args.n_gen}  n_gpu_layers: {args.n_gpu_layers}  greedy, best of "
          f"{args.repeat}\n")
    print("| task | mode | tokens/s | vs our plain | accepted/drafted |")
    print("|---|---|---:|---:|---:|")
    for task in tasks:
        base = results["plain", task][0]
        for mode in [*modes, *(f"llama-server {m}" for m in peer_modes)]:
            tps, drafted, accepted = results[mode, task]
            ratio = f"{accepted}/{drafted}" if not mode.endswith("plain") else "-"
            print(f"| {task} | {mode} | {tps:.1f} | {tps / base:.2f}x | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
