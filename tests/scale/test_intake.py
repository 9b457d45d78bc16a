"""Messages queued by a process that does not hold the conversation's lease
(SPEC §4, issue 13): one INTAKE script queues and logs them; the holder
learns of them from the log. Two services in one test process stand for two
server processes, on a real ``redis-server``."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import pytest

from steerline.log.base import ConversationRecord, LogSettings
from steerline.log.redis import RedisEventLog
from steerline.service.cluster import RemoteConversation, stored_queue
from steerline.service.conversation import Conversation
from steerline.service.service import ConversationService
from steerline.wire.envelope import EventName, queued_message_id, thread_message_id
from tests.redis_server import RedisServer
from tests.server.clients import eventually

pytestmark = pytest.mark.anyio

TTL = 2.0


@pytest.fixture(params=["redis", "redis-cluster"])
def store_url(request: pytest.FixtureRequest) -> str:
    """One Redis, or a three-node Redis Cluster (shared: keys of this test only)."""
    if request.param == "redis":
        return f"{request.getfixturevalue('redis_url')}?lease_ttl={TTL}"
    url = request.getfixturevalue("redis_cluster_url")
    return f"{url}?lease_ttl={TTL}&prefix=i{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def services(store_url: str) -> AsyncIterator[Callable[[], object]]:
    async with AsyncExitStack() as stack:

        async def make() -> ConversationService:
            log = RedisEventLog(store_url)
            return await stack.enter_async_context(ConversationService(log))

        yield make


async def running_a_tool(service: ConversationService, seconds: float) -> Conversation:
    conversation = await service.create("t")
    await conversation.submit(f'/call sleep {{"seconds": {seconds}}}')

    async def tool_running() -> bool:
        await service.log.flush()
        stored = await service.log.read(conversation.id, 0, 1000)
        return any(e.event == EventName.TOOL_CALL_STARTED for e in stored)

    await eventually(tool_running, within=10, what="the tool call started")
    return conversation


async def wait_idle(conversation: Conversation, within: float = 20) -> None:
    with anyio.fail_after(within):
        while conversation.busy:
            await conversation.idle.wait()


async def stored_events(service: ConversationService, cid: str) -> list[tuple[int, str, bytes]]:
    await service.log.flush()
    return [(e.seq, e.event, e.envelope) for e in await service.log.read(cid, 0, 10_000)]


def queued_ids(events: list[tuple[int, str, bytes]]) -> list[str | None]:
    return [queued_message_id(b) for _s, name, b in events if name == EventName.MESSAGE_QUEUED]


def delivered_ids(events: list[tuple[int, str, bytes]]) -> list[str | None]:
    return [thread_message_id(b) for _s, name, b in events if name == EventName.THREAD_STARTED]


async def test_a_steer_through_another_process_needs_neither_lease_nor_holder(
    services: Callable[[], object],
) -> None:
    """The holder's reader is stopped (it hears no wake-up) and it answers
    no control request. A steer through the other process is queued and
    logged there all the same (a forwarded one would wait for an answer
    that never comes); the holder finds it in the log (its periodic poll)
    and its run takes it after the tool, once."""
    a: ConversationService = await services()  # type: ignore[misc]
    b: ConversationService = await services()  # type: ignore[misc]
    conversation = await running_a_tool(a, 4.0)
    cid = conversation.id
    assert isinstance(a.log, RedisEventLog) and a.log._reader is not None
    await a.log._reader.stop()

    async def deaf(_request: object) -> None:
        await anyio.sleep_forever()

    a.log._on_control = deaf
    handle = await b.open("t", cid)
    assert isinstance(handle, RemoteConversation)
    with anyio.fail_after(5):
        acceptance = await handle.submit("turn left", mode="steer", message_id="steer-1")
    assert acceptance.queued and acceptance.lane == "steering" and acceptance.position == 0
    assert acceptance.run_id == conversation.record.active_run_id
    logged = await stored_events(b, cid)
    seq, name, envelope = next(e for e in logged if e[0] == acceptance.after + 1)
    assert (name, queued_message_id(envelope)) == (EventName.MESSAGE_QUEUED, "steer-1")
    assert envelope.endswith(b',"seq":%d}' % seq)

    accepted_at = (await stored_queue(b.log, cid)).steering[0].created_at

    async def taken_in() -> bool:
        return conversation.agent.inbox.find("steer-1") is not None

    await eventually(taken_in, what="the holder took the steer into its inbox")
    message = conversation.agent.inbox.find("steer-1")
    assert message is not None and message.created_at == accepted_at, "its time kept"

    await wait_idle(conversation)
    events = await stored_events(a, cid)
    assert [s for s, _n, _b in events] == list(range(1, len(events) + 1)), "gapless"
    assert queued_ids(events).count("steer-1") == 1
    assert delivered_ids(events).count("steer-1") == 1
    assert events[-1][1] == EventName.DONE


async def test_one_id_to_the_holder_and_another_process_at_once_is_queued_once(
    services: Callable[[], object],
) -> None:
    """A retry racing through two processes while the run is busy: the
    holder claims each new id in Redis before it accepts it, so exactly one
    of the two accepts and the other answers "duplicate"."""
    a: ConversationService = await services()  # type: ignore[misc]
    b: ConversationService = await services()  # type: ignore[misc]
    conversation = await running_a_tool(a, 4.0)
    cid = conversation.id
    handle = await b.open("t", cid)
    assert isinstance(handle, RemoteConversation)
    for round_ in range(8):
        assert conversation.busy, "the run ended before the messages were sent (too slow)"
        message_id = f"twice-{round_}"
        duplicates: list[bool] = []

        async def send(
            target: Conversation | RemoteConversation,
            mid: str = message_id,
            duplicates: list[bool] = duplicates,
        ) -> None:
            acceptance = await target.submit(f"once {mid}", mode="follow_up", message_id=mid)
            duplicates.append(acceptance.duplicate)

        async with anyio.create_task_group() as tg:
            tg.start_soon(send, conversation)
            tg.start_soon(send, handle)
        assert sorted(duplicates) == [False, True], message_id
    await wait_idle(conversation)
    events = await stored_events(a, cid)
    for round_ in range(8):
        assert queued_ids(events).count(f"twice-{round_}") == 1
        assert delivered_ids(events).count(f"twice-{round_}") == 1


async def test_what_another_process_queues_between_two_commits_keeps_the_log_gapless(
    store_url: str,
) -> None:
    """The holder numbers its appends provisionally; COMMIT gives them their
    seqs after whatever INTAKE appended meanwhile, and the holder's tail
    (what its viewers read) reads the foreign event in between."""
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(ConversationService(RedisEventLog(store_url)))
        b = await stack.enter_async_context(ConversationService(RedisEventLog(store_url)))
        conversation = await running_a_tool(a, 3.0)
        handle = await b.open("t", conversation.id)
        assert isinstance(handle, RemoteConversation)
        for i in range(5):
            assert conversation.busy, "the run ended before the messages were sent (too slow)"
            await handle.submit(f"more {i}", mode="follow_up", message_id=f"more-{i}")
        await wait_idle(conversation)
        from_redis = await stored_events(b, conversation.id)
        # the holder's own read comes from its tail (memory), not Redis
        tail = a.log.committed_seq(conversation.id)
        from_memory = [
            (e.seq, e.event, e.envelope) for e in await a.log.read(conversation.id, 0, 10_000)
        ]
        assert tail == from_redis[-1][0]
        assert from_memory == from_redis
        assert [s for s, _n, _b in from_redis] == list(range(1, len(from_redis) + 1))
        assert queued_ids(from_redis).count("more-0") == 1


async def test_a_retried_commit_appends_nothing_twice(redis_url: str) -> None:
    """A batch whose reply was lost is sent again: its token is found and
    nothing is appended twice (the script numbers appends itself, so seqs
    alone could not tell a retry from a new batch)."""
    log = RedisEventLog(redis_url)
    await log.open()
    try:
        await log.create_conversation(ConversationRecord(id="conv-retry"))
        keys = log.keys.conversation("conv-retry")
        lease = f"{log.owner}|1"
        args = [lease, 0, 1000, 0, f"{lease}#1", "A", "1", "e", b'{"event":"e","seq":1}', ""]
        first = await log._scripts["COMMIT"](keys=keys.fixed, args=args)
        again = await log._scripts["COMMIT"](keys=keys.fixed, args=args)
        assert first[:2] == again[:2] == [b"ok", 1]
        assert await log.redis.xlen(keys.log) == 1
        other = [*args[:4], f"{lease}#2", "A", "1", "e", b'{"event":"e","seq":1}', ""]
        assert (await log._scripts["COMMIT"](keys=keys.fixed, args=other))[1] == 2
        stored = await log.redis.xrange(keys.log)
        assert [entry_id for entry_id, _f in stored] == [b"1-0", b"2-0"]
        assert stored[1][1][b"b"] == b'{"event":"e","seq":2}', "sealed again with its seq"
    finally:
        await log.close()


async def test_every_pooled_connection_reconnects_after_a_redis_restart() -> None:
    """Requests in flight together leave several connections in the pool; a
    Redis restart closes them all. Each one's next command reconnects and
    succeeds (redis-py's synchronous Retry, given to the asyncio client,
    never retried: the first request on each stale connection was a 503)."""
    with tempfile.TemporaryDirectory() as directory, RedisServer(Path(directory)) as server:
        log = RedisEventLog(server.url, LogSettings())
        await log.open()
        try:
            await log.create_conversation(ConversationRecord(id="conv-pool"))
            async with anyio.create_task_group() as tg:
                for i in range(6):
                    tg.start_soon(log.claim, "conv-pool", "seen", f"before-{i}")
            server.restart()
            for i in range(6):
                assert await log.claim("conv-pool", "seen", f"after-{i}")
        finally:
            await log.close()
