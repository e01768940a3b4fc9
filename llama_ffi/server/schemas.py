"""Request bodies, validated field by field (strict types: ``"5"`` is not a number).

Unknown fields are refused as OpenAI does ("Unrecognized request argument"). Besides
OpenAI's fields, llama.cpp's sampling extensions are accepted (``top_k``, ``min_p``,
``repeat_penalty``, ``typical_p``, ``mirostat_*``, ``grammar``...).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WrapValidator
from pydantic_core import PydanticCustomError

_STRICT = ConfigDict(strict=True, extra="forbid")
MAX_N = 16
SPEC_MAX = 64  # as SpeculativeOptions' bounds

Stop = str | list[str] | None


class StreamOptions(BaseModel):
    model_config = _STRICT
    include_usage: bool = False


class SpeculativeRequest(BaseModel):
    """``"speculative": {...}``: the draft window (n_max, n_min) and the prompt-lookup n-gram."""

    model_config = _STRICT
    n_max: int | None = Field(None, ge=1, le=SPEC_MAX)
    n_min: int | None = Field(None, ge=0, le=SPEC_MAX)
    ngram_size: int | None = Field(None, ge=1, le=SPEC_MAX)


def _bool_or_options(value, handler):
    """true/false as they are; anything else must be the object (errors name its fields, not a union branch)."""
    if isinstance(value, bool):
        return value
    if value is not None and not isinstance(value, (dict, SpeculativeRequest)):
        raise PydanticCustomError("speculative_type", "must be true, false or an object (n_max, n_min, ngram_size)")
    return handler(value)


Speculative = Annotated[SpeculativeRequest | None,  # or a bool
                        WrapValidator(_bool_or_options, json_schema_input_type=bool | SpeculativeRequest | None)]


LORA_SCALE_MAX = 10.0  # LoRA scales beyond a few units only wreck the output


class LoraScale(BaseModel):
    """``{"id", "scale"}``: an adapter of ``GET /lora-adapters`` and its scale (request ``lora``, POST)."""

    model_config = _STRICT
    id: int = Field(ge=0, le=1 << 16)
    scale: float = Field(ge=-LORA_SCALE_MAX, le=LORA_SCALE_MAX, allow_inf_nan=False)


class _Sampling(BaseModel):
    """Fields both generation endpoints take."""

    model_config = _STRICT
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1, le=1 << 20)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    n: int = Field(1, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Stop = None
    seed: int | None = Field(None, ge=-(1 << 63), lt=1 << 64)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    # llama.cpp's extensions
    top_k: int | None = Field(None, ge=0, le=1 << 20)
    min_p: float | None = Field(None, ge=0, le=1)
    typical_p: float | None = Field(None, ge=0, le=1)
    # llama.cpp divides logits by it; 0 would be refused by the sampler once the engine builds it
    repeat_penalty: float | None = Field(None, gt=0, le=100)
    mirostat_mode: int | None = Field(None, ge=0, le=2)
    mirostat_tau: float | None = Field(None, ge=0, le=100)
    mirostat_eta: float | None = Field(None, ge=0, le=1)
    # llama-server's per-request adapters: listed ones at their scale, the others off (see /lora-adapters)
    lora: list[LoraScale] | None = Field(None, max_length=1 << 10)
    grammar: str | None = None
    # llama-server clients send it; prefixes are always reused here (never changing the output)
    cache_prompt: bool = True
    # llama-server's speculative decoding (prompt lookup here; see generation.drafting.SpeculativeOptions):
    # ``"speculative": true|false|{...}`` and the flat ``"speculative.n_max"``/``"speculative.n_min"`` keys
    speculative: Speculative = None
    speculative_n_max: int | None = Field(None, alias="speculative.n_max", ge=1, le=SPEC_MAX)
    speculative_n_min: int | None = Field(None, alias="speculative.n_min", ge=0, le=SPEC_MAX)


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1, le=1)


class ContentPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    type: str
    text: str | None = None


class FunctionCall(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    name: str
    arguments: str | dict[str, Any] = "{}"


class ToolCall(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None


class FunctionDef(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    type: Literal["function"]
    function: FunctionDef


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, le=1 << 20)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    functions: list[FunctionDef] | None = None
    function_call: Literal["none", "auto"] | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    enable_thinking: bool | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None


class EmbeddingRequest(BaseModel):
    model_config = _STRICT
    input: str | list[str]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None


class RerankRequest(BaseModel):
    model_config = _STRICT
    query: str
    documents: list[str] = Field(min_length=1)
    model: str | None = None
    top_n: int | None = Field(None, ge=1)
    return_documents: bool = False


class TokenizeRequest(BaseModel):
    model_config = _STRICT
    content: str
    model: str | None = None
    add_special: bool = True
    parse_special: bool = True
    with_pieces: bool = False


class DetokenizeRequest(BaseModel):
    model_config = _STRICT
    tokens: list[int]
    model: str | None = None
