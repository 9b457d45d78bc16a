"""Conversation messages and their content parts.

Messages are msgspec Structs: mutable while the runtime streams into them,
and encodable to JSON at about a tenth of the cost of pydantic, which matters
because every token becomes an event that may be serialised.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import msgspec

Role = Literal["user", "assistant", "tool_result"]
Delivery = Literal["prompt", "steer", "follow_up"]
AssistantStopReason = Literal["stop", "tool_use", "length", "steered", "aborted", "error"]
RunStopReason = Literal["completed", "aborted", "error"]


class TextContent(msgspec.Struct, tag="text", tag_field="type", kw_only=True):
    text: str


class ThinkingContent(
    msgspec.Struct, tag="thinking", tag_field="type", kw_only=True, omit_defaults=True
):
    thinking: str
    signature: str | None = None
    """The provider's proof of the reasoning (Anthropic), sent back with it on
    later turns; persisted with the context so a reloaded conversation keeps it."""


class ImageContent(msgspec.Struct, tag="image", tag_field="type", kw_only=True):
    data: str
    """Base64-encoded image bytes."""
    mime_type: str


class ToolCall(msgspec.Struct, tag="tool_call", tag_field="type", kw_only=True, omit_defaults=True):
    id: str
    name: str
    arguments: dict[str, Any] = msgspec.field(default_factory=dict)
    raw_arguments: str = ""
    """The arguments exactly as the model streamed them (JSON text)."""
    invalid_arguments: str | None = None
    """Why ``raw_arguments`` could not be parsed; the call then gets an error result."""


UserContent = TextContent | ImageContent
AssistantContent = TextContent | ThinkingContent | ToolCall
ToolResultContent = TextContent | ImageContent


def _now() -> float:
    return time.time()


class Usage(msgspec.Struct, kw_only=True, omit_defaults=True):
    input_tokens: int = 0
    output_tokens: int = 0


class UserMessage(msgspec.Struct, tag="user", tag_field="role", kw_only=True, omit_defaults=True):
    id: str
    content: list[UserContent]
    delivery: Delivery = "prompt"
    timestamp: float = msgspec.field(default_factory=_now)

    @property
    def role(self) -> Role:
        return "user"

    @property
    def text(self) -> str:
        return "".join(part.text for part in self.content if isinstance(part, TextContent))


class AssistantMessage(
    msgspec.Struct, tag="assistant", tag_field="role", kw_only=True, omit_defaults=True
):
    content: list[AssistantContent] = msgspec.field(default_factory=list)
    stop_reason: AssistantStopReason | None = None
    error_message: str | None = None
    model: str = ""
    usage: Usage | None = None
    timestamp: float = msgspec.field(default_factory=_now)

    @property
    def role(self) -> Role:
        return "assistant"

    @property
    def text(self) -> str:
        return "".join(part.text for part in self.content if isinstance(part, TextContent))

    @property
    def thinking(self) -> str:
        return "".join(p.thinking for p in self.content if isinstance(p, ThinkingContent))

    @property
    def tool_calls(self) -> list[ToolCall]:
        return [part for part in self.content if isinstance(part, ToolCall)]


class ToolResultMessage(
    msgspec.Struct, tag="tool_result", tag_field="role", kw_only=True, omit_defaults=True
):
    tool_call_id: str
    tool_name: str
    content: list[ToolResultContent]
    is_error: bool = False
    skipped: bool = False
    timestamp: float = msgspec.field(default_factory=_now)

    @property
    def role(self) -> Role:
        return "tool_result"

    @property
    def text(self) -> str:
        return "".join(part.text for part in self.content if isinstance(part, TextContent))


Message = UserMessage | AssistantMessage | ToolResultMessage


def as_user_content(content: str | list[UserContent]) -> list[UserContent]:
    """Accept plain text or a list of content parts (text and images)."""
    if isinstance(content, str):
        return [TextContent(text=content)]
    return list(content)


def content_size(content: list[UserContent]) -> int:
    """Size in bytes of a message's content, as the inbox limits count it."""
    size = 0
    for part in content:
        if isinstance(part, TextContent):
            size += len(part.text.encode())
        else:
            size += len(part.data)
    return size
