"""libmtmd for real: a random-weight projector (scripts/make_test_mmproj.py) over SmolLM2.

Images go in as PNG bytes made here (zlib + struct, no Pillow) or as RGB arrays, are tokenized
around the media marker, encoded and decoded into a context, and the text model then samples.
Broken media, broken or foreign projectors and miscounted markers must raise Python errors
while the process lives on; a libmtmd that does not match the declarations must be refused.
"""

from __future__ import annotations

import gc
import hashlib
import importlib.util
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from llama_ffi import (ClosedError, Context, ContextParams, LibraryVersionError, Model, ModelLoadError,
                       ValidationError)
from llama_ffi.native import Batch, Sampler, SamplerChain

REPO = Path(__file__).resolve().parents[1]


def _load_script():
    if not (REPO / "vendor" / "llama.cpp" / "gguf-py").exists():
        pytest.skip("pinned llama.cpp tree (its gguf-py) missing: run scripts/setup.sh")
    spec = importlib.util.spec_from_file_location("make_test_mmproj", REPO / "scripts" / "make_test_mmproj.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def mtmd_api():
    from llama_ffi.native import _mtmd_lib

    try:
        _mtmd_lib.load_mtmd()
    except Exception as exc:  # noqa: BLE001 - any reason it cannot load is a reason to skip
        pytest.skip(f"libmtmd not available ({type(exc).__name__}: {' '.join(str(exc).split())[:400]}); "
                    "scripts/build_libllama.py builds it")
    from llama_ffi.native import mtmd

    return mtmd


@pytest.fixture(scope="module")
def script():
    return _load_script()


@pytest.fixture(scope="module")
def projector(tmp_path_factory, script, model):
    return script.write_mmproj(tmp_path_factory.mktemp("mmproj") / "proj.gguf", model.n_embd, seed=0)


@pytest.fixture(scope="module")
def mtmd(mtmd_api, projector, model):
    with mtmd_api.MtmdContext(projector, model, use_gpu=False, n_threads=2) as ctx:
        yield ctx


def png_bytes(width: int, height: int, seed: int = 0) -> bytes:
    """A valid 8-bit RGB PNG of random pixels."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, 256, size=(height, width * 3), dtype=np.uint8)
    raw = b"".join(b"\0" + row.tobytes() for row in rows)  # filter type 0 on every row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


# --- the happy path ----------------------------------------------------------------------------
def test_png_prompt_is_chunked_evaluated_and_the_model_samples(mtmd, mtmd_api, script, model):
    data = png_bytes(40, 30, seed=1)
    with mtmd.bitmap_from_bytes(data) as image:
        assert (image.nx, image.ny, image.is_audio) == (40, 30, False)
        assert image.n_bytes == 40 * 30 * 3
        assert image.id == hashlib.sha256(data).hexdigest()
        chunks = mtmd.tokenize(f"Here is a picture: {mtmd.marker}\nWhat is in it?", [image])
    kinds = [chunk.type for chunk in chunks]
    assert kinds == ["text", "image", "text"]
    image_chunk = chunks[1]
    expected_tokens = (script.IMAGE_SIZE // script.PATCH_SIZE) ** 2  # the projector's patch grid
    assert image_chunk.n_tokens == image_chunk.n_pos == expected_tokens
    assert image_chunk.id == hashlib.sha256(data).hexdigest() and image_chunk.tokens is None
    assert chunks[0].tokens == tuple(model.vocab.tokenize("Here is a picture: ", parse_special=True))
    assert chunks[2].tokens == tuple(model.vocab.tokenize("\nWhat is in it?", add_special=False, parse_special=True))
    assert chunks.n_tokens == sum(chunk.n_tokens for chunk in chunks)

    with Context(model, ContextParams(n_ctx=256, n_batch=64)) as ctx:
        n_past = mtmd_api.eval_chunks(ctx, chunks, n_past=0)
        assert n_past == chunks.n_pos
        assert ctx.memory_seq_pos_range(0) == (0, n_past - 1)
        logits = ctx.logits(-1)
        assert logits.shape == (model.vocab.n_tokens,) and np.isfinite(logits).all()
        generated = []
        with SamplerChain([Sampler.top_k(40), Sampler.dist(seed=7)]) as chain:
            batch = Batch(8)
            for _ in range(4):
                token = chain.sample(ctx)
                assert 0 <= token < model.vocab.n_tokens
                generated.append(token)
                batch.clear()
                batch.add([token], n_past)
                ctx.decode(batch)
                n_past += 1
        assert len(generated) == 4
    chunks.close()


def test_rgb_arrays_encode_to_image_embeddings(mtmd, mtmd_api, script, model):
    rng = np.random.default_rng(3)
    first = mtmd_api.Bitmap.from_rgb(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    second = mtmd_api.Bitmap.from_rgb(np.full((24, 32, 3), 200, dtype=np.uint8), id="flat-grey")
    assert (first.nx, first.ny) == (32, 24) and second.id == "flat-grey"
    chunks = mtmd.tokenize(f"{mtmd.marker} and {mtmd.marker}", [first, second])
    media = [chunk.index for chunk in chunks if chunk.type == "image"]
    assert len(media) == 2
    rows = [mtmd.encode(chunks, i) for i in media]
    n_tokens = (script.IMAGE_SIZE // script.PATCH_SIZE) ** 2
    for embd in rows:
        assert embd.shape == (n_tokens, model.n_embd) and embd.dtype == np.float32
        assert np.isfinite(embd).all()
    assert not np.allclose(rows[0], rows[1])  # different pixels, different embeddings
    with pytest.raises(ValidationError, match="text"):
        mtmd.encode(chunks, [c.index for c in chunks if c.type == "text"][0])
    for handle in (chunks, first, second):
        handle.close()


# --- bad media and prompts ---------------------------------------------------------------------
@pytest.mark.parametrize("data", [b"definitely not an image", png_bytes(16, 16)[:50], b"\x89PNG\r\n\x1a\n" + b"\0" * 40,
                                  b"\xff\xd8\xff\xe0" + bytes(range(200))],
                         ids=["garbage", "truncated-png", "png-magic-only", "jpeg-header-then-noise"])
def test_undecodable_media_is_a_validation_error(mtmd, data):
    with pytest.raises(ValidationError, match="could not decode"):
        mtmd.bitmap_from_bytes(data)
    with mtmd.bitmap_from_bytes(png_bytes(8, 8)) as ok:  # and the process carries on
        assert ok.nx == 8


def test_bad_arguments_are_refused_before_c(mtmd, mtmd_api):
    with pytest.raises(ValidationError, match="empty"):
        mtmd.bitmap_from_bytes(b"")
    with pytest.raises(ValidationError, match="bytes"):
        mtmd.bitmap_from_bytes("a path, not bytes")
    with pytest.raises(ValidationError, match="uint8"):
        mtmd_api.Bitmap.from_rgb(np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(ValidationError, match="uint8"):
        mtmd_api.Bitmap.from_rgb(np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(ValidationError, match="audio"):
        mtmd_api.Bitmap.from_audio(np.zeros((2, 8), dtype=np.float32))


def test_marker_and_bitmap_counts_must_match(mtmd):
    with mtmd.bitmap_from_bytes(png_bytes(8, 8)) as image:
        with pytest.raises(ValidationError, match="0 media marker"):
            mtmd.tokenize("no marker here", [image])
        with pytest.raises(ValidationError, match="2 media marker"):
            mtmd.tokenize(f"{mtmd.marker} {mtmd.marker}", [image])
    with pytest.raises(ValidationError, match="1 media marker"):
        mtmd.tokenize(f"{mtmd.marker}", [])
    with mtmd.tokenize("plain text works", []) as chunks:
        assert [chunk.type for chunk in chunks] == ["text"]


def test_audio_needs_an_audio_encoder(mtmd, mtmd_api):
    assert mtmd.supports_vision and not mtmd.supports_audio and mtmd.audio_sample_rate is None
    wav = b"RIFF" + struct.pack("<I", 36) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16) \
        + b"data" + struct.pack("<I", 0)
    with pytest.raises(ValidationError, match="no audio encoder"):
        mtmd.bitmap_from_bytes(wav)
    with mtmd_api.Bitmap.from_audio(np.zeros(1600, dtype=np.float32)) as clip:
        assert clip.is_audio and clip.nx == 1600
        with pytest.raises(ValidationError, match="audio encoder"):
            mtmd.tokenize(mtmd.marker, [clip])


def test_eval_limits_are_checked(mtmd, mtmd_api, model):
    with mtmd.bitmap_from_bytes(png_bytes(8, 8)) as image, mtmd.tokenize(f"a {mtmd.marker} b", [image]) as chunks, \
            Context(model, ContextParams(n_ctx=64, n_batch=32)) as ctx:
        with pytest.raises(ValidationError, match="positions"):
            mtmd_api.eval_chunks(ctx, chunks, n_past=ctx.n_ctx_seq - chunks.n_pos + 1)
        with pytest.raises(ValidationError, match="seq_id"):
            mtmd_api.eval_chunks(ctx, chunks, n_past=0, seq_id=3)
        with pytest.raises(ValidationError, match="n_batch"):
            mtmd_api.eval_chunks(ctx, chunks, n_past=0, n_batch=4096)
        with pytest.raises(ValidationError, match="n_past"):
            mtmd_api.eval_chunks(ctx, chunks, n_past=-1)
        assert mtmd_api.eval_chunks(ctx, chunks, n_past=0, n_batch=8) == chunks.n_pos  # small batches work


# --- bad projectors ----------------------------------------------------------------------------
def test_projector_for_another_model_is_refused(mtmd_api, script, model, tmp_path):
    other = script.write_mmproj(tmp_path / "wide.gguf", n_embd_text=320)
    with pytest.raises(ValidationError, match=r"320-wide .* takes 576"):
        mtmd_api.MtmdContext(other, model, use_gpu=False)


def test_corrupt_and_foreign_projectors_are_refused(mtmd_api, projector, model_path, model, tmp_path):
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(projector.read_bytes()[: projector.stat().st_size // 2])
    not_gguf = tmp_path / "not.gguf"
    not_gguf.write_bytes(b"this is not a gguf file at all" * 10)
    cases = {truncated: "runs past the end|truncated", not_gguf: "not a GGUF", model_path: "not a multimodal projector",
             tmp_path / "missing.gguf": "not found"}
    for path, message in cases.items():
        with pytest.raises(ModelLoadError, match=message):
            mtmd_api.MtmdContext(path, model, use_gpu=False)


def test_projector_with_a_wrong_tensor_shape_is_refused(mtmd_api, script, model, tmp_path):
    # an FFN whose down projection does not take the up projection's width: ggml_mul_mat would
    # GGML_ASSERT (abort the process) while clip.cpp builds its warmup graph; the guard refuses it
    wrong = np.zeros((script.N_EMBD, script.N_FF + 8), dtype=np.float32)  # ggml ne [136, 64], up gives 128
    path = script.write_mmproj(tmp_path / "shape.gguf", model.n_embd, replace={"v.blk.0.ffn_down.weight": wrong})
    with pytest.raises(ModelLoadError, match=r"v\.blk\.0\.ffn_down\.weight.*\[136, 64\].*\[128, 64\]"):
        mtmd_api.MtmdContext(path, model, use_gpu=False)
    missing = script.write_mmproj(tmp_path / "no-output.gguf", model.n_embd, replace={"mm.2.weight": None})
    with pytest.raises(ModelLoadError, match="mm.2.weight"):
        mtmd_api.MtmdContext(missing, model, use_gpu=False)


# --- ownership ---------------------------------------------------------------------------------
def test_handles_close_once_in_order_and_warn_when_leaked(mtmd_api, projector, model_path):
    model = Model.load(model_path, n_gpu_layers=0)
    ctx = mtmd_api.MtmdContext(projector, model, use_gpu=False, warmup=False)
    image = ctx.bitmap_from_bytes(png_bytes(8, 8))
    chunks = ctx.tokenize(ctx.marker, [image])
    model.close()  # closes its children first: the projector, then its chunks
    assert ctx.closed and chunks.closed and not image.closed
    ctx.close()
    chunks.close()
    with pytest.raises(ClosedError):
        len(chunks)
    image.close()
    image.close()
    with pytest.raises(ClosedError):
        image.n_bytes  # noqa: B018
    with pytest.warns(ResourceWarning, match="unclosed"):
        mtmd_api.Bitmap.from_rgb(np.zeros((4, 4, 3), dtype=np.uint8))
        gc.collect()


def test_closed_bitmap_cannot_be_tokenized(mtmd):
    image = mtmd.bitmap_from_bytes(png_bytes(8, 8))
    image.close()
    with pytest.raises(ClosedError):
        mtmd.tokenize(mtmd.marker, [image])


# --- the load-time guard -----------------------------------------------------------------------
def _fake_libmtmd(tmp_path: Path, omit: set[str], defaults_changed: dict[str, object]) -> Path:
    """A shared library exporting the mtmd_* names (as empty stubs), with real default structs
    except for ``defaults_changed``, and without the functions in ``omit``."""
    from llama_ffi.native import _abi_mtmd

    if shutil.which("cc") is None:
        pytest.skip("no C compiler for the fake libmtmd")
    specials = {"mtmd_context_params_default", "mtmd_helper_video_init_params_default", "mtmd_default_marker"}
    stubs = [f"void {name}(void) {{}}" for name in _abi_mtmd.FUNCTIONS if name not in omit | specials]
    (tmp_path / "stubs.c").write_text("\n".join(stubs) + "\n")
    lines = ['#include "mtmd.h"', '#include "mtmd-helper.h"',
             f'const char * mtmd_default_marker(void) {{ return "{_abi_mtmd.DEFAULT_MARKER}"; }}']
    for struct_name, recorded in _abi_mtmd.DEFAULTS.items():
        values = {**recorded["values"], **defaults_changed.get(struct_name, {})}
        body = " ".join(f"d.{field} = {value};" for field, value in values.items())
        lines.append(f"struct {struct_name} {recorded['function']}(void) {{ struct {struct_name} d = {{0}}; {body} "
                     "return d; }")
    (tmp_path / "defaults.c").write_text("\n".join(lines) + "\n")
    out = tmp_path / "libmtmd.so"
    subprocess.run(["cc", "-shared", "-fPIC", f"-I{REPO / 'vendor' / 'include'}", str(tmp_path / "stubs.c"),
                    str(tmp_path / "defaults.c"), "-o", str(out)], check=True, capture_output=True)
    return out


def test_a_libmtmd_from_another_release_is_refused(mtmd_api, tmp_path):
    from llama_ffi.native import _abi_mtmd
    from llama_ffi.native._cffi_mtmd import ffi
    from llama_ffi.native._mtmd_lib import check_library

    # an older libmtmd: no option struct for the from-buffer decode, so no mtmd_helper_init_opt_default
    (tmp_path / "older").mkdir()
    older = _fake_libmtmd(tmp_path / "older", {"mtmd_helper_init_opt_default"}, {})
    with pytest.raises(LibraryVersionError, match="mtmd_helper_init_opt_default"):
        check_library(ffi, _abi_mtmd, ffi.dlopen(str(older)), str(older))
    # same names, but its context params struct holds other defaults (a field was added or moved)
    (tmp_path / "moved").mkdir()
    moved = _fake_libmtmd(tmp_path / "moved", set(), {"mtmd_context_params": {"batch_max_tokens": 77}})
    with pytest.raises(LibraryVersionError, match="batch_max_tokens"):
        check_library(ffi, _abi_mtmd, ffi.dlopen(str(moved)), str(moved))
    # and the same fake with the real defaults passes: the check is about the mismatch alone
    (tmp_path / "same").mkdir()
    same = _fake_libmtmd(tmp_path / "same", set(), {})
    check_library(ffi, _abi_mtmd, ffi.dlopen(str(same)), str(same))


def test_load_refuses_a_mismatched_libmtmd_named_by_the_environment(mtmd_api, tmp_path):
    (tmp_path / "older").mkdir()
    older = _fake_libmtmd(tmp_path / "older", {"mtmd_helper_init_opt_default"}, {})
    code = ("from llama_ffi.native._mtmd_lib import load_mtmd, mtmd_available\n"
            "from llama_ffi import LibraryVersionError\n"
            "assert not mtmd_available()\n"
            "try:\n    load_mtmd()\nexcept LibraryVersionError as exc:\n    print('refused:', exc)\n")
    env = {**os.environ, "LLAMA_FFI_MTMD_LIBRARY": str(older)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "refused:" in done.stdout and "mtmd_helper_init_opt_default" in done.stdout


def test_text_only_import_does_not_touch_libmtmd():
    code = ("import sys, llama_ffi, llama_ffi.native\n"
            "from llama_ffi import Model\n"
            "print(sorted(m for m in sys.modules if 'mtmd' in m))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
