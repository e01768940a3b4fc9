"""Every JSON Schema keyword that bounds an instance: the grammar agrees with ``jsonschema``.

For each keyword the converter supports, a schema and a set of candidate instances
(most of them enumerated: every subset of optional properties, every short array over a
small pool, every integer in a range) go through two judges: ``jsonschema`` (the oracle)
and the grammar, run by llama_ffi's matcher the way llama.cpp's sampler runs it. They must
agree on every candidate, and each set must hold both valid and invalid instances, so no
test passes by accepting or refusing everything. Candidates are written the way the
converter writes JSON (declared property order, ``json.dumps`` spelling); the few valid
instances the grammar deliberately refuses are listed apart and checked to be refused, so
the documented "accepts less" stays visible.

Keywords a context-free grammar cannot express raise GrammarError naming the keyword and
the JSON pointer of the schema that holds it.
"""

from __future__ import annotations

import itertools
import json
import random
import re

import pytest

jsonschema = pytest.importorskip("jsonschema")

from llama_ffi.errors import GrammarError
from llama_ffi.grammar import LlamaGrammar, schema_to_gbnf


def validator(schema: dict):
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def agree(schema: dict, candidates, refused_though_valid=()) -> tuple[int, int]:
    """The grammar accepts exactly the candidates jsonschema calls valid; returns the counts."""
    built, check = LlamaGrammar.from_json_schema(schema), validator(schema)
    compact = LlamaGrammar.from_json_schema(schema, whitespace="compact")
    valid = invalid = 0
    for value in candidates:
        expected = check.is_valid(value)
        assert built.matches(json.dumps(value, ensure_ascii=False)) is expected, (value, expected)
        assert compact.matches(json.dumps(value, ensure_ascii=False, separators=(",", ":"))) is expected, value
        assert built.matches(json.dumps(value, indent=2, ensure_ascii=False)) is expected, value
        valid, invalid = valid + expected, invalid + (not expected)
    assert valid and invalid, f"{valid} valid and {invalid} invalid: the candidates prove nothing"
    for value in refused_though_valid:
        assert check.is_valid(value), value
        assert not built.matches(json.dumps(value, ensure_ascii=False)), value
    return valid, invalid


def objects(names: list[str], value=1) -> list[dict]:
    """Every subset of ``names``, in order, each with ``value``."""
    return [{n: value for n in subset} for k in range(len(names) + 1) for subset in itertools.combinations(names, k)]


def arrays(pool: list, longest: int) -> list[list]:
    return [list(items) for n in range(longest + 1) for items in itertools.product(pool, repeat=n)]


# -- minProperties / maxProperties ---------------------------------------------------------


def test_min_max_properties_count_declared_members() -> None:
    schema = {"type": "object", "properties": {n: {"type": "integer"} for n in "abcde"}, "required": ["a"],
              "additionalProperties": False, "minProperties": 2, "maxProperties": 3}
    valid, invalid = agree(schema, objects(list("abcde")))
    assert (valid, invalid) == (10, 22)  # a plus one or two of the four optional ones


def test_min_properties_without_required() -> None:
    schema = {"type": "object", "properties": {n: {"type": "string"} for n in "xyz"}, "minProperties": 1}
    # No extra keys where properties are declared (the converter's default): less, not more.
    agree(schema, objects(list("xyz"), "v") + [{"x": 1}], refused_though_valid=[{"x": "v", "q": "w"}])


def test_max_properties_zero_and_exact_counts() -> None:
    agree({"type": "object", "maxProperties": 0}, [{}, {"a": 1}, {"a": 1, "b": 2}, []])
    exact = {"type": "object", "properties": {n: {"type": "boolean"} for n in "pqrs"},
             "minProperties": 2, "maxProperties": 2}
    agree(exact, objects(list("pqrs"), True))


def test_min_max_properties_on_maps() -> None:
    """Free keys: every one counts towards the maximum, the first towards the minimum."""
    schema = {"type": "object", "additionalProperties": {"type": "integer"}, "minProperties": 1, "maxProperties": 3}
    agree(schema, [{}, {"a": 1}, {"a": 1, "b": 2}, {"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 2, "c": 3, "d": 4},
                   {"a": "x"}, {"": 0}, {"é ✓": 5}])


def test_min_properties_with_declared_and_extra_members() -> None:
    schema = {"type": "object", "properties": {"id": {"type": "integer"}, "tag": {"type": "string"}},
              "additionalProperties": {"type": "boolean"}, "minProperties": 2, "maxProperties": 3}
    candidates = [{"id": 1}, {"id": 1, "tag": "t"}, {"id": 1, "on": True}, {"tag": "t", "on": True},
                  {"id": 1, "tag": "t", "on": True}, {"id": 1, "tag": "t", "on": True, "off": False},
                  {"id": 1, "tag": "t", "x": 1}, {}]
    # Two free keys alone would need the grammar to keep them apart: refused (accepts less).
    agree(schema, candidates, refused_though_valid=[{"on": True, "off": False}])


def test_properties_counts_with_all_of_and_required_extras() -> None:
    schema = {"allOf": [{"type": "object", "properties": {"a": {}, "b": {}, "c": {}}, "additionalProperties": False},
                        {"minProperties": 2}, {"maxProperties": 2}]}
    agree(schema, objects(list("abc")))


# -- patternProperties / propertyNames ----------------------------------------------------


def test_pattern_properties_closed_object() -> None:
    schema = {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"],
              "patternProperties": {"^n_[0-9]+$": {"type": "number"}, "^flag_": {"type": "boolean"}},
              "additionalProperties": False}
    candidates = [{"id": "a"}, {"id": "a", "n_1": 2.5}, {"id": "a", "n_1": 2, "flag_x": True}, {"id": "a", "n_x": 1},
                  {"id": "a", "flag_": "yes"}, {"n_1": 1}, {"id": "a", "other": 1}, {"id": "a", "n_12": 1, "n_3": 4}]
    agree(schema, candidates)
    # Patterns that might overlap give each key both schemas (number and boolean: none is left).
    overlapping = dict(schema, patternProperties={"n_": {"type": "number"}, "^flag_": {"type": "boolean"}})
    agree(overlapping, [{"id": "a"}, {"n_1": 1}, {"id": "a", "other": 1}, {"id": "a", "flag_": "yes"}],
          refused_though_valid=[{"id": "a", "n_1": 2.5}, {"id": "a", "flag_x": True}])


def test_pattern_properties_with_additional_schema_and_counts() -> None:
    schema = {"type": "object", "patternProperties": {"^x-": {"type": "integer", "minimum": 0}},
              "additionalProperties": {"type": "integer"}, "maxProperties": 2}
    # Extra keys never start with "x-" (the pattern's literal prefix), so they need not satisfy it.
    agree(schema, [{}, {"x-a": 1}, {"x-a": -1}, {"a": -5}, {"a": 1, "x-b": 2}, {"a": 1, "b": 2, "c": 3}, {"a": "s"},
                   {"x-": 0, "x": -1}, {"x-a": 1, "x-b": 2}])


def test_property_names() -> None:
    lengths = {"type": "object", "propertyNames": {"maxLength": 4}, "additionalProperties": {"type": "integer"}}
    agree(lengths, [{}, {"abc": 1}, {"abcd": 1, "b": 2}, {"abcde": 1}, {"": 3}, {"ab": "x"}])
    pattern = {"type": "object", "propertyNames": {"pattern": "^[a-z]+$"}, "maxProperties": 2}
    agree(pattern, [{}, {"abc": 1}, {"Abc": 1}, {"a1": [2]}, {"a": 1, "b": 2}, {"a": 1, "b": 2, "c": 3}])
    enum_names = {"type": "object", "propertyNames": {"enum": ["red", "green"]}}
    agree(enum_names, [{}, {"red": 1}, {"red": 1, "green": [2]}, {"blue": 1}, {"red": 1, "Red": 2}])


def test_property_names_filter_declared_properties() -> None:
    schema = {"type": "object", "properties": {"a": {}, "bb": {}, "c": {}}, "additionalProperties": False,
              "propertyNames": {"maxLength": 1}}
    agree(schema, objects(["a", "bb", "c"]))


# -- dependentRequired / dependentSchemas / dependencies -----------------------------------


def test_dependent_required() -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "card": {"type": "integer"},
                                               "address": {"type": "string"}, "zip": {"type": "string"}},
              "dependentRequired": {"card": ["address"], "address": ["zip"]}, "additionalProperties": False}
    objs = [{k: (1 if k == "card" else "s") for k in o} for o in objects(["name", "card", "address", "zip"])]
    agree(schema, objs)


def test_dependent_schemas_and_counts() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"},
                                               "c": {"type": "integer"}},
              "additionalProperties": False, "maxProperties": 2,
              "dependentSchemas": {"a": {"properties": {"b": {"minimum": 10}}, "required": ["b"]}}}
    candidates = [o | v for o in objects(["a", "c"]) for v in ({}, {"b": 5}, {"b": 50})]
    agree(schema, [{k: o[k] for k in "abc" if k in o} for o in candidates])


def test_draft7_dependencies() -> None:
    schema = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
              "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}, "z": {"type": "integer"}},
              "dependencies": {"x": ["y"], "z": {"properties": {"x": {"const": 1}}, "required": ["x"]}},
              "additionalProperties": False}
    base = objects(["x", "y", "z"])
    agree(schema, base + [{"x": 2, "y": 1, "z": 1}])


def test_dependencies_on_free_form_objects() -> None:
    schema = {"type": "object", "dependentRequired": {"a": ["b"]}}
    agree(schema, [{}, {"a": 1}, {"b": 1}, {"a": 1, "b": 2}, {"c": 1}, {"a": 1, "c": 2}])


# -- multipleOf ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "keywords",
    [
        {"multipleOf": 7},
        {"multipleOf": 3, "minimum": -50, "exclusiveMaximum": 1000},
        {"multipleOf": 12, "minimum": 5, "maximum": 100},
        {"multipleOf": 1000},
        {"multipleOf": 0.5},
        {"multipleOf": 6, "not": {"enum": [0, 12]}},
        {"allOf": [{"multipleOf": 4}, {"multipleOf": 6}]},
    ],
)
def test_integer_multiple_of(keywords: dict) -> None:
    schema = {"type": "integer", **keywords}
    specials = [*range(990, 1010), 6000, 999999, 7 * 10**14, 10**15, 3 * 10**15 + 3, -(10**15) * 7, 2.5, "12"]
    agree(schema, list(range(-130, 130)) + specials)


def test_number_multiple_of() -> None:
    whole = {"type": "number", "multipleOf": 5, "maximum": 50}
    agree(whole, list(range(-20, 60)) + [2.5, 7.5, 0.1], refused_though_valid=[10.0])  # "10.0": a spelling left out
    half = {"type": "number", "multipleOf": 0.5, "minimum": 0, "maximum": 5}
    agree(half, [x / 4 for x in range(-4, 24) if x % 4] + list(range(-1, 7)), refused_though_valid=[1.0])


def test_multiple_of_decimal_fractions_raise() -> None:
    with pytest.raises(GrammarError, match=r"#/properties/price: 'multipleOf' 0\.01 is not supported"):
        schema_to_gbnf({"type": "object", "properties": {"price": {"type": "number", "multipleOf": 0.01}}})
    with pytest.raises(GrammarError, match="needs 'minimum' and 'maximum'"):
        schema_to_gbnf({"type": "number", "multipleOf": 0.25})


# -- contains / minContains / maxContains --------------------------------------------------


def test_contains_min_contains() -> None:
    schema = {"type": "array", "items": {"type": "integer"}, "contains": {"minimum": 5}, "minContains": 2,
              "maxItems": 4}
    agree(schema, arrays([1, 7], 5) + [[7, "x", 7]])


def test_contains_without_items_or_bounds() -> None:
    agree({"type": "array", "contains": {"type": "string"}}, arrays([1, "s", None], 3))


def test_max_contains_uses_the_complement() -> None:
    schema = {"type": "array", "items": {"type": "integer"}, "contains": {"const": 3}, "minContains": 1,
              "maxContains": 2}
    agree(schema, arrays([1, 3], 4))
    typed = {"type": "array", "contains": {"type": "string"}, "maxContains": 1, "minItems": 1}
    agree(typed, arrays([1, "s", True], 3))


def test_min_contains_zero_and_max_contains_alone() -> None:
    schema = {"type": "array", "items": {"enum": ["a", "b"]}, "contains": {"const": "a"}, "minContains": 0,
              "maxContains": 1}
    agree(schema, arrays(["a", "b"], 4))


# -- uniqueItems -------------------------------------------------------------------------------


def test_unique_items_over_an_enum() -> None:
    schema = {"type": "array", "items": {"enum": ["a", "b", "c"]}, "uniqueItems": True, "minItems": 1}
    agree(schema, arrays(["a", "b", "c"], 4))
    bounded = {"type": "array", "items": {"type": "boolean"}, "uniqueItems": True, "maxItems": 1}
    agree(bounded, arrays([True, False], 3))


def test_unique_items_uses_json_equality() -> None:
    schema = {"type": "array", "items": {"anyOf": [{"const": 1}, {"const": 1.0}, {"const": True}, {"type": "null"}]},
              "uniqueItems": True}
    agree(schema, arrays([1, 1.0, True, None], 3))


# -- not / if-then-else ------------------------------------------------------------------------

_POOL = [None, True, False, 0, -3, 7, 1.5, "", "a", "b", "ab", [], [1], {}, {"kind": "x"}, {"kind": "y"}]


@pytest.mark.parametrize(
    "schema",
    [
        {"not": {"type": "null"}},
        {"not": {"type": ["string", "number"]}},
        {"type": "string", "not": {"enum": ["a", "b"]}},
        {"type": ["string", "integer", "boolean"], "not": {"enum": ["", 7, True]}},
        {"type": "integer", "not": {"minimum": 0, "maximum": 5}},
        {"type": "string", "not": {"minLength": 1}},
        {"type": "array", "not": {"maxItems": 0}},
        {"type": "object", "not": {"required": ["kind"]}},
        {"type": "object", "properties": {"kind": {"type": "string"}}, "not": {"properties": {"kind": {"const": "x"}}}},
        {"not": {"anyOf": [{"type": "string"}, {"type": "object"}]}},
        {"not": {"not": {"type": "boolean"}}},
        {"type": "number", "not": {"const": 0}},
    ],
    ids=lambda s: json.dumps(s)[:60],
)
def test_not(schema: dict) -> None:
    agree(schema, [v for v in _POOL if v != 1.5 or "integer" not in json.dumps(schema)] + list(range(-8, 9)))


def test_if_then_else_on_a_discriminator() -> None:
    schema = {"type": "object", "properties": {"country": {"enum": ["US", "CA"]}, "zip": {"type": "string"}},
              "required": ["country", "zip"], "additionalProperties": False,
              "if": {"properties": {"country": {"const": "US"}}},
              "then": {"properties": {"zip": {"pattern": "^[0-9]{5}$"}}},
              "else": {"properties": {"zip": {"pattern": "^[A-Z][0-9][A-Z] [0-9][A-Z][0-9]$"}}}}
    agree(schema, [{"country": c, "zip": z} for c in ("US", "CA", "MX") for z in ("12345", "K1A 0B1", "1234")])


def test_if_then_else_on_types() -> None:
    schema = {"if": {"type": "integer"}, "then": {"minimum": 0}, "else": {"type": "string", "maxLength": 1}}
    agree(schema, _POOL + [-1, 2])
    # Leaving integers out leaves every number out (a grammar for "not whole" is not built).
    agree({"not": {"type": "integer"}}, [v for v in _POOL if v != 1.5], refused_though_valid=[1.5])
    agree({"type": "object", "if": {"required": ["a"]}, "then": {"required": ["b"]}},
          [{}, {"a": 1}, {"a": 1, "b": 2}, {"b": 2}, {"c": 3}])


# -- enum/const with other keywords, format with lengths -----------------------------------


def test_enum_with_other_keywords_keeps_the_values_they_allow() -> None:
    agree({"enum": ["a", "bb", "ccc", 4, None], "minLength": 2}, ["a", "bb", "ccc", 4, None, "dd"])
    agree({"type": "integer", "enum": [1, 2, 3, 4, 6, 9], "multipleOf": 3, "not": {"const": 6}}, list(range(12)))


def test_format_with_compatible_lengths() -> None:
    agree({"type": "string", "format": "date", "minLength": 10, "maxLength": 40},
          ["2024-01-31", "2024-02-30", "x", "2024-1-1"])
    with pytest.raises(GrammarError, match="no date string"):
        schema_to_gbnf({"type": "string", "format": "date", "maxLength": 8})


def test_all_of_merges_arrays_position_by_position() -> None:
    """The first item must satisfy the first member's prefixItems[0] and the second's items."""
    schema = {"allOf": [{"type": "array", "prefixItems": [{"type": "string"}], "items": {"type": "integer"}},
                        {"items": {"enum": ["a", 1, 2]}}]}
    agree(schema, arrays(["a", "b", 1, 3], 3))


def test_impossible_union_branches_are_left_out() -> None:
    schema = {"anyOf": [{"type": "integer", "minimum": 5, "maximum": 1}, {"type": "string", "maxLength": 1},
                        {"type": "array", "items": False, "minItems": 1}]}
    agree(schema, [0, 5, "", "a", "ab", [], [1], None])


# -- what cannot be expressed ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "object",
          "properties": {"tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True}}},
         "#/properties/tags: 'uniqueItems': true is supported only when"),
        ({"type": "object", "additionalProperties": {"type": "string"}, "minProperties": 2},
         "#: 'minProperties' 2 would need 2 keys beyond the declared properties"),
        ({"type": "object", "properties": {"a": {"type": "integer", "not": {"pattern": "x"}}}},
         "#/properties/a: 'not' of a schema with 'pattern' is not supported"),
        ({"type": "array", "items": {"type": "string"}, "contains": {"pattern": "^a"}, "maxContains": 1},
         "#: 'maxContains' needs the items that do not match 'contains'"),
        ({"type": "array", "prefixItems": [{"type": "integer"}], "contains": {"type": "string"}},
         "'contains' together with prefixItems"),
        ({"type": "object", "properties": {"name": {}}, "patternProperties": {"^n": {}}},
         "'patternProperties' '^n' also matches the declared property 'name'"),
        ({"type": "object", "patternProperties": {"^n": {}}, "propertyNames": {"maxLength": 3}},
         "'propertyNames' together with 'patternProperties'"),
        ({"type": "object", "properties": {"a": {}}, "additionalProperties": True, "propertyNames": {"maxLength": 3}},
         "'propertyNames' allows the declared name 'a'"),
        ({"$defs": {"s": {"if": {"pattern": "^a"}, "then": {"type": "string"}}}, "$ref": "#/$defs/s"},
         "#/$defs/s/if: 'not' of a schema with 'pattern'"),
        ({"type": "object", "unevaluatedProperties": False}, "keyword 'unevaluatedProperties' is not supported"),
        ({"type": "array", "unevaluatedItems": False}, "keyword 'unevaluatedItems' is not supported"),
        ({"type": "integer", "multipleOf": 0}, "'multipleOf' must be above 0"),
        ({"type": "string", "format": "email", "maxLength": 20}, "'format' 'email' and minLength/maxLength"),
        ({"type": "object", "properties": {n: {} for n in "abcdefg"},
          "dependentRequired": {n: ["a"] for n in "bcdefgh"}},
         "at most 6 triggers"),
        ({"type": "object", "required": ["a", "b"], "maxProperties": 1}, "maxProperties 1 is below the 2 required"),
        ({"type": "array", "items": {"const": 1}, "uniqueItems": True, "minItems": 2}, "no array of distinct items"),
        ({"type": "string", "not": {"enum": ["a"]}, "maxLength": 3}, "'not' of string values together with"),
    ],
)
def test_inexpressible_keywords_raise_with_their_location(schema: dict, message: str) -> None:
    with pytest.raises(GrammarError, match=re.escape(message)):
        schema_to_gbnf(schema)


# -- soundness on random schemas: text sampled from the grammar always validates ------------

_NAMES = ["a", "b", "c", "x1"]


def _random_schema(rng, depth: int = 0) -> dict:
    kinds = ["int", "str", "enum", "arr", "obj", "obj", "not", "if"] if depth < 2 else ["int", "str", "enum"]
    kind = rng.choice(kinds)
    if kind == "int":
        schema = {"type": "integer", "minimum": rng.randint(-20, 5), "maximum": rng.randint(0, 60)}
        if rng.random() < 0.6:
            schema["multipleOf"] = rng.choice([2, 3, 7, 0.5])
        if rng.random() < 0.3:
            schema["not"] = rng.choice([{"const": 0}, {"enum": [2, 3]}, {"maximum": 4}])
        return schema
    if kind == "str":
        return rng.choice([{"type": "string", "maxLength": 3}, {"type": "string", "pattern": "^[ab]{1,3}$"},
                           {"type": "string", "not": {"enum": ["a", ""]}}, {"type": "string", "format": "date"}])
    if kind == "enum":
        schema = {"enum": rng.sample(["a", "ab", 1, 2, None, True, [1], {"a": 1}], rng.randint(1, 5))}
        if rng.random() < 0.5:
            schema.update(rng.choice([{"minLength": 2}, {"not": {"const": 1}}, {"type": ["string", "null"]}]))
        return schema
    if kind == "arr":
        schema = {"type": "array", "maxItems": rng.randint(1, 4), "items": _random_schema(rng, depth + 1)}
        pick = rng.random()
        if pick < 0.35:
            schema.update(contains=_random_schema(rng, depth + 1), minContains=rng.randint(0, 2))
            if rng.random() < 0.4:
                schema["maxContains"] = 1
        elif pick < 0.6:
            schema.update(items={"enum": ["x", "y", "z", 1]}, uniqueItems=True, minItems=rng.randint(0, 2))
        return schema
    if kind == "obj":
        names = rng.sample(_NAMES[:3], rng.randint(0, 3))
        schema = {"type": "object", "properties": {n: _random_schema(rng, depth + 1) for n in names},
                  "required": rng.sample(_NAMES, rng.randint(0, 1)), "minProperties": rng.randint(0, 2)}
        if rng.random() < 0.6:
            schema["maxProperties"] = rng.randint(1, 3)
        if rng.random() < 0.5:
            schema["additionalProperties"] = rng.choice([False, True, {"type": "integer"}])
        if rng.random() < 0.3:
            schema["patternProperties"] = {"^x": {"type": "boolean"}}
        if rng.random() < 0.3:
            schema["dependentRequired"] = {rng.choice(_NAMES): [rng.choice(_NAMES)]}
        if rng.random() < 0.2:
            schema["propertyNames"] = {"maxLength": 1}
        return schema
    base = _random_schema(rng, depth + 1)
    if kind == "not":
        return {**base, "not": rng.choice([{"type": "string"}, {"const": 1}, {"required": ["a"]}, {"minItems": 2},
                                           {"properties": {"a": {"const": 1}}}])}
    return {"if": base, "then": _random_schema(rng, depth + 1), "else": _random_schema(rng, depth + 1)}


def _sample(grammar: LlamaGrammar, rng, limit: int = 200) -> str | None:
    """A random walk through the grammar, the way a sampler would write (None if too long)."""
    from llama_ffi.grammar import GrammarMatcher
    from llama_ffi.grammar.gbnf import Chars

    matcher = GrammarMatcher(grammar.compiled)
    text = []
    while len(text) < limit:
        if () in matcher._stacks and (rng.random() < 0.3 or len(matcher._stacks) == 1):
            return "".join(text)
        tops = [matcher._rules[r][a][i] for r, a, i in (stack[-1] for stack in matcher._stacks if stack)]
        element = rng.choice(tops)
        if isinstance(element, Chars) and not element.negated:
            low, high = rng.choice(element.ranges)
            code = rng.randint(low, min(high, low + 100))
        else:
            code = ord(rng.choice('ab1x -.0"\\{}[]:,'))
        following = matcher._accept(code) if element.matches(code) else None
        if following:
            matcher._stacks = following
            text.append(chr(code))
    return None


def test_text_sampled_from_random_schemas_validates() -> None:
    rng = random.Random(20240601)
    built, texts = 0, set()
    for _ in range(250):
        schema = _random_schema(rng)
        try:
            grammar = LlamaGrammar.from_json_schema(schema, whitespace=rng.choice(["compact", "bounded"]))
        except GrammarError:
            continue  # refusing is always allowed; accepting too much never is
        built += 1
        check = validator(schema)
        for _ in range(12):
            text = _sample(grammar, rng)
            if text is not None:
                texts.add(text)
                assert check.is_valid(json.loads(text)), (text, schema)
    assert built >= 150 and len(texts) >= 600, (built, len(texts))
