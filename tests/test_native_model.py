"""Model: loading, metadata, templates, progress, and refusal of bad files."""

from __future__ import annotations

import logging

import pytest

from llama_ffi import CancelledError, ClosedError, Model, ModelLoadError, ValidationError


def test_metadata_and_facts(model):
    meta = model.metadata
    assert meta["general.architecture"] == "llama" == model.architecture
    assert int(meta["llama.block_count"]) == model.n_layer == 30
    assert model.n_embd == int(meta["llama.embedding_length"])
    assert model.n_params > 100_000_000 and model.size > 50_000_000
    assert model.n_ctx_train == int(meta["llama.context_length"])
    assert model.has_decoder and not model.has_encoder
    assert "llama" in model.description and "SmolLM2" in repr(model)


def test_chat_template_is_chatml(model):
    template = model.chat_template()
    assert "<|im_start|>" in template and "add_generation_prompt" in template
    assert model.chat_templates["default"] == template
    assert model.chat_template("no-such-variant") is None


def test_vocab_special_tokens(model):
    vocab = model.vocab
    assert vocab.n_tokens == 49152 == len(vocab)
    assert {0, 2}.issubset(vocab.eog_tokens)
    assert vocab.is_eog(vocab.eos) and not vocab.is_eog(vocab.tokenize("hello", add_special=False)[0])
    assert not vocab.is_eog(-1) and not vocab.is_eog(10**9)


def test_tokenize_detokenize_round_trip(model):
    vocab = model.vocab
    text = "Grüße, 世界! <|im_start|>"
    plain = vocab.tokenize(text, add_special=False)
    special = vocab.tokenize(text, add_special=False, parse_special=True)
    assert len(special) < len(plain)  # <|im_start|> became one token
    assert vocab.detokenize(plain).decode() == text
    assert b"".join(vocab.token_to_piece(t) for t in plain).decode() == text
    assert vocab.pieces[plain[0]] == vocab.token_to_piece(plain[0])


def test_out_of_range_tokens_are_refused(model):
    with pytest.raises(ValidationError, match="outside the vocabulary"):
        model.vocab.detokenize([1, 49152])
    with pytest.raises(ValidationError):
        model.vocab.token_to_piece(-5)
    with pytest.raises(ValidationError):
        model.vocab.detokenize(["a"])


def test_progress_callback_sees_the_load(model_path):
    seen = []
    with Model.load(model_path, n_gpu_layers=0, progress=seen.append):
        pass
    assert seen and seen[-1] == pytest.approx(1.0) and seen == sorted(seen)


def test_progress_callback_can_cancel_and_errors_propagate(model_path):
    with pytest.raises(CancelledError):
        Model.load(model_path, progress=lambda f: False)

    def boom(_fraction):
        raise KeyError("from the callback")

    with pytest.raises(KeyError, match="from the callback"):
        Model.load(model_path, progress=boom)


@pytest.mark.parametrize("content, message", [
    (None, "not found"),
    (b"", "empty"),
    (b"this is not a model", "not a GGUF"),
    (b"GGUF\x03\x00\x00\x00", "truncated"),
    (b"GGUF\x01\x00\x00\x00" + bytes(16), "version 1"),
    (b"GGUF\x03\x00\x00\x00" + (10**12).to_bytes(8, "little") + bytes(8), "tensors"),
    (b"GGUF\x03\x00\x00\x00" + bytes(8) + (2**63).to_bytes(8, "little"), "metadata entries"),
])
def test_bad_model_files_raise_model_load_error(tmp_path, content, message):
    path = tmp_path / "bad.gguf"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=message):
        Model.load(path)


def test_directory_is_not_a_model(tmp_path):
    with pytest.raises(ModelLoadError, match="not a regular file"):
        Model.load(tmp_path)


def test_bad_params_are_validation_errors(model_path):
    with pytest.raises(ValidationError, match="split_mode"):
        Model.load(model_path, split_mode="diagonal")
    with pytest.raises(ValidationError, match="n_gpu_layers"):
        Model.load(model_path, n_gpu_layers="all")


def test_kv_overrides_reach_the_model(model_path):
    with Model.load(model_path, n_gpu_layers=0,
                    kv_overrides={"llama.context_length": 1234}) as m:
        assert m.n_ctx_train == 1234


def test_llama_cpp_logs_go_to_the_logger(model_path, caplog):
    with caplog.at_level(logging.DEBUG, logger="llama_ffi"):
        with Model.load(model_path, n_gpu_layers=0):
            pass
    messages = [r.getMessage() for r in caplog.records if r.name == "llama_ffi"]
    assert any("llama_model_loader" in m or "print_info" in m for m in messages)


def test_use_after_close_is_a_clear_error(model_path):
    m = Model.load(model_path, n_gpu_layers=0)
    vocab = m.vocab
    m.close()
    m.close()  # idempotent
    assert m.closed and "closed" in repr(m)
    with pytest.raises(ClosedError):
        m.n_params
    with pytest.raises(ClosedError):
        vocab.tokenize("hi")
