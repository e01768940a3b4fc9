"""Tokenization agrees with llama.cpp's own test vectors for every vocabulary in the tree."""

from __future__ import annotations

import pytest

from llama_ffi import Model

SEPARATOR = "\n__ggml_vocab_test__\n"


def vocab_files(tree):
    return sorted(p for p in (tree / "models").glob("ggml-vocab-*.gguf")
                  if p.with_suffix(".gguf.inp").exists() and p.with_suffix(".gguf.out").exists())


def read_vectors(gguf):
    """Split the .inp file the way tests/test-tokenizer-0.cpp does; one .out line per test."""
    raw = gguf.with_suffix(".gguf.inp").read_bytes().decode("utf-8")
    inputs, pos = [], 0
    while pos < len(raw):
        nxt = raw.find(SEPARATOR, pos)
        if nxt < 0:
            inputs.append(raw[pos:])
            break
        inputs.append(raw[pos:nxt])
        pos = nxt + len(SEPARATOR)
    outputs = gguf.with_suffix(".gguf.out").read_text(encoding="utf-8").split("\n")
    if outputs and outputs[-1] == "":
        outputs.pop()
    return inputs, [[int(t) for t in line.split()] for line in outputs]


def test_every_vocab_in_the_tree_is_covered(llama_cpp_tree):
    if not vocab_files(llama_cpp_tree):
        pytest.skip("a pruned tree without test vectors (as carried to the GPU machine)")
    assert len(vocab_files(llama_cpp_tree)) >= 15


@pytest.mark.parametrize("name", [
    "bert-bge", "command-r", "deepseek-coder", "deepseek-llm", "falcon",
    "gemma-4", "gpt-2", "llama-bpe", "llama-spm", "mpt", "phi-3", "qwen2", "qwen35", "refact",
    "starcoder",
])
def test_tokenizer_matches_llama_cpp_vectors(llama_cpp_tree, name):
    gguf = llama_cpp_tree / "models" / f"ggml-vocab-{name}.gguf"
    if not gguf.with_suffix(".gguf.out").exists():
        pytest.skip(f"no test vectors for {name}")
    inputs, expected = read_vectors(gguf)
    assert len(inputs) == len(expected) > 10
    with Model.load(gguf, vocab_only=True) as model:
        for text, want in zip(inputs, expected):
            assert model.vocab.tokenize(text, add_special=False, parse_special=False) == want, text
