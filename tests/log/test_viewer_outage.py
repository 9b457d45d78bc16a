"""A viewer of a log whose store goes down ends with a resume hint.

Whichever log call finds the store down (the read, the wait or the
existence check after a wake-up), the stream must end cleanly with a hint:
an exception escaping the tail cuts the HTTP body mid-chunk instead.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from steerline.log.base import ConversationRecord, StoredEvent
from steerline.log.redis import RedisEventLog
from steerline.transports.tail import EndReason, LogTail, StreamPlan, StreamSettings
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio


class Sink:
    def __init__(self) -> None:
        self.received: list[StoredEvent] = []
        self.hints: list[int] = []

    async def events(self, batch: list[StoredEvent]) -> None:
        self.received.extend(batch)

    async def ping(self) -> None:
        pass

    async def hint(self, after: int) -> None:
        self.hints.append(after)


async def test_a_viewer_reading_while_redis_is_down_ends_with_a_hint(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    writer = RedisEventLog(f"{redis_server.url}?prefix=outage")
    await writer.open()
    await writer.create_conversation(ConversationRecord(id="c1"))
    await writer.close()
    viewer_log = RedisEventLog(f"{redis_server.url}?prefix=outage")
    await viewer_log.open()
    try:
        # Down before this process noticed: the viewer's first read (not
        # its wait) is the call that finds Redis gone.
        redis_server.stop()
        sink = Sink()
        with anyio.fail_after(10):
            reason = await LogTail(viewer_log, "c1", StreamPlan(after=0)).run(sink)
        assert reason is EndReason.UNAVAILABLE
        assert sink.hints == [0]
        assert sink.received == []
    finally:
        redis_server.start()
        await viewer_log.close()


async def test_a_viewer_waiting_on_redis_is_ended_by_the_outage_not_a_heartbeat(
    redis_server: RedisServer,
) -> None:
    """The reader noticing the outage ends the wait at once; the next
    heartbeat (an hour away here) is not what ends it."""
    log = RedisEventLog(f"{redis_server.url}?prefix=waiting")
    await log.open()
    try:
        await log.create_conversation(ConversationRecord(id="c1"))
        tail = LogTail(log, "c1", StreamPlan(after=0), StreamSettings(ping_interval=3600))
        sink = Sink()
        with anyio.fail_after(20):
            async with anyio.create_task_group() as group:

                async def view() -> None:
                    assert await tail.run(sink) is EndReason.UNAVAILABLE

                group.start_soon(view)
                await anyio.wait_all_tasks_blocked()
                redis_server.stop()
        assert sink.hints == [0]
    finally:
        redis_server.start()
        await log.close()
