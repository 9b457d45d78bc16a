"""``ConversationService``: creates, loads, recovers and shuts down conversations."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from itertools import islice
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import TaskGroup

from steerline.core.errors import ConversationNotFoundError as ConversationNotFoundError
from steerline.core.errors import SteerlineError
from steerline.core.errors import TooManyRunsError as TooManyRunsError
from steerline.core.ids import new_id
from steerline.core.text import check_id
from steerline.log.base import (
    ConversationExistsError,
    ConversationRecord,
    EventLog,
    RetentionError,
    StorageUnavailableError,
    StoredEvent,
)
from steerline.log.shared import ControlRequest, LeaseState
from steerline.runtime.agent import Agent
from steerline.runtime.inbox import InboxLimits
from steerline.service.agents import AgentRegistry
from steerline.service.cluster import RemoteConversation, remote_view, serve_control, shared_log
from steerline.service.conversation import Conversation
from steerline.service.state import (
    CONTEXT_KEY,
    INBOX_KEY,
    QUEUE_ITEMS,
    SEEN_ITEMS,
    StoredQueued,
    decode_context,
    decode_inbox,
    decode_queued,
    encode_inbox,
)
from steerline.wire.envelope import (
    EventName,
    encode_unsealed,
    queued_message_id,
    thread_id_of,
    thread_message_id,
)
from steerline.wire.translate import conversation_started

logger = logging.getLogger("steerline.service")

ConversationHandle = Conversation | RemoteConversation
"""What the routes get: a conversation run here, or a view of one run elsewhere."""


@dataclass(frozen=True, slots=True)
class ServiceLimits:
    auto_continue: bool = True
    """A message accepted while a conversation is idle starts a run."""
    inbox: InboxLimits = field(default_factory=InboxLimits)
    shutdown_grace: float = 10.0
    """Seconds running tasks get to finish at shutdown before they are aborted."""
    max_live_conversations: int = 1000
    """Conversations kept loaded in memory; beyond this the least recently used
    idle ones (no run, no viewer) are unloaded (they reload from storage)."""
    idle_unload_after: float = 600.0
    """Seconds after its last use an idle conversation is unloaded anyway."""
    max_running_per_tenant: int = 32
    """Conversations of one tenant running at once; one more start is refused
    (429 ``too_many_runs``). With the unloading above this bounds a tenant's memory."""


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{new_id('proc')}"


@asynccontextmanager
async def _keyed_lock(locks: dict[str, anyio.Lock], key: str) -> AsyncIterator[None]:
    """Hold the lock of ``key`` in ``locks`` (made on first use, dropped once
    nobody waits for it: the dict holds only keys in use, and ``key in
    locks`` says one is)."""
    lock = locks.setdefault(key, anyio.Lock())
    try:
        async with lock:
            yield
    finally:
        if not lock.statistics().tasks_waiting:
            locks.pop(key, None)


class _LeaseLetGo(Exception):
    """A shared conversation's lease was let go while a request waited to load
    it; :meth:`ConversationService.open` takes it again."""


class ConversationService:
    """Entered as an async context manager for the server's lifetime."""

    def __init__(
        self,
        log: EventLog,
        registry: AgentRegistry | None = None,
        limits: ServiceLimits | None = None,
        owner: str | None = None,
    ) -> None:
        self.log = log
        self.registry = registry or AgentRegistry()
        self.limits = limits or ServiceLimits()
        self.shared = shared_log(log)
        """The coordination of a store shared by several processes (``redis://``)."""
        # with a shared store, the lease values name the process: one id for both
        self.owner = owner or (self.shared.owner if self.shared else default_owner())
        self._live: OrderedDict[str, Conversation] = OrderedDict()
        """Loaded conversations, least recently used first."""
        self._loading: dict[str, anyio.Lock] = {}
        self._adopting: dict[str, anyio.Lock] = {}
        """Per conversation: messages queued elsewhere are taken in one batch at a time."""
        self._running: Counter[str] = Counter()
        """Busy conversations per tenant (kept by each conversation's ``busy``)."""
        self._group: TaskGroup | None = None
        self.shutting_down = anyio.Event()
        self.runs_started = 0
        self.control_patience = (
            max(5.0, 1.5 * self.shared.lease_ttl) if self.shared is not None else 0.0
        )
        """Seconds a command waits for the process running its conversation."""

    async def __aenter__(self) -> ConversationService:
        await self.log.open()
        self._group = await anyio.create_task_group().__aenter__()
        if self.shared is not None:
            self.shared.set_handlers(self._serve_control, self._lease_lost, self._foreign)
            self._group.start_soon(self._sweep_periodically)
        else:
            await self.recover()
        self._group.start_soon(self._unload_idle_periodically)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()
        assert self._group is not None
        self._group.cancel_scope.cancel()
        await self._group.__aexit__(None, None, None)
        await self.log.close()

    # -- lookup ------------------------------------------------------------------
    async def create(
        self, tenant: str, agent_name: str | None = None, conversation_id: str | None = None
    ) -> Conversation:
        """A new conversation with ``agent_name`` (None: the registry's default agent)."""
        self.check_writable()
        if conversation_id is not None:
            check_id(conversation_id, "conversation id", 128)
        spec = self.registry.get(agent_name)
        agent = spec.build()
        record = ConversationRecord(
            id=conversation_id or new_id("conv"),
            tenant=tenant,
            agent_name=spec.name,
            # a new conversation starts with the agent's configured modes and policy
            steering_mode=agent.steering_mode,
            follow_up_mode=agent.follow_up_mode,
            steering_policy=agent.steering_policy,
        )
        first = conversation_started(record.id, record.agent_name)
        envelope = encode_unsealed(EventName.CONVERSATION_STARTED, first)
        await self.log.create_conversation(record, (EventName.CONVERSATION_STARTED.value, envelope))
        return self._bind(record, agent)

    async def get(self, tenant: str, conversation_id: str) -> Conversation:
        """The conversation, run here. With a shared store, the conversation
        the routes see may be run by another process: see :meth:`open`."""
        live = self._live.get(conversation_id)
        # (not while it is being loaded or recovered: it is in _live from the
        # start of _load, its queue, dedup window and run state not yet there)
        if live is not None and conversation_id not in self._loading:
            if live.record.tenant != tenant:
                raise self._not_found(conversation_id)
            self._live.move_to_end(conversation_id)
            live.touch()
            return live
        async with _keyed_lock(self._loading, conversation_id):
            live = self._live.get(conversation_id)
            if live is None:
                if self.shared is not None and not self.shared.holds(conversation_id):
                    # its lease was let go (unloaded) while this request
                    # waited: open() takes it again, or finds its holder
                    raise _LeaseLetGo(conversation_id)
                record = await self.log.get_conversation(conversation_id)
                if record is None:
                    raise self._not_found(conversation_id)
                if record.status == "running" and self.shared is not None:
                    # its lease was free: the process that ran it is gone
                    await self._recover_one(record)
                live = await self._load(record)
        if live.record.tenant != tenant:
            raise self._not_found(conversation_id)
        live.touch()
        return live

    async def open(self, tenant: str, conversation_id: str) -> ConversationHandle:
        """The conversation as the routes use it: run here, or (with a shared
        store, its lease held by another process) a view whose commands go to
        that process. A free lease is taken: this process runs it from now on."""
        if self.shared is None:
            return await self.get(tenant, conversation_id)
        while True:
            if not self.shared.holds(conversation_id):
                # take it, or confirm it is still ours (a lease found lost is
                # forgotten first: on_lease_lost drops what was loaded of it)
                lease = await self.shared.acquire_lease(conversation_id)
                if lease.state is LeaseState.GONE:
                    raise self._not_found(conversation_id)
                if lease.state is LeaseState.HELD:
                    record = await self.log.get_conversation(conversation_id)
                    if record is None or record.tenant != tenant:
                        raise self._not_found(conversation_id)
                    if not self.shared.holds(conversation_id):
                        return await remote_view(self, record)
                    continue  # taken over here meanwhile
            try:
                return await self.get(tenant, conversation_id)
            except _LeaseLetGo:
                continue

    async def get_held(self, conversation_id: str) -> Conversation:
        """A conversation whose lease this process holds, loaded if it was unloaded."""
        record = await self.log.get_conversation(conversation_id)
        if record is None:
            raise self._not_found(conversation_id)
        return await self.get(record.tenant, conversation_id)

    async def get_or_create(
        self, tenant: str, conversation_id: str | None, agent_name: str | None
    ) -> tuple[ConversationHandle, bool]:
        if conversation_id is not None:
            try:
                return await self.open(tenant, conversation_id), False
            except ConversationNotFoundError:
                if await self.log.get_conversation(conversation_id) is not None:
                    raise
            try:
                return await self.create(tenant, agent_name, conversation_id), True
            except ConversationExistsError:
                if await self.log.get_conversation(conversation_id) is None:
                    raise  # a deleted id is never used again
                # another process created it just now
                return await self.open(tenant, conversation_id), False
        return await self.create(tenant, agent_name, conversation_id), True

    async def list_records(
        self, tenant: str, *, limit: int, offset: int
    ) -> list[ConversationRecord]:
        records = await self.log.list_conversations(tenant, limit=limit, offset=offset)
        for record in records:
            live = self._live.get(record.id)
            if live is not None:
                record.status = "running" if live.pending_run_id is not None else "idle"
        return records

    async def delete(self, tenant: str, conversation_id: str) -> None:
        self.check_writable()
        handle = await self.open(tenant, conversation_id)
        if not isinstance(handle, Conversation):
            # run elsewhere: its holder's next write finds it gone and stops
            await self.log.delete_conversation(conversation_id)
            return
        conversation = handle
        conversation.agent.abort()
        with anyio.move_on_after(self.limits.shutdown_grace):
            await conversation.idle.wait()
        self._unload(conversation)
        await self.log.delete_conversation(conversation_id)

    def _admit_run(self, tenant: str) -> None:
        """Refuse a new run beyond the tenant's limit of running conversations."""
        limit = self.limits.max_running_per_tenant
        if self._running[tenant] >= limit:
            raise TooManyRunsError(
                f"at most {limit} conversations of one tenant run at once; "
                "wait for one to finish or queue the message"
            )

    def _count_running(self, tenant: str, busy: bool) -> None:
        self._running[tenant] += 1 if busy else -1
        if self._running[tenant] <= 0:
            del self._running[tenant]

    def check_writable(self) -> None:
        """``StorageUnavailableError`` (503) while the store cannot write."""
        if not self.log.available:
            raise StorageUnavailableError(
                "the store cannot write right now; retry shortly (nothing accepted was lost)"
            )

    def live_conversations(self) -> list[Conversation]:
        return list(self._live.values())

    # -- internals -----------------------------------------------------------------
    def _not_found(self, conversation_id: str) -> ConversationNotFoundError:
        return ConversationNotFoundError(f"conversation {conversation_id!r} not found")

    def spawn(self, job: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``job`` in the service's task group (its failure stays its own)."""
        self._spawn(job)

    def _spawn(self, job: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Start a conversation's run task (counted in ``runs_started``)."""
        self._background(job)
        self.runs_started += 1

    def _background(self, job: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if self._group is None:
            raise SteerlineError("the service is not running")

        async def guarded() -> None:
            # The task group is shared by every conversation: an exception
            # reaching it would cancel all of them. Whatever one run does
            # wrong stays with that run.
            try:
                await job()
            except Exception:
                logger.exception("a conversation task failed")

        self._group.start_soon(guarded)

    def _bind(self, record: ConversationRecord, agent: Agent | None = None) -> Conversation:
        if agent is None:
            agent = self.registry.get(record.agent_name).build()
        agent.inbox.limits = self.limits.inbox
        conversation = Conversation(
            record,
            agent,
            self.log,
            self._spawn,
            self.owner,
            admit=self._admit_run,
            on_busy=self._count_running,
            claim=self._claimer(record.id),
        )
        self._live[record.id] = conversation
        self._unload_over_limit()
        return conversation

    async def _load(self, record: ConversationRecord) -> Conversation:
        conversation = self._bind(record)
        try:
            context = await self.log.get_state(record.id, CONTEXT_KEY)
            if context is not None:
                conversation.agent.messages[:] = decode_context(context)
            stored = [decode_queued(v) for _, v in await self.log.get_items(record.id, QUEUE_ITEMS)]
            if record.status == "running" and stored:
                stored = await self._undelivered(record.id, stored)
            seen = [key for key, _ in await self.log.get_items(record.id, SEEN_ITEMS)]
            conversation.agent.inbox.restore([s.message for s in stored], seen)
            conversation.mark_queue_saved({s.message.id: s.since for s in stored})
            legacy = await self.log.get_state(record.id, INBOX_KEY)
            if legacy is not None:
                state = decode_inbox(legacy)
                if state.messages or state.seen_ids:
                    # a file written before queue and ids became items: move them over once
                    conversation.agent.inbox.restore(state.messages, state.seen_ids)
                    for message_id in state.seen_ids:
                        self.log.put_item(record.id, SEEN_ITEMS, message_id, b"")
                    conversation.save_queue()
                    self.log.put_state(record.id, INBOX_KEY, encode_inbox([], []))
        except BaseException:
            self._live.pop(record.id, None)
            raise
        return conversation

    async def _unfinished_run(self, record: ConversationRecord) -> tuple[str, str | None] | None:
        """The run a dead process left without its ``done``, if any.

        The record says "running" until its change commits, which may be just
        after the run's ``done`` did: then there is nothing to end (ending it
        again would write a second ``done``). A run that logged events after
        the last ``done`` is the one to end, whatever the record names; a run
        the record names that logged nothing at all is ended too. Returns the
        run id and its last thread id (the failure belongs to that thread).
        """
        since_done = await self._events_since_last_done(record.id)
        last_done = since_done[0] if since_done and since_done[0].event == EventName.DONE else None
        for event in reversed(since_done):
            if event.event != EventName.DONE and event.run_id:
                run_id = event.run_id  # a run logged events after the last done
                threads = [
                    thread_id_of(e.envelope)
                    for e in since_done
                    if e.event == "thread_started" and e.run_id == run_id
                ]
                return run_id, threads[-1] if threads else None
        if last_done is not None and last_done.run_id == record.active_run_id:
            return None
        return record.active_run_id or new_id("run"), None

    async def _events_since_last_done(self, conversation_id: str) -> list[StoredEvent]:
        """The log from its last ``done`` on (or all of it without one),
        read backwards in growing windows: usually a handful of events."""
        head = self.log.committed_seq(conversation_id)
        window = 64
        while True:
            oldest = await self.log.oldest_seq(conversation_id)
            start = max(head - window, oldest - 1, 0)
            try:
                events = await self.log.read(conversation_id, start, head - start)
            except RetentionError:
                continue  # trimmed meanwhile: read again from the new oldest
            for index in range(len(events) - 1, -1, -1):
                if events[index].event == EventName.DONE:
                    return events[index:]
            if start <= max(oldest - 1, 0):
                return events
            window *= 4

    async def _undelivered(
        self, conversation_id: str, stored: list[StoredQueued]
    ) -> list[StoredQueued]:
        """After a crash: drop stored messages whose delivery reached the log.

        A run deletes a message's item right after its ``thread_started``;
        a crash between the two commits leaves both, and the log decides.
        """
        after = max(min(s.since for s in stored), await self.log.oldest_seq(conversation_id) - 1)
        pending = {s.message.id for s in stored}
        delivered: set[str] = set()
        while pending - delivered:
            try:
                batch = await self.log.read(conversation_id, after, 1000)
            except RetentionError:
                after = await self.log.oldest_seq(conversation_id) - 1
                continue
            if not batch:
                break
            for event in batch:
                if event.event == "thread_started":
                    message_id = thread_message_id(event.envelope)
                    if message_id in pending:
                        delivered.add(message_id)
            after = batch[-1].seq
        for message_id in delivered:
            self.log.delete_item(conversation_id, QUEUE_ITEMS, message_id)
        return [s for s in stored if s.message.id not in delivered]

    # -- memory: unloading idle conversations ----------------------------------------
    def _unload(self, conversation: Conversation) -> None:
        if self._live.get(conversation.id) is conversation:
            del self._live[conversation.id]
        conversation.unloaded = True
        if self.shared is not None and self.shared.holds(conversation.id) and self._group:
            shared, cid = self.shared, conversation.id

            async def release() -> None:
                # refused while control requests wait: they reload it here.
                # Under the conversation's loading lock: a request arriving
                # meanwhile waits, then takes the lease again (get() raises
                # _LeaseLetGo to open()) instead of loading it here on a lease
                # already let go, whose every write Redis would refuse
                with anyio.CancelScope(shield=True):
                    async with _keyed_lock(self._loading, cid):
                        if self._live.get(cid) is None and await shared.release_lease(cid):
                            self.log.release(cid)

            self._group.start_soon(release)
            return
        self.log.release(conversation.id)

    def _unload_over_limit(self) -> None:
        """Unload least recently used idle conversations beyond the limit."""
        excess = len(self._live) - max(self.limits.max_live_conversations, 1)
        if excess <= 0:
            return
        # least recently used first: the first evictable ones are found at once
        evictable = (c for c in self._live.values() if c.evictable)
        for conversation in list(islice(evictable, excess)):
            self._unload(conversation)

    def unload_idle(self, now: float | None = None) -> int:
        """Unload conversations unused for ``idle_unload_after`` seconds."""
        now = time.monotonic() if now is None else now
        limit = self.limits.idle_unload_after
        stale = [c for c in self._live.values() if c.evictable and now - c.last_used >= limit]
        for conversation in stale:
            self._unload(conversation)
        return len(stale)

    async def _unload_idle_periodically(self) -> None:
        interval = max(min(self.limits.idle_unload_after / 4, 60.0), 0.05)
        while True:
            await anyio.sleep(interval)
            self.unload_idle()

    async def recover(self) -> None:
        """End runs that a dead process left active (SPEC §4 recovery).

        Their queued messages are kept and start nothing by themselves.
        """
        for stale in await self.log.running_conversations():
            if stale.owner == self.owner:
                continue
            # fetched through the log, which loads its seq counter (else append fails)
            record = await self.log.get_conversation(stale.id)
            if record is None:
                continue
            await self._recover_one(record)
        await self.log.flush()

    async def _recover_one(self, record: ConversationRecord) -> None:
        """End the run a dead process left active, once; keep its queue."""
        conversation = await self._load(record)
        unfinished = await self._unfinished_run(record)
        if unfinished is not None:
            run_id, thread_id = unfinished
            conversation.translator.run_failed(
                run_id,
                "run_lost",
                "the process running this task stopped unexpectedly",
                thread_id,
            )
        else:
            run_id = record.active_run_id or ""
        record.status = "idle"
        record.active_run_id = None
        record.owner = None
        await self.log.update_conversation(record)
        logger.warning("recovered conversation %s: run %s failed", record.id, run_id)
        self._unload(conversation)  # loaded again, as recorded now, by whoever asks

    # -- a shared store: leases and control requests ---------------------------------
    async def _serve_control(self, request: ControlRequest) -> None:
        await serve_control(self, request)

    def _claimer(self, conversation_id: str) -> Callable[[str], Awaitable[bool]] | None:
        shared = self.shared
        if shared is None:
            return None

        async def claim(message_id: str) -> bool:
            return await shared.claim(conversation_id, SEEN_ITEMS, message_id)

        return claim

    @property
    def inbox_limits(self) -> InboxLimits:
        return self.limits.inbox

    def _foreign(self, conversation_id: str, events: list[StoredEvent]) -> None:
        """Messages another process queued for a conversation run here (the
        shared log's intake): the inbox takes them, in log order."""
        queued = [
            (event.seq, message_id)
            for event in events
            if event.event == EventName.MESSAGE_QUEUED
            and (message_id := queued_message_id(event.envelope)) is not None
        ]
        if queued and self._group is not None:  # (none once the service stopped)
            self._background(lambda: self._adopt(conversation_id, queued))

    async def _adopt(self, conversation_id: str, queued: list[tuple[int, str]]) -> None:
        if conversation_id not in self._live and conversation_id not in self._loading:
            return  # not loaded here: loading it restores its queue from storage
        try:
            async with _keyed_lock(self._adopting, conversation_id):
                conversation = await self.get_held(conversation_id)
                for seq, message_id in queued:
                    if conversation.agent.inbox.is_duplicate(message_id):
                        continue  # written here, or already taken in
                    stored = await self.log.get_item(conversation_id, QUEUE_ITEMS, message_id)
                    if stored is None:
                        continue  # removed meanwhile
                    await conversation.adopt(decode_queued(stored), seq)
        except (SteerlineError, _LeaseLetGo) as exc:
            # still stored as queued: loading the conversation again restores it
            logger.warning(
                "conversation %s: a message queued elsewhere waits: %s", conversation_id, exc
            )

    def _lease_lost(self, conversation_id: str) -> None:
        """A write was refused or the lease expired: stop the run here at once
        (another process ends it in the log) and forget the conversation."""
        conversation = self._live.pop(conversation_id, None)
        if conversation is None:
            return
        conversation.unloaded = True
        if conversation.busy:
            conversation.agent.abort()
        logger.warning("conversation %s: lease lost, its run here was stopped", conversation_id)

    async def sweep(self) -> int:
        """End the runs of processes that died (their lease expired): each is
        ended once, by whichever process takes its lease first. Returns how many."""
        assert self.shared is not None
        await self.shared.poll_control()
        ended = 0
        for conversation_id in await self.shared.orphaned_runs():
            lease = await self.shared.acquire_lease(conversation_id)
            if lease.state is not LeaseState.ACQUIRED or not lease.taken_over:
                continue
            record = await self.log.get_conversation(conversation_id)
            if record is not None and record.status == "running":
                # get() ends the dead run under its per-conversation lock and
                # keeps the conversation loaded here: a request meanwhile (a
                # command forwarded to this new holder, or a client's) waits
                # for that end instead of starting a run on a half-recovered
                # conversation, and finds it held, not just let go
                await self.get(record.tenant, conversation_id)
                ended += 1
            elif conversation_id not in self._live:
                await self.shared.release_lease(conversation_id)
        return ended

    async def _sweep_periodically(self) -> None:
        assert self.shared is not None
        interval = max(self.shared.lease_ttl / 3, 0.1)
        while True:
            try:
                await self.sweep()
            except StorageUnavailableError as exc:
                logger.debug("lease sweep skipped: %s", exc)  # the store logs the outage
            except Exception:
                logger.exception("lease sweep failed")
            await anyio.sleep(interval)

    async def shutdown(self) -> None:
        """Let running tasks finish within the grace period, then abort them."""
        self.shutting_down.set()
        busy = [c for c in self._live.values() if c.busy]
        with anyio.move_on_after(self.limits.shutdown_grace):
            for conversation in busy:
                await conversation.idle.wait()
        for conversation in busy:
            if conversation.busy:
                conversation.agent.abort()
        with anyio.move_on_after(5):
            for conversation in busy:
                await conversation.idle.wait()
        await self.log.flush()
