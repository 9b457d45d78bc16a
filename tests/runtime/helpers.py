"""Shared helpers for the runtime tests: an event recorder and gated tools.

Nothing here sleeps to synchronise: tests wait on events (a recorded agent
event, a tool that started) under ``anyio.fail_after``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup

from steerline import (
    Agent,
    AgentEvent,
    AssistantMessage,
    Message,
    RunResult,
    ToolContext,
    ToolResultMessage,
    UserMessage,
    tool,
)
from steerline.tools import FunctionTool

TIMEOUT = 5.0
SKIPPED = "Skipped due to queued user message."
CANCELLED = "Cancelled due to queued user message."

Predicate = Callable[[AgentEvent], bool]


class Recorder:
    """Records every event of an agent and lets a test wait for one."""

    def __init__(self, agent: Agent) -> None:
        self.events: list[AgentEvent] = []
        self._waiters: list[tuple[Predicate, anyio.Event]] = []
        self.unsubscribe = agent.subscribe(self._on_event)

    def _on_event(self, event: AgentEvent) -> None:
        self.events.append(event)
        for waiter in list(self._waiters):
            predicate, flag = waiter
            if predicate(event):
                flag.set()
                self._waiters.remove(waiter)

    async def wait(self, predicate: Predicate, within: float = TIMEOUT) -> AgentEvent:
        """Return the first recorded event matching ``predicate`` (waiting if needed)."""
        with anyio.fail_after(within):
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                flag = anyio.Event()
                self._waiters.append((predicate, flag))
                await flag.wait()

    async def wait_type(self, type_: str, within: float = TIMEOUT, **attrs: Any) -> AgentEvent:
        return await self.wait(lambda e: is_event(e, type_, **attrs), within)

    def types(self, *, collapse_updates: bool = False, skip_queue: bool = True) -> list[str]:
        out: list[str] = []
        for event in self.events:
            if skip_queue and event.type == "queue_update":
                continue
            if collapse_updates and out and out[-1] == event.type == "message_update":
                continue
            out.append(event.type)
        return out

    def of_type(self, type_: str) -> list[Any]:
        return [e for e in self.events if e.type == type_]

    def tool_ends(self) -> dict[str, Any]:
        """``tool_execution_end`` events by tool name (names are unique per test)."""
        ends: dict[str, Any] = {}
        for event in self.of_type("tool_execution_end"):
            assert event.tool_name not in ends, f"two ends for {event.tool_name}"
            ends[event.tool_name] = event
        return ends


def is_event(event: AgentEvent, type_: str, **attrs: Any) -> bool:
    if event.type != type_:
        return False
    return all(getattr(event, key) == value for key, value in attrs.items())


def is_text_delta(event: AgentEvent) -> bool:
    delta = getattr(event, "delta", None)
    return event.type == "message_update" and delta is not None and delta.kind == "text_delta"


@dataclass
class Gate:
    """A tool body that reports when it starts and waits until released."""

    name: str
    started: anyio.Event = field(default_factory=anyio.Event)
    release: anyio.Event = field(default_factory=anyio.Event)
    finished: bool = False
    cancelled: bool = False
    context: ToolContext | None = None


class Gates:
    """One gated tool per name: ``gates.tool("a")`` is a tool named ``a``."""

    def __init__(self) -> None:
        self.gates: dict[str, Gate] = {}
        self.active: set[str] = set()
        self.overlaps: dict[str, set[str]] = {}
        """For each tool, the other tools running at any moment while it ran."""
        self.max_active = 0

    def __getitem__(self, name: str) -> Gate:
        return self.gates[name]

    def tool(self, name: str, *, sequential: bool = False) -> FunctionTool:
        gate = self.gates[name] = Gate(name)

        async def body(context: ToolContext) -> str:
            gate.context = context
            self.active.add(name)
            self.max_active = max(self.max_active, len(self.active))
            for other in self.active:
                self.overlaps.setdefault(other, set()).update(self.active - {other})
            gate.started.set()
            try:
                await gate.release.wait()
            except BaseException:
                gate.cancelled = True
                raise
            finally:
                self.active.discard(name)
            gate.finished = True
            return f"done {name}"

        return tool(name=name, sequential=sequential, description=f"gated tool {name}")(body)

    async def wait_started(self, *names: str, within: float = TIMEOUT) -> None:
        with anyio.fail_after(within):
            for name in names:
                await self.gates[name].started.wait()

    def release(self, *names: str) -> None:
        for name in names or tuple(self.gates):
            self.gates[name].release.set()


class Runner:
    """Runs ``agent.prompt`` / ``continue_`` in a task group and keeps the result."""

    def __init__(self, agent: Agent, group: TaskGroup) -> None:
        self.agent = agent
        self.group = group
        self.results: list[RunResult] = []
        self.done = anyio.Event()

    def prompt(self, text: str, **kwargs: Any) -> None:
        self.done = done = anyio.Event()

        async def go() -> None:
            try:
                self.results.append(await self.agent.prompt(text, **kwargs))
            finally:
                done.set()

        self.group.start_soon(go)

    async def wait(self, within: float = TIMEOUT) -> RunResult:
        with anyio.fail_after(within):
            await self.done.wait()
        return self.results[-1]


def user_texts(messages: list[Message]) -> list[str]:
    return [m.text for m in messages if isinstance(m, UserMessage)]


def roles(messages: list[Message]) -> list[str]:
    return [m.role for m in messages]


def assistants(messages: list[Message]) -> list[AssistantMessage]:
    return [m for m in messages if isinstance(m, AssistantMessage)]


def tool_results(messages: list[Message]) -> list[ToolResultMessage]:
    return [m for m in messages if isinstance(m, ToolResultMessage)]


def last_user_text(messages: list[Message]) -> str:
    return [m for m in messages if isinstance(m, UserMessage)][-1].text
