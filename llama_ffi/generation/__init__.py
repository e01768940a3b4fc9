"""The generation core: one request's life, whichever driver runs it.

``Llama`` drives it with one sequence (``llama_ffi.llama.session``), ``Engine`` with many
(``llama_ffi.engine``); the server goes through ``Engine``. Everything a request needs is
here, once:

- ``sampling``: :class:`SamplingParams`, turned into a C sampler chain;
- ``options``: the checks every request shares and ``Llama``'s per-call options;
- ``spec``: :func:`prepare` -> :class:`GenerationSpec` (validated, tokenized);
- ``chains``: which part of the chain runs in the graph; what it must see first;
- ``output``: :class:`SequenceOutput` (text, stops, logprobs, finish reason);
- ``text``: bytes to text and stop strings; ``results``: OpenAI-shaped objects.
"""

from .options import CompletionOptions, split_options
from .output import LogprobCollector, SequenceOutput
from .sampling import SamplingParams
from .spec import GenerationSpec, prepare

__all__ = ["CompletionOptions", "GenerationSpec", "LogprobCollector", "SamplingParams", "SequenceOutput",
           "prepare", "split_options"]
