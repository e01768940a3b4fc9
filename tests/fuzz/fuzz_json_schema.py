#!/usr/bin/env python3
"""Fuzz the JSON Schema to GBNF converter; its output must pass the GBNF checks too.
Only GrammarError may escape.

    python tests/fuzz/fuzz_json_schema.py -max_total_time=600 [CORPUS_DIR]
"""

from __future__ import annotations

import _harness
import atheris

with atheris.instrument_imports():
    from llama_ffi.errors import GrammarError
    from llama_ffi.grammar import parse_gbnf, schema_to_gbnf

SEEDS = [
    b'{"type": "object", "properties": {"name": {"type": "string", "maxLength": 8}, "age": {"type": "integer",'
    b' "minimum": 0}}, "required": ["name"]}',
    b'{"type": "array", "items": {"enum": ["a", 1, null, true]}, "minItems": 1, "maxItems": 3}',
    b'{"type": "string", "pattern": "^[a-z]{2,4}(-[0-9]+)?$"}',
    b'{"anyOf": [{"type": "number", "exclusiveMinimum": 1.5}, {"const": {"k": [1, 2]}}]}',
    b'{"$ref": "#/$defs/node", "$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}}}}}',
    b'{"type": "string", "format": "date-time"}',
    b'{"allOf": [{"type": "object", "properties": {"a": {"type": "boolean"}}}, {"required": ["a"]}],'
    b' "additionalProperties": false}',
    b'{"type": "integer", "minimum": -1000000000000000000000, "maximum": 7}',
]


def target(data: bytes) -> None:
    gbnf = schema_to_gbnf(_harness.text(data))
    parse_gbnf(gbnf)


if __name__ == "__main__":
    _harness.run("json_schema", target, (GrammarError,), SEEDS)
