"""On a Redis Cluster: which processes read which conversation's log, and
telling them when it is written.

One Redis lets each process read every log it watches with one ``XREAD
BLOCK`` (SPEC §4). A cluster refuses that command over keys of several
slots, so there a process registers itself in each watched conversation's
``watchers`` sorted set (owner → expiry), writers name the conversation on
the ``proc:`` stream of each process registered after a commit or an
intake, and the process then reads that log. Registrations are renewed (and
every watched log read again, for a lost notification) every
:data:`~steerline.log.redis.background.REFRESH_EVERY`; a dead process's
expire after :data:`WATCH_TTL`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

import redis.exceptions as redis_errors

from steerline.log.redis.keys import Keys

logger = logging.getLogger("steerline.log.redis")

WATCH_TTL = 30.0
"""Seconds a registration as a watcher lives unrenewed."""

_TRANSIENT = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)


class WatchersHost(Protocol):
    owner: str
    keys: Keys

    @property
    def redis(self) -> Any: ...

    def watched(self) -> dict[str, int]:
        """The conversations whose logs this process reads → their last seq read."""
        ...

    def on_log_entries(self, conversation_id: str, entries: list[Any]) -> None: ...


class Watchers:
    def __init__(self, host: WatchersHost) -> None:
        self._host = host
        self._registered: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def sync(self, refresh: bool) -> None:
        """Register as a watcher of the logs read here (all of them again on
        ``refresh``), unregister the ones nobody here reads any more, then
        read what was written before the registration (a writer notifies
        only the watchers it finds)."""
        host = self._host
        watched = set(host.watched())
        new = watched if refresh else watched - self._registered
        gone = self._registered - watched
        if not new and not gone:
            return
        expiry = int((time.time() + WATCH_TTL) * 1000)
        pipe = host.redis.pipeline(transaction=False)
        for cid in new:
            pipe.zadd(host.keys.conversation(cid).watchers, {host.owner: expiry})
        for cid in gone:
            pipe.zrem(host.keys.conversation(cid).watchers, host.owner)
        await pipe.execute()
        self._registered = watched
        await self.fetch(new)

    async def fetch(self, conversation_ids: set[str]) -> None:
        """Read what is new in these logs (those still read here)."""
        host = self._host
        cursors = host.watched()
        wanted = sorted(cid for cid in conversation_ids if cid in cursors)
        if not wanted:
            return
        pipe = host.redis.pipeline(transaction=False)
        for cid in wanted:
            after = cursors[cid] + 1
            pipe.xrange(host.keys.conversation(cid).log, min=f"{after}-0", max="+", count=1000)
        for cid, entries in zip(wanted, await pipe.execute(), strict=True):
            if entries:
                host.on_log_entries(cid, entries)

    def notify_soon(self, conversation_ids: set[str]) -> None:
        """Name each conversation on the stream of every other process
        registered as its watcher (in the background: a writer never waits)."""
        if conversation_ids:
            task = asyncio.get_running_loop().create_task(self._notify(conversation_ids))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _notify(self, conversation_ids: set[str]) -> None:
        host = self._host
        now = int(time.time() * 1000)
        ordered = sorted(conversation_ids)
        try:
            pipe = host.redis.pipeline(transaction=False)
            for cid in ordered:
                pipe.zrangebyscore(host.keys.conversation(cid).watchers, now, "+inf")
            found = await pipe.execute()
            pipe = host.redis.pipeline(transaction=False)
            for cid, owners in zip(ordered, found, strict=True):
                for owner in (o.decode() for o in owners):
                    if owner != host.owner:
                        pipe.xadd(
                            host.keys.process(owner), {"l": cid}, maxlen=10_000, approximate=True
                        )
            await pipe.execute()
        except _TRANSIENT as exc:  # the watchers' next refresh reads it
            logger.warning("notifying the watchers of %d logs failed: %s", len(ordered), exc)

    def pending(self) -> list[asyncio.Task[None]]:
        """The notifications in flight, for the store to cancel and await."""
        return list(self._tasks)
