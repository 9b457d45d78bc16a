"""Leases and fencing on a real ``redis-server``, two services in one test
process standing for two server processes (each its own owner id, its own
connections, its own background tasks)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from steerline.core.errors import InvalidValueError, StorageUnavailableError
from steerline.demo import demo_agent
from steerline.log.base import LogSettings
from steerline.log.redis import RedisEventLog
from steerline.log.shared import LeaseState
from steerline.service.agents import AgentRegistry, AgentSpec
from steerline.service.cluster import RemoteConversation
from steerline.service.conversation import Conversation
from steerline.service.service import ConversationService
from steerline.tools.base import tool
from steerline.wire.envelope import EventName
from tests.redis_server import RedisServer
from tests.server.clients import eventually

pytestmark = pytest.mark.anyio

TTL = 1.0


@tool
def block_worker(seconds: float) -> str:
    """Block the worker thread it runs in (a synchronous tool doing blocking I/O).

    Args:
        seconds: How long to block.
    """
    time.sleep(seconds)
    return "unblocked"


@tool
async def block_loop(seconds: float) -> str:
    """Block the event loop itself (a badly written async tool).

    Args:
        seconds: How long to block.
    """
    time.sleep(seconds)  # noqa: ASYNC251 (blocking the loop is what it is for)
    return "unblocked"


def registry() -> AgentRegistry:
    def build() -> object:
        return demo_agent(tools=[block_worker, block_loop])

    return AgentRegistry([AgentSpec(name="blocking", build=build)])  # type: ignore[arg-type]


Services = Callable[[], "anyio.abc.AsyncResource"]


@pytest.fixture
async def services(redis_url: str) -> AsyncIterator[Callable[[], object]]:
    async with AsyncExitStack() as stack:

        async def make() -> ConversationService:
            log = RedisEventLog(f"{redis_url}?lease_ttl={TTL}")
            service = ConversationService(log, registry())
            return await stack.enter_async_context(service)

        yield make


async def events_of(service: ConversationService, cid: str) -> list[str]:
    await service.log.flush()
    stored = await service.log.read(cid, 0, 10_000)
    return [e.event for e in stored]


async def wait_idle(conversation: Conversation, within: float = 15) -> None:
    with anyio.fail_after(within):
        while conversation.busy:
            await conversation.idle.wait()


@pytest.fixture(params=["redis", "redis-cluster"])
async def services_anywhere(
    request: pytest.FixtureRequest,
) -> AsyncIterator[Callable[[], object]]:
    """``services`` on one Redis, or on the session's three-node cluster."""
    if request.param == "redis":
        url = f"{request.getfixturevalue('redis_url')}?lease_ttl={TTL}"
    else:
        url = (
            f"{request.getfixturevalue('redis_cluster_url')}?lease_ttl={TTL}"
            f"&prefix=l{uuid.uuid4().hex[:10]}"
        )
    async with AsyncExitStack() as stack:

        async def make() -> ConversationService:
            service = ConversationService(RedisEventLog(url), registry())
            return await stack.enter_async_context(service)

        yield make


@pytest.mark.parametrize("tool_name", ["block_worker", "block_loop"])
async def test_a_tool_blocking_longer_than_the_lease_ttl_keeps_the_lease(
    services_anywhere: Callable[[], object], tool_name: str
) -> None:
    """Must-show 6: renewals come from a thread of their own, so neither a
    tool blocking its worker nor one blocking the event loop starves them
    (on a cluster too, where they go one by one)."""
    a: ConversationService = await services_anywhere()  # type: ignore[misc]
    b: ConversationService = await services_anywhere()  # type: ignore[misc]
    conversation = await a.create("t", "blocking")
    seconds = TTL * 3
    await conversation.submit(f'/call {tool_name} {{"seconds": {seconds}}}')
    await wait_idle(conversation)
    # the other process never found the lease free, so never ended the run
    assert await b.sweep() == 0
    lease = await b.shared.acquire_lease(conversation.id)  # type: ignore[union-attr]
    assert lease.state is LeaseState.HELD and lease.holder == a.owner
    names = await events_of(a, conversation.id)
    assert names.count(EventName.DONE) == 1
    assert EventName.SYSTEM_FAILED not in names
    assert names[-2:] == [EventName.TASK_COMPLETED, EventName.DONE]


async def test_a_stale_owners_writes_are_refused_and_its_run_stopped(
    services: Callable[[], object], redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A lease taken over (here: deleted behind the owner's back, as an expiry
    would) fences the old owner: its next write is refused, its run stops,
    and the new owner ends the run once in the log."""
    a: ConversationService = await services()  # type: ignore[misc]
    b: ConversationService = await services()  # type: ignore[misc]
    conversation = await a.create("t")
    await conversation.submit('/call sleep {"seconds": 30}')

    async def tool_running() -> bool:
        return EventName.TOOL_CALL_STARTED in await events_of(a, conversation.id)

    await eventually(tool_running, within=5, what="the tool call started")
    log_b = b.log
    assert isinstance(log_b, RedisEventLog)
    # the lease vanishes (as when renewals could not reach Redis for a TTL)
    await log_b.redis.delete(log_b.keys.conversation(conversation.id).lease)
    assert await b.sweep() == 1  # b takes it over and ends the run
    with caplog.at_level(logging.WARNING, "steerline"):
        await wait_idle(conversation, within=TTL * 4)  # a learns and stops its run
    names = await events_of(b, conversation.id)
    assert names.count(EventName.DONE) == 1
    assert names[-3:] == [EventName.SYSTEM_FAILED, EventName.TASK_FAILED, EventName.DONE]
    assert a.shared is not None and not a.shared.holds(conversation.id)
    # a's abort could write nothing after b's end: the log ends with b's done
    assert (await events_of(b, conversation.id))[-1] == EventName.DONE


async def test_a_prompt_during_the_recovery_of_a_dead_owners_run_waits_for_its_end(
    services: Callable[[], object],
) -> None:
    """The process ending a dead owner's run loads the conversation to write
    the end; a prompt reaching it meanwhile (a client's, or one forwarded to
    the new holder) waits for that end. (Before: it was given the
    half-recovered conversation, started a run at once, and the dead run's
    system_failed / task_failed / done came after that new run's done; seen
    by hand with three servers, a steer sent through C as B was SIGKILLed.)"""
    a: ConversationService = await services()  # type: ignore[misc]
    b: ConversationService = await services()  # type: ignore[misc]
    conversation = await a.create("t")
    cid = conversation.id
    await conversation.submit('/call sleep {"seconds": 30}')

    async def tool_running() -> bool:
        return EventName.TOOL_CALL_STARTED in await events_of(a, cid)

    await eventually(tool_running, within=5, what="the tool call started")
    # a dead process sweeps no more: else a's own periodic sweep (every TTL/3)
    # may find the lease deleted below free before b does, take it back and
    # end the run itself, and b's recovery this test pauses never comes
    a_swept = anyio.Event()

    async def dead_sweep() -> int:
        a_swept.set()
        return 0

    a.sweep = dead_sweep  # type: ignore[method-assign]
    with anyio.fail_after(10):
        await a_swept.wait()  # a sweep of a's under way before has returned
    log_b = b.log
    assert isinstance(log_b, RedisEventLog)
    # a's lease is gone (as when a dies); b's sweep will end a's run
    await log_b.redis.delete(log_b.keys.conversation(cid).lease)
    recovering, proceed, answered = anyio.Event(), anyio.Event(), anyio.Event()
    unfinished_run = b._unfinished_run

    async def paused(record: object) -> object:
        recovering.set()
        await proceed.wait()
        return await unfinished_run(record)  # type: ignore[arg-type]

    b._unfinished_run = paused  # type: ignore[method-assign,assignment]

    async def prompt() -> None:
        await recovering.wait()
        handle = await b.open("t", cid)
        await handle.submit("next question")
        answered.set()

    async def waiting_or_answered() -> bool:
        lock = b._loading.get(cid)
        return answered.is_set() or (lock is not None and lock.statistics().tasks_waiting > 0)

    with anyio.fail_after(30):  # a failure, never a hang, if the recovery is not b's
        async with anyio.create_task_group() as tg:
            tg.start_soon(b.sweep)
            tg.start_soon(prompt)
            await recovering.wait()
            await eventually(waiting_or_answered, what="the prompt answered or waiting")
            proceed.set()
    held = await b.get_held(cid)
    await wait_idle(held)
    await b.log.flush()
    stored = await b.log.read(cid, 0, 10_000)
    runs = [(e.event, e.run_id) for e in stored if e.event in ("task_started", "done")]
    first, second = runs[0][1], runs[-1][1]
    assert first != second
    assert runs == [
        ("task_started", first),
        ("done", first),
        ("task_started", second),
        ("done", second),
    ], "the dead run ends before the next one starts"
    names = [e.event for e in stored if e.run_id == first]
    assert names[-3:] == [EventName.SYSTEM_FAILED, EventName.TASK_FAILED, EventName.DONE]


async def test_a_redis_that_may_evict_keys_is_refused(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "lru", maxmemory_policy="allkeys-lru") as server:
        log = RedisEventLog(server.url)
        with pytest.raises(InvalidValueError, match="noeviction"):
            await log.open()


async def test_a_redis_without_aof_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with RedisServer(tmp_path / "noaof", appendonly=False) as server:
        log = RedisEventLog(server.url)
        with caplog.at_level(logging.WARNING, "steerline"):
            await log.open()
        await log.close()
    assert any("without AOF" in r.getMessage() for r in caplog.records)


async def test_an_unreachable_redis_is_a_clear_error() -> None:
    from tests.server.harness import free_port

    log = RedisEventLog(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(StorageUnavailableError, match="cannot reach Redis"):
        await log.open()


@pytest.mark.parametrize(
    "query",
    [
        "redis://127.0.0.1:6379/0?lease_ttl=0",
        "redis://127.0.0.1:6379/0?lease_ttl=abc",
        "redis://127.0.0.1:6379/0?lease_ttl=1e9",
        "redis://127.0.0.1:6379/0?prefix=",
        "redis://127.0.0.1:6379/0?prefix=a{b}",
        "redis://127.0.0.1:6379/0?colour=blue",
        "redis://",
        "redis:///0",
        "redis://127.0.0.1:abc/0",
        "redis://127.0.0.1:6379/x",
        "http://127.0.0.1:6379/0",
    ],
)
def test_bad_urls_are_refused(query: str) -> None:
    with pytest.raises(InvalidValueError):
        RedisEventLog(query, LogSettings())


async def test_a_conversation_no_viewer_here_watches_is_forgotten(
    services: Callable[[], object],
) -> None:
    """A conversation held elsewhere that a viewer here once waited on leaves
    this process's reader and memory once nobody here waits on it (before:
    every conversation ever viewed from a process stayed in its ``XREAD``
    and its hot tail in memory for the life of the process)."""
    a: ConversationService = await services()  # type: ignore[misc]
    b: ConversationService = await services()  # type: ignore[misc]
    conversation = await a.create("t")
    await conversation.submit("hello")
    await wait_idle(conversation)
    await a.log.flush()  # nothing more comes: the viewer below waits on
    log_b = b.log
    assert isinstance(log_b, RedisEventLog)
    log_key = log_b.keys.conversation(conversation.id).log
    record = await log_b.get_conversation(conversation.id)
    assert record is not None
    head = log_b.committed_seq(conversation.id)
    log_b.forget_after = 0.2

    async def watched() -> bool:
        return log_key in log_b.streams_to_read()

    async with anyio.create_task_group() as tg:
        tg.start_soon(log_b.wait, conversation.id, head)  # a viewer waiting here
        await eventually(watched, what="b reading the log for its viewer")
        # waited on: kept however long it waits
        log_b.forget_idle(time.monotonic() + 3600)
        assert await watched()
        tg.cancel_scope.cancel()  # the viewer leaves

    async def forgotten() -> bool:
        return not await watched()

    await eventually(forgotten, within=15, what="b forgetting the conversation")
    # a viewer that comes back reads on from Redis and is watched again
    assert await log_b.get_conversation(conversation.id) is not None
    with anyio.move_on_after(0.1):
        await log_b.wait(conversation.id, log_b.committed_seq(conversation.id))
    assert await watched()


async def test_a_viewer_waiting_here_outlives_a_lease_taken_and_let_go_here(
    redis_url: str,
) -> None:
    """A viewer waits here on a conversation run elsewhere; this process takes
    its lease (as the sweep does to end a dead owner's run) and lets it go
    again (unloaded); the next holder's events still reach the viewer.
    (Before: letting the lease go dropped the tail the viewer waited on, and
    the viewer saw nothing more until its next heartbeat, 15 s later.)"""
    from steerline.log.base import ConversationRecord

    log_a = RedisEventLog(f"{redis_url}?lease_ttl={TTL}")
    log_b = RedisEventLog(f"{redis_url}?lease_ttl={TTL}")
    await log_a.open()
    await log_b.open()
    try:
        await log_a.create_conversation(ConversationRecord(id="v1"))
        log_a.append("v1", "message_chunk", b'{"event":"message_chunk","data":{}}')
        await log_a.flush()
        assert await log_a.release_lease("v1")
        assert await log_b.get_conversation("v1") is not None
        head = log_b.committed_seq("v1")
        assert head == 1
        woken = anyio.Event()

        async def viewer() -> None:
            # as a stream does: a wake-up with nothing new is waited again
            while log_b.committed_seq("v1") <= head:
                await log_b.wait("v1", head)
            woken.set()

        async def waiting() -> bool:
            local = log_b._locals.get("v1")
            return local is not None and bool(local.tail._waiters)

        async with anyio.create_task_group() as tg:
            tg.start_soon(viewer)  # waiting here

            async def watched() -> bool:
                return log_b.keys.conversation("v1").log in log_b.streams_to_read()

            await eventually(watched, what="b reading the log for its viewer")
            assert (await log_b.acquire_lease("v1")).state is LeaseState.ACQUIRED
            await eventually(waiting, what="the viewer waiting on the held conversation")
            assert await log_b.release_lease("v1")
            log_b.release("v1")  # what the service does once it unloaded it
            assert (await log_a.acquire_lease("v1")).state is LeaseState.ACQUIRED
            log_a.append("v1", "message_chunk", b'{"event":"message_chunk","data":{}}')
            await log_a.flush()
            with anyio.fail_after(5):  # the viewer's wait ends: it has news
                await woken.wait()
        assert log_b.committed_seq("v1") == 2
        assert [e.seq for e in await log_b.read("v1", head)] == [2]
    finally:
        await log_b.close()
        await log_a.close()


def test_a_password_in_the_url_is_never_shown() -> None:
    log = RedisEventLog("redis://user:s3cret@127.0.0.1:6379/0")
    assert log.options.display == "redis://user:***@127.0.0.1:6379/0"
    plain = "redis://127.0.0.1:6379/0"
    assert RedisEventLog(plain).options.display == plain


async def test_a_lease_unconfirmed_through_an_outage_is_asked_for_again(
    services: Callable[[], object],
) -> None:
    """A process whose renewals failed for most of a TTL (Redis out of reach)
    does not act on its lease: it asks Redis, finds it taken over, forgets
    what it had loaded and forwards the command to the new holder (before:
    it ran the message here, every write was refused and the client's stream
    waited for a done that never came)."""
    a: ConversationService = await services()  # type: ignore[misc]
    b: ConversationService = await services()  # type: ignore[misc]
    conversation = await a.create("t")
    await conversation.submit("hello")
    await wait_idle(conversation)
    await a.log.flush()  # nothing left to write (a refused write would tell a)
    log_a, log_b = a.log, b.log
    assert isinstance(log_a, RedisEventLog) and isinstance(log_b, RedisEventLog)
    # the lease expired during an outage and b took it over; a's renewals
    # have not been confirmed since (its keeper thread could not reach Redis)
    await log_b.redis.delete(log_b.keys.conversation(conversation.id).lease)
    keeper = log_a._keeper
    assert keeper is not None
    keeper._stopping.set()  # no renewal from now on (it would notice the loss)
    keeper._thread.join()
    keeper.confirmed[conversation.id] = 0.0
    assert (await log_b.acquire_lease(conversation.id)).state is LeaseState.ACQUIRED
    handle = await a.open("t", conversation.id)
    assert isinstance(handle, RemoteConversation), "a must not run it on a stale lease"
    assert conversation.id not in {c.id for c in a.live_conversations()}
    accepted = await handle.submit("again")
    assert accepted.run_id is not None
    held = await b.get_held(conversation.id)
    await wait_idle(held)
    names = await events_of(b, conversation.id)
    assert names.count(EventName.DONE) == 2 and names[-1] == EventName.DONE


async def test_the_process_stream_keeps_its_expiry_while_the_process_lives(
    redis_url: str,
) -> None:
    """The process's own stream (replies, wake-ups) expires a day after the
    process is gone; its expiry is renewed while it lives (set once at start, a
    key re-created by a requester after a day would never expire)."""
    log = RedisEventLog(redis_url)
    await log.open()
    try:
        reader = log._reader
        own = log.keys.process(log.owner)
        assert 0 < await log.redis.ttl(own) <= reader.own_ttl
        await log.redis.persist(own)  # as if the key had been re-created
        assert await log.redis.ttl(own) == -1
        reader.refresh_every = 0.0  # renew at the reader's next round
        reader.watch_changed()

        async def renewed() -> bool:
            return bool(await log.redis.ttl(own) > 0)

        await eventually(renewed, what="the reader renewing its stream's expiry")
    finally:
        await log.close()


async def test_a_request_arriving_while_an_unloaded_conversations_lease_is_let_go(
    services: Callable[[], object],
) -> None:
    """An idle conversation is unloaded and its lease let go in the background;
    a request arriving meanwhile (after the letting go began, before Redis
    answered it) must find the conversation held, or take its lease again,
    never run it here on a lease already let go (its writes would be refused)."""
    a: ConversationService = await services()  # type: ignore[misc]
    conversation = await a.create("t")
    await conversation.submit("hello")
    await wait_idle(conversation)
    await a.log.flush()
    a._unload(conversation)
    await anyio.lowlevel.checkpoint()  # the letting go starts: it waits on Redis now
    again = await a.open("t", conversation.id)
    assert isinstance(again, Conversation)
    await again.submit("are you there?")
    await wait_idle(again)
    names = await events_of(a, conversation.id)
    assert names.count(EventName.DONE) == 2, names
    assert EventName.SYSTEM_FAILED not in names
    assert a.shared is not None and a.shared.holds(conversation.id)
