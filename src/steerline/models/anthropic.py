"""Anthropic Messages API streaming, on the official ``anthropic`` SDK.

``messages.create(stream=True)`` yields the raw named SSE events
(``message_start``, ``content_block_start|delta|stop``, ``message_delta``,
``message_stop``; ``ping`` is dropped by the SDK); they are translated as:

* ``text_delta`` → text, ``thinking_delta`` → thinking,
* ``tool_use`` blocks and their ``input_json_delta`` fragments → tool calls
  (the block index identifies the call; its ``content_block_stop`` ends it),
* ``message_start`` / ``message_delta`` usage → usage,
* ``stop_reason``: ``end_turn``/``stop_sequence``/``pause_turn`` → stop,
  ``tool_use`` → tool_use, ``max_tokens`` → length; ``refusal`` is an error.

Requests: the system prompt goes in ``system``; tool results are user
``tool_result`` blocks; consecutive messages of one role are merged, as the
API requires alternation. Thinking blocks are sent back with the signature
the API gave them (kept in ``ThinkingContent.signature``); a thinking block
without a signature is left out.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import anthropic

from steerline.core.errors import ModelError
from steerline.core.messages import (
    AssistantMessage,
    AssistantStopReason,
    ImageContent,
    Message,
    TextContent,
    ThinkingContent,
    ToolCall,
    ToolResultMessage,
    UserMessage,
)
from steerline.models._sdk import (
    SDKErrors,
    SDKModelBase,
    accepted_keywords,
    check_error,
    client_settings,
    fit_request,
    stream_cut,
)
from steerline.models.base import (
    EndpointCheck,
    ModelPart,
    ModelRequest,
    StreamEnd,
    TextPart,
    ThinkingPart,
    ToolCallEndPart,
    ToolCallPart,
    ToolSpec,
    UsagePart,
)

PROVIDER = "anthropic"
ERRORS = SDKErrors(
    base=anthropic.AnthropicError,
    status=anthropic.APIStatusError,
    connection=anthropic.APIConnectionError,
    timeout=anthropic.APITimeoutError,
    response_validation=anthropic.APIResponseValidationError,
    api=anthropic.APIError,
)
SDK_ERRORS = ERRORS.catch
DEFAULT_MAX_TOKENS = 8192
"""The Messages API requires ``max_tokens``; this is used when none is set."""

STOP_REASONS: dict[str, AssistantStopReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "tool_use": "tool_use",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
}


# -- request ----------------------------------------------------------------
def _image_block(image: ImageContent) -> dict[str, Any]:
    return {
        "type": "image",
        "source": {"type": "base64", "media_type": image.mime_type, "data": image.data},
    }


def _content_blocks(parts: list[TextContent | ImageContent]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, TextContent):
            if part.text:  # the API rejects empty text blocks
                blocks.append({"type": "text", "text": part.text})
        else:
            blocks.append(_image_block(part))
    return blocks


def _assistant_blocks(message: AssistantMessage) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for part in message.content:
        if isinstance(part, ThinkingContent):
            if part.signature:
                blocks.append(
                    {"type": "thinking", "thinking": part.thinking, "signature": part.signature}
                )
        elif isinstance(part, TextContent):
            if part.text:
                blocks.append({"type": "text", "text": part.text})
        elif isinstance(part, ToolCall):
            blocks.append(
                {
                    "type": "tool_use",
                    "id": part.id,
                    "name": part.name,
                    "input": part.arguments if part.invalid_arguments is None else {},
                }
            )
    return blocks


def _tool_result_block(message: ToolResultMessage) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id}
    content = _content_blocks(list(message.content))
    if content:
        block["content"] = content
    if message.is_error:
        block["is_error"] = True
    return block


def to_anthropic_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """steerline messages → Messages API ``messages`` (roles alternate)."""
    out: list[dict[str, Any]] = []
    for message in messages:
        role: str
        if isinstance(message, UserMessage):
            role = "user"
            blocks = _content_blocks(list(message.content)) or [
                {"type": "text", "text": "(empty message)"}
            ]
        elif isinstance(message, AssistantMessage):
            role = "assistant"
            blocks = _assistant_blocks(message)
        else:
            role = "user"
            blocks = [_tool_result_block(message)]
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    for entry in out:
        if entry["role"] == "user":
            # tool_result blocks must open the user turn that answers tool_use
            entry["content"].sort(key=lambda block: block["type"] != "tool_result")
    return out


def to_anthropic_tools(tools: list[ToolSpec]) -> list[dict[str, Any]]:
    return [
        {
            "name": spec.name,
            "description": spec.description,
            "input_schema": spec.parameters or {"type": "object", "properties": {}},
        }
        for spec in tools
    ]


# -- model ------------------------------------------------------------------
def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


class _EventTranslator:
    """The raw stream events of one reply → model parts."""

    def __init__(self) -> None:
        self._blocks: dict[int, str] = {}  # block index → block type
        self._signatures: dict[int, str] = {}
        self._input_tokens = 0
        self.stop_reason: str | None = None
        self.stopped = False

    def end(self) -> StreamEnd:
        if not self.stopped:
            raise stream_cut(PROVIDER)
        if self.stop_reason == "refusal":
            raise ModelError("anthropic: the model declined to answer (stop_reason=refusal)")
        return StreamEnd(STOP_REASONS.get(self.stop_reason or "end_turn", "stop"))

    def translate(self, event: Any) -> Iterator[ModelPart]:
        kind = getattr(event, "type", None)
        if kind == "message_start":
            usage = getattr(event.message, "usage", None)
            self._input_tokens = sum(
                _int(getattr(usage, name, 0))
                for name in (
                    "input_tokens",
                    "cache_creation_input_tokens",
                    "cache_read_input_tokens",
                )
            )
            yield UsagePart(self._input_tokens, _int(getattr(usage, "output_tokens", 0)))
        elif kind == "content_block_start":
            yield from self._block_start(event.index, event.content_block)
        elif kind == "content_block_delta":
            yield from self._block_delta(event.index, event.delta)
        elif kind == "content_block_stop":
            block_type = self._blocks.get(event.index)
            if block_type == "tool_use":
                yield ToolCallEndPart(event.index)
            elif block_type == "thinking" and self._signatures.get(event.index):
                yield ThinkingPart("", signature=self._signatures[event.index])
        elif kind == "message_delta":
            self.stop_reason = getattr(event.delta, "stop_reason", None) or self.stop_reason
            usage = getattr(event, "usage", None)
            if usage is not None:
                input_tokens = max(self._input_tokens, _int(getattr(usage, "input_tokens", 0)))
                yield UsagePart(input_tokens, _int(getattr(usage, "output_tokens", 0)))
        elif kind == "message_stop":
            self.stopped = True

    def _block_start(self, index: int, block: Any) -> Iterator[ModelPart]:
        self._blocks[index] = block.type
        if block.type == "tool_use":
            yield ToolCallPart(index=index, id=block.id, name=block.name)
        elif block.type == "text" and getattr(block, "text", ""):
            yield TextPart(block.text)
        elif block.type == "thinking" and getattr(block, "thinking", ""):
            yield ThinkingPart(block.thinking)

    def _block_delta(self, index: int, delta: Any) -> Iterator[ModelPart]:
        if delta.type == "text_delta" and delta.text:
            yield TextPart(delta.text)
        elif delta.type == "thinking_delta" and delta.thinking:
            yield ThinkingPart(delta.thinking)
        elif delta.type == "signature_delta":
            self._signatures[index] = self._signatures.get(index, "") + delta.signature
        elif (
            delta.type == "input_json_delta"
            and self._blocks.get(index) == "tool_use"
            and delta.partial_json
        ):
            yield ToolCallPart(index=index, arguments=delta.partial_json)


class AnthropicModel(SDKModelBase):
    """A Claude model through the Messages API.

    ``api_key`` defaults to ``$ANTHROPIC_API_KEY`` for Anthropic's own API
    only; a custom ``base_url`` without ``api_key`` gets the placeholder
    ``not-needed``, never a key or token from the environment
    (:mod:`steerline.models.keys`). ``thinking_budget``
    enables extended thinking with that many tokens (it must stay below
    ``max_tokens``; the API then requires the default temperature).
    ``request_options`` go to every ``messages.create`` call (``top_p``,
    ``stop_sequences``, ``metadata``, ``extra_headers`` for beta flags, ...).
    """

    provider = PROVIDER
    errors = ERRORS
    client: anthropic.AsyncAnthropic

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        thinking_budget: int | None = None,
        timeout: float | None = None,
        default_headers: Mapping[str, str] | None = None,
        client: anthropic.AsyncAnthropic | None = None,
        **request_options: Any,
    ) -> None:
        if not model:
            raise ModelError("anthropic: a model name is required")
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens or DEFAULT_MAX_TOKENS
        self.thinking_budget = thinking_budget
        self.request_options = request_options
        self._owns_client = client is None
        if client is None:
            settings = client_settings(PROVIDER, api_key, base_url, timeout, default_headers)
            client = anthropic.AsyncAnthropic(**settings)
        self.client = client
        self._accepted = accepted_keywords(self.client.messages.create)

    def request_params(self, request: ModelRequest) -> dict[str, Any]:
        """The keyword arguments of ``messages.create`` for ``request``."""
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "messages": to_anthropic_messages(list(request.messages)),
            "stream": True,
        }
        if request.system_prompt:
            params["system"] = request.system_prompt
        if request.tools:
            params["tools"] = to_anthropic_tools(list(request.tools))
        if self.temperature is not None:
            params["temperature"] = self.temperature
        if self.thinking_budget:
            params["thinking"] = {"type": "enabled", "budget_tokens": self.thinking_budget}
        params.update(self.request_options)
        return fit_request(params, self._accepted)

    async def _open_stream(self, params: dict[str, Any]) -> Any:
        return await self.client.messages.create(**params)

    def _translator(self) -> _EventTranslator:
        return _EventTranslator()

    async def check(self) -> EndpointCheck:
        """Reach the endpoint once (``GET /v1/models``) and look for the model in its list.

        The list holds dated ids (``claude-sonnet-4-5-20250929``); a model
        configured by its alias (``claude-sonnet-4-5``) is looked up with
        ``GET /v1/models/{model}``, which resolves aliases. Raises
        ``KeyRefusedError`` for 401/403 and ``ModelError`` when the endpoint
        cannot be used; a 404 on the list counts as reachable (no model list).
        """
        try:
            page = await self.client.models.list(limit=1000)
        except anthropic.NotFoundError:
            return EndpointCheck()
        except SDK_ERRORS as exc:
            raise check_error(exc, PROVIDER, ERRORS) from exc
        served = tuple(str(item.id) for item in page.data if getattr(item, "id", None))
        if not served:
            return EndpointCheck(served)
        if self.model in served:
            return EndpointCheck(served, True)
        try:
            await self.client.models.retrieve(self.model)
        except anthropic.NotFoundError:
            return EndpointCheck(served, False)
        except SDK_ERRORS:
            return EndpointCheck(served)  # a compatible server without the lookup: cannot tell
        return EndpointCheck(served, True)
