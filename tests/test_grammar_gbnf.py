"""GBNF parsing and validation: what llama.cpp accepts parses, the rest raises GrammarError."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from llama_ffi.errors import GrammarError, ValidationError
from llama_ffi.grammar import LlamaGrammar, parse_gbnf
from llama_ffi.grammar._gbnf_analysis import MAX_BRANCHING, MAX_REPEATED_BRANCHING, MAX_STACKS, fan_out
from llama_ffi.grammar.gbnf import MAX_TEXT_CHARS, AnyChar, Chars, Ref, Token

VENDOR_GRAMMARS = sorted((Path(__file__).resolve().parents[1] / "vendor" / "llama.cpp" / "grammars").glob("*.gbnf"))


@pytest.fixture(scope="module")
def llama_cpp_tree() -> Path:
    tree = Path(__file__).resolve().parents[1] / "vendor" / "llama.cpp"
    if not (tree / "grammars").is_dir():
        pytest.skip("vendor/llama.cpp is not checked out")
    return tree


def grammar(text: str, root: str = "root") -> LlamaGrammar:
    return LlamaGrammar.from_string(text, root)


def error_of(text: str, root: str = "root") -> GrammarError:
    with pytest.raises(GrammarError) as info:
        LlamaGrammar.from_string(text, root)
    return info.value


# -- the grammars llama.cpp ships --------------------------------------------------


def test_every_vendor_grammar_parses(llama_cpp_tree: Path) -> None:
    files = sorted((llama_cpp_tree / "grammars").glob("*.gbnf"))
    assert len(files) >= 5
    for path in files:
        parsed = LlamaGrammar.from_file(path)
        assert parsed.root == "root" and "root" in parsed.rules, path.name


def test_vendor_json_grammar_matches_json(llama_cpp_tree: Path) -> None:
    parsed = LlamaGrammar.from_file(llama_cpp_tree / "grammars" / "json.gbnf")
    assert parsed.matches('{"a": [1, -2.5e3, {"b": null}], "c": "\\u00e9"}')
    assert parsed.matches("{}")
    assert not parsed.matches('{"a" 1}')
    assert not parsed.matches("[1]")  # its root is an object


def test_vendor_arithmetic_and_chess(llama_cpp_tree: Path) -> None:
    arithmetic = LlamaGrammar.from_file(llama_cpp_tree / "grammars" / "arithmetic.gbnf")
    assert arithmetic.matches("x+1=2\n")
    assert not arithmetic.matches("x=\n")
    chess = LlamaGrammar.from_file(llama_cpp_tree / "grammars" / "chess.gbnf")
    assert chess.matches("1. e4 e5\n2. Nf3 Nc6\n")
    assert not chess.matches("1. e9 e5\n")


# -- the LlamaGrammar object ---------------------------------------------------------


def test_attributes_repr_and_equality() -> None:
    text = 'root ::= greeting " " name\ngreeting ::= "hi" | "hello"\nname ::= [a-z]+\n'
    parsed = grammar(text)
    assert parsed.text == text
    assert parsed.root == "root"
    assert parsed.rules == ("root", "greeting", "name")
    assert repr(parsed) == f"<LlamaGrammar root='root' rules=3 chars={len(text)}>"
    assert parsed == grammar(text) and hash(parsed) == hash(grammar(text))
    assert parsed.matches("hello bob") and not parsed.matches("hello Bob")


def test_custom_root() -> None:
    parsed = grammar('start ::= "x"', root="start")
    assert parsed.root == "start" and parsed.matches("x")
    err = error_of('root ::= "x"', root="start")
    assert "no rule named 'start'" in str(err) and (err.line, err.column) == (1, 1)


def test_grammar_error_is_a_validation_error() -> None:
    with pytest.raises(ValueError):
        grammar("root ::= nope")
    assert issubclass(GrammarError, ValidationError)


def test_from_file_and_bytes(tmp_path: Path) -> None:
    path = tmp_path / "g.gbnf"
    path.write_text('root ::= "é"+\n', encoding="utf-8")
    assert LlamaGrammar.from_file(path).matches("éé")
    assert LlamaGrammar.from_string('root ::= "é"'.encode()).matches("é")
    path.write_bytes(b'root ::= "a"\nx ::= "\xff"\n')
    err = pytest.raises(GrammarError, LlamaGrammar.from_file, path).value
    assert "UTF-8" in str(err) and (err.line, err.column) == (2, 8)
    with pytest.raises(OSError):
        LlamaGrammar.from_file(tmp_path / "missing.gbnf")


def test_repr_never_raises_on_half_built_object() -> None:
    broken = LlamaGrammar.__new__(LlamaGrammar)
    broken._compiled = None
    assert repr(broken) == "<LlamaGrammar (invalid)>"


# -- the dialect, as llama.cpp reads it --------------------------------------------------


@pytest.mark.parametrize(
    ("text", "accepted", "rejected"),
    [
        ('root ::= "a"{2,3}', ["aa", "aaa"], ["a", "aaaa"]),
        ('root ::= "ab"{2}', ["abab"], ["ab", "ababab"]),
        ('root ::= "a"{2,}', ["aa", "aaaaa"], ["a"]),
        ('root ::= "a"{ 0 , 1 }', ["", "a"], ["aa"]),
        ('root ::= "x" ("a" | "b")* "y"', ["xy", "xabbay"], ["xcy"]),
        ('root ::= [^a-c\\n]+', ["xyz", "d"], ["a", "x\n"]),
        ('root ::= [a-]+', ["a-a"], ["b"]),
        ('root ::= [\\]\\[]', ["]", "["], ["a"]),
        ('root ::= "\\x41\\u00e9\\U0001F600\\t"', ["Aé😀\t"], ["A"]),
        ("root ::= . .", ["ab", "😀!"], ["a"]),
        ('root ::= "a" |', ["a", ""], ["b"]),  # an empty last alternative is fine at the end
        ("root ::=", [""], ["a"]),
        ('root ::= ""', [""], ["a"]),
        ('root ::= "a" # comment\n# more\n', ["a"], []),
        ('root ::= x\r\nx ::= "b"\r\n', ["b"], []),
        ('root ::= (\n  "a"\n  | "b"\n)\n', ["a", "b"], ["ab"]),
        ('root ::=\n  "a" |\n  "b"', ["a", "b"], []),
        ('root ::= "a" "b"?? "c"', ["ac", "abc"], ["abbc"]),
    ],
)
def test_dialect_semantics(text: str, accepted: list[str], rejected: list[str]) -> None:
    parsed = grammar(text)
    for sample in accepted:
        assert parsed.matches(sample), sample
    for sample in rejected:
        assert not parsed.matches(sample), sample


def test_tokens_parse() -> None:
    parsed = grammar("root ::= <[12]> !<[7]> <think> x\nx ::= [a]")
    first = parsed.compiled.rules[parsed.compiled.root_id][0]
    assert first[:3] == (Token(12), Token(7, negated=True), Token("<think>"))
    assert not parsed.matches("a")  # text cannot match a token


def test_compiled_structure_follows_llama_cpp() -> None:
    compiled = parse_gbnf('root ::= "ab" [x-z] . "c"*')
    # "c"* becomes helper rule root_1 ::= "c" root_1 | (as in C)
    assert compiled.names == ("root", "root_1")
    assert compiled.rules[0][0][:4] == (Chars(((97, 97),)), Chars(((98, 98),)), Chars(((120, 122),)), AnyChar())
    assert isinstance(compiled.rules[0][0][4], Ref) and compiled.rules[0][0][4].rule == 1
    assert compiled.rules[1][1] == ()


# -- errors, with line and column -----------------------------------------------------------

ERROR_CASES = [
    # undefined rules and root
    ("root ::= foo", "undefined rule 'foo'", 1, 10),
    ('root ::= "a"\nb ::= c "x"', "undefined rule 'c'", 2, 7),
    ('foo ::= "a"', "no rule named 'root'", 1, 1),
    ("", "no rule named 'root'", 1, 1),
    ('root ::= "a"\nroot ::= "b"', "defined twice", 2, 1),
    # left recursion: direct, indirect, through nullable prefixes
    ('root ::= "a" | root "a"', "left recursion", 1, 16),
    ('root ::= asdf\nasdf ::= "a" | asdf "a"', "left recursion", 2, 16),
    ('root ::= asdf\nasdf ::= "a" | foo "b"\nfoo ::= "c" | asdf "d" | "e"', "asdf -> foo -> asdf", 3, 15),
    ('root ::= asdf\nasdf ::= "a" | foo "b"\nfoo ::= "c" | empty asdf "d" | "e"\nempty ::= "blah" | ', "left recursion", 3, 21),
    ('root ::= opt root "x" | "y"\nopt ::= "z"?', "left recursion", 1, 14),
    ('root ::= ("a"?)* "b"', "repeats an item that can match the empty string", 1, 16),
    ('root ::= ws* "a"\nws ::= [ ]*', "repeats an item that can match the empty string", 1, 12),
    # empty alternatives where llama.cpp reads on into the next rule
    ('root ::= "a" |\nb ::= "c"', "empty alternative", 1, 14),
    ('root ::=\nb ::= "c"', "empty alternative", 1, 6),
    ('root ::= "a" b ::= "c"', "missing newline", 1, 14),
    # escapes and unterminated items
    ('root ::= "\\q"', "unknown escape '\\q'", 1, 11),
    ('root ::= "\\x4g"', "exactly 2 hex digits", 1, 11),
    ('root ::= [\\u12]', "exactly 4 hex digits", 1, 11),
    ('root ::= "\\U0011FFFF"', "beyond U+10FFFF", 1, 11),
    ('root ::= "ab', "unterminated string literal", 1, 10),
    ('root ::= "ab\\', "unterminated string literal", 1, 10),
    ('root ::= "a"\nx ::= [a-z', "unterminated character class", 2, 7),
    ('root ::= [a-', "unterminated character class", 1, 10),
    ("root ::= []", "empty character class", 1, 10),
    ("root ::= [z-a]", "out of order", 1, 11),
    ("root ::= <think", "unterminated token", 1, 10),
    ("root ::= <[12>", "<[123]>", 1, 10),
    ("root ::= !x", "expecting '<'", 1, 11),
    # structure
    ('root ::= ("a"', "unclosed '('", 1, 10),
    ('root ::= "a")', "unexpected ')'", 1, 13),
    ('root ::= ("a" ::= )', "expecting ')'", 1, 15),
    ("root := x", "expecting '::='", 1, 6),
    ('root_x ::= "a"', "expecting '::='", 1, 5),
    ('  | "b"', "expecting a rule name", 1, 3),
    # repetition bounds
    ('root ::= "a"{,5}', "expecting a number after '{'", 1, 14),
    ('root ::= "a"{5,3}', "maximum is below minimum", 1, 13),
    ('root ::= "a"{2001}', "minimum 2001 exceeds 2000", 1, 13),
    ('root ::= "a"{0,5000}', "maximum 5000 exceeds 2000", 1, 13),
    ('root ::= "a"{99999999999999999999}', "exceeds 2000", 1, 13),
    ('root ::= "a"{1 2}', "expecting ',' or '}'", 1, 16),
    ('root ::= "a"{1,2', "expecting '}'", 1, 17),
    ("root ::= *", "nothing to repeat", 1, 10),
    ('root ::= ""*', "nothing to repeat", 1, 12),
    ('root ::= "x" | +', "nothing to repeat", 1, 16),
    ('root ::= ("a"{0,99}){0,99}', "more than 2000 copies", 1, 21),
    # text that C cannot take
    ('root ::= "a\x00"', "NUL", 1, 12),
    ('root ::= "\ud800"', "lone surrogate", 1, 11),
]


@pytest.mark.parametrize(("text", "message", "line", "column"), ERROR_CASES)
def test_errors_name_line_and_column(text: str, message: str, line: int, column: int) -> None:
    err = error_of(text)
    assert message in str(err)
    assert (err.line, err.column) == (line, column), str(err)
    assert f"(line {line}, column {column})" in str(err)


def test_deep_nesting_fails_fast_without_recursion_error() -> None:
    text = "root ::= " + "(" * 60_000 + '"a"' + ")" * 60_000
    start = time.perf_counter()
    err = error_of(text)
    assert "nested more than" in str(err) and err.line == 1
    assert time.perf_counter() - start < 2.0


def test_nesting_below_the_limit_parses() -> None:
    assert grammar("root ::= " + "(" * 90 + '"a"' + ")" * 90).matches("a")


def test_exponential_c_left_recursion_check_is_refused() -> None:
    # llama.cpp's check re-walks shared rules: 2**40 steps for this grammar.
    lines = [f'r{i} ::= r{i + 1} | r{i + 1} "x"' for i in range(40)]
    text = "root ::= r0\n" + "\n".join(lines) + '\nr40 ::= "y"\n'
    start = time.perf_counter()
    err = error_of(text)
    assert "too complex" in str(err)
    assert time.perf_counter() - start < 2.0


def test_long_leftmost_chain_is_refused() -> None:
    lines = [f"r{i} ::= r{i + 1}" for i in range(5000)]
    err = error_of("root ::= r0\n" + "\n".join(lines) + '\nr5000 ::= "y"\n')
    assert "too deep a recursion" in str(err)


def test_too_large_grammars() -> None:
    err = error_of("root ::= " + '"a" ' * (MAX_TEXT_CHARS // 4 + 1))
    assert "too large" in str(err)
    # Small text, huge expansion: each {2000} copies a 1000-character literal.
    err = error_of('root ::= x{2000}\nx ::= ("' + "a" * 1000 + '"{1000})')
    assert "too large" in str(err) and err.line == 2


# -- slow grammars: repetitions that make llama.cpp's matcher fan out ------------------------
SCHEMA_CORPUS = sorted((Path(__file__).resolve().parent / "data" / "schemas").glob("*.json"))


def test_real_grammars_fan_out_far_below_the_limits() -> None:
    """The limits leave a wide margin over llama.cpp's grammars and our JSON Schema output."""
    from llama_ffi.grammar import schema_to_gbnf

    texts = [path.read_text(encoding="utf-8") for path in VENDOR_GRAMMARS]
    texts += [schema_to_gbnf(json.loads(path.read_text(encoding="utf-8"))) for path in SCHEMA_CORPUS]
    assert len(texts) >= 20
    worst = [fan_out(grammar(text).compiled) for text in texts]
    assert max(f.repeated for f in worst) == 0  # no repeated item that can match nothing
    assert max(f.branching for f in worst) <= MAX_BRANCHING // 64  # measured: 4 (vendor), 14 (schemas)
    assert max(f.stacks for f in worst) <= MAX_STACKS // 256  # measured: 12, 35


@pytest.mark.parametrize(
    ("text", "message", "line", "column"),
    [
        # an optional item repeated: one matcher stack per copy after every character
        ('x ::= "a"?\nroot ::= x{2000}', "2,000 places after every character", 2, 11),
        ('root ::= ("a"?){300}', "300 places", 1, 16),
        ('x ::= [a-z]*\nroot ::= "(" x{300} ")"', "300 places", 2, 15),
        ('x ::= "a"?\nroot ::= ' + " ".join(["x"] * 65), "65 places", 2, 10),  # copies written out
        # nested repetitions of it multiply: 40 x 40 x 40
        ('x ::= "a"?\ny ::= x{40}\nz ::= y{40}\nroot ::= z{40}', "64,000 places", 4, 11),
        ('x ::= "a"?\ny ::= x{1000}\nz ::= y{1000}\nroot ::= z{1000}', "more than", 4, 11),
        # what llama.cpp itself refuses (MAX_REPETITION_THRESHOLD), refused here first
        ('root ::= "a"{1000000}', "exceeds 2000", 1, 13),
        ('root ::= ("a"{0,1000}){0,1000}', "nested repetitions expand", 1, 23),
    ],
)
def test_slow_grammars_are_refused_with_their_place(text: str, message: str, line: int, column: int) -> None:
    start = time.perf_counter()
    err = error_of(text)
    assert message in str(err) and (err.line, err.column) == (line, column), str(err)
    assert time.perf_counter() - start < 2.0


def test_other_wide_fan_outs_are_refused() -> None:
    optional = "\n".join(f'o{i} ::= "a{i}"?' for i in range(MAX_BRANCHING + 1))
    err = error_of("root ::= " + " ".join(f"o{i}" for i in range(MAX_BRANCHING + 1)) + "\n" + optional)
    assert f"{MAX_BRANCHING + 1:,} places at once" in str(err) and (err.line, err.column) == (1, 10)
    words = " | ".join(f'"w{i}"' for i in range(MAX_STACKS + 1))
    err = error_of(f"root ::= {words}\n")
    assert "alternatives at once" in str(err) and err.line == 1


def test_fan_out_limits_are_exact_and_large_repetitions_stay_cheap() -> None:
    at_limit = grammar(f'x ::= "a"?\nroot ::= x{{{MAX_REPEATED_BRANCHING}}}')
    assert fan_out(at_limit.compiled).repeated == MAX_REPEATED_BRANCHING
    assert "places after every character" in str(error_of(f'x ::= "a"?\nroot ::= x{{{MAX_REPEATED_BRANCHING + 1}}}'))
    nested = grammar(f'x ::= "a"?\ny ::= x{{8}}\nroot ::= y{{{MAX_REPEATED_BRANCHING // 8}}}')
    assert fan_out(nested.compiled).repeated == MAX_REPEATED_BRANCHING  # 8 x 8: nesting multiplies
    # a million characters from 2,000 elements: llama.cpp copies references, not text
    million = grammar('root ::= ("a"{1000}){1000}')
    assert sum(len(alt) for rule in million.compiled.rules for alt in rule) == 2000
    assert fan_out(million.compiled) == (0, 1, 1)
    assert fan_out(grammar('root ::= "a"{0,2000}').compiled) == (0, 1, 1)  # a chain of optionals is fine


def test_non_string_input() -> None:
    with pytest.raises(GrammarError):
        LlamaGrammar.from_string(123)  # type: ignore[arg-type]
    with pytest.raises(GrammarError):
        LlamaGrammar.from_string('root ::= "a"', root="")


# -- fuzzing: nothing but GrammarError, whatever the input ---------------------------------

_FUZZ_ALPHABET = list('root::=|()[]^-{}0123456789,*+?."\\xuU<>!#\n\r\t abcz_') + ["::=", "\\x4", "\\u00", "(", "\ud800", "\x00"]


def _mutations(rng: random.Random, seed_text: str, count: int):
    for _ in range(count):
        chars = list(seed_text)
        for _ in range(rng.randint(1, 6)):
            position = rng.randint(0, len(chars))
            action = rng.random()
            if action < 0.4 and chars:
                del chars[min(position, len(chars) - 1)]
            elif action < 0.8:
                chars.insert(position, rng.choice(_FUZZ_ALPHABET))
            else:
                chars[position:position] = chars[rng.randint(0, len(chars)) :][: rng.randint(1, 20)]
        yield "".join(chars)


def test_fuzzed_grammars_raise_only_grammar_error() -> None:
    rng = random.Random(1234)
    seeds = [path.read_text(encoding="utf-8") for path in VENDOR_GRAMMARS] or [
        'root ::= "a" (b | [c-d])* "\\x41" {2,3}\nb ::= "e"?'
    ]
    seeds.append('root ::= ("a" | "b"{1,3})+ [^x]? . <[3]>\n')
    outcomes = {"ok": 0, "error": 0}
    for seed in seeds:
        for text in _mutations(rng, seed, 300):
            try:
                parsed = LlamaGrammar.from_string(text)
            except GrammarError:
                outcomes["error"] += 1
                continue
            outcomes["ok"] += 1
            parsed.matches("ab")  # the matcher must cope with whatever parsed
    for _ in range(2000):
        text = "".join(rng.choice(_FUZZ_ALPHABET) for _ in range(rng.randint(0, 40)))
        try:
            LlamaGrammar.from_string("root ::= " + text)
        except GrammarError:
            outcomes["error"] += 1
    assert outcomes["ok"] > 50 and outcomes["error"] > 500
