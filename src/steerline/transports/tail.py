"""Reading the log for one viewer: replay, live tail, heartbeats, drop rules.

The viewer pulls from the log, so the agent never waits for it. A viewer that
falls more than ``max_lag_events`` behind, or whose socket stays blocked for
``send_timeout`` seconds, is ended with a resume hint: it loses nothing, the
log still has every event.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, Protocol

import anyio

from steerline.log.base import EventLog, RetentionError, StorageUnavailableError, StoredEvent
from steerline.log.tail import Waiter, current_waiter
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
    """Seconds a commit may wait before it wakes the viewers, so a burst of
    events goes out in one write instead of many (Nagle-like; 0 disables)."""

    @property
    def clock_period(self) -> float:
        """How often the streams' clock checks heartbeats and blocked writes."""
        return min(max(min(self.ping_interval, self.send_timeout) / 10, 0.005), 0.5)


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
    """The open streams of a process, so shutdown can end each with a hint.

    It also keeps the streams' one clock: a single timer for all of them
    (not a timeout per wait or per write) that wakes a stream idle for
    ``ping_interval`` to send its heartbeat, and cancels a write blocked for
    ``send_timeout`` (a client that stopped reading).
    """

    def __init__(self) -> None:
        self._tails: set[LogTail] = set()
        self.shutting_down = False
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._period = math.inf

    def add(self, tail: LogTail) -> None:
        self._tails.add(tail)
        period = tail.settings.clock_period
        loop = asyncio.get_running_loop()
        if self._timer is None or self._loop is not loop or period < self._period:
            if self._timer is not None:
                self._timer.cancel()
            self._loop = loop
            self._period = min(self._period, period)
            self._timer = loop.call_later(self._period, self._tick)

    def discard(self, tail: LogTail) -> None:
        self._tails.discard(tail)

    def __len__(self) -> int:
        return len(self._tails)

    def shutdown(self) -> None:
        self.shutting_down = True
        for tail in list(self._tails):
            tail.interrupt()

    def _tick(self) -> None:
        loop = self._loop
        assert loop is not None
        if not self._tails:
            self._timer = None
            self._period = math.inf
            return
        now = loop.time()
        for tail in self._tails:
            tail.check_clock(now)
        self._timer = loop.call_later(self._period, self._tick)


@dataclass(eq=False)
class LogTail:
    log: EventLog
    conversation_id: str
    plan: StreamPlan
    settings: StreamSettings = field(default_factory=StreamSettings)
    registry: StreamRegistry | None = None
    last_sent: int = 0
    _started: bool = False
    _interrupted: bool = False
    _scope: anyio.CancelScope | None = None
    _waiter: Waiter = field(default_factory=Waiter)
    _waiting: bool = False
    _ping_due: bool = False
    _send_since: float | None = None
    """When the write in progress began (None: not writing)."""
    _last_write: float = 0.0
    _time: Callable[[], float] = time.monotonic

    def interrupt(self) -> None:
        """End the stream at its next step (shutdown)."""
        self._interrupted = True
        self._waiter.wake()

    def check_clock(self, now: float) -> None:
        """The registry's clock: cancel a write blocked too long; wake an idle
        stream whose heartbeat is due."""
        since = self._send_since
        if since is not None:
            if now - since >= self.settings.send_timeout and self._scope is not None:
                self._scope.cancel()
        elif self._waiting and now - self._last_write >= self.settings.ping_interval:
            self._ping_due = True
            self._waiter.wake()

    async def run(self, sink: TailSink) -> EndReason:
        self.last_sent = self.plan.after
        self._started = self.plan.start_run_id is None
        registry = self.registry
        if registry is None:
            registry = StreamRegistry()  # a clock of its own
        elif registry.shutting_down:
            await sink.hint(self.last_sent)
            return EndReason.SHUTDOWN
        self._time = asyncio.get_running_loop().time
        self._last_write = self._time()
        self._waiter.linger = self.settings.linger
        token = current_waiter.set(self._waiter)
        registry.add(self)
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                return await self._run(sink)
            self._scope = None
            # the clock cancelled a write blocked past send_timeout
            self._send_since = None
            await self._drop(sink)
            return EndReason.SLOW
        finally:
            self._scope = None
            current_waiter.reset(token)
            registry.discard(self)

    async def _run(self, sink: TailSink) -> EndReason:
        plan = self.plan
        cursor = plan.after
        head_at_start = self.log.committed_seq(self.conversation_id)
        while True:
            if self._interrupted:
                await self._write(sink.hint(self.last_sent))
                return EndReason.SHUTDOWN
            if plan.stop == "caught_up" and cursor >= plan.until_seq:
                return EndReason.COMPLETE
            try:
                batch = await self.log.read(self.conversation_id, cursor, self.settings.batch_limit)
                if not batch:
                    if not await self._wait(cursor, sink):
                        return EndReason.DELETED
                    continue
            except RetentionError:
                # Retention dropped events this viewer had not read yet: end
                # with a hint rather than skip them (a resume then gets a
                # clear 409 instead of a silent gap).
                await self._send(sink.hint(self.last_sent), 1.0)
                return EndReason.SLOW
            except StorageUnavailableError:
                # The store cannot be read or written now (a read, the wait or
                # the existence check found it down): end with a hint; the
                # client resumes from it once the store recovers.
                await self._send(sink.hint(self.last_sent), 1.0)
                return EndReason.UNAVAILABLE
            cursor = batch[-1].seq
            selected, finished = self._select(batch)
            if selected:
                await self._write(sink.events(selected))
                self.last_sent = selected[-1].seq
            if finished:
                return EndReason.COMPLETE
            position = max(cursor, head_at_start)
            lag = self.log.committed_seq(self.conversation_id) - position
            if lag > self.settings.max_lag_events:
                await self._drop(sink)
                return EndReason.SLOW

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
        empty read. The registry's clock ends the wait early for a heartbeat.
        """
        log = self.log
        if log.committed_seq(self.conversation_id) > cursor:
            return True
        self._waiting = True
        try:
            await log.wait(self.conversation_id, cursor)
        finally:
            self._waiting = False
            self._waiter.early = False
        if self._interrupted:
            return True
        if log.committed_seq(self.conversation_id) > cursor:
            self._ping_due = False
            return True
        if self._ping_due:
            self._ping_due = False
            await self._write(sink.ping())
            return True
        return await log.get_conversation(self.conversation_id) is not None

    async def _write(self, pending: Awaitable[None]) -> None:
        """Await one write; the registry's clock cancels it past ``send_timeout``."""
        self._send_since = self._time()
        await pending
        self._send_since = None
        self._last_write = self._time()

    async def _send(self, pending: Awaitable[None], limit: float | None = None) -> bool:
        """Await one write outside the clock (the final hint); False if it
        stayed blocked past the limit."""
        with anyio.move_on_after(limit or self.settings.send_timeout):
            await pending
            return True
        pending_close = getattr(pending, "close", None)
        if pending_close is not None:
            pending_close()
        return False
