"""The service layer under hostile or unlucky input (issue 8): each test here
failed before its fix. In-process, on real stores (memory and a sqlite file)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.lowlevel
import msgspec
import pytest

from steerline.core.errors import InvalidValueError
from steerline.core.events import AgentEnd, AgentEvent
from steerline.core.messages import as_user_content
from steerline.log.base import ConversationRecord, EventLog, LogSettings, StoredEvent
from steerline.log.memory import MemoryEventLog
from steerline.log.sqlite import SqliteEventLog
from steerline.log.tail import ConversationTail
from steerline.runtime.inbox import InboxLimits, QueuedMessage
from steerline.server.history import build_history
from steerline.service.conversation import Conversation, ConversationUnloadedError
from steerline.service.service import ConversationService, ServiceLimits, TooManyRunsError
from steerline.service.state import QUEUE_ITEMS, encode_queued
from steerline.wire.envelope import EventName
from steerline.wire.payloads import Content, ThreadMetadata

pytestmark = pytest.mark.anyio
TIMEOUT = 10.0
_decode = msgspec.json.Decoder()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def log_of(log: EventLog, cid: str) -> list[dict[str, object]]:
    await log.flush()
    events: list[StoredEvent] = []
    after = 0
    while batch := await log.read(cid, after, 1000):
        events += batch
        after = batch[-1].seq
    return [_decode.decode(e.envelope) for e in events]


def delivered_ids(envelopes: list[dict[str, object]]) -> list[str]:
    return [
        e["data"]["metadata"]["message_id"]  # type: ignore[index]
        for e in envelopes
        if e["event"] == "thread_started"
    ]


async def wait_idle(conv: Conversation) -> None:
    with anyio.fail_after(TIMEOUT):
        while conv.busy:
            await conv.idle.wait()


@pytest.fixture
async def service() -> AsyncIterator[ConversationService]:
    async with ConversationService(MemoryEventLog()) as service:
        yield service


# -- 1. bad text never reaches a shared task group ------------------------------------
async def test_lone_surrogates_are_refused_at_submit(service: ConversationService) -> None:
    conv = await service.create("t")
    with pytest.raises(InvalidValueError, match="not valid Unicode"):
        await conv.submit("hi", message_id="\ud800")
    with pytest.raises(InvalidValueError, match="not valid Unicode"):
        await conv.submit("bad \udfff text")
    with pytest.raises(InvalidValueError, match="limit is 200"):
        await conv.submit("hi", message_id="x" * 201)
    assert not conv.busy and not conv.agent.inbox.is_duplicate("\ud800")
    ok = await conv.submit("still fine", message_id="m1")
    await wait_idle(conv)
    assert ok.run_id and delivered_ids(await log_of(service.log, conv.id)) == ["m1"]


class _FailingSaveLog(MemoryEventLog):
    """A store whose record save fails for one conversation (a bug, a bad value)."""

    victim = ""

    async def update_conversation(self, record: ConversationRecord) -> None:
        if record.id == self.victim and record.status == "idle":
            raise RuntimeError("cannot save this record")
        await super().update_conversation(record)


async def test_one_conversations_failure_does_not_end_the_others() -> None:
    log = _FailingSaveLog()
    async with ConversationService(log) as service:
        bad = await service.create("t")
        good = await service.create("t")
        log.victim = bad.id
        slow = await good.submit("/delay 20\none two three four five")
        await bad.submit("this run's end-of-run save fails")
        await wait_idle(bad)
        await wait_idle(good)
        events = await log_of(log, good.id)
        assert [e["event"] for e in events][-1] == "done"
        assert slow.run_id in {e["data"].get("task_id") for e in events}  # type: ignore[union-attr]
        # the service still starts runs afterwards
        again = await good.submit("and again")
        await wait_idle(good)
        assert again.run_id and not service.shutting_down.is_set()


# -- 4. no stranded message at the end of a run ----------------------------------------
async def test_a_message_accepted_as_a_run_ends_starts_the_next_run(
    service: ConversationService,
) -> None:
    conv = await service.create("t")
    submitted: list[str] = []

    async def submit_late() -> None:
        acceptance = await conv.submit("late", message_id="late-1", start_if_idle=True)
        submitted.append(acceptance.message_id)

    async with anyio.create_task_group() as tg:

        def on_event(event: AgentEvent) -> None:
            if isinstance(event, AgentEnd) and not submitted and event.run_id:
                tg.start_soon(submit_late)

        conv.agent.subscribe(on_event)
        await conv.submit("first", message_id="first-1")
        with anyio.fail_after(TIMEOUT):
            while not submitted:
                await conv.idle.wait()
                await anyio.lowlevel.checkpoint()
        await wait_idle(conv)
    ids = delivered_ids(await log_of(service.log, conv.id))
    assert ids == ["first-1", "late-1"]
    assert not conv.agent.has_queued_messages()


# -- 5. one id, one delivery, durably ----------------------------------------------------
async def test_one_message_id_sent_concurrently_is_delivered_once(
    service: ConversationService,
) -> None:
    conv = await service.create("t")
    async with anyio.create_task_group() as tg:
        for i in range(10):
            tg.start_soon(
                lambda i=i: conv.submit(
                    "once", message_id="same", mode="auto", start_if_idle=i % 2 == 0
                )
            )
    await wait_idle(conv)
    assert delivered_ids(await log_of(service.log, conv.id)) == ["same"]
    assert not conv.agent.has_queued_messages()


def copy_database(source: Path, target: Path) -> None:
    for suffix in ("", "-wal"):
        if Path(f"{source}{suffix}").exists():
            shutil.copy(f"{source}{suffix}", f"{target}{suffix}")


async def test_an_accepted_message_id_survives_a_crash_mid_run(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    crashed = tmp_path / "crashed.db"
    async with ConversationService(SqliteEventLog(str(db))) as service:
        conv = await service.create("t")
        await conv.submit("/delay 200\nlong running words here", message_id="id-1")
        assert conv.busy
        copy_database(db, crashed)  # what a kill -9 now would leave behind
        conv.agent.abort()
    async with ConversationService(SqliteEventLog(str(crashed))) as restarted:
        again = await restarted.get("t", conv.id)
        acceptance = await again.submit("/delay 200\nlong running words here", message_id="id-1")
        assert acceptance.duplicate
        assert not again.busy


# -- 8. bounded memory and storage per change --------------------------------------------
class _CountingLog(MemoryEventLog):
    def __init__(self) -> None:
        super().__init__()
        self.written = 0

    def append(self, cid: str, event: str, envelope: bytes, run_id: str | None = None) -> int:
        self.written += len(envelope)
        return super().append(cid, event, envelope, run_id)

    def put_state(self, cid: str, key: str, value: bytes) -> None:
        self.written += len(value)
        super().put_state(cid, key, value)

    def put_item(self, cid: str, collection: str, key: str, value: bytes) -> None:
        self.written += len(key) + len(value)
        super().put_item(cid, collection, key, value)


async def test_a_queue_change_writes_only_what_changed() -> None:
    log = _CountingLog()
    limits = ServiceLimits(auto_continue=False, inbox=InboxLimits(max_messages=100))
    async with ConversationService(log, limits=limits) as service:
        conv = await service.create("t")
        for i in range(10_000):  # a full dedup window
            conv.agent.inbox.remember(f"old-{i:05d}")
        body = "x" * (64 * 1024)
        for i in range(60):
            await conv.submit(body, message_id=f"m{i}", mode="follow_up", start_if_idle=False)
        before = log.written
        await conv.submit(body, message_id="one-more", mode="follow_up", start_if_idle=False)
        per_change = log.written - before
        # the new body once, plus small events; not 61 bodies nor 10,000 ids
        assert per_change < 64 * 1024 + 32 * 1024, per_change
        queue_updated = [e for e in await log_of(log, conv.id) if e["event"] == "queue_updated"]
        assert max(len(msgspec.json.encode(e)) for e in queue_updated) < 32 * 1024
        last = queue_updated[-1]["data"]["payload"]["follow_up"]  # type: ignore[index]
        assert len(last) == 61 and last[-1]["id"] == "one-more" and last[-1]["truncated"]


async def test_queue_and_dedup_window_are_restored_from_items(tmp_path: Path) -> None:
    db = str(tmp_path / "q.db")
    limits = ServiceLimits(auto_continue=False)
    async with ConversationService(SqliteEventLog(db), limits=limits) as service:
        conv = await service.create("t")
        for i in range(3):
            await conv.submit(f"q{i}", message_id=f"q{i}", mode="follow_up", start_if_idle=False)
        await conv.submit("steer", message_id="s0", mode="steer", start_if_idle=False)
        await conv.clear_queue("steering")
        cid = conv.id
    async with ConversationService(SqliteEventLog(db), limits=limits) as service:
        conv = await service.get("t", cid)
        assert [m.id for m in conv.agent.inbox.messages("follow_up")] == ["q0", "q1", "q2"]
        assert not conv.agent.inbox.messages("steering")
        assert conv.agent.inbox.is_duplicate("s0") and conv.agent.inbox.is_duplicate("q1")


def test_the_hot_tail_is_bounded_in_bytes() -> None:
    tail = ConversationTail(hot_limit=4096, hot_bytes_limit=10_000)
    for seq in range(1, 101):
        tail.committed([StoredEvent(seq, "message_chunk", b"x" * 1000)])
    assert tail.hot_bytes <= 10_000 and len(tail.hot) == 10
    assert tail.from_hot(0, 10) is None  # older ones come from storage
    tail.committed([StoredEvent(101, "thread_started", b"y" * 50_000)])
    assert [e.seq for e in tail.hot] == [101]  # the newest stays, however large


async def test_idle_conversations_are_unloaded_and_deleted_ones_freed() -> None:
    limits = ServiceLimits(max_live_conversations=2, idle_unload_after=3600)
    async with ConversationService(MemoryEventLog(), limits=limits) as service:

        def live() -> set[str]:
            return {conv.id for conv in service.live_conversations()}

        a = await service.create("t")
        b = await service.create("t")
        detach = b.attach()  # b has a viewer: never unloaded while it does
        c = await service.create("t")
        assert live() == {b.id, c.id} and a.unloaded and not b.unloaded
        detach()
        d = await service.create("t")
        assert live() == {c.id, d.id} and b.unloaded
        # an unloaded conversation reloads from storage, as it was
        reloaded = await service.get("t", a.id)
        assert reloaded is not a and reloaded.id == a.id and live() == {d.id, a.id}
        with pytest.raises(ConversationUnloadedError):
            await a.submit("a stale object never runs a second agent")
        assert service.unload_idle(now=reloaded.last_used + 3598) == 0
        assert service.unload_idle(now=reloaded.last_used + 3601) == 2 and live() == set()
        deleted = await service.get("t", d.id)
        await service.delete("t", d.id)
        assert deleted.unloaded and live() == set()


# -- 10. history is always served ----------------------------------------------------------
CHUNK = (
    b'{"event":"message_chunk","data":{"conversation_id":"c","role":"agent",'
    b'"item_id":"i1","payload":{"content":"x"}}}'
)


async def test_history_is_served_while_retention_trims_the_log(tmp_path: Path) -> None:
    log = SqliteEventLog(str(tmp_path / "h.db"), LogSettings(retention_events=50))
    await log.open()
    try:
        await log.create_conversation(ConversationRecord(id="c"))
        stop = anyio.Event()

        async def writer() -> None:
            while not stop.is_set():
                for _ in range(20):
                    log.append("c", "message_chunk", CHUNK)
                await log.flush()

        async with anyio.create_task_group() as tg:
            tg.start_soon(writer)
            for _ in range(100):
                history = await build_history(log, "c")
                assert history["last_seq"] >= 0
            stop.set()
    finally:
        await log.close()


async def test_a_tenant_runs_at_most_its_limit_of_conversations_at_once() -> None:
    limits = ServiceLimits(max_running_per_tenant=1)
    async with ConversationService(MemoryEventLog(), limits=limits) as service:
        busy = await service.create("t")
        other = await service.create("t")
        elsewhere = await service.create("u")
        await busy.submit("/delay 50\none two three four")
        with pytest.raises(TooManyRunsError):
            await other.submit("refused", message_id="r1")
        assert not other.busy and not other.agent.inbox.is_duplicate("r1")
        started = await elsewhere.submit("another tenant is not affected")
        assert started.run_id
        queued = await busy.submit("a follow-up needs no new run", mode="follow_up")
        assert queued.queued
        busy.agent.abort()
        await wait_idle(busy)
        assert (await other.submit("now it may")).run_id
        await wait_idle(other)
        await wait_idle(elsewhere)


async def test_recovery_keeps_a_taken_message_unless_its_delivery_reached_the_log(
    tmp_path: Path,
) -> None:
    """A crash between "taken from the queue" and "delivered" loses nothing and
    delivers nothing twice: the stored item stays until thread_started is logged."""
    db = str(tmp_path / "r.db")
    async with ConversationService(SqliteEventLog(db)) as service:
        conv = await service.create("t")
        since = conv.last_seq
        for message_id in ("taken-not-delivered", "taken-and-delivered"):
            message = QueuedMessage(
                id=message_id, content=as_user_content(message_id), lane="follow_up"
            )
            service.log.put_item(conv.id, QUEUE_ITEMS, message_id, encode_queued(message, since))
        conv.translator.task_id = "run-lost"
        conv.translator.emit(
            EventName.THREAD_STARTED,
            "user",
            payload=Content(content="taken-and-delivered"),
            metadata=ThreadMetadata(delivery="follow_up", message_id="taken-and-delivered"),
        )
        conv.record.status, conv.record.active_run_id = "running", "run-lost"
        conv.record.owner = "a process that died"
        await service.log.update_conversation(conv.record)
        conv.record.status = "idle"  # this process never ran it: do not end it here
        cid = conv.id
    async with ConversationService(SqliteEventLog(db)) as restarted:
        conv = await restarted.get("t", cid)
        assert [m.id for m in conv.agent.inbox.messages("follow_up")] == ["taken-not-delivered"]
        events = await log_of(restarted.log, cid)
        assert [e["event"] for e in events][-3:] == ["system_failed", "task_failed", "done"]
        assert delivered_ids(events) == ["taken-and-delivered"]
    async with ConversationService(SqliteEventLog(db)) as again:  # and it stays that way
        conv = await again.get("t", cid)
        assert [m.id for m in conv.agent.inbox.messages("follow_up")] == ["taken-not-delivered"]


async def test_recovery_does_not_end_a_run_whose_done_is_already_logged(tmp_path: Path) -> None:
    """The run's ``done`` committed, the record's "idle" did not (a crash between)."""
    db = str(tmp_path / "d.db")
    async with ConversationService(SqliteEventLog(db)) as service:
        conv = await service.create("t")
        started = await conv.submit("hello")
        await wait_idle(conv)
        record = conv.record
        record.status, record.active_run_id, record.owner = "running", started.run_id, "dead"
        await service.log.update_conversation(record)
        record.status, record.active_run_id = "idle", None
        cid = conv.id
    async with ConversationService(SqliteEventLog(db)) as restarted:
        conv = await restarted.get("t", cid)
        events = await log_of(restarted.log, cid)
        assert [e["event"] for e in events].count("done") == 1
        assert "system_failed" not in [e["event"] for e in events]
        assert conv.record.status == "idle"


async def test_a_conversation_is_created_with_its_first_event_in_one_commit(
    tmp_path: Path,
) -> None:
    db = tmp_path / "c.db"
    crashed = tmp_path / "crashed.db"
    async with ConversationService(SqliteEventLog(str(db))) as service:
        conv = await service.create("t")
        copy_database(db, crashed)  # right after the create: nothing else was awaited
        cid = conv.id
    async with ConversationService(SqliteEventLog(str(crashed))) as restarted:
        events = await log_of(restarted.log, cid)
        assert [(e["event"], e["seq"]) for e in events] == [("conversation_started", 1)]
        conv = await restarted.get("t", cid)
        await conv.submit("and on from there")
        await wait_idle(conv)
        assert [e["seq"] for e in await log_of(restarted.log, cid)][:3] == [1, 2, 3]


async def test_a_reordered_queue_is_restored_in_its_new_order(tmp_path: Path) -> None:
    """A move changes only arrival numbers (its neighbours' too): they are stored."""
    db = str(tmp_path / "o.db")
    limits = ServiceLimits(auto_continue=False)
    async with ConversationService(SqliteEventLog(db), limits=limits) as service:
        conv = await service.create("t")
        for name in ("a", "b", "c"):
            await conv.submit(name, message_id=name, mode="follow_up", start_if_idle=False)
        conv.agent.move_queued("c", before="a")
        await service.log.flush()
        order = [m.id for m in conv.agent.inbox.messages("follow_up")]
        cid = conv.id
    assert order == ["c", "a", "b"]
    async with ConversationService(SqliteEventLog(db), limits=limits) as service:
        conv = await service.get("t", cid)
        assert [m.id for m in conv.agent.inbox.messages("follow_up")] == order


async def test_the_status_says_idle_as_soon_as_done_is_logged(
    service: ConversationService,
) -> None:
    """A client that read ``done`` and then asks for the status must see "idle"
    (and in the conversation list too), though the task winding the run down
    still holds the conversation for a few awaits (CI saw "running" here)."""
    conv = await service.create("t")
    seen: list[tuple[object, object]] = []

    async def record_at_end() -> None:
        listed = await service.list_records("t", limit=10, offset=0)
        seen.append((conv.status()["status"], listed[0].status))

    def on_event(event: AgentEvent) -> None:
        if isinstance(event, AgentEnd):  # after the conversation logged done
            seen.append((conv.status()["status"], conv.status()["active_run_id"]))
            service_group.start_soon(record_at_end)

    conv.agent.subscribe(on_event)
    async with anyio.create_task_group() as service_group:
        await conv.submit("hi")
        await wait_idle(conv)
    assert seen == [("idle", None), ("idle", "idle")]
