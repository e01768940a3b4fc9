"""Request bodies of Anthropic's Messages API (``/v1/messages`` and ``/count_tokens``),
validated field by field as Anthropic documents them; ``messages.py`` turns them into chat
requests. Unknown fields are refused (a 400 in Anthropic's shape)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

__all__ = ["Base64ImageSource", "CacheControl", "CountTokensRequest", "DocumentBlock", "FileImageSource", "IMAGE_MAGIC", "ImageBlock", "InputMessage", "JsonOutputFormat", "MessagesRequest", "Metadata", "OutputConfig", "RedactedThinkingBlock", "TextBlock", "ThinkingAdaptive", "ThinkingBlock", "ThinkingDisabled", "ThinkingEnabled", "ToolChoiceAny", "ToolChoiceAuto", "ToolChoiceNone", "ToolChoiceTool", "ToolDef", "ToolResultBlock", "ToolUseBlock", "UrlImageSource"]

_STRICT = ConfigDict(strict=True, extra="forbid")
_MAX_TOKENS = 1 << 20  # as ChatRequest's bound, so every body accepted here is one it accepts
# Anthropic's image types, and how each file starts (WebP: "RIFF", 4 size bytes, "WEBP")
IMAGE_MAGIC = {"image/jpeg": (b"\xff\xd8\xff",), "image/png": (b"\x89PNG\r\n\x1a\n",),
               "image/gif": (b"GIF87a", b"GIF89a"), "image/webp": (b"RIFF",)}


class CacheControl(BaseModel):
    """Accepted for clients that send it; the server's own prefix cache needs no hint."""

    model_config = ConfigDict(strict=True, extra="allow")
    type: Literal["ephemeral"]


class TextBlock(BaseModel):
    model_config = _STRICT
    type: Literal["text"]
    text: str
    cache_control: CacheControl | None = None
    citations: list[dict[str, Any]] | None = None


class ToolUseBlock(BaseModel):
    model_config = _STRICT
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]
    cache_control: CacheControl | None = None


class Base64ImageSource(BaseModel):
    model_config = _STRICT
    type: Literal["base64"]
    # checked by the route, so a wrong one is a 400 that names the types (the schema lists them)
    media_type: str = Field(json_schema_extra={"enum": list(IMAGE_MAGIC)})
    data: str


class UrlImageSource(BaseModel):
    """Recognised, so the 400 can say URLs are not fetched."""

    model_config = _STRICT
    type: Literal["url"]
    url: str


class FileImageSource(BaseModel):
    """Recognised, so the 400 can say there is no file store."""

    model_config = _STRICT
    type: Literal["file"]
    file_id: str


class ImageBlock(BaseModel):
    model_config = _STRICT
    type: Literal["image"]
    source: Annotated[Base64ImageSource | UrlImageSource | FileImageSource, Field(discriminator="type")]
    cache_control: CacheControl | None = None


class ToolResultBlock(BaseModel):
    model_config = _STRICT
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[Annotated[TextBlock | ImageBlock, Field(discriminator="type")]] = ""
    is_error: bool = False
    cache_control: CacheControl | None = None


class ThinkingBlock(BaseModel):
    model_config = _STRICT
    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(BaseModel):
    model_config = _STRICT
    type: Literal["redacted_thinking"]
    data: str


class DocumentBlock(BaseModel):
    """Recognised, so the 400 can say documents are not supported."""

    model_config = ConfigDict(strict=True, extra="allow")
    type: Literal["document"]


Block = Annotated[TextBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock | RedactedThinkingBlock | ImageBlock
                  | DocumentBlock, Field(discriminator="type")]


def _content_kind(value: Any) -> str | None:
    return "text" if isinstance(value, str) else "blocks" if isinstance(value, list) else None


# a string or blocks, told apart up front: a bad block's 400 names the block's field (an image's
# media_type), not the string branch the union also tried
Content = Annotated[
    Annotated[str, Tag("text")] | Annotated[list[Block], Tag("blocks")],
    Discriminator(_content_kind, custom_error_type="content_type",
                  custom_error_message="content must be a string or a list of content blocks"),
]


class InputMessage(BaseModel):
    model_config = _STRICT
    role: Literal["user", "assistant"]
    content: Content


class ToolDef(BaseModel):
    model_config = _STRICT
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    input_schema: dict[str, Any]
    type: Literal["custom"] | None = None
    cache_control: CacheControl | None = None


class ToolChoiceAuto(BaseModel):
    model_config = _STRICT
    type: Literal["auto"]
    disable_parallel_tool_use: bool | None = None  # calls are one at a time here either way


class ToolChoiceAny(BaseModel):
    model_config = _STRICT
    type: Literal["any"]
    disable_parallel_tool_use: bool | None = None


class ToolChoiceTool(BaseModel):
    model_config = _STRICT
    type: Literal["tool"]
    name: str
    disable_parallel_tool_use: bool | None = None


class ToolChoiceNone(BaseModel):
    model_config = _STRICT
    type: Literal["none"]


ToolChoice = Annotated[ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone, Field(discriminator="type")]


class ThinkingEnabled(BaseModel):
    model_config = _STRICT
    type: Literal["enabled"]
    budget_tokens: int = Field(ge=1, le=_MAX_TOKENS)
    display: Literal["summarized", "omitted"] | None = None


class ThinkingAdaptive(BaseModel):
    """The template's own default (thinking where the model's template turns it on)."""

    model_config = _STRICT
    type: Literal["adaptive"]
    display: Literal["summarized", "omitted"] | None = None


class ThinkingDisabled(BaseModel):
    model_config = _STRICT
    type: Literal["disabled"]


Thinking = Annotated[ThinkingEnabled | ThinkingAdaptive | ThinkingDisabled, Field(discriminator="type")]


class JsonOutputFormat(BaseModel):
    model_config = _STRICT
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(BaseModel):
    """``format``: structured output, enforced by a grammar as ``response_format`` is."""

    model_config = _STRICT
    format: JsonOutputFormat | None = None
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None


class Metadata(BaseModel):
    model_config = _STRICT
    user_id: str | None = None


class CountTokensRequest(BaseModel):
    """What the prompt is made of: the body of ``/v1/messages/count_tokens``."""

    model_config = _STRICT
    model: str = Field(min_length=1)
    messages: list[InputMessage] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[ToolDef] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None


class MessagesRequest(CountTokensRequest):
    max_tokens: int = Field(ge=1, le=_MAX_TOKENS)
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0, le=_MAX_TOKENS)
    stop_sequences: list[str] | None = None
    seed: int | None = Field(None, ge=-(1 << 63), lt=1 << 64)  # llama.cpp's extension, as on chat
    stream: bool = False
    metadata: Metadata | None = None
    service_tier: Literal["auto", "standard_only"] | None = None
