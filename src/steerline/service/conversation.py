"""A live conversation: one Agent bound to its event log.

The agent's native events go through the translator into the log as they are
emitted (``append`` never blocks). Runtime state is persisted in the same
ordered write stream, one element at a time where it changes that way: each
queued message is an item (written when queued or changed, deleted when
delivered or removed), each accepted message id is an item of the dedup
window (written the moment it is accepted, so it is a duplicate even after
a crash), and the context is a blob written at turn boundaries.

No window between "nothing queued" and "idle": the run announces its final
decision with ``agent_end`` (emitted with no ``await`` after its last inbox
poll). From then on a message that would start a run if the conversation
were idle is kept as the *next start* and the same task runs it right after
the current run, so nothing accepted is stranded in the queue.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import anyio
import msgspec
from msgspec import to_builtins

from steerline.core.errors import (
    AgentBusyError,
    InvalidValueError,
    MessageTooLargeError,
    RunMismatchError,
)
from steerline.core.errors import ConversationBusyError as ConversationBusyError
from steerline.core.errors import ConversationUnloadedError as ConversationUnloadedError
from steerline.core.events import (
    AgentEnd,
    AgentEvent,
    AgentStart,
    MessageStart,
    MessageUpdate,
    QueueUpdate,
    TurnEnd,
)
from steerline.core.ids import new_id
from steerline.core.messages import UserContent, UserMessage, as_user_content, content_size
from steerline.core.text import check_content, check_id
from steerline.log.base import ConversationRecord, EventLog, StorageUnavailableError
from steerline.runtime.agent import Agent, check_policy
from steerline.runtime.inbox import (
    LANES,
    InboxSnapshot,
    Lane,
    QueuedMessage,
    check_delivery_mode,
)
from steerline.service.commands import (
    Abort,
    Accepted,
    ClearQueue,
    Command,
    EditQueued,
    FollowUp,
    Modes,
    MoveQueued,
    Prompt,
    QueueChanged,
    QueueView,
    RemoveQueued,
    Result,
    SendNow,
    SetModes,
    Started,
    Steer,
)
from steerline.service.state import (
    CONTEXT_KEY,
    QUEUE_ITEMS,
    SEEN_ITEMS,
    StoredQueued,
    encode_context,
    encode_queued,
)
from steerline.wire.envelope import EventName
from steerline.wire.payloads import Delivery
from steerline.wire.translate import RunTranslator

logger = logging.getLogger("steerline.service")

SubmitMode = Literal["auto", "steer", "follow_up", "interrupt", "reject"]
SUBMIT_MODES: tuple[SubmitMode, ...] = get_args(SubmitMode)


def check_submit_mode(value: str) -> SubmitMode:
    if value not in SUBMIT_MODES:
        raise InvalidValueError(
            f"unknown mode {value!r}; expected one of {', '.join(SUBMIT_MODES)}"
        )
    return value


def message_mode(follow_up: bool, interrupt: bool) -> SubmitMode:
    """The submit mode of a steer (``interrupt``: with the immediate policy)
    or of a follow-up."""
    if follow_up:
        return "follow_up"
    return "interrupt" if interrupt else "steer"


def command_mode(command: Steer | FollowUp) -> SubmitMode:
    return message_mode(
        isinstance(command, FollowUp), isinstance(command, Steer) and command.interrupt
    )


def check_message_size(content: str | list[UserContent], limit: int) -> None:
    """``MessageTooLargeError`` if ``content`` is over the inbox's message limit
    (``InvalidValueError`` first if it is not valid Unicode text)."""
    check_content(content)
    size = content_size(as_user_content(content))
    if size > limit:
        raise MessageTooLargeError(f"message is {size} bytes; the limit is {limit}")


@dataclass(frozen=True, slots=True)
class Acceptance:
    """What happened to a submitted message, and where its stream starts."""

    conversation_id: str
    message_id: str
    duplicate: bool = False
    run_id: str | None = None
    """The run this message started, if it started one."""
    after: int = 0
    """The response stream reads events with ``seq > after`` ..."""
    start_run_id: str | None = None
    """... skipping those before this run's ``task_started`` when set."""
    queued: bool = False
    position: int = -1
    snapshot: InboxSnapshot | None = None
    lane: Lane | None = None
    """The lane it was queued in (None: it is the prompt of a run)."""


def accepted_result(acceptance: Acceptance, queue: QueueView) -> Accepted:
    """The command set's answer to a message (``Accepted``), with the queue now."""
    return Accepted(
        conversation_id=acceptance.conversation_id,
        message_id=acceptance.message_id,
        duplicate=acceptance.duplicate,
        queued=acceptance.queued,
        lane=acceptance.lane,
        position=acceptance.position if acceptance.queued else None,
        run_id=acceptance.run_id,
        queue=queue,
    )


_RECENT_ACCEPTANCES = 256
"""Acceptance points kept in memory for quick re-POST answers; older ones
are read from storage (they are stored with each id of the dedup window)."""


class _AcceptancePoint(msgspec.Struct, omit_defaults=True):
    after: int
    run: str | None = None


_acceptance_encoder = msgspec.json.Encoder()
_acceptance_decoder = msgspec.json.Decoder(_AcceptancePoint)


def decode_acceptance_point(stored: bytes) -> tuple[int, str | None] | None:
    """Where the stream of an accepted message starts, as its dedup-window
    item stores it (None: an id stored without one)."""
    if not stored:
        return None
    try:
        decoded = _acceptance_decoder.decode(stored)
    except msgspec.DecodeError:
        return None
    return decoded.after, decoded.run


_Stored = tuple[Lane, int, int, int]


def _stored_signature(message: QueuedMessage) -> _Stored:
    """What, when it changes, makes a queued message's stored item stale: lane,
    priority, arrival (a move or a renumbering changes only that) and content."""
    return (message.lane, message.priority, message.arrival, id(message.content))


Spawner = Callable[[Callable[[], Coroutine[Any, Any, None]]], None]


@dataclass(frozen=True, slots=True)
class _Start:
    """A run to start: with a message (a prompt) or from the queue (``None``)."""

    run_id: str
    content: str | list[UserContent] | None
    message_id: str | None


class Conversation:
    def __init__(
        self,
        record: ConversationRecord,
        agent: Agent,
        log: EventLog,
        spawn: Spawner,
        owner: str,
        admit: Callable[[str], None] = lambda _tenant: None,
        on_busy: Callable[[str, bool], None] = lambda _tenant, _busy: None,
        claim: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        self.record = record
        self._claim = claim
        """With a shared store: puts a new message id in the stored dedup
        window, False if another process accepted it first (see ``submit``)."""
        self._admit = admit
        """Raises if the tenant may not start one more run now."""
        self._on_busy = on_busy
        """Told when :attr:`busy` flips (the service counts running conversations)."""
        self._busy = False
        self.agent = agent
        self.log = log
        self._spawn = spawn
        self.owner = owner
        self.idle = anyio.Event()
        self.idle.set()
        self.last_seq = log.committed_seq(record.id)
        self.translator = RunTranslator(record.id, record.agent_name, self._append)
        self._queued_at: dict[str, int] = {}
        """seq of each just-accepted message's ``message_queued`` (its stream start)."""
        self._logged_elsewhere: dict[str, tuple[int, float]] = {}
        """Messages being adopted (see :meth:`adopt`) → their ``message_queued``'s
        seq and the time the other process accepted them."""
        self._stopping = False
        """The active run has decided to stop (``agent_end``): it takes nothing more."""
        self._next: _Start | None = None
        """A start requested while the active run was stopping; runs right after it."""
        self._persisted_queue: dict[str, _Stored] = {}
        self._since: dict[str, int] = {}
        """Stored queue items (queued or taken, not yet delivered) → their ``since``."""
        self._recent: OrderedDict[str, tuple[int, str | None]] = OrderedDict()
        """Recently accepted ids → where their response stream starts."""
        self._fresh = False
        self._unsaved_ids: list[str] = []
        """Accepted ids whose message is not stored yet (their item waits for it)."""
        self.viewers = 0
        """Open streams and sockets using this object (it is not unloaded meanwhile)."""
        self.last_used = time.monotonic()
        self.unloaded = False
        agent.steering_mode = check_delivery_mode(record.steering_mode)
        agent.follow_up_mode = check_delivery_mode(record.follow_up_mode)
        agent.steering_policy = check_policy(record.steering_policy)
        agent.subscribe(self._on_event)
        agent.inbox.on_remember = self._remember_id
        agent.inbox.on_forget = self._forget_id

    @property
    def id(self) -> str:
        return self.record.id

    # -- writing to the log ------------------------------------------------------
    def _append(self, event: EventName, envelope: bytes, run_id: str | None) -> None:
        self.last_seq = self.log.append(self.record.id, event.value, envelope, run_id or None)

    def _on_event(self, event: AgentEvent) -> None:
        if type(event) is MessageUpdate:  # nearly every event: the per-token path
            self.translator.message_update(event)
            return
        if isinstance(event, AgentEnd):
            self._stopping = True
        elif isinstance(event, AgentStart):
            self._stopping = False
        if isinstance(event, QueueUpdate):
            if event.cause is not None and event.cause.kind == "queued" and self._logged_elsewhere:
                self._keep_created_at(event.cause.message_ids)
            # State before events, ids last: whatever prefix of these writes a
            # crash leaves, the log never tells of a message storage lacks, and
            # an id is never a "duplicate" of a message that is not kept.
            self.save_queue()
            self._save_remembered_ids()
        cause = event.cause if isinstance(event, QueueUpdate) else None
        if cause is not None and cause.kind == "queued" and cause.lane is not None:
            # the queue change carries its cause: announce the accepted message
            delivery: Delivery = "steer" if cause.lane == "steering" else "follow_up"
            message_id = cause.message_ids[0]
            logged = self._logged_elsewhere.get(message_id)
            if logged is None:
                self.translator.message_queued(message_id, delivery, cause.position or 0)
                self._queued_at[message_id] = self.last_seq
            else:
                self._queued_at[message_id] = logged[0]
        self.translator(event)
        if isinstance(event, MessageStart) and isinstance(event.message, UserMessage):
            # delivered: its thread_started is queued for commit just before this
            self._delivered(event.message.id)
        elif isinstance(event, TurnEnd | AgentEnd):
            self.log.put_state(self.id, CONTEXT_KEY, encode_context(self.agent.messages))

    def _keep_created_at(self, message_ids: Sequence[str]) -> None:
        """An adopted message keeps the time it was accepted elsewhere (its
        clients were told it), not the time this process took it in."""
        for message_id in message_ids:
            logged = self._logged_elsewhere.get(message_id)
            message = self.agent.inbox.find(message_id)
            if logged is not None and message is not None:
                message.created_at = logged[1]

    def save_queue(self) -> None:
        """Write the queued messages that changed since the last save, delete
        the ones that left: one small write per change, never the whole queue.

        A message *taken* for delivery stays stored until it is delivered
        (its ``thread_started`` is in the log): deleting it at the take could
        lose it to a crash between the two commits.
        """
        inbox = self.agent.inbox
        current: dict[str, _Stored] = {}
        for lane in LANES:
            for message in inbox.messages(lane):
                signature = _stored_signature(message)
                current[message.id] = signature
                if self._persisted_queue.get(message.id) != signature:
                    self._store(message)
        taken = set(inbox.last_taken)
        for gone in self._persisted_queue.keys() - current.keys():
            if gone not in taken:
                self._since.pop(gone, None)
                self.log.delete_item(self.id, QUEUE_ITEMS, gone)
        self._persisted_queue = current

    def _store(self, message: QueuedMessage) -> None:
        since = self._since.setdefault(message.id, self.last_seq)
        self.log.put_item(self.id, QUEUE_ITEMS, message.id, encode_queued(message, since))

    def _delivered(self, message_id: str) -> None:
        if self._since.pop(message_id, None) is not None:
            self.log.delete_item(self.id, QUEUE_ITEMS, message_id)

    def mark_queue_saved(self, since: dict[str, int]) -> None:
        """The queue as restored from storage is what storage holds."""
        inbox = self.agent.inbox
        self._persisted_queue = {
            m.id: _stored_signature(m) for lane in LANES for m in inbox.messages(lane)
        }
        self._since = dict(since)

    # -- where each accepted message's stream starts (re-POSTs answer it again) --
    def _accepted(
        self, message_id: str, after: int, start_run_id: str | None
    ) -> tuple[int, str | None]:
        """Remember (and store with its id) where this message's response starts."""
        if self._fresh:  # the request created the conversation: from its first event
            after, start_run_id = 0, None
        self._recent[message_id] = (after, start_run_id)
        while len(self._recent) > _RECENT_ACCEPTANCES:
            self._recent.popitem(last=False)
        value = _acceptance_encoder.encode(_AcceptancePoint(after=after, run=start_run_id))
        if message_id in self._unsaved_ids:
            self._unsaved_ids.remove(message_id)
        self.log.put_item(self.id, SEEN_ITEMS, message_id, value)
        return after, start_run_id

    async def acceptance_of(self, message_id: str) -> Acceptance:
        """The acceptance of a message already accepted: a repeated request with
        its id answers the same stream again (SPEC §3.4)."""
        point = self._recent.get(message_id)
        if point is None:
            stored = await self.log.get_item(self.id, SEEN_ITEMS, message_id)
            point = decode_acceptance_point(stored or b"")
        after, start_run_id = point if point is not None else (self.last_seq, None)
        return Acceptance(
            self.id, message_id, duplicate=True, after=after, start_run_id=start_run_id
        )

    def _remember_id(self, message_id: str) -> None:
        # written once the message itself is stored (see _on_event, _accepted)
        self._unsaved_ids.append(message_id)

    def _save_remembered_ids(self) -> None:
        for message_id in self._unsaved_ids:
            self.log.put_item(self.id, SEEN_ITEMS, message_id, b"")
        self._unsaved_ids.clear()

    def _forget_id(self, message_id: str) -> None:
        self.log.delete_item(self.id, SEEN_ITEMS, message_id)

    # -- usage ---------------------------------------------------------------------
    def touch(self) -> None:
        self.last_used = time.monotonic()

    def abort_soon(self) -> None:
        """Abort the active run now (a client left with ``on_disconnect=cancel``)."""
        self.agent.abort()

    def attach(self) -> Callable[[], None]:
        """Count a viewer (stream or socket) until the returned function is called."""
        self.viewers += 1
        self.touch()
        detached = False

        def detach() -> None:
            nonlocal detached
            if not detached:
                detached = True
                self.viewers -= 1
                self.touch()

        return detach

    @property
    def busy(self) -> bool:
        """A run is active or about to start (from acceptance to the last ``done``)."""
        return self._busy

    @busy.setter
    def busy(self, value: bool) -> None:
        if value != self._busy:
            self._busy = value
            self._on_busy(self.record.tenant, value)

    @property
    def pending_run_id(self) -> str | None:
        """The run whose ``done`` is still to come, if any.

        Not always the active run: once a run decided to stop, its ``done`` is
        in the log (appended with no await after its last poll) while the
        record still names it until the next run starts or the conversation
        goes idle; then the pending run is the next start, or none.
        """
        if not self.busy:
            return None
        if self._stopping:
            return self.next_run_id
        return self.record.active_run_id

    @property
    def next_run_id(self) -> str | None:
        """The run that starts right after the active one (asked while it stopped)."""
        return self._next.run_id if self._next is not None else None

    @property
    def evictable(self) -> bool:
        return not self.busy and self.viewers == 0 and self._next is None

    def _check_usable(self) -> None:
        if self.unloaded:
            raise ConversationUnloadedError(
                f"conversation {self.id!r} was unloaded meanwhile; retry the request"
            )
        if not self.log.available:
            raise StorageUnavailableError(
                "the store cannot write right now; retry shortly (nothing accepted was lost)"
            )

    # -- input ---------------------------------------------------------------------
    async def submit(
        self,
        content: str | list[UserContent],
        *,
        mode: SubmitMode = "auto",
        message_id: str | None = None,
        priority: int = 0,
        start_if_idle: bool = True,
        fresh: bool = False,
        expected_run_id: str | None = None,
    ) -> Acceptance:
        """Deliver a user message according to ``mode`` (SPEC §3.4).

        ``fresh``: the request that sends it created the conversation, so its
        response stream starts at ``conversation_started``.

        ``start_if_idle``: whether a message for an idle conversation starts a
        run (``/agents/stream`` always; ``/messages`` when ``auto_continue``
        is on) or waits in the inbox. A run that already decided to stop
        counts as idle here: the message starts the next run right after it.

        Everything is checked before anything changes, and the id enters the
        dedup window (and storage) before the first ``await``, so concurrent
        requests with one id deliver it once.
        """
        self._check_usable()
        self.touch()
        if message_id is not None:
            check_id(message_id, "message id")
        check_message_size(content, self.agent.inbox.limits.max_message_bytes)
        message_id = message_id or new_id("msg")
        if self.agent.inbox.is_duplicate(message_id):
            return await self.acceptance_of(message_id)
        if self._claim is not None and message_id not in self._logged_elsewhere:
            # another process may queue this id at the same moment (a retry
            # sent to two servers): one of the two claims it, the other is told
            # it is a duplicate
            if not await self._claim(message_id) or self.agent.inbox.is_duplicate(message_id):
                return await self.acceptance_of(message_id)
            self._check_usable()
        if expected_run_id is not None and expected_run_id != self.agent.accepting_run_id:
            raise RunMismatchError(
                f"run {expected_run_id!r} is not the active run "
                f"({self.agent.accepting_run_id or 'none is active'}); nothing was queued",
                expected=expected_run_id,
                actual=self.agent.accepting_run_id,
            )
        self._fresh = fresh
        if not self.busy or self._stopping:
            if start_if_idle:
                return await self._start(content, message_id)
        elif mode == "reject":
            raise ConversationBusyError("the conversation is running a task; mode=reject")
        if mode in ("auto", "follow_up"):
            result = self.agent.follow_up(content, id=message_id, priority=priority)
        else:
            result = self.agent.steer(
                content, id=message_id, priority=priority, interrupt=mode == "interrupt"
            )
        queued_at = self._queued_at.pop(message_id, 0)
        after = queued_at - 1 if queued_at else self.last_seq
        after, start_run_id = self._accepted(message_id, after, None)
        await self.log.flush()
        return Acceptance(
            self.id,
            message_id,
            after=after,
            start_run_id=start_run_id,
            queued=True,
            position=result.position,
            snapshot=self.agent.queue_snapshot(),
            lane=result.lane,
            run_id=result.run_id,
        )

    async def adopt(self, stored: StoredQueued, queued_seq: int) -> None:
        """Take into the inbox a message another process queued and logged
        (Redis intake, SPEC §4) while this one runs the conversation.

        The same path as :meth:`submit`, so every rule holds as for a local
        message (a run that stopped meanwhile starts with it if it was sent
        to start one), except that its ``message_queued`` is not logged again.
        An id already known here (a retry that reached this process too) is
        left alone: it is queued or delivered once.
        """
        message = stored.message
        if self.agent.inbox.is_duplicate(message.id):
            return
        mode = message_mode(message.lane == "follow_up", message.interrupt)
        self._logged_elsewhere[message.id] = (queued_seq, message.created_at)
        try:
            await self.submit(
                message.content,
                mode=mode,
                message_id=message.id,
                priority=message.priority,
                start_if_idle=stored.start_if_idle,
            )
        finally:
            self._logged_elsewhere.pop(message.id, None)

    async def _start(
        self, content: str | list[UserContent] | None, message_id: str | None
    ) -> Acceptance:
        if self.busy and not self._stopping:
            raise AgentBusyError("a run is active")
        if content is not None:
            # refuse here, not inside the run task: the caller gets the error
            check_message_size(content, self.agent.inbox.limits.max_message_bytes)
        if not self.busy:
            self._admit(self.record.tenant)  # before anything is remembered or changed
        after = self.last_seq
        if self.busy and self._next is not None and content is not None:
            # a second start while stopping joins that next run as a follow-up
            self.agent.follow_up(content, id=message_id)
        elif message_id is not None:
            self.agent.inbox.remember(message_id)  # a duplicate from now on, durably
        if (
            content is not None
            and message_id is not None
            and not (self.busy and self._next is not None)
        ):
            # Stored like a queued message until the run delivers it, so a crash
            # before its thread_started leaves it queued, never lost.
            self._store(
                QueuedMessage(id=message_id, content=as_user_content(content), lane="follow_up")
            )
        if self.busy:  # stopping: the next run starts right after this one
            if self._next is None:
                self._next = _Start(new_id("run"), content, message_id)
            start = self._next
        else:
            start = _Start(new_id("run"), content, message_id)
            self.busy = True
            self.idle = anyio.Event()
            self._mark_running(start.run_id)
            self._spawn(lambda: self._run_all(start))
        start_run_id: str | None = start.run_id
        if message_id is not None:
            after, start_run_id = self._accepted(message_id, after, start.run_id)
        with anyio.CancelScope(shield=True):
            await self._save_record()  # also commits the remembered id before the answer
        return Acceptance(
            self.id,
            message_id or "",
            run_id=start.run_id,
            after=after,
            start_run_id=start_run_id,
        )

    def _mark_running(self, run_id: str) -> None:
        self._stopping = False
        self.record.status = "running"
        self.record.active_run_id = run_id
        self.record.owner = self.owner

    async def _run_all(self, start: _Start) -> None:
        """Run ``start``, then any start requested while it was stopping.

        Never raises: a conversation's failure must not reach the service's
        shared task group (it would end every other conversation's work).
        """
        try:
            next_start: _Start | None = start
            while next_start is not None:
                await self._run_one(next_start)
                next_start, self._next = self._next, None
                if next_start is not None:
                    self._mark_running(next_start.run_id)
                    await self._save_record()
        finally:
            self.busy = False
            self._stopping = False
            self.record.status = "idle"
            self.record.active_run_id = None
            with anyio.CancelScope(shield=True):
                await self._save_record()
            self.idle.set()

    async def _run_one(self, start: _Start) -> None:
        try:
            if start.content is None:
                await self.agent.send_now(run_id=start.run_id)
            else:
                await self.agent.prompt(start.content, id=start.message_id, run_id=start.run_id)
        except Exception:
            logger.exception("run %s of %s failed", start.run_id, self.id)
            try:
                self.translator.run_failed(start.run_id, "internal_error", "the run failed")
            except Exception:
                logger.exception("could not log the failure of run %s", start.run_id)

    async def _save_record(self) -> None:
        """Persist the record; during a storage outage it stays queued and is
        written when the store recovers, so there is nothing to do here."""
        try:
            await self.log.update_conversation(self.record)
        except StorageUnavailableError:
            logger.warning("conversation %s: record change held until the store recovers", self.id)
        except Exception:
            logger.exception("conversation %s: could not save its record", self.id)

    async def send_now(self) -> Acceptance:
        """Start a run with the kept queue (SPEC §2.9 ``send_now``): for an idle
        conversation whose queue was kept by abort, error or recovery."""
        self._check_usable()
        if self.busy and not self._stopping:
            raise AgentBusyError("a run is active; the queue is delivered by it")
        if not self.agent.has_queued_messages():
            raise InvalidValueError("nothing is queued")
        return await self._start(None, None)

    # -- the command set -------------------------------------------------------------
    async def execute(self, command: Command, *, auto_continue: bool) -> Result:
        """Run one command of the command set; the one entry point of every surface."""
        self.touch()
        match command:
            case Prompt():
                return self._accepted_result(
                    await self.submit(
                        command.content,
                        mode="reject",
                        message_id=command.id,
                        priority=command.priority,
                        start_if_idle=True,
                    )
                )
            case Steer() | FollowUp():
                mode = command_mode(command)
                return self._accepted_result(
                    await self.submit(
                        command.content,
                        mode=mode,
                        message_id=command.id,
                        priority=command.priority,
                        start_if_idle=auto_continue,
                        expected_run_id=command.expected_run_id,
                    )
                )
            case Abort():
                removed = await self.abort(clear_queues=command.clear_queues)
                return self._queue_result(removed=removed)
            case ClearQueue():
                lane = None if command.lane == "all" else command.lane
                return self._queue_result(removed=await self.clear_queue(lane))
            case SetModes():
                await self.set_modes(
                    steering_mode=command.steering_mode,
                    follow_up_mode=command.follow_up_mode,
                    steering_policy=command.steering_policy,
                )
                return Modes(
                    conversation_id=self.id,
                    steering_mode=self.agent.steering_mode,
                    follow_up_mode=self.agent.follow_up_mode,
                    steering_policy=self.agent.steering_policy,
                )
            case EditQueued():
                self._check_usable()
                if command.content is not None:
                    check_message_size(command.content, self.agent.inbox.limits.max_message_bytes)
                message = self.agent.edit_queued(
                    command.id, content=command.content, priority=command.priority
                )
                await self.log.flush()
                return self._queue_result(message=message)
            case RemoveQueued():
                self._check_usable()
                message = self.agent.remove_queued(command.id)
                await self.log.flush()
                return self._queue_result(message=message)
            case MoveQueued():
                self._check_usable()
                message = self.agent.move_queued(
                    command.id, lane=command.lane, before=command.before
                )
                await self.log.flush()
                return self._queue_result(message=message)
            case SendNow():
                acceptance = await self.send_now()
                assert acceptance.run_id is not None
                return Started(
                    conversation_id=self.id, run_id=acceptance.run_id, queue=self.queue_view()
                )

    def queue_view(self) -> QueueView:
        snapshot = self.agent.queue_snapshot()
        return QueueView(steering=snapshot.steering, follow_up=snapshot.follow_up)

    def _queue_result(
        self, *, message: QueuedMessage | None = None, removed: Sequence[QueuedMessage] = ()
    ) -> QueueChanged:
        return QueueChanged(
            conversation_id=self.id,
            message=message.view() if message is not None else None,
            removed=[m.view() for m in removed],
            queue=self.queue_view(),
        )

    def _accepted_result(self, acceptance: Acceptance) -> Accepted:
        return accepted_result(acceptance, self.queue_view())

    # -- control -------------------------------------------------------------------
    async def abort(self, clear_queues: bool = False) -> list[QueuedMessage]:
        removed = self.agent.abort(clear_queues=clear_queues)
        await self.log.flush()
        return removed

    async def clear_queue(self, lane: Lane | None) -> list[QueuedMessage]:
        self._check_usable()
        removed = self.agent.clear_queues(lane)
        await self.log.flush()
        return removed

    async def set_modes(
        self,
        *,
        steering_mode: str | None = None,
        follow_up_mode: str | None = None,
        steering_policy: str | None = None,
    ) -> None:
        self._check_usable()
        if steering_mode is not None:
            self.agent.steering_mode = check_delivery_mode(steering_mode)
            self.record.steering_mode = steering_mode
        if follow_up_mode is not None:
            self.agent.follow_up_mode = check_delivery_mode(follow_up_mode)
            self.record.follow_up_mode = follow_up_mode
        if steering_policy is not None:
            self.agent.steering_policy = check_policy(steering_policy)
            self.record.steering_policy = steering_policy
        await self.log.update_conversation(self.record)

    def status(self) -> dict[str, object]:
        snapshot = self.agent.queue_snapshot()
        # As the log tells it: once a run's ``done`` is logged the conversation
        # is idle to every reader, though the task winding the run down may
        # still hold ``busy`` for a few awaits (a client that read ``done`` and
        # then asked must not see "running").
        pending = self.pending_run_id
        return {
            "conversation_id": self.id,
            "agent_name": self.record.agent_name,
            "status": "running" if pending is not None else "idle",
            "active_run_id": pending,
            "queue": {
                "steering": to_builtins(snapshot.steering),
                "follow_up": to_builtins(snapshot.follow_up),
            },
            "steering_mode": self.agent.steering_mode,
            "follow_up_mode": self.agent.follow_up_mode,
            "steering_policy": self.agent.steering_policy,
            "last_seq": self.last_seq,
            "created_at": self.record.created_at,
        }
