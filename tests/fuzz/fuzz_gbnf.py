#!/usr/bin/env python3
"""Fuzz the GBNF parser (parse_gbnf and LlamaGrammar.from_string): GrammarError only.

    python tests/fuzz/fuzz_gbnf.py -max_total_time=600 [CORPUS_DIR]
"""

from __future__ import annotations

import _harness
import atheris

with atheris.instrument_imports():
    from llama_ffi.errors import GrammarError
    from llama_ffi.grammar import LlamaGrammar, parse_gbnf

SEEDS = [
    b'root ::= "a" | "b"',
    b'root ::= item+ ws\nitem ::= [a-z0-9_]{1,8} ("," item)?\nws ::= [ \\t\\n]*',
    b'root ::= ("(" root ")")* "x"',
    b'root ::= a\na ::= b | "q"\nb ::= [^"\\\\\\x00-\\x1F]{2,5} a?',
    b'root ::= <[1000]> "x" !"y" .',
    b'root ::= "\\u00e9" [\\U0001F600-\\U0001F64F]{0,3} # comment\n',
    b'root ::= x{5,2}',
]


def target(data: bytes) -> None:
    text = _harness.text(data)
    parse_gbnf(text)
    LlamaGrammar.from_string(text)


if __name__ == "__main__":
    _harness.run("gbnf", target, (GrammarError,), SEEDS)
