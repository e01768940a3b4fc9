#!/usr/bin/env python3
"""Fuzz the sandboxed chat-template renderer (render_chat): the input is split into a
template and the text of two messages. TemplateError only; the sandbox limits keep each
render bounded (libFuzzer's -timeout catches a hang).

    python tests/fuzz/fuzz_template.py -max_total_time=600 [CORPUS_DIR]
"""

from __future__ import annotations

import _harness
import atheris

with atheris.instrument_imports():
    from llama_ffi.chat import render_chat
    from llama_ffi.errors import TemplateError

SEP = b"\x00\x01"
SEEDS = [
    b"{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<|a|>"
    b"{% endif %}" + SEP + b"hello" + SEP + b"hi",
    b"{{ bos_token }}{% for m in messages %}{{ m['content'] | trim | upper }}{% endfor %}" + SEP + b"x",
    b"{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}",
    b"{{ messages | tojson }}{% if messages[0].role != 'user' %}{{ raise_exception('bad') }}{% endif %}",
    b"{% macro f(x) %}{{ f(x) }}{% endmacro %}{{ f(1) }}",
    b"{{ 'a' * 1000 }}{{ range(10) | list }}{{ ''.__class__ }}",
]


def target(data: bytes) -> None:
    parts = data.split(SEP)
    template = _harness.text(parts[0])
    texts = [_harness.text(p) for p in parts[1:3]] or ["hello"]
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(texts)]
    render_chat(template, messages, bos_token="<s>", eos_token="</s>")


if __name__ == "__main__":
    _harness.run("template", target, (TemplateError,), SEEDS)
