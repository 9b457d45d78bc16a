"""The EventLog contract, run against every backend.

The memory backend is the reference: whatever it does, the durable
backends must do too, so the server and transports can be tested on memory.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio
import pytest

from steerline.log.base import (
    ConversationExistsError,
    ConversationRecord,
    EventLog,
    LogSettings,
    RetentionError,
    retention_tick,
    seal_envelope,
)
from steerline.log.memory import MemoryEventLog
from steerline.log.redis import RedisEventLog
from steerline.log.sqlite import SqliteEventLog
from tests.server.clients import eventually

pytestmark = pytest.mark.anyio

LogFactory = Callable[[LogSettings | None], Awaitable[EventLog]]


@pytest.fixture(params=["memory", "sqlite", "redis", "redis-cluster"])
async def make_log(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LogFactory]:
    opened: list[EventLog] = []
    # requested first, so the server outlives the logs (fixtures end in reverse)
    redis_url = ""
    if request.param == "redis":
        redis_url = request.getfixturevalue("redis_url")
    elif request.param == "redis-cluster":
        redis_url = request.getfixturevalue("redis_cluster_url")
    run = uuid.uuid4().hex[:8]  # a cluster is shared by the session: keys of this test only

    async def factory(settings: LogSettings | None = None) -> EventLog:
        log: EventLog
        if request.param == "memory":
            log = MemoryEventLog(settings)
        elif request.param.startswith("redis"):
            # a real redis-server (or cluster); each log its own key prefix
            log = RedisEventLog(f"{redis_url}?prefix=t{run}n{len(opened)}", settings)
        else:
            log = SqliteEventLog(str(tmp_path / f"log{len(opened)}.db"), settings)
        await log.open()
        opened.append(log)
        if request.param == "redis-cluster":
            assert isinstance(log, RedisEventLog) and log.cluster, "found the cluster"
        return log

    yield factory
    for log in opened:
        await log.close()


@pytest.fixture
async def log(make_log: LogFactory) -> EventLog:
    return await make_log(None)


def envelope(i: int, event: str = "message_chunk") -> bytes:
    return b'{"event":"%s","data":{"i":%d}}' % (event.encode(), i)


async def new_conversation(log: EventLog, cid: str = "c1", **fields: object) -> ConversationRecord:
    record = ConversationRecord(id=cid, **fields)  # type: ignore[arg-type]
    await log.create_conversation(record)
    return record


# -- conversations -------------------------------------------------------------


async def test_create_and_get_round_trip(log: EventLog) -> None:
    record = ConversationRecord(
        id="c1",
        tenant="acme",
        agent_name="helper",
        status="running",
        active_run_id="run_1",
        owner="proc-1",
        steering_mode="all",
        follow_up_mode="all",
        steering_policy="immediate",
        created_at=1000.25,
        updated_at=1001.5,
    )
    await log.create_conversation(record)
    assert await log.get_conversation("c1") == record
    assert await log.get_conversation("missing") is None


async def test_get_returns_a_copy(log: EventLog) -> None:
    await new_conversation(log)
    got = await log.get_conversation("c1")
    assert got is not None
    got.status = "running"
    again = await log.get_conversation("c1")
    assert again is not None and again.status == "idle"


async def test_create_twice_is_refused(log: EventLog) -> None:
    await new_conversation(log)
    with pytest.raises(ConversationExistsError):
        await new_conversation(log)


async def test_update_conversation(log: EventLog) -> None:
    record = await new_conversation(log)
    record.status = "running"
    record.active_run_id = "run_9"
    record.owner = "proc-2"
    record.updated_at = record.updated_at + 10
    await log.update_conversation(record)
    assert await log.get_conversation("c1") == record


async def test_update_unknown_is_ignored(log: EventLog) -> None:
    await log.update_conversation(ConversationRecord(id="ghost"))
    assert await log.get_conversation("ghost") is None


async def test_update_is_ordered_after_prior_appends(log: EventLog) -> None:
    record = await new_conversation(log)
    for i in range(3):
        log.append("c1", "message_chunk", envelope(i))
    record.status = "running"
    await log.update_conversation(record)
    assert log.committed_seq("c1") == 3


async def test_list_by_tenant_newest_first_with_paging(log: EventLog) -> None:
    for i in range(5):
        await new_conversation(log, f"a{i}", tenant="acme", updated_at=100.0 + i)
    await new_conversation(log, "b0", tenant="other", updated_at=500.0)
    listed = await log.list_conversations("acme")
    assert [r.id for r in listed] == ["a4", "a3", "a2", "a1", "a0"]
    page = await log.list_conversations("acme", limit=2, offset=1)
    assert [r.id for r in page] == ["a3", "a2"]
    assert await log.list_conversations("acme", limit=2, offset=10) == []
    assert [r.id for r in await log.list_conversations("other")] == ["b0"]
    assert await log.list_conversations("nobody") == []


async def test_list_ties_break_on_id(log: EventLog) -> None:
    for cid in ("x", "z", "y"):
        await new_conversation(log, cid, updated_at=7.0)
    assert [r.id for r in await log.list_conversations("default")] == ["z", "y", "x"]


async def test_list_reflects_updates(log: EventLog) -> None:
    first = await new_conversation(log, "first", updated_at=1.0)
    await new_conversation(log, "second", updated_at=2.0)
    first.updated_at = 3.0
    await log.update_conversation(first)
    assert [r.id for r in await log.list_conversations("default")] == ["first", "second"]


async def test_delete(log: EventLog) -> None:
    await new_conversation(log, status="running")
    log.append("c1", "message_chunk", envelope(0))
    log.put_state("c1", "context", b"ctx")
    await log.flush()
    assert await log.delete_conversation("c1") is True
    assert await log.get_conversation("c1") is None
    assert await log.read("c1", 0) == []
    assert await log.oldest_seq("c1") == 0
    assert await log.get_state("c1", "context") is None
    assert await log.list_conversations("default") == []
    assert await log.running_conversations() == []
    assert await log.delete_conversation("c1") is False
    assert await log.delete_conversation("never") is False


async def test_deleted_id_is_never_reused(log: EventLog) -> None:
    await new_conversation(log)
    await log.delete_conversation("c1")
    with pytest.raises(ConversationExistsError):
        await new_conversation(log)
    # an id that was never used is still free after a delete of an unknown id
    assert await log.delete_conversation("fresh") is False
    await new_conversation(log, "fresh")


async def test_append_after_delete_is_refused(log: EventLog) -> None:
    await new_conversation(log)
    await log.delete_conversation("c1")
    with pytest.raises(KeyError):
        log.append("c1", "message_chunk", envelope(0))


async def test_append_to_unknown_conversation_is_refused(log: EventLog) -> None:
    with pytest.raises(KeyError):
        log.append("ghost", "message_chunk", envelope(0))


async def test_running_conversations(log: EventLog) -> None:
    await new_conversation(log, "idle1")
    await new_conversation(log, "run1", status="running", active_run_id="r1", owner="p")
    await new_conversation(log, "run2", status="running", active_run_id="r2", owner="p")
    await log.delete_conversation("run2")
    running = await log.running_conversations()
    assert [r.id for r in running] == ["run1"]
    assert running[0].active_run_id == "r1"


# -- events --------------------------------------------------------------------


async def test_append_read_order_and_content(log: EventLog) -> None:
    await new_conversation(log)
    names = ["task_started", "message_chunk", "message_chunk", "done"]
    seqs = [
        log.append("c1", name, envelope(i, name), run_id="run_1" if i else None)
        for i, name in enumerate(names)
    ]
    assert seqs == [1, 2, 3, 4]
    await log.flush()
    events = await log.read("c1", 0)
    assert [e.seq for e in events] == [1, 2, 3, 4]
    assert [e.event for e in events] == names
    assert [e.run_id for e in events] == [None, "run_1", "run_1", "run_1"]
    for i, event in enumerate(events):
        assert event.envelope == seal_envelope(envelope(i, names[i]), event.seq)
        decoded = json.loads(event.envelope)
        assert decoded == {"event": names[i], "data": {"i": i}, "seq": event.seq}


async def test_read_after_and_limit(log: EventLog) -> None:
    await new_conversation(log)
    for i in range(10):
        log.append("c1", "message_chunk", envelope(i))
    await log.flush()
    assert [e.seq for e in await log.read("c1", 3, limit=4)] == [4, 5, 6, 7]
    assert [e.seq for e in await log.read("c1", 8)] == [9, 10]
    assert await log.read("c1", 10) == []
    assert await log.read("c1", 100) == []
    assert await log.read("c1", 0, limit=0) == []
    assert await log.read("ghost", 0) == []


async def test_seq_strictly_increasing_and_contiguous_per_conversation(log: EventLog) -> None:
    await new_conversation(log, "a")
    await new_conversation(log, "b")
    got: dict[str, list[int]] = {"a": [], "b": []}
    for i in range(300):
        cid = "a" if i % 3 else "b"
        got[cid].append(log.append(cid, "message_chunk", envelope(i)))
        if i % 50 == 0:
            await log.flush()
    await log.flush()
    for cid, seqs in got.items():
        assert seqs == list(range(1, len(seqs) + 1))
        assert log.committed_seq(cid) == len(seqs)
        assert [e.seq for e in await log.read(cid, 0, limit=1000)] == seqs


async def test_committed_seq(log: EventLog) -> None:
    await new_conversation(log)
    assert log.committed_seq("c1") == 0
    assert log.committed_seq("ghost") == 0
    log.append("c1", "message_chunk", envelope(0))
    log.append("c1", "message_chunk", envelope(1))
    await log.flush()
    assert log.committed_seq("c1") == 2


async def test_flush_with_nothing_queued(log: EventLog) -> None:
    await log.flush()
    await new_conversation(log)
    await log.flush()
    await log.flush()
    assert log.committed_seq("c1") == 0


async def test_wait_returns_at_once_when_already_committed(log: EventLog) -> None:
    await new_conversation(log)
    log.append("c1", "message_chunk", envelope(0))
    await log.flush()
    with anyio.fail_after(5):
        await log.wait("c1", 0)
        await log.wait("ghost", 0)


async def test_wait_wakes_when_a_later_append_commits(log: EventLog) -> None:
    await new_conversation(log)
    log.append("c1", "message_chunk", envelope(0))
    await log.flush()
    woke = anyio.Event()
    seen: list[int] = []

    async def viewer() -> None:
        await log.wait("c1", 1)
        seen.extend(e.seq for e in await log.read("c1", 1))
        woke.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(viewer)
            await anyio.wait_all_tasks_blocked()
            assert not woke.is_set()
            assert log.append("c1", "message_chunk", envelope(1)) == 2
            await woke.wait()
    assert seen == [2]


async def test_many_viewers_wake_on_one_commit(log: EventLog) -> None:
    await new_conversation(log)
    woken: list[int] = []

    async def viewer(n: int) -> None:
        await log.wait("c1", 0)
        woken.append(n)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for n in range(20):
                tg.start_soon(viewer, n)
            await anyio.wait_all_tasks_blocked()
            assert woken == []
            log.append("c1", "message_chunk", envelope(0))
    assert sorted(woken) == list(range(20))


async def test_wait_returns_when_conversation_is_deleted(log: EventLog) -> None:
    await new_conversation(log)
    done = anyio.Event()

    async def viewer() -> None:
        await log.wait("c1", 0)
        done.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(viewer)
            await anyio.wait_all_tasks_blocked()
            assert not done.is_set()
            await log.delete_conversation("c1")
    assert done.is_set()


# -- retention -----------------------------------------------------------------


@pytest.mark.parametrize("hot_tail", [4096, 3])
async def test_retention(make_log: LogFactory, hot_tail: int) -> None:
    log = await make_log(LogSettings(retention_events=5, hot_tail=hot_tail))
    await new_conversation(log)
    assert await log.oldest_seq("c1") == 0
    for i in range(12):
        log.append("c1", "message_chunk", envelope(i))
    await log.flush()
    assert await log.oldest_seq("c1") == 8
    assert log.committed_seq("c1") == 12
    assert [e.seq for e in await log.read("c1", 7)] == [8, 9, 10, 11, 12]
    assert [e.seq for e in await log.read("c1", 9, limit=2)] == [10, 11]
    assert await log.read("c1", 12) == []
    for after in (0, 5, 6):
        with pytest.raises(RetentionError):
            await log.read("c1", after)
    with pytest.raises(RetentionError):
        await log.read("c1", 0, limit=0)
    # replaying "the retained log from its start"
    oldest = await log.oldest_seq("c1")
    assert [e.seq for e in await log.read("c1", oldest - 1)] == [8, 9, 10, 11, 12]


async def test_retention_keeps_seq_counting(make_log: LogFactory) -> None:
    log = await make_log(LogSettings(retention_events=2))
    await new_conversation(log)
    for i in range(7):
        log.append("c1", "message_chunk", envelope(i))
    await log.flush()
    assert log.append("c1", "message_chunk", envelope(7)) == 8
    await log.flush()
    assert [e.seq for e in await log.read("c1", 6)] == [7, 8]
    assert await log.oldest_seq("c1") == 7


async def test_retention_is_per_conversation(make_log: LogFactory) -> None:
    log = await make_log(LogSettings(retention_events=3))
    await new_conversation(log, "a")
    await new_conversation(log, "b")
    for i in range(6):
        log.append("a", "message_chunk", envelope(i))
    log.append("b", "message_chunk", envelope(0))
    await log.flush()
    assert await log.oldest_seq("a") == 4
    assert await log.oldest_seq("b") == 1
    assert [e.seq for e in await log.read("b", 0)] == [1]


async def test_hot_tail_smaller_than_log_still_reads_from_the_start(make_log: LogFactory) -> None:
    log = await make_log(LogSettings(hot_tail=4))
    await new_conversation(log)
    for i in range(50):
        log.append("c1", "message_chunk", envelope(i))
    await log.flush()
    assert [e.seq for e in await log.read("c1", 0, limit=1000)] == list(range(1, 51))
    assert [e.seq for e in await log.read("c1", 47)] == [48, 49, 50]
    assert [e.seq for e in await log.read("c1", 10, limit=3)] == [11, 12, 13]


# -- retention by age ------------------------------------------------------------
# The clock is the log's own (``log.clock``), moved by hand: nothing sleeps.
# An age of 80 s gives a retention tick of 10 s (retention_tick): times are
# recorded per tick, so an event is dropped at most one tick after its age.

T0 = 1_000_000.0


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def aged_log(make_log: LogFactory, clock: FakeClock, **settings: object) -> EventLog:
    log = await make_log(LogSettings(retention_age=80.0, **settings))  # type: ignore[arg-type]
    log.clock = clock  # type: ignore[method-assign]
    return log


def test_retention_tick_is_derived_from_the_age() -> None:
    assert retention_tick(LogSettings(retention_age=80.0)) == 10.0
    assert retention_tick(LogSettings(retention_age=7 * 86400.0)) == 60.0
    assert retention_tick(LogSettings()) == 60.0


async def test_retention_by_age_trims_as_events_are_appended(make_log: LogFactory) -> None:
    clock = FakeClock()
    log = await aged_log(make_log, clock)
    await new_conversation(log)
    for i in range(3):
        log.append("c1", "message_chunk", envelope(i))
    await log.flush()
    clock.now = T0 + 50
    log.append("c1", "message_chunk", envelope(3))
    log.append("c1", "message_chunk", envelope(4))
    await log.flush()
    assert await log.oldest_seq("c1") == 1  # 50 s old: kept
    clock.now = T0 + 95  # events 1-3 are now past the age, 4-5 are not
    assert log.append("c1", "message_chunk", envelope(5)) == 6
    await log.flush()
    assert await log.oldest_seq("c1") == 4
    assert log.committed_seq("c1") == 6
    assert [e.seq for e in await log.read("c1", 3)] == [4, 5, 6]
    for after in (0, 2):
        with pytest.raises(RetentionError):
            await log.read("c1", after)


async def test_retention_by_age_sweeps_an_idle_conversation(make_log: LogFactory) -> None:
    clock = FakeClock()
    log = await aged_log(make_log, clock)
    await new_conversation(log, "idle")
    for i in range(3):
        log.append("idle", "message_chunk", envelope(i))
    await log.flush()
    clock.now = T0 + 60
    await new_conversation(log, "recent")
    log.append("recent", "message_chunk", envelope(0))
    await log.flush()
    clock.now = T0 + 100  # nobody appends to "idle" again
    await log.sweep_retention()
    # everything trimmed: the retained log is empty, and older seqs are refused
    assert log.committed_seq("idle") == 3
    assert await log.oldest_seq("idle") == 4
    assert await log.read("idle", 3) == []
    for after in (0, 2):
        with pytest.raises(RetentionError):
            await log.read("idle", after)
    assert [e.seq for e in await log.read("recent", 0)] == [1]  # not past the age
    # seq goes on after the trim, gapless
    assert log.append("idle", "message_chunk", envelope(3)) == 4
    await log.flush()
    assert [e.seq for e in await log.read("idle", 3)] == [4]
    assert await log.oldest_seq("idle") == 4


async def test_retention_by_age_seq_survives_a_reopen_after_everything_was_trimmed(
    make_log: LogFactory,
) -> None:
    clock = FakeClock()
    log = await aged_log(make_log, clock)
    await new_conversation(log)
    for i in range(4):
        log.append("c1", "message_chunk", envelope(i))
    await log.flush()
    clock.now = T0 + 200
    await log.sweep_retention()
    log.release("c1")
    assert await log.get_conversation("c1") is not None
    assert log.append("c1", "message_chunk", envelope(4)) == 5
    await log.flush()
    assert [e.seq for e in await log.read("c1", 4)] == [5]
    with pytest.raises(RetentionError):
        await log.read("c1", 3)


async def test_retention_by_age_and_by_count_together(make_log: LogFactory) -> None:
    clock = FakeClock()
    log = await aged_log(make_log, clock, retention_events=3)
    await new_conversation(log)
    for i in range(5):
        log.append("c1", "message_chunk", envelope(i))
    await log.flush()
    assert await log.oldest_seq("c1") == 3  # the count drops more
    clock.now = T0 + 50
    log.append("c1", "message_chunk", envelope(5))
    await log.flush()
    assert await log.oldest_seq("c1") == 4
    clock.now = T0 + 95
    log.append("c1", "message_chunk", envelope(6))
    await log.flush()
    assert await log.oldest_seq("c1") == 6  # now the age drops more
    assert [e.seq for e in await log.read("c1", 5)] == [6, 7]
    with pytest.raises(RetentionError):
        await log.read("c1", 4)


async def test_retention_by_age_is_swept_periodically(make_log: LogFactory) -> None:
    clock = FakeClock()
    # an age of 80 ms: the sweep runs every 10 ms (the tick), on its own
    log = await make_log(LogSettings(retention_age=0.08))
    log.clock = clock  # type: ignore[method-assign]
    await new_conversation(log)
    log.append("c1", "message_chunk", envelope(0))
    await log.flush()
    clock.now = T0 + 1

    async def swept() -> bool:
        return await log.oldest_seq("c1") == 2

    await eventually(swept, within=5, what="the periodic sweep trimmed the idle conversation")


async def test_redis_keys_written_before_retention_by_age_are_read_and_then_aged(
    redis_url: str,
) -> None:
    clock = FakeClock()
    url = f"{redis_url}?prefix=legacy"
    before = RedisEventLog(url, LogSettings())
    await before.open()
    try:
        await new_conversation(before)
        for i in range(3):
            before.append("c1", "message_chunk", envelope(i))
        await before.flush()
        # as written before commit times existed: no times, not in the sweep's index
        await before.redis.delete(before.keys.conversation("c1").times, before.keys.aging)
    finally:
        await before.close()
    log = RedisEventLog(url, LogSettings(retention_age=80.0))
    log.clock = clock  # type: ignore[method-assign]
    await log.open()
    try:
        assert await log.get_conversation("c1") is not None
        assert [e.seq for e in await log.read("c1", 0)] == [1, 2, 3]
        clock.now = T0 + 200
        await log.sweep_retention()  # not indexed: an old idle log stays whole
        assert await log.oldest_seq("c1") == 1
        # the next write times the old events too, and indexes the conversation
        await log.acquire_lease("c1")
        log.append("c1", "message_chunk", envelope(3))
        await log.flush()
        assert [e.seq for e in await log.read("c1", 0)] == [1, 2, 3, 4]
        clock.now = T0 + 300
        await log.sweep_retention()
        assert await log.oldest_seq("c1") == 5
        assert log.committed_seq("c1") == 4
        with pytest.raises(RetentionError):
            await log.read("c1", 0)
    finally:
        await log.close()


# -- state ---------------------------------------------------------------------


async def test_state_put_get(log: EventLog) -> None:
    await new_conversation(log)
    await new_conversation(log, "c2")
    log.put_state("c1", "context", b"\x00one")
    log.put_state("c1", "inbox", b"[]")
    log.put_state("c2", "context", b"other")
    await log.flush()
    assert await log.get_state("c1", "context") == b"\x00one"
    assert await log.get_state("c1", "inbox") == b"[]"
    assert await log.get_state("c2", "context") == b"other"
    assert await log.get_state("c1", "missing") is None
    log.put_state("c1", "context", b"two")
    await log.flush()
    assert await log.get_state("c1", "context") == b"two"


async def test_state_of_unknown_conversation_is_ignored(log: EventLog) -> None:
    log.put_state("ghost", "context", b"x")
    await log.flush()
    assert await log.get_state("ghost", "context") is None


async def test_state_is_ordered_with_events(log: EventLog) -> None:
    record = await new_conversation(log)
    log.append("c1", "message_chunk", envelope(0))
    log.put_state("c1", "context", b"after-1")
    log.append("c1", "message_chunk", envelope(1))
    await log.update_conversation(record)
    assert log.committed_seq("c1") == 2
    assert await log.get_state("c1", "context") == b"after-1"


async def test_a_burst_larger_than_a_batch_commits_in_order(log: EventLog) -> None:
    """Thousands of appends queued before the writer runs: batches are capped
    (Redis: one script never holds the server for long), so they commit over
    several round trips, in order, and ``flush`` waits for all of them."""
    await new_conversation(log)
    for i in range(3000):
        log.append("c1", "message_chunk", envelope(i))
    log.put_state("c1", "context", b"last")
    await log.flush()
    assert log.committed_seq("c1") == 3000
    events = await log.read("c1", 0, 5000)
    assert [e.seq for e in events] == list(range(1, 3001))
    assert json.loads(events[-1].envelope)["data"] == {"i": 2999}
    assert await log.get_state("c1", "context") == b"last"
