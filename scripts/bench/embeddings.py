"""Workload ``embeddings``: a batch of sentences through a BERT embedding model.

llama_ffi ``Llama.create_embedding`` (which packs the inputs into shared batches through
``Llama.embed``) against llama-cpp-python's ``create_embedding``, both over our libllama
and with the same context settings. Figures: texts/s and tokens/s for the whole batch, one
call per repeat, after one discarded warm-up call.

The model is all-MiniLM-L6-v2 converted by scripts/make_embedding_model.py
(``$BENCH_EMBEDDING_MODEL`` overrides it). Each side runs in its own child process:
``python -m scripts.bench.embeddings ours|lcpp JSON`` prints one ``BENCH_RESULT`` line.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

from . import proc
from .env import REPO
from .runs import row
from .stats import Result

MODEL = REPO / "models" / "all-MiniLM-L6-v2.f32.gguf"
N_TEXTS = 256
LCPP = "llama-cpp-python 0.3.36"
_WORDS = ("the a model small large fast slow river city music market data paper light energy "
          "cat dog person child teacher engine network server token vector sentence reads writes "
          "runs finds keeps builds under over near after before quickly quietly every many").split()


def texts(n: int = N_TEXTS, seed: int = 0) -> list[str]:
    """``n`` sentences of 4 to 40 words, the same on every run."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 40))]
        out.append(" ".join(words).capitalize() + ".")
    return out


def model_path() -> Path:
    return Path(os.environ.get("BENCH_EMBEDDING_MODEL", MODEL))


# --- child side -----------------------------------------------------------------------------------
def _kwargs(p: dict) -> dict:
    return {"embedding": True, "n_ctx": p["n_ctx"], "n_batch": p["n_ctx"], "n_ubatch": p["n_ctx"],
            "n_threads": p["threads"], "n_threads_batch": p["threads"], "n_gpu_layers": p["n_gpu_layers"],
            "verbose": False}


def _rates(create, inputs: list[str], reps: int) -> dict:
    create(inputs[:8])  # warm-up
    per_text, per_token, tokens = [], [], 0
    for _ in range(reps):
        t0 = time.perf_counter()
        out = create(inputs)
        elapsed = time.perf_counter() - t0
        assert len(out["data"]) == len(inputs)
        tokens = out["usage"]["prompt_tokens"]
        per_text.append(len(inputs) / elapsed)
        per_token.append(tokens / elapsed)
    return {"samples": per_text, "tokens_per_s": per_token, "tokens": tokens}


def child(side: str, p: dict) -> dict:
    if side == "ours":
        from llama_ffi import Llama
    else:  # llama-cpp-python over our libllama (LLAMA_CPP_LIB_PATH, see lcpp.py)
        from llama_cpp import Llama
    llm = Llama(p["model"], **_kwargs(p))
    try:
        return _rates(llm.create_embedding, texts(p["n_texts"]), p["reps"])
    finally:
        llm.close()


# --- parent side ----------------------------------------------------------------------------------
def _run(side: str, p: dict, env: dict | None) -> dict:
    done = proc.run([sys.executable, "-m", "scripts.bench.embeddings", side, json.dumps(p)], env=env)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(proc.MARKER) and done.returncode == 0:
            result = json.loads(line[len(proc.MARKER):])
            if "error" in result:
                raise proc.WorkerError(result["error"])
            return result
    raise proc.WorkerError(f"embeddings {side} {done.describe()}")


def w_embeddings(s: dict) -> list[Result]:
    model = model_path()
    missing = None if model.exists() else f"skipped: {model.name} missing (run scripts/make_embedding_model.py)"
    p = {"model": str(model), "threads": s["threads"], "n_gpu_layers": s["n_gpu_layers"], "n_ctx": 512,
         "n_texts": N_TEXTS, "reps": s["reps"]}
    runs: dict[str, dict] = {}

    def measure(side: str, env: dict | None, key: str):
        def get() -> dict:
            if side not in runs:
                runs[side] = _run(side, p, env)
            got = runs[side]
            samples = got["samples"] if key == "texts" else got["tokens_per_s"]
            return {"samples": samples, "note": f"{N_TEXTS} texts, {got['tokens']} tokens per call"}
        return get

    wl = "embeddings"
    what = f"{N_TEXTS} sentences, one create_embedding call, {model.stem}"
    lcpp_skip = missing or s["lcpp_skip"]
    rows = [
        row("embeddings/ours", wl, f"llama_ffi create_embedding (Llama.embed), {what}",
            measure("ours", None, "texts"), unit="texts/s", baseline="embeddings/lcpp", skip=missing),
        row("embeddings/ours-tokens", wl, "llama_ffi create_embedding, tokens/s", measure("ours", None, "tokens"),
            baseline="embeddings/lcpp-tokens", skip=missing),
        row("embeddings/lcpp", wl, f"{LCPP} create_embedding, {what}",
            measure("lcpp", s["lcpp_env"], "texts"), unit="texts/s", skip=lcpp_skip),
        row("embeddings/lcpp-tokens", wl, f"{LCPP} create_embedding, tokens/s",
            measure("lcpp", s["lcpp_env"], "tokens"), skip=lcpp_skip),
    ]
    for r in rows:
        r.higher_is_better = True  # texts/s is a throughput too (row() assumes so only for t/s)
    return rows


def main(argv: list[str]) -> int:
    side, params = argv[0], json.loads(argv[1])
    try:
        result = child(side, params)
    except Exception as exc:  # reported to the parent as a row with status "error"
        proc.emit({"error": f"{type(exc).__name__}: {exc}"})
        return 0
    proc.emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
