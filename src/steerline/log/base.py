"""The event-log backend interface and the records it stores.

Design rules every backend keeps:

* ``append`` is synchronous and never blocks: it assigns the next ``seq``
  of the conversation at once (strictly increasing, never reused, even
  across deletes and restarts; provisional with a shared store, see
  ``append``) and queues the event for a batched commit.
  The agent therefore never waits on storage.
* An event becomes visible to ``read`` / ``wait`` only once it is durable
  (committed), so no client ever sees an event a crash could take back.
* Events are stored pre-encoded as the complete wire envelope
  ``{"event", "data", "seq"}``: transports send the bytes as they are.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import anyio
import msgspec

# Defined in steerline.core.errors; re-exported here, where they used to live.
from steerline.core.errors import ConversationExistsError as ConversationExistsError
from steerline.core.errors import RetentionError as RetentionError
from steerline.core.errors import StorageUnavailableError as StorageUnavailableError
from steerline.core.errors import StoreLockedError as StoreLockedError

ConversationStatus = Literal["idle", "running"]


class StoredEvent(msgspec.Struct, frozen=True, gc=False):
    """One committed event of a conversation's log.

    A msgspec ``Struct`` rather than a frozen dataclass: one is built per
    event appended and per event read back, and a frozen dataclass's
    ``__init__`` (``object.__setattr__`` per field) cost ~0.76 µs against
    ~0.08 µs here (benchmarks/README.md). ``gc=False``: it holds only ints,
    strings and bytes, so it can never be part of a reference cycle, and
    thousands of them in hot tails are no work for the collector.
    """

    seq: int
    event: str
    """The wire event name (``message_chunk``, ``done``, ...)."""
    envelope: bytes
    """The full JSON envelope, exactly as sent to clients."""
    run_id: str | None = None


@dataclass(slots=True)
class ConversationRecord:
    id: str
    tenant: str = "default"
    agent_name: str = "demo"
    status: ConversationStatus = "idle"
    active_run_id: str | None = None
    owner: str | None = None
    """The process that runs ``active_run_id`` (recovery ends runs whose owner is gone)."""
    steering_mode: str = "one-at-a-time"
    follow_up_mode: str = "one-at-a-time"
    steering_policy: str = "after_tool"
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class LogSettings:
    """Storage settings; every one has a tested default."""

    retention_events: int | None = None
    """Keep at most this many events per conversation (None: keep all)."""
    retention_age: float | None = None
    """Drop events committed more than this many seconds ago (None: keep all);
    combinable with ``retention_events`` (whichever drops more wins)."""
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    """sqlite durability: NORMAL survives a process crash, FULL power loss."""
    batch_size: int = 256
    """Most events committed in one transaction."""
    hot_tail: int = 4096
    """Recent committed events kept in memory per conversation for live readers."""
    hot_tail_bytes: int = 256 * 1024
    """... and at most this many bytes of them: a conversation of large events
    (64 KiB messages) must not pin megabytes; older events are read from storage."""
    retry_max_delay: float = 2.0
    """A failed commit is retried with backoff up to this many seconds apart."""
    close_timeout: float = 10.0
    """How long ``close`` keeps retrying a store that cannot write before it
    gives up (and reports what was not stored)."""


class EventLog(abc.ABC):
    """A store of conversations, their event logs and their runtime state.

    ``clock`` (seconds, ``time.time`` by default) is the time retention by
    age reads: tests replace it on the instance, so they never sleep.
    """

    clock: Callable[[], float] = staticmethod(time.time)

    async def sweep_retention(self) -> None:
        """Drop the events older than ``retention_age`` in every conversation.

        Appends trim their own conversation; this sweep (run every
        :func:`retention_tick` while the store is open) is what trims the
        conversations nobody writes to any more. A no-op without an age.
        """
        return None

    # -- lifecycle -------------------------------------------------------------
    def acquire(self) -> None:
        """Take exclusive ownership of the store for this process's lifetime.

        ``StoreLockedError`` if another process owns it. Idempotent; ``open``
        calls it too. A server calls it before anything else touches the store,
        so a second server on the same file changes nothing in it.
        """
        return None

    @property
    def available(self) -> bool:
        """Whether the store can write now (False during a storage outage)."""
        return True

    async def wait_availability_change(self) -> None:
        """Return when ``available`` changes (never, for a store that cannot fail)."""
        await anyio.sleep_forever()

    @abc.abstractmethod
    async def open(self) -> None:
        """Open storage; must be called in the event loop that will use the log."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Commit everything appended so far, then release storage."""

    # -- conversations ---------------------------------------------------------
    @abc.abstractmethod
    async def create_conversation(
        self, record: ConversationRecord, first_event: tuple[str, bytes] | None = None
    ) -> None:
        """Store a new conversation; ``ConversationExistsError`` if the id was ever used.

        ``first_event`` (name, envelope without seq) is stored as seq 1 in the
        same transaction: a conversation exists with its first event or not
        at all, whatever the moment of a crash.
        """

    @abc.abstractmethod
    async def get_conversation(self, conversation_id: str) -> ConversationRecord | None:
        """The conversation, or None if unknown or deleted."""

    @abc.abstractmethod
    async def update_conversation(self, record: ConversationRecord) -> None:
        """Persist changed fields of an existing conversation (ordered after prior appends)."""

    @abc.abstractmethod
    async def list_conversations(
        self, tenant: str, *, limit: int = 50, offset: int = 0
    ) -> list[ConversationRecord]:
        """A tenant's conversations, most recently updated first."""

    @abc.abstractmethod
    async def delete_conversation(self, conversation_id: str) -> bool:
        """Delete events and state; the id stays reserved. False if unknown."""

    @abc.abstractmethod
    async def running_conversations(self) -> list[ConversationRecord]:
        """Conversations whose status is ``running`` (for crash recovery)."""

    # -- events ----------------------------------------------------------------
    @abc.abstractmethod
    def append(
        self,
        conversation_id: str,
        event: str,
        envelope_without_seq: bytes,
        run_id: str | None = None,
    ) -> int:
        """Queue one event and return its ``seq`` at once (never blocks).

        With a shared store (``redis://``) the returned seq is provisional:
        another process may append a queued message first, and the event then
        commits a little later in the log (never earlier), so a stream started
        just before a returned seq misses nothing.

        ``envelope_without_seq`` is the encoded object ``{"event":…,"data":…}``;
        the backend stores :func:`seal_envelope` of it (``"seq"`` added last).
        The conversation must have been created or fetched through this log.
        """

    @abc.abstractmethod
    async def flush(self) -> None:
        """Return once everything appended before the call is committed."""

    @abc.abstractmethod
    def committed_seq(self, conversation_id: str) -> int:
        """The highest committed ``seq`` of the conversation (0 if none)."""

    @abc.abstractmethod
    async def read(self, conversation_id: str, after: int, limit: int = 1000) -> list[StoredEvent]:
        """Committed events with ``seq > after``, oldest first, at most ``limit``.

        Raises ``RetentionError`` if events after ``after`` were dropped by
        retention (a gap would follow).
        """

    @abc.abstractmethod
    async def oldest_seq(self, conversation_id: str) -> int:
        """The smallest retained ``seq``: reads start at ``oldest_seq - 1`` to
        replay "the retained log from its start". 0 when nothing was ever
        appended; ``committed_seq + 1`` when retention dropped every event
        (so a resume from any older seq is refused, never a silent gap)."""

    @abc.abstractmethod
    async def wait(self, conversation_id: str, after: int) -> None:
        """Return once ``committed_seq > after`` (or the conversation is deleted).

        It may also return with nothing new (the store recovered from an
        outage, a heartbeat is due): callers check ``committed_seq`` again.
        Raises ``StorageUnavailableError`` when the store cannot write (then
        or meanwhile): nothing new will come until it recovers, and a viewer
        should end with a resume hint rather than hang.
        """

    # -- runtime state ---------------------------------------------------------
    @abc.abstractmethod
    def put_state(self, conversation_id: str, key: str, value: bytes) -> None:
        """Queue a state blob (context, inbox) for commit, ordered with events."""

    @abc.abstractmethod
    async def get_state(self, conversation_id: str, key: str) -> bytes | None:
        """The last committed blob for ``key``."""

    # -- keyed items (incremental state) ---------------------------------------
    @abc.abstractmethod
    def put_item(self, conversation_id: str, collection: str, key: str, value: bytes) -> None:
        """Queue an insert or replace of one item, ordered with events.

        A replaced item keeps its place in the collection's insertion order.
        Items let state that changes one element at a time (queued messages,
        the dedup window) be written one element at a time, not re-encoded
        whole at every change.
        """

    @abc.abstractmethod
    def delete_item(self, conversation_id: str, collection: str, key: str) -> None:
        """Queue the removal of one item (no error if it does not exist)."""

    @abc.abstractmethod
    async def get_items(self, conversation_id: str, collection: str) -> list[tuple[str, bytes]]:
        """The committed items of a collection, in insertion order."""

    @abc.abstractmethod
    async def get_item(self, conversation_id: str, collection: str, key: str) -> bytes | None:
        """One committed item, or None."""

    def release(self, conversation_id: str) -> None:
        """Drop what is cached in memory for a conversation nobody is using
        (its hot tail); it is read from storage again when needed."""
        return None


def seal_envelope(envelope_without_seq: bytes, seq: int) -> bytes:
    """Add ``"seq": N`` to an encoded ``{"event":…,"data":…}`` object."""
    return b"".join((envelope_without_seq[:-1], b',"seq":', b"%d}" % seq))  # 0.3 µs, not 0.6


# -- retention by age ---------------------------------------------------------------

logger = logging.getLogger("steerline.log")

RETENTION_TICK_MAX = 60.0
"""The coarsest time step of retention by age (seconds)."""


def retention_tick(settings: LogSettings) -> float:
    """The time step of retention by age: its clock granularity and the
    period of the sweep, an eighth of the age (at most a minute).

    Commit times are recorded per step, not per event (one row per
    conversation per step, however many events it committed): the stores
    then keep an event at most one step longer than the age, never less,
    and the rows stay few. Without an age the step is the coarsest, so the
    times recorded meanwhile still serve an age set later.
    """
    age = settings.retention_age
    if age is None:
        return RETENTION_TICK_MAX
    return min(RETENTION_TICK_MAX, age / 8)


def time_bucket(now: float, tick: float) -> float:
    """The end of the step ``now`` falls in: a commit at ``now`` is recorded
    as made at this time, so it is dropped late (by < ``tick``), never early."""
    return math.ceil(now / tick) * tick


class RetentionSweeper:
    """Runs ``log.sweep_retention()`` every :func:`retention_tick` while the
    log is open (only with a ``retention_age``): what trims idle conversations."""

    def __init__(self, log: EventLog, settings: LogSettings) -> None:
        self.log = log
        self.period = retention_tick(settings)
        self.enabled = settings.retention_age is not None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._run(), name="steerline-retention-sweep")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        """A failed sweep (an outage) is only logged: the next one catches up."""
        while True:
            await asyncio.sleep(self.period)
            try:
                await self.log.sweep_retention()
            except Exception as exc:  # retried at the next tick
                logger.warning("retention sweep failed (retried in %.0f s): %s", self.period, exc)
