"""Small text helpers shared by the reasoning and tool-call parsers.

Streaming parsers must never emit text that might be the first half of a
marker (``<thi`` of ``<think>``); ``partial_marker_len`` says how much of a
buffer's tail has to be held back for that reason.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["find_first", "partial_marker_len", "regex_escape"]

# Characters with a meaning in both Python ``re`` and C++ ``std::regex``
# (ECMAScript). ``re.escape`` also escapes '#', ' ', '&', '~' ..., which
# ECMAScript in unicode-less std::regex may reject as unknown escapes.
_REGEX_SPECIAL = frozenset("\\^$.|?*+()[]{}")


def regex_escape(text: str) -> str:
    """Escape ``text`` for a regex valid in both Python and ECMAScript."""
    return "".join("\\" + ch if ch in _REGEX_SPECIAL else ch for ch in text)


def partial_marker_len(text: str, markers: Iterable[str]) -> int:
    """Length of the longest tail of ``text`` that is a proper prefix of a marker."""
    best = 0
    for marker in markers:
        for size in range(min(len(marker) - 1, len(text)), best, -1):
            if text.endswith(marker[:size]):
                best = size
                break
    return best


def find_first(text: str, markers: Iterable[str], start: int = 0) -> tuple[int, str]:
    """Earliest occurrence of any marker at or after ``start``: (index, marker) or (-1, "")."""
    found, which = -1, ""
    for marker in markers:
        idx = text.find(marker, start)
        if idx != -1 and (found == -1 or idx < found):
            found, which = idx, marker
    return found, which
