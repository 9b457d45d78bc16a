"""``memory://``: the event log kept in process memory (tests, ephemeral use)."""

from __future__ import annotations

import dataclasses
from collections import deque

from steerline.log.base import (
    ConversationExistsError,
    ConversationRecord,
    EventLog,
    LogSettings,
    RetentionError,
    RetentionSweeper,
    StoredEvent,
    retention_tick,
    seal_envelope,
    time_bucket,
)
from steerline.log.tail import ConversationTail


class MemoryEventLog(EventLog):
    """Everything in dicts; an append is committed the moment it is made."""

    def __init__(self, settings: LogSettings | None = None) -> None:
        self.settings = settings or LogSettings()
        self._records: dict[str, ConversationRecord] = {}
        self._used_ids: set[str] = set()
        self._tails: dict[str, ConversationTail] = {}
        self._events: dict[str, deque[StoredEvent]] = {}
        self._state: dict[tuple[str, str], bytes] = {}
        self._items: dict[tuple[str, str], dict[str, bytes]] = {}
        self._times: dict[str, deque[list[float]]] = {}
        """Per conversation, ``[time, seq]`` pairs: every event up to ``seq``
        was appended at or before ``time`` (one pair per retention tick)."""
        self._tick = retention_tick(self.settings)
        self._sweeper = RetentionSweeper(self, self.settings)

    async def open(self) -> None:
        self._sweeper.start()

    async def close(self) -> None:
        await self._sweeper.stop()

    async def create_conversation(
        self, record: ConversationRecord, first_event: tuple[str, bytes] | None = None
    ) -> None:
        if record.id in self._used_ids:
            raise ConversationExistsError(f"conversation id {record.id!r} is already used")
        self._used_ids.add(record.id)
        self._records[record.id] = dataclasses.replace(record)
        self._tails[record.id] = ConversationTail(hot_limit=0)
        self._events[record.id] = deque()
        if first_event is not None:
            self.append(record.id, *first_event)

    async def get_conversation(self, conversation_id: str) -> ConversationRecord | None:
        record = self._records.get(conversation_id)
        return dataclasses.replace(record) if record is not None else None

    async def update_conversation(self, record: ConversationRecord) -> None:
        if record.id in self._records:
            self._records[record.id] = dataclasses.replace(record)

    async def list_conversations(
        self, tenant: str, *, limit: int = 50, offset: int = 0
    ) -> list[ConversationRecord]:
        mine = [r for r in self._records.values() if r.tenant == tenant]
        mine.sort(key=lambda r: (r.updated_at, r.id), reverse=True)
        return [dataclasses.replace(r) for r in mine[offset : offset + limit]]

    async def delete_conversation(self, conversation_id: str) -> bool:
        if self._records.pop(conversation_id, None) is None:
            return False
        self._events.pop(conversation_id, None)
        self._times.pop(conversation_id, None)
        tail = self._tails.pop(conversation_id, None)
        if tail is not None:
            tail.deleted = True
            tail.wake()
        for key in [k for k in self._state if k[0] == conversation_id]:
            del self._state[key]
        for item_key in [k for k in self._items if k[0] == conversation_id]:
            del self._items[item_key]
        return True

    async def running_conversations(self) -> list[ConversationRecord]:
        return [dataclasses.replace(r) for r in self._records.values() if r.status == "running"]

    def append(
        self,
        conversation_id: str,
        event: str,
        envelope_without_seq: bytes,
        run_id: str | None = None,
    ) -> int:
        tail = self._tails[conversation_id]
        seq = tail.next_seq()
        stored = StoredEvent(seq, event, seal_envelope(envelope_without_seq, seq), run_id)
        events = self._events[conversation_id]
        events.append(stored)
        retention = self.settings.retention_events
        if retention is not None:
            while len(events) > retention:
                events.popleft()
        if self.settings.retention_age is not None:
            # (only with an age: unlike the files, nothing here outlives a
            # restart, so no age set later could read times recorded now)
            self._stamp(conversation_id, seq)
            self._trim_by_age(conversation_id, self.clock() - self.settings.retention_age)
        tail.committed([stored])
        return seq

    def _stamp(self, conversation_id: str, seq: int) -> None:
        """Record that ``seq`` was appended by now (one pair per tick, as the
        durable stores do, so all three drop an event at the same moment)."""
        times = self._times.setdefault(conversation_id, deque())
        at = time_bucket(self.clock(), self._tick)
        if times and times[-1][0] >= at:
            times[-1][1] = seq
        else:
            times.append([at, seq])

    def _trim_by_age(self, conversation_id: str, cutoff: float) -> None:
        """Drop the events whose recorded time is at or before ``cutoff``."""
        times = self._times.get(conversation_id)
        cut = 0
        while times and times[0][0] <= cutoff:
            cut = int(times.popleft()[1])
        events = self._events.get(conversation_id)
        while events and events[0].seq <= cut:
            events.popleft()

    async def sweep_retention(self) -> None:
        age = self.settings.retention_age
        if age is None:
            return
        cutoff = self.clock() - age
        for conversation_id in list(self._times):
            self._trim_by_age(conversation_id, cutoff)

    async def flush(self) -> None:
        return None

    def committed_seq(self, conversation_id: str) -> int:
        tail = self._tails.get(conversation_id)
        return tail.committed_seq if tail is not None else 0

    async def read(self, conversation_id: str, after: int, limit: int = 1000) -> list[StoredEvent]:
        events = self._events.get(conversation_id)
        if not events:
            if after < self.committed_seq(conversation_id):
                raise RetentionError(f"events after {after} are no longer retained")
            return []
        first = events[0].seq
        if after + 1 < first:
            raise RetentionError(
                f"events after {after} are no longer retained; the oldest kept is {first}"
            )
        start = max(0, after + 1 - first)
        return [events[i] for i in range(start, min(len(events), start + limit))]

    async def oldest_seq(self, conversation_id: str) -> int:
        events = self._events.get(conversation_id)
        if events:
            return events[0].seq
        committed = self.committed_seq(conversation_id)
        return committed + 1 if committed else 0

    async def wait(self, conversation_id: str, after: int) -> None:
        tail = self._tails.get(conversation_id)
        if tail is not None:
            await tail.wait(after)

    def put_state(self, conversation_id: str, key: str, value: bytes) -> None:
        if conversation_id in self._records:
            self._state[(conversation_id, key)] = value

    async def get_state(self, conversation_id: str, key: str) -> bytes | None:
        return self._state.get((conversation_id, key))

    def put_item(self, conversation_id: str, collection: str, key: str, value: bytes) -> None:
        if conversation_id in self._records:
            self._items.setdefault((conversation_id, collection), {})[key] = value

    def delete_item(self, conversation_id: str, collection: str, key: str) -> None:
        items = self._items.get((conversation_id, collection))
        if items is not None:
            items.pop(key, None)

    async def get_items(self, conversation_id: str, collection: str) -> list[tuple[str, bytes]]:
        return list(self._items.get((conversation_id, collection), {}).items())

    async def get_item(self, conversation_id: str, collection: str, key: str) -> bytes | None:
        return self._items.get((conversation_id, collection), {}).get(key)
