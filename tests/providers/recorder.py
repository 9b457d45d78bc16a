"""Record an agent's native events and wait on them with a deadline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio

from steerline import Agent
from steerline.core.events import AgentEvent


class Recorder:
    """Collects an agent's events; ``wait_for`` blocks on a condition, with a deadline."""

    def __init__(self, agent: Agent) -> None:
        self.events: list[AgentEvent] = []
        self._waiters: list[tuple[Callable[[AgentEvent], bool], anyio.Event]] = []
        agent.subscribe(self._on_event)

    def _on_event(self, event: AgentEvent) -> None:
        self.events.append(event)
        for predicate, ready in self._waiters:
            if not ready.is_set() and predicate(event):
                ready.set()

    async def wait_for(self, predicate: Callable[[AgentEvent], bool], seconds: float = 5) -> None:
        if any(predicate(event) for event in self.events):
            return
        ready = anyio.Event()
        self._waiters.append((predicate, ready))
        with anyio.fail_after(seconds):
            await ready.wait()

    def of_type(self, kind: str) -> list[Any]:
        return [event for event in self.events if event.type == kind]

    def delta_kinds(self, message_index: int = 0) -> list[str]:
        """The deltas of the n-th streamed assistant message: ``kind`` for text and
        thinking (repeats collapsed), ``kind:content_index`` for tool calls."""
        updates = self.of_type("message_update")
        messages: list[Any] = []
        for event in updates:
            if not any(event.message is m for m in messages):
                messages.append(event.message)
        kinds: list[str] = []
        for event in updates:
            if event.message is not messages[message_index]:
                continue
            kind = event.delta.kind
            if kind.startswith("toolcall"):
                kind = f"{kind}:{event.delta.content_index}"
            if not kinds or kinds[-1] != kind:
                kinds.append(kind)
        return kinds


def is_text_delta(event: AgentEvent) -> bool:
    return event.type == "message_update" and event.delta.kind == "text_delta"  # type: ignore[attr-defined]
