"""Assemble a model's stream of parts into an ``AssistantMessage``.

Providers only translate their wire format into :mod:`steerline.models.base`
parts; this module owns the one place where blocks open and close and the
``message_update`` delta kinds are decided, so every provider produces the
same native events.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from steerline.core.events import DeltaKind, MessageDelta
from steerline.core.ids import new_id
from steerline.core.messages import (
    AssistantMessage,
    AssistantStopReason,
    TextContent,
    ThinkingContent,
    ToolCall,
    Usage,
)
from steerline.models.base import (
    ModelPart,
    StreamEnd,
    TextPart,
    ThinkingPart,
    ToolCallEndPart,
    ToolCallPart,
    UsagePart,
)


@dataclass(slots=True)
class _OpenCall:
    content_index: int
    call: ToolCall


class MessageAssembler:
    """Feeds parts into ``message`` and reports each change through ``emit``."""

    def __init__(self, message: AssistantMessage, emit: Callable[[MessageDelta], None]) -> None:
        self.message = message
        self._emit = emit
        self._open_block: int | None = None  # index of the open text/thinking block
        self._calls: dict[int, _OpenCall] = {}  # open tool calls by the model's index
        self.stop_reason: AssistantStopReason | None = None

    def feed(self, part: ModelPart) -> None:
        if isinstance(part, TextPart):
            self._block_delta(TextContent, part.text)
        elif isinstance(part, ThinkingPart):
            if part.text or part.signature is None:
                self._block_delta(ThinkingContent, part.text)
            if part.signature is not None:
                self._sign_thinking(part.signature)
        elif isinstance(part, ToolCallPart):
            self._tool_call_delta(part)
        elif isinstance(part, ToolCallEndPart):
            self._end_call(part.index)
        elif isinstance(part, UsagePart):
            self.message.usage = Usage(
                input_tokens=part.input_tokens, output_tokens=part.output_tokens
            )
        elif isinstance(part, StreamEnd):
            self.stop_reason = part.stop_reason

    def finish(self) -> None:
        """The stream ended normally: close every block, parse every call."""
        self._close_block()
        for index in list(self._calls):
            self._end_call(index)
        has_calls = bool(self.message.tool_calls)
        reason = self.stop_reason or ("tool_use" if has_calls else "stop")
        if reason == "stop" and has_calls:
            reason = "tool_use"
        self.message.stop_reason = reason

    def cut(self, stop_reason: AssistantStopReason, error_message: str | None = None) -> None:
        """The stream was interrupted: keep the partial text, drop calls still streaming."""
        self._close_block()
        for open_call in self._calls.values():
            self.message.content.remove(open_call.call)
        self._calls.clear()
        self.message.stop_reason = stop_reason
        self.message.error_message = error_message

    # -- internals -----------------------------------------------------------
    def _send(
        self, kind: DeltaKind, index: int, delta: str = "", call: ToolCall | None = None
    ) -> None:
        self._emit(MessageDelta(kind=kind, content_index=index, delta=delta, tool_call=call))

    def _block_delta(self, kind: type[TextContent] | type[ThinkingContent], text: str) -> None:
        content = self.message.content
        index = self._open_block
        if index is None or not isinstance(content[index], kind):
            self._close_block()
            content.append(
                TextContent(text="") if kind is TextContent else ThinkingContent(thinking="")
            )
            index = self._open_block = len(content) - 1
            self._send("text_start" if kind is TextContent else "thinking_start", index)
        block = content[index]
        # Grow the text in place: with the block's reference dropped first,
        # the local string is the only one and ``+=`` can resize it instead of
        # copying the whole block per token (quadratic on long answers).
        if isinstance(block, TextContent):
            grown, block.text = block.text, ""
            grown += text
            block.text = grown
            self._send("text_delta", index, text)
        elif isinstance(block, ThinkingContent):
            grown, block.thinking = block.thinking, ""
            grown += text
            block.thinking = grown
            self._send("thinking_delta", index, text)

    def _sign_thinking(self, signature: str) -> None:
        index = self._open_block
        if index is None or not isinstance(self.message.content[index], ThinkingContent):
            self._block_delta(ThinkingContent, "")
            index = self._open_block
        assert index is not None
        block = self.message.content[index]
        if isinstance(block, ThinkingContent):
            block.signature = (block.signature or "") + signature

    def _close_block(self) -> None:
        index = self._open_block
        if index is None:
            return
        self._open_block = None
        block = self.message.content[index]
        if isinstance(block, TextContent):
            self._send("text_end", index, block.text)
        elif isinstance(block, ThinkingContent):
            self._send("thinking_end", index, block.thinking)

    def _tool_call_delta(self, part: ToolCallPart) -> None:
        open_call = self._calls.get(part.index)
        if open_call is None:
            self._close_block()
            call = ToolCall(id=part.id or new_id("call"), name=part.name or "")
            self.message.content.append(call)
            open_call = self._calls[part.index] = _OpenCall(len(self.message.content) - 1, call)
            self._send("toolcall_start", open_call.content_index, call=call)
        elif part.name and not open_call.call.name:
            open_call.call.name = part.name
        if part.arguments:
            open_call.call.raw_arguments += part.arguments
            self._send("toolcall_delta", open_call.content_index, part.arguments, open_call.call)

    def _end_call(self, index: int) -> None:
        open_call = self._calls.pop(index, None)
        if open_call is None:
            return
        call = open_call.call
        parse_arguments(call)
        self._send("toolcall_end", open_call.content_index, call=call)


def parse_arguments(call: ToolCall) -> None:
    """Parse ``raw_arguments`` into ``arguments`` or record why it failed."""
    raw = call.raw_arguments.strip()
    if not raw:
        call.arguments = {}
        return
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        call.invalid_arguments = f"arguments are not valid JSON: {exc.msg} at position {exc.pos}"
        return
    if not isinstance(value, dict):
        call.invalid_arguments = "arguments must be a JSON object"
        return
    call.arguments = value
