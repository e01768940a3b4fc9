"""Checks on parsed GBNF rules that need the whole grammar.

* Left recursion, direct or indirect, including through rules that can match
  the empty string. llama.cpp only notices it through rules with a literally
  empty alternative; the rest makes its matcher grow stacks without bound.
* The cost of llama.cpp's own left-recursion check, which recurses into every
  leftmost reference without remembering what it already checked: a modest
  grammar (``a ::= b | b``, forty deep) can make it run for hours or overflow
  the C stack. We count its calls and depth before C has to.
* The fan-out of llama.cpp's matcher (see :func:`fan_out`): a grammar
  that repeats an item able to match nothing (``x ::= "a"?`` then ``x{2000}``)
  is small, but after each character the matcher keeps one stack per place the
  text could have reached, and its work per token grows with the cube of that
  number, or faster (``x{64}``: 0.2 s per token, ``x{128}``: 4.3 s, on two
  cores). Repetitions nested in such items multiply.

llama.cpp itself bounds only the rewriting of repetitions into rules (its
``MAX_REPETITION_THRESHOLD``, mirrored in :mod:`.gbnf`), which keeps rule sets
small: ``("a"{1000}){1000}`` is 2,000 elements and samples in milliseconds.
"""

from __future__ import annotations

from collections import defaultdict
from typing import NamedTuple

from ..errors import GrammarError
from .gbnf import CompiledGrammar, Ref

__all__ = [
    "MAX_BRANCHING",
    "MAX_C_CHECK_CALLS",
    "MAX_C_CHECK_DEPTH",
    "MAX_REPEATED_BRANCHING",
    "MAX_STACKS",
    "FanOut",
    "check_rules",
    "fan_out",
    "nullable_rules",
]

MAX_C_CHECK_CALLS = 2_000_000
# Frames of ~100 bytes: stays well inside a 512 KiB thread stack.
MAX_C_CHECK_DEPTH = 3_000
# Copies of an item that can match nothing, times the item's own branching (see fan_out).
# Measured with SmolLM2 on 2 cores, x{k} of x ::= "a"?: k=32 0.03 s per token, 64 0.2 s,
# 128 4.3 s. llama.cpp's grammars and the JSON Schema test corpus have none.
MAX_REPEATED_BRANCHING = 64
# A backstop for the same fan-out written out (distinct optional items one after another).
# The grammars llama.cpp ships reach 4, the JSON Schema test corpus 14, an object with k
# optional properties about 2k (300 of them: under 1 s per token).
MAX_BRANCHING = 1024
# Stacks one step of the matcher may create, alternatives included: an enum of 3,000
# strings with a common prefix (3,000 stacks) costs about 1 s for its first token.
MAX_STACKS = 16_384


def check_rules(grammar: CompiledGrammar) -> None:
    nullable = nullable_rules(grammar.rules)
    edges = _leftmost_refs(grammar.rules, nullable)
    _check_left_recursion(grammar, edges)
    directly_empty = [any(len(alt) == 0 for alt in rule) for rule in grammar.rules]
    _check_c_cost(grammar, _leftmost_refs(grammar.rules, directly_empty))
    _check_branching(grammar, nullable, edges)


def nullable_rules(rules) -> list[bool]:
    """Which rules can match the empty string (worklist, linear in grammar size)."""
    nullable = [False] * len(rules)
    pending: dict[tuple[int, int], int] = {}
    users: dict[int, list[tuple[int, int]]] = defaultdict(list)
    queue: list[int] = []
    for rule_id, rule in enumerate(rules):
        for alt_index, alt in enumerate(rule):
            if not all(isinstance(element, Ref) for element in alt):
                continue  # a terminal always consumes something
            if not alt and not nullable[rule_id]:
                nullable[rule_id] = True
                queue.append(rule_id)
            pending[(rule_id, alt_index)] = len(alt)
            for element in alt:
                users[element.rule].append((rule_id, alt_index))
    while queue:
        done = queue.pop()
        for rule_id, alt_index in users.pop(done, ()):
            pending[(rule_id, alt_index)] -= 1
            if pending[(rule_id, alt_index)] == 0 and not nullable[rule_id]:
                nullable[rule_id] = True
                queue.append(rule_id)
    return nullable


def _leftmost_refs(rules, passable: list[bool]) -> list[list[Ref]]:
    """For each rule, the references that can come first (past ``passable`` prefixes)."""
    edges: list[list[Ref]] = []
    for rule in rules:
        out: list[Ref] = []
        for alt in rule:
            for element in alt:
                if not isinstance(element, Ref):
                    break
                out.append(element)
                if not passable[element.rule]:
                    break
        edges.append(out)
    return edges


def _check_left_recursion(grammar: CompiledGrammar, edges: list[list[Ref]]) -> None:
    state = [0] * len(edges)  # 0 new, 1 on the DFS path, 2 done
    for start in range(len(edges)):
        if state[start]:
            continue
        path, iters = [start], [iter(edges[start])]
        state[start] = 1
        while path:
            ref = next(iters[-1], None)
            if ref is None:
                state[path.pop()] = 2
                iters.pop()
            elif state[ref.rule] == 1:
                _raise_cycle(grammar, path[path.index(ref.rule) :] + [ref.rule], ref)
            elif state[ref.rule] == 0:
                state[ref.rule] = 1
                path.append(ref.rule)
                iters.append(iter(edges[ref.rule]))


def _raise_cycle(grammar: CompiledGrammar, cycle: list[int], closing: Ref) -> None:
    names: list[str] = []
    for rule_id in cycle:
        owner = grammar.owners[rule_id]
        if not names or names[-1] != owner:
            names.append(owner)
    if len(names) == 1:
        names.append(names[0])
    line, column = grammar.location(closing.offset)
    if all("_" in grammar.names[rule_id] for rule_id in cycle):
        raise GrammarError(
            f"left recursion: a repetition in rule '{names[0]}' repeats an item that can match "
            "the empty string; make the item non-empty",
            line=line,
            column=column,
        )
    raise GrammarError(
        f"left recursion: rule '{names[0]}' can begin with itself ({' -> '.join(names)}); "
        "llama.cpp cannot match left-recursive grammars",
        line=line,
        column=column,
    )


def _check_c_cost(grammar: CompiledGrammar, edges: list[list[Ref]]) -> None:
    """Counts calls and depth of llama.cpp's recursive check (edges form a DAG here)."""
    calls = [0] * len(edges)
    depth = [0] * len(edges)
    visited = [False] * len(edges)
    total = 0
    for start in range(len(edges)):
        if visited[start]:
            continue
        _fill_costs(edges, start, calls, depth)
        total += calls[start]
        if total > MAX_C_CHECK_CALLS or depth[start] > MAX_C_CHECK_DEPTH:
            line, column = grammar.location(grammar.definition_offsets.get(grammar.owners[start], 0))
            raise GrammarError(
                "grammar too complex: llama.cpp's left-recursion check would need "
                f"{'more than ' + str(MAX_C_CHECK_CALLS) + ' steps' if total > MAX_C_CHECK_CALLS else 'too deep a recursion'}"
                f" starting at rule '{grammar.owners[start]}'",
                line=line,
                column=column,
            )
        _mark_reachable(edges, start, visited)


def _fill_costs(edges, start: int, calls: list[int], depth: list[int]) -> None:
    # Post-order without recursion; calls saturate so the numbers stay small.
    stack = [(start, False)]
    while stack:
        rule_id, expanded = stack.pop()
        if calls[rule_id]:
            continue
        if not expanded:
            stack.append((rule_id, True))
            stack.extend((ref.rule, False) for ref in edges[rule_id] if not calls[ref.rule])
            continue
        calls[rule_id] = min(MAX_C_CHECK_CALLS + 1, 1 + sum(calls[ref.rule] for ref in edges[rule_id]))
        depth[rule_id] = 1 + max((depth[ref.rule] for ref in edges[rule_id]), default=0)


def _mark_reachable(edges, start: int, visited: list[bool]) -> None:
    stack = [start]
    while stack:
        rule_id = stack.pop()
        if visited[rule_id]:
            continue
        visited[rule_id] = True
        stack.extend(ref.rule for ref in edges[rule_id])


# --- matcher fan-out ------------------------------------------------------------------------
class FanOut(NamedTuple):
    """The worst matcher fan-out of a grammar, estimated statically (see :func:`fan_out`)."""

    repeated: int  # a repeated item that can match nothing: copies x its own branching
    branching: int  # places one position can continue at by skipping such items
    stacks: int  # stacks one step creates, every alternative counted


def fan_out(grammar: CompiledGrammar) -> FanOut:
    """How many stacks llama.cpp's matcher may keep, estimated from the rules alone.

    ``stacks``: from one position, every alternative and, past each item that can match
    nothing, the items after it. ``branching``: the same through the widest alternative
    only, so it measures skipping alone. ``repeated``: for each repetition (or run of
    identical references) of an item that can match nothing, copies times the item's own
    branching; ``x{k}`` of an optional ``x`` is k, nested ``(x{k}){m}`` is k·m. That is
    the shape that costs: after every character each copy can take the next one, so the
    work per token grows with its cube. Continuing into the callers of a rule that ends in
    optional items is not counted.
    """
    return FanOut(*(value for value, _ in _fan_out(grammar, nullable_rules(grammar.rules), None)))


def _check_branching(grammar: CompiledGrammar, nullable: list[bool], edges: list[list[Ref]]) -> None:
    (repeated, repeated_at), (skips, skip_at), (stacks, stack_at) = _fan_out(grammar, nullable, edges)
    advice = "make the repeated item non-empty (x{0,n} rather than (x?){n}) or repeat it fewer times"
    limits = [
        (repeated, MAX_REPEATED_BRANCHING, repeated_at,
         f"grammar too ambiguous: this repetition of an item that can match nothing lets llama.cpp's "
         f"matcher continue in {_count(repeated)} places after every character (more than "
         f"{MAX_REPEATED_BRANCHING}; nested repetitions multiply), so each token would take seconds or "
         f"more; {advice}"),
        (skips, MAX_BRANCHING, skip_at,
         f"grammar too ambiguous: from here llama.cpp's matcher could continue in {_count(skips)} places at "
         f"once (more than {MAX_BRANCHING}), through items that can match nothing; {advice}"),
        (stacks, MAX_STACKS, stack_at,
         f"grammar too ambiguous: from here llama.cpp's matcher would track {_count(stacks)} alternatives at "
         f"once (more than {MAX_STACKS})"),
    ]
    for value, limit, offset, message in limits:
        if value > limit:
            line, column = grammar.location(offset)
            raise GrammarError(message, line=line, column=column)


_CAP = MAX_STACKS * 1000  # values saturate here: only "over the limit" matters past it


def _count(value: int) -> str:
    return f"{value:,}" if value < _CAP else f"more than {_CAP:,}"


def _fan_out(grammar: CompiledGrammar, nullable: list[bool], edges) -> list[tuple[int, int]]:
    """``[(repeated, offset), (branching, offset), (stacks, offset)]`` at their worst places."""
    rules = grammar.rules
    if edges is None:
        edges = _leftmost_refs(rules, nullable)
    stacks = [0] * len(rules)  # per rule: what expanding a reference to it creates
    skips = [0] * len(rules)
    for rule_id in _post_order(edges):  # a rule after the rules it can begin with
        total = widest = 0
        for alt in rules[rule_id]:
            s, k = _run(alt, nullable, stacks, skips)
            total += s
            widest = max(widest, k)
        stacks[rule_id], skips[rule_id] = min(total, _CAP), min(widest, _CAP)
    first = next((alt[0] for alt in rules[grammar.root_id] if alt), None)
    root_at = first.offset if isinstance(first, Ref) else grammar.definition_offsets.get(grammar.root, 0)
    worst = [[0, 0], [skips[grammar.root_id], root_at], [stacks[grammar.root_id], root_at]]

    def consider(which: int, value: int, offset: int) -> None:
        if value > worst[which][0]:
            worst[which] = [value, offset]

    for offset, item, copies in grammar.repetitions:
        if copies > 1 and item and all(isinstance(e, Ref) and nullable[e.rule] for e in item):
            consider(0, min(copies * sum(skips[e.rule] for e in item), _CAP), offset)
    for rule in rules:
        for alt in rule:
            run_rule, run_length = None, 0
            s_next = k_next = 0
            for index in range(len(alt) - 1, -1, -1):  # backwards: what follows is known
                element = alt[index]
                if not isinstance(element, Ref):
                    s_next = k_next = 1
                    run_rule = None
                    continue
                if nullable[element.rule]:
                    s_next, k_next = min(stacks[element.rule] + s_next, _CAP), min(skips[element.rule] + k_next, _CAP)
                    run_length = run_length + 1 if element.rule == run_rule else 1
                    run_rule = element.rule
                    if run_length > 1:  # copies written out rather than repeated with {n}
                        consider(0, min(run_length * skips[element.rule], _CAP), element.offset)
                else:
                    s_next, k_next = stacks[element.rule], skips[element.rule]
                    run_rule = None
                if index > 0:  # a stack stands here once the element before it is matched
                    consider(1, k_next, element.offset)
                    consider(2, s_next, element.offset)
    return [tuple(w) for w in worst]


def _run(alt, nullable: list[bool], stacks: list[int], skips: list[int]) -> tuple[int, int]:
    """Stacks and branching from the start of ``alt``, through the items that can match nothing."""
    s = k = 0
    for element in alt:
        if not isinstance(element, Ref):
            return s + 1, k + 1
        s, k = s + stacks[element.rule], k + skips[element.rule]
        if not nullable[element.rule]:
            break
    return s, k


def _post_order(edges: list[list[Ref]]) -> list[int]:
    """Every rule after the rules its leftmost references reach (``edges`` is acyclic here)."""
    done = [False] * len(edges)
    order: list[int] = []
    for start in range(len(edges)):
        if done[start]:
            continue
        stack = [(start, False)]
        while stack:
            rule_id, expanded = stack.pop()
            if expanded:
                order.append(rule_id)
                continue
            if done[rule_id]:
                continue
            done[rule_id] = True
            stack.append((rule_id, True))
            stack.extend((ref.rule, False) for ref in edges[rule_id] if not done[ref.rule])
    return order
