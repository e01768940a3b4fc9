"""``Llama``: the high-level API, with llama-cpp-python 0.3's names, defaults and shapes.

Code written for llama-cpp-python moves over by changing the import. The class is small:
construction sorts keyword arguments into typed groups (:class:`ModelParams`,
:class:`ContextParams`, :class:`LlamaSettings`); completion is the :class:`Session` in
``session.py``, chat in ``chat.py``, embeddings in ``embed.py``, asyncio in ``aio.py``, the
Hugging Face hub in ``hub.py``, the token-level API (``eval``, ``sample``, ``generate``,
``input_ids``, ``scores``, ``LlamaTokenizer``) in ``tokens.py`` and prompt caches in
``cache.py``. docs/api.md maps every public
name of llama-cpp-python's ``Llama`` to this one.

>>> with Llama("model.gguf", n_ctx=2048, verbose=False) as llm:
...     llm("Q: Name the planets. A:", max_tokens=32, stop=["Q:"])["choices"][0]["text"]
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ValidationError
from ..generation.options import split_options
from ..generation.sampling import SamplingParams
from ..native import Context, ContextParams, LoraAdapter, Model, ModelParams
from . import tokens as _tokens
from .session import Session, SessionStats, complete, stream

__all__ = ["Llama", "LlamaSettings", "LlamaState"]

LLAMA_DEFAULT_SEED = 0xFFFFFFFF

# llama-cpp-python's Llama(...) keywords, by the group that takes them.
_MODEL_KEYS = frozenset(f.name for f in fields(ModelParams))
_CONTEXT_KEYS = frozenset(f.name for f in fields(ContextParams)) | {"embedding"}
# llama-cpp-python defaults that differ from llama.cpp's own.
_CONTEXT_DEFAULTS = {"n_ctx": 512, "n_batch": 512, "n_ubatch": 512, "flash_attn": False}


@dataclass(kw_only=True)
class LlamaSettings:
    """Settings of the ``Llama`` object itself (not of the model or the context).

    ``seed``: default sampling seed (``LLAMA_DEFAULT_SEED``/-1: random each call).
    ``chat_format``: a named format (``"chatml"``...) instead of the GGUF template;
    ``chat_handler``: a llama-cpp-python style callable that answers chat requests.
    ``lora_path``/``lora_scale``: an adapter applied to every call unless ``loras=`` says
    otherwise. ``verbose``: llama.cpp's log on stderr. ``logits_all``: ``eval`` keeps every
    token's logits in ``scores``. ``last_n_tokens_size``: how many recent tokens the repeat
    penalties look at. ``numa``, ``lora_base``, ``tokenizer`` and ``spm_infill`` are accepted
    for compatibility, with no effect.

    ``mmproj``: a multimodal projector GGUF, for images (and audio) in chat messages
    (``chat_handler=Llava15ChatHandler(clip_model_path=...)`` is the llama-cpp-python
    spelling); ``mmproj_use_gpu``: run its encoder on the GPU (default: when layers are
    offloaded); ``max_media_bytes``/``max_media_items``: limits per chat request.
    """

    seed: int = LLAMA_DEFAULT_SEED
    chat_format: str | None = None
    chat_handler: Any = None
    lora_path: str | os.PathLike | None = None
    lora_scale: float = 1.0
    lora_base: str | None = None
    verbose: bool = True
    logits_all: bool = False
    last_n_tokens_size: int = 64
    numa: Any = False
    tokenizer: Any = None
    spm_infill: bool = False
    draft_model: Any = None
    mmproj: str | os.PathLike | None = None
    mmproj_use_gpu: bool | None = None
    max_media_bytes: int = 20 << 20
    max_media_items: int = 16

    def validate(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not -1 <= self.seed <= LLAMA_DEFAULT_SEED:
            raise ValidationError(f"seed must be an integer in [-1, {LLAMA_DEFAULT_SEED}]", param="seed")
        if self.chat_format is not None and not isinstance(self.chat_format, str):
            raise ValidationError("chat_format must be a format name", param="chat_format")
        if self.chat_handler is not None and not callable(self.chat_handler):
            raise ValidationError("chat_handler must be callable", param="chat_handler")
        n = self.last_n_tokens_size
        if isinstance(n, bool) or not isinstance(n, int) or not -1 <= n <= 1 << 24:
            raise ValidationError("last_n_tokens_size must be an integer in [-1, 2**24]", param="last_n_tokens_size")
        draft = self.draft_model
        if draft is not None and not (isinstance(draft, (str, os.PathLike)) or callable(draft)
                                      or hasattr(draft, "draft")):
            raise ValidationError("draft_model must be a GGUF path, a LlamaDraftModel or a Drafter "
                                  "(llama_ffi.generation.drafting)", param="draft_model")
        if self.mmproj is not None and not isinstance(self.mmproj, (str, os.PathLike)):
            raise ValidationError("mmproj must be the projector's GGUF path", param="mmproj")
        for name in ("max_media_bytes", "max_media_items"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValidationError(f"{name} must be a positive integer", param=name)

    def projector_path(self) -> str | os.PathLike | None:
        """``mmproj``, or the ``clip_model_path`` a llama-cpp-python vision handler carries."""
        from .vision import MtmdChatHandler

        handler = self.chat_handler
        if not isinstance(handler, MtmdChatHandler):
            return self.mmproj
        if self.mmproj is not None and os.fspath(self.mmproj) != handler.clip_model_path:
            raise ValidationError("mmproj and chat_handler's clip_model_path name different projectors",
                                  param="mmproj")
        return handler.clip_model_path


_SETTINGS_KEYS = frozenset(f.name for f in fields(LlamaSettings))
# llama-cpp-python's plain attributes that mirror a setting of the same name.
_SETTING_ATTRIBUTES = ("chat_format", "chat_handler", "verbose", "lora_path", "lora_scale", "lora_base",
                       "last_n_tokens_size", "numa", "spm_infill", "draft_model", "mmproj")


def _sort_kwargs(kwargs: Mapping[str, Any], model_params, context_params):
    """Split Llama(...) keywords into (ModelParams, ContextParams, LlamaSettings)."""
    model_kw: dict[str, Any] = {"n_gpu_layers": 0}  # llama-cpp-python: CPU unless asked
    context_kw: dict[str, Any] = dict(_CONTEXT_DEFAULTS)
    settings_kw: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in _MODEL_KEYS:
            model_kw[key] = value
        elif key in _CONTEXT_KEYS:
            context_kw["embeddings" if key == "embedding" else key] = value
        elif key in _SETTINGS_KEYS:
            settings_kw[key] = value
        else:
            raise TypeError(f"Llama() got an unexpected keyword argument {key!r}")
    if context_kw.get("n_threads") is not None and context_kw.get("n_threads_batch") is None:
        context_kw["n_threads_batch"] = context_kw["n_threads"]
    if context_kw.get("type_k") is None:
        context_kw.pop("type_k", None)
    if context_kw.get("type_v") is None:
        context_kw.pop("type_v", None)
    if context_kw.get("embeddings"):
        # Pack many inputs into one batch: several sequences sharing one KV cache, and a
        # micro-batch as large as the batch (non-causal models need the whole input at once).
        context_kw.setdefault("n_seq_max", 16)
        context_kw.setdefault("kv_unified", True)
        context_kw["n_ubatch"] = max(context_kw["n_ubatch"], context_kw["n_batch"])
    mp = model_params or ModelParams(**model_kw)
    cp = context_params or ContextParams(**context_kw)
    return mp, cp, LlamaSettings(**settings_kw)


def _enable_verbose() -> None:
    """verbose=True: llama.cpp's log on stderr, like llama-cpp-python (one handler, once)."""
    logger = logging.getLogger("llama_ffi")
    if not any(getattr(h, "_llama_ffi_verbose", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler._llama_ffi_verbose = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)


def _with_load_bar(mp: ModelParams) -> ModelParams:
    """A progress bar while the weights load, where a person is watching (a terminal or a
    notebook): ``native`` draws nothing itself. The caller's own ``progress`` wins."""
    if mp.progress is not None:
        return mp
    from ..display.progress import load_progress

    bar = load_progress()
    return mp if bar is None else replace(mp, progress=bar)


@dataclass
class LlamaState:
    """A saved context (``Llama.save_state``), with llama-cpp-python's field names."""

    input_ids: np.ndarray
    scores: np.ndarray | None
    n_tokens: int
    llama_state: bytes
    llama_state_size: int
    seed: int


class Llama:
    """A model plus one inference context, with llama-cpp-python's API."""

    _model: Model | None = None  # keeps close()/__del__ safe after a failed __init__
    _context: Context | None = None
    _owned_drafter = None
    _mtmd = None  # the projector (native.mtmd.MtmdContext) when loaded with mmproj

    def __init__(self, model_path: str | os.PathLike | None = None, *,
                 model_params: ModelParams | None = None, context_params: ContextParams | None = None,
                 **kwargs: Any) -> None:
        from .default_model import default_model_path

        mp, cp, settings = _sort_kwargs(kwargs, model_params, context_params)
        settings.validate()
        if settings.verbose:
            _enable_verbose()
        path = Path(model_path) if model_path is not None else default_model_path()
        if not path.exists():
            raise ValidationError(f"Model path does not exist: {path}", param="model_path")
        self.settings = settings
        self.model_path = str(path)
        self._model = Model(path, _with_load_bar(mp))
        try:
            self._context = Context(self._model, cp)
            self._loras: list[LoraAdapter] = []
            default_loras = {}
            if settings.lora_path:
                default_loras = {self.load_lora(settings.lora_path): float(settings.lora_scale)}
            self._drafter = self._make_drafter(settings.draft_model, mp)
            self._session = Session(self._context, model_name=self.model_path, default_loras=default_loras,
                                    drafter=self._drafter)
            projector = settings.projector_path()
            if projector is not None:  # at load, not first use: a wrong file fails where it was named
                from .vision import load_projector

                use_gpu = settings.mmproj_use_gpu if settings.mmproj_use_gpu is not None else mp.n_gpu_layers != 0
                self._mtmd = load_projector(self._model, projector, use_gpu=use_gpu)
        except BaseException:
            self.close()
            raise
        seed = settings.seed
        self.sampling = SamplingParams(seed=None if seed in (-1, LLAMA_DEFAULT_SEED) else seed,
                                       penalty_last_n=settings.last_n_tokens_size)
        self.model_params, self.context_params = mp, cp
        self._set_compat_attributes()

    def _make_drafter(self, draft_model, mp: ModelParams):
        """Speculative decoding (generation/drafting.py): prompt lookup, a llama-cpp-python
        ``LlamaDraftModel``, or a draft GGUF loaded like the target (same GPU layers) with a
        context as long as the target's. A drafter made here from a path is closed with us."""
        from ..generation.drafting import as_drafter

        drafter = as_drafter(draft_model, target_vocab=self._model.vocab, n_ctx=self._context.n_ctx,
                             n_gpu_layers=mp.n_gpu_layers)
        self._owned_drafter = drafter if isinstance(draft_model, (str, os.PathLike)) else None
        return drafter

    def _set_compat_attributes(self) -> None:
        """llama-cpp-python's plain attributes (settings, sizes, the cache, the tokenizer)."""
        settings, mp, cp, ctx = self.settings, self.model_params, self.context_params, self._context
        for name in _SETTING_ATTRIBUTES:
            setattr(self, name, getattr(settings, name))
        self.tensor_split, self.kv_overrides = mp.tensor_split, mp.kv_overrides
        self.n_batch = min(ctx.n_batch, ctx.n_ctx)
        self.n_threads = cp.n_threads or os.cpu_count() or 1
        self.n_threads_batch = cp.n_threads_batch or self.n_threads
        self.cache = None  # a prompt cache: see set_cache
        self.tokenizer_ = _tokens.LlamaTokenizer(self)
        self._scores = _tokens.Scores(ctx.n_ctx if settings.logits_all else self.n_batch, self.n_vocab())

    # --- lifecycle ------------------------------------------------------------------------
    def close(self) -> None:
        """Free the context, adapters and model. Safe to call more than once."""
        if self._owned_drafter is not None:
            self._owned_drafter.close()
        if self._mtmd is not None:
            self._mtmd.close()
        if self._context is not None:
            self._context.close()
        if self._model is not None:
            self._model.close()  # closes adapters (its children) too

    def __enter__(self) -> "Llama":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self) -> None:
        if self._model is None or self._model.closed:
            return
        try:
            warnings.warn(f"unclosed {self!r}; call close() or use a with block", ResourceWarning,
                          stacklevel=2, source=self)
        except Exception:  # noqa: BLE001 - __del__ never raises (warnings may be errors)
            pass
        finally:
            try:
                self.close()
            except Exception:  # noqa: BLE001
                pass

    def __repr__(self) -> str:
        try:
            if self._model is None or self._model.closed:
                return "<Llama closed>"
            return f"<Llama {Path(self.model_path).name!r} n_ctx={self.n_ctx()}>"
        except Exception:  # noqa: BLE001
            return "<Llama ?>"

    def _repr_html_(self) -> str:
        """A small table in Jupyter (model facts, context size); see llama_ffi.display."""
        from ..display.notebook import llama_html

        return llama_html(self)

    def __getstate__(self) -> dict:
        """Pickling keeps how to rebuild (path, parameters, settings, current seed), not the
        KV cache; unpickling loads the model again, like llama-cpp-python."""
        seed = self.sampling.seed
        settings = replace(self.settings, seed=LLAMA_DEFAULT_SEED if seed is None else seed,
                           chat_format=self.chat_format, chat_handler=self.chat_handler, verbose=self.verbose)
        return {"model_path": self.model_path, "model_params": replace(self.model_params, progress=None),
                "context_params": self.context_params, "settings": settings}

    def __setstate__(self, state: dict) -> None:
        settings = state["settings"]
        self.__init__(state["model_path"], model_params=state["model_params"],
                      context_params=state["context_params"],
                      **{f.name: getattr(settings, f.name) for f in fields(settings)})

    # --- the native objects ---------------------------------------------------------------
    @property
    def model(self) -> Model:
        """The :class:`~llama_ffi.native.Model` (llama-cpp-python: the raw pointer; here
        ``llm.model.ptr``)."""
        return self._model

    @property
    def context(self) -> Context:
        return self._context

    @property
    def ctx(self):
        """The raw ``llama_context *`` (a cffi pointer, for ``llama_ffi.native``'s lib)."""
        return self._context.ptr

    @property
    def stats(self) -> SessionStats:
        """Prompt/generated token counters (``stats.last_prefill``: prefix reuse at work)."""
        return self._session.stats

    @property
    def mtmd(self):
        """The multimodal projector (:class:`~llama_ffi.native.mtmd.MtmdContext`), or None."""
        return self._mtmd

    @property
    def metadata(self) -> dict[str, str]:
        return self._model.metadata

    # --- completion -----------------------------------------------------------------------
    def create_completion(self, prompt: str | list[int], suffix: str | None = None, max_tokens: int | None = 16,
                          **options: Any) -> dict | Iterator[dict]:
        """A ``text_completion`` dict, or an iterator of chunks with ``stream=True``.

        Options: llama-cpp-python's (temperature, top_p, top_k, min_p, typical_p,
        repeat/presence/frequency_penalty, mirostat_*, seed, stop, logprobs, echo, stream,
        grammar, logit_bias, logits_processor, stopping_criteria, model), any
        :class:`SamplingParams` field or ``sampling=SamplingParams(...)``, and
        ``cancel``, ``loras``, ``reset_kv_cache``, ``truncate`` (see CompletionOptions)."""
        opts, params = split_options(options, self.sampling)
        opts.suffix, opts.max_tokens = suffix, max_tokens
        run = self._session.prepare(prompt, opts, params)
        finish = stream if opts.stream else complete
        if self.cache is None:
            return finish(self._session, run, params)
        from .cache import cached

        return cached(self, run, lambda: finish(self._session, run, params), opts.stream)

    __call__ = create_completion

    def generate_text(self, prompt: str | list[int], **options: Any) -> str:
        """Just the generated text (options as for create_completion; ``max_tokens`` 16)."""
        options.pop("stream", None)
        return self.create_completion(prompt, **options)["choices"][0]["text"]

    def generate_stream(self, prompt: str | list[int], **options: Any) -> Iterator[str]:
        """Yield text pieces as tokens are decoded (a character split across tokens is
        yielded whole). Stop iterating to stop generating."""
        options["stream"] = False
        opts, params = split_options(options, self.sampling)
        run = self._session.prepare(prompt, opts, params)
        gen = self._session.generate(run, params)
        try:
            for text in gen:
                if text:
                    yield text
        finally:
            gen.close()

    def create_chat_completion(self, messages: list[dict], **options: Any) -> dict | Iterator[dict]:
        """A ``chat.completion`` dict, or ``chat.completion.chunk`` iterator with stream=True."""
        from .chat import create_chat_completion

        return create_chat_completion(self, messages, **options)

    def create_chat_completion_openai_v1(self, *args: Any, **kwargs: Any):
        """``create_chat_completion`` as the ``openai`` package's ChatCompletion (or an
        iterator of ChatCompletionChunk with stream=True); needs ``pip install openai``."""
        from .chat import create_chat_completion_openai_v1

        return create_chat_completion_openai_v1(self, *args, **kwargs)

    # --- llama-cpp-python's token-level API (tokens.py) ------------------------------
    def eval(self, tokens: Sequence[int]) -> None:
        """Decode ``tokens`` after the ``n_tokens`` already evaluated."""
        _tokens.evaluate(self, tokens)

    def sample(self, *, idx: int | None = None, logits_processor=None, grammar=None, **sampling: Any) -> int:
        """A token from the logits of evaluated token ``idx`` (default: the last). Keywords:
        llama-cpp-python's (top_k=40, top_p=0.95, min_p=0.05, typical_p=1.0, temp=0.8,
        repeat/frequency/presence_penalty, mirostat_mode/tau/eta; tfs_z, penalize_nl ignored)."""
        return _tokens.sample(self, idx=idx, logits_processor=logits_processor, grammar=grammar, **sampling)

    def generate(self, tokens: Sequence[int], *, reset: bool = True, logits_processor=None,
                 stopping_criteria=None, grammar=None, **sampling: Any) -> Iterator[int]:
        """Yield sampled token ids (end-of-generation ones too) until the caller stops, as
        llama-cpp-python's ``generate``; sampling keywords as for :meth:`sample`. For text,
        use :meth:`generate_text` or :meth:`create_completion`."""
        return _tokens.generate(self, tokens, reset=reset, logits_processor=logits_processor,
                                     stopping_criteria=stopping_criteria, grammar=grammar, **sampling)

    @property
    def n_tokens(self) -> int:
        """How many tokens the KV cache holds (set it lower to forget the rest)."""
        return len(self._session.cache)

    @n_tokens.setter
    def n_tokens(self, value: int) -> None:
        _tokens.set_n_tokens(self, value)

    @property
    def input_ids(self) -> np.ndarray:
        """``(n_ctx,)`` intc array whose first ``n_tokens`` are the evaluated tokens (a copy)."""
        return _tokens.input_ids(self)

    @property
    def scores(self) -> np.ndarray:
        """``(n_ctx, n_vocab)`` float32 logits per evaluated token (``(n_batch, n_vocab)``
        without ``logits_all``); rows are filled by ``eval`` with ``logits_all=True``."""
        return _tokens.scores(self)

    @property
    def eval_tokens(self) -> deque:
        # media cells show as -1 (MEDIA_CELL), as logits processors see them, not as their keys
        return deque((max(t, -1) for t in self._session.cache), maxlen=self.n_ctx())

    @property
    def eval_logits(self) -> deque:
        return _tokens.eval_logits(self)

    logits_to_logprobs = staticmethod(_tokens.logits_to_logprobs)
    longest_token_prefix = staticmethod(_tokens.longest_token_prefix)

    # --- embeddings -----------------------------------------------------------------------
    def create_embedding(self, input: str | list[str], model: str | None = None) -> dict:  # noqa: A002
        from .embed import create_embedding

        return create_embedding(self, input, model=model)

    def embed(self, input: str | list[str], normalize: bool = False, truncate: bool = True,  # noqa: A002
              return_count: bool = False):
        from .embed import embed

        return embed(self, input, normalize=normalize, truncate=truncate, return_count=return_count)

    def rerank(self, query: str, documents: list[str]) -> list[float]:
        from .embed import rerank

        return rerank(self, query, documents)

    def pooling_type(self) -> int:
        """The context's ``enum llama_pooling_type`` value (0 none, 1 mean, 2 cls, 3 last, 4 rank)."""
        return self._context.pooling_type

    # --- async ------------------------------------------------------------------------------
    async def create_completion_async(self, prompt, **options):
        from .aio import create_completion_async

        return await create_completion_async(self, prompt, **options)

    async def create_chat_completion_async(self, messages, **options):
        from .aio import create_chat_completion_async

        return await create_chat_completion_async(self, messages, **options)

    async def create_embedding_async(self, input, **options):  # noqa: A002
        from .aio import create_embedding_async

        return await create_embedding_async(self, input, **options)

    # --- tokens ---------------------------------------------------------------------------
    def tokenize(self, text: bytes | str, add_bos: bool = True, special: bool = False) -> list[int]:
        """Token ids of ``text`` (UTF-8 bytes, as in llama-cpp-python, or str)."""
        return _tokens.tokenize(self._model.vocab, text, add_bos, special)

    def detokenize(self, tokens: list[int], prev_tokens: list[int] | None = None, special: bool = False) -> bytes:
        """The bytes ``tokens`` spell; with ``prev_tokens`` only what ``tokens`` add."""
        return _tokens.detokenize(self._model.vocab, tokens, prev_tokens, special)

    def tokenizer(self) -> _tokens.LlamaTokenizer:
        """A ``LlamaTokenizer`` for this model (tokenize, detokenize, encode, decode)."""
        return _tokens.LlamaTokenizer(self)

    def token_bos(self) -> int:
        bos = self._model.vocab.bos
        return -1 if bos is None else bos

    def token_eos(self) -> int:
        eos = self._model.vocab.eos
        return -1 if eos is None else eos

    def token_nl(self) -> int:
        nl = self._model.vocab.nl
        return -1 if nl is None else nl

    def n_ctx(self) -> int:
        return self._context.n_ctx

    def n_vocab(self) -> int:
        return self._model.vocab.n_tokens

    def n_embd(self) -> int:
        return self._model.n_embd

    # --- state ----------------------------------------------------------------------------
    def save_state(self) -> LlamaState:
        session = self._session
        session.acquire()
        try:
            data = self._context.state_bytes()
            ids = np.asarray(session.cache, dtype=np.intc)
            rows = self.scores[: len(ids)].copy() if self.settings.logits_all else None
        finally:
            session.release()
        seed = self.sampling.seed
        return LlamaState(input_ids=ids, scores=rows, n_tokens=len(ids), llama_state=data,
                          llama_state_size=len(data), seed=LLAMA_DEFAULT_SEED if seed is None else seed)

    def load_state(self, state: LlamaState) -> None:
        """Restore a saved context: KV cache, evaluated tokens, their ``scores`` rows (when
        saved with logits_all) and the seed."""
        if not isinstance(state, LlamaState):
            raise ValidationError("load_state takes what save_state returned", param="state")
        session = self._session
        session.acquire()
        try:
            session.invalidate()
            self._context.load_state_bytes(state.llama_state)
            session.cache = [int(t) for t in state.input_ids[: state.n_tokens]]
            session.loop.pos = len(session.cache)
            self._scores.restore(session.cache, state.scores)
        finally:
            session.release()
        self.sampling = replace(self.sampling, seed=None if state.seed in (-1, LLAMA_DEFAULT_SEED) else state.seed)

    def reset(self) -> None:
        """Forget the KV cache (the next call decodes its whole prompt)."""
        session = self._session
        session.acquire()
        try:
            self._context.memory_clear()
            session.invalidate()
            session.loop.pos = 0
        finally:
            session.release()

    def set_seed(self, seed: int) -> None:
        self.sampling = self.sampling.updated(seed=seed)
        self.sampling.validate()

    def set_cache(self, cache) -> None:
        """Use a prompt cache (``llama_ffi.LlamaRAMCache()``; None: none): see
        llama/cache.py."""
        if cache is not None and not all(hasattr(cache, m) for m in ("__getitem__", "__setitem__", "__contains__")):
            raise ValidationError("cache must be a LlamaRAMCache or offer the same mapping methods", param="cache")
        self.cache = cache

    # --- LoRA -------------------------------------------------------------------------------
    def load_lora(self, path: str | os.PathLike) -> LoraAdapter:
        """Load an adapter for this model; use it per call with ``loras={adapter: scale}``."""
        adapter = LoraAdapter(self._model, path)
        self._loras.append(adapter)
        return adapter

    # --- hub -------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, repo_id: str, filename: str | None = None, **kwargs: Any) -> "Llama":
        """Download a GGUF from the Hugging Face hub (glob ``filename``, split GGUFs) and load it."""
        from .hub import from_pretrained

        return from_pretrained(cls, repo_id, filename, **kwargs)
