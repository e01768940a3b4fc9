"""``quantize`` and ``download``: make and fetch GGUF files."""

from __future__ import annotations

import argparse
import os
from typing import TextIO

from ._common import Formatter

QUANTIZE_EXAMPLES = """\
examples:
  llama-ffi quantize model-f16.gguf model-Q4_K_M.gguf Q4_K_M
  llama-ffi quantize model-Q8_0.gguf model-Q4_0.gguf Q4_0 --allow-requantize --threads 8
  llama-ffi quantize --list

types: any name of llama.h's enum llama_ftype without its prefix (Q4_0, Q4_K_M, Q8_0, F16,
BF16, ...); the IQ* types of 2 bits and less need an importance matrix, which this command
does not take (use llama.cpp's llama-quantize for those).
"""

DOWNLOAD_EXAMPLES = """\
examples:
  llama-ffi download bartowski/SmolLM2-135M-Instruct-GGUF "*Q4_K_M.gguf"
  llama-ffi download Qwen/Qwen3-8B-GGUF "*Q4_K_M*.gguf" --local-dir models/
  llama-ffi run "Hi" -m "$(llama-ffi download bartowski/SmolLM2-135M-Instruct-GGUF '*Q8_0.gguf')"

FILENAME is a glob that must match one file (all parts of a split GGUF are fetched). Files
go to the Hugging Face cache (or --local-dir); a second download of the same file is
offline. Private repositories: set HF_TOKEN or run `hf auth login`. A progress bar is
drawn when stderr is a terminal; the local path of the model is printed on stdout.
"""


def register(sub: argparse._SubParsersAction) -> None:
    quant = sub.add_parser("quantize", formatter_class=Formatter, epilog=QUANTIZE_EXAMPLES,
                           help="write a GGUF quantized to another type",
                           description="Quantize SRC to TYPE and write DST (llama.cpp's llama_model_quantize).")
    quant.add_argument("src", nargs="?", help="input GGUF (ideally F16/BF16/F32)")
    quant.add_argument("dst", nargs="?", help="output GGUF")
    quant.add_argument("type", nargs="?", default="Q8_0", help="target type (default: Q8_0)")
    quant.add_argument("--threads", type=int, default=0, metavar="N", help="threads (0: every core)")
    quant.add_argument("--allow-requantize", action="store_true",
                       help="accept an already quantized input (loses quality)")
    quant.add_argument("--pure", action="store_true", help="every tensor to TYPE (no per-tensor mix)")
    quant.add_argument("--leave-output-tensor", action="store_true", help="do not quantize output.weight")
    quant.add_argument("--list", action="store_true", help="list the types and exit")
    quant.set_defaults(handler=_quantize, usage=quant)

    down = sub.add_parser("download", formatter_class=Formatter, epilog=DOWNLOAD_EXAMPLES,
                          help="fetch a GGUF from the Hugging Face hub",
                          description="Download the GGUF in REPO_ID that FILENAME matches; print its path.")
    down.add_argument("repo_id", help="owner/name on the hub")
    down.add_argument("filename", help="a glob such as '*Q4_K_M.gguf' (quote it)")
    down.add_argument("--include", action="append", default=[], metavar="GLOB",
                      help="another file to fetch beside it (repeatable), e.g. 'mmproj*.gguf'")
    down.add_argument("--local-dir", help="save here instead of the hub cache")
    down.add_argument("--cache-dir", help="hub cache folder (default: huggingface_hub's)")
    down.add_argument("--revision", help="branch, tag or commit")
    down.add_argument("--endpoint", help="hub URL (default: $HF_ENDPOINT or huggingface.co)")
    down.set_defaults(handler=_download, usage=down)


def _quantize(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    from ..native.quantize import FTYPES, ftype_name, quantize
    from ._common import UsageError

    if args.list:
        out.writelines(f"{name}\n" for name in FTYPES)
        return 0
    if not (args.src and args.dst):
        raise UsageError("quantize needs SRC and DST (or --list)")
    try:
        name = ftype_name(args.type)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    dst = quantize(args.src, args.dst, name, args.threads, allow_requantize=args.allow_requantize,
                   pure=args.pure, quantize_output_tensor=not args.leave_output_tensor)
    out.write(f"{dst} ({name}, {os.path.getsize(dst) / 2**20:.1f} MiB)\n")
    return 0


def _download(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    from ..errors import LlamaError
    from ..llama.hub import download
    from ._common import CommandError

    try:
        paths = download(args.repo_id, args.filename, additional_files=args.include, local_dir=args.local_dir,
                         cache_dir=args.cache_dir, revision=args.revision, endpoint=args.endpoint)
    except LlamaError:
        raise
    except Exception as exc:  # huggingface_hub's and httpx's errors: one line, no traceback
        if type(exc).__module__.split(".")[0] not in ("huggingface_hub", "httpx", "httpx2", "requests"):
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CommandError(f"download from {args.repo_id} failed: {first}") from None
    out.write(f"{paths[0]}\n")
    return 0
