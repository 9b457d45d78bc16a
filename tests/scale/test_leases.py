"""Leases and fencing on a real ``redis-server``, two services in one test
process standing for two server processes (each its own owner id, its own
connections, its own background tasks)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
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


@pytest.mark.parametrize("tool_name", ["block_worker", "block_loop"])
async def test_a_tool_blocking_longer_than_the_lease_ttl_keeps_the_lease(
    services: Callable[[], object], tool_name: str
) -> None:
    """Must-show 6: renewals come from a thread of their own, so neither a
    tool blocking its worker nor one blocking the event loop starves them."""
    a: ConversationService = await services()  # type: ignore[misc]
    b: ConversationService = await services()  # type: ignore[misc]
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
