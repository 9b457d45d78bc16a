"""The offline ``demo`` model: deterministic, streams token by token.

It makes steerline usable and testable with no network and no key: directives
in the last user message make it reason (``/think``), call tools (``/call``)
and slow down (``/delay``), which is everything needed to watch steering
interrupt a busy agent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel

from steerline.core.ids import new_id
from steerline.core.messages import ToolResultMessage, UserMessage
from steerline.models._tokens import chunk, tokenize
from steerline.models.base import (
    ModelPart,
    ModelRequest,
    StreamEnd,
    TextPart,
    ThinkingPart,
    ToolCallEndPart,
    ToolCallPart,
)

MAX_DELAY_MS = 10_000
ZERO_DELAY_BATCH = 8
"""With no delay, yield to the event loop every this many tokens: often enough
that a steer gets in at once, rarely enough that viewers receive tokens in
batches (one socket write per batch instead of per token)."""


@dataclass(slots=True)
class DemoCall:
    name: str
    raw_arguments: str


@dataclass(slots=True)
class Directives:
    """What the last user message asked of the demo model."""

    text: str = ""
    thinking: str = ""
    delay_ms: float | None = None
    """None: no ``/delay`` directive (the model's default applies)."""
    calls: list[DemoCall] = field(default_factory=list)


def parse_directives(message: str) -> Directives:
    """Remove directive lines from ``message`` and return them with the rest.

    ``/call NAME {json}`` adds a call (the JSON is passed through raw so that
    invalid JSON becomes an invalid-arguments error result); ``/think TEXT``
    sets the reasoning; ``/delay MS`` the per-token delay.
    """
    directives = Directives()
    remaining: list[str] = []
    for line in message.splitlines():
        stripped = line.strip()
        command, _, rest = stripped.partition(" ")
        rest = rest.strip()
        if command == "/call" and rest:
            name, _, raw = rest.partition(" ")
            directives.calls.append(DemoCall(name=name, raw_arguments=raw.strip() or "{}"))
        elif command == "/think":
            directives.thinking = f"{directives.thinking}\n{rest}".strip()
        elif command == "/delay":
            try:
                directives.delay_ms = min(max(float(rest), 0.0), MAX_DELAY_MS)
            except ValueError:
                remaining.append(line)
        else:
            remaining.append(line)
    directives.text = "\n".join(remaining).strip()
    return directives


def _last_user_text(request: ModelRequest) -> str:
    for message in reversed(request.messages):
        if isinstance(message, UserMessage):
            return message.text
    return ""


def _trailing_tool_results(request: ModelRequest) -> list[ToolResultMessage]:
    results: list[ToolResultMessage] = []
    for message in reversed(request.messages):
        if not isinstance(message, ToolResultMessage):
            break
        results.append(message)
    return results[::-1]


class DemoModel:
    """Echoes the last user message and obeys its directives (SPEC §2.8)."""

    def __init__(self, *, default_delay_ms: float = 0.0) -> None:
        self.default_delay_ms = default_delay_ms

    @property
    def name(self) -> str:
        return "demo"

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelPart]:
        directives = parse_directives(_last_user_text(request))
        delay_ms = self.default_delay_ms if directives.delay_ms is None else directives.delay_ms
        delay = delay_ms / 1000.0

        parts = 0

        async def pause() -> None:
            nonlocal parts
            if delay > 0:
                await anyio.sleep(delay)
                return
            parts += 1
            if parts % ZERO_DELAY_BATCH == 0:
                await anyio.lowlevel.checkpoint()

        if directives.thinking:
            for token in tokenize(directives.thinking):
                await pause()
                yield ThinkingPart(token)

        results = _trailing_tool_results(request)
        if results:
            summary = "; ".join(f"{r.tool_name}={r.text}" for r in results)
            for token in tokenize(f"Results: {summary}"):
                await pause()
                yield TextPart(token)
            yield StreamEnd("stop")
            return

        if directives.text:
            for token in tokenize(f"Echo: {directives.text}"):
                await pause()
                yield TextPart(token)
        for index, call in enumerate(directives.calls):
            await pause()
            yield ToolCallPart(index=index, id=new_id("call"), name=call.name)
            for piece in chunk(call.raw_arguments, 16):
                await pause()
                yield ToolCallPart(index=index, arguments=piece)
            yield ToolCallEndPart(index)
        yield StreamEnd("tool_use" if directives.calls else "stop")
