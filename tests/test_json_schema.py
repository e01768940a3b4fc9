"""JSON Schema -> GBNF: the grammar accepts what jsonschema calls valid and nothing it calls invalid.

The proof runs without a model: llama_ffi.grammar.matcher walks the grammar the
way llama.cpp's sampler does. Each corpus schema in tests/data/schemas carries
valid ``examples`` and invalid ``x-invalid-examples``; both are first checked
with jsonschema, then with the grammar, in several json.dumps spellings.
Properties must appear in declared order (a documented choice of the converter).
"""

from __future__ import annotations

import copy
import json
import random
import re
from pathlib import Path

import pytest

jsonschema = pytest.importorskip("jsonschema")

from llama_ffi.errors import GrammarError
from llama_ffi.grammar import LlamaGrammar, any_json_gbnf, parse_gbnf, schema_to_gbnf

SCHEMA_DIR = Path(__file__).resolve().parent / "data" / "schemas"
CORPUS = sorted(SCHEMA_DIR.glob("*.json"))


@pytest.fixture(scope="module")
def llama_cpp_tree() -> Path:
    tree = Path(__file__).resolve().parents[1] / "vendor" / "llama.cpp"
    if not (tree / "grammars").is_dir():
        pytest.skip("vendor/llama.cpp is not checked out")
    return tree


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def validator(schema: dict):
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def spellings(value: object) -> list[str]:
    return [
        json.dumps(value),
        json.dumps(value, ensure_ascii=False),
        json.dumps(value, indent=2, ensure_ascii=False),
        json.dumps(value, indent="\t"),
        json.dumps(value, separators=(",", ":"), ensure_ascii=False),
    ]


_GRAMMARS: dict[tuple[str, str], LlamaGrammar] = {}


def corpus_grammar(path: Path, whitespace: str = "bounded") -> LlamaGrammar:
    key = (path.name, whitespace)
    if key not in _GRAMMARS:
        _GRAMMARS[key] = LlamaGrammar.from_json_schema(load(path), whitespace=whitespace)
    return _GRAMMARS[key]


# -- the corpus ------------------------------------------------------------------------


def test_corpus_has_the_expected_size() -> None:
    assert 15 <= len(CORPUS) <= 25


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_corpus_examples_agree_with_jsonschema(path: Path) -> None:
    schema = load(path)
    check = validator(schema)
    assert len(schema["examples"]) >= 2 and len(schema["x-invalid-examples"]) >= 3
    for example in schema["examples"]:
        assert check.is_valid(example), example
    for example in schema["x-invalid-examples"]:
        assert not check.is_valid(example), example


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_corpus_grammar_passes_the_gbnf_validator(path: Path) -> None:
    built = corpus_grammar(path)
    assert built.root == "root"
    reparsed = parse_gbnf(built.text)  # what the C library will be given
    assert reparsed.defined == built.rules
    assert all(re.fullmatch(r"[a-zA-Z0-9-]+", name) for name in built.rules)


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_corpus_grammar_accepts_valid_examples(path: Path) -> None:
    built = corpus_grammar(path)
    for example in load(path)["examples"]:
        for text in spellings(example):
            assert built.matches(text), text


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_corpus_grammar_rejects_invalid_examples(path: Path) -> None:
    built = corpus_grammar(path)
    for example in load(path)["x-invalid-examples"]:
        for text in spellings(example):
            assert not built.matches(text), text


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_corpus_whitespace_modes(path: Path) -> None:
    compact, flexible = corpus_grammar(path, "compact"), corpus_grammar(path, "flexible")
    for example in load(path)["examples"]:
        tight = json.dumps(example, separators=(",", ":"), ensure_ascii=False)
        assert compact.matches(tight) and flexible.matches(tight)
        if tight != json.dumps(example, ensure_ascii=False):
            assert not compact.matches(json.dumps(example, ensure_ascii=False))
        assert flexible.matches(json.dumps(example, indent=2).replace("\n", "\r\n\n"))


_POOL = [None, True, False, 0, -1, 7, 1.5, 1e20, "", "x", "2024-01-01", [], [1], {}, {"a": 1}]


def _paths(value: object, prefix: tuple = (), depth: int = 0):
    yield prefix
    if depth > 6:
        return
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield from _paths(child, (*prefix, key), depth + 1)


def _mutants(example: object, rng: random.Random):
    for path in _paths(example):
        parent_path, key = path[:-1], path[-1] if path else None
        for replacement in rng.sample(_POOL, 5):
            mutant = copy.deepcopy(example)
            if key is None:
                yield replacement
                continue
            target = mutant
            for part in parent_path:
                target = target[part]
            target[key] = replacement
            yield mutant
        node = example
        for part in path:
            node = node[part]
        if isinstance(node, dict):
            for name in list(node) + ["zz_extra"]:
                mutant = copy.deepcopy(example)
                target = mutant
                for part in path:
                    target = target[part]
                if name in target:
                    del target[name]
                else:
                    target[name] = 1
                yield mutant
        if isinstance(node, list) and node:
            mutant = copy.deepcopy(example)
            target = mutant
            for part in path:
                target = target[part]
            target.append(copy.deepcopy(target[-1]))
            yield mutant


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_corpus_grammar_never_accepts_an_invalid_mutant(path: Path) -> None:
    """Soundness: whatever the grammar accepts, jsonschema accepts (mutants of the examples)."""
    schema, rng = load(path), random.Random(path.stem)
    built, check = corpus_grammar(path), validator(schema)
    accepted = 0
    for example in schema["examples"]:
        for mutant in _mutants(example, rng):
            text = json.dumps(mutant, ensure_ascii=False)
            if built.matches(text):
                accepted += 1
                assert check.is_valid(mutant), text
    assert accepted >= 1


# -- strings: lengths, formats, patterns ------------------------------------------------------


def string_grammar(**keywords: object) -> LlamaGrammar:
    return LlamaGrammar.from_json_schema({"type": "string", **keywords})


def test_long_strings_are_split_into_blocks() -> None:
    built = string_grammar(minLength=2100, maxLength=4600)
    for length, ok in [(2099, False), (2100, True), (3100, True), (4099, True), (4100, True), (4600, True), (4601, False)]:
        assert built.matches(json.dumps("a" * length)) is ok, length
    assert "{2100" not in built.text and "{4600" not in built.text  # llama.cpp caps {m,n} at 2000


def test_length_counts_code_points_like_jsonschema() -> None:
    built = string_grammar(minLength=2, maxLength=2)
    assert built.matches('"é\\n"') and built.matches('"\\u00e9x"')
    assert not built.matches('"\\ud83d\\ude00"')  # surrogate pairs are refused, not miscounted
    assert built.matches(json.dumps("😀!", ensure_ascii=False))


PATTERN_CASES = {
    "^[A-Z]{2,3}-\\d+$": ["AB-1", "ABC-123", "A-1", "ABCD-1", "AB-", "ab-1", "AB-1x", "xAB-1"],
    "colou?r": ["color", "colour", "my colour!", "colr", "COLOR"],
    "^(foo|ba[rz])*$": ["", "foo", "barbazfoo", "fo", "foox"],
    "^a{2}b{0,2}c{2,}$": ["aacc", "aabbccc", "acc", "aabbbcc", "aac"],
    "^(?:\\d{3}\\.){3}\\d{3}$": ["123.456.789.012", "123.456.789", "12.345.678.901"],
    "^[^\\s@]+@[^\\s@]+$": ["a@b", "a b@c", "@b", "a@", "a@b@c"],
    "^\\W+$": ["!?", "a!", "__", " "],
    "^[\\w.-]+$": ["a_b.c-d", "a b", "", "ünï"],
    "^(a?)*b$": ["b", "aab", "ac", "a"],
    "^.$": ["a", "\t", "ab", "", "\n", "é"],
    "^[\"\\\\]+$": ['"', "\\", '"\\"', "a"],
    "\\$\\d": ["cost $5", "cost 5", "$"],
    "^x|y$": ["xa", "ay", "ax", "ya"],
    "^(?P<year>\\d{4})-(?P<month>\\d{2})$": ["2024-01", "2024-1"],
    "^[a-c-e]+$": ["a-e", "d", "b"],
    "^\\S{2,3}?$": ["ab", "abc", "a", "abcd", "a b"],
}


@pytest.mark.parametrize("pattern", sorted(PATTERN_CASES))
def test_pattern_agrees_with_re_search(pattern: str) -> None:
    built = string_grammar(pattern=pattern)
    for candidate in PATTERN_CASES[pattern]:
        expected = re.search(pattern, candidate) is not None
        for text in {json.dumps(candidate, ensure_ascii=False), json.dumps(candidate)} if candidate.isascii() else {
            json.dumps(candidate, ensure_ascii=False)
        }:
            got = built.matches(text)
            # Soundness always; completeness for the json.dumps(ensure_ascii=False) spelling,
            # except that \w \d \s keep to their ASCII members.
            assert not got or expected, (candidate, text)
        if candidate.isascii() or "\\w" not in pattern:
            assert built.matches(json.dumps(candidate, ensure_ascii=False)) == expected, candidate
        else:
            assert not built.matches(json.dumps(candidate, ensure_ascii=False))


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("(a)\\1", "backreferences"),
        ("(?=a)b", "lookahead"),
        ("(?<!a)b", "lookbehind"),
        ("\\bword\\b", "word boundaries"),
        ("(?i)abc", "inline flags"),
        ("a*+", "possessive"),
        ("a(^b)", "only at the ends"),
        ("[[:alpha:]]", "POSIX"),
        ("(", "not a valid regular expression"),
        ("a{3,2}", "not a valid regular expression"),
    ],
)
def test_unsupported_patterns_raise(pattern: str, message: str) -> None:
    with pytest.raises(GrammarError, match=re.escape(message)):
        string_grammar(pattern=pattern)


def test_formats_follow_the_calendar() -> None:
    built = string_grammar(format="date")
    check = validator({"type": "string", "format": "date"})
    for year in (1900, 2000, 2023, 2024, 2100, 2400):
        for month, day in ((2, 28), (2, 29), (2, 30), (4, 30), (4, 31), (12, 31), (13, 1)):
            text = f"{year:04d}-{month:02d}-{day:02d}"
            assert built.matches(json.dumps(text)) == check.is_valid(text), text


# -- numbers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bounds",
    [
        {"minimum": 0, "maximum": 100},
        {"minimum": -273, "maximum": -1},
        {"minimum": -15, "maximum": 1234},
        {"minimum": 7, "maximum": 7},
        {"exclusiveMinimum": 9, "exclusiveMaximum": 101},
        {"minimum": 995},
        {"maximum": -995},
        {"minimum": 1.5, "maximum": 10.5},
        {"$schema": "http://json-schema.org/draft-04/schema#", "minimum": 3, "exclusiveMinimum": True,
         "maximum": 30, "exclusiveMaximum": True},
    ],
)
def test_integer_ranges_are_exact(bounds: dict) -> None:
    schema = {"type": "integer", **bounds}
    built = LlamaGrammar.from_json_schema(schema)
    legacy = isinstance(bounds.get("exclusiveMinimum"), bool)
    check = jsonschema.Draft4Validator(schema) if legacy else validator(schema)
    for number in range(-1300, 1300):
        assert built.matches(str(number)) == check.is_valid(number), number
    assert not built.matches("01") and not built.matches("1.0") and not built.matches("+1")


def test_unbounded_integers_stop_at_16_digits() -> None:
    built = LlamaGrammar.from_json_schema({"type": "integer", "minimum": 10})
    assert built.matches("9" * 16) and not built.matches("9" * 17)


@pytest.mark.parametrize(
    "bounds",
    [
        {"minimum": -90, "maximum": 90},
        {"exclusiveMinimum": 0, "exclusiveMaximum": 1},
        {"minimum": 0},
        {"exclusiveMaximum": -2},
        {"minimum": 2, "exclusiveMaximum": 3},
    ],
)
def test_number_ranges_are_exact_on_samples(bounds: dict) -> None:
    schema = {"type": "number", **bounds}
    built, check = LlamaGrammar.from_json_schema(schema), validator(schema)
    samples = ["0", "-0", "0.0", "0.5", "-0.5", "1", "1.0", "1.25", "2", "2.0", "2.999", "3", "3.0", "-2", "-2.0",
               "-2.5", "-1.999", "89.99", "90", "90.0", "90.01", "-90", "-90.000", "-90.5", "1000", "-1000.5", "0.000"]
    for text in samples:
        expected = check.is_valid(json.loads(text))
        assert built.matches(text) == expected or (expected and text == "-0"), text


def test_fractional_number_bounds_raise() -> None:
    with pytest.raises(GrammarError, match="whole"):
        LlamaGrammar.from_json_schema({"type": "number", "maximum": 0.5})


# -- objects ------------------------------------------------------------------------------


def test_extra_properties_flag() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert not LlamaGrammar.from_json_schema(schema).matches('{"a": 1, "b": 2}')
    relaxed = LlamaGrammar.from_json_schema(schema, extra_properties=True)
    assert relaxed.matches('{"a": 1, "b": [true]}') and relaxed.matches('{"zz": null}')
    assert not relaxed.matches('{"a": 1, "a": 2}')  # a declared key cannot come back as an extra


def test_extra_keys_never_repeat_declared_ones() -> None:
    schema = {"type": "object", "properties": {"ab": {"type": "integer"}, "a\"c": {"type": "integer"}},
              "additionalProperties": {"type": "string"}}
    built = LlamaGrammar.from_json_schema(schema)
    assert built.matches('{"ab": 1, "a": "x", "abc": "y", "b": "z", "a\\"": "w"}')
    for key in ("ab", 'a\\"c'):
        assert not built.matches(f'{{"ab": 1, "{key}": "x"}}'), key
    assert not built.matches('{"\\u0061b": "x"}')  # "ab" spelled another way is refused too


def test_objects_without_properties_take_any_keys() -> None:
    built = LlamaGrammar.from_json_schema({"type": "object", "required": ["id"]})
    assert built.matches('{"id": [1], "other": {"x": null}}')
    assert not built.matches('{"other": 1}') and not built.matches("{}")


def test_properties_follow_declared_order() -> None:
    built = LlamaGrammar.from_json_schema(
        {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}
    )
    assert built.matches('{"a": 1, "b": 2}') and not built.matches('{"b": 2, "a": 1}')


def test_one_of_must_be_disjoint() -> None:
    with pytest.raises(GrammarError, match="oneOf branches 0 and 1"):
        LlamaGrammar.from_json_schema({"oneOf": [{"type": "integer"}, {"type": "number"}]})
    built = LlamaGrammar.from_json_schema({"anyOf": [{"type": "integer"}, {"type": "number"}]})
    assert built.matches("1") and built.matches("1.5")


def test_any_json_helpers() -> None:
    value, obj = LlamaGrammar.any_json(), LlamaGrammar.any_json(object_only=True)
    for sample in [{"a": [1, 2.5, None, True, {"b": "c\n"}]}, [], "s", -3, None]:
        assert value.matches(json.dumps(sample, indent=2))
        assert obj.matches(json.dumps(sample)) is isinstance(sample, dict)
    assert not value.matches("{'a': 1}") and not value.matches("[1,]")
    assert parse_gbnf(any_json_gbnf(whitespace="compact")).root == "root"
    assert LlamaGrammar.from_json_schema({}).text == LlamaGrammar.any_json().text


def test_schema_as_json_text() -> None:
    built = LlamaGrammar.from_json_schema('{"type": "boolean"}')
    assert built.matches("true") and not built.matches("1")
    with pytest.raises(GrammarError) as info:
        LlamaGrammar.from_json_schema('{\n  "type": }')
    assert (info.value.line, info.value.column) == (2, 11)


# -- what is refused ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "integer", "multipleOf": 0.1}, "'multipleOf' 0.1 is not supported"),
        ({"not": {"pattern": "^a"}}, "'not' of a schema with 'pattern' is not supported"),
        ({"type": "object", "patternProperties": {"^a": {}}, "properties": {"ab": {}}}, "'patternProperties'"),
        ({"type": "object", "minProperties": 2}, "'minProperties' 2 would need 2 keys"),
        ({"if": {"format": "date"}, "then": {}}, "'not' of a schema with 'format'"),
        ({"type": "array", "contains": {"pattern": "^a"}, "maxContains": 1}, "maxContains"),
        ({"type": "array", "uniqueItems": True}, "uniqueItems"),
        ({"type": "object", "unevaluatedProperties": False}, "'unevaluatedProperties' is not supported"),
        ({"type": "string", "nullable": True}, "use \"type\""),
        ({"type": "string", "format": "hostname"}, "format 'hostname' is not supported"),
        ({"type": "string", "pattern": "^a$", "maxLength": 3}, "cannot be combined"),
        ({"$ref": "https://example.com/s.json"}, "only local references"),
        ({"$ref": "#/$defs/missing"}, "points at nothing"),
        ({"type": "widget"}, "bad 'type'"),
        (False, "matches nothing"),
        ({"properties": {"a": False}, "required": ["a"]}, "matches nothing"),
        ({"type": "object", "required": ["a"], "additionalProperties": False}, "required property 'a'"),
        ({"enum": ["a"], "minLength": 3}, "no 'enum'/'const' value satisfies"),
        ({"type": "string", "enum": [1, 2]}, "no 'enum'/'const' value"),
        ({"type": "integer", "minimum": 5, "maximum": 4}, "no integer"),
        ({"type": "array", "minItems": 3, "maxItems": 2}, "no array"),
        ({"type": "string", "minLength": 5, "maxLength": 2}, "below minLength"),
        ({"allOf": [{"type": "string"}, {"type": "integer"}]}, "nothing in common"),
        ({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}, "left recursion"),
        ({"type": "string", "maxLength": -1}, "non-negative integer"),
        ({"type": "integer", "minimum": 1, "exclusiveMinimum": True}, "draft-4 syntax"),
        ({"enum": 3}, "wrong kind of value"),
        ({"allOf": [{"type": "integer", "minimum": 1, "exclusiveMinimum": True}]}, "inside allOf"),
        ({"type": "object", "properties": {"a": 3}}, "must be a schema"),
        ({"type": "string", "maxLength": 3_000_000}, "too large"),
        (["not", "a", "schema"], "must be a dict"),
    ],
)
def test_unsupported_or_impossible_schemas_raise(schema: object, message: str) -> None:
    with pytest.raises(GrammarError, match=re.escape(message)):
        schema_to_gbnf(schema)  # type: ignore[arg-type]


def test_error_messages_name_the_schema_location() -> None:
    inner = {"type": "array", "items": {"type": "integer", "multipleOf": 0.3}}
    schema = {"type": "object", "properties": {"inner": inner}}
    with pytest.raises(GrammarError, match=re.escape("#/properties/inner/items: 'multipleOf' 0.3 is not supported")):
        schema_to_gbnf(schema)


def test_deep_and_cyclic_schemas_raise_grammar_error() -> None:
    deep: dict = {"type": "integer"}
    for _ in range(500):
        deep = {"type": "array", "items": deep}
    with pytest.raises(GrammarError, match="nested more than"):
        schema_to_gbnf(deep)
    with pytest.raises(GrammarError):
        schema_to_gbnf("[" * 100_000 + "]" * 100_000)
    cyclic: dict = {"type": "array"}
    cyclic["items"] = cyclic
    with pytest.raises(GrammarError, match="nested more than"):
        schema_to_gbnf(cyclic)


def test_bad_whitespace_option() -> None:
    with pytest.raises(GrammarError, match="whitespace"):
        schema_to_gbnf({"type": "string"}, whitespace="lots")


def test_recursive_ref_to_root() -> None:
    schema = {"type": "object", "properties": {"next": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}},
              "required": ["next"], "additionalProperties": False}
    built = LlamaGrammar.from_json_schema(schema)
    assert built.matches('{"next": {"next": {"next": null}}}') and not built.matches('{"next": {}}')


def test_vendor_llama_cpp_json_grammar_agrees_on_any_json(llama_cpp_tree: Path) -> None:
    """Our any-JSON grammar and llama.cpp's json.gbnf agree on everyday objects.

    (Exponents are left out: json.gbnf's exponent rule refuses "1e+20".)
    """
    theirs = LlamaGrammar.from_file(llama_cpp_tree / "grammars" / "json.gbnf")
    ours = LlamaGrammar.any_json(object_only=True)
    rng = random.Random(7)
    for _ in range(40):
        sample = {f"k{i}": rng.choice([v for v in _POOL if v != 1e20]) for i in range(rng.randint(0, 4))}
        text = json.dumps(sample)
        assert ours.matches(text) and theirs.matches(text), text
