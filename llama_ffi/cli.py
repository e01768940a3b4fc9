"""``llama-ffi``: answer a prompt, chat, or describe a model and the library.

    llama-ffi run "Why is the sky blue?"      stream one answer (the model's chat template)
    llama-ffi chat --system "Be brief."       interactive; history kept; /exit or EOF ends
    llama-ffi info                            metadata, devices, build manifest (JSON)

Exit status: 0 done, 1 runtime error (one clean line on stderr, no traceback), 2 usage
error (argparse), 130 interrupted with Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence, TextIO

from .errors import LlamaError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", "-m", help="GGUF file (default: the default model)")
    common.add_argument("--temp", type=float, default=0.8, help="sampling temperature (0: greedy)")
    common.add_argument("--max-tokens", type=int, default=512, help="answer length limit (<=0: context end)")
    common.add_argument("--n-gpu-layers", "-ngl", type=int, default=None, help="layers to offload (-1: all)")
    common.add_argument("--device", help="cpu, gpu, or a GPU index")
    common.add_argument("--seed", type=int, default=None, help="sampling seed")
    common.add_argument("--n-ctx", type=int, default=4096, help="context size (0: the model's)")
    parser = argparse.ArgumentParser(prog="llama-ffi", description="llama.cpp through llama_ffi")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", parents=[common], help="stream one answer to PROMPT")
    run.add_argument("prompt")
    run.add_argument("--system", help="system message")
    chat = sub.add_parser("chat", parents=[common], help="interactive chat with history")
    chat.add_argument("--system", help="system message")
    sub.add_parser("info", parents=[common], help="model metadata, devices and build facts as JSON")
    return parser


def _model_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    from .models import default_model_path

    kwargs: dict[str, Any] = {"model_path": args.model or str(default_model_path()), "verbose": False,
                              "n_ctx": args.n_ctx}
    if args.seed is not None:
        kwargs["seed"] = args.seed
    if args.n_gpu_layers is not None:
        kwargs["n_gpu_layers"] = args.n_gpu_layers
    device = (args.device or "").lower()
    if device == "cpu":
        kwargs["n_gpu_layers"] = 0
    elif device in ("gpu", "cuda"):
        kwargs.setdefault("n_gpu_layers", -1)
    elif device.isdigit():
        kwargs["main_gpu"], kwargs["split_mode"] = int(device), "none"
        kwargs.setdefault("n_gpu_layers", -1)
    elif device:
        raise _UsageError(f"--device must be cpu, gpu or a GPU index, not {args.device!r}")
    return kwargs


class _UsageError(Exception):
    pass


def _answer(llm, messages: list[dict], args: argparse.Namespace, out: TextIO) -> str:
    """Stream one assistant turn to ``out``; return its text."""
    parts = []
    for chunk in llm.create_chat_completion(messages, stream=True, temperature=args.temp,
                                            max_tokens=args.max_tokens if args.max_tokens > 0 else None):
        delta = chunk["choices"][0]["delta"]
        text = delta.get("content") or ""
        if text:
            parts.append(text)
            out.write(text)
            out.flush()
    out.write("\n")
    out.flush()
    return "".join(parts)


def _run(args: argparse.Namespace, out: TextIO) -> int:
    from .llama import Llama

    with Llama(**_model_kwargs(args)) as llm:
        messages = [{"role": "system", "content": args.system}] if args.system else []
        _answer(llm, messages + [{"role": "user", "content": args.prompt}], args, out)
    return 0


def _chat(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    from .llama import Llama

    with Llama(**_model_kwargs(args)) as llm:
        history = [{"role": "system", "content": args.system}] if args.system else []
        interactive = stdin.isatty()
        while True:
            if interactive:
                out.write("> ")
                out.flush()
            line = stdin.readline()
            if not line or line.strip() in ("/exit", "/quit"):
                return 0
            if not line.strip():
                continue
            history.append({"role": "user", "content": line.rstrip("\n")})
            history.append({"role": "assistant", "content": _answer(llm, history, args, out)})


def _info(args: argparse.Namespace, out: TextIO) -> int:
    from .native import Model, devices, library_path, system_info

    kwargs = _model_kwargs(args)
    with Model.load(kwargs["model_path"], vocab_only=True, n_gpu_layers=0) as model:
        metadata = {k: v for k, v in model.metadata.items() if not k.startswith("tokenizer.chat_template")}
        report = {"model": kwargs["model_path"], "metadata": metadata,
                  "chat_templates": sorted(model.chat_templates)}
    report["system"] = system_info()
    report["devices"] = [vars(d) for d in devices()]
    manifest = Path(library_path() or "").resolve().parent.parent / "manifest.json"
    report["build"] = json.loads(manifest.read_text()) if manifest.is_file() else None
    json.dump(report, out, indent=2, default=str)
    out.write("\n")
    return 0


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stdin: TextIO | None = None) -> int:
    out, inp = stdout or sys.stdout, stdin or sys.stdin
    parser = _parser()
    args = parser.parse_args(argv)  # exits 2 on a usage error
    try:
        if args.command == "run":
            return _run(args, out)
        if args.command == "chat":
            return _chat(args, out, inp)
        return _info(args, out)
    except _UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"llama-ffi: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`llama-ffi info | head`)
        sys.stderr.close()
        return 1
    except (LlamaError, OSError, ValueError) as exc:
        print(f"llama-ffi: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # python -m llama_ffi.cli
    sys.exit(main())
