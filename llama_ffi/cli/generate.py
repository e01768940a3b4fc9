"""``run``, ``chat`` and ``info``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TextIO

from ._common import (Formatter, media_options, media_parts, model_kwargs, model_options, sampling_options,
                      user_message)

RUN_EXAMPLES = """\
examples:
  llama-ffi run "Why is the sky blue?"
  llama-ffi run "Summarise: ..." --system "Answer in one sentence." --temp 0 --max-tokens 64
  llama-ffi run "Hello" -m ~/models/Qwen3-8B-Q4_K_M.gguf --device gpu
  llama-ffi run "What is in this picture?" -m gemma-3-4b-it-Q4_K_M.gguf --mmproj mmproj-gemma-3-4b-it-f16.gguf \
      --image photo.jpg
"""

CHAT_EXAMPLES = """\
examples:
  llama-ffi chat --system "You are terse."
  printf 'Hi\\nWhat did I just say?\\n' | llama-ffi chat --temp 0    (one answer per input line)
  llama-ffi chat -m model.gguf --mmproj mmproj.gguf --image photo.png    (the image goes with the first message)

type /exit or /quit (or end the input) to leave.
"""

INFO_EXAMPLES = """\
examples:
  llama-ffi info
  llama-ffi info -m model.gguf | jq '.metadata["general.architecture"]'
"""


def register(sub: argparse._SubParsersAction) -> None:
    both = [model_options(), sampling_options(), media_options()]
    run = sub.add_parser("run", parents=both, formatter_class=Formatter, epilog=RUN_EXAMPLES,
                         help="stream one answer to PROMPT", description="Stream one answer to PROMPT, formatted "
                         "with the model's chat template.")
    run.add_argument("prompt", help="the user message")
    run.set_defaults(handler=_run, usage=run)
    chat = sub.add_parser("chat", parents=both, formatter_class=Formatter, epilog=CHAT_EXAMPLES,
                          help="interactive chat with history",
                          description="Chat on standard input; the history is kept for the whole session.")
    chat.set_defaults(handler=_chat, usage=chat)
    info = sub.add_parser("info", parents=[model_options()], formatter_class=Formatter, epilog=INFO_EXAMPLES,
                          help="model metadata, devices and build facts as JSON",
                          description="Print the model's metadata (vocabulary only is loaded), the devices, "
                          "and the libllama build as one JSON object.")
    info.set_defaults(handler=_info, usage=info)


def _answer(llm, messages: list[dict], args: argparse.Namespace, out: TextIO) -> str:
    """Stream one assistant turn to ``out``; return its text."""
    parts = []
    for chunk in llm.create_chat_completion(messages, stream=True, temperature=args.temp,
                                            max_tokens=args.max_tokens if args.max_tokens > 0 else None):
        text = chunk["choices"][0]["delta"].get("content") or ""
        if text:
            parts.append(text)
            out.write(text)
            out.flush()
    out.write("\n")
    out.flush()
    return "".join(parts)


def _run(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    from ..llama import Llama

    media = media_parts(args)
    with Llama(**model_kwargs(args)) as llm:
        messages = [{"role": "system", "content": args.system}] if args.system else []
        _answer(llm, messages + [user_message(args.prompt, media)], args, out)
    return 0


def _chat(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    from ..llama import Llama

    media = media_parts(args)
    with Llama(**model_kwargs(args)) as llm:
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
            history.append(user_message(line.rstrip("\n"), media))
            media = []  # the images go with the first message only
            history.append({"role": "assistant", "content": _answer(llm, history, args, out)})


def _info(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    from ..native import Model, devices, library_path, system_info

    path = model_kwargs(args)["model_path"]
    with Model.load(path, vocab_only=True, n_gpu_layers=0) as model:
        metadata = {k: v for k, v in model.metadata.items() if not k.startswith("tokenizer.chat_template")}
        report = {"model": path, "metadata": metadata, "chat_templates": sorted(model.chat_templates)}
    report["system"] = system_info()
    report["devices"] = [vars(d) for d in devices()]
    manifest = Path(library_path() or "").resolve().parent.parent / "manifest.json"
    report["build"] = json.loads(manifest.read_text()) if manifest.is_file() else None
    json.dump(report, out, indent=2, default=str)
    out.write("\n")
    return 0
