"""What a generation figure means, shared by both Python implementations.

``Llama.create_completion`` has the same signature in llama_ffi and llama-cpp-python, so one
function times both: only the class passed in differs. No library is imported here.
"""

from __future__ import annotations

import time

# A prompt a small model keeps continuing, so greedy runs rarely stop before max_tokens.
PROMPT = "Count from 1 to 1000, separated by commas: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"

# Completion modes: (label, sampling keywords, stream, suppress EOS with logit_bias).
MODES = {
    "greedy": ({"temperature": 0.0}, False, False),
    "greedy-stream": ({"temperature": 0.0}, True, False),
    "sampled": ({"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "seed": 42}, False, False),
    "sampled-stream": ({"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "seed": 42}, True, False),
    "greedy-stream-logit-bias": ({"temperature": 0.0}, True, True),
}


def llama_kwargs(p: dict) -> dict:
    """Constructor keywords understood by both Llama classes."""
    return {"n_gpu_layers": p["n_gpu_layers"], "n_ctx": p["n_ctx"], "n_batch": p["n_batch"],
            "n_ubatch": p["n_batch"], "n_threads": p["threads"], "n_threads_batch": p["threads"],
            "flash_attn": p["flash_attn"], "seed": 1234, "verbose": False}


def completion_once(llm, mode: str, n_gen: int) -> tuple[float, int, str]:
    """Time one create_completion call in ``mode``; return (seconds, tokens, finish_reason).

    The time covers the whole call, as a user sees it: the (short, mostly cached) prompt,
    generation and detokenization."""
    sampling, stream, bias = MODES[mode]
    kwargs = dict(sampling, max_tokens=n_gen, stream=stream)
    if bias:
        kwargs["logit_bias"] = {llm.token_eos(): -100.0}
    t0 = time.perf_counter()
    out = llm.create_completion(PROMPT, **kwargs)
    if stream:
        pieces, finish = [], None
        for chunk in out:
            choice = chunk["choices"][0]
            pieces.append(choice["text"])
            finish = choice.get("finish_reason") or finish
        elapsed = time.perf_counter() - t0
        text = "".join(pieces)
        # Chunks are not tokens in every implementation: count exactly when the limit was
        # reached, else re-tokenize the text (close, not exact).
        n = n_gen if finish == "length" else len(llm.tokenize(text.encode(), add_bos=False))
        return elapsed, n, finish or "?"
    elapsed = time.perf_counter() - t0
    return elapsed, out["usage"]["completion_tokens"], out["choices"][0]["finish_reason"]


def completion_rates(llm, mode: str, n_gen: int, reps: int) -> dict:
    completion_once(llm, mode, 8)  # warm-up: first-call costs are not the steady state
    samples, short = [], []
    for _ in range(reps):
        elapsed, n, finish = completion_once(llm, mode, n_gen)
        samples.append(n / elapsed)
        if n < n_gen:
            short.append(n)
    note = f"stopped early in {len(short)} of {reps} runs (tokens {short})" if short else ""
    return {"samples": samples, "note": note}
