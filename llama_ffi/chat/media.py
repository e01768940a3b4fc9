"""Images and audio in chat messages: OpenAI content parts -> media markers plus raw bytes.

``image_url`` parts (``data:image/...;base64,`` URIs, ``file://`` URLs or absolute paths) and
``input_audio`` parts (``{"data": base64, "format": "wav" | "mp3" | "flac"}``) are taken out of the
messages and replaced by a text part holding the projector's media marker, as llama-server
does, so the chat template renders one marker where each part stood (a template that joins
text parts puts it on its own line). The bytes come back in order, one :class:`MediaInput` per
marker, for the caller to decode with libmtmd. Nothing here decodes media or runs a model.

Refused with ``ValidationError`` before any bytes are decoded: remote ``http(s)`` URLs (no
fetching), relative or missing paths, a data URI whose MIME type is not the part's kind, bad
base64, more than ``max_items`` parts, and any item over ``max_bytes``.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from ..errors import ValidationError

__all__ = ["DEFAULT_MARKER", "MAX_MEDIA_BYTES", "MAX_MEDIA_ITEMS", "MediaInput", "extract_media", "has_media"]

DEFAULT_MARKER = "<__media__>"  # libmtmd's mtmd_default_marker()
MAX_MEDIA_BYTES = 20 << 20
MAX_MEDIA_ITEMS = 16
MEDIA_PARTS = frozenset({"image_url", "input_audio"})
AUDIO_FORMATS = frozenset({"wav", "mp3", "flac"})


@dataclass(frozen=True)
class MediaInput:
    """One image or audio clip of a request, as the bytes of its file."""

    kind: str  # "image" or "audio"
    data: bytes
    source: str  # where it came from, for error messages ("data URI", a path)


def has_media(messages: Any) -> bool:
    """Whether any message holds an image or audio part (cheap; no bytes are read)."""
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)):
        return False
    for message in messages:
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, list) and any(isinstance(p, Mapping) and p.get("type") in MEDIA_PARTS
                                             for p in content):
            return True
    return False


def extract_media(messages: Sequence[Mapping[str, Any]], marker: str = DEFAULT_MARKER, *,
                  max_bytes: int = MAX_MEDIA_BYTES, max_items: int = MAX_MEDIA_ITEMS
                  ) -> tuple[list[Any], list[MediaInput]]:
    """(messages with each media part replaced by ``{"type": "text", "text": marker}``, the
    media in marker order). Messages without media parts are passed through unchanged."""
    out: list[Any] = []
    media: list[MediaInput] = []
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, Mapping) else None
        if not isinstance(content, list) or not any(isinstance(p, Mapping) and p.get("type") in MEDIA_PARTS
                                                    for p in content):
            out.append(message)
            continue
        parts = []
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, Mapping) else None
            if kind not in MEDIA_PARTS:
                parts.append(part)
                continue
            if len(media) >= max_items:
                raise ValidationError(f"too many images/audio clips: at most {max_items} per request",
                                      param="messages")
            where = f"messages[{i}].content[{j}]"
            item = _image(part, where, max_bytes) if kind == "image_url" else _audio(part, where, max_bytes)
            media.append(item)
            parts.append({"type": "text", "text": marker})
        out.append({**message, "content": parts})
    return out, media


def _image(part: Mapping[str, Any], where: str, max_bytes: int) -> MediaInput:
    spec = part.get("image_url")
    url = spec.get("url") if isinstance(spec, Mapping) else spec  # llama-cpp-python also takes a bare string
    if not isinstance(url, str) or not url:
        raise ValidationError(f"{where}: image_url needs a 'url' string", param="messages")
    if url.startswith("data:"):
        return MediaInput("image", _data_uri(url, "image", where, max_bytes), "data URI")
    return MediaInput("image", _local_file(url, where, max_bytes), url)


def _audio(part: Mapping[str, Any], where: str, max_bytes: int) -> MediaInput:
    spec = part.get("input_audio")
    if not isinstance(spec, Mapping) or not isinstance(spec.get("data"), str):
        raise ValidationError(f"{where}: input_audio needs {{'data': base64, 'format': 'wav' | 'mp3' | 'flac'}}",
                              param="messages")
    fmt = spec.get("format")
    if fmt not in AUDIO_FORMATS:
        raise ValidationError(f"{where}: input_audio format {fmt!r} is not one of {sorted(AUDIO_FORMATS)}",
                              param="messages")
    return MediaInput("audio", _b64(spec["data"], where, max_bytes), "input_audio")


def _data_uri(url: str, kind: str, where: str, max_bytes: int) -> bytes:
    header, comma, payload = url.partition(",")
    if not comma:
        raise ValidationError(f"{where}: a data URI needs a ',' before its data", param="messages")
    fields = header[len("data:"):].split(";")
    mime = fields[0].strip().lower()
    if not mime.startswith(f"{kind}/"):
        raise ValidationError(f"{where}: data URI type {mime or '(none)'!r} is not an {kind} type ({kind}/...)",
                              param="messages")
    if "base64" not in (f.strip().lower() for f in fields[1:]):
        raise ValidationError(f"{where}: only base64 data URIs are accepted (data:{mime};base64,...)",
                              param="messages")
    return _b64(payload, where, max_bytes)


def _b64(payload: str, where: str, max_bytes: int) -> bytes:
    if len(payload) > (max_bytes + 2) // 3 * 4 + 64:  # refuse before decoding a huge string
        raise ValidationError(f"{where}: media larger than the {max_bytes} byte limit", param="messages")
    try:
        data = base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError(f"{where}: media data is not valid base64", param="messages") from None
    return _sized(data, where, max_bytes)


def _local_file(url: str, where: str, max_bytes: int) -> bytes:
    scheme = urlparse(url).scheme.lower()
    if scheme in ("http", "https"):
        raise ValidationError(f"{where}: remote media URLs are not fetched; send the bytes as a data URI "
                              "(data:image/png;base64,...) or give a local file", param="messages")
    if scheme == "file":
        parsed = urlparse(url)
        if parsed.netloc not in ("", "localhost"):
            raise ValidationError(f"{where}: file URLs must name a local file (file:///abs/path)", param="messages")
        path = Path(unquote(parsed.path))
    elif scheme and len(scheme) > 1:  # (one letter: a Windows drive)
        raise ValidationError(f"{where}: media URL scheme {scheme!r} is not supported (data:, file:// or a path)",
                              param="messages")
    else:
        path = Path(url)
    if not path.is_absolute():
        raise ValidationError(f"{where}: media paths must be absolute, not {url!r}", param="messages")
    try:
        size = os.stat(path).st_size
        if size > max_bytes:
            raise ValidationError(f"{where}: {path} is {size} bytes, over the {max_bytes} byte limit",
                                  param="messages")
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        raise ValidationError(f"{where}: cannot read {path}: {exc.strerror or exc}", param="messages") from None
    return _sized(data, where, max_bytes)


def _sized(data: bytes, where: str, max_bytes: int) -> bytes:
    if len(data) > max_bytes:
        raise ValidationError(f"{where}: media larger than the {max_bytes} byte limit", param="messages")
    if not data:
        raise ValidationError(f"{where}: media data is empty", param="messages")
    return data
