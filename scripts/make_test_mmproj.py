#!/usr/bin/env python3
"""Write a small random-weight multimodal projector (mmproj GGUF) for tests.

A LLaVA-style ``mlp`` projector over a tiny ViT, written with the pinned tree's gguf-py:
32x32 images in 8x8 patches (16 image tokens), a 64-wide encoder of 2 blocks (the LLaVA graph
runs all but the last), and a two-layer MLP whose output width is the text model's input
width (576 for SmolLM2-135M). Weights are seeded, so the same arguments give the same bytes.
The images it encodes mean nothing: it exists to exercise libmtmd's load, tokenize, encode and
decode paths with a real text model.

Usage:
    python scripts/make_test_mmproj.py OUT.gguf [--n-embd-text 576] [--seed 0]

``--n-embd-text 320`` writes a projector that does not fit SmolLM2 (the mismatch test).
Tensor names, shapes and keys follow tools/mtmd/clip.cpp (load_hparams, load_tensors) and
models/llava.cpp; shapes below are numpy's order, the reverse of ggml's ``ne``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "vendor" / "llama.cpp" / "gguf-py"))

import gguf  # noqa: E402  (the pinned tree's gguf-py, on sys.path above)

IMAGE_SIZE, PATCH_SIZE = 32, 8
N_EMBD, N_HEAD, N_FF, N_LAYER, N_HIDDEN = 64, 4, 128, 2, 128
N_PATCHES = (IMAGE_SIZE // PATCH_SIZE) ** 2  # image tokens per image


def write_mmproj(path: Path, n_embd_text: int, seed: int = 0, replace: dict[str, np.ndarray] | None = None) -> Path:
    """Write the projector; ``replace`` swaps named tensors, or drops them where the value is None
    (tests make broken projectors with it)."""
    rng = np.random.default_rng(seed)

    def weight(*shape: int, scale: float = 0.02) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_name("llama_ffi test projector (random weights)")
    writer.add_description("random-weight LLaVA mlp projector for tests; its image embeddings are noise")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_bool(gguf.Keys.Clip.HAS_VISION_ENCODER, True)
    writer.add_bool(gguf.Keys.Clip.HAS_AUDIO_ENCODER, False)
    writer.add_string(gguf.Keys.Clip.PROJECTOR_TYPE, "mlp")
    writer.add_bool(gguf.Keys.ClipVision.USE_GELU, True)
    writer.add_uint32(gguf.Keys.ClipVision.IMAGE_SIZE, IMAGE_SIZE)
    writer.add_uint32(gguf.Keys.ClipVision.PATCH_SIZE, PATCH_SIZE)
    writer.add_uint32(gguf.Keys.ClipVision.EMBEDDING_LENGTH, N_EMBD)
    writer.add_uint32(gguf.Keys.ClipVision.FEED_FORWARD_LENGTH, N_FF)
    writer.add_uint32(gguf.Keys.ClipVision.PROJECTION_DIM, n_embd_text)
    writer.add_uint32(gguf.Keys.ClipVision.BLOCK_COUNT, N_LAYER)
    writer.add_uint32(gguf.Keys.ClipVision.Attention.HEAD_COUNT, N_HEAD)
    writer.add_float32(gguf.Keys.ClipVision.Attention.LAYERNORM_EPS, 1e-5)
    writer.add_array(gguf.Keys.ClipVision.IMAGE_MEAN, [0.5, 0.5, 0.5])
    writer.add_array(gguf.Keys.ClipVision.IMAGE_STD, [0.5, 0.5, 0.5])

    tensors = {
        "v.patch_embd.weight": weight(N_EMBD, 3, PATCH_SIZE, PATCH_SIZE),  # ggml ne: [p, p, 3, n_embd]
        "v.patch_embd.bias": weight(N_EMBD),
        "v.position_embd.weight": weight(N_PATCHES, N_EMBD),
        "v.pre_ln.weight": np.ones(N_EMBD, np.float32),
        "v.pre_ln.bias": np.zeros(N_EMBD, np.float32),
    }
    for il in range(N_LAYER):
        blk = f"v.blk.{il}"
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            tensors[f"{blk}.{name}.weight"] = weight(N_EMBD, N_EMBD)
            tensors[f"{blk}.{name}.bias"] = weight(N_EMBD)
        for name in ("ln1", "ln2"):
            tensors[f"{blk}.{name}.weight"] = np.ones(N_EMBD, np.float32)
            tensors[f"{blk}.{name}.bias"] = np.zeros(N_EMBD, np.float32)
        tensors[f"{blk}.ffn_up.weight"] = weight(N_FF, N_EMBD)  # ggml ne: [n_embd, n_ff]
        tensors[f"{blk}.ffn_up.bias"] = weight(N_FF)
        tensors[f"{blk}.ffn_down.weight"] = weight(N_EMBD, N_FF)
        tensors[f"{blk}.ffn_down.bias"] = weight(N_EMBD)
    tensors["mm.0.weight"] = weight(N_HIDDEN, N_EMBD)
    tensors["mm.0.bias"] = weight(N_HIDDEN)
    tensors["mm.2.weight"] = weight(n_embd_text, N_HIDDEN)  # the output: n_embd_text wide
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
    args = p.parse_args(argv)
    print(f"wrote {write_mmproj(args.out, args.n_embd_text, args.seed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
