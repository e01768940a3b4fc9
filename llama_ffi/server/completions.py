"""``POST /v1/completions``: text in, text out (``n`` choices per prompt, several prompts)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

from ..errors import ValidationError
from ..generation.output import completion_logprobs
from ..generation.results import usage
from .generation import Choice, Jobs, grammar_of, lora_of, sampling_params, speculative_of, stop_list, timings_of
from .schemas import CompletionRequest

DEFAULT_MAX_TOKENS = 16  # OpenAI's default for this endpoint


def _prompts(prompt) -> list:
    """A string, a list of strings, a token list, or a list of token lists."""
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise ValidationError("prompt is empty", param="prompt")
    if isinstance(prompt[0], int):
        return [prompt]
    if any(isinstance(p, (str, list)) and not p for p in prompt):
        raise ValidationError("prompt has an empty entry", param="prompt")
    return list(prompt)


def _check(body: CompletionRequest) -> None:
    if body.suffix:
        raise ValidationError("suffix (fill-in-the-middle) is not supported by the server; "
                              "use Llama.create_completion", param="suffix")
    if body.echo and body.logprobs is not None:
        raise ValidationError("echo with logprobs (prompt log-probabilities) is not supported", param="echo")


def submit(body: CompletionRequest, entry) -> tuple[Jobs, list]:
    _check(body)
    prompts = _prompts(body.prompt)
    if len(prompts) * body.n > 64:
        raise ValidationError("at most 64 choices per request (prompts x n)", param="n")
    grammar = grammar_of(body)
    max_tokens = body.max_tokens or DEFAULT_MAX_TOKENS
    stops = stop_list(body.stop)
    speculative = speculative_of(body, entry.settings)
    loras = lora_of(body, entry)
    specs = [(prompt, {"sampling": sampling_params(body, entry.vocab, j), "max_tokens": max_tokens,
                       "stop": stops, "grammar": grammar, "logprobs": body.logprobs, "speculative": speculative,
                       "loras": loras})
             for prompt in prompts for j in range(body.n)]
    return Jobs(entry).submit(specs), prompts


class _Shape:
    """Builds text_completion objects for one request."""

    def __init__(self, body: CompletionRequest, entry, prompts: list) -> None:
        self.body, self.entry, self.prompts = body, entry, prompts
        self.id = f"cmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = body.model or entry.name

    def echo(self, index: int) -> str:
        prompt = self.prompts[index // self.body.n]
        if isinstance(prompt, str):
            return prompt
        return self.entry.vocab.detokenize(prompt).decode("utf-8", errors="replace")

    def logprobs(self, entries: list, offset: int) -> dict | None:
        if self.body.logprobs is None:
            return None
        return completion_logprobs(entries, self.entry.vocab.pieces, offset)

    def obj(self, choices: list[dict], **extra) -> dict:
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "choices": choices, **extra}


def response(body, entry, jobs: Jobs, prompts, choices: list[Choice]) -> dict:
    shape = _Shape(body, entry, prompts)
    out = []
    for index, c in enumerate(choices):
        head = shape.echo(index) if body.echo else ""
        out.append({"text": head + c.text, "index": index, "logprobs": shape.logprobs(c.logprobs, len(head)),
                    "finish_reason": c.finish_reason})
    generated = sum(len(c.tokens) for c in choices)
    return shape.obj(out, usage=usage(jobs.prompt_tokens(body.n), generated), **timings_of(jobs))


async def stream(body, entry, jobs: Jobs, prompts) -> AsyncIterator[dict]:
    shape = _Shape(body, entry, prompts)
    offsets = [0] * len(jobs.requests)
    generated = 0
    if body.echo:
        for index in range(len(jobs.requests)):
            text = shape.echo(index)
            offsets[index] = len(text)
            yield shape.obj([{"text": text, "index": index, "logprobs": None, "finish_reason": None}])
    async for index, event in jobs.events():
        generated += len(event.tokens)
        if not (event.text or event.tokens or event.finish_reason):
            continue
        logprobs = shape.logprobs(event.logprobs or [], offsets[index])
        offsets[index] += len(event.text)
        yield shape.obj([{"text": event.text, "index": index, "logprobs": logprobs,
                          "finish_reason": event.finish_reason}], **(timings_of(jobs) if not jobs.open else {}))
    if body.stream_options is not None and body.stream_options.include_usage:
        yield shape.obj([], usage=usage(jobs.prompt_tokens(body.n), generated))
