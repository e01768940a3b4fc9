"""``tokenize``: text to token ids with the model's vocabulary (only the vocabulary is loaded)."""

from __future__ import annotations

import argparse
import json
from typing import TextIO

from ._common import Formatter, model_kwargs, model_options, read_text

EXAMPLES = """\
examples:
  llama-ffi tokenize "Hello, world"            one token per line: id, then its piece
  llama-ffi tokenize "Hello, world" --ids      ids only, on one line
  llama-ffi tokenize --pieces < prompt.txt     pieces only (Python string literals)
  llama-ffi tokenize "<|im_start|>user" --special --json
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("tokenize", parents=[model_options()], formatter_class=Formatter, epilog=EXAMPLES,
                            help="text to token ids", description="Tokenize TEXT with the model's vocabulary.")
    parser.add_argument("text", nargs="?", help="the text (default or '-': standard input)")
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument("--ids", action="store_true", help="print only the ids, space-separated")
    shape.add_argument("--pieces", action="store_true", help="print only the pieces, one per line")
    shape.add_argument("--json", action="store_true", help='print [{"id": ..., "piece": ...}, ...]')
    parser.add_argument("--no-bos", action="store_true", help="do not add the BOS token the model asks for")
    parser.add_argument("--special", action="store_true",
                        help="parse special tokens written in the text (e.g. <|im_start|>)")
    parser.set_defaults(handler=_tokenize, usage=parser)


def _tokenize(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    from ..native import Model

    text = read_text(args.text, stdin)
    with Model.load(model_kwargs(args)["model_path"], vocab_only=True, n_gpu_layers=0) as model:
        vocab = model.vocab
        ids = vocab.tokenize(text, add_special=not args.no_bos, parse_special=args.special)
        pieces = [vocab.token_to_piece(t, special=True).decode("utf-8", errors="replace") for t in ids]
    if args.ids:
        out.write(" ".join(map(str, ids)) + "\n")
    elif args.pieces:
        out.writelines(repr(p) + "\n" for p in pieces)
    elif args.json:
        json.dump([{"id": t, "piece": p} for t, p in zip(ids, pieces)], out, ensure_ascii=False)
        out.write("\n")
    else:
        out.writelines(f"{t:>7} {p!r}\n" for t, p in zip(ids, pieces))
    return 0
