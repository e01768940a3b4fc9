"""llama_ffi.native.quantize: requantize the default model and load what it wrote."""

from __future__ import annotations

import pytest

from llama_ffi import Llama, ModelLoadError, ValidationError
from llama_ffi.native.quantize import FTYPES, ftype_name, quantize


def test_ftype_names_follow_llama_h():
    assert FTYPES["Q4_0"] == 2 and FTYPES["Q8_0"] == 7 and FTYPES["Q4_K_M"] == 15 and FTYPES["BF16"] == 32
    assert "GUESSED" not in FTYPES and "Q4_1_SOME_F16" not in FTYPES  # not a target / removed
    assert ftype_name("q4_k_m") == "Q4_K_M" == ftype_name("LLAMA_FTYPE_MOSTLY_Q4_K_M") == ftype_name(15)
    for bad in ("Q9_9", 4, 1024, True, None):
        with pytest.raises(ValidationError, match="unknown quantization type"):
            ftype_name(bad)


@pytest.mark.parametrize("ftype, larger", [("Q8_0", True), ("Q4_0", False)])
def test_requantized_model_loads_and_generates(model_path, tmp_path, ftype, larger):
    dst = quantize(model_path, tmp_path / f"smol-{ftype}.gguf", ftype, 2, allow_requantize=True)
    assert (dst.stat().st_size > model_path.stat().st_size) == larger  # 8.5 / 4.5 bits vs Q4_1's 5
    with Llama(str(dst), n_ctx=128, verbose=False) as llm:
        assert llm.model.description.endswith(ftype)
        assert llm.generate_text("The capital of France is", max_tokens=4, temperature=0)


def test_refusals_before_c(model_path, tmp_path):
    with pytest.raises(ValidationError, match="already quantized"):
        quantize(model_path, tmp_path / "x.gguf", "Q8_0")
    with pytest.raises(ValidationError, match="must not be the input"):
        quantize(model_path, model_path, "Q8_0", allow_requantize=True)
    with pytest.raises(ValidationError, match="nthread"):
        quantize(model_path, tmp_path / "x.gguf", "Q8_0", -1)
    with pytest.raises(ValidationError, match="no such directory"):
        quantize(model_path, tmp_path / "missing" / "x.gguf", "Q8_0", allow_requantize=True)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 8)
    with pytest.raises(ModelLoadError):  # the GGUF guard, before llama.cpp parses it
        quantize(bad, tmp_path / "x.gguf", "Q8_0")
    assert not (tmp_path / "x.gguf").exists()


def test_llama_cpp_failure_carries_its_reason(model_path, tmp_path):
    with pytest.raises(ModelLoadError, match="requires an imatrix"):
        quantize(model_path, tmp_path / "x.gguf", "IQ2_XXS", 2, allow_requantize=True)
