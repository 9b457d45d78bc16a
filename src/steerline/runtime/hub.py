"""Fan-out of native events to callbacks and async iterators.

Emission is synchronous and never waits: the agent must not be slowed by a
consumer. Each ``events()`` iterator buffers in its own deque; a consumer that
never reads grows its buffer, so long-lived consumers that may stall should
set ``max_buffer`` and handle :class:`EventStreamOverflow`.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from types import TracebackType

import anyio

from steerline.core.errors import SteerlineError
from steerline.core.events import AgentEvent

logger = logging.getLogger("steerline")

EventCallback = Callable[[AgentEvent], None]


class EventStreamOverflow(SteerlineError):
    """The consumer fell more than ``max_buffer`` events behind."""

    code = "event_stream_overflow"


class EventStream:
    """An async iterator over events emitted after its creation."""

    def __init__(self, hub: EventHub, max_buffer: int | None) -> None:
        self._hub = hub
        self._buffer: deque[AgentEvent] = deque()
        self._max_buffer = max_buffer
        self._wakeup: anyio.Event | None = None
        self._closed = False
        self._overflowed = False

    def push(self, event: AgentEvent) -> None:
        if self._max_buffer is not None and len(self._buffer) >= self._max_buffer:
            self._overflowed = True
            self._hub.remove_stream(self)
        else:
            self._buffer.append(event)
        if self._wakeup is not None:
            self._wakeup.set()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> AgentEvent:
        while not self._buffer:
            if self._overflowed:
                raise EventStreamOverflow("event consumer fell behind; events were dropped")
            if self._closed:
                raise StopAsyncIteration
            self._wakeup = anyio.Event()
            await self._wakeup.wait()
            self._wakeup = None
        return self._buffer.popleft()

    def close(self) -> None:
        self._closed = True
        self._hub.remove_stream(self)
        if self._wakeup is not None:
            self._wakeup.set()

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class EventHub:
    """Numbers events (``seq``) and hands them to every subscriber."""

    def __init__(self) -> None:
        self._callbacks: list[EventCallback] = []
        self._streams: list[EventStream] = []
        self._pending: deque[AgentEvent] = deque()
        self._emitting = False
        self.seq = 0

    def emit(self, event: AgentEvent) -> None:
        """Number ``event`` and deliver it to everyone.

        An event emitted by a subscriber (a callback that steers emits a
        ``queue_update``) is delivered after the current one, so every
        consumer still sees ``seq`` in order.
        """
        self.seq += 1
        event.seq = self.seq
        self._pending.append(event)
        if self._emitting:
            return
        self._emitting = True
        try:
            while self._pending:
                self._deliver(self._pending.popleft())
        finally:
            self._emitting = False

    def _deliver(self, event: AgentEvent) -> None:
        for callback in list(self._callbacks):
            try:
                callback(event)
            except Exception:
                logger.exception("event subscriber %r failed", callback)
        for stream in list(self._streams):
            stream.push(event)

    def subscribe(self, callback: EventCallback) -> Callable[[], None]:
        self._callbacks.append(callback)

        def unsubscribe() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return unsubscribe

    def stream(self, max_buffer: int | None = None) -> EventStream:
        stream = EventStream(self, max_buffer)
        self._streams.append(stream)
        return stream

    def remove_stream(self, stream: EventStream) -> None:
        if stream in self._streams:
            self._streams.remove(stream)
