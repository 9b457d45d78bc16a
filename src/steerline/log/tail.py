"""In-memory bookkeeping shared by the backends: seq counters, hot tail, wake-ups.

Live viewers read recent events from the hot tail instead of storage, and
wait on one ``anyio.Event`` per conversation that is replaced at every
commit, so a commit wakes every waiting viewer with one ``set()``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import anyio

from steerline.log.base import StoredEvent


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
    _signal: anyio.Event | None = None

    def next_seq(self) -> int:
        self.assigned_seq += 1
        return self.assigned_seq

    def committed(self, events: list[StoredEvent]) -> None:
        """Record newly durable events and wake the viewers waiting for them."""
        if not events:
            return
        hot = self.hot
        for event in events:
            hot.append(event)
            self.hot_bytes += len(event.envelope)
        while hot and (len(hot) > self.hot_limit or self.hot_bytes > self.hot_bytes_limit):
            if len(hot) == 1 and self.hot_limit > 0:
                break
            self.hot_bytes -= len(hot.popleft().envelope)
        self.committed_seq = max(self.committed_seq, events[-1].seq)
        self.wake()

    def drop_hot(self) -> None:
        """Forget the cached events (an evicted conversation); storage has them."""
        self.hot.clear()
        self.hot_bytes = 0

    def wake(self) -> None:
        """Wake every waiter; costs nothing when nobody waits (the common case
        for a conversation without live viewers)."""
        signal, self._signal = self._signal, None
        if signal is not None:
            signal.set()

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
        while self.committed_seq <= after and not self.deleted:
            if self._signal is None:
                self._signal = anyio.Event()
            await self._signal.wait()
