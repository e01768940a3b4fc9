"""Server settings: command-line options and llama-cpp-python's ``--config_file`` (JSON or YAML).

A config file holds server keys (``host``, ``port``, ``api_key``, ``cors``...) and a
``models`` list; each model entry takes llama-cpp-python's keys (``model``,
``model_alias``, ``n_ctx``, ``n_gpu_layers``, ``n_threads``, ``n_batch``, ``n_ubatch``,
``flash_attn``, ``chat_format``, ``pooling_type``...) plus the engine's own
(``n_parallel``: concurrent sequences, ``max_queued_requests``; speculative decoding:
``spec_default``, ``draft_max``, ``draft_min``, ``spec_max_running``). Keys llama-cpp-python
knows that have no meaning here (``verbose``, ``use_mmap``...) are accepted and logged.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import ValidationError

__all__ = ["ModelSettings", "ServerSettings", "parse_args"]

log = logging.getLogger("llama_ffi.server")

DEFAULT_MAX_BODY = 8 << 20
# llama-cpp-python model keys accepted for compatibility, without effect here.
_IGNORED_MODEL_KEYS = frozenset({
    "verbose", "use_mmap", "use_mlock", "main_gpu", "tensor_split", "vocab_only", "kv_overrides",
    "rpc_servers", "seed", "rope_scaling_type", "rope_freq_base", "rope_freq_scale", "yarn_ext_factor",
    "yarn_attn_factor", "yarn_beta_fast", "yarn_beta_slow", "yarn_orig_ctx", "mul_mat_q", "logits_all",
    "offload_kqv", "last_n_tokens_size", "lora_base", "lora_path", "numa", "chat_handler",
    "cache", "cache_type", "cache_size", "hf_tokenizer_config_path", "hf_pretrained_model_name_or_path",
    "hf_model_repo_id", "draft_model", "draft_model_num_pred_tokens", "type_k", "type_v", "split_mode",
    "n_threads_batch", "embedding"})


@dataclass(kw_only=True)
class ModelSettings:
    """One served model: its file, the name clients use, and its engine's sizes."""

    model: str
    model_alias: str | None = None
    n_ctx: int = 8192
    n_parallel: int = 16
    n_gpu_layers: int | None = None
    n_threads: int | None = None
    n_batch: int = 2048
    n_ubatch: int = 512
    kv_unified: bool = True  # False: a stream of n_ctx / n_parallel cells per sequence
    flash_attn: Any = "auto"
    chat_format: str | None = None
    pooling_type: str | None = None  # for /v1/embeddings and /v1/rerank ("rank" for rerankers)
    max_queued_requests: int = 1024
    # A chat completion without max_tokens: this many tokens at most (None: to the end of
    # the context, as OpenAI does). /v1/completions keeps OpenAI's default of 16.
    max_tokens_default: int | None = None
    # LoRA adapters loaded with the model (llama-server's --lora): paths, or {"path", "scale"}
    # objects; each starts at its scale (default 1.0) and GET/POST /lora-adapters reads/sets them.
    lora: list = field(default_factory=list)
    # Speculative decoding by prompt lookup (llama-server's --spec-default, --draft-max, --draft-min):
    # on for every request unless it sends "speculative": false, or only for requests that ask;
    # the draft window of a request that gives none; at most this many running requests speculate.
    spec_default: bool = False
    draft_max: int = 16
    draft_min: int = 0
    spec_max_running: int = 4
    # A multimodal projector (llama-server's --mmproj; llama-cpp-python's clip_model_path): with
    # it, chat messages may hold image_url (data URIs) and input_audio parts, within these limits.
    mmproj: str | None = None
    max_media_bytes: int = 20 << 20
    max_media_items: int = 16

    @property
    def name(self) -> str:
        return self.model_alias or Path(self.model).name

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str) -> ModelSettings:
        if not isinstance(raw, dict) or not isinstance(raw.get("model"), str):
            raise ValidationError(f"{where}: each model needs a 'model' path", param="models")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in known}
        if "n_seq_max" in raw:
            values["n_parallel"] = raw["n_seq_max"]
        if raw.get("clip_model_path") is not None and raw.get("mmproj") is None:
            values["mmproj"] = raw["clip_model_path"]
        for key in sorted(set(raw) - known - {"n_seq_max", "clip_model_path"}):
            if key not in _IGNORED_MODEL_KEYS:
                raise ValidationError(f"{where}: unknown model key {key!r}", param="models")
            log.info("%s: model key %r has no effect in llama_ffi", where, key)
        settings = cls(**values)
        settings.validate(where)
        return settings

    def validate(self, where: str = "model") -> None:
        for name in ("n_ctx", "n_parallel", "n_batch", "n_ubatch", "max_queued_requests", "max_tokens_default",
                     "max_media_bytes", "max_media_items"):
            value = getattr(self, name)
            if value is None and name == "max_tokens_default":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValidationError(f"{where}: {name} must be a positive integer, got {value!r}", param=name)
        if not Path(self.model).is_file():
            raise ValidationError(f"{where}: model file not found: {self.model}", param="model")
        if self.mmproj is not None and (not isinstance(self.mmproj, str) or not Path(self.mmproj).is_file()):
            raise ValidationError(f"{where}: mmproj file not found: {self.mmproj}", param="mmproj")
        self.lora = self.lora_entries(where)
        self.speculative_options(where)

    def speculative_options(self, where: str = "model"):
        """The checked ``SpeculativeOptions`` of a request that speculates without a window of its own."""
        from ..generation.drafting import SpeculativeOptions

        if not isinstance(self.spec_default, bool):
            raise ValidationError(f"{where}: spec_default must be true or false", param="spec_default")
        if isinstance(self.spec_max_running, bool) or not isinstance(self.spec_max_running, int) \
                or self.spec_max_running < 0:
            raise ValidationError(f"{where}: spec_max_running must be an integer >= 0", param="spec_max_running")
        options = SpeculativeOptions(n_max=self.draft_max, n_min=self.draft_min)
        try:
            options.validate()
        except ValidationError as exc:
            message = str(exc).replace("speculative.n_", "draft_")  # the settings' names, not the request's
            raise ValidationError(f"{where}: {message}", param=exc.param.replace("speculative.n_", "draft_")) from None
        return options

    def lora_entries(self, where: str = "model") -> list[dict]:
        """``lora`` as checked ``{"path", "scale"}`` objects."""
        if not isinstance(self.lora, (list, tuple)):
            raise ValidationError(f"{where}: lora must be a list of paths or {{\"path\", \"scale\"}} objects", param="lora")
        return [_lora_entry(item, f"{where}: lora[{i}]") for i, item in enumerate(self.lora)]

    def engine_config(self):
        from ..engine import EngineConfig

        return EngineConfig(n_ctx=self.n_ctx, n_seq_max=self.n_parallel, n_batch=self.n_batch,
                            n_ubatch=self.n_ubatch, n_gpu_layers=self.n_gpu_layers, flash_attn=self.flash_attn,
                            kv_unified=bool(self.kv_unified),
                            n_threads=self.n_threads, max_queued_requests=self.max_queued_requests,
                            max_tokens_default=self.max_tokens_default or self.n_ctx,
                            spec_max_running=self.spec_max_running, mmproj=self.mmproj)


@dataclass(kw_only=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    cors: list[str] = field(default_factory=list)  # allowed origins; empty: no CORS headers
    max_body_bytes: int = DEFAULT_MAX_BODY
    shutdown_timeout: float = 5.0
    slot_save_path: str | None = None  # folder for POST /slots/{id}?action=save|restore; None: off
    models: list[ModelSettings] = field(default_factory=list)

    def validate(self) -> None:
        if not self.models:
            raise ValidationError("no model to serve: give --model or a --config-file with 'models'", param="model")
        names = [m.name for m in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValidationError(f"two models share the name {dupes[0]!r}: set model_alias", param="model_alias")
        if not 0 <= self.port <= 65535:
            raise ValidationError(f"port must be in [0, 65535], got {self.port}", param="port")
        if self.max_body_bytes < 1024:
            raise ValidationError("max_body_bytes must be at least 1024", param="max_body_bytes")
        if self.slot_save_path is not None and not Path(self.slot_save_path).is_dir():
            raise ValidationError(f"slot_save_path is not a folder: {self.slot_save_path}", param="slot_save_path")


def _lora_entry(item, where: str) -> dict:
    """A ``lora`` list item as {"path": str, "scale": float}, its file checked."""
    if isinstance(item, str):
        item = {"path": item}
    scale = item.get("scale", 1.0) if isinstance(item, dict) else None
    if not isinstance(item, dict) or set(item) - {"path", "scale"} or not isinstance(item.get("path"), str) \
            or isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise ValidationError(f"{where} must be a path or {{\"path\": str, \"scale\": number}}", param="lora")
    if not Path(item["path"]).is_file():
        raise ValidationError(f"{where}: LoRA file not found: {item['path']}", param="lora")
    return {"path": item["path"], "scale": float(scale)}


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The file's object: JSON, or YAML for a ``.yaml``/``.yml`` name (as llama-cpp-python)."""
    yaml_file = Path(path).suffix.lower() in (".yaml", ".yml")
    try:
        text = Path(path).read_text()
        raw = _parse_yaml(text) if yaml_file else json.loads(text)
    except (OSError, ValueError) as exc:
        raise ValidationError(f"cannot read config file {path}: {exc}", param="config_file") from None
    if not isinstance(raw, dict):
        kind = "YAML mapping" if yaml_file else "JSON object"
        raise ValidationError(f"config file {path} must hold a {kind}", param="config_file")
    return raw


def _parse_yaml(text: str) -> Any:
    try:
        import yaml  # imported here: only a YAML config needs it
    except ImportError:
        raise ValidationError("a YAML config file needs PyYAML: pip install 'llama-ffi[server]' (or pyyaml)",
                              param="config_file") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from None


def _parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="OpenAI-compatible HTTP server over llama_ffi engines.")
    p.add_argument("-m", "--model", help="GGUF model to serve (or use --config-file)")
    p.add_argument("-a", "--model-alias", help="the name clients send as 'model' (default: the file name)")
    p.add_argument("--config-file", "--config_file", dest="config_file", help="llama-cpp-python style config, JSON or .yaml/.yml")
    p.add_argument("-c", "--n-ctx", type=int, default=None, help="KV cells shared by all sequences (default 8192)")
    p.add_argument("-np", "--parallel", type=int, default=None, help="concurrent sequences (default 16)")
    p.add_argument("--kv-unified", action=argparse.BooleanOptionalAction, default=None,
                   help="one pool of KV cells for all sequences (default), or with --no-kv-unified a "
                        "stream of n_ctx/parallel cells each: faster for many short requests")
    p.add_argument("-ngl", "--n-gpu-layers", type=int, default=None, help="layers to offload (default: all on a GPU)")
    p.add_argument("-t", "--threads", type=int, default=None, help="CPU threads")
    p.add_argument("--mmproj", default=None, help="multimodal projector GGUF for --model: image/audio chat parts")
    p.add_argument("--chat-format", default=None, help="a named chat format instead of the GGUF template")
    p.add_argument("--max-queued-requests", type=int, default=None, help="queue size before 503 (default 1024)")
    p.add_argument("--host", default=None, help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=None, help="port (default 8000)")
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' (also $LLAMA_FFI_API_KEY)")
    p.add_argument("--cors", default=None, help="comma list of origins allowed by CORS ('*': any); off by default")
    p.add_argument("--max-body-bytes", type=int, default=None, help=f"largest request body (default {DEFAULT_MAX_BODY})")
    p.add_argument("--lora", action="append", default=None, metavar="PATH",
                   help="a LoRA adapter for --model, applied at scale 1 (repeat for several; see /lora-adapters)")
    p.add_argument("--spec-default", action="store_true", default=None,
                   help="speculative decoding (prompt lookup) for every request that does not send "
                        "\"speculative\": false (default: only for requests that ask)")
    p.add_argument("--draft-max", "--draft-n", "--draft", dest="draft_max", type=int, default=None,
                   help="draft tokens per step at most, unless a request sets speculative.n_max (default 16)")
    p.add_argument("--draft-min", "--draft-n-min", dest="draft_min", type=int, default=None,
                   help="fewer draft tokens than this are not tried, unless a request sets speculative.n_min "
                        "(default 0)")
    p.add_argument("--spec-max-running", type=int, default=None,
                   help="speculate only while at most this many requests run (default 4; 0: never)")
    p.add_argument("--slot-save-path", default=None,
                   help="folder where POST /slots/{id}?action=save|restore keeps slot files (default: off)")
    p.add_argument("--shutdown-timeout", type=float, default=None, help="seconds to let requests end on shutdown")
    return p


def parse_args(argv: list[str] | None, prog: str = "llama-ffi serve") -> ServerSettings:
    """Command-line options over the config file over the defaults."""
    args = _parser(prog).parse_args(argv)
    raw = load_config_file(args.config_file) if args.config_file else {}
    models = [ModelSettings.from_dict(m, f"models[{i}]") for i, m in enumerate(raw.get("models") or [])]
    cli_model = {k: v for k, v in {"n_ctx": args.n_ctx, "n_parallel": args.parallel, "n_gpu_layers": args.n_gpu_layers,
                                    "n_threads": args.threads, "chat_format": args.chat_format,
                                    "max_queued_requests": args.max_queued_requests,
                                    "kv_unified": args.kv_unified, "lora": args.lora,
                                    "spec_default": args.spec_default, "draft_max": args.draft_max,
                                    "draft_min": args.draft_min,
                                    "spec_max_running": args.spec_max_running,
                                    "mmproj": args.mmproj}.items() if v is not None}
    if args.model:
        models.insert(0, ModelSettings.from_dict({"model": args.model, "model_alias": args.model_alias, **cli_model},
                                                 "--model"))
    cors = args.cors if args.cors is not None else raw.get("cors")
    if isinstance(cors, str):
        cors = [c.strip() for c in cors.split(",") if c.strip()]
    settings = ServerSettings(
        host=args.host or raw.get("host", "127.0.0.1"), port=args.port if args.port is not None else raw.get("port", 8000),
        api_key=args.api_key or raw.get("api_key") or os.environ.get("LLAMA_FFI_API_KEY") or None,
        cors=list(cors or []), models=models,
        max_body_bytes=args.max_body_bytes or raw.get("max_body_bytes", DEFAULT_MAX_BODY),
        shutdown_timeout=args.shutdown_timeout if args.shutdown_timeout is not None else raw.get("shutdown_timeout", 5.0),
        slot_save_path=args.slot_save_path or raw.get("slot_save_path"))
    settings.validate()
    return settings
