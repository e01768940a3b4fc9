"""Malformed GGUF files are refused with ModelLoadError and the process lives on."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from llama_ffi import Model, ModelLoadError
from llama_ffi.native.gguf_guard import check_gguf_file


def load_corpus_module(repo_root):
    spec = importlib.util.spec_from_file_location("make_bad_gguf", repo_root / "scripts" / "make_bad_gguf.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_bad_gguf"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def corpus(repo_root, model_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("bad_gguf")
    files = load_corpus_module(repo_root).corpus(model_path)
    for name, content in files.items():
        (out / name).write_bytes(content)
    return out, sorted(files)


def test_corpus_covers_the_issue_list(corpus):
    _, names = corpus
    for needle in ("empty", "not_gguf", "truncated_", "wrong_magic", "version_", "absurd_tensor_count",
                   "absurd_kv_count", "near_2_64", "block_count_100000", "data_past_end", "vocab_tokens_not_strings"):
        assert any(needle in n for n in names), needle


def test_every_bad_file_is_refused_by_the_guard_and_by_model_load(corpus, model_path):
    out, names = corpus
    for name in names:
        with pytest.raises(ModelLoadError):
            check_gguf_file(out / name)
        with pytest.raises(ModelLoadError):
            Model.load(out / name, n_gpu_layers=0)
    with Model.load(model_path, n_gpu_layers=0) as model:  # and real models still load
        assert model.n_params > 0


def test_real_files_pass_the_guard(model_path, llama_cpp_tree):
    assert check_gguf_file(model_path)["general.architecture"] == "llama"
    for vocab in sorted((llama_cpp_tree / "models").glob("ggml-vocab-*.gguf")):
        check_gguf_file(vocab)


def test_error_names_the_problem(corpus):
    out, _ = corpus
    with pytest.raises(ModelLoadError, match="block_count"):
        check_gguf_file(out / "block_count_100000.gguf")
    with pytest.raises(ModelLoadError, match="past the end"):
        check_gguf_file(out / "tensor_data_past_end.gguf")
    with pytest.raises(ModelLoadError, match="array of strings"):
        check_gguf_file(out / "vocab_tokens_not_strings.gguf")
