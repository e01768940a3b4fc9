"""Sampler chains for a request: which part runs in the graph, and what the chain must see.

One policy for both drivers. On a GPU, llama.cpp can sample inside the graph (no logits row
crosses to the host): whole for plain chains, or split at top-k
(:meth:`SamplingParams.backend_split`). Anything that needs the host's logits (a grammar,
logprobs, a logits processor) or the token history (penalties, DRY) samples on the host.
Penalties and DRY see the prompt's tail, as in llama.cpp's own tools.
"""

from __future__ import annotations

from ..errors import ValidationError
from .sampling import SamplingParams
from .spec import GenerationSpec

__all__ = ["build_chains", "grammar_sampler", "prime", "uses_history"]


def build_chains(spec: GenerationSpec, vocab, *, on_gpu: bool, host_logits: bool = False, split: bool = True):
    """``(host chain, chain to attach to the graph or None)``; the two may be one object.

    ``host_logits``: the caller edits or reads the logits row (logits processor, stopping
    criteria), so nothing may run in the graph. ``split=False`` puts the whole chain in the
    graph (llama.cpp's in-graph top-p, min-p, temperature and dist, as llama-server's
    ``--backend-sampling``): one token per sequence crosses to the host instead of top-k
    candidates and their logits."""
    grammar = grammar_sampler(spec.grammar, vocab)
    sampling = spec.sampling
    in_graph = on_gpu and grammar is None and spec.logprobs is None and not host_logits and not uses_history(sampling)
    if not in_graph:
        return sampling.build_chain(vocab, grammar=grammar), None
    parts = sampling.backend_split(vocab) if split else None
    if parts is not None:
        device, host = parts
        return host, device
    chain = sampling.build_chain(vocab)
    return chain, chain


def uses_history(sampling: SamplingParams) -> bool:
    """Samplers that keep a token history (penalties, DRY) and so sample on the host."""
    return (sampling.repeat_penalty != 1.0 or bool(sampling.frequency_penalty) or bool(sampling.presence_penalty)
            or sampling.dry_multiplier > 0)


def prime(chain, spec: GenerationSpec, history, generated=()) -> None:
    """Bring a new chain up to date before the first sample.

    ``history``: the tokens before the first new one (the prompt, and for a resumed request
    its output so far); ``generated``: the output so far only. A grammar must see exactly
    what it constrained (the output); penalties and DRY see the last ``penalty_last_n`` of
    the whole history (never with a grammar, which would consume the prompt)."""
    if spec.grammar is not None:
        for token in generated:
            chain.accept(int(token))
        return
    sampling = spec.sampling
    if not uses_history(sampling):
        return
    n = sampling.penalty_last_n if sampling.penalty_last_n > 0 else len(history)
    for token in list(history[-n:]) if n else ():
        chain.accept(int(token))


def grammar_sampler(grammar, vocab):
    """The grammar sampler for ``grammar``: GBNF text, a ``LlamaGrammar``, or any object
    with ``sampler(vocab)`` (a chat tool-call grammar, which builds its own, lazy or not)."""
    if grammar is None:
        return None
    from ..grammar import LlamaGrammar
    from ..native.sampler import Sampler

    if hasattr(grammar, "sampler"):
        return grammar.sampler(vocab)
    if isinstance(grammar, (str, bytes)):
        grammar = LlamaGrammar.from_string(grammar)
    if not isinstance(grammar, LlamaGrammar):
        raise ValidationError("grammar must be a LlamaGrammar or GBNF text", param="grammar")
    return Sampler.grammar(vocab, grammar.text, grammar.root)
