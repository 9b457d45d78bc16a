"""The two background workers of a Redis-backed process.

:class:`Reader`: one task per process reads every stream the process needs
with one ``XREAD BLOCK`` over many keys: the logs its viewers watch (of
conversations run elsewhere) and its own stream, which carries control
replies, wake-ups naming a conversation held here that has a control request
waiting (read then with one ``XRANGE``: an ``XREAD`` over the control
streams of every held lease would cost Redis more with each idle
conversation held), and wake-ups when the watched set changes (a blocked
``XREAD`` cannot be told of a new key otherwise).
Its events go to each conversation's tail, which fans them out to the
viewers' bounded buffers: never one blocking connection per viewer.

:class:`LeaseKeeper`: renews the leases this process holds from a thread of
its own, with a connection of its own, so nothing on the event loop (a tool
that blocks it, a long fan-out) can starve a renewal; transient errors are
retried at the next tick, which comes well within the lease's TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import redis
import redis.asyncio as aioredis
import redis.exceptions as redis_errors

from steerline.log.redis import scripts

if TYPE_CHECKING:
    from steerline.log.redis.keys import Keys


class ReaderHost(Protocol):
    """What the reader reads for and hands its entries to (the Redis log)."""

    owner: str
    keys: Keys

    @property
    def redis(self) -> Any: ...

    def streams_to_read(self) -> dict[str, bytes]: ...

    def forget_idle(self) -> None: ...

    def local_for_stream(self, stream: bytes) -> tuple[str, str] | None: ...

    def on_log_entries(self, conversation_id: str, entries: list[Any]) -> None: ...

    async def sync_watchers(self, refresh: bool) -> None: ...

    async def fetch_logs(self, conversation_ids: set[str]) -> None: ...

    def on_control_wake(self, conversation_id: str) -> None: ...

    def on_reply(self, fields: dict[bytes, bytes]) -> None: ...

    def unreachable(self) -> None: ...

    def reachable_again(self) -> None: ...


logger = logging.getLogger("steerline.log.redis")

BLOCK_MS = 5000
"""An ``XREAD`` blocks at most this long (well under the socket timeout)."""
REFRESH_EVERY = 5.0
"""On a cluster: seconds between two renewals of this process's registrations
as a watcher (they expire after ``watchers.WATCH_TTL``) and two reads of every
watched log (what a lost notification left unread); an ``XREAD`` blocks no
longer (:data:`BLOCK_MS`), so the loop comes round in time."""
FORGET_EVERY = 5.0
"""Seconds between two looks for conversations nobody here watches any more."""
OWN_STREAM_TTL = 86400
"""Seconds this process's own stream outlives it (its replies and wake-ups
are of no use once it is gone)."""
OWN_STREAM_REFRESH = 3600.0
"""Seconds between two renewals of that expiry while the process lives: set
once at start, a process up longer than a day would lose it, and a requester
writing to the stream afterwards would leave a key that never expires."""


class Reader:
    """One task per process: reads its own stream (replies, wake-ups) and the
    logs its viewers watch. On one Redis that is one ``XREAD BLOCK`` over all
    of them. A cluster refuses an ``XREAD`` over keys of several slots, so
    there the task reads its own stream only: it registers in each watched
    conversation's ``watchers`` set, writers name the conversation on the
    stream of each process registered, and the task then reads that log
    (and every watched log each ``REFRESH_EVERY``, in case one was lost)."""

    def __init__(self, log: ReaderHost, client: aioredis.Redis, cluster: bool = False) -> None:
        self._log = log
        self._cluster = cluster
        self._client: Any = client  # redis-py's stubs type replies as ``bytes | str``
        self._own = log.keys.process(log.owner)
        self._cursor = b"0-0"
        self._task: asyncio.Task[None] | None = None
        self._waking = False
        self._wake_again = False
        self._stopping = False
        self.own_ttl = OWN_STREAM_TTL
        self.refresh_every = OWN_STREAM_REFRESH
        self._refreshed = 0.0
        """When the expiry was last set (monotonic)."""

    async def start(self) -> None:
        # this process's stream starts at a marker: replies come after it
        self._cursor = await self._log.redis.xadd(
            self._own, {"w": "start"}, maxlen=1000, approximate=True
        )
        await self._log.redis.expire(self._own, self.own_ttl)
        self._refreshed = time.monotonic()
        self._task = asyncio.create_task(self._read_forever(), name="steerline-redis-reader")

    async def stop(self) -> None:
        """End the task by waking its ``XREAD`` (redis-py does not return from
        a blocked read that is cancelled); cancelled only if Redis is gone."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            with contextlib.suppress(redis_errors.RedisError, OSError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._log.redis.xadd(self._own, {"w": "stop"}, maxlen=1000)
                    await asyncio.shield(task)
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    async with asyncio.timeout(1.0):
                        await task
        with contextlib.suppress(redis_errors.RedisError, OSError):
            await self._client.aclose()

    def watch_changed(self) -> None:
        """Wake the blocked ``XREAD`` so it reads the new set of streams.

        A change while a wake-up is on its way asks for one more: the reader
        may have taken the first and computed its set before this change
        (it would then block without the new stream until ``BLOCK_MS``)."""
        if self._task is None:
            return
        if self._waking:
            self._wake_again = True
            return
        self._waking = True
        asyncio.get_running_loop().create_task(self._wake())

    async def _wake(self) -> None:
        try:
            again = True
            while again:
                self._wake_again = False
                await self._log.redis.xadd(self._own, {"w": "1"}, maxlen=1000, approximate=True)
                again = self._wake_again
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError):
            pass  # the reader is failing too, and re-reads its set when it recovers
        finally:
            self._waking = False

    async def _read_forever(self) -> None:
        delay = 0.05
        failing = False
        forgot_at = time.monotonic()
        registered_at = 0.0
        while not self._stopping:
            if time.monotonic() - forgot_at >= FORGET_EVERY:
                forgot_at = time.monotonic()
                self._log.forget_idle()
            streams: dict[str, bytes] = {self._own: self._cursor}
            streams.update(self._log.streams_to_read())
            try:
                if failing:
                    # back: say so before blocking (an idle XREAD returns late)
                    await self._client.ping()
                    failing = False
                    self._log.reachable_again()
                if time.monotonic() - self._refreshed >= self.refresh_every:
                    await self._client.expire(self._own, self.own_ttl)
                    self._refreshed = time.monotonic()
                if self._cluster:
                    refresh = time.monotonic() - registered_at >= REFRESH_EVERY
                    await self._log.sync_watchers(refresh)
                    if refresh:
                        registered_at = time.monotonic()
                replies = await self._client.xread(streams, count=1000, block=BLOCK_MS)
            except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
                # once per outage at WARNING (the log says when it is back)
                level = logging.DEBUG if failing else logging.WARNING
                logger.log(level, "Redis reader: %s; retrying in %.2fs", exc, delay)
                failing = True
                self._log.unreachable()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            except redis_errors.ResponseError:
                logger.exception("Redis reader: XREAD refused")
                await asyncio.sleep(1.0)
                continue
            delay = 0.05
            if self._stopping:
                return
            for stream, entries in replies or ():
                if not entries:
                    continue
                if stream == self._own.encode():
                    self._cursor = entries[-1][0]
                    written: set[str] = set()
                    for _entry_id, fields in entries:
                        woken = fields.get(b"c")
                        if woken is not None:
                            self._log.on_control_wake(woken.decode())
                        elif (log := fields.get(b"l")) is not None:
                            written.add(log.decode())
                        else:
                            self._log.on_reply(fields)
                    if written:
                        await self._fetch(written)
                    continue
                named = self._log.local_for_stream(stream)
                if named is None:
                    continue
                conversation_id, kind = named
                if kind == "log":
                    self._log.on_log_entries(conversation_id, entries)

    async def _fetch(self, conversation_ids: set[str]) -> None:
        """Read the logs a writer named (a failure: the next refresh reads them)."""
        try:
            await self._log.fetch_logs(conversation_ids)
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
            logger.warning("Redis reader: reading notified logs failed: %s", exc)


class LeaseKeeper:
    """Renews held leases every third of their TTL, from its own thread."""

    def __init__(
        self,
        url: str,
        ttl: float,
        loop: asyncio.AbstractEventLoop,
        on_lost: Callable[[str, str], None],
        lease_key: Callable[[str], str],
        cluster: bool = False,
    ) -> None:
        self._lease_key = lease_key
        self._cluster = cluster
        self._ttl_ms = int(ttl * 1000)
        self._interval = ttl / 3
        self._loop = loop
        self._on_lost = on_lost
        self._held: dict[str, str] = {}
        self.confirmed: dict[str, float] = {}
        """When Redis last confirmed each lease (monotonic): a lease not
        confirmed for most of its TTL may have expired (an outage), so the
        process must ask Redis again before acting on it."""
        self._stopping = threading.Event()
        kind = redis.RedisCluster if cluster else redis.Redis
        self._client: Any = kind.from_url(
            url,
            socket_connect_timeout=max(ttl / 4, 0.2),
            socket_timeout=max(ttl / 4, 0.2),
            socket_keepalive=True,
            health_check_interval=15,
        )
        self._renew = self._client.register_script(scripts.RENEW)
        self._thread = threading.Thread(
            target=self._run, name="steerline-lease-keeper", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        self._client.close()

    def hold(self, conversation_id: str, value: str) -> None:
        self._held[conversation_id] = value
        self.confirmed[conversation_id] = time.monotonic()

    def drop(self, conversation_id: str) -> None:
        self._held.pop(conversation_id, None)
        self.confirmed.pop(conversation_id, None)

    def _renew_all(self, held: dict[str, str]) -> list[Any]:
        """One pipelined script per lease; one by one on a cluster (redis-py
        refuses scripts in cluster pipelines)."""
        if self._cluster:
            return [
                self._renew(keys=[self._lease_key(cid)], args=[value, self._ttl_ms])
                for cid, value in held.items()
            ]
        pipe = self._client.pipeline(transaction=False)
        for conversation_id, value in held.items():
            lease_key = self._lease_key(conversation_id)
            self._renew(keys=[lease_key], args=[value, self._ttl_ms], client=pipe)
        renewed: list[Any] = pipe.execute()
        return renewed

    def _run(self) -> None:
        failing = False
        while not self._stopping.wait(self._interval):
            held = dict(self._held)  # a copy: the loop changes it meanwhile
            if not held:
                continue
            try:
                renewed = self._renew_all(held)
            except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
                # once per outage at WARNING (the log says when Redis is back)
                level = logging.DEBUG if failing else logging.WARNING
                logger.log(level, "lease renewal failed (%s); retrying", exc)
                failing = True
                continue
            failing = False
            now = time.monotonic()
            for (conversation_id, value), ok in zip(held.items(), renewed, strict=True):
                if ok and self._held.get(conversation_id) == value:
                    self.confirmed[conversation_id] = now
                if not ok and self._held.get(conversation_id) == value:
                    self._loop.call_soon_threadsafe(self._on_lost, conversation_id, value)
