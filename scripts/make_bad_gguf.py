#!/usr/bin/env python3
"""Write a corpus of malformed GGUF files, each aimed at a known way to crash a loader.

Usage: python scripts/make_bad_gguf.py OUT_DIR [--from models/SmolLM2-...gguf]
Every file in the corpus must be refused with a clear error (tests/test_gguf_guard.py).
"""

from __future__ import annotations

import argparse
import struct
import sys
from pathlib import Path

STRING, ARRAY, UINT32, INT32, FLOAT32 = 8, 9, 4, 5, 6


def gguf_string(s: bytes) -> bytes:
    return struct.pack("<Q", len(s)) + s


def kv(key: str, vtype: int, payload: bytes) -> bytes:
    return gguf_string(key.encode()) + struct.pack("<I", vtype) + payload


def tensor_info(name: bytes, dims, ttype=0, offset=0) -> bytes:
    return gguf_string(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims) \
        + struct.pack("<IQ", ttype, offset)


def synthetic(kvs: list[bytes], tensors: list[bytes], data: bytes = b"", version: int = 3,
              n_kv: int | None = None, n_tensors: int | None = None, alignment: int = 32) -> bytes:
    """A small GGUF built from raw parts; counts can lie on purpose."""
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                                 len(kvs) if n_kv is None else n_kv)
    body = head + b"".join(kvs) + b"".join(tensors)
    pad = (-len(body)) % alignment
    return body + b"\0" * pad + data


def arch_kvs(block_count: int = 1) -> list[bytes]:
    return [kv("general.architecture", STRING, gguf_string(b"llama")),
            kv("llama.block_count", UINT32, struct.pack("<I", block_count))]


def corpus(real: Path | None) -> dict[str, bytes]:
    """name -> file content."""
    f32_tensor = [tensor_info(b"token_embd.weight", [8, 2], 0, 0)]
    ok_data = b"\0" * 64
    files = {
        "empty.gguf": b"",
        "not_gguf.gguf": b"PK\x03\x04 this is a zip file, not a model",
        "wrong_magic.gguf": b"GGUX" + bytes(20),
        "version_1.gguf": synthetic([], [], version=1),
        "version_99.gguf": synthetic([], [], version=99),
        "header_truncated.gguf": b"GGUF\x03\x00\x00\x00\x01",
        "absurd_tensor_count.gguf": synthetic([], [], n_tensors=1 << 40),
        "absurd_kv_count.gguf": synthetic([], [], n_kv=1 << 40),
        "key_length_near_2_64.gguf": synthetic([struct.pack("<Q", (1 << 64) - 2) + b"x"], [], n_kv=1),
        "string_length_near_2_64.gguf": synthetic([kv("general.name", STRING, struct.pack("<Q", (1 << 64) - 8))], []),
        "array_length_near_2_64.gguf": synthetic([kv("x.arr", ARRAY, struct.pack("<IQ", UINT32, (1 << 64) - 1))], []),
        "nested_array.gguf": synthetic([kv("x.arr", ARRAY, struct.pack("<IQ", ARRAY, 1))], []),
        "unknown_value_type.gguf": synthetic([kv("x.v", 77, b"\0" * 8)], []),
        "block_count_100000.gguf": synthetic(arch_kvs(100000), f32_tensor, ok_data),
        "bad_alignment.gguf": synthetic([kv("general.alignment", UINT32, struct.pack("<I", 3))], []),
        "vocab_tokens_not_strings.gguf": synthetic(
            arch_kvs() + [kv("tokenizer.ggml.tokens", ARRAY, struct.pack("<IQ", INT32, 2) + bytes(8))], f32_tensor, ok_data),
        "vocab_scores_wrong_length.gguf": synthetic(
            arch_kvs() + [kv("tokenizer.ggml.tokens", ARRAY, struct.pack("<IQ", STRING, 1) + gguf_string(b"a")),
                          kv("tokenizer.ggml.scores", ARRAY, struct.pack("<IQ", FLOAT32, 5) + bytes(20))], f32_tensor, ok_data),
        "tensor_five_dims.gguf": synthetic(arch_kvs(), [tensor_info(b"t", [1, 1, 1, 1, 1])], ok_data),
        "tensor_unknown_type.gguf": synthetic(arch_kvs(), [tensor_info(b"t", [8], 999)], ok_data),
        "tensor_removed_type.gguf": synthetic(arch_kvs(), [tensor_info(b"t", [32], 4)], ok_data),
        "tensor_zero_dim.gguf": synthetic(arch_kvs(), [tensor_info(b"t", [0, 4])], ok_data),
        "tensor_huge_dims.gguf": synthetic(arch_kvs(), [tensor_info(b"t", [1 << 40, 1 << 40])], ok_data),
        "tensor_duplicate_name.gguf": synthetic(arch_kvs(), [tensor_info(b"t", [8]), tensor_info(b"t", [8], 0, 32)], ok_data),
        "tensor_long_name.gguf": synthetic(arch_kvs(), [tensor_info(b"n" * 200, [8])], ok_data),
        "tensor_data_past_end.gguf": synthetic(arch_kvs(), [tensor_info(b"t", [1024, 1024])], ok_data),
        "tensor_misaligned_offset.gguf": synthetic(arch_kvs(), [tensor_info(b"t", [8], 0, 3)], ok_data),
        "tensor_block_mismatch.gguf": synthetic(arch_kvs(), [tensor_info(b"t", [33], 2)], ok_data),
    }
    if real is not None and real.exists():
        data = real.read_bytes()
        for fraction in (0.0001, 0.01, 0.2, 0.5, 0.9, 0.999):
            files[f"truncated_{fraction}.gguf"] = data[: int(len(data) * fraction)]
    return files


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--from", dest="real", type=Path, default=Path("models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, content in corpus(args.real).items():
        (args.out / name).write_bytes(content)
    print(f"wrote {len(corpus(args.real))} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
