#!/usr/bin/env python3
"""Write a small random-weight multimodal projector (mmproj GGUF) for tests.

A LLaVA-style ``mlp`` projector over a tiny ViT, written with the pinned tree's gguf-py:
32x32 images in 8x8 patches (16 image tokens), a 64-wide encoder of 2 blocks (the LLaVA graph
runs all but the last), and a two-layer MLP whose output width is the text model's input
width (576 for SmolLM2-135M). Weights are seeded, so the same arguments give the same bytes.
The images it encodes mean nothing: it exists to exercise libmtmd's load, tokenize, encode and
decode paths with a real text model.

Usage:
    python scripts/make_test_mmproj.py OUT.gguf [--n-embd-text 576] [--seed 0] [--shape tiny|clip-l-336]

``--shape clip-l-336`` writes LLaVA-1.5's vision tower instead (CLIP ViT-L/14 at 336 px: 576 image
tokens, 24 blocks of width 1024, f16 weights, about 600 MB): random too, but the size of a real
one, so the benchmarks time a realistic image encode.

``--n-embd-text 320`` writes a projector that does not fit SmolLM2 (the mismatch test).
Tensor names, shapes and keys follow tools/mtmd/clip.cpp (load_hparams, load_tensors) and
models/llava.cpp; shapes below are numpy's order, the reverse of ggml's ``ne``.
"""

from __future__ import annotations

import argparse
import sys
from typing import NamedTuple
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "vendor" / "llama.cpp" / "gguf-py"))

import gguf  # noqa: E402  (the pinned tree's gguf-py, on sys.path above)

class Shape(NamedTuple):
    image_size: int
    patch_size: int
    n_embd: int
    n_head: int
    n_ff: int
    n_layer: int
    n_hidden: int | None  # the MLP's middle width; None: the text model's width, as LLaVA-1.5
    f16: bool  # matrices in f16 (as the released mmproj-*-f16 files); norms and biases stay f32

    @property
    def n_patches(self) -> int:  # image tokens per image
        return (self.image_size // self.patch_size) ** 2


SHAPES = {
    "tiny": Shape(image_size=32, patch_size=8, n_embd=64, n_head=4, n_ff=128, n_layer=2, n_hidden=128, f16=False),
    "clip-l-336": Shape(image_size=336, patch_size=14, n_embd=1024, n_head=16, n_ff=4096, n_layer=24,
                        n_hidden=None, f16=True),
}
TINY = SHAPES["tiny"]
# The tests' projector, by name: the image size and patch grid it takes, the widths it has.
IMAGE_SIZE, PATCH_SIZE, N_EMBD, N_FF = TINY.image_size, TINY.patch_size, TINY.n_embd, TINY.n_ff


def write_mmproj(path: Path, n_embd_text: int, seed: int = 0, replace: dict[str, np.ndarray] | None = None,
                 shape: Shape = TINY) -> Path:
    """Write the projector; ``replace`` swaps named tensors, or drops them where the value is None
    (tests make broken projectors with it)."""
    rng = np.random.default_rng(seed)
    n_embd, n_ff, patch = shape.n_embd, shape.n_ff, shape.patch_size
    n_hidden = shape.n_hidden or n_embd_text
    matrix_type = np.float16 if shape.f16 else np.float32

    def weight(*dims: int, scale: float = 0.02) -> np.ndarray:
        return (rng.standard_normal(dims, dtype=np.float32) * scale).astype(matrix_type if len(dims) == 2 else np.float32)

    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_name("llama_ffi test projector (random weights)")
    writer.add_description("random-weight LLaVA mlp projector for tests; its image embeddings are noise")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if shape.f16 else gguf.LlamaFileType.ALL_F32)
    writer.add_bool(gguf.Keys.Clip.HAS_VISION_ENCODER, True)
    writer.add_bool(gguf.Keys.Clip.HAS_AUDIO_ENCODER, False)
    writer.add_string(gguf.Keys.Clip.PROJECTOR_TYPE, "mlp")
    writer.add_bool(gguf.Keys.ClipVision.USE_GELU, True)
    writer.add_uint32(gguf.Keys.ClipVision.IMAGE_SIZE, shape.image_size)
    writer.add_uint32(gguf.Keys.ClipVision.PATCH_SIZE, patch)
    writer.add_uint32(gguf.Keys.ClipVision.EMBEDDING_LENGTH, n_embd)
    writer.add_uint32(gguf.Keys.ClipVision.FEED_FORWARD_LENGTH, n_ff)
    writer.add_uint32(gguf.Keys.ClipVision.PROJECTION_DIM, n_embd_text)
    writer.add_uint32(gguf.Keys.ClipVision.BLOCK_COUNT, shape.n_layer)
    writer.add_uint32(gguf.Keys.ClipVision.Attention.HEAD_COUNT, shape.n_head)
    writer.add_float32(gguf.Keys.ClipVision.Attention.LAYERNORM_EPS, 1e-5)
    writer.add_array(gguf.Keys.ClipVision.IMAGE_MEAN, [0.5, 0.5, 0.5])
    writer.add_array(gguf.Keys.ClipVision.IMAGE_STD, [0.5, 0.5, 0.5])

    tensors = {
        "v.patch_embd.weight": weight(n_embd, 3, patch, patch),  # ggml ne: [p, p, 3, n_embd]
        "v.patch_embd.bias": weight(n_embd),
        "v.position_embd.weight": weight(shape.n_patches, n_embd).astype(np.float32),
        "v.pre_ln.weight": np.ones(n_embd, np.float32),
        "v.pre_ln.bias": np.zeros(n_embd, np.float32),
    }
    for il in range(shape.n_layer):
        blk = f"v.blk.{il}"
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            tensors[f"{blk}.{name}.weight"] = weight(n_embd, n_embd)
            tensors[f"{blk}.{name}.bias"] = weight(n_embd)
        for name in ("ln1", "ln2"):
            tensors[f"{blk}.{name}.weight"] = np.ones(n_embd, np.float32)
            tensors[f"{blk}.{name}.bias"] = np.zeros(n_embd, np.float32)
        tensors[f"{blk}.ffn_up.weight"] = weight(n_ff, n_embd)  # ggml ne: [n_embd, n_ff]
        tensors[f"{blk}.ffn_up.bias"] = weight(n_ff)
        tensors[f"{blk}.ffn_down.weight"] = weight(n_embd, n_ff)
        tensors[f"{blk}.ffn_down.bias"] = weight(n_embd)
    tensors["mm.0.weight"] = weight(n_hidden, n_embd)
    tensors["mm.0.bias"] = weight(n_hidden)
    tensors["mm.2.weight"] = weight(n_embd_text, n_hidden)  # the output: n_embd_text wide
    tensors["mm.2.bias"] = weight(n_embd_text)
    for name, data in (replace or {}).items():  # None drops the tensor
        tensors.pop(name) if data is None else tensors.__setitem__(name, data)
    for name, data in tensors.items():
        writer.add_tensor(name, data)

    path.parent.mkdir(parents=True, exist_ok=True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--n-embd-text", type=int, default=576, help="the text model's n_embd (SmolLM2-135M: 576)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    args = p.parse_args(argv)
    print(f"wrote {write_mmproj(args.out, args.n_embd_text, args.seed, shape=SHAPES[args.shape])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
