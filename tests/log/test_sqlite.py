"""What only the sqlite backend promises: persistence, group commit, crash safety."""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import steerline.log.sqlite as sqlite_module
from steerline.core.errors import InvalidValueError, SteerlineError
from steerline.log.base import (
    ConversationExistsError,
    ConversationRecord,
    LogSettings,
    RetentionError,
    StorageUnavailableError,
)
from steerline.log.factory import open_log
from steerline.log.sqlite import RECORD_COLUMNS, SqliteEventLog, StorageFailedError

SRC = str(Path(__file__).resolve().parents[2] / "src")


def envelope(i: int) -> bytes:
    return b'{"event":"message_chunk","data":{"i":%d}}' % i


async def opened(path: Path, settings: LogSettings | None = None) -> SqliteEventLog:
    log = SqliteEventLog(str(path), settings)
    await log.open()
    return log


def test_columns_cover_every_record_field() -> None:
    assert tuple(f.name for f in dataclasses.fields(ConversationRecord)) == RECORD_COLUMNS


def test_factory_opens_sqlite_urls(tmp_path: Path) -> None:
    log = open_log(f"sqlite:///{tmp_path}/x.db")
    assert isinstance(log, SqliteEventLog)
    assert log.path == f"{tmp_path}/x.db"


def test_rejects_bad_settings_and_memory_paths() -> None:
    with pytest.raises(InvalidValueError):
        SqliteEventLog("x.db", LogSettings(synchronous="OFF"))  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError):
        SqliteEventLog(":memory:")


@pytest.mark.anyio
async def test_file_is_in_wal_mode(tmp_path: Path) -> None:
    log = await opened(tmp_path / "log.db", LogSettings(synchronous="FULL"))
    try:
        conn = sqlite3.connect(tmp_path / "log.db")
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()
    finally:
        await log.close()


@pytest.mark.anyio
async def test_reopen_keeps_everything_and_continues_seq(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    log = await opened(path)
    record = ConversationRecord(
        id="c1", tenant="acme", status="running", active_run_id="r1", owner="p1"
    )
    await log.create_conversation(record)
    await log.create_conversation(ConversationRecord(id="gone"))
    for i in range(25):
        log.append("c1", "message_chunk", envelope(i), run_id="r1")
    log.put_state("c1", "context", b"ctx-bytes")
    log.append("gone", "message_chunk", envelope(0))
    await log.delete_conversation("gone")
    expected = await log.read("c1", 0)
    await log.close()

    log = await opened(path)
    try:
        assert await log.get_conversation("c1") == record
        assert await log.get_conversation("gone") is None
        with pytest.raises(ConversationExistsError):
            await log.create_conversation(ConversationRecord(id="gone"))
        assert [r.id for r in await log.running_conversations()] == ["c1"]
        assert await log.read("c1", 0) == expected
        assert [e.seq for e in expected] == list(range(1, 26))
        assert await log.get_state("c1", "context") == b"ctx-bytes"
        assert log.committed_seq("c1") == 25
        assert log.append("c1", "message_chunk", envelope(25)) == 26
        await log.flush()
        assert [e.seq for e in await log.read("c1", 24)] == [25, 26]
    finally:
        await log.close()


@pytest.mark.anyio
async def test_seq_continues_after_restart_even_when_retention_dropped_everything(
    tmp_path: Path,
) -> None:
    path = tmp_path / "log.db"
    log = await opened(path, LogSettings(retention_events=0))
    await log.create_conversation(ConversationRecord(id="c1"))
    for i in range(4):
        log.append("c1", "message_chunk", envelope(i))
    await log.close()

    log = await opened(path, LogSettings(retention_events=0))
    try:
        # nothing retained: the next seq, so a resume from any older one is refused
        assert await log.oldest_seq("c1") == 5
        assert await log.get_conversation("c1") is not None
        assert log.append("c1", "message_chunk", envelope(4)) == 5
    finally:
        await log.close()


@pytest.mark.anyio
async def test_a_version_2_file_migrates_and_its_events_age_from_the_migration(
    tmp_path: Path,
) -> None:
    path = tmp_path / "log.db"
    log = await opened(path)
    await log.create_conversation(ConversationRecord(id="c1"))
    for i in range(3):
        log.append("c1", "message_chunk", envelope(i))
    await log.close()
    # what a file written before retention by age looks like: no event_times
    conn = sqlite3.connect(path)
    conn.executescript("DROP TABLE event_times; PRAGMA user_version = 2;")
    conn.close()

    now = 2_000_000.0
    log = SqliteEventLog(str(path), LogSettings(retention_age=80.0))
    log.clock = lambda: now  # type: ignore[method-assign]
    await log.open()
    try:
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
        assert conn.execute("SELECT conversation_id, seq FROM event_times").fetchall() == [
            ("c1", 3)
        ]
        conn.close()
        assert await log.get_conversation("c1") is not None
        assert [e.seq for e in await log.read("c1", 0)] == [1, 2, 3]
        now += 50  # the old events count as written at the migration: kept
        await log.sweep_retention()
        assert await log.oldest_seq("c1") == 1
        now += 45
        await log.sweep_retention()
        assert await log.oldest_seq("c1") == 4
        with pytest.raises(RetentionError):
            await log.read("c1", 0)
        assert log.append("c1", "message_chunk", envelope(3)) == 4
        await log.flush()
        assert [e.seq for e in await log.read("c1", 3)] == [4]
    finally:
        await log.close()


@pytest.mark.anyio
async def test_wait_after_restart_without_fetching_first(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    log = await opened(path)
    await log.create_conversation(ConversationRecord(id="c1"))
    log.append("c1", "message_chunk", envelope(0))
    await log.close()

    log = await opened(path)
    try:
        with anyio.fail_after(5):
            await log.wait("c1", 0)  # already committed before the restart
            async with anyio.create_task_group() as tg:
                woke = anyio.Event()

                async def viewer() -> None:
                    await log.wait("c1", 1)
                    woke.set()

                tg.start_soon(viewer)
                await anyio.wait_all_tasks_blocked()
                assert not woke.is_set()
                assert log.append("c1", "message_chunk", envelope(1)) == 2
                await woke.wait()
    finally:
        await log.close()


@pytest.mark.anyio
async def test_group_commit_batches(tmp_path: Path) -> None:
    log = await opened(tmp_path / "log.db")
    try:
        await log.create_conversation(ConversationRecord(id="c1"))
        before = log.commit_count
        n = 10_000
        for i in range(n):
            log.append("c1", "message_chunk", envelope(i))
        await log.flush()
        commits = log.commit_count - before
        assert log.committed_seq("c1") == n
        assert n // log.settings.batch_size <= commits <= n // 20, commits
        assert len(await log.read("c1", 0, limit=n)) == n
    finally:
        await log.close()


@pytest.mark.anyio
async def test_the_writer_is_handed_one_list_per_loop_tick(tmp_path: Path) -> None:
    log = SqliteEventLog(str(tmp_path / "log.db"))
    handed: list[int] = []

    class Counting(queue.SimpleQueue[Any]):
        def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
            handed.append(len(item))
            super().put(item, block, timeout)

    log._queue = Counting()
    await log.open()
    try:
        await log.create_conversation(ConversationRecord(id="c1"))
        handed.clear()
        for i in range(100):
            log.append("c1", "message_chunk", envelope(i))
        log.put_state("c1", "context", b"x")
        assert handed == []  # nothing handed over yet: the tick is not over
        await anyio.lowlevel.checkpoint()
        assert handed == [101]  # one put for the whole tick, not one per event
        with anyio.fail_after(5):
            await log.wait("c1", 99)
        handed.clear()
        log.append("c1", "message_chunk", envelope(0))
        await log.flush()  # a flush hands over at once, with what was queued before it
        assert handed == [2]
        assert log.committed_seq("c1") == 101
    finally:
        await log.close()


@pytest.mark.anyio
async def test_checkpoints_run_in_the_background_not_in_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "_CHECKPOINT_INTERVAL", 0.01)
    path = tmp_path / "log.db"
    log = await opened(path)
    try:
        await log.create_conversation(ConversationRecord(id="c1"))
        for i in range(100):
            log.append("c1", "message_chunk", envelope(i))
        await log.flush()
        commits = log.commit_count

        def in_database_file() -> int:
            # immutable=1 ignores the WAL: only what a checkpoint copied back
            conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
            try:
                return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
            except sqlite3.DatabaseError:
                # the schema is not copied back yet ("no such table"), or the
                # checkpointer is copying pages back right now: immutable=1
                # takes no lock, so a read in between sees a torn file
                # ("database disk image is malformed"); the next read is whole
                return 0
            finally:
                conn.close()

        with anyio.fail_after(5):
            # the checkpointer thread counts a checkpoint after it copied the
            # pages back: the file may show the events a moment before the count
            while in_database_file() < 100 or log.checkpoint_count < 1:
                await anyio.lowlevel.checkpoint()
                await anyio.to_thread.run_sync(time.sleep, 0.01)
        assert log.commit_count == commits  # no commit was needed for it
    finally:
        await log.close()


@pytest.mark.anyio
async def test_batch_size_bounds_each_transaction(tmp_path: Path) -> None:
    log = await opened(tmp_path / "log.db", LogSettings(batch_size=1))
    try:
        await log.create_conversation(ConversationRecord(id="c1"))
        before = log.commit_count
        for i in range(5):
            log.append("c1", "message_chunk", envelope(i))
        await log.flush()
        assert log.commit_count - before == 5
    finally:
        await log.close()


@pytest.mark.anyio
async def test_a_replay_reads_ahead_in_few_file_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "log.db"
    log = await opened(path)
    await log.create_conversation(ConversationRecord(id="c1"))
    for i in range(5000):
        log.append("c1", "message_chunk", envelope(i), "r1")
    await log.flush()
    await log.close()

    log = await opened(path)  # cold: nothing of c1 in memory
    queries = 0
    query = log._query

    async def counting(fn: Any) -> Any:
        nonlocal queries
        queries += 1
        return await query(fn)

    monkeypatch.setattr(log, "_query", counting)
    try:
        await log.get_conversation("c1")
        queries = 0
        seen: list[int] = []
        after = 0
        while batch := await log.read("c1", after, 100):
            assert len(batch) <= 100
            assert batch[0].run_id == "r1" and batch[0].event == "message_chunk"
            assert json.loads(batch[-1].envelope)["seq"] == batch[-1].seq
            seen += [e.seq for e in batch]
            after = batch[-1].seq
        assert seen == list(range(1, 5001))
        assert queries <= 10, queries  # 100, 200, 400, ... 3200 rows, then the end
        # another reader from the middle, and one going back, still get exact slices
        assert [e.seq for e in await log.read("c1", 2500, 3)] == [2501, 2502, 2503]
        assert [e.seq for e in await log.read("c1", 10, 2)] == [11, 12]
        # events appended later are read too, and a deleted conversation reads nothing
        log.append("c1", "message_chunk", envelope(0))
        await log.flush()
        assert [e.seq for e in await log.read("c1", 5000, 100)] == [5001]
        await log.read("c1", 0, 100)
        assert await log.delete_conversation("c1")
        assert await log.read("c1", 100, 100) == []
    finally:
        await log.close()


@pytest.mark.anyio
async def test_events_are_invisible_until_committed(tmp_path: Path) -> None:
    log = await opened(tmp_path / "log.db")
    try:
        await log.create_conversation(ConversationRecord(id="c1"))
        assert log.append("c1", "message_chunk", envelope(0)) == 1
        # No await since the append: the loop cannot have learnt of a commit.
        assert log.committed_seq("c1") == 0
        await log.flush()
        assert log.committed_seq("c1") == 1
    finally:
        await log.close()


@pytest.mark.anyio
async def test_closed_log_refuses_writes(tmp_path: Path) -> None:
    log = await opened(tmp_path / "log.db")
    await log.create_conversation(ConversationRecord(id="c1"))
    await log.close()
    await log.close()  # idempotent
    with pytest.raises(SteerlineError):
        log.append("c1", "message_chunk", envelope(0))
    with pytest.raises(SteerlineError):
        await log.flush()


@pytest.mark.anyio
async def test_close_ends_waiting_viewers(tmp_path: Path) -> None:
    log = await opened(tmp_path / "log.db")
    await log.create_conversation(ConversationRecord(id="c1"))
    errors: list[BaseException] = []

    async def viewer() -> None:
        try:
            await log.wait("c1", 0)
        except SteerlineError as exc:
            errors.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(viewer)
            await anyio.wait_all_tasks_blocked()
            await log.close()
    assert len(errors) == 1 and "closed" in str(errors[0])


_EVENTS_TABLE = (
    "CREATE TABLE events (conversation_id TEXT NOT NULL, seq INTEGER NOT NULL, "
    "event TEXT NOT NULL, run_id TEXT, envelope BLOB NOT NULL, "
    "PRIMARY KEY (conversation_id, seq)) WITHOUT ROWID"
)


def sabotage(path: Path, sql: str) -> None:
    """Change the file from outside, as a full disk or an operator would."""
    other = sqlite3.connect(path)
    other.execute(sql)
    other.commit()
    other.close()


@pytest.mark.anyio
async def test_failed_commit_is_held_and_retried_until_the_store_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "log.db"
    log = await opened(path, LogSettings(retry_max_delay=0.05))
    await log.create_conversation(ConversationRecord(id="c1"))
    log.append("c1", "message_chunk", envelope(0))
    await log.flush()
    assert log.available
    sabotage(path, "DROP TABLE events")  # the next commit cannot succeed

    with caplog.at_level(logging.ERROR, logger="steerline.log.sqlite"), anyio.fail_after(10):
        log.append("c1", "message_chunk", envelope(1))
        changed = log.wait_availability_change()
        await changed
        assert not log.available
        assert any("commit failed" in r.getMessage() for r in caplog.records)
        with pytest.raises(StorageUnavailableError, match="cannot write"):
            await log.flush()
        with pytest.raises(StorageUnavailableError):
            await log.wait("c1", 1)
        # appends and state are still accepted (held, in order), never dropped
        log.append("c1", "message_chunk", envelope(2))
        log.put_state("c1", "context", b"x")
        assert log.committed_seq("c1") == 1

        sabotage(path, _EVENTS_TABLE)  # the store can write again
        await log.wait_availability_change()
        assert log.available
        await log.flush()
    assert log.committed_seq("c1") == 3
    assert [e.seq for e in await log.read("c1", 1)] == [2, 3]
    assert await log.get_state("c1", "context") == b"x"
    await log.close()


@pytest.mark.anyio
async def test_an_outage_wakes_waiting_viewers(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    log = await opened(path, LogSettings(retry_max_delay=0.05))
    await log.create_conversation(ConversationRecord(id="c1"))
    sabotage(path, "DROP TABLE events")
    errors: list[BaseException] = []

    async def viewer() -> None:
        try:
            await log.wait("c1", 0)
        except StorageUnavailableError as exc:
            errors.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(viewer)
            await anyio.wait_all_tasks_blocked()
            log.append("c1", "message_chunk", envelope(0))
    assert len(errors) == 1
    sabotage(path, _EVENTS_TABLE)
    await log.close()
    assert await opened_count(path) == 1


async def opened_count(path: Path) -> int:
    log = await opened(path)
    try:
        return len(await log.read("c1", 0))
    finally:
        await log.close()


@pytest.mark.anyio
async def test_close_gives_up_on_a_store_that_cannot_write(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    log = await opened(path, LogSettings(retry_max_delay=0.05, close_timeout=0.3))
    await log.create_conversation(ConversationRecord(id="c1"))
    sabotage(path, "DROP TABLE events")
    log.append("c1", "message_chunk", envelope(0))
    with anyio.fail_after(5), pytest.raises(StorageUnavailableError, match="not stored"):
        await log.close()


@pytest.mark.anyio
async def test_a_second_process_cannot_open_a_locked_store(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    log = await opened(path)
    code = (
        "import sys\n"
        "from steerline.log.sqlite import SqliteEventLog\n"
        "from steerline.log.base import StoreLockedError\n"
        "try:\n"
        f"    SqliteEventLog({str(path)!r}).acquire()\n"
        "except StoreLockedError as exc:\n"
        "    print(exc); sys.exit(2)\n"
    )
    result = await anyio.run_process([sys.executable, "-c", code], check=False)
    assert result.returncode == 2, result.stderr
    assert b"in use by another steerline process" in result.stdout
    await log.close()
    result = await anyio.run_process([sys.executable, "-c", code], check=False)
    assert result.returncode == 0, result.stdout + result.stderr


class Boom(BaseException):
    """Not even an Exception: the writer must still report it."""


@pytest.mark.anyio
async def test_unexpected_writer_error_does_not_hang(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    log = await opened(tmp_path / "log.db")
    await log.create_conversation(ConversationRecord(id="c1"))

    def boom(*args: object) -> None:
        raise Boom("bug")

    monkeypatch.setattr(log, "_commit_batch", boom)
    with caplog.at_level(logging.ERROR, logger="steerline.log.sqlite"), anyio.fail_after(5):
        log.append("c1", "message_chunk", envelope(0))
        with pytest.raises(StorageFailedError, match="Boom"):
            await log.flush()
        with pytest.raises(StorageFailedError):
            await log.close()
    assert caplog.records


CHILD = r"""
import asyncio, sys
from steerline.log.base import ConversationRecord
from steerline.log.sqlite import SqliteEventLog

PAD = b"x" * 200
FORMAT = b'{"event":"message_chunk","data":{"i":%d,"pad":"%s"}}'

async def main(path):
    log = SqliteEventLog(path)
    await log.open()
    await log.create_conversation(ConversationRecord(id="c1"))
    i = 0
    while True:
        await log.flush()
        acknowledged = log.committed_seq("c1")
        # Report it only after more appends and commits: when the test
        # kills the child, the file holds more than was acknowledged and
        # the child is still writing.
        for _ in range(500):
            i += 1
            log.append("c1", "message_chunk", FORMAT % (i, PAD))
            if i % 100 == 0:
                await log.flush()
        print(acknowledged, flush=True)

asyncio.run(main(sys.argv[1]))
"""


def test_sigkill_loses_nothing_committed(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={"PYTHONPATH": SRC},
    )
    assert proc.stdout is not None
    printed: list[int] = []
    try:
        # Several flushes in: the child is appending and committing as it dies.
        while len(printed) < 5:
            line = proc.stdout.readline()
            if not line:
                break
            printed.append(int(line))
    finally:
        proc.kill()  # SIGKILL: no clean-up, no close()
        _, stderr = proc.communicate()
    assert len(printed) == 5, stderr.decode()
    acknowledged = printed[-1]

    async def check() -> None:
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()
        log = await opened(path)
        try:
            assert await log.get_conversation("c1") is not None
            events = await log.read("c1", 0, limit=10**9)
            seqs = [e.seq for e in events]
            assert seqs == list(range(1, len(seqs) + 1))
            assert len(seqs) >= acknowledged
            for event in events:
                decoded = json.loads(event.envelope)
                assert decoded == {
                    "event": "message_chunk",
                    "data": {"i": event.seq, "pad": "x" * 200},
                    "seq": event.seq,
                }
            # and no seq a client may have seen is handed out again
            assert log.append("c1", "message_chunk", envelope(0)) == len(seqs) + 1
        finally:
            await log.close()

    anyio.run(check)
