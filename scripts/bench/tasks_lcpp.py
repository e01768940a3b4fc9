"""Measurements made inside a child process with llama-cpp-python over our libllama.

The child's PYTHONPATH holds llama-cpp-python's pure-Python package (see lcpp.py) and
LLAMA_CPP_LIB_PATH points at vendor/lib, so both bindings drive the same library build.
"""

from __future__ import annotations

import time

from .gen import PROMPT, completion_rates, llama_kwargs


class DeclarationMismatch(RuntimeError):
    """llama-cpp-python's ctypes declarations do not fit the libllama it loaded."""


def _llama_cpp():
    try:
        import llama_cpp
    except (AttributeError, OSError) as exc:  # a missing symbol or an unloadable library
        raise DeclarationMismatch(
            f"llama-cpp-python's ctypes declarations do not match this libllama: {type(exc).__name__}: {exc}"
        ) from None
    return llama_cpp


def _llama(p: dict):
    return _llama_cpp().Llama(p["model"], **llama_kwargs(p))


def load(p: dict) -> dict:
    llama_cpp = _llama_cpp()  # the library loads at import, outside the figure
    t0 = time.perf_counter()
    llm = llama_cpp.Llama(p["model"], **llama_kwargs(p))
    elapsed = time.perf_counter() - t0
    llm.close()
    return {"samples": [elapsed]}


def tg_completion(p: dict) -> dict:
    llm = _llama(p)
    try:
        return completion_rates(llm, p["mode"], p["n_gen"], p["reps"])
    finally:
        llm.close()


def tg_generate(p: dict) -> dict:
    """The lower-level ``Llama.generate`` token iterator, greedy, detokenizing each token."""
    llm = _llama(p)
    try:
        prompt = llm.tokenize(PROMPT.encode())
        samples = []
        for i in range(p["reps"] + 1):
            n = 0
            t0 = time.perf_counter()
            for token in llm.generate(prompt, top_k=1, temp=0.0, reset=True):
                llm.detokenize([token])
                n += 1
                if n >= p["n_gen"]:
                    break
            if i:
                samples.append(n / (time.perf_counter() - t0))
        return {"samples": samples}
    finally:
        llm.close()


def rss(p: dict) -> dict:
    kw = llama_kwargs(p)
    n_prompt = p["n_prompt_tokens"]
    kw.update(n_ctx=n_prompt + p["n_gen"], n_batch=n_prompt, n_ubatch=n_prompt)
    llm = _llama_cpp().Llama(p["model"], **kw)
    try:
        out = llm.create_completion(PROMPT, max_tokens=p["n_gen"], temperature=0.0)
    finally:
        llm.close()
    return {"tokens": out["usage"]["completion_tokens"]}


TASKS = {"load": load, "tg_completion": tg_completion, "tg_generate": tg_generate, "rss": rss}
