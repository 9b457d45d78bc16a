"""In-memory bookkeeping shared by the backends: seq counters, hot tail, wake-ups.

Live viewers read recent events from the hot tail instead of storage, and
wait on the conversation's tail. A commit wakes every waiting viewer once per
loop turn (not once per append): the appends of one turn, or of one lingering
window (see :class:`Waiter`), go out in one wake-up. Many waiters are woken a
slice at a time, one slice per loop turn, so the agent's own callbacks and
timers run between the slices instead of after the whole fan-out, and the
fan-outs of a conversation with many viewers are spaced by their size
(:data:`WAKE_SPACING`): with many viewers each write carries more events.

A waiter is one future of its own (a cancelled viewer cancels only its own
future), kept in a plain list: no per-waiter removal (an ``asyncio.Event``
with n waiters costs O(n) per waiter to wake, O(n²) per fan-out).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from contextvars import ContextVar
from dataclasses import dataclass, field

from steerline.log.base import StoredEvent

WAKE_SLICE = 8
"""Waiters woken per loop turn. Small, because whatever the agent awaits
between two tokens queues behind the turn's slice: with 1,000 viewers of a
100 events/s run the agent produced 52/s with slices of 64, 78/s with 16, 86/s
with 8 (issue 12)."""
WAKE_SPACING = 50e-6
"""Seconds per waiter between the starts of two fan-outs of a conversation.
With many viewers the fan-out (one socket write per viewer) is the costly part,
so fan-outs are spaced by what they cost (1,000 viewers: 50 ms apart) and each
write carries every event committed meanwhile; up to ``WAKE_SLICE`` viewers
are woken after the linger alone."""


class Waiter:
    """A viewer's handle on its waits (set in :data:`current_waiter`).

    ``linger``: how long the waiter accepts to be woken after a commit, so a
    burst of appends goes out in one read (the smallest linger among a
    conversation's waiters applies). :meth:`wake` ends its current (or next)
    wait early, without an event: for a heartbeat or a shutdown.
    """

    __slots__ = ("early", "future", "linger")

    def __init__(self, linger: float = 0.0) -> None:
        self.linger = linger
        self.early = False
        self.future: asyncio.Future[None] | None = None

    def wake(self) -> None:
        self.early = True
        future = self.future
        if future is not None and not future.done():
            future.set_result(None)


current_waiter: ContextVar[Waiter | None] = ContextVar("steerline_waiter", default=None)
"""The waiter of the viewer running in this context (None: wake on every commit)."""


@dataclass(slots=True)
class ConversationTail:
    assigned_seq: int = 0
    """The last seq handed out by ``append`` (committed or not)."""
    committed_seq: int = 0
    hot: deque[StoredEvent] = field(default_factory=deque)
    hot_limit: int = 4096
    """Backends must keep this at most their retention limit, or ``from_hot``
    could serve events storage no longer has."""
    hot_bytes_limit: int = 256 * 1024
    """The hot tail also holds at most this many envelope bytes (at least the
    newest event), so large events cannot pin megabytes per conversation."""
    hot_bytes: int = 0
    deleted: bool = False
    _waiters: list[asyncio.Future[None]] = field(default_factory=list)
    _prune_at: int = WAKE_SLICE
    _linger: float = math.inf
    """The smallest linger among the current waiters."""
    _loop: asyncio.AbstractEventLoop | None = None
    _wake_handle: asyncio.Handle | None = None
    _waking: list[asyncio.Future[None]] = field(default_factory=list)
    """The fan-out in progress (a slice per loop turn)."""
    _waking_at: int = 0
    _next_wake_at: float = 0.0
    _dirty: bool = False
    """A commit came while a fan-out was in progress."""
    _wakeups: int = 0
    """How many times :meth:`wake` ran: a wait it interrupted returns."""

    def next_seq(self) -> int:
        self.assigned_seq += 1
        return self.assigned_seq

    def committed(self, events: list[StoredEvent]) -> None:
        """Record newly durable events and wake the viewers waiting for them."""
        if not events:
            return
        if self.hot_limit > 0:
            hot = self.hot
            for event in events:
                hot.append(event)
                self.hot_bytes += len(event.envelope)
            while len(hot) > 1 and (
                len(hot) > self.hot_limit or self.hot_bytes > self.hot_bytes_limit
            ):
                self.hot_bytes -= len(hot.popleft().envelope)
        last = events[-1].seq
        if last > self.committed_seq:
            self.committed_seq = last
        if self._waiters and self._wake_handle is None:
            if self._waking:
                self._dirty = True  # the fan-out in progress schedules the next
            else:
                self._schedule_wake()

    def drop_through(self, seq: int) -> None:
        """Forget the cached events up to ``seq``: retention dropped them from
        storage, and memory must not serve what storage no longer has."""
        hot = self.hot
        while hot and hot[0].seq <= seq:
            self.hot_bytes -= len(hot.popleft().envelope)

    def drop_hot(self) -> None:
        """Forget the cached events (an evicted conversation); storage has them."""
        self.hot.clear()
        self.hot_bytes = 0

    def wake(self) -> None:
        """Wake every waiter now (deletion, outage); costs nothing when nobody
        waits (the common case for a conversation without live viewers).

        The waits end (:meth:`wait` returns even with nothing new): the
        caller then asks the store why (deleted, unavailable, closed)."""
        self._wakeups += 1
        if self._wake_handle is not None:
            self._wake_handle.cancel()
            self._wake_handle = None
        waiting = self._waking[self._waking_at :] + self._waiters
        self._waking, self._waking_at, self._waiters = [], 0, []
        self._prune_at, self._linger, self._dirty = WAKE_SLICE, math.inf, False
        for future in waiting:
            if not future.done():
                future.set_result(None)

    def from_hot(self, after: int, limit: int) -> list[StoredEvent] | None:
        """Events with seq > after from memory, or None if memory does not reach back."""
        hot = self.hot
        if after >= self.committed_seq:
            return []
        if not hot or hot[0].seq > after + 1:
            return None
        start = after + 1 - hot[0].seq
        return [hot[i] for i in range(start, min(len(hot), start + limit))]

    async def wait(self, after: int) -> None:
        """Return once ``committed_seq > after``, the conversation is deleted,
        :meth:`wake` ran, or the context's :class:`Waiter` was woken early."""
        waiter = current_waiter.get()
        wakeups = self._wakeups
        while self.committed_seq <= after and not self.deleted and self._wakeups == wakeups:
            if waiter is not None:
                if waiter.early:
                    waiter.early = False
                    return
                if waiter.linger < self._linger:
                    self._linger = waiter.linger
            elif self._linger > 0.0:
                self._linger = 0.0
            loop = self._loop = asyncio.get_running_loop()
            future: asyncio.Future[None] = loop.create_future()
            waiters = self._waiters
            waiters.append(future)
            if len(waiters) >= self._prune_at:
                self._prune()
            if waiter is None:
                await future
                continue
            waiter.future = future
            try:
                await future
            finally:
                waiter.future = None
            if waiter.early:
                waiter.early = False
                return

    # -- waking ------------------------------------------------------------------
    def _prune(self) -> None:
        """Drop the futures of cancelled waits (viewers that left while waiting)."""
        waiters = self._waiters = [f for f in self._waiters if not f.done()]
        self._prune_at = max(WAKE_SLICE, 2 * len(waiters))

    def _schedule_wake(self) -> None:
        loop = self._loop
        assert loop is not None  # set by the first wait
        delay = self._linger
        if self._next_wake_at:
            delay = max(delay, self._next_wake_at - loop.time())
        if delay > 0.0:
            self._wake_handle = loop.call_later(delay, self._wake_due)
        else:
            self._wake_handle = loop.call_soon(self._wake_due)

    def _wake_due(self) -> None:
        """Start a fan-out: the current waiters, a slice per loop turn."""
        self._wake_handle = None
        waiters = self._waiters
        if not waiters:
            return
        self._waiters = []
        self._prune_at, self._linger, self._dirty = WAKE_SLICE, math.inf, False
        loop = self._loop
        assert loop is not None
        if len(waiters) > WAKE_SLICE:
            self._next_wake_at = loop.time() + len(waiters) * WAKE_SPACING
        else:
            self._next_wake_at = 0.0
        self._waking, self._waking_at = waiters, 0
        self._wake_slice()

    def _wake_slice(self) -> None:
        waking = self._waking
        start = self._waking_at
        end = min(len(waking), start + WAKE_SLICE)
        for i in range(start, end):
            future = waking[i]
            if not future.done():
                future.set_result(None)
        if end < len(waking):
            self._waking_at = end
            assert self._loop is not None
            self._loop.call_soon(self._wake_slice)
            return
        self._waking, self._waking_at = [], 0
        if self._dirty:
            # commits during the fan-out: the next one, once spaced
            self._dirty = False
            if self._waiters and self._wake_handle is None:
                self._schedule_wake()
