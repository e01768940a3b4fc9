"""Serving workloads: the engine under concurrency, the HTTP server against llama-server,
and requests sharing a long prefix.

Engine runs happen in a child (``python -m scripts.bench.serving TASK JSON``) so the
parent never loads libllama; servers run as their own processes and the parent drives
them with an asyncio httpx load generator on loopback. End-of-generation tokens are
banned (logit bias) so every request generates exactly the tokens asked for.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time

from . import proc
from .env import REPO, VENDOR_BIN

EOG_BAN = {"0": -100, "1": -100, "2": -100}  # SmolLM2's <|endoftext|>, <|im_start|>, <|im_end|>


# --- parent side: rows ----------------------------------------------------------------------
def child(task: str, params: dict, timeout: float = 900) -> dict:
    done = proc.run([sys.executable, "-m", "scripts.bench.serving", task, json.dumps(params)], timeout=timeout)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(proc.MARKER) and done.returncode == 0:
            result = json.loads(line[len(proc.MARKER):])
            if "error" in result:
                raise proc.WorkerError(result["error"])
            return result
    raise proc.WorkerError(f"serving {task} {done.describe()}")


def engine_params(s: dict, **extra) -> dict:
    return {"model": s["model"], "threads": s["threads"], "n_gpu_layers": s["n_gpu_layers"],
            "flash_attn": s["flash_attn"], "reps": s["reps_concurrent"], **extra}


def _percentiles(values: list[float]) -> dict:
    values = sorted(values)
    if not values:
        return {}
    return {"ttft_p50_ms": round(1000 * values[len(values) // 2], 1),
            "ttft_p99_ms": round(1000 * values[min(len(values) - 1, int(len(values) * 0.99))], 1)}


# --- the HTTP load generator ---------------------------------------------------------------
async def _one(client, url: str, body: dict) -> tuple[float | None, int]:
    """(seconds to the first text, completion tokens) of one streamed completion."""
    start, first, chunks, usage = time.perf_counter(), None, 0, None
    async with client.stream("POST", url + "/v1/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line[6:])
            if "error" in data:
                raise RuntimeError(data["error"])
            usage = data.get("usage") or usage
            if data.get("choices") and data["choices"][0].get("text"):
                chunks += 1
                first = first if first is not None else time.perf_counter() - start
    return first, (usage or {}).get("completion_tokens") or chunks


async def load(url: str, n: int, n_gen: int, prompt: str, temperature: float = 0.8) -> dict:
    import httpx

    body = {"model": "m", "prompt": prompt, "max_tokens": n_gen, "temperature": temperature, "stream": True,
            "stream_options": {"include_usage": True}, "logit_bias": EOG_BAN}
    limits = httpx.Limits(max_connections=n + 8, max_keepalive_connections=n + 8)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        await _one(client, url, {**body, "max_tokens": 4})  # warm-up
        start = time.perf_counter()
        results = await asyncio.gather(*(_one(client, url, {**body, "seed": i}) for i in range(n)))
        wall = time.perf_counter() - start
    tokens = sum(r[1] for r in results)
    return {"tps": tokens / wall, "tokens": tokens, "wall_s": wall,
            "ttft": [r[0] for r in results if r[0] is not None]}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, server: subprocess.Popen, timeout: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise proc.WorkerError(f"server exited with {server.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise proc.WorkerError("server did not become healthy")


def stop(server: subprocess.Popen) -> None:
    """End a server process: politely, then for good after 30 s."""
    server.terminate()
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        server.kill()


def server_command(kind: str, s: dict, port: int, n_ctx: int, n: int) -> list[str]:
    if kind in ("ours", "ours-streams"):
        return [sys.executable, "-m", "llama_ffi.server", "-m", s["model"], "-a", "m", "--port", str(port),
                "-c", str(n_ctx), "-np", str(n), "-t", str(s["threads"]), "-ngl", str(s["n_gpu_layers"]),
                *(["--no-kv-unified"] if kind == "ours-streams" else [])]
    binary = VENDOR_BIN / "llama-server"
    if not binary.exists():
        from .native import ToolMissing

        raise ToolMissing("llama-server not built: run `python3 scripts/build_libllama.py --tools all`")
    return [str(binary), "-m", s["model"], "--host", "127.0.0.1", "--port", str(port), "-c", str(n_ctx),
            "-np", str(n), "-kvu", "-t", str(s["threads"]), "-ngl", str(s["n_gpu_layers"]),
            "-fa", "on" if s["flash_attn"] else "off", "--no-webui",
            *(["--backend-sampling"] if kind == "lcpp-bs" else [])]


def measure_server(kind: str, s: dict, n: int, n_gen: int, reps: int) -> dict:
    port = _free_port()
    n_ctx = n * (n_gen + 64)
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(server_command(kind, s, port, n_ctx, n), cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        _wait_healthy(url, server)
        runs = [asyncio.run(load(url, n, n_gen, "Write a short story about a robot who learns to paint."))
                for _ in range(reps)]
    finally:
        stop(server)
    ttft = [t for r in runs for t in r["ttft"]]
    return {"samples": [r["tps"] for r in runs], "note": f"{n} x {n_gen} tokens, streamed, temperature 0.8",
            **_percentiles(ttft)}


# --- child side: the engine ------------------------------------------------------------------
def _engine(p: dict, n_seq: int, n_ctx: int):
    from llama_ffi.engine import Engine, EngineConfig

    return Engine(p["model"], EngineConfig(n_ctx=n_ctx, n_seq_max=n_seq, n_threads=p["threads"],
                                           n_gpu_layers=p["n_gpu_layers"],
                                           flash_attn="on" if p["flash_attn"] else "off"))


def _prompts(engine, n: int, length: int) -> list[list[int]]:
    import numpy as np

    rng = np.random.default_rng(0)
    return [rng.integers(200, engine.model.vocab.n_tokens - 200, length).tolist() for _ in range(n)]


async def _crowd(engine, prompts, n_gen: int) -> tuple[float, int, list[float]]:
    from llama_ffi.generation import SamplingParams

    ban = {t: -100.0 for t in engine.model.vocab.eog_tokens}
    start = time.perf_counter()

    async def one(i, prompt):
        first, count = None, 0
        async for event in engine.generate(prompt, max_tokens=n_gen,
                                           sampling=SamplingParams(seed=i, logit_bias=ban)):
            count += len(event.tokens)
            if first is None and event.tokens:
                first = time.perf_counter() - start
        return first, count

    results = await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
    return time.perf_counter() - start, sum(r[1] for r in results), [r[0] for r in results if r[0] is not None]


def task_concurrent(p: dict) -> dict:
    """N requests at once (``sequential``: one at a time): aggregate generated t/s, TTFT."""
    n, n_gen, n_prompt = p["parallel"], p["n_gen"], p.get("n_prompt", 32)
    sequential = p.get("sequential", False)
    engine = _engine(p, 1 if sequential else n, n * (n_prompt + n_gen) + 64)
    try:
        asyncio.run(_crowd(engine, _prompts(engine, 1, 8), 4))  # warm-up
        samples, ttft = [], []
        for rep in range(p["reps"]):
            prompts = _prompts(engine, n, n_prompt)
            prompts = [[rep + 1] + q for q in prompts]  # no prefix shared with the previous repeat
            wall, tokens, firsts = asyncio.run(_crowd(engine, prompts, n_gen))
            samples.append(tokens / wall)
            ttft += firsts
    finally:
        engine.close()
    return {"samples": samples, **_percentiles(ttft)}


def task_prefix(p: dict) -> dict:
    """``n`` requests sharing a ~1000-token system prompt: prefill computed vs sent, t/s."""
    n, n_gen = p["parallel"], p["n_gen"]
    engine = _engine(p, n, p.get("n_ctx", 16384))
    try:
        shared = _prompts(engine, 1, 1000)[0]
        tails = _prompts(engine, n, 16)
        wall, tokens, firsts = asyncio.run(_crowd(engine, [shared + t for t in tails], n_gen))
        stats = engine.stats()
    finally:
        engine.close()
    sent, computed = stats["prompt_tokens"], stats["prompt_tokens"] - stats["cached_prompt_tokens"]
    return {"samples": [tokens / wall], "prefill_sent": sent, "prefill_computed": computed,
            "note": f"{n} requests, 1000 shared + 16 own prompt tokens, {n_gen} generated: prefill computed "
                    f"{computed} of {sent} tokens sent", **_percentiles(firsts)}


TASKS = {"concurrent": task_concurrent, "prefix": task_prefix}


def main(argv: list[str]) -> int:
    task, params = argv[0], json.loads(argv[1])
    try:
        result = TASKS[task](params)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as an error row
        result = {"error": f"{type(exc).__name__}: {exc}"}
    proc.emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
