"""``redis://host:port/db``: the event log and runtime state in Redis, shared
by any number of server processes (SPEC §4, docs/scaling.md).

Layout per conversation (keys share the hash tag ``{id}``): a record hash
(the record, the last ``seq``, the lease epoch), the log as a Stream whose
entry ids are ``<seq>-0`` (so ``Last-Event-ID: N`` is a range read), a state
hash, item hashes with their insertion order, the lease string and a
control stream (requests from other processes to the lease holder).

Writes work as in the sqlite backend: ``append`` numbers the event at once
(provisionally) and queues it; a writer task sends everything queued as one
:data:`~steerline.log.redis.scripts.COMMIT` script per conversation (all
pipelined in one round trip), fenced by the lease: only the lease holder's
run events land, and a stale owner's batch is refused (the service then
cancels its run). Any process may also queue a message with
:data:`~steerline.log.redis.scripts.INTAKE` (no lease), so the commit script
gives the holder's events their final ``seq`` after whatever was appended
meanwhile; the holder's tail reads those foreign events back from Redis and
the service is told of them (``on_foreign``). ``seq`` stays gapless and
strictly increasing whichever process writes. An event is visible to
readers once the script ran (Redis' own durability: AOF).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from steerline.core.errors import InvalidValueError
from steerline.core.ids import new_id
from steerline.log.base import (
    ConversationExistsError,
    ConversationRecord,
    EventLog,
    LogSettings,
    RetentionError,
    RetentionSweeper,
    StorageUnavailableError,
    StoredEvent,
    retention_tick,
    seal_envelope,
    time_bucket,
)
from steerline.log.redis import scripts
from steerline.log.redis.background import LeaseKeeper, Reader
from steerline.log.redis.batch import Batch
from steerline.log.redis.keys import ConversationKeys, Keys
from steerline.log.redis.options import RedisOptions, default_owner
from steerline.log.redis.watchers import Watchers
from steerline.log.shared import (
    ControlHandler,
    ControlRequest,
    ForeignHandler,
    Intake,
    IntakeOutcome,
    IntakeResult,
    Lease,
    LeaseState,
    NotHeldError,
    SharedLog,
)
from steerline.log.tail import ConversationTail

logger = logging.getLogger("steerline.log.redis")

T = TypeVar("T")

TRANSIENT = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)
"""Errors of an unreachable or restarting Redis (``BusyLoadingError`` is a
``ConnectionError``): retried by writers, answered 503 to requests."""

MAX_OPS_PER_SCRIPT = 512
"""Writes of one conversation in one commit script (see ``_take``)."""
MAX_CONTROL_WAITING = 1000
"""Control requests waiting for one conversation's lease holder; beyond, 503."""
FORGET_AFTER = 60.0
"""Seconds after its last read or wait that a conversation held elsewhere
is forgotten here (see ``forget_idle``): a viewer reads or waits again at
least every heartbeat, so only conversations nobody here watches any more go."""

_record_encoder = msgspec.json.Encoder()
_record_decoder = msgspec.json.Decoder(ConversationRecord)

Op = tuple[Any, ...]


@dataclass(slots=True)
class _Local:
    """What this process knows of one conversation."""

    keys: ConversationKeys
    tail: ConversationTail
    tenant: str = "default"
    lease: str | None = None
    """``"<owner>|<epoch>"`` while this process holds the lease."""
    ops: list[Op] = field(default_factory=list)
    tickets: list[int] = field(default_factory=list)
    """The flush ticket of each queued op (a batch may take only some)."""
    events: list[StoredEvent] = field(default_factory=list)
    record: bytes | None = None
    """A record change queued with the ops (written in order with them)."""
    watched: bool = False
    """Its log is read by the reader (a viewer here, the lease elsewhere)."""
    control_cursor: bytes = b"0-0"
    fences: int = 0
    """Times this process lost the lease: a wait spanning a loss ends (see ``wait``)."""
    waiting: int = 0
    """Waits in flight on its tail (viewers here): it is not forgotten meanwhile."""
    used: float = field(default_factory=time.monotonic)
    """When it was last created, read or waited on (see ``forget_idle``)."""
    aging: bool = False
    """This process has put it in the retention sweep's index (once is enough:
    only a delete takes it out)."""


class RedisEventLog(EventLog, SharedLog):
    def __init__(
        self, url: str, settings: LogSettings | None = None, *, owner: str | None = None
    ) -> None:
        self.options = RedisOptions.parse(url)
        self.settings = settings or LogSettings()
        self.owner = owner or default_owner()
        self.lease_ttl = self.options.lease_ttl
        self.keys = Keys(self.options.prefix)
        self._locals: dict[str, _Local] = {}
        self._redis: Any = None
        self._cluster = False
        """The URL names a Redis Cluster node (found by ``open``)."""
        self._ticket = 0
        self._batches = 0
        """Numbers the batches that append (their retry token, see COMMIT)."""
        self._committed_ticket = 0
        self._flushes: list[tuple[int, asyncio.Future[None]]] = []
        self._dirty = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._available = True
        self._availability_changed = asyncio.Event()
        self._replies: dict[str, asyncio.Future[bytes]] = {}
        self._on_control: ControlHandler | None = None
        self._on_lease_lost: Callable[[str], None] = lambda _cid: None
        self._on_foreign: ForeignHandler = lambda _cid, _events: None
        self._catching_up: set[asyncio.Task[None]] = set()
        """Background tasks catching up a held tail."""
        self._watchers = Watchers(self)
        """On a cluster: who reads which log here and elsewhere (see :mod:`.watchers`)."""
        self._control_queues: dict[str, asyncio.Queue[ControlRequest]] = {}
        self._control_workers: dict[str, asyncio.Task[None]] = {}
        self._reader: Reader | None = None
        self._keeper: LeaseKeeper | None = None
        self._closed = False
        self.forget_after = FORGET_AFTER
        self._tick = retention_tick(self.settings)
        self._sweeper = RetentionSweeper(self, self.settings)

    # -- lifecycle -------------------------------------------------------------
    @property
    def cluster(self) -> bool:
        """Whether the URL names a Redis Cluster node (known once open)."""
        return self._cluster

    def _batch(self) -> Batch:
        return Batch(self.redis, self._cluster)

    def _client(self, **extra: Any) -> Any:
        """An asyncio client: a cluster client once ``open`` found a cluster."""
        kind = aioredis.RedisCluster if self._cluster else aioredis.Redis
        return kind.from_url(
            self.options.url,
            socket_connect_timeout=5,
            socket_keepalive=True,
            health_check_interval=15,
            # the asyncio Retry: redis-py's synchronous one, given to an asyncio
            # client, returns the coroutine unawaited and so never retries (a
            # Redis restart then failed the first request on each pooled
            # connection instead of reconnecting it)
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 2),
            retry_on_error=[redis_errors.ConnectionError, redis_errors.TimeoutError],
            **extra,
        )

    @property
    def redis(self) -> Any:
        """The client (typed ``Any``: redis-py's stubs type replies as ``bytes | str``)."""
        assert self._redis is not None, "open() the log first"
        return self._redis

    def acquire(self) -> None:
        """Before the server starts: check that Redis answers and may not
        evict keys (a clear error and exit 2, not a failed start-up later).
        Not exclusive: any number of processes share one Redis."""
        import redis as sync_redis

        client = sync_redis.Redis.from_url(
            self.options.url, socket_connect_timeout=5, socket_timeout=10
        )
        try:
            client.ping()
            _check_cluster(self.options, client.info("cluster"))
            _refuse_eviction(self.options.display, _config(client, "maxmemory-policy"))
        except TRANSIENT as exc:
            raise StorageUnavailableError(
                f"cannot reach Redis at {self.options.display}: {exc}"
            ) from exc
        except redis_errors.ResponseError as exc:
            # e.g. "DB index is out of range": the URL names what Redis refuses
            raise InvalidValueError(f"Redis at {self.options.display} refused: {exc}") from exc
        finally:
            client.close()

    async def open(self) -> None:
        self._redis = self._client(socket_timeout=10)
        try:
            self._cluster = _check_cluster(self.options, await self._redis.info("cluster"))
            if self._cluster:
                await self._redis.aclose()
                self._redis = self._client(socket_timeout=10)
                await self._redis.initialize()
            await self._check_server()
        except TRANSIENT as exc:
            await self._redis.aclose()
            raise StorageUnavailableError(
                f"cannot reach Redis at {self.options.display}: {exc}"
            ) from exc
        except BaseException:
            await self._redis.aclose()
            raise
        self._scripts: dict[str, Any] = {
            name: self.redis.register_script(getattr(scripts, name))
            for name in (
                "CREATE",
                "ACQUIRE",
                "RELEASE",
                "SEND_CONTROL",
                "COMMIT",
                "DELETE",
                "TRIM",
                "INTAKE",
                "CLAIM",
                "WITHDRAW_CONTROL",
            )
        }
        self._writer = asyncio.create_task(self._write_forever(), name="steerline-redis-writer")
        self._reader = Reader(
            self, self._client(socket_timeout=self._block_seconds + 10), cluster=self._cluster
        )
        await self._reader.start()
        self._keeper = LeaseKeeper(
            self.options.url,
            self.lease_ttl,
            asyncio.get_running_loop(),
            self._lease_lost,
            lambda cid: self.keys.conversation(cid).lease,
            cluster=self._cluster,
        )
        self._keeper.start()
        self._sweeper.start()

    @property
    def _block_seconds(self) -> float:
        return 5.0

    async def _check_server(self) -> None:
        """SPEC §4: refuse a Redis that may evict keys; warn when nothing persists."""
        try:
            policy = (await self.redis.config_get("maxmemory-policy")).get("maxmemory-policy")
            aof = (await self.redis.config_get("appendonly")).get("appendonly")
        except redis_errors.ResponseError:
            logger.warning(
                "cannot read Redis' configuration (CONFIG is disabled): make sure "
                "maxmemory-policy is noeviction and AOF persistence is on"
            )
            return
        _refuse_eviction(self.options.display, policy)
        if aof != "yes":
            logger.warning(
                "Redis at %s runs without AOF persistence (appendonly no): a Redis restart "
                "loses what was written since its last snapshot. Set appendonly yes.",
                self.options.display,
            )

    async def close(self) -> None:
        if self._closed or self._redis is None:
            return
        self._closed = True
        await self._sweeper.stop()
        try:
            with_timeout = asyncio.timeout(self.settings.close_timeout)
            async with with_timeout:
                await self.flush()
        except (TimeoutError, StorageUnavailableError):
            logger.error("closing the Redis log with writes not stored (Redis unreachable)")
        for cid in [cid for cid, local in self._locals.items() if local.lease is not None]:
            try:
                await self.release_lease(cid)
            except (StorageUnavailableError, *TRANSIENT):
                break
        if self._keeper is not None:
            self._keeper.stop()
        if self._reader is not None:
            await self._reader.stop()
        tasks = [
            task
            for task in [self._writer, *self._control_workers.values(), *self._catching_up]
            if task is not None
        ]
        tasks += self._watchers.pending()
        for task in tasks:
            task.cancel()
        # ended before the client closes: a command cancelled after it would
        # open a new connection (a cluster client re-initialises), left unclosed
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._redis.aclose()

    @property
    def available(self) -> bool:
        return self._available

    async def wait_availability_change(self) -> None:
        await self._availability_changed.wait()

    def _set_available(self, value: bool) -> None:
        if value == self._available:
            return
        self._available = value
        changed, self._availability_changed = self._availability_changed, asyncio.Event()
        changed.set()
        if value:
            logger.warning("Redis is reachable again")
        else:
            logger.error("Redis is unreachable; writes wait and requests get 503")
            for local in self._locals.values():
                local.tail.wake()  # viewers end with a resume hint

    def unreachable(self) -> None:
        """The reader lost Redis: requests get 503 and viewers a resume hint."""
        self._set_available(False)

    def reachable_again(self) -> None:
        """The reader reached Redis again (writes waiting, if any, go out now)."""
        self._set_available(True)
        self._dirty.set()

    async def _call(self, operation: Awaitable[T]) -> T:
        """Run a request; an unreachable Redis is a ``StorageUnavailableError``."""
        try:
            return await operation
        except TRANSIENT as exc:
            raise StorageUnavailableError(f"Redis is unreachable: {exc}") from exc

    # -- local bookkeeping -----------------------------------------------------
    def _local(self, conversation_id: str, seq: int, tenant: str) -> _Local:
        local = self._locals.get(conversation_id)
        if local is None:
            retention = self.settings.retention_events
            hot = (
                self.settings.hot_tail
                if retention is None
                else min(retention, self.settings.hot_tail)
            )
            tail = ConversationTail(hot_limit=hot, hot_bytes_limit=self.settings.hot_tail_bytes)
            tail.assigned_seq = tail.committed_seq = seq
            local = _Local(self.keys.conversation(conversation_id), tail, tenant)
            self._locals[conversation_id] = local
        elif local.lease is None and seq > local.tail.committed_seq:
            if not local.watched:
                local.tail.drop_hot()  # it missed events: storage serves them
            local.tail.assigned_seq = local.tail.committed_seq = seq
        return local

    def _held(self, conversation_id: str) -> _Local | None:
        local = self._locals.get(conversation_id)
        return local if local is not None and local.lease is not None else None

    # -- conversations ---------------------------------------------------------
    async def create_conversation(
        self, record: ConversationRecord, first_event: tuple[str, bytes] | None = None
    ) -> None:
        keys = self.keys.conversation(record.id)
        at = self._now_tick_ms()
        args: list[Any] = [
            self.owner,
            int(self.lease_ttl * 1000),
            _record_encoder.encode(record),
            at,
        ]
        first: StoredEvent | None = None
        if first_event is not None:
            first = StoredEvent(1, first_event[0], seal_envelope(first_event[1], 1))
            args += [first.event, first.envelope, ""]
        created = await self._call(
            self._scripts["CREATE"](keys=[keys.record, keys.log, keys.lease, keys.times], args=args)
        )
        if not created:
            raise ConversationExistsError(f"conversation id {record.id!r} is already used")
        await self._call(self._index(record, at if first is not None else None))
        local = self._local(record.id, 0, record.tenant)
        local.aging = first is not None
        self._hold(record.id, local, f"{self.owner}|1")
        if first is not None:
            local.tail.assigned_seq = 1
            local.tail.committed([first])

    async def _index(self, record: ConversationRecord, aging_at: int | None = None) -> None:
        """The cross-conversation indexes (other slots: not in the script)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(self.keys.tenant(record.tenant), {record.id: record.updated_at})
        if aging_at is not None:
            pipe.zadd(self.keys.aging, {record.id: aging_at}, nx=True)
        if record.status == "running":
            pipe.sadd(self.keys.running, record.id)
        else:
            pipe.srem(self.keys.running, record.id)
        await pipe.execute()

    async def get_conversation(self, conversation_id: str) -> ConversationRecord | None:
        keys = self.keys.conversation(conversation_id)
        raw, seq, deleted = await self._call(self.redis.hmget(keys.record, ["r", "seq", "del"]))
        if raw is None or deleted == b"1":
            return None
        record = _record_decoder.decode(raw)
        self._local(conversation_id, int(seq or 0), record.tenant)
        return record

    async def update_conversation(self, record: ConversationRecord) -> None:
        local = self._held(record.id)
        if local is None:
            return
        local.record = _record_encoder.encode(record)
        local.tenant = record.tenant
        self._queued(local, ("R",))
        await self.flush()

    async def list_conversations(
        self, tenant: str, *, limit: int = 50, offset: int = 0
    ) -> list[ConversationRecord]:
        if limit <= 0:
            return []
        ids = await self._call(
            self.redis.zrevrange(self.keys.tenant(tenant), offset, offset + limit - 1)
        )
        return await self._records([i.decode() for i in ids])

    async def _records(self, ids: Sequence[str]) -> list[ConversationRecord]:
        pipe = self.redis.pipeline(transaction=False)
        for cid in ids:
            pipe.hmget(self.keys.conversation(cid).record, ["r", "del"])
        records = []
        for raw, deleted in await self._call(pipe.execute()):
            if raw is not None and deleted != b"1":
                records.append(_record_decoder.decode(raw))
        return records

    async def delete_conversation(self, conversation_id: str) -> bool:
        keys = self.keys.conversation(conversation_id)
        raw, collections = await self._call(self._raw_and_collections(keys))
        if raw is None:
            return False
        item_keys = [k for c in collections for k in keys.items(c.decode())]
        deleted = await self._call(
            self._scripts["DELETE"](keys=[*keys.fixed, *item_keys, keys.watchers])
        )
        if not deleted:
            return False
        tenant = _record_decoder.decode(raw).tenant
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrem(self.keys.tenant(tenant), conversation_id)
        pipe.srem(self.keys.running, conversation_id)
        pipe.zrem(self.keys.aging, conversation_id)
        await self._call(pipe.execute())
        local = self._locals.pop(conversation_id, None)
        if local is not None:
            self._forget_lease(conversation_id)
            local.tail.deleted = True
            local.tail.wake()
        return True

    async def _raw_and_collections(
        self, keys: ConversationKeys
    ) -> tuple[bytes | None, list[bytes]]:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(keys.record, ["r", "del"])
        pipe.smembers(keys.collections)
        (raw, deleted), collections = await pipe.execute()
        return (None if deleted == b"1" else raw), sorted(collections)

    async def running_conversations(self) -> list[ConversationRecord]:
        ids = await self._call(self.redis.smembers(self.keys.running))
        records = await self._records(sorted(i.decode() for i in ids))
        return [r for r in records if r.status == "running"]

    # -- events ----------------------------------------------------------------
    def append(
        self,
        conversation_id: str,
        event: str,
        envelope_without_seq: bytes,
        run_id: str | None = None,
    ) -> int:
        local = self._locals[conversation_id]  # KeyError: unknown (as every backend)
        if local.lease is None:
            # the lease was lost: the run here is being stopped, and what it
            # still emits is refused (another process ends the run in the log)
            return local.tail.committed_seq
        seq = local.tail.next_seq()
        stored = StoredEvent(seq, event, seal_envelope(envelope_without_seq, seq), run_id)
        local.events.append(stored)
        self._queued(local, ("A", str(seq), event, stored.envelope, run_id or ""))
        return seq

    def _queued(self, local: _Local, op: Op) -> None:
        self._ticket += 1
        local.ops.append(op)
        local.tickets.append(self._ticket)
        self._dirty.set()

    async def flush(self) -> None:
        ticket = self._ticket
        if self._committed_ticket >= ticket:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flushes.append((ticket, future))
        await future

    def committed_seq(self, conversation_id: str) -> int:
        local = self._locals.get(conversation_id)
        return local.tail.committed_seq if local is not None else 0

    async def read(self, conversation_id: str, after: int, limit: int = 1000) -> list[StoredEvent]:
        local = self._locals.get(conversation_id)
        if local is not None:
            local.used = time.monotonic()  # a viewer reading on, behind the head
        if limit > 0 and local is not None and (local.lease is not None or local.watched):
            hot = local.tail.from_hot(after, limit)
            if hot:
                return hot
        keys = self.keys.conversation(conversation_id)
        events: list[StoredEvent] = []
        if limit > 0:
            entries = await self._call(
                self.redis.xrange(keys.log, min=f"{after + 1}-0", max="+", count=limit)
            )
            events = [event_of(entry_id, fields) for entry_id, fields in entries]
        if not events or events[0].seq != after + 1:
            oldest = await self.oldest_seq(conversation_id)
            if oldest and after + 1 < oldest:
                raise RetentionError(
                    f"events after {after} are no longer retained; the oldest kept is {oldest}"
                )
        return events

    async def oldest_seq(self, conversation_id: str) -> int:
        keys = self.keys.conversation(conversation_id)
        first = await self._call(self.redis.xrange(keys.log, min="-", max="+", count=1))
        if first:
            return event_of(*first[0]).seq
        # an empty log: nothing ever appended, or retention dropped it all
        seq, deleted = await self._call(self.redis.hmget(keys.record, ["seq", "del"]))
        return int(seq) + 1 if seq and int(seq) and deleted != b"1" else 0

    async def sweep_retention(self) -> None:
        """Trim, by age, the conversations the index says hold expired times:
        a page at a time, each in one script. Any process may sweep (each
        does): the scripts are idempotent, and a conversation is then
        re-scored at its oldest remaining time, so it is visited again only
        when that expires."""
        if self.settings.retention_age is None:
            return
        cutoff, now_ms = self._cutoff_ms(), int(self.clock() * 1000)
        for _page in range(64):
            ids = await self._call(
                self.redis.zrangebyscore(self.keys.aging, "-inf", cutoff, start=0, num=256)
            )
            if not ids:
                return
            await self._sweep_page([i.decode() for i in ids], cutoff, now_ms)
            if len(ids) < 256:
                return

    async def _sweep_page(self, ids: list[str], cutoff: int, now_ms: int) -> None:
        """Run TRIM over ``ids`` in one round trip, then re-score them (GT:
        never back below what another sweep or a commit set meanwhile)."""
        batch = self._batch()
        for cid in ids:
            keys = self.keys.conversation(cid)
            await batch.script(
                self._scripts["TRIM"], [keys.record, keys.log, keys.times], [cutoff, now_ms]
            )
        replies = await self._call(batch.execute())
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        pipe = self.redis.pipeline(transaction=False)
        for cid, reply in zip(ids, replies, strict=True):
            if reply[0] == b"gone":
                pipe.zrem(self.keys.aging, cid)
                continue
            pipe.zadd(self.keys.aging, {cid: int(reply[2])}, gt=True)
            local = self._locals.get(cid)
            if local is not None and int(reply[1]):
                local.tail.drop_through(int(reply[1]))
        await self._call(pipe.execute())

    def _now_tick_ms(self) -> int:
        """The retention tick ``now`` falls in, as the ms a commit is recorded at."""
        return math.ceil(time_bucket(self.clock(), self._tick) * 1000)

    def _cutoff_ms(self) -> int:
        """Events recorded at or before this ms are past ``retention_age`` (0: no age)."""
        age = self.settings.retention_age
        return 0 if age is None else max(1, int((self.clock() - age) * 1000))

    async def wait(self, conversation_id: str, after: int) -> None:
        if not self._available:
            raise StorageUnavailableError("Redis is unreachable; resume shortly")
        local = self._locals.get(conversation_id)
        if local is None:
            return
        if local.lease is None and not local.watched:
            local.watched = True
            assert self._reader is not None
            self._reader.watch_changed()
        fences = local.fences
        local.waiting += 1
        try:
            await local.tail.wait(after)
        finally:
            local.waiting -= 1
            local.used = time.monotonic()
        if not self._available:
            raise StorageUnavailableError("Redis is unreachable; resume shortly")
        if local.fences != fences:
            # This process lost the lease meanwhile: what it ran here wrote
            # nothing more, and the run's end (another process writes it) may
            # never come here. The viewer resumes, from any process, and is
            # answered from the shared log: never left hanging.
            raise StorageUnavailableError("this server let the conversation go; resume")

    def release(self, conversation_id: str) -> None:
        local = self._locals.get(conversation_id)
        if local is None:
            return
        local.tail.drop_hot()
        if local.lease is None and not local.ops and not local.waiting:
            # (with viewers waiting here, it stays: they read on from the log)
            del self._locals[conversation_id]
            if local.watched and self._reader is not None:
                self._reader.watch_changed()

    def forget_idle(self, now: float | None = None) -> None:
        """Forget the conversations held elsewhere that nothing here has
        read or waited on for ``forget_after`` seconds: the reader stops reading their
        logs and their hot tails go. (Each one a viewer, a status request or
        a command ever touched here would otherwise stay in the reader's
        ``XREAD`` and in memory for the life of the process.) A viewer that
        comes back finds it gone and reads on from Redis."""
        now = time.monotonic() if now is None else now
        idle = [
            cid
            for cid, local in self._locals.items()
            if local.lease is None
            and not local.ops
            and not local.waiting
            and now - local.used >= self.forget_after
        ]
        for cid in idle:
            del self._locals[cid]

    # -- runtime state ---------------------------------------------------------
    def put_state(self, conversation_id: str, key: str, value: bytes) -> None:
        local = self._held(conversation_id)
        if local is not None:
            self._queued(local, ("S", key, value))

    async def get_state(self, conversation_id: str, key: str) -> bytes | None:
        state: bytes | None = await self._call(
            self.redis.hget(self.keys.conversation(conversation_id).state, key)
        )
        return state

    def put_item(self, conversation_id: str, collection: str, key: str, value: bytes) -> None:
        local = self._held(conversation_id)
        if local is not None:
            self._queued(local, ("I", collection, key, value))

    def delete_item(self, conversation_id: str, collection: str, key: str) -> None:
        local = self._held(conversation_id)
        if local is not None:
            self._queued(local, ("D", collection, key))

    async def get_items(self, conversation_id: str, collection: str) -> list[tuple[str, bytes]]:
        items_key, order_key = self.keys.conversation(conversation_id).items(collection)
        names = await self._call(self.redis.zrange(order_key, 0, -1))
        if not names:
            return []
        values = await self._call(self.redis.hmget(items_key, names))
        return [(n.decode(), v) for n, v in zip(names, values, strict=True) if v is not None]

    async def get_item(self, conversation_id: str, collection: str, key: str) -> bytes | None:
        items_key, _ = self.keys.conversation(conversation_id).items(collection)
        value: bytes | None = await self._call(self.redis.hget(items_key, key))
        return value

    # -- the writer --------------------------------------------------------------
    async def _write_forever(self) -> None:
        delay = 0.05
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            ticket = self._ticket
            taken = [
                (cid, local, *self._take(local)) for cid, local in self._locals.items() if local.ops
            ]
            while True:
                try:
                    results = await self._commit(taken)
                    break
                except TRANSIENT as exc:
                    if not self._available:
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, self.settings.retry_max_delay)
                    else:
                        logger.warning("Redis write failed (%s); retrying", exc)
                        self._set_available(False)
            delay = 0.05
            self._set_available(True)
            if self._cluster:
                self._watchers.notify_soon({cid for (cid, _l, _o, events, _r) in taken if events})
            for (cid, local, _ops, events, _record), result in zip(taken, results, strict=True):
                status = result[0].decode() if isinstance(result[0], bytes) else str(result[0])
                if status == "ok":
                    local.tail.drop_through(int(result[2]))  # trimmed by age
                    if events:
                        local.aging = True
                    self._committed(cid, local, events, int(result[1]), int(result[3]))
                elif status == "gone":
                    local.tail.deleted = True
                    local.tail.wake()
                    self._fenced(cid, local, "the conversation was deleted")
                else:  # fenced
                    self._fenced(cid, local, f"write refused ({status})")
            waiting = [local.tickets[0] for local in self._locals.values() if local.ops]
            self._committed_ticket = min(ticket, min(waiting, default=ticket + 1) - 1)
            self._resolve_flushes()
            if any(local.ops for local in self._locals.values()):
                self._dirty.set()  # what a capped batch left

    def _committed(
        self, conversation_id: str, local: _Local, events: list[StoredEvent], first: int, seq: int
    ) -> None:
        """A batch of the holder landed: its events got the seqs ``first``...,
        and ``seq`` is the conversation's seq after it. Other processes append
        too (a message queued with INTAKE): when the log holds more than this
        batch since what the tail has, the tail reads it all from Redis (its
        events must be contiguous), and the foreign events go to the service."""
        tail = local.tail
        if events and first != events[0].seq:
            events = [_sealed_again(e, first + i) for i, e in enumerate(events)]
        if seq == tail.committed_seq + len(events) and (
            not events or first == seq - len(events) + 1
        ):
            tail.committed(events)
            tail.assigned_seq = max(tail.assigned_seq, tail.committed_seq)
            return
        if seq > tail.committed_seq:
            self._catch_up_soon(conversation_id)

    def _catch_up_soon(self, conversation_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self.catch_up(conversation_id))
        self._catching_up.add(task)
        task.add_done_callback(self._catching_up.discard)

    async def catch_up(self, conversation_id: str) -> None:
        """Bring the tail of a conversation held here up to the log in Redis
        (what other processes appended, with what this one did meanwhile) and
        hand the events it did not write to the service. Retried until Redis
        answers: a foreign ``message_queued`` must reach the holder."""
        delay = 0.05
        while (local := self._held(conversation_id)) is not None:
            try:
                entries = await self.redis.xrange(
                    local.keys.log, min=f"{local.tail.committed_seq + 1}-0", max="+", count=1000
                )
            except TRANSIENT:
                await asyncio.sleep(delay)
                delay = min(2 * delay, self.settings.retry_max_delay)
                continue
            if self._held(conversation_id) is not local:
                return
            fresh = _absorb(local.tail, entries)
            if not fresh:
                return
            self._on_foreign(conversation_id, fresh)
            if len(entries) < 1000:
                return

    def _take(self, local: _Local) -> tuple[list[Op], list[StoredEvent], bytes | None]:
        """At most :data:`MAX_OPS_PER_SCRIPT` of a conversation's queued ops.

        Capped so that one script never holds Redis for long and a round trip
        never commits more events than a hot tail keeps: a burst committed
        all at once would push a viewer reading just behind out of memory,
        to storage reads that may not keep up (it would then be cut as slow).
        """
        ops = local.ops[:MAX_OPS_PER_SCRIPT]
        appended = sum(1 for op in ops if op[0] == "A")
        events = local.events[:appended]
        del local.ops[: len(ops)], local.tickets[: len(ops)], local.events[:appended]
        record = local.record if any(op[0] == "R" for op in ops) else None
        if not any(op[0] == "R" for op in local.ops):
            local.record = None
        return ops, events, record

    def _resolve_flushes(self) -> None:
        waiting, self._flushes = self._flushes, []
        for ticket, future in waiting:
            if ticket <= self._committed_ticket:
                if not future.done():
                    future.set_result(None)
            else:
                self._flushes.append((ticket, future))

    async def _commit(
        self, taken: list[tuple[str, _Local, list[Op], list[StoredEvent], bytes | None]]
    ) -> list[Any]:
        batch = self._batch()
        retention = self.settings.retention_events or 0
        at, cutoff = self._now_tick_ms(), self._cutoff_ms()
        counts: list[int] = []
        """Commands in the batch per conversation (its script first)."""
        for cid, local, ops, events, record in taken:
            keys = local.keys
            script_keys = keys.fixed
            pairs: dict[str, int] = {}
            token = ""
            if events:
                self._batches += 1
                token = f"{local.lease}#{self._batches}"
            args: list[Any] = [local.lease or "", retention, at, cutoff, token]
            for op in ops:
                kind = op[0]
                if kind in ("I", "D"):
                    collection = op[1]
                    if collection not in pairs:
                        pairs[collection] = len(script_keys) + 1
                        script_keys += keys.items(collection)
                    args += [kind, pairs[collection]]
                    if kind == "I":
                        args.append(collection)
                    args += op[2:]
                elif kind == "R":
                    args += ["R", record]
                else:
                    args += op
            await batch.script(self._scripts["COMMIT"], script_keys, args)
            counts.append(1)
            if events and not local.aging:
                batch.command("zadd", self.keys.aging, {cid: at}, nx=True)
                counts[-1] += 1
            if record is not None:
                counts[-1] += 2
                decoded = _record_decoder.decode(record)
                batch.command("zadd", self.keys.tenant(decoded.tenant), {cid: decoded.updated_at})
                if decoded.status == "running":
                    batch.command("sadd", self.keys.running, cid)
                else:
                    batch.command("srem", self.keys.running, cid)
        replies = await batch.execute()
        results: list[Any] = []
        index = 0
        for count in counts:
            reply = replies[index]
            if isinstance(reply, TRANSIENT):
                raise reply
            if isinstance(reply, Exception):
                logger.error("Redis refused a write: %s", reply)
                reply = [b"error"]
            results.append(reply)
            index += count
        return results

    # -- leases (SharedLog) --------------------------------------------------------
    def _hold(self, conversation_id: str, local: _Local, value: str) -> None:
        local.lease = value
        local.watched = False
        local.control_cursor = b"0-0"
        assert self._keeper is not None
        self._keeper.hold(conversation_id, value)
        assert self._reader is not None
        self._reader.watch_changed()

    def _forget_lease(self, conversation_id: str) -> None:
        if self._keeper is not None:
            self._keeper.drop(conversation_id)
        worker = self._control_workers.pop(conversation_id, None)
        if worker is not None:
            worker.cancel()
        self._control_queues.pop(conversation_id, None)

    def _fenced(self, conversation_id: str, local: _Local, why: str) -> None:
        if local.lease is None:
            return
        logger.warning("conversation %s: lease lost, %s", conversation_id, why)
        local.lease = None
        local.ops, local.tickets, local.events, local.record = [], [], [], None
        local.fences += 1
        local.tail.wake()  # its viewers here end with a resume hint (see ``wait``)
        self._forget_lease(conversation_id)
        self._on_lease_lost(conversation_id)

    def _lease_lost(self, conversation_id: str, value: str) -> None:
        """From the keeper thread (via the loop): a renewal found the lease gone."""
        local = self._locals.get(conversation_id)
        if local is not None and local.lease == value:
            self._fenced(conversation_id, local, "its renewal found it expired or taken")

    def holds(self, conversation_id: str) -> bool:
        """Held, and confirmed by Redis within the last ¾ of the TTL: a lease
        unconfirmed for longer (renewals failing through an outage) may have
        expired and been taken, so it is asked for again before use."""
        if self._held(conversation_id) is None or self._keeper is None:
            return False
        confirmed = self._keeper.confirmed.get(conversation_id, 0.0)
        return time.monotonic() - confirmed < 0.75 * self.lease_ttl

    async def intake(self, conversation_id: str, intake: Intake) -> IntakeResult:
        keys = self.keys.conversation(conversation_id)
        queue_keys = keys.items(intake.queue_collection)
        seen_keys = keys.items(intake.seen_collection)
        reply = await self._call(
            self._scripts["INTAKE"](
                keys=[
                    keys.record,
                    keys.log,
                    keys.lease,
                    keys.collections,
                    keys.times,
                    *queue_keys,
                    *seen_keys,
                ],
                args=[
                    self.owner,
                    int(self.lease_ttl * 1000),
                    intake.message_id,
                    intake.lane,
                    intake.priority,
                    *intake.item,
                    *intake.envelope,
                    intake.max_queued,
                    self.settings.retention_events or 0,
                    self._now_tick_ms(),
                    self._cutoff_ms(),
                    intake.queue_collection,
                    intake.seen_collection,
                ],
            )
        )
        outcome = IntakeOutcome(reply[0].decode())
        if outcome is IntakeOutcome.ACQUIRED:
            await self._lease_reply(conversation_id, reply)
        elif outcome is IntakeOutcome.DUPLICATE:
            return IntakeResult(outcome, acceptance=reply[1])
        elif outcome is IntakeOutcome.QUEUED:
            seq, holder = int(reply[1]), reply[3].decode().rpartition("|")[0]
            local = self._locals.get(conversation_id)
            if local is not None and int(reply[5]):
                local.tail.drop_through(int(reply[5]))
            # (the conversation is in the age index since its first commit)
            await self._wake(holder, conversation_id)
            if self._cluster:
                self._watchers.notify_soon({conversation_id})
            run = reply[4].decode() or None
            return IntakeResult(
                outcome,
                seq=seq,
                position=int(reply[2]),
                run_id=run,
                queue=tuple(item for item in reply[6] if item is not None),
            )
        return IntakeResult(outcome)

    async def claim(self, conversation_id: str, collection: str, message_id: str) -> bool:
        keys = self.keys.conversation(conversation_id)
        reply = await self._call(
            self._scripts["CLAIM"](
                keys=[keys.record, keys.collections, *keys.items(collection)],
                args=[collection, message_id],
            )
        )
        return bool(int(reply[0]))

    async def _wake(self, holder: str, conversation_id: str) -> None:
        """Tell the holder's reader to look at the conversation (a message
        queued or a control request waits for it). A wake-up lost here is
        found by the holder's periodic poll."""
        await self._call(
            self.redis.xadd(
                self.keys.process(holder),
                {"c": conversation_id},
                maxlen=10_000,
                approximate=True,
            )
        )

    async def acquire_lease(self, conversation_id: str) -> Lease:
        keys = self.keys.conversation(conversation_id)
        reply = await self._call(
            self._scripts["ACQUIRE"](
                keys=[keys.record, keys.lease], args=[self.owner, int(self.lease_ttl * 1000)]
            )
        )
        return await self._lease_reply(conversation_id, reply)

    async def _lease_reply(self, conversation_id: str, reply: Any) -> Lease:
        """What an ACQUIRE (or an INTAKE that took the lease) answered."""
        state = reply[0].decode()
        if state in ("gone", "held"):
            stale = self._locals.get(conversation_id)
            if stale is not None and stale.lease is not None:
                # lost while Redis was out of reach (taken over, or deleted)
                self._fenced(conversation_id, stale, "it expired while Redis was unreachable")
        if state == "gone":
            return Lease(LeaseState.GONE)
        if state == "held":
            return Lease(LeaseState.HELD, holder=reply[1].decode())
        record = _record_decoder.decode(reply[1])
        seq = int(reply[2] or 0)
        value = f"{self.owner}|{reply[3].decode()}"
        stale = self._locals.get(conversation_id)
        if stale is not None and stale.lease is not None and stale.lease != value:
            # it expired while Redis was out of reach (and may have been run
            # elsewhere meanwhile): what this process had of it is stale
            self._fenced(conversation_id, stale, "it expired while Redis was unreachable")
        local = self._local(conversation_id, seq, record.tenant)
        if local.lease is not None and self._keeper is not None:
            self._keeper.hold(conversation_id, local.lease)  # confirmed just now
        if local.lease is None:
            if local.tail.committed_seq != seq or local.tail.assigned_seq != seq:
                local.tail.drop_hot()
                local.tail.assigned_seq = local.tail.committed_seq = seq
            self._hold(conversation_id, local, value)
            local.tail.wake()
            if self._on_control is not None:
                await self.poll_control([conversation_id])  # left for a previous holder
        return Lease(LeaseState.ACQUIRED, holder=self.owner, taken_over=state == "acquired")

    async def release_lease(self, conversation_id: str) -> bool:
        local = self._held(conversation_id)
        if local is None:
            return True
        await self.flush()
        if local.lease is None:
            return True
        reply = await self._call(
            self._scripts["RELEASE"](
                keys=[local.keys.lease, local.keys.control], args=[local.lease]
            )
        )
        if reply == b"pending":
            return False
        local.lease = None
        self._forget_lease(conversation_id)
        if local.waiting:
            # viewers here wait on it (one that joined while another process
            # held it, or the run ended here after its owner died): from now
            # on the reader brings them what the next holder writes
            local.watched = True
        if self._reader is not None:
            self._reader.watch_changed()
        return True

    def set_handlers(
        self,
        on_control: ControlHandler,
        on_lease_lost: Callable[[str], None],
        on_foreign: ForeignHandler | None = None,
    ) -> None:
        self._on_control = on_control
        self._on_lease_lost = on_lease_lost
        if on_foreign is not None:
            self._on_foreign = on_foreign

    async def send_control(self, conversation_id: str, body: bytes, patience: float) -> bytes:
        keys = self.keys.conversation(conversation_id)
        request_id = new_id("req")
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._replies[request_id] = future
        try:
            queued = await self._call(
                self._scripts["SEND_CONTROL"](
                    keys=[keys.lease, keys.control],
                    args=[MAX_CONTROL_WAITING, request_id, self.keys.process(self.owner), body],
                )
            )
            if queued == 0:
                raise NotHeldError(conversation_id)
            if queued == -1:
                raise StorageUnavailableError(
                    "too many requests wait for this conversation's server; retry shortly"
                )
            lease, entry_id = queued[0], queued[1]
            await self._wake(lease.decode().rpartition("|")[0], conversation_id)
            return await self._await_reply(keys, future, lease, entry_id, patience)
        finally:
            self._replies.pop(request_id, None)

    async def _await_reply(
        self,
        keys: ConversationKeys,
        future: asyncio.Future[bytes],
        lease: bytes,
        entry_id: bytes,
        patience: float,
    ) -> bytes:
        """The holder's answer; or, should its lease expire unanswered (the
        holder died), the request withdrawn (``NotHeldError``: take the lease
        and run it here) rather than waiting out ``patience`` for nothing."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience
        check_every = max(0.05, min(0.5, self.lease_ttl / 4))
        while True:
            try:
                async with asyncio.timeout(min(check_every, max(0.0, deadline - loop.time()))):
                    return await asyncio.shield(future)
            except TimeoutError:
                if loop.time() >= deadline:
                    raise
            state = await self._call(
                self._scripts["WITHDRAW_CONTROL"](
                    keys=[keys.lease, keys.control], args=[lease, entry_id]
                )
            )
            if state == b"withdrawn":
                raise NotHeldError(keys.base)
            if state == b"done":
                raise TimeoutError  # ran, answer lost: a retry with its id is a duplicate

    async def reply(self, request: ControlRequest, body: bytes) -> None:
        local = self._held(request.conversation_id)
        if local is None:
            return  # lost meanwhile: what it did may not be written; the caller retries
        self._queued(local, ("K", request.entry_id))
        await self.flush()
        if self._held(request.conversation_id) is None:
            return
        await self._call(
            self.redis.xadd(
                request.reply_to,
                {"q": request.request_id, "b": body},
                maxlen=10_000,
                approximate=True,
            )
        )

    async def orphaned_runs(self) -> list[str]:
        ids = sorted(i.decode() for i in await self._call(self.redis.smembers(self.keys.running)))
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for cid in ids:
            pipe.exists(self.keys.conversation(cid).lease)
        held = await self._call(pipe.execute())
        return [cid for cid, exists in zip(ids, held, strict=True) if not exists]

    # -- called by the reader ------------------------------------------------------
    def streams_to_read(self) -> dict[str, bytes]:
        """The reader's XREAD set: the logs watched here of conversations held
        elsewhere. (Not the control streams of the leases held here: a
        requester wakes the holder through its process stream, so an XREAD
        does not grow with every idle conversation this process holds.)"""
        if self._cluster:
            return {}  # notified instead (see Reader)
        return {
            local.keys.log: b"%d-0" % local.tail.committed_seq
            for local in self._locals.values()
            if local.lease is None and local.watched
        }

    def watched(self) -> dict[str, int]:
        """The conversations whose logs are read here for viewers (held
        elsewhere) → the last seq read."""
        return {
            cid: local.tail.committed_seq
            for cid, local in self._locals.items()
            if local.lease is None and local.watched
        }

    async def sync_watchers(self, refresh: bool) -> None:
        """On a cluster: see :meth:`Watchers.sync` (the reader calls it)."""
        await self._watchers.sync(refresh)

    async def fetch_logs(self, conversation_ids: set[str]) -> None:
        """On a cluster: read the logs a writer named (see :mod:`.watchers`)."""
        await self._watchers.fetch(conversation_ids)

    def on_control_wake(self, conversation_id: str) -> None:
        """Another process queued a message (INTAKE) or a control request for
        a conversation held here."""
        if self._held(conversation_id) is not None:
            asyncio.get_running_loop().create_task(self.poll_control([conversation_id]))
            self._catch_up_soon(conversation_id)

    async def poll_control(self, conversation_ids: Sequence[str] | None = None) -> None:
        """Read the control requests waiting for leases held here (all of them
        by default: the sweep's safety net for a wake-up that never came)."""
        held = [
            (cid, local)
            for cid in (conversation_ids if conversation_ids is not None else list(self._locals))
            if (local := self._held(cid)) is not None
        ]
        if not held:
            return
        pipe = self.redis.pipeline(transaction=False)
        for _cid, local in held:
            pipe.xrange(local.keys.control, min=b"(" + local.control_cursor, max="+", count=100)
            pipe.hget(local.keys.record, "seq")
        replies = await self._call(pipe.execute())
        for index, (cid, local) in enumerate(held):
            entries, seq = replies[2 * index], replies[2 * index + 1]
            if entries:
                self.on_control_entries(cid, entries)
            if seq is not None and int(seq) > local.tail.committed_seq and not local.ops:
                self._catch_up_soon(cid)  # a message queued here whose wake-up was lost

    def on_log_entries(self, conversation_id: str, entries: list[Any]) -> None:
        local = self._locals.get(conversation_id)
        if local is None or local.lease is not None:
            return
        _absorb(local.tail, entries)

    def on_control_entries(self, conversation_id: str, entries: list[Any]) -> None:
        local = self._locals.get(conversation_id)
        if local is None or local.lease is None or self._on_control is None:
            return
        queue = self._control_queues.get(conversation_id)
        if queue is None:
            queue = self._control_queues[conversation_id] = asyncio.Queue()
            self._control_workers[conversation_id] = asyncio.create_task(
                self._serve_control(queue), name=f"steerline-control-{conversation_id}"
            )
        for entry_id, fields in entries:
            if _entry_order(entry_id) <= _entry_order(local.control_cursor):
                continue  # already taken (a wake-up and a poll both read it)
            local.control_cursor = entry_id
            queue.put_nowait(
                ControlRequest(
                    conversation_id=conversation_id,
                    request_id=fields[b"q"].decode(),
                    body=fields[b"b"],
                    reply_to=fields[b"to"].decode(),
                    entry_id=entry_id.decode(),
                )
            )

    async def _serve_control(self, queue: asyncio.Queue[ControlRequest]) -> None:
        assert self._on_control is not None
        while True:
            request = await queue.get()
            try:
                await self._on_control(request)
            except Exception:
                logger.exception("control request %s failed", request.request_id)

    def on_reply(self, fields: dict[bytes, bytes]) -> None:
        request_id = fields.get(b"q")
        if request_id is None:
            return  # a wake-up
        future = self._replies.get(request_id.decode())
        if future is not None and not future.done():
            future.set_result(fields.get(b"b", b""))

    def local_for_stream(self, stream: bytes) -> tuple[str, str] | None:
        """(conversation id, "log" | "ctl") of a stream key read by the reader."""
        name = stream.decode()
        start, end = name.find("{"), name.rfind("}")
        if start < 0 or end < 0:
            return None
        return name[start + 1 : end], name[end + 2 :]


def _config(client: Any, name: str) -> str | None:
    try:
        reply = client.config_get(name)
        value = reply.get(name.encode(), reply.get(name))
    except redis_errors.ResponseError:
        return None  # CONFIG disabled: open() warns
    return value.decode() if isinstance(value, bytes) else value


def _check_cluster(options: RedisOptions, info: dict[str, Any]) -> bool:
    """Whether the URL names a Redis Cluster node (a cluster has database 0 only)."""
    if str(info.get("cluster_enabled", 0)) != "1":
        return False
    if options.database != 0:
        raise InvalidValueError(
            f"Redis at {options.display} is a Redis Cluster node: a cluster has database 0 "
            f"only, not {options.database}"
        )
    return True


def _refuse_eviction(url: str, policy: str | None) -> None:
    """SPEC §4: a Redis that may evict keys would lose logs and leases silently."""
    if policy is not None and policy != "noeviction":
        raise InvalidValueError(
            f"Redis at {url} has maxmemory-policy {policy!r}: it may evict conversation "
            "keys (losing logs and leases). Set maxmemory-policy noeviction."
        )


def _entry_order(entry_id: bytes) -> tuple[int, int]:
    milliseconds, _, sequence = entry_id.partition(b"-")
    return int(milliseconds), int(sequence or 0)


def _sealed_again(event: StoredEvent, seq: int) -> StoredEvent:
    """``event`` numbered ``seq`` (byte for byte what COMMIT's ``reseal`` writes)."""
    unsealed = event.envelope[: -len(b',"seq":%d}' % event.seq)] + b"}"
    return StoredEvent(seq, event.event, seal_envelope(unsealed, seq), event.run_id)


def _absorb(tail: ConversationTail, entries: list[Any]) -> list[StoredEvent]:
    """Add to a tail the log entries it does not have yet; return them.
    Entries not following its last seq (retention dropped the ones between)
    empty its memory first: storage serves those reads."""
    fresh = [e for e in (event_of(i, f) for i, f in entries) if e.seq > tail.committed_seq]
    if fresh:
        if fresh[0].seq != tail.committed_seq + 1:
            tail.drop_hot()
        tail.committed(fresh)
        tail.assigned_seq = max(tail.assigned_seq, tail.committed_seq)
    return fresh


def event_of(entry_id: bytes, fields: dict[bytes, bytes]) -> StoredEvent:
    run = fields.get(b"r") or b""
    return StoredEvent(
        seq=int(entry_id.split(b"-", 1)[0]),
        event=fields[b"e"].decode(),
        envelope=fields[b"b"],
        run_id=run.decode() or None,
    )
