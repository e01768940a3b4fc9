#!/usr/bin/env python3
"""Write a random-weight GGUF with Llama-3-8B shapes, for SPEED measurements only.

The tokenizer is real: every ``tokenizer.*`` entry is copied from the pinned tree's
models/ggml-vocab-llama-bpe.gguf (the Llama-3 vocabulary, 128256 tokens), so prompts
tokenize as they would for Llama-3. The weights are noise: one small random float16 block
tiled over every matrix (generating 8e9 random numbers would take minutes), norms set to 1.
The file's name and ``general.name``/``general.description`` say so. Speed is real, text
is not.

    python3 scripts/make_8b_model.py                      # models/llama3-8b-shapes-random.Q4_K_M.gguf
    python3 scripts/make_8b_model.py --tiny               # 2 small layers, F16, for tests
    python3 scripts/make_8b_model.py --tiny --quantize    # ... and Q4_K_M through llama-quantize

Full size: a 16 GB F16 file is written, quantized with vendor/bin/llama-quantize to Q4_K_M
(about 4.9 GB), and removed (``--keep-f16`` keeps it). Needs ~21 GB of free disk.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TREE = REPO / "vendor" / "llama.cpp"
sys.path.insert(0, str(TREE / "gguf-py"))

import gguf  # noqa: E402  (the pinned tree's gguf-py, on sys.path above)

VOCAB = TREE / "models" / "ggml-vocab-llama-bpe.gguf"
QUANTIZE = REPO / "vendor" / "bin" / "llama-quantize"
LABEL = "SPEED ONLY: random weights, real Llama-3 tokenizer; its text is noise"


@dataclass(frozen=True)
class Shapes:
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    n_ctx_train: int = 8192

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


LLAMA3_8B = Shapes(n_layer=32, n_embd=4096, n_ff=14336, n_head=32, n_head_kv=8)
TINY = Shapes(n_layer=2, n_embd=64, n_ff=128, n_head=2, n_head_kv=1, n_ctx_train=2048)


def tensor_plan(s: Shapes, n_vocab: int) -> list[tuple[str, tuple[int, ...], type]]:
    """(name, numpy shape (rows=out, cols=in), dtype) of every tensor, in file order."""
    kv = s.n_head_kv * s.head_dim
    plan = [("token_embd.weight", (n_vocab, s.n_embd), np.float16)]
    for i in range(s.n_layer):
        b = f"blk.{i}."
        plan += [(b + "attn_norm.weight", (s.n_embd,), np.float32),
                 (b + "attn_q.weight", (s.n_embd, s.n_embd), np.float16),
                 (b + "attn_k.weight", (kv, s.n_embd), np.float16),
                 (b + "attn_v.weight", (kv, s.n_embd), np.float16),
                 (b + "attn_output.weight", (s.n_embd, s.n_embd), np.float16),
                 (b + "ffn_norm.weight", (s.n_embd,), np.float32),
                 (b + "ffn_gate.weight", (s.n_ff, s.n_embd), np.float16),
                 (b + "ffn_up.weight", (s.n_ff, s.n_embd), np.float16),
                 (b + "ffn_down.weight", (s.n_embd, s.n_ff), np.float16)]
    plan += [("output_norm.weight", (s.n_embd,), np.float32),
             ("output.weight", (n_vocab, s.n_embd), np.float16)]
    return plan


def copy_tokenizer(writer: gguf.GGUFWriter, vocab_path: Path) -> int:
    """Copy every tokenizer.* entry (with its GGUF types); return the vocabulary size."""
    reader = gguf.GGUFReader(vocab_path)
    n_vocab = 0
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        value = field.contents()
        vtype = field.types[0]
        sub = field.types[1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, value, vtype, sub_type=sub)
        if key == "tokenizer.ggml.tokens":
            n_vocab = len(value)
    if not n_vocab:
        sys.exit(f"{vocab_path} has no tokenizer.ggml.tokens")
    return n_vocab


def add_hparams(writer: gguf.GGUFWriter, s: Shapes, n_vocab: int, name: str) -> None:
    writer.add_name(name)
    writer.add_description(LABEL)
    writer.add_context_length(s.n_ctx_train)
    writer.add_embedding_length(s.n_embd)
    writer.add_block_count(s.n_layer)
    writer.add_feed_forward_length(s.n_ff)
    writer.add_head_count(s.n_head)
    writer.add_head_count_kv(s.n_head_kv)
    writer.add_rope_dimension_count(s.head_dim)
    writer.add_rope_freq_base(500000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)


def tiled(shape: tuple[int, ...], dtype, block: np.ndarray) -> np.ndarray:
    """``shape`` filled from ``block`` repeated: fast and noise-like enough for speed work."""
    if dtype == np.float32:  # norm weights
        return np.ones(shape, dtype=np.float32)
    return np.resize(block, shape)


def write_f16(path: Path, s: Shapes, name: str, seed: int = 0) -> None:
    writer = gguf.GGUFWriter(path, "llama")
    n_vocab = copy_tokenizer(writer, VOCAB)
    add_hparams(writer, s, n_vocab, name)
    plan = tensor_plan(s, n_vocab)
    for tname, shape, dtype in plan:
        writer.add_tensor_info(tname, shape, np.dtype(dtype), int(np.prod(shape)) * np.dtype(dtype).itemsize)
    # A prime-sized block, so consecutive rows do not repeat exactly; scale keeps activations finite.
    block = (np.random.default_rng(seed).standard_normal(1_048_573) * 0.02).astype(np.float16)
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tname, shape, dtype in plan:
        writer.write_tensor_data(tiled(shape, dtype, block))
    writer.close()


def quantize(src: Path, dst: Path, kind: str, threads: int) -> None:
    if not QUANTIZE.exists():
        sys.exit(f"{QUANTIZE} not built: run `python3 scripts/build_libllama.py --tools all`")
    subprocess.run([str(QUANTIZE), str(src), str(dst), kind, str(threads)], check=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="2 layers, n_embd 64: a small file for tests")
    p.add_argument("--quantize", dest="quant", default=None,
                   help="quantization type for llama-quantize (default: Q4_K_M at full size, none with --tiny)")
    p.add_argument("--out", type=Path, default=None, help="output file")
    p.add_argument("--keep-f16", action="store_true", help="keep the intermediate F16 file")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    if not VOCAB.exists():
        sys.exit(f"{VOCAB} missing: the pinned llama.cpp tree is needed (scripts/build_libllama.py)")
    shapes = TINY if args.tiny else LLAMA3_8B
    quant = args.quant or (None if args.tiny else "Q4_K_M")
    stem = "llama3-tiny-random" if args.tiny else "llama3-8b-shapes-random"
    out = args.out or REPO / "models" / f"{stem}.{quant or 'F16'}.gguf"
    out.parent.mkdir(parents=True, exist_ok=True)
    name = f"{stem} ({LABEL})"
    f16 = out if quant is None else out.with_name(out.name + ".f16.tmp")
    t0 = time.perf_counter()
    write_f16(f16, shapes, name)
    print(f"[make_8b_model] wrote {f16} ({f16.stat().st_size / 2**30:.2f} GiB) "
          f"in {time.perf_counter() - t0:.1f} s", flush=True)
    if quant is not None:
        t1 = time.perf_counter()
        quantize(f16, out, quant, args.threads)
        print(f"[make_8b_model] quantized to {quant}: {out} ({out.stat().st_size / 2**30:.2f} GiB) "
              f"in {time.perf_counter() - t1:.1f} s", flush=True)
        if not args.keep_f16:
            f16.unlink()
    print(f"[make_8b_model] {out}: {LABEL}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
