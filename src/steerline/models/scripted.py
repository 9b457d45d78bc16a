"""``ScriptedModel``: replays given replies with given pacing, for tests.

It also records what it was asked and when each stream was closed, which is
how the tests and benchmarks measure how fast a steer or an abort reaches the
model.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel

from steerline.core.errors import ModelError
from steerline.core.ids import new_id
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


@dataclass(slots=True)
class ScriptedReply:
    """One model reply: optional reasoning, text, then tool calls."""

    text: str = ""
    thinking: str = ""
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    parts: list[ModelPart] | None = None
    """Raw parts, streamed as given instead of the fields above."""
    fail_after: ModelError | None = None
    """Raise this after streaming the reply (a stream cut mid-way)."""


@dataclass(slots=True)
class ScriptedError:
    """A reply that fails at once with ``error``."""

    error: ModelError


@dataclass(slots=True)
class StreamRecord:
    request: ModelRequest
    opened_at: float
    closed_at: float | None = None
    completed: bool = False


class ScriptedModel:
    """Replays ``replies`` in order, then ``default`` forever.

    ``token_delay`` (seconds) paces every streamed part; 0 yields to the event
    loop between parts without sleeping.
    """

    def __init__(
        self,
        replies: Iterable[ScriptedReply | ScriptedError | str] = (),
        *,
        token_delay: float = 0.0,
        default: ScriptedReply | None = None,
        name: str = "scripted",
    ) -> None:
        self._replies = list(replies)
        self.token_delay = token_delay
        self.default = default or ScriptedReply(text="ok")
        self._name = name
        self.streams: list[StreamRecord] = []
        self.stream_opened = anyio.Event()

    @property
    def name(self) -> str:
        return self._name

    @property
    def requests(self) -> list[ModelRequest]:
        return [record.request for record in self.streams]

    def add(self, *replies: ScriptedReply | ScriptedError | str) -> None:
        self._replies.extend(replies)

    def _next(self) -> ScriptedReply | ScriptedError:
        if not self._replies:
            return self.default
        reply = self._replies.pop(0)
        return ScriptedReply(text=reply) if isinstance(reply, str) else reply

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelPart]:
        record = StreamRecord(request=request, opened_at=time.perf_counter())
        self.streams.append(record)
        self.stream_opened.set()
        self.stream_opened = anyio.Event()
        reply = self._next()
        try:
            if isinstance(reply, ScriptedError):
                raise reply.error
            for part in _parts(reply):
                if self.token_delay > 0:
                    await anyio.sleep(self.token_delay)
                else:
                    await anyio.lowlevel.checkpoint()
                yield part
            if reply.fail_after is not None:
                raise reply.fail_after
            record.completed = True
        finally:
            record.closed_at = time.perf_counter()


def _parts(reply: ScriptedReply) -> list[ModelPart]:
    if reply.parts is not None:
        return list(reply.parts)
    parts: list[ModelPart] = [ThinkingPart(t) for t in tokenize(reply.thinking)]
    parts += [TextPart(t) for t in tokenize(reply.text)]
    for index, (name, args) in enumerate(reply.tool_calls):
        parts.append(ToolCallPart(index=index, id=new_id("call"), name=name))
        parts += [ToolCallPart(index=index, arguments=p) for p in chunk(json.dumps(args), 16)]
        parts.append(ToolCallEndPart(index))
    parts.append(StreamEnd("tool_use" if reply.tool_calls else "stop"))
    return parts
