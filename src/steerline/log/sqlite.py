"""``sqlite:///path``: the event log in one sqlite file (WAL, group commit).

Why it is built this way:

* A commit, not a row, is what costs: sqlite appends a frame to the WAL and
  (under ``FULL``) fsyncs per transaction. One dedicated writer thread owns
  the only write connection and commits *everything queued* in one
  transaction (group commit), which is 20-30x faster than one commit per
  event. sqlite allows a single writer anyway, so more writer threads would
  only contend on its lock.
* ``append`` must never make the agent wait on storage: it takes the next
  ``seq`` from the in-memory :class:`ConversationTail` and adds the event to
  a list on the loop side (no I/O, no lock).
* The writer is handed whole lists, not single events: the first append of
  a loop tick schedules a hand-over at the end of the tick, and while the
  writer is committing, everything appended meanwhile waits in the list and
  goes over in one ``queue.SimpleQueue.put`` when the commit is reported
  back (or as soon as the list holds ``batch_size`` items). A put wakes the
  writer thread, which then competes with the loop for the GIL: one wake per
  commit, not one per event. Commands (``flush``, conversation changes) are
  handed over at once, so an acknowledgement never waits for a batch window.
* An event reaches readers only once its transaction committed, so a crash
  never takes back an event a client saw: the writer hands each committed
  batch back to the event loop with ``loop.call_soon_threadsafe`` and only
  there does :meth:`ConversationTail.committed` make it visible to
  ``read`` / ``wait``.
* Conversation changes, deletes and state blobs travel through the same
  queue, so they are ordered with the events appended before them.
* Checkpoints (copying the WAL back into the database file, with an fsync
  of each) run on a checkpointer thread with its own connection, in
  ``PASSIVE`` mode, which never blocks the writer: under ``synchronous=NORMAL``
  a commit itself never fsyncs, and with sqlite's automatic checkpoint the
  commit that crossed 1000 WAL pages paid for two fsyncs (10-20 ms here) in
  the writer, in front of whatever acknowledgement waited for it. The
  writer's own automatic checkpoint stays as a safety net, at a threshold
  only a checkpointer that cannot keep up would reach.
* Reads run in worker threads on their own connections (WAL lets them run
  while the writer writes); live viewers are served from the hot tail in
  memory and never touch the file.
* A deleted conversation keeps a tombstone row (``deleted = 1``,
  ``last_seq``), so its id is never handed out again, even after a restart.
* One process owns the file (SPEC §4): :meth:`acquire` takes an OS-level
  lock (``flock`` on ``<path>.lock``) for the process lifetime, so a second
  server cannot run recovery on a live database or commit over it.
* A failed commit (disk full, I/O error) is not the end: the writer keeps
  the failed batch and retries it, with backoff, until it commits; the log
  reports itself unavailable meanwhile (new writes refused with 503 upstream,
  waiters of the failed attempt answered with ``StorageUnavailableError``,
  viewers woken to end with a resume hint), and everything queued is written,
  in order, once the store can write again. Nothing accepted is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import anyio
import anyio.to_thread

from steerline.core.errors import InvalidValueError, SteerlineError
from steerline.log.base import (
    ConversationExistsError,
    ConversationRecord,
    EventLog,
    LogSettings,
    RetentionError,
    RetentionSweeper,
    StorageUnavailableError,
    StoredEvent,
    StoreLockedError,
    retention_tick,
    seal_envelope,
    time_bucket,
)
from steerline.log.tail import ConversationTail

__all__ = ["SqliteEventLog", "StorageFailedError", "lock_path"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

_SCHEMA_VERSION = 3
"""3: ``event_times`` (retention by age). Files of version 2 migrate on open."""

RECORD_COLUMNS: tuple[str, ...] = (
    "id",
    "tenant",
    "agent_name",
    "status",
    "active_run_id",
    "owner",
    "steering_mode",
    "follow_up_mode",
    "steering_policy",
    "created_at",
    "updated_at",
)
"""The :class:`ConversationRecord` fields, in table column order."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    agent_name TEXT NOT NULL,
    status TEXT NOT NULL,
    active_run_id TEXT,
    owner TEXT,
    steering_mode TEXT NOT NULL,
    follow_up_mode TEXT NOT NULL,
    steering_policy TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS conversations_by_tenant
    ON conversations (tenant, updated_at DESC, id DESC) WHERE deleted = 0;
CREATE INDEX IF NOT EXISTS conversations_running
    ON conversations (status) WHERE deleted = 0;
CREATE TABLE IF NOT EXISTS events (
    conversation_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event TEXT NOT NULL,
    run_id TEXT,
    envelope BLOB NOT NULL,
    PRIMARY KEY (conversation_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state (
    conversation_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (conversation_id, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS items (
    conversation_id TEXT NOT NULL,
    collection TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    UNIQUE (conversation_id, collection, key)
);
CREATE TABLE IF NOT EXISTS event_times (
    conversation_id TEXT NOT NULL,
    at REAL NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, at)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS event_times_by_at ON event_times (at);
"""
# event_times: when events were committed, one row per conversation per
# retention tick (not a column per event: the events table and the replay
# read stay as they are, and a commit of 256 events writes one small row).
# A row (at, seq) says: every event up to seq was committed at or before at.

_STAMP_EXISTING = (
    "INSERT OR IGNORE INTO event_times (conversation_id, at, seq) "
    "SELECT id, {at!r}, last_seq FROM conversations WHERE deleted = 0 AND last_seq > 0;"
)
"""Migrating from version 2: the events already stored have no time; they
count as committed at the migration (dropped one age after it, not at once)."""
_STAMP = (
    "INSERT INTO event_times (conversation_id, at, seq) VALUES (?, ?, ?) "
    "ON CONFLICT (conversation_id, at) DO UPDATE SET seq = max(seq, excluded.seq)"
)
_AGED_CUT = "SELECT max(seq) FROM event_times WHERE conversation_id = ? AND at <= ?"
_AGED_ALL = (
    "SELECT conversation_id, max(seq) FROM event_times WHERE at <= ? GROUP BY conversation_id"
)

_COLUMN_LIST = ", ".join(RECORD_COLUMNS)
_INSERT_CONVERSATION = (
    f"INSERT INTO conversations ({_COLUMN_LIST}, last_seq, deleted) "
    f"VALUES ({', '.join('?' for _ in RECORD_COLUMNS)}, 0, 0) "
    "ON CONFLICT (id) DO NOTHING"
)
_UPDATE_CONVERSATION = (
    "UPDATE conversations SET "
    + ", ".join(f"{name} = ?" for name in RECORD_COLUMNS[1:])
    + " WHERE id = ? AND deleted = 0"
)
_SELECT_CONVERSATION = f"SELECT {_COLUMN_LIST}, last_seq FROM conversations"
_INSERT_EVENT = (
    "INSERT INTO events (conversation_id, seq, event, run_id, envelope) VALUES (?, ?, ?, ?, ?)"
)
# The WHERE clause both skips unknown / deleted conversations (as the memory
# backend does) and resolves the INSERT ... SELECT / ON CONFLICT parsing
# ambiguity that sqlite documents for upserts.
_PUT_STATE = (
    "INSERT INTO state (conversation_id, key, value) SELECT ?, ?, ? "
    "WHERE EXISTS (SELECT 1 FROM conversations WHERE id = ? AND deleted = 0) "
    "ON CONFLICT (conversation_id, key) DO UPDATE SET value = excluded.value"
)

# Items keep their rowid when replaced (upsert), so rowid order is insertion order.
_PUT_ITEM = (
    "INSERT INTO items (conversation_id, collection, key, value) SELECT ?, ?, ?, ? "
    "WHERE EXISTS (SELECT 1 FROM conversations WHERE id = ? AND deleted = 0) "
    "ON CONFLICT (conversation_id, collection, key) DO UPDATE SET value = excluded.value"
)
_DELETE_ITEM = "DELETE FROM items WHERE conversation_id = ? AND collection = ? AND key = ?"

_BUSY_TIMEOUT_MS = 5000
_CHECKPOINT_INTERVAL = 0.5
"""Seconds between background checkpoints (only when something was committed)."""
_WRITER_AUTOCHECKPOINT_PAGES = 16384
"""The writer checkpoints by itself only past this many WAL pages (64 MiB of
4 KiB pages): when the checkpointer cannot keep up (sqlite's default: 1000)."""
_READ_CONNECTIONS = 4
"""Concurrent reads; more would only queue on two cores and the GIL."""


StorageFailedError = StorageUnavailableError
"""Kept for compatibility: storage failures are ``StorageUnavailableError``."""


def lock_path(path: str) -> str:
    """The file whose ``flock`` says which process owns the database ``path``."""
    return f"{path}.lock"


# -- writer queue items ---------------------------------------------------------


class _Waiter:
    """Where the writer's answer to one command meets the coroutine awaiting it.

    Resolved on the event loop thread only (through ``call_soon_threadsafe``),
    after the transaction holding the command committed.
    """

    __slots__ = ("_done", "error", "result")

    def __init__(self) -> None:
        self._done = anyio.Event()
        self.result: object = None
        self.error: BaseException | None = None

    def resolve(self, result: object, error: BaseException | None) -> None:
        """First answer wins: a command answered "unavailable" by a failed
        attempt may still commit with a later retry of its batch."""
        if self._done.is_set():
            return
        self.result = result
        self.error = error
        self._done.set()

    async def wait(self) -> object:
        await self._done.wait()
        if self.error is not None:
            raise self.error
        return self.result


_CommandKind = Literal["create", "update", "delete", "flush", "stop", "sweep"]


@dataclass(slots=True)
class _Command:
    kind: _CommandKind
    waiter: _Waiter
    record: ConversationRecord | None = None
    conversation_id: str = ""
    first_event: StoredEvent | None = None
    """With ``create``: the conversation's seq-1 event, stored in the same transaction."""


@dataclass(slots=True)
class _StatePut:
    conversation_id: str
    key: str
    value: bytes


@dataclass(slots=True)
class _ItemPut:
    conversation_id: str
    collection: str
    key: str
    value: bytes | None
    """None deletes the item."""


_Op = tuple[str, StoredEvent] | _StatePut | _ItemPut | _Command
"""An event is a bare tuple: it is by far the most frequent item, keep it cheap."""

_Results = list[tuple[_Waiter, object]]


# -- helpers run in worker threads ------------------------------------------------


def _record_from_row(row: Sequence[Any]) -> ConversationRecord:
    values = dict(zip(RECORD_COLUMNS, row[: len(RECORD_COLUMNS)], strict=True))
    return ConversationRecord(**values)


def _record_values(record: ConversationRecord) -> tuple[Any, ...]:
    return tuple(getattr(record, name) for name in RECORD_COLUMNS)


_SELECT_EVENTS = (
    "SELECT seq, event, envelope, run_id FROM events "
    "WHERE conversation_id = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?"
)
_NO_UPPER = 2**63 - 1
_OLDEST = (
    "SELECT coalesce((SELECT min(seq) FROM events WHERE conversation_id = ?), "
    "(SELECT last_seq + 1 FROM conversations WHERE id = ? AND last_seq > 0 AND deleted = 0), 0)"
)


def _select_events(
    conn: sqlite3.Connection, conversation_id: str, after: int, upper: int | None, limit: int
) -> list[StoredEvent]:
    """Committed rows as events; built here, in the worker thread, in one pass."""
    cursor = conn.execute(
        _SELECT_EVENTS,
        (conversation_id, after, _NO_UPPER if upper is None else upper, limit),
    )
    return [StoredEvent(seq, name, envelope, run_id) for seq, name, envelope, run_id in cursor]


def _select_events_or_last(
    conn: sqlite3.Connection, conversation_id: str, after: int, upper: int | None, limit: int
) -> tuple[list[StoredEvent], int]:
    """The rows, and when there are none the last committed seq (``upper``, or
    the stored one for a conversation not loaded): no rows below it means
    retention dropped them all. The second query runs only on an empty read."""
    rows = _select_events(conn, conversation_id, after, upper, limit)
    if rows:
        return rows, 0
    if upper is not None:
        return rows, upper
    row = conn.execute(
        "SELECT last_seq FROM conversations WHERE id = ? AND deleted = 0", (conversation_id,)
    ).fetchone()
    return rows, int(row[0]) if row is not None else 0


@dataclass(slots=True)
class _ReadAhead:
    """Where the last file read of a conversation ended, and what it read beyond.

    A replay reads a long conversation a batch at a time, each batch from the
    file a hop to a worker thread and back. When a read continues exactly
    where the previous file read ended, the next file read asks for twice as
    many rows (up to ``_READ_AHEAD_MAX``, and only while the rows stay under
    ``_READ_AHEAD_BYTES``) and keeps what the caller did not ask for here,
    for the reads that follow: a 10,000-event replay costs a handful of hops,
    not twenty. Only committed rows are held (read under the committed
    bound), and only without retention (which could drop them meanwhile).
    """

    events: list[StoredEvent]
    """Read but not served yet: contiguous seqs."""
    end: int
    """The last seq the file read returned."""
    fetch: int
    """How many rows that file read asked for."""


_READ_AHEAD_MAX = 8192
_READ_AHEAD_BYTES = 4 * 1024 * 1024
_READ_AHEAD_CONVERSATIONS = 8
"""Conversations whose read-ahead is kept (the least recently read go first)."""


class SqliteEventLog(EventLog):
    """The durable event log of one process, kept in a sqlite file.

    ``commit_count`` counts the transactions the writer committed (tests and
    benchmarks use it to check that commits are grouped).
    """

    def __init__(self, path: str, settings: LogSettings | None = None) -> None:
        self.path = path
        self.settings = settings or LogSettings()
        if self.settings.synchronous not in ("NORMAL", "FULL"):
            raise InvalidValueError(
                f"synchronous must be NORMAL or FULL, not {self.settings.synchronous!r}"
            )
        if path == "" or path == ":memory:" or path.startswith("file::memory:"):
            # The writer and the readers use separate connections: an
            # in-memory database would be a different, empty one for each.
            raise InvalidValueError("the sqlite event log needs a file path; use memory:// instead")
        self.commit_count = 0
        self.checkpoint_count = 0
        """Background checkpoints run (tests)."""
        self._checkpointer: threading.Thread | None = None
        self._checkpoint_stop = threading.Event()
        self._tails: dict[str, ConversationTail] = {}
        self._queue: queue.SimpleQueue[list[_Op]] = queue.SimpleQueue()
        self._pending: list[_Op] = []
        """Loop side: queued for the writer, not handed over yet (in order)."""
        self._writer_busy = False
        """Loop side: a list was handed over and its commit not reported yet."""
        self._hand_over_at = max(1, self.settings.batch_size)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._accepting = False
        self._closed = False
        self._failure: BaseException | None = None
        """Set when the writer gave up for good (a crash, or ``close`` timing out)."""
        self._outage: BaseException | None = None
        """Loop side: the last commit error while the store cannot write, else None."""
        self._abandon = False
        """Set by ``close`` when its timeout passed: the writer stops retrying."""
        self._changed: anyio.Event | None = None
        """Set (and replaced) when availability changes or the log stops: wakes waiters."""
        self._stopped: anyio.Event | None = None
        """Set when no commit will ever come again (close or a crash)."""
        self._lock_fd: int | None = None
        self._inflight: list[_Op] = []
        """Writer thread: the batch being committed (answered if the writer dies)."""
        self._deleted_by_writer: set[str] = set()
        """Writer-thread only: ids deleted since open, whose late items it drops."""
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._readers_closed = False
        self._read_limiter: anyio.CapacityLimiter | None = None
        self._ahead: dict[str, _ReadAhead] = {}
        """Loop side: per conversation, where its last file read ended (see _ReadAhead)."""
        self._tick = retention_tick(self.settings)
        self._sweeper = RetentionSweeper(self, self.settings)

    # -- lifecycle -------------------------------------------------------------
    def acquire(self) -> None:
        """Lock ``<path>.lock`` for this process (``StoreLockedError`` if taken).

        ``flock`` locks belong to the open file and vanish with the process,
        so a crashed server never leaves a stale lock behind. A separate file,
        not the database itself, keeps clear of sqlite's own POSIX locks.
        """
        if self._lock_fd is not None:
            return
        path = lock_path(self.path)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageUnavailableError(f"cannot open lock file {path!r}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StoreLockedError(
                f"{self.path!r} is in use by another steerline process (lock {path!r}); "
                "stop it or use another store"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def available(self) -> bool:
        return self._outage is None and self._failure is None and not self._closed

    async def wait_availability_change(self) -> None:
        if self._changed is None:
            raise SteerlineError("the sqlite event log is not open; await open() first")
        await self._changed.wait()

    async def open(self) -> None:
        """Start the writer thread; it creates the file and schema if needed."""
        if self._closed:
            raise SteerlineError("the sqlite event log was closed; open a new instance")
        if self._thread is not None:
            raise SteerlineError("the sqlite event log is already open")
        self.acquire()
        self._loop = asyncio.get_running_loop()
        self._stopped = anyio.Event()
        self._changed = anyio.Event()
        self._read_limiter = anyio.CapacityLimiter(_READ_CONNECTIONS)
        ready = _Waiter()
        thread = threading.Thread(
            target=self._writer_main,
            args=(ready,),
            name=f"steerline-sqlite-writer:{self.path}",
            daemon=True,  # a process that exits without close() must not hang on it
        )
        self._thread = thread
        thread.start()
        try:
            await ready.wait()
        except Exception as exc:
            await anyio.to_thread.run_sync(thread.join)
            self._thread = None
            self._release_lock()
            raise StorageUnavailableError(
                f"cannot open sqlite event log {self.path!r}: {exc}"
            ) from exc
        self._checkpointer = threading.Thread(
            target=self._checkpointer_main,
            name=f"steerline-sqlite-checkpointer:{self.path}",
            daemon=True,
        )
        self._checkpointer.start()
        self._accepting = True
        self._sweeper.start()

    async def close(self) -> None:
        """Commit everything queued, stop the writer and close every connection.

        A store that cannot write is retried for ``close_timeout`` seconds;
        after that :class:`StorageUnavailableError` says (after releasing
        everything) that what was still queued was not stored.
        """
        if self._thread is None or self._closed:
            return
        await self._sweeper.stop()
        self._accepting = False
        thread = self._thread
        stopped = self._stopped
        assert stopped is not None
        with anyio.CancelScope(shield=True):
            # The writer commits everything before the stop command, then
            # exits; a store that cannot write gets close_timeout to recover.
            self._pending.append(_Command("stop", _Waiter()))
            self._hand_over()
            await anyio.to_thread.run_sync(thread.join, self.settings.close_timeout)
            if thread.is_alive():
                self._abandon = True
                if self._failure is None:
                    self._failure = self._outage or StorageUnavailableError("close timed out")
                await anyio.to_thread.run_sync(thread.join)
            self._checkpoint_stop.set()
            if self._checkpointer is not None:
                await anyio.to_thread.run_sync(self._checkpointer.join)
            await anyio.to_thread.run_sync(self._close_readers)
        self._closed = True
        self._release_lock()
        stopped.set()
        self._signal_change()
        self._raise_if_failed()

    # -- conversations ---------------------------------------------------------
    async def create_conversation(
        self, record: ConversationRecord, first_event: tuple[str, bytes] | None = None
    ) -> None:
        self._check_writable()
        if record.id in self._tails:
            raise ConversationExistsError(f"conversation id {record.id!r} is already used")
        first = None
        if first_event is not None:
            name, envelope = first_event
            first = StoredEvent(1, name, seal_envelope(envelope, 1))
        created = await self._command(
            _Command("create", _Waiter(), record=record, first_event=first)
        )
        if not created:
            raise ConversationExistsError(f"conversation id {record.id!r} is already used")
        tail = self._tails.setdefault(record.id, self._new_tail(0))
        if first is not None and tail.assigned_seq == 0:
            tail.assigned_seq = 1
            tail.committed([first])

    async def get_conversation(self, conversation_id: str) -> ConversationRecord | None:
        """Read the record, and load the conversation's seq counter if needed.

        Loading here is what allows ``append`` after a restart: the counter
        continues from ``last_seq``, which outlives retention and deletes.
        """
        row = await self._query(
            lambda conn: conn.execute(
                f"{_SELECT_CONVERSATION} WHERE id = ? AND deleted = 0", (conversation_id,)
            ).fetchone()
        )
        if row is None:
            return None
        if conversation_id not in self._tails:
            # No tail means nothing of this conversation is queued, so the
            # stored last_seq is also the committed one.
            self._tails[conversation_id] = self._new_tail(int(row[-1]))
        return _record_from_row(row)

    async def update_conversation(self, record: ConversationRecord) -> None:
        self._check_writable()
        await self._command(_Command("update", _Waiter(), record=record))

    async def list_conversations(
        self, tenant: str, *, limit: int = 50, offset: int = 0
    ) -> list[ConversationRecord]:
        rows = await self._query(
            lambda conn: conn.execute(
                f"{_SELECT_CONVERSATION} WHERE tenant = ? AND deleted = 0 "
                "ORDER BY updated_at DESC, id DESC LIMIT ? OFFSET ?",
                (tenant, max(limit, 0), max(offset, 0)),
            ).fetchall()
        )
        return [_record_from_row(row) for row in rows]

    async def delete_conversation(self, conversation_id: str) -> bool:
        """Drop events, state and items, keep the tombstone; appends stop at once."""
        self._check_writable()
        self._forget_tail(conversation_id)
        existed = await self._command(
            _Command("delete", _Waiter(), conversation_id=conversation_id)
        )
        # A get_conversation that raced with the delete may have loaded a
        # tail meanwhile; the writer drops whatever was appended to it.
        self._forget_tail(conversation_id)
        return bool(existed)

    async def running_conversations(self) -> list[ConversationRecord]:
        rows = await self._query(
            lambda conn: conn.execute(
                f"{_SELECT_CONVERSATION} WHERE status = 'running' AND deleted = 0 "
                "ORDER BY created_at, id"
            ).fetchall()
        )
        return [_record_from_row(row) for row in rows]

    # -- events ----------------------------------------------------------------
    def append(
        self,
        conversation_id: str,
        event: str,
        envelope_without_seq: bytes,
        run_id: str | None = None,
    ) -> int:
        if not self._accepting:
            self._check_writable()
        try:
            tail = self._tails[conversation_id]
        except KeyError:
            raise KeyError(
                f"conversation {conversation_id!r} was not created or fetched through this log,"
                " or was deleted"
            ) from None
        seq = tail.next_seq()
        stored = StoredEvent(seq, event, seal_envelope(envelope_without_seq, seq), run_id)
        self._enqueue((conversation_id, stored))
        return seq

    async def flush(self) -> None:
        """Wait for the commit of everything appended so far.

        ``StorageUnavailableError`` during an outage: what was appended stays
        queued and is written once the store recovers, but it is not durable now.
        """
        self._check_writable()
        await self._command(_Command("flush", _Waiter()))

    def committed_seq(self, conversation_id: str) -> int:
        tail = self._tails.get(conversation_id)
        return tail.committed_seq if tail is not None else 0

    async def read(self, conversation_id: str, after: int, limit: int = 1000) -> list[StoredEvent]:
        tail = self._tails.get(conversation_id)
        upper: int | None = None
        if tail is not None:
            hot = tail.from_hot(after, limit)
            if hot is not None:
                return hot
            # Rows the writer committed but the loop has not been told about
            # yet stay invisible, so read agrees with committed_seq and wait.
            upper = tail.committed_seq
        ahead = self._ahead.get(conversation_id)
        fetch = limit
        if ahead is not None and limit > 0:
            events = ahead.events
            if events and events[0].seq <= after + 1 <= events[-1].seq:
                start = after + 1 - events[0].seq
                served = events[start : start + limit]
                ahead.events = events[start + limit :]
                return served
            if after == ahead.end:  # a reader going on where the file read ended
                fetch = max(limit, min(ahead.fetch * 2, _READ_AHEAD_MAX))
        # At least one row even for limit <= 0, so the retention check below
        # still runs (the memory backend checks before slicing too).
        rows, last = await self._query(
            lambda conn: _select_events_or_last(conn, conversation_id, after, upper, max(fetch, 1))
        )
        if rows and rows[0].seq > after + 1:
            # seqs are contiguous, so a gap can only be events trimmed by retention.
            raise RetentionError(
                f"events after {after} are no longer retained; the oldest kept is {rows[0].seq}"
            )
        if not rows and after < last:
            # committed events after ``after`` and none left: all were trimmed
            raise RetentionError(f"events after {after} are no longer retained")
        if limit <= 0:
            return []
        if rows and self.settings.retention_events is None and not self._ages:
            self._remember_read(conversation_id, rows, limit, fetch)
        return rows[:limit] if len(rows) > limit else rows

    def _remember_read(
        self, conversation_id: str, rows: list[StoredEvent], limit: int, fetch: int
    ) -> None:
        ahead = self._ahead.pop(conversation_id, None)
        if ahead is None and len(self._ahead) >= _READ_AHEAD_CONVERSATIONS:
            self._ahead.pop(next(iter(self._ahead)))
        if len(rows) > limit and sum(len(e.envelope) for e in rows) > _READ_AHEAD_BYTES:
            # Large events: keep nothing, and read no further ahead next time.
            self._ahead[conversation_id] = _ReadAhead([], rows[limit - 1].seq, limit)
        else:
            self._ahead[conversation_id] = _ReadAhead(rows[limit:], rows[-1].seq, fetch)

    async def oldest_seq(self, conversation_id: str) -> int:
        row = await self._query(
            lambda conn: conn.execute(_OLDEST, (conversation_id, conversation_id)).fetchone()
        )
        return int(row[0]) if row is not None and row[0] is not None else 0

    async def sweep_retention(self) -> None:
        """Trim every conversation by age, in one writer transaction."""
        if not self._ages:
            return
        self._check_writable()
        await self._command(_Command("sweep", _Waiter()))

    @property
    def _ages(self) -> bool:
        return self.settings.retention_age is not None

    async def wait(self, conversation_id: str, after: int) -> None:
        """Wait on the hot tail; raise rather than hang when commits stop.

        :class:`StorageUnavailableError` while the store cannot write (or if
        the writer gave up), ``SteerlineError`` if the log was closed
        meanwhile: either way no commit will wake it for now.

        A conversation not loaded yet (a viewer after a restart) is loaded
        first, so waiting on it works without a prior ``get_conversation``.
        """
        tail = self._tails.get(conversation_id)
        if tail is None:
            if await self.get_conversation(conversation_id) is None:
                return
            tail = self._tails.get(conversation_id)
            if tail is None:
                return
        if tail.committed_seq > after or tail.deleted:
            return
        self._check_waitable()
        # an outage or close() wakes every tail (_signal_change): no task per wait
        await tail.wait(after)
        if tail.committed_seq <= after and not tail.deleted:
            self._check_waitable()

    # -- runtime state ---------------------------------------------------------
    def put_state(self, conversation_id: str, key: str, value: bytes) -> None:
        if not self._accepting:
            self._check_writable()
        self._enqueue(_StatePut(conversation_id, key, value))

    def put_item(self, conversation_id: str, collection: str, key: str, value: bytes) -> None:
        if not self._accepting:
            self._check_writable()
        self._enqueue(_ItemPut(conversation_id, collection, key, value))

    def delete_item(self, conversation_id: str, collection: str, key: str) -> None:
        if not self._accepting:
            self._check_writable()
        self._enqueue(_ItemPut(conversation_id, collection, key, None))

    async def get_items(self, conversation_id: str, collection: str) -> list[tuple[str, bytes]]:
        rows = await self._query(
            lambda conn: conn.execute(
                "SELECT key, value FROM items WHERE conversation_id = ? AND collection = ? "
                "ORDER BY rowid",
                (conversation_id, collection),
            ).fetchall()
        )
        return [(str(key), bytes(value)) for key, value in rows]

    async def get_item(self, conversation_id: str, collection: str, key: str) -> bytes | None:
        row = await self._query(
            lambda conn: conn.execute(
                "SELECT value FROM items WHERE conversation_id = ? AND collection = ? AND key = ?",
                (conversation_id, collection, key),
            ).fetchone()
        )
        return bytes(row[0]) if row is not None else None

    def release(self, conversation_id: str) -> None:
        self._ahead.pop(conversation_id, None)
        tail = self._tails.get(conversation_id)
        if tail is not None:
            tail.drop_hot()

    async def get_state(self, conversation_id: str, key: str) -> bytes | None:
        row = await self._query(
            lambda conn: conn.execute(
                "SELECT value FROM state WHERE conversation_id = ? AND key = ?",
                (conversation_id, key),
            ).fetchone()
        )
        return bytes(row[0]) if row is not None else None

    # -- loop-side helpers -----------------------------------------------------
    def _new_tail(self, last_seq: int) -> ConversationTail:
        # The hot tail must never reach back further than retention does,
        # otherwise it would serve events the file no longer has and read()
        # would disagree with itself about RetentionError.
        # (Retention by age drops events from it as it drops them from the file.)
        hot_limit = self.settings.hot_tail
        if self.settings.retention_events is not None:
            hot_limit = min(hot_limit, self.settings.retention_events)
        return ConversationTail(
            assigned_seq=last_seq,
            committed_seq=last_seq,
            hot_limit=max(hot_limit, 0),
            hot_bytes_limit=max(self.settings.hot_tail_bytes, 0),
        )

    def _forget_tail(self, conversation_id: str) -> None:
        self._ahead.pop(conversation_id, None)
        tail = self._tails.pop(conversation_id, None)
        if tail is not None:
            tail.deleted = True
            tail.wake()

    def _failure_error(self) -> StorageUnavailableError:
        error = StorageUnavailableError(
            f"the sqlite event log {self.path!r} stopped writing ({self._failure!r}); "
            "events and state queued since the last successful commit were not stored"
        )
        error.__cause__ = self._failure
        return error

    def _outage_error(self) -> StorageUnavailableError:
        error = StorageUnavailableError(
            f"the store cannot write right now ({self._outage}); it retries by itself"
        )
        error.__cause__ = self._outage
        return error

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise self._failure_error()

    def _check_waitable(self) -> None:
        self._raise_if_failed()
        if self._closed:
            raise SteerlineError("the sqlite event log is closed")
        if self._outage is not None:
            raise self._outage_error()

    def _check_writable(self) -> None:
        self._raise_if_failed()
        if self._closed:
            raise SteerlineError("the sqlite event log is closed")
        if not self._accepting:
            raise SteerlineError("the sqlite event log is not open; await open() first")

    def _signal_change(self) -> None:
        """Wake every waiter: availability changed, or the log stopped."""
        changed, self._changed = self._changed, anyio.Event()
        if changed is not None:
            changed.set()
        for tail in self._tails.values():
            tail.wake()

    async def _command(self, command: _Command) -> object:
        """Queue ``command`` and wait for the transaction that holds it.

        During an outage the answer is ``StorageUnavailableError`` at once:
        an update or delete still stays queued (it is applied, in order,
        when the store recovers), a create or flush is not queued at all.
        """
        if self._outage is not None:
            if command.kind not in ("create", "flush"):
                self._pending.append(command)
                self._hand_over()
            raise self._outage_error()
        self._pending.append(command)
        self._hand_over()  # now: the answer must not wait for a batch window
        return await command.waiter.wait()

    def _enqueue(self, op: _Op) -> None:
        """Queue ``op`` for the writer; it is handed over at the end of this
        loop tick, or when the writer reports its current commit."""
        pending = self._pending
        pending.append(op)
        if len(pending) == 1:
            if not self._writer_busy:
                assert self._loop is not None
                self._loop.call_soon(self._hand_over)
        elif len(pending) >= self._hand_over_at:
            self._hand_over()  # enough for a full batch: no need to wait

    def _hand_over(self) -> None:
        """Give the writer everything queued on the loop side, in one put."""
        pending = self._pending
        if pending:
            self._pending = []
            self._writer_busy = True
            self._queue.put(pending)

    async def _query(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        if self._read_limiter is None:
            raise SteerlineError("the sqlite event log is not open; await open() first")
        return await anyio.to_thread.run_sync(self._with_reader, fn, limiter=self._read_limiter)

    def _on_committed(
        self, events: dict[str, list[StoredEvent]], results: _Results, trimmed: dict[str, int]
    ) -> None:
        """Loop side of a commit: make the events visible, then answer commands.

        Events first, so a ``flush`` returns with ``committed_seq`` up to date;
        what retention by age dropped leaves the hot tails first.
        """
        self._writer_busy = False
        if self._pending:
            self._hand_over()  # what was appended while that commit ran
        if self._outage is not None:
            logger.warning("sqlite event log %r: the store writes again", self.path)
            self._outage = None
            self._signal_change()
        for conversation_id, cut in trimmed.items():
            tail = self._tails.get(conversation_id)
            if tail is not None:
                tail.drop_through(cut)
        for conversation_id, batch in events.items():
            tail = self._tails.get(conversation_id)
            if tail is not None:
                tail.committed(batch)
        for waiter, result in results:
            waiter.resolve(result, None)

    def _on_failed(self, waiters: list[_Waiter]) -> None:
        """The writer is gone for good (crash): answer everything, wake everyone."""
        error = self._failure_error()
        if self._stopped is not None:
            self._stopped.set()
        self._signal_change()
        # Commands queued after the writer drained its queue would wait forever:
        # the writer is gone. From here on _check_writable refuses new ones.
        waiters += self._drain_commands()
        for waiter in waiters:
            waiter.resolve(None, error)

    def _drain_commands(self) -> list[_Waiter]:
        """Empty the queue (the writer is gone); the waiters of its commands.

        Called from the writer thread when it dies, and again on the loop
        (which also empties what it had not handed over yet).
        """
        waiters: list[_Waiter] = []
        if threading.current_thread() is not self._thread:
            pending, self._pending = self._pending, []
            waiters += _waiters(pending)
        while True:
            try:
                items = self._queue.get_nowait()
            except queue.Empty:
                return waiters
            waiters += _waiters(items)

    def _on_attempt_failed(self, exc: BaseException, waiters: list[_Waiter]) -> None:
        """A commit attempt failed; the writer retries it. Tell whoever waits."""
        self._writer_busy = False
        if self._pending:
            self._hand_over()  # the writer retries with whatever arrived meanwhile
        if self._outage is None:
            self._outage = exc
            self._signal_change()
        error = self._outage_error()
        for waiter in waiters:
            waiter.resolve(None, error)

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        """Run ``callback(*args)`` on the event loop (from the writer thread)."""
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            # The loop was closed without close(): nobody is left to notify.
            logger.warning("event loop closed; sqlite event log notification dropped")

    # -- read connections (worker threads) -------------------------------------
    def _with_reader(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn`` on a pooled read connection (one thread at a time each)."""
        with self._readers_lock:
            if self._readers_closed:
                raise SteerlineError("the sqlite event log is closed")
            conn = self._readers.pop() if self._readers else None
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA query_only = 1")
        try:
            return fn(conn)
        finally:
            with self._readers_lock:
                if self._readers_closed:
                    conn.close()
                else:
                    self._readers.append(conn)

    def _close_readers(self) -> None:
        with self._readers_lock:
            self._readers_closed = True
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()

    # -- the writer thread -----------------------------------------------------
    def _connect_writer(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise SteerlineError(f"cannot switch {self.path!r} to WAL (journal_mode={mode})")
            conn.execute(f"PRAGMA synchronous = {self.settings.synchronous}")
            conn.execute(f"PRAGMA wal_autocheckpoint = {_WRITER_AUTOCHECKPOINT_PAGES}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                raise SteerlineError(
                    f"{self.path!r} has schema version {version}, newer than this steerline"
                )
            conn.executescript(self._schema_script(version))
        except BaseException:
            conn.close()
            raise
        return conn

    def _schema_script(self, version: int) -> str:
        """Create what is missing and migrate, in one transaction: a crash
        mid-way leaves the file at its old version, migrated again next open."""
        migrate = ""
        if 0 < version < 3:
            migrate = _STAMP_EXISTING.format(at=time_bucket(self.clock(), self._tick))
        return f"BEGIN;\n{_SCHEMA}{migrate}\nPRAGMA user_version = {_SCHEMA_VERSION};\nCOMMIT;"

    def _checkpointer_main(self) -> None:
        """Every ``_CHECKPOINT_INTERVAL`` with commits since the last one: a
        ``PASSIVE`` checkpoint, which copies what it can without waiting for
        (or blocking) the writer or readers; a later one copies the rest.
        Errors are logged, never fatal: the writer's own safety net remains."""
        stop = self._checkpoint_stop
        seen = self.commit_count
        conn: sqlite3.Connection | None = None
        failed = False
        while not stop.wait(_CHECKPOINT_INTERVAL):
            if self.commit_count == seen:
                continue
            seen = self.commit_count
            try:
                if conn is None:
                    conn = sqlite3.connect(self.path, isolation_level=None)
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:
                if not failed:
                    logger.warning("sqlite event log %r: checkpoint failed: %s", self.path, exc)
                failed = True
                continue
            failed = False
            self.checkpoint_count += 1
        if conn is not None:
            conn.close()

    def _writer_main(self, ready: _Waiter) -> None:
        try:
            conn = self._connect_writer()
        except Exception as exc:
            self._post(ready.resolve, None, exc)
            return
        self._post(ready.resolve, None, None)
        try:
            self._writer_loop(conn)
        except BaseException as exc:
            # A bug outside the per-batch handling, or close() giving up on a
            # store that cannot write: fail loudly and answer every queued
            # command instead of leaving them hanging.
            if self._abandon:
                logger.error("sqlite event log %r: closed while it could not write", self.path)
            else:
                logger.exception("sqlite event log %r: writer thread crashed", self.path)
            self._failure = exc
            self._post(self._on_failed, _waiters(self._inflight) + self._drain_commands())
        finally:
            conn.close()

    def _writer_loop(self, conn: sqlite3.Connection) -> None:
        """Take whatever was handed over (bounded by ``batch_size``), commit it as one.

        Blocking for the first list then draining without blocking is what
        groups commits: while one transaction is being written, the loop
        keeps appending, and all of that goes into the next one.

        A batch that fails to commit is kept and retried (with whatever
        arrived meanwhile, up to the batch limit) after a growing pause, so
        a full disk that is freed again loses nothing and keeps the order.
        """
        limit = max(1, self.settings.batch_size)
        get, get_nowait = self._queue.get, self._queue.get_nowait
        received: list[_Op] = []
        """Handed over and not committed yet, in order; batches are its prefixes."""
        delay = 0.0
        failing = False
        while True:
            if not received:
                received = get()
            while len(received) < limit:
                try:
                    received += get_nowait()
                except queue.Empty:
                    break
            batch = received[:limit] if len(received) > limit else received
            # close() hands the stop over last, after everything else
            last = batch[-1]
            stopping = isinstance(last, _Command) and last.kind == "stop"
            self._inflight = received
            try:
                events, results, trimmed = self._commit_batch(conn, batch)
            except Exception as exc:  # the batch is not stored: keep it, retry
                try:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                except sqlite3.Error:
                    logger.exception("sqlite event log %r: rollback failed", self.path)
                if not failing:
                    logger.error(
                        "sqlite event log %r: commit failed (%s); writes are held and "
                        "retried until the store can write again",
                        self.path,
                        exc,
                    )
                failing = True
                self._post(self._on_attempt_failed, exc, _waiters(batch))
                if self._abandon:
                    raise
                delay = min(max(delay * 2, 0.05), self.settings.retry_max_delay)
                time.sleep(delay)  # the writer thread's own pause; the loop runs on
                if self._abandon:
                    raise
                continue
            failing = False
            delay = 0.0
            received = received[len(batch) :] if batch is not received else []
            self._post(self._on_committed, events, results, trimmed)
            if stopping:
                return

    def _commit_batch(
        self, conn: sqlite3.Connection, batch: list[_Op]
    ) -> tuple[dict[str, list[StoredEvent]], _Results, dict[str, int]]:
        """Write one batch in one transaction; return what the loop must learn
        (the events committed, the commands' answers, the seqs trimmed by age)."""
        events: dict[str, list[StoredEvent]] = {}
        trimmed: dict[str, int] = {}
        last_seq: dict[str, int] = {}
        results: _Results = []
        rows: list[tuple[str, int, str, str | None, bytes]] = []
        deleted = self._deleted_by_writer
        in_transaction = False
        sweep = False

        for item in batch:
            if isinstance(item, tuple):  # the hot path: keep it short
                conversation_id, event = item
                if conversation_id in deleted:
                    continue
                rows.append((conversation_id, event.seq, event.event, event.run_id, event.envelope))
                events.setdefault(conversation_id, []).append(event)
                last_seq[conversation_id] = event.seq
                continue
            if isinstance(item, _Command) and item.kind in ("flush", "stop"):
                results.append((item.waiter, None))
                continue
            if isinstance(item, _Command) and item.kind == "sweep":
                sweep = True
                results.append((item.waiter, None))
                continue
            if not in_transaction:
                conn.execute("BEGIN IMMEDIATE")
                in_transaction = True
            # Anything else may depend on the rows before it (a delete must
            # see them), so write those first.
            if rows:
                _insert_events(conn, rows)
                rows.clear()
            if isinstance(item, _StatePut):
                if item.conversation_id not in deleted:
                    conn.execute(
                        _PUT_STATE,
                        (item.conversation_id, item.key, item.value, item.conversation_id),
                    )
            elif isinstance(item, _ItemPut):
                if item.conversation_id in deleted:
                    pass
                elif item.value is None:
                    conn.execute(_DELETE_ITEM, (item.conversation_id, item.collection, item.key))
                else:
                    conn.execute(
                        _PUT_ITEM,
                        (
                            item.conversation_id,
                            item.collection,
                            item.key,
                            item.value,
                            item.conversation_id,
                        ),
                    )
            elif item.kind == "create":
                assert item.record is not None
                cursor = conn.execute(_INSERT_CONVERSATION, _record_values(item.record))
                created = cursor.rowcount == 1
                first = item.first_event
                if created and first is not None:
                    conn.execute(
                        _INSERT_EVENT,
                        (item.record.id, first.seq, first.event, None, first.envelope),
                    )
                    conn.execute(
                        "UPDATE conversations SET last_seq = ? WHERE id = ?",
                        (first.seq, item.record.id),
                    )
                    conn.execute(_STAMP, (item.record.id, self._now_bucket(), first.seq))
                results.append((item.waiter, created))
            elif item.kind == "update":
                assert item.record is not None
                values = _record_values(item.record)
                conn.execute(_UPDATE_CONVERSATION, (*values[1:], values[0]))
                results.append((item.waiter, None))
            elif item.kind == "delete":
                conversation_id = item.conversation_id
                cursor = conn.execute(
                    "UPDATE conversations SET deleted = 1 WHERE id = ? AND deleted = 0",
                    (conversation_id,),
                )
                existed = cursor.rowcount == 1
                conn.execute("DELETE FROM events WHERE conversation_id = ?", (conversation_id,))
                conn.execute("DELETE FROM state WHERE conversation_id = ?", (conversation_id,))
                conn.execute("DELETE FROM items WHERE conversation_id = ?", (conversation_id,))
                conn.execute(
                    "DELETE FROM event_times WHERE conversation_id = ?", (conversation_id,)
                )
                if existed:
                    deleted.add(conversation_id)
                events.pop(conversation_id, None)
                results.append((item.waiter, existed))

        if rows or sweep:
            if not in_transaction:
                conn.execute("BEGIN IMMEDIATE")
                in_transaction = True
            if rows:
                _insert_events(conn, rows)
        if not in_transaction:
            return events, results, trimmed
        retention = self.settings.retention_events
        at = self._now_bucket()
        age = self.settings.retention_age
        cutoff = None if age is None else self.clock() - age
        for conversation_id, seq in last_seq.items():
            # last_seq outlives retention and deletes: it is what keeps a seq
            # from being handed out twice after a restart.
            conn.execute(
                "UPDATE conversations SET last_seq = ? WHERE id = ? AND last_seq < ?",
                (seq, conversation_id, seq),
            )
            if conversation_id in deleted:
                continue
            conn.execute(_STAMP, (conversation_id, at, seq))
            if retention is not None:
                conn.execute(
                    "DELETE FROM events WHERE conversation_id = ? AND seq <= ?",
                    (conversation_id, seq - retention),
                )
                # times of events all gone: they would only pile up
                conn.execute(
                    "DELETE FROM event_times WHERE conversation_id = ? AND seq <= ?",
                    (conversation_id, seq - retention),
                )
            if cutoff is not None:
                _trim_by_age(conn, conversation_id, cutoff, trimmed)
        if sweep and cutoff is not None:
            for conversation_id in [row[0] for row in conn.execute(_AGED_ALL, (cutoff,))]:
                _trim_by_age(conn, conversation_id, cutoff, trimmed)
        conn.execute("COMMIT")
        self.commit_count += 1
        return events, results, trimmed

    def _now_bucket(self) -> float:
        return time_bucket(self.clock(), self._tick)


_MULTI_ROWS = (64, 16, 4)
_INSERT_EVENTS = {
    n: "INSERT INTO events (conversation_id, seq, event, run_id, envelope) VALUES "
    + ", ".join(["(?, ?, ?, ?, ?)"] * n)
    for n in _MULTI_ROWS
}


def _insert_events(
    conn: sqlite3.Connection, rows: list[tuple[str, int, str, str | None, bytes]]
) -> None:
    """Insert rows with multi-row statements (64, 16, 4 rows each, the rest one by one).

    ``executemany`` steps once per row, and sqlite3 releases the GIL around
    every step: the writer then waits for the loop to give it back once per
    row. One statement of 64 rows is one step.
    """
    start = 0
    total = len(rows)
    for n in _MULTI_ROWS:
        sql = _INSERT_EVENTS[n]
        while total - start >= n:
            conn.execute(sql, [value for row in rows[start : start + n] for value in row])
            start += n
    if start < total:
        conn.executemany(_INSERT_EVENT, rows[start:])


def _trim_by_age(
    conn: sqlite3.Connection, conversation_id: str, cutoff: float, trimmed: dict[str, int]
) -> None:
    """Drop the conversation's events committed at or before ``cutoff``
    (and their time rows); note the last seq dropped for the loop's hot tail."""
    row = conn.execute(_AGED_CUT, (conversation_id, cutoff)).fetchone()
    if row is None or row[0] is None:
        return
    cut = int(row[0])
    conn.execute(
        "DELETE FROM events WHERE conversation_id = ? AND seq <= ?", (conversation_id, cut)
    )
    conn.execute(
        "DELETE FROM event_times WHERE conversation_id = ? AND at <= ?", (conversation_id, cutoff)
    )
    trimmed[conversation_id] = max(cut, trimmed.get(conversation_id, 0))


def _waiters(batch: list[_Op]) -> list[_Waiter]:
    return [item.waiter for item in batch if isinstance(item, _Command)]
