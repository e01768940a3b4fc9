"""Tool-call formats that write arguments as tagged text instead of JSON.

Qwen3-Coder / Qwen3.5 (also Nemotron 3, StepFun) use ``<function=..>``
with ``<parameter=..>`` blocks, GLM-4.5+ ``<arg_key>/<arg_value>`` pairs and
Gemma 4 its own object syntax with ``<|"|>`` string quotes. Values are typed
from the tool's JSON Schema when known (see ``coerce_param``).
"""

from __future__ import annotations

import json
import re
from typing import Any

from .toolcall_base import (
    Region,
    Schemas,
    ToolCallFormat,
    arguments_json,
    coerce_param,
    param_schema,
)

__all__ = ["Gemma4Format", "GlmFormat", "QwenXmlFormat"]


def _close_end(text: str, pos: int, close: str, final: bool) -> int | None:
    """Index after ``close`` when it follows ``pos`` (after whitespace);
    ``pos`` if absent and the answer is complete; None while streaming."""
    at = pos
    while at < len(text) and text[at].isspace():
        at += 1
    if text.startswith(close, at):
        return at + len(close)
    return None if not final and close.startswith(text[at:]) else pos


def _strip_one_newline(value: str) -> str:
    if value.startswith("\n"):
        value = value[1:]
    return value[:-1] if value.endswith("\n") else value


class QwenXmlFormat(ToolCallFormat):
    """``<tool_call>\\n<function=NAME>\\n<parameter=P>\\nvalue\\n</parameter>\\n</function>\\n</tool_call>``."""

    name = "qwen3-xml"
    start_markers = ("<tool_call>", "<function=")
    trigger_patterns = (r"(<tool_call>)", r"(<function=)")
    trigger_tokens = ("<tool_call>",)
    _FUNC = re.compile(r"(<tool_call>\s*)?<function=([^>\n]+)>(.*?)</function>", re.DOTALL)
    _PARAM = re.compile(r"<parameter=([^>\n]+)>(.*?)</parameter>", re.DOTALL)

    def find_regions(self, text: str, *, final: bool, schemas: Schemas) -> list[Region]:
        regions: list[Region] = []
        for match in self._FUNC.finditer(text):
            name = match.group(2).strip()
            args = {
                key.strip(): coerce_param(_strip_one_newline(raw), param_schema(schemas, name, key.strip()))
                for key, raw in self._PARAM.findall(match.group(3))
            }
            end = _close_end(text, match.end(), "</tool_call>", final) if match.group(1) else match.end()
            if end is None:
                break
            regions.append(Region(match.start(), end, ((name, arguments_json(args) or "{}"),)))
        return regions


class GlmFormat(ToolCallFormat):
    """GLM-4.5/4.6/4.7: ``<tool_call>NAME\\n<arg_key>k</arg_key>\\n<arg_value>v</arg_value>\\n</tool_call>``
    (a JSON object body after the name is accepted too)."""

    name = "glm4"
    start_markers = ("<tool_call>",)
    trigger_patterns = (r"(<tool_call>)",)
    trigger_tokens = ("<tool_call>",)
    _OPEN = re.compile(r"<tool_call>\s*([^\s<{]+)")
    _PAIR = re.compile(r"<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", re.DOTALL)

    def find_regions(self, text: str, *, final: bool, schemas: Schemas) -> list[Region]:
        regions: list[Region] = []
        pos = 0
        while (match := self._OPEN.search(text, pos)) is not None:
            close = text.find("</tool_call>", match.end())
            if close == -1 and not final:
                break
            body_end = close if close != -1 else len(text)
            end = close + len("</tool_call>") if close != -1 else len(text)
            args = self._args(text[match.end() : body_end], match.group(1), schemas)
            pos = end if args is not None else match.end()
            if args is not None:
                regions.append(Region(match.start(), end, ((match.group(1), args),)))
        return regions

    def _args(self, body: str, name: str, schemas: Schemas) -> str | None:
        if body.strip().startswith("{"):
            try:
                return arguments_json(json.loads(body))
            except ValueError:
                return None
        if self._PAIR.sub("", body).strip():
            return None  # stray text: not the format we know
        args = {
            key.strip(): coerce_param(value, param_schema(schemas, name, key.strip()))
            for key, value in self._PAIR.findall(body)
        }
        return arguments_json(args)


class Gemma4Format(ToolCallFormat):
    """Gemma 4: ``<|tool_call>call:NAME{key:<|"|>text<|"|>,n:3}<tool_call|>``."""

    name = "gemma4"
    start_markers = ("<|tool_call>",)
    trigger_patterns = (r"(<\|tool_call>)",)
    trigger_tokens = ("<|tool_call>",)
    _OPEN = re.compile(r"<\|tool_call>\s*call:([^{\s]+)\s*(?=\{)")
    _CLOSE = "<tool_call|>"

    def find_regions(self, text: str, *, final: bool, schemas: Schemas) -> list[Region]:
        regions: list[Region] = []
        for match in self._OPEN.finditer(text):
            close = text.find(self._CLOSE, match.end())
            if close == -1 and not final:
                break
            body = text[match.end() : close if close != -1 else len(text)]
            try:
                args = arguments_json(gemma_object_to_python(body))
            except ValueError:
                continue
            end = close + len(self._CLOSE) if close != -1 else len(text)
            if args is not None:
                regions.append(Region(match.start(), end, ((match.group(1), args),)))
        return regions


_STR = '<|"|>'
_NUMBER = re.compile(r"-?[0-9][0-9.eE+\-]*")
_WORD = re.compile(r"[A-Za-z_][\w.\-]*")


def gemma_object_to_python(src: str) -> Any:
    """Decode Gemma 4's argument syntax: JSON with bare keys and ``<|"|>`` quotes.

    Raises ValueError when the text is not well formed.
    """
    out: list[str] = []
    i = 0
    while i < len(src):
        if src.startswith(_STR, i):
            close = src.find(_STR, i + len(_STR))
            if close == -1:
                raise ValueError("unterminated Gemma string")
            out.append(json.dumps(src[i + len(_STR) : close]))
            i = close + len(_STR)
        elif (num := _NUMBER.match(src, i)) is not None:
            out.append(num.group())
            i = num.end()
        elif (word := _WORD.match(src, i)) is not None:
            token = word.group()
            out.append(token if token in ("true", "false", "null") else json.dumps(token))
            i = word.end()
        else:
            out.append(src[i])
            i += 1
    return json.loads("".join(out))
