"""A guard in front of libmtmd's projector loader: refuse an mmproj file before clip.cpp reads it.

``mtmd_init_from_file`` turns most loader errors into a NULL return, but not all: for the
LLaVA-style ``mlp`` projector, ``clip_n_mmproj_embd`` reads ``mm.2.weight`` without checking it
exists, and the warmup pass builds the encoder graph, where a tensor of the wrong shape fails a
``GGML_ASSERT`` (the process aborts). So, before any C call:

- the file must pass :func:`check_gguf_file` (structure, lengths, tensor data ranges) and say
  ``general.architecture = clip`` with a vision or audio encoder;
- its output width (what clip.cpp reports as ``n_mmproj_embd``) must equal the text model's
  input width (``llama_model_n_embd_inp``): read from the projector's last tensor for the
  types where clip.cpp reads it so, else from ``clip.<modality>.projection_dim``;
- for ``mlp`` (the projector this package tests with), every tensor the encoder graph
  multiplies must have the shape the hyperparameters imply.

Other projector types get the first two checks only; their deeper shape rules live in clip.cpp.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

from ..errors import ModelLoadError, ValidationError
from .gguf_guard import _read_metadata, _Reader, check_gguf_file

# projector type -> (tensor, dimension) holding its output width, as clip_n_mmproj_embd reads it
OUTPUT_WIDTH = {
    "mlp": ("mm.2.weight", 1), "pixtral": ("mm.2.weight", 1), "lightonocr": ("mm.2.weight", 1),
    "mlp_norm": ("mm.3.bias", 0), "ldp": ("mm.model.mb_block.1.block.2.1.bias", 0),
    "ldpv2": ("mm.model.peg.0.bias", 0),
}


def read_tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """{tensor name: shape (ggml order, ne0 first)} of a file :func:`check_gguf_file` accepted."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        view = memoryview(data)
        try:
            r = _Reader(view, path)
            r.pos = 8
            n_tensors, n_kv = r.u64("tensor count"), r.u64("metadata count")
            _read_metadata(r, n_kv)
            shapes = {}
            for _ in range(n_tensors):
                name = r.string("tensor name").decode("utf-8", errors="replace")
                dims = tuple(r.u64("shape") for _ in range(r.u32("dimensions")))
                r.u32("type")
                r.u64("offset")
                shapes[name] = dims
            return shapes
        finally:
            view.release()


def check_mmproj(path: str | os.PathLike, n_embd_text: int) -> dict[str, object]:
    """Raise ModelLoadError (a broken file) or ValidationError (a projector for another model)
    unless libmtmd can load ``path`` for a text model of input width ``n_embd_text``.
    Returns the file's scalar metadata."""
    path = Path(path)
    try:
        metadata = check_gguf_file(path)
    except ModelLoadError as exc:
        raise ModelLoadError(f"mmproj: {exc}") from None
    if metadata.get("general.architecture") != "clip":
        raise ModelLoadError(f"{path} is not a multimodal projector (general.architecture is "
                             f"{metadata.get('general.architecture')!r}, expected 'clip')")
    modalities = [m for m in ("vision", "audio") if metadata.get(f"clip.has_{m}_encoder") is True]
    if not modalities:
        raise ModelLoadError(f"{path} has neither a vision nor an audio encoder (clip.has_vision_encoder, "
                             "clip.has_audio_encoder)")
    shapes = read_tensor_shapes(path)
    for modality in modalities:
        proj = metadata.get("clip.projector_type") or metadata.get(f"clip.{modality}.projector_type")
        if not isinstance(proj, str) or not proj:
            raise ModelLoadError(f"{path}: no projector type for its {modality} encoder (clip.projector_type)")
        if proj == "mlp" and "mm.3.weight" in shapes:
            proj = "mlp_norm"  # clip.cpp's own rule (Yi-type LLaVA)
        width = _output_width(path, metadata, shapes, modality, proj)
        if width is not None and width != n_embd_text:
            raise ValidationError(f"{path}: its {modality} projector outputs {width}-wide embeddings but the text "
                                  f"model takes {n_embd_text}: this mmproj belongs to another model",
                                  param="mmproj")
        if proj == "mlp" and modality == "vision":
            _check_mlp_vision(path, metadata, shapes)
    return metadata


def _output_width(path: Path, metadata: dict, shapes: dict, modality: str, proj: str) -> int | None:
    if proj in OUTPUT_WIDTH:
        name, dim = OUTPUT_WIDTH[proj]
        if name not in shapes or len(shapes[name]) <= dim:
            raise ModelLoadError(f"{path}: a {proj!r} projector needs tensor {name!r} (its output), "
                                 "which is missing or has too few dimensions")
        return shapes[name][dim]
    width = metadata.get(f"clip.{modality}.projection_dim")
    return width if isinstance(width, int) and width > 0 else None


def _u32(path: Path, metadata: dict, key: str, low: int = 1, high: int = 1 << 20) -> int:
    value = metadata.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ModelLoadError(f"{path}: {key} is {value!r}; expected an integer in [{low}, {high}]")
    return value


def _check_mlp_vision(path: Path, metadata: dict, shapes: dict) -> None:
    """The LLaVA encoder graph's shape rules (models/llava.cpp), checked instead of asserted."""
    n_embd = _u32(path, metadata, "clip.vision.embedding_length")
    _u32(path, metadata, "clip.vision.feed_forward_length")  # required by clip.cpp; the graph reads widths off tensors
    n_head = _u32(path, metadata, "clip.vision.attention.head_count", high=n_embd)
    n_layer = _u32(path, metadata, "clip.vision.block_count", high=512)
    image_size = _u32(path, metadata, "clip.vision.image_size", high=8192)
    patch = _u32(path, metadata, "clip.vision.patch_size", high=image_size)
    if n_embd % n_head:
        raise ModelLoadError(f"{path}: embedding_length {n_embd} is not a multiple of head_count {n_head}")
    n_pos = (image_size // patch) ** 2 + (1 if "v.class_embd" in shapes else 0)
    hidden = _dim(shapes, "mm.0.weight", 1)
    n_out = _dim(shapes, "mm.2.weight", 1)
    required = {
        "v.patch_embd.weight": (patch, patch, 3, n_embd),
        "v.position_embd.weight": (n_embd, n_pos),
        "mm.0.weight": (n_embd, hidden),
        "mm.2.weight": (hidden, n_out),
        "mm.0.bias": (hidden,),  # added unconditionally by the graph, as is mm.2's with mm.2.weight
        "mm.2.bias": (n_out,),
    }
    optional = {"v.patch_embd.bias": (n_embd,), "v.class_embd": (n_embd,)}
    for name in ("v.pre_ln", "v.post_ln"):
        optional.update({f"{name}.weight": (n_embd,), f"{name}.bias": (n_embd,)})
    for il in range(n_layer - 1):  # the graph stops before the last layer
        blk = f"v.blk.{il}"
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            required[f"{blk}.{name}.weight"] = (n_embd, n_embd)
            optional[f"{blk}.{name}.bias"] = (n_embd,)
        for name in ("ln1", "ln2"):
            optional.update({f"{blk}.{name}.weight": (n_embd,), f"{blk}.{name}.bias": (n_embd,)})
        up, down = "ffn_up", "ffn_down"
        if _dim(shapes, f"{blk}.ffn_down.weight", 0) == n_embd:
            up, down = down, up  # clip.cpp swaps old exports whose up/down were stored the other way round
        n_ff = _dim(shapes, f"{blk}.{up}.weight", 1)  # the FFN width is the up projection's, down must agree
        required.update({f"{blk}.{up}.weight": (n_embd, n_ff), f"{blk}.{down}.weight": (n_ff, n_embd)})
        optional.update({f"{blk}.{up}.bias": (n_ff,), f"{blk}.{down}.bias": (n_embd,)})
    for name, shape in [*required.items(), *optional.items()]:
        got = shapes.get(name)
        if got is None:
            if name in required:
                raise ModelLoadError(f"{path}: the mlp projector's vision encoder needs tensor {name!r}, "
                                     "which is missing")
            continue
        if tuple(got[:len(shape)]) != shape or any(d != 1 for d in got[len(shape):]):
            raise ModelLoadError(f"{path}: tensor {name!r} has shape {list(got)}, expected {list(shape)} "
                                 "from the file's clip.vision.* hyperparameters")


def _dim(shapes: dict, name: str, i: int) -> int:
    shape = shapes.get(name, ())
    return shape[i] if len(shape) > i else 0
