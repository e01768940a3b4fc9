"""Checks on parsed GBNF rules that need the whole grammar.

* Left recursion, direct or indirect, including through rules that can match
  the empty string. llama.cpp only notices it through rules with a literally
  empty alternative; the rest makes its matcher grow stacks without bound.
* The cost of llama.cpp's own left-recursion check, which recurses into every
  leftmost reference without remembering what it already checked: a modest
  grammar (``a ::= b | b``, forty deep) can make it run for hours or overflow
  the C stack. We count its calls and depth before C has to.
"""

from __future__ import annotations

from collections import defaultdict

from ..errors import GrammarError
from .gbnf import CompiledGrammar, Ref

__all__ = ["MAX_C_CHECK_CALLS", "MAX_C_CHECK_DEPTH", "check_rules", "nullable_rules"]

MAX_C_CHECK_CALLS = 2_000_000
# Frames of ~100 bytes: stays well inside a 512 KiB thread stack.
MAX_C_CHECK_DEPTH = 3_000


def check_rules(grammar: CompiledGrammar) -> None:
    nullable = nullable_rules(grammar.rules)
    _check_left_recursion(grammar, _leftmost_refs(grammar.rules, nullable))
    directly_empty = [any(len(alt) == 0 for alt in rule) for rule in grammar.rules]
    _check_c_cost(grammar, _leftmost_refs(grammar.rules, directly_empty))


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
