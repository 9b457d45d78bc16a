"""Reading the log for one viewer: replay, live tail, heartbeats, drop rules.

The viewer pulls from the log, so the agent never waits for it. A viewer that
falls more than ``max_lag_events`` behind, or whose socket stays blocked for
``send_timeout`` seconds, is ended with a resume hint: it loses nothing, the
log still has every event.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, Protocol

import anyio

from steerline.log.base import EventLog, RetentionError, StorageUnavailableError, StoredEvent
from steerline.wire.envelope import EventName


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """Every limit is configurable; the defaults are the documented ones."""

    ping_interval: float = 15.0
    retry_ms: int = 1000
    max_lag_events: int = 10_000
    """A viewer further behind the log's head than this is dropped with a hint.

    Only events appended after the viewer connected count: replaying the
    history a viewer asked for is not falling behind."""
    send_timeout: float = 10.0
    """A send blocked longer than this (client not reading) drops the viewer."""
    batch_limit: int = 512
    """Most events read from the log and written to the socket at once."""
    linger: float = 0.001
    """Seconds a woken viewer waits before reading, so a burst of events goes
    out in one write instead of many (Nagle-like; 0 disables)."""


StopRule = Literal["first_done", "run_done", "caught_up", "never"]


@dataclass(frozen=True, slots=True)
class StreamPlan:
    """Which slice of the log a stream carries."""

    after: int
    stop: StopRule = "never"
    start_run_id: str | None = None
    """Skip events until this run's first one (a response to a new run)."""
    run_id: str | None = None
    """With ``run_done``: end after this run's ``done``."""
    until_seq: int = 0
    """With ``caught_up``: end once this seq was sent."""


class EndReason(StrEnum):
    COMPLETE = "complete"
    SHUTDOWN = "shutdown"
    SLOW = "slow"
    DELETED = "deleted"
    DISCONNECTED = "disconnected"
    UNAVAILABLE = "unavailable"
    """The store cannot write: nothing new will come until it recovers."""


class TailSink(Protocol):
    async def events(self, batch: list[StoredEvent]) -> None: ...
    async def ping(self) -> None: ...
    async def hint(self, after: int) -> None: ...


class StreamRegistry:
    """The open streams of a process, so shutdown can end each with a hint."""

    def __init__(self) -> None:
        self._tails: set[LogTail] = set()
        self.shutting_down = False

    def add(self, tail: LogTail) -> None:
        self._tails.add(tail)

    def discard(self, tail: LogTail) -> None:
        self._tails.discard(tail)

    def __len__(self) -> int:
        return len(self._tails)

    def shutdown(self) -> None:
        self.shutting_down = True
        for tail in list(self._tails):
            tail.interrupt()


@dataclass(eq=False)
class LogTail:
    log: EventLog
    conversation_id: str
    plan: StreamPlan
    settings: StreamSettings = field(default_factory=StreamSettings)
    registry: StreamRegistry | None = None
    last_sent: int = 0
    _started: bool = False
    _scope: anyio.CancelScope | None = None
    _interrupted: bool = False

    def interrupt(self) -> None:
        """End the stream at its next step (shutdown)."""
        self._interrupted = True
        if self._scope is not None:
            self._scope.cancel()

    async def run(self, sink: TailSink) -> EndReason:
        plan = self.plan
        self.last_sent = plan.after
        self._started = plan.start_run_id is None
        cursor = plan.after
        head_at_start = self.log.committed_seq(self.conversation_id)
        if self.registry is not None:
            if self.registry.shutting_down:
                await sink.hint(self.last_sent)
                return EndReason.SHUTDOWN
            self.registry.add(self)
        try:
            while True:
                if self._interrupted:
                    await self._send(sink.hint(self.last_sent))
                    return EndReason.SHUTDOWN
                if plan.stop == "caught_up" and cursor >= plan.until_seq:
                    return EndReason.COMPLETE
                try:
                    batch = await self.log.read(
                        self.conversation_id, cursor, self.settings.batch_limit
                    )
                except RetentionError:
                    # Retention dropped events this viewer had not read yet: end
                    # with a hint rather than skip them (a resume then gets a
                    # clear 409 instead of a silent gap).
                    await self._send(sink.hint(self.last_sent), 1.0)
                    return EndReason.SLOW
                if not batch:
                    try:
                        if not await self._wait(cursor, sink):
                            return EndReason.DELETED
                    except StorageUnavailableError:
                        # Nothing can be committed now: end with a hint; the
                        # client resumes from it once the store recovers.
                        await self._send(sink.hint(self.last_sent), 1.0)
                        return EndReason.UNAVAILABLE
                    continue
                cursor = batch[-1].seq
                selected, finished = self._select(batch)
                if selected:
                    if not await self._send(sink.events(selected)):
                        await self._drop(sink)
                        return EndReason.SLOW
                    self.last_sent = selected[-1].seq
                if finished:
                    return EndReason.COMPLETE
                position = max(cursor, head_at_start)
                lag = self.log.committed_seq(self.conversation_id) - position
                if lag > self.settings.max_lag_events:
                    await self._drop(sink)
                    return EndReason.SLOW
        finally:
            if self.registry is not None:
                self.registry.discard(self)

    async def _drop(self, sink: TailSink) -> None:
        """End a viewer that fell behind with a hint to resume from its last id.

        It stops counting as an open stream at once. The hint itself may have
        to wait for a socket the client stopped reading to drain (the server
        cannot write past a full buffer), so it gets a full send timeout of its
        own: a client that reads again within it still sees the hint.
        """
        if self.registry is not None:
            self.registry.discard(self)
        await self._send(sink.hint(self.last_sent), max(1.0, self.settings.send_timeout))

    def _select(self, batch: list[StoredEvent]) -> tuple[list[StoredEvent], bool]:
        plan = self.plan
        selected: list[StoredEvent] = []
        for event in batch:
            if not self._started:
                # the run's first event after ``after`` (its task_started, or
                # any later one of it when resuming mid-run) opens the slice
                if event.run_id is not None and event.run_id == plan.start_run_id:
                    self._started = True
                else:
                    continue
            selected.append(event)
            if event.event == EventName.DONE and (
                plan.stop == "first_done"
                or (plan.stop == "run_done" and event.run_id == plan.run_id)
            ):
                return selected, True
            if plan.stop == "caught_up" and event.seq >= plan.until_seq:
                return selected, True
        return selected, False

    async def _wait(self, cursor: int, sink: TailSink) -> bool:
        """Wait for events after ``cursor``; False if the conversation is gone.

        Storage is asked whether the conversation still exists only when a
        wake-up brought nothing new (deletion wakes waiters too), not on every
        empty read.
        """
        if self.log.committed_seq(self.conversation_id) > cursor:
            return True
        with anyio.CancelScope() as scope:
            self._scope = scope
            if self._interrupted:
                scope.cancel()
            with anyio.move_on_after(self.settings.ping_interval) as timer:
                await self.log.wait(self.conversation_id, cursor)
        self._scope = None
        if self._interrupted:
            return True
        if timer.cancelled_caught:
            await self._send(sink.ping())
        elif self.log.committed_seq(self.conversation_id) <= cursor:
            return await self.log.get_conversation(self.conversation_id) is not None
        elif self.settings.linger > 0:
            await anyio.sleep(self.settings.linger)
        return True

    async def _send(self, pending: Awaitable[None], limit: float | None = None) -> bool:
        """Await one write; False if it stayed blocked past the limit."""
        with anyio.move_on_after(limit or self.settings.send_timeout):
            await pending
            return True
        pending_close = getattr(pending, "close", None)
        if pending_close is not None:
            pending_close()
        return False
