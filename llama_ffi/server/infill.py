"""llama-server's ``POST /infill``: fill in the middle between a prefix and a suffix.

The prompt is built from the model's fill-in-the-middle tokens as llama-server builds it
(``tools/server`` of the pinned tree), then generated like any completion (``generation.Jobs``):

    [extra context] [BOS] <FIM_PRE> prefix <FIM_SUF> suffix <FIM_MID> prompt

With ``input_extra`` chunks and a model that has <FIM_REP> and <FIM_SEP> (Qwen2.5-Coder...),
the extra context is the repo-level pattern (arXiv:2409.12186)::

    <FIM_REP>myproject\\n <FIM_SEP>{filename}\\n{text} ... <FIM_SEP>filename\\n

and without them each chunk follows a plain ``\\n\\n--- snippet ---\\n\\n`` line. Long inputs are
cut as llama-server cuts them: the last 3/4 of a batch of the prefix, the first quarter of a
batch (less the prompt) of the suffix, and extra context only where the context has room
beyond one batch and twice the answer.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ValidationError
from .generation import Choice, Jobs, grammar_of, lora_of, sampling_params, speculative_of, stop_list
from .schemas import _Sampling

__all__ = ["InfillRequest", "fim_prompt", "response", "stream", "submit"]

REPO_NAME = "myproject\n"  # llama-server's fixed project name in the repo-level pattern
FILE_NAME = "filename\n"  # ... and the name of the file being filled in
SNIPPET_LINE = "\n\n--- snippet ---\n\n"  # chunk separator without <FIM_SEP>


class ExtraChunk(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    text: str
    filename: str = "tmp"


class InfillRequest(_Sampling):
    """``/completion``'s sampling fields plus the pieces of the infill prompt."""

    input_prefix: str = Field("", description="The code before the gap.")
    input_suffix: str = Field("", description="The code after the gap.")
    input_extra: list[ExtraChunk] = Field(default_factory=list, description="Other files, put before the prefix.",
                                          max_length=1024)
    prompt: str = Field("", description="Text after <FIM_MID>: the start of the middle, if known.")
    n_predict: int | None = Field(None, ge=-1, le=1 << 20, description="llama-server's name for max_tokens.")
    n: int = Field(1, ge=1, le=1)
    cache_prompt: bool = Field(True, description="Accepted for llama-server clients; prefixes are always cached.")
    return_tokens: bool = False


def fim_prompt(vocab, prefix: str, suffix: str, extra: list[tuple[str, str]], prompt: str, *,
               n_batch: int, n_ctx: int, n_predict: int) -> list[int]:
    """The token ids of the infill prompt; ``extra`` holds (filename, text) pairs."""
    pre, suf, mid = vocab.fim("pre"), vocab.fim("suf"), vocab.fim("mid")
    if None in (pre, suf, mid):
        raise ValidationError("the model has no fill-in-the-middle tokens (FIM_PRE, FIM_SUF, FIM_MID)",
                              param="input_prefix")

    def plain(text: str) -> list[int]:  # as llama-server: no BOS, special-token text stays text
        return vocab.tokenize(text, add_special=False, parse_special=False)

    rep, sep = vocab.fim("rep"), vocab.fim("sep")
    context: list[int] = [rep, *plain(REPO_NAME)] if rep is not None else []
    for filename, text in extra:
        context += [sep, *plain(filename + "\n")] if sep is not None else plain(SNIPPET_LINE)
        context += plain(text)
    if sep is not None:
        context += [sep, *plain(FILE_NAME)]

    middle = vocab.tokenize(prompt, add_special=False, parse_special=True)
    before = plain(prefix)
    before = before[len(before) - min(len(before), 3 * (n_batch // 4)):]
    after = plain(suffix)[: max(0, n_batch // 4 - (2 + len(middle)))]
    n_context = min(max(0, n_ctx - n_batch - 2 * n_predict), len(context))
    head = [vocab.bos] if vocab.add_bos and vocab.bos is not None else []
    return context[len(context) - n_context:] + head + [pre, *before, *middle] + [suf, *after] + [mid]


def submit(body: InfillRequest, entry) -> tuple[Jobs, list[int]]:
    context = entry.engine.context
    speculative = speculative_of(body, entry.settings)  # its 400s before the model's FIM tokens are looked up
    loras = lora_of(body, entry)
    max_tokens = body.max_tokens if body.max_tokens is not None else body.n_predict
    if max_tokens is not None and max_tokens <= 0:
        max_tokens = None  # llama-server's -1 (and 0): as long as the context allows
    tokens = fim_prompt(entry.vocab, body.input_prefix, body.input_suffix,
                        [(c.filename, c.text) for c in body.input_extra], body.prompt,
                        n_batch=context.n_batch, n_ctx=context.n_ctx_seq, n_predict=max(0, max_tokens or 0))
    spec = {"sampling": sampling_params(body, entry.vocab, 0), "max_tokens": max_tokens,
            "stop": stop_list(body.stop), "grammar": grammar_of(body),
            "speculative": speculative, "loras": loras}
    return Jobs(entry).submit([(tokens, spec)]), tokens


def _summary(body: InfillRequest, entry, jobs: Jobs, prompt: list[int], n_generated: int, reason: str,
             started: float) -> dict:
    request = jobs.requests[0]
    return {"stop": True, "model": body.model or entry.name, "id_slot": -1,
            "prompt": entry.vocab.detokenize(prompt, unparse_special=True).decode("utf-8", "replace"),
            "tokens_predicted": n_generated, "tokens_evaluated": request.n_prompt, "tokens_cached": request.n_cached,
            "stop_type": "limit" if reason == "length" else "eos", "finish_reason": reason, "truncated": False,
            "timings": {"total_ms": round((time.perf_counter() - started) * 1000, 3), **(jobs.timings() or {})}}


def response(body: InfillRequest, entry, jobs: Jobs, prompt: list[int], choices: list[Choice],
             started: float) -> dict:
    (choice,) = choices
    out = {"content": choice.text, "tokens": choice.tokens if body.return_tokens else []}
    return out | _summary(body, entry, jobs, prompt, len(choice.tokens), choice.finish_reason, started)


async def stream(body: InfillRequest, entry, jobs: Jobs, prompt: list[int], started: float) -> AsyncIterator[dict]:
    generated = 0
    async for _, event in jobs.events():
        generated += len(event.tokens)
        if event.text or event.tokens:
            yield {"content": event.text, "tokens": list(event.tokens) if body.return_tokens else [], "stop": False}
        if event.finish_reason is not None:
            yield {"content": "", "tokens": []} | _summary(body, entry, jobs, prompt, generated,
                                                           event.finish_reason, started)
