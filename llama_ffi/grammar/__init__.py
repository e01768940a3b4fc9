"""Grammars for constrained generation: GBNF checked in Python, JSON Schema to GBNF.

``LlamaGrammar`` is what the sampler takes. Everything here is pure Python; no
grammar reaches the C library before it has been parsed and checked here.
"""

from __future__ import annotations

from ..errors import GrammarError
from ._llama_grammar import LlamaGrammar
from .gbnf import CompiledGrammar, parse_gbnf
from .json_schema import any_json_gbnf, schema_to_gbnf
from .matcher import GrammarMatcher

__all__ = [
    "CompiledGrammar",
    "GrammarError",
    "GrammarMatcher",
    "LlamaGrammar",
    "any_json_gbnf",
    "parse_gbnf",
    "schema_to_gbnf",
]
