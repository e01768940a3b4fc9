"""What the subcommands share: option groups, the model keywords they turn into, errors."""

from __future__ import annotations

import argparse
from typing import Any


class UsageError(Exception):
    """A bad combination of arguments argparse cannot see: exit status 2."""


class CommandError(Exception):
    """A runtime failure outside llama_ffi's own errors (a download): exit status 1."""


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples in epilogs as written, and shows defaults where they are set."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" not in text and action.default not in (None, False, argparse.SUPPRESS) \
                and action.option_strings:
            text += " (default: %(default)s)"
        return text


def model_options() -> argparse.ArgumentParser:
    """--model and where it runs: for every command that loads a model."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("model")
    group.add_argument("--model", "-m", metavar="GGUF",
                       help="model file (default: $LLAMA_FFI_MODEL, else models/SmolLM2-135M-Instruct.Q4_1.gguf)")
    group.add_argument("--n-gpu-layers", "-ngl", type=int, default=None, metavar="N",
                       help="layers to offload to the GPU (-1: all; default: none)")
    group.add_argument("--device", help="cpu, gpu, or a GPU index")
    group.add_argument("--n-ctx", type=int, default=4096, metavar="N", help="context size, 0 for the model's")
    group.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads (default: llama.cpp's)")
    return parent


def media_options() -> argparse.ArgumentParser:
    """--image and --mmproj: images in through a multimodal projector (run, chat)."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("images")
    group.add_argument("--mmproj", metavar="GGUF", help="the model's multimodal projector (needed for --image)")
    group.add_argument("--image", action="append", default=[], metavar="PATH",
                       help="an image (or WAV/MP3 audio clip) for the first message; repeatable")
    return parent


def media_parts(args: argparse.Namespace) -> list[dict]:
    """OpenAI content parts for ``--image`` files (checked here, so a typo is a usage error)."""
    from pathlib import Path

    paths = getattr(args, "image", None) or []
    if paths and not getattr(args, "mmproj", None):
        raise UsageError("--image needs the model's projector: --mmproj PATH")
    parts = []
    for name in paths:
        path = Path(name).expanduser().resolve()
        if not path.is_file():
            raise UsageError(f"--image {name}: no such file")
        if path.suffix.lower() in (".wav", ".mp3", ".flac"):
            import base64

            parts.append({"type": "input_audio", "input_audio": {"data": base64.b64encode(path.read_bytes()).decode(),
                                                                  "format": path.suffix.lower()[1:]}})
        else:
            parts.append({"type": "image_url", "image_url": {"url": str(path)}})
    return parts


def user_message(text: str, media: list[dict]) -> dict:
    """A user message: plain text, or text followed by the media parts."""
    if not media:
        return {"role": "user", "content": text}
    return {"role": "user", "content": [{"type": "text", "text": text}, *media]}


def sampling_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("sampling")
    group.add_argument("--temp", type=float, default=0.8, help="temperature, 0 for greedy")
    group.add_argument("--max-tokens", type=int, default=512, metavar="N", help="answer length limit, 0 or less for the context's end")
    group.add_argument("--seed", type=int, default=None, help="sampling seed (default: random)")
    group.add_argument("--system", help="system message")
    return parent


def model_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``Llama(...)`` keywords from the model options."""
    from ..llama.default_model import default_model_path

    kwargs: dict[str, Any] = {"model_path": args.model or str(default_model_path()), "verbose": False,
                              "n_ctx": args.n_ctx}
    if getattr(args, "seed", None) is not None:
        kwargs["seed"] = args.seed
    if args.threads is not None:
        kwargs["n_threads"] = args.threads
    if args.n_gpu_layers is not None:
        kwargs["n_gpu_layers"] = args.n_gpu_layers
    if getattr(args, "mmproj", None):
        kwargs["mmproj"] = args.mmproj
    device = (args.device or "").lower()
    if device == "cpu":
        kwargs["n_gpu_layers"] = 0
    elif device in ("gpu", "cuda"):
        kwargs.setdefault("n_gpu_layers", -1)
    elif device.isdigit():
        kwargs["main_gpu"], kwargs["split_mode"] = int(device), "none"
        kwargs.setdefault("n_gpu_layers", -1)
    elif device:
        raise UsageError(f"--device must be cpu, gpu or a GPU index, not {args.device!r}")
    return kwargs


def read_text(value: str | None, stdin) -> str:
    """A positional text argument; ``-`` or nothing reads standard input."""
    if value is None or value == "-":
        return stdin.read()
    return value
