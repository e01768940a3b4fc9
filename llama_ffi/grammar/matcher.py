"""Pure-Python matcher for parsed GBNF, following llama.cpp's own algorithm.

llama.cpp keeps a set of pushdown stacks whose tops are terminals, advances
every stack by each code point, and accepts when one stack is empty at the end.
Doing the same here means "this matcher accepts the text" predicts "the
sampler allows the text" for a grammar, without loading a model: the tests use
it to prove that generated grammars accept exactly what a JSON Schema allows,
and callers can check a finished output against its grammar.
"""

from __future__ import annotations

from .gbnf import CompiledGrammar, Ref, Token

__all__ = ["GrammarMatcher"]

# A stack is a tuple of positions (rule id, alternative index, element index).
_Stack = tuple


class GrammarMatcher:
    """Feeds text through a :class:`CompiledGrammar`; reusable, not thread-safe."""

    def __init__(self, grammar: CompiledGrammar) -> None:
        self._rules = grammar.rules
        self._root_id = grammar.root_id
        self._stacks: set[_Stack] = set()
        self.reset()

    def reset(self) -> None:
        stacks: set[_Stack] = set()
        for alt_index, alt in enumerate(self._rules[self._root_id]):
            start = ((self._root_id, alt_index, 0),) if alt else ()
            self._advance(start, stacks)
        self._stacks = stacks

    def feed(self, text: str) -> bool:
        """Consumes ``text``; False (and no stacks left) once it cannot be matched."""
        for ch in text:
            self._stacks = self._accept(ord(ch))
            if not self._stacks:
                return False
        return True

    @property
    def is_complete(self) -> bool:
        """True when the text fed so far is a full match of the root rule."""
        return () in self._stacks

    def matches(self, text: str) -> bool:
        """True iff the whole of ``text`` matches the root rule (resets first)."""
        self.reset()
        return self.feed(text) and self.is_complete

    def _accept(self, code_point: int) -> set[_Stack]:
        out: set[_Stack] = set()
        rules = self._rules
        for stack in self._stacks:
            if not stack:
                continue
            rule_id, alt_index, index = stack[-1]
            alt = rules[rule_id][alt_index]
            element = alt[index]
            if isinstance(element, Token) or not element.matches(code_point):
                continue
            rest = stack[:-1]
            if index + 1 < len(alt):
                rest += ((rule_id, alt_index, index + 1),)
            self._advance(rest, out)
        return out

    def _advance(self, stack: _Stack, out: set[_Stack]) -> None:
        """Expands references until every stack has a terminal (or nothing) on top."""
        rules = self._rules
        todo, seen = [stack], set()
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            if not current:
                out.add(current)
                continue
            rule_id, alt_index, index = current[-1]
            alt = rules[rule_id][alt_index]
            element = alt[index]
            if not isinstance(element, Ref):
                out.add(current)
                continue
            base = current[:-1]
            if index + 1 < len(alt):
                base += ((rule_id, alt_index, index + 1),)
            for target_alt, target in enumerate(rules[element.rule]):
                todo.append(base + ((element.rule, target_alt, 0),) if target else base)
