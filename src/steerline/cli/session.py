"""What the terminal chat talks to: a session feeds a transcript and takes commands.

The view (:mod:`steerline.cli.chat`) only knows :class:`ChatSession`: it calls
its methods from key bindings (they return at once; errors become notices in
the transcript) and reads the transcript the session feeds. Today's session
drives an in-process :class:`Agent` (:class:`LocalSession`);
:class:`~steerline.cli.remote.RemoteSession` drives a conversation on a server
(``--url``) through the SDK; the view does not know which it has.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import anyio
from anyio.abc import TaskGroup, TaskStatus

from steerline.cli.transcript import QueueItem, Transcript
from steerline.core.errors import SteerlineError
from steerline.core.events import (
    AgentEnd,
    AgentEvent,
    AgentStart,
    MessageEnd,
    MessageStart,
    MessageUpdate,
    QueuedMessageView,
    QueueUpdate,
    ToolExecutionEnd,
    ToolExecutionStart,
    ToolExecutionUpdate,
)
from steerline.core.messages import AssistantMessage, TextContent, UserContent, UserMessage
from steerline.runtime.agent import Agent
from steerline.runtime.inbox import Lane
from steerline.runtime.run import RunResult


class ChatSession(Protocol):
    """A conversation as the terminal chat drives it."""

    transcript: Transcript
    title: str
    """Shown in the banner: which agent, where."""

    @property
    def running(self) -> bool:
        """A run is active (or about to start)."""
        ...

    @property
    def has_queue(self) -> bool: ...

    def send(self, text: str) -> None:
        """Enter: start a run with ``text`` when idle, else steer with it."""

    def interrupt(self, text: str) -> None:
        """Steer with ``text`` and interrupt the turn at once (start a run when idle)."""

    def follow_up(self, text: str) -> None:
        """Queue ``text`` for when the agent would stop."""

    def abort(self) -> None:
        """Stop the running run; the queue is kept."""

    def send_queue(self) -> None:
        """Start a run from the kept queue (idle only)."""

    async def take_queue(self) -> list[str]:
        """Remove the queued messages and return their texts (to edit them)."""
        ...

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Feed the transcript until cancelled; report started once listening."""

    async def aclose(self) -> None:
        """Stop what is running (called when the chat quits)."""


def _text_of(content: list[UserContent]) -> str:
    parts = [p.text if isinstance(p, TextContent) else "[image]" for p in content]
    return "".join(parts)


def _items(lane: Lane, views: list[QueuedMessageView]) -> list[QueueItem]:
    return [QueueItem(id=v.id, lane=lane, text=_text_of(v.content)) for v in views]


def apply_event(transcript: Transcript, event: AgentEvent) -> None:
    """Translate one native event into the transcript's vocabulary."""
    if isinstance(event, MessageUpdate):  # the most frequent: first
        delta = event.delta
        kind = delta.kind
        if kind == "text_delta":
            transcript.delta("text", delta.delta)
        elif kind == "thinking_delta":
            transcript.delta("thinking", delta.delta)
        elif kind == "text_start":
            transcript.block_started("text")
        elif kind == "thinking_start":
            transcript.block_started("thinking")
        elif kind in ("text_end", "thinking_end"):
            transcript.block_ended()
        elif kind == "toolcall_start" and delta.tool_call is not None:
            transcript.tool_call_streaming(delta.tool_call.name)
    elif isinstance(event, MessageStart):
        if isinstance(event.message, UserMessage):
            transcript.user_message(event.message.delivery, event.message.text)
    elif isinstance(event, MessageEnd):
        if isinstance(event.message, AssistantMessage):
            transcript.message_ended(event.message.stop_reason)
    elif isinstance(event, ToolExecutionStart):
        transcript.tool_started(event.tool_call_id, event.tool_name, event.args)
    elif isinstance(event, ToolExecutionUpdate):
        transcript.tool_progress(event.tool_call_id, event.tool_name, event.partial_result)
    elif isinstance(event, ToolExecutionEnd):
        transcript.tool_ended(
            event.tool_call_id,
            event.tool_name,
            event.result,
            is_error=event.is_error,
            skipped=event.skipped,
        )
    elif isinstance(event, QueueUpdate):
        transcript.queue_changed(
            [*_items("steering", event.steering), *_items("follow_up", event.follow_up)]
        )
    elif isinstance(event, AgentStart):
        transcript.run_started(event.run_id)
    elif isinstance(event, AgentEnd):
        transcript.run_ended(event.stop_reason, event.error_message)


class LocalSession:
    """An in-process :class:`Agent`: runs start as tasks of :meth:`run`'s task group.

    A run that completes while messages are still queued (a steer typed just
    as it ended) goes on with ``continue_()``, so nothing waits unseen; after
    an abort or an error the queue is kept until Enter on an empty input,
    which sends it with ``send_now()``.
    """

    def __init__(self, agent: Agent, *, title: str = "", transcript: Transcript | None = None):
        self.agent = agent
        self.transcript = transcript or Transcript()
        self.title = title or f"{agent.model.name} (in-process)"
        self._group: TaskGroup | None = None
        self._driving = False
        """A run task is on: its run is starting, active, or about to go on."""
        self._drive_done: anyio.Event | None = None

    @property
    def running(self) -> bool:
        return self._driving or self.agent.is_running

    @property
    def has_queue(self) -> bool:
        return self.agent.has_queued_messages()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        unsubscribe = self.agent.subscribe(lambda event: apply_event(self.transcript, event))
        try:
            async with anyio.create_task_group() as group:
                self._group = group
                task_status.started()
                await anyio.sleep_forever()
        finally:
            self._group = None
            unsubscribe()

    # -- commands ---------------------------------------------------------------
    def send(self, text: str) -> None:
        if self.running:
            self._guard(lambda: self.agent.steer(text))
        else:
            self._start(text)

    def interrupt(self, text: str) -> None:
        if self.running:
            self._guard(lambda: self.agent.steer(text, interrupt=True))
        else:
            self._start(text)

    def follow_up(self, text: str) -> None:
        self._guard(lambda: self.agent.follow_up(text))

    def abort(self) -> None:
        self.agent.abort()

    def send_queue(self) -> None:
        if self.running:
            return
        if not self.agent.has_queued_messages():
            self.transcript.notice("the queue is empty: nothing to send")
            return
        self.transcript.notice("sending the kept queue")
        self._launch(None)

    async def take_queue(self) -> list[str]:
        return [_text_of(message.content) for message in self.agent.clear_queues()]

    async def wait_idle(self) -> None:
        """Return once no run is active or about to go on."""
        while self.running:
            if self._driving and self._drive_done is not None:
                await self._drive_done.wait()
            else:
                await self.agent.wait_for_idle()

    async def aclose(self) -> None:
        self.agent.abort()
        with anyio.move_on_after(5):
            await self.wait_idle()

    # -- internals --------------------------------------------------------------
    def _guard(self, action: Callable[[], object]) -> None:
        try:
            action()
        except SteerlineError as exc:
            self.transcript.notice(f"not sent: {exc.message}", error=True)

    def _start(self, text: str) -> None:
        self._launch(text)

    def _launch(self, text: str | None) -> None:
        if self._group is None:
            self.transcript.notice("the session is not running", error=True)
            return
        self._driving = True
        self._drive_done = anyio.Event()
        self._group.start_soon(self._drive, text)

    async def _drive(self, text: str | None) -> None:
        agent = self.agent
        try:
            # the kept queue goes in the first turn (``send_now``, as the server's
            # ``POST …/queue/send``); ``continue_()`` would first have the model
            # answer an aborted turn's cancelled tool results on their own
            result: RunResult = await (agent.prompt(text) if text is not None else agent.send_now())
            # a steer typed as the run ended is queued: go on with it (no await
            # between this check and ``_driving`` going false)
            while result.stop_reason == "completed" and agent.has_queued_messages():
                result = await agent.continue_()
        except SteerlineError as exc:
            self.transcript.notice(f"not sent: {exc.message}", error=True)
        finally:
            self._driving = False
            if self._drive_done is not None:
                self._drive_done.set()
