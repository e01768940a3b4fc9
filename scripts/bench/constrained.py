"""Workload ``json``: what a JSON-Schema grammar costs ``create_completion``.

One child process loads the model once and alternates, per repeat, an unconstrained call
and a call constrained by a typical tool-argument schema (an array of at least 40
weather-lookup arguments): same prompt, same sampling, same ``max_tokens``, and the
end-of-generation token banned in both, so both calls generate exactly ``max_tokens``.
Alternating puts both figures under the same machine noise. The figure is generated
tokens per second over the whole call; the ratio compares the two.

Child: ``python -m scripts.bench.constrained PARAMS_JSON`` prints one ``BENCH_RESULT`` line.
"""

from __future__ import annotations

import json
import sys
import time

from . import proc
from .gen import llama_kwargs
from .runs import row
from .stats import Result

TOOL_ARGS = {
    "type": "object",
    "properties": {
        "location": {"type": "string", "minLength": 1, "maxLength": 100},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "include_forecast": {"type": "boolean"},
        "days": {"type": "integer", "minimum": 1, "maximum": 14},
    },
    "required": ["location"],
    "additionalProperties": False,
}
# minItems keeps the constrained call going to max_tokens, as the free one does.
SCHEMA = {"type": "array", "items": TOOL_ARGS, "minItems": 40}
PROMPT = ("<|im_start|>user\nWrite weather lookups for 100 cities as one JSON array, like "
          '[{"location": "Paris, France", "unit": "celsius", "days": 3}, '
          '{"location": "Oslo, Norway", "unit": "celsius", "include_forecast": true, "days": 7}, ...]'
          "<|im_end|>\n<|im_start|>assistant\n")
SAMPLING = {"temperature": 0.8, "top_k": 40, "seed": 1234}


def measure(p: dict) -> dict:
    """In the child: ``reps`` alternating (free, constrained) calls."""
    from llama_ffi import Llama, LlamaGrammar

    grammar = LlamaGrammar.from_json_schema(SCHEMA, whitespace="bounded")
    n_gen = p["n_gen"]
    out: dict[str, list] = {"free": [], "json": [], "tokens_free": [], "tokens_json": []}
    with Llama(p["model"], **llama_kwargs(p)) as llm:
        # Both calls carry the same end-of-generation ban, so both run to max_tokens.
        sampling = dict(SAMPLING, logit_bias={llm.token_eos(): -100.0})
        llm.create_completion(PROMPT, max_tokens=4, **sampling)  # warm-up; caches the prompt
        for _ in range(p["reps"]):
            for key, extra in (("free", {}), ("json", {"grammar": grammar})):
                t0 = time.perf_counter()
                done = llm.create_completion(PROMPT, max_tokens=n_gen, **sampling, **extra)
                elapsed = time.perf_counter() - t0
                n = done["usage"]["completion_tokens"]
                out[key].append(n / elapsed)
                out["tokens_" + key].append(n)
    return out


def _child(s: dict) -> dict:
    params = {k: s[k] for k in ("model", "n_gpu_layers", "n_ctx", "n_batch", "threads", "flash_attn", "reps")}
    params["n_gen"] = s["n_gen"]
    done = proc.run([sys.executable, "-m", "scripts.bench.constrained", json.dumps(params)],
                    env=proc.child_env())
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(proc.MARKER) and done.returncode == 0:
            return json.loads(line[len(proc.MARKER):])
    raise proc.WorkerError(done.describe())


def w_json(s: dict) -> list[Result]:
    cache: dict[str, dict] = {}

    def samples(key: str):
        def get() -> dict:
            if "run" not in cache:
                cache["run"] = _child(s)
            got = cache["run"]
            tokens = got["tokens_" + key]
            short = [n for n in tokens if n < s["n_gen"]]
            note = f"{len(short)} of {len(tokens)} runs stopped early ({min(tokens)} tokens)" if short else ""
            return {"samples": got[key], "note": note}
        return get

    label = "array of tool arguments (weather_current-like), bounded whitespace"
    return [row("json/ours", "json-schema", f"llama_ffi create_completion, JSON-schema constrained: {label}",
                samples("json"), baseline="json/ours-free"),
            row("json/ours-free", "json-schema", "llama_ffi create_completion, unconstrained, same prompt",
                samples("free"))]


if __name__ == "__main__":
    print(proc.MARKER + json.dumps(measure(json.loads(sys.argv[1]))), flush=True)
