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
    python scripts/make_test_mmproj.py OUT.gguf --audio [--n-embd-text 576] [--seed 0]

``--shape clip-l-336`` writes LLaVA-1.5's vision tower instead (CLIP ViT-L/14 at 336 px: 576 image
tokens, 24 blocks of width 1024, f16 weights, about 600 MB): random too, but the size of a real
one, so the benchmarks time a realistic image encode.

``--audio`` writes an audio projector instead (:func:`write_audio_mmproj`): a 1-block Whisper-style
encoder with an ``ultravox`` projector, 25 audio tokens for each 30 s of sound.

``--n-embd-text 320`` writes a projector that does not fit SmolLM2 (the mismatch test).
Tensor names, shapes and keys follow tools/mtmd/clip.cpp (load_hparams, load_tensors),
models/llava.cpp and models/whisper-enc.cpp; shapes below are numpy's order, the reverse of
ggml's ``ne``.
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
    return _write(writer, tensors, path)


# --- audio -------------------------------------------------------------------------------------
# The audio projector's sizes. libmtmd's Whisper preprocessing (mtmd-audio.cpp) pads every clip with
# 30 s of silence and cuts the mel spectrogram into 3000-frame (30 s) chunks, dropping the partial
# last one: a clip under 30 s is one chunk, 30 s to 60 s two, and so on. The encoder halves the
# frames (conv stride 2: 1500 positions); ultravox then stacks AUDIO_STACK_FACTOR positions into one
# token, so each chunk is 1500 / 60 = 25 tokens (a factor dividing 1500, so that clip.cpp's count,
# 3000 / factor / 2, and the graph's rows agree).
AUDIO_SAMPLE_RATE = 16000  # fixed by clip.cpp for whisper-style projectors, not read from the file
AUDIO_CHUNK_SECONDS = 30
AUDIO_N_MEL, AUDIO_N_EMBD, AUDIO_N_HEAD, AUDIO_N_FF, AUDIO_N_LAYER = 16, 32, 4, 64, 1
AUDIO_STACK_FACTOR = 60
AUDIO_N_POS = 1500  # the encoder's positions per chunk: position_embd needs at least this many rows
AUDIO_TOKENS_PER_CHUNK = AUDIO_N_POS // AUDIO_STACK_FACTOR


def audio_tokens(seconds: float) -> int:
    """Audio tokens the projector makes of a clip ``seconds`` long (whole 30 s chunks after the
    30 s of padding, as libmtmd counts them)."""
    n_frames = int(seconds * AUDIO_SAMPLE_RATE) // 160 + AUDIO_CHUNK_SECONDS * 100  # hop of 160 samples
    return n_frames // (AUDIO_CHUNK_SECONDS * 100) * AUDIO_TOKENS_PER_CHUNK


def write_audio_mmproj(path: Path, n_embd_text: int, seed: int = 0) -> Path:
    """Write the smallest audio projector the pinned libmtmd loads and runs: f32, seeded.

    Type ``ultravox``: a Whisper encoder (two conv1d, learned positions, pre-norm blocks) and an
    RMS-norm/SwiGLU MLP over stacked frames. Of the whisper-encoder types (models/whisper-enc.cpp)
    ``qwen2a`` has two tensors fewer (one linear layer with a bias where ultravox has two linear
    layers and two norms) but was not chosen: libmtmd wraps its audio in ``<|audio_bos|>`` and
    ``<|audio_eos|>`` text, which SmolLM2 splits into ordinary tokens, and it makes a fixed 750
    tokens per 30 s chunk. ``ultravox`` adds no text around the audio, so a prompt grows by exactly
    the audio's tokens, and its stack factor (a key in the file) brings a chunk down to 25 tokens,
    which keeps the tests fast. ``voxtral`` and ``glma`` need more tensors; ``qwen3a``, ``lfm2a``
    and the others, more still. Conv weights stay f32 (converted models store them f16).
    """
    rng = np.random.default_rng(seed)
    n_mel, n_embd, n_ff = AUDIO_N_MEL, AUDIO_N_EMBD, AUDIO_N_FF
    n_stacked, n_hidden = n_embd * AUDIO_STACK_FACTOR, 2 * n_embd

    def weight(*dims: int, scale: float = 0.05) -> np.ndarray:
        return rng.standard_normal(dims, dtype=np.float32) * scale

    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_name("llama_ffi test audio projector (random weights)")
    writer.add_description("random-weight ultravox (Whisper encoder) projector for tests; its embeddings are noise")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_bool(gguf.Keys.Clip.HAS_VISION_ENCODER, False)
    writer.add_bool(gguf.Keys.Clip.HAS_AUDIO_ENCODER, True)
    writer.add_string(gguf.Keys.Clip.PROJECTOR_TYPE, "ultravox")
    writer.add_uint32(gguf.Keys.ClipAudio.NUM_MEL_BINS, n_mel)
    writer.add_uint32(gguf.Keys.ClipAudio.EMBEDDING_LENGTH, n_embd)
    writer.add_uint32(gguf.Keys.ClipAudio.FEED_FORWARD_LENGTH, n_ff)
    writer.add_uint32(gguf.Keys.ClipAudio.PROJECTION_DIM, n_embd_text)
    writer.add_uint32(gguf.Keys.ClipAudio.BLOCK_COUNT, AUDIO_N_LAYER)
    writer.add_uint32(gguf.Keys.ClipAudio.Attention.HEAD_COUNT, AUDIO_N_HEAD)
    writer.add_float32(gguf.Keys.ClipAudio.Attention.LAYERNORM_EPS, 1e-5)
    writer.add_uint32(gguf.Keys.ClipAudio.Projector.STACK_FACTOR, AUDIO_STACK_FACTOR)

    tensors = {
        "a.conv1d.1.weight": weight(n_embd, n_mel, 3),  # ggml ne: [kernel 3, n_mel, n_embd]
        "a.conv1d.1.bias": weight(n_embd, 1),  # a column, as the converter stores it, to broadcast over frames
        "a.conv1d.2.weight": weight(n_embd, n_embd, 3),  # stride 2: halves the frames
        "a.conv1d.2.bias": weight(n_embd, 1),
        "a.position_embd.weight": weight(AUDIO_N_POS, n_embd),
    }
    for il in range(AUDIO_N_LAYER):
        blk = f"a.blk.{il}"
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            tensors[f"{blk}.{name}.weight"] = weight(n_embd, n_embd)
            if name != "attn_k":  # Whisper's key projection has no bias (the graph asserts so)
                tensors[f"{blk}.{name}.bias"] = weight(n_embd)
        for name in ("ln1", "ln2"):
            tensors[f"{blk}.{name}.weight"] = np.ones(n_embd, np.float32)
            tensors[f"{blk}.{name}.bias"] = np.zeros(n_embd, np.float32)
        tensors[f"{blk}.ffn_up.weight"] = weight(n_ff, n_embd)
        tensors[f"{blk}.ffn_up.bias"] = weight(n_ff)
        tensors[f"{blk}.ffn_down.weight"] = weight(n_embd, n_ff)
        tensors[f"{blk}.ffn_down.bias"] = weight(n_embd)
    tensors["mm.a.norm_pre.weight"] = np.ones(n_stacked, np.float32)
    tensors["mm.a.mlp.1.weight"] = weight(2 * n_hidden, n_stacked)  # SwiGLU: gate and value halves
    tensors["mm.a.norm_mid.weight"] = np.ones(n_hidden, np.float32)
    tensors["mm.a.mlp.2.weight"] = weight(n_embd_text, n_hidden)  # the output: n_embd_text wide
    return _write(writer, tensors, path)


def _write(writer, tensors: dict[str, np.ndarray], path: Path) -> Path:
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
    p.add_argument("--shape", choices=sorted(SHAPES), default="tiny", help="the vision projector's size")
    p.add_argument("--audio", action="store_true", help="write the tiny audio (ultravox) projector instead")
    args = p.parse_args(argv)
    if args.audio:
        print(f"wrote {write_audio_mmproj(args.out, args.n_embd_text, args.seed)}")
    else:
        print(f"wrote {write_mmproj(args.out, args.n_embd_text, args.seed, shape=SHAPES[args.shape])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
