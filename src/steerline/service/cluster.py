"""Conversations run by another process (a shared ``redis://`` store).

Each conversation is run by the process holding its lease (SPEC §4). A
request that reaches another process is served there all the same (no
sticky sessions): reads come from the shared log, and a message (steer,
follow-up) for a running conversation is queued and logged here, with no
lease, by the store's intake script; the holder learns of it from the log
and takes it into its inbox (``ConversationService._adopt``). Everything
else (a message to an idle conversation, which the holder decides to run
or queue; ``expected_run_id`` and ``mode=reject``, which need the holder's
view of the run; abort; queue edits) becomes a *control request* in the
conversation's control stream, which the holder runs through the same
command set as a local request and answers once its effects are written.
The caller gets the same answer, with the same errors, as the holder's own
clients. The store fences the holder's writes, so a dead or stale holder
changes nothing after its lease is gone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Literal, Protocol

import msgspec

from steerline.core import errors
from steerline.core.errors import SteerlineError, StorageUnavailableError
from steerline.core.ids import new_id
from steerline.core.messages import UserContent, as_user_content
from steerline.core.text import check_id
from steerline.log.base import ConversationRecord, EventLog, RetentionError
from steerline.log.shared import (
    ControlRequest,
    Intake,
    IntakeOutcome,
    NotHeldError,
    SharedLog,
)
from steerline.runtime.inbox import InboxLimits, InboxSnapshot, Lane, QueuedMessage
from steerline.service.commands import (
    Accepted,
    Command,
    FollowUp,
    Modes,
    QueueChanged,
    QueueView,
    Result,
    Started,
    Steer,
)
from steerline.service.conversation import (
    Acceptance,
    Conversation,
    SubmitMode,
    accepted_result,
    check_message_size,
    command_mode,
    decode_acceptance_point,
)
from steerline.service.state import QUEUE_ITEMS, SEEN_ITEMS, decode_queued, encode_queued
from steerline.wire.envelope import EventName
from steerline.wire.translate import RunTranslator


class Host(Protocol):
    """What this module needs of the service (which imports this module)."""

    log: EventLog
    shared: SharedLog | None
    control_patience: float

    async def open(
        self, tenant: str, conversation_id: str
    ) -> Conversation | RemoteConversation: ...

    @property
    def inbox_limits(self) -> InboxLimits: ...

    def spawn(self, job: Callable[[], Coroutine[Any, Any, None]]) -> None: ...

    async def get_held(self, conversation_id: str) -> Conversation: ...


logger = logging.getLogger("steerline.service")


# -- the control protocol --------------------------------------------------------
class SubmitCall(msgspec.Struct, kw_only=True, tag="submit"):
    content: str | list[dict[str, Any]]
    mode: str
    message_id: str | None
    priority: int
    start_if_idle: bool
    fresh: bool
    expected_run_id: str | None


class ExecuteCall(msgspec.Struct, kw_only=True, tag="execute"):
    command: Command
    auto_continue: bool


class AbortCall(msgspec.Struct, kw_only=True, tag="abort"):
    pass


Call = SubmitCall | ExecuteCall | AbortCall


class AcceptanceReply(msgspec.Struct, kw_only=True, tag="acceptance"):
    message_id: str
    duplicate: bool
    run_id: str | None
    after: int
    start_run_id: str | None
    queued: bool
    position: int
    lane: Lane | None


class ResultReply(msgspec.Struct, kw_only=True, tag="result"):
    kind: Literal["accepted", "queue", "modes", "started"]
    accepted: Accepted | None = None
    queue: QueueChanged | None = None
    modes: Modes | None = None
    started: Started | None = None


class ErrorReply(msgspec.Struct, kw_only=True, tag="error"):
    code: str
    message: str
    expected: str | None = None
    actual: str | None = None


class DoneReply(msgspec.Struct, kw_only=True, tag="done"):
    pass


Reply = AcceptanceReply | ResultReply | ErrorReply | DoneReply

_call_encoder = msgspec.json.Encoder()
_call_decoder = msgspec.json.Decoder(Call)
_reply_decoder = msgspec.json.Decoder(Reply)


def _result_reply(result: Result) -> ResultReply:
    if isinstance(result, Accepted):
        return ResultReply(kind="accepted", accepted=result)
    if isinstance(result, QueueChanged):
        return ResultReply(kind="queue", queue=result)
    if isinstance(result, Modes):
        return ResultReply(kind="modes", modes=result)
    return ResultReply(kind="started", started=result)


def _result_of(reply: ResultReply) -> Result:
    result = reply.accepted or reply.queue or reply.modes or reply.started
    if result is None:
        raise StorageUnavailableError("the conversation's server sent an empty answer")
    return result


def _error_class(code: str) -> type[SteerlineError]:
    for value in vars(errors).values():
        if isinstance(value, type) and issubclass(value, SteerlineError) and value.code == code:
            return value
    return SteerlineError


def _raise(reply: ErrorReply) -> None:
    cls = _error_class(reply.code)
    if cls is errors.RunMismatchError:
        raise errors.RunMismatchError(
            reply.message, expected=reply.expected or "", actual=reply.actual
        )
    try:
        error = cls(reply.message)
    except TypeError:
        error = SteerlineError(reply.message)
        error.code = reply.code
    raise error


def _error_reply(error: SteerlineError) -> ErrorReply:
    expected = getattr(error, "expected", None)
    actual = getattr(error, "actual", None)
    return ErrorReply(
        code=error.code,
        message=str(error),
        expected=expected if isinstance(expected, str) else None,
        actual=actual if isinstance(actual, str) else None,
    )


# -- the holder's side -----------------------------------------------------------
async def serve_control(service: Host, request: ControlRequest) -> None:
    """Run one control request on the conversation held here and answer it."""
    shared = service.shared
    assert shared is not None
    reply: Reply
    try:
        call = _call_decoder.decode(request.body)
        conversation = await service.get_held(request.conversation_id)
        reply = await _run_call(conversation, call)
    except SteerlineError as error:
        reply = _error_reply(error)
    except msgspec.DecodeError as error:
        reply = ErrorReply(code="invalid_value", message=f"bad control request: {error}")
    await shared.reply(request, _call_encoder.encode(reply))


async def _run_call(conversation: Conversation, call: Call) -> Reply:
    """What the holder does for a control request (errors: ``ErrorReply``)."""
    try:
        if isinstance(call, SubmitCall):
            acceptance = await conversation.submit(
                call.content,  # type: ignore[arg-type]
                mode=call.mode,  # type: ignore[arg-type]
                message_id=call.message_id,
                priority=call.priority,
                start_if_idle=call.start_if_idle,
                fresh=call.fresh,
                expected_run_id=call.expected_run_id,
            )
            return AcceptanceReply(
                message_id=acceptance.message_id,
                duplicate=acceptance.duplicate,
                run_id=acceptance.run_id,
                after=acceptance.after,
                start_run_id=acceptance.start_run_id,
                queued=acceptance.queued,
                position=acceptance.position,
                lane=acceptance.lane,
            )
        if isinstance(call, ExecuteCall):
            result = await conversation.execute(call.command, auto_continue=call.auto_continue)
            return _result_reply(result)
        if conversation.busy:
            conversation.agent.abort()
        return DoneReply()
    except SteerlineError as error:
        return _error_reply(error)


# -- the caller's side -----------------------------------------------------------
class RemoteConversation:
    """A conversation whose lease another process holds, seen from here.

    Offers what the routes use of :class:`Conversation`: its status and
    stream plans come from the shared record and log, its commands go to
    the holder. Built per request (cheap), so what it says is fresh.
    """

    def __init__(
        self,
        service: Host,
        record: ConversationRecord,
        queue: QueueView,
        pending_run_id: str | None,
    ) -> None:
        self._service = service
        self.record = record
        self._queue = queue
        self.pending_run_id = pending_run_id
        self.viewers = 0
        self.unloaded = False

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def busy(self) -> bool:
        return self.pending_run_id is not None

    @property
    def last_seq(self) -> int:
        return self._service.log.committed_seq(self.id)

    def touch(self) -> None:
        return None

    def attach(self) -> Callable[[], None]:
        self.viewers += 1

        def detach() -> None:
            self.viewers = max(0, self.viewers - 1)

        return detach

    def abort_soon(self) -> None:
        """Ask the holder to abort (a client left with ``on_disconnect=cancel``)."""

        async def abort() -> None:
            await self._call(AbortCall())

        self._service.spawn(abort)

    def status(self) -> dict[str, object]:
        record = self.record
        return {
            "conversation_id": self.id,
            "agent_name": record.agent_name,
            "status": "running" if self.busy else "idle",
            "active_run_id": self.pending_run_id,
            "queue": {
                "steering": msgspec.to_builtins(self._queue.steering),
                "follow_up": msgspec.to_builtins(self._queue.follow_up),
            },
            "steering_mode": record.steering_mode,
            "follow_up_mode": record.follow_up_mode,
            "steering_policy": record.steering_policy,
            "last_seq": self.last_seq,
            "created_at": record.created_at,
        }

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
        """Queue the message here while the holder runs the conversation (no
        lease needed, SPEC §4); run it here if the lease turns out free; ask
        the holder when the conversation is idle (whether a message starts a
        run is the holder's decision) or the request needs the holder's view
        of the run (``expected_run_id``, ``mode=reject``)."""
        if message_id is not None:
            check_id(message_id, "message id")
        if mode != "reject" and expected_run_id is None and not fresh:
            taken = await self._intake(
                content, mode, message_id or new_id("msg"), priority, start_if_idle
            )
            if isinstance(taken, Conversation):
                return await taken.submit(
                    content,
                    mode=mode,
                    message_id=message_id,
                    priority=priority,
                    start_if_idle=start_if_idle,
                )
            if taken is not None:
                return taken
        call = SubmitCall(
            content=content if isinstance(content, str) else msgspec.to_builtins(content),
            mode=mode,
            # an id of its own, so that a request sent again (to a new holder,
            # should this one die unanswered) is a duplicate, never a second message
            message_id=message_id or new_id("msg"),
            priority=priority,
            start_if_idle=start_if_idle,
            fresh=fresh,
            expected_run_id=expected_run_id,
        )
        reply = await self._call(call)
        if not isinstance(reply, AcceptanceReply):
            raise StorageUnavailableError("the conversation's server sent an unexpected answer")
        if reply.run_id is not None and not reply.queued:
            self.pending_run_id = reply.run_id
        return Acceptance(
            self.id,
            reply.message_id,
            duplicate=reply.duplicate,
            run_id=reply.run_id,
            after=reply.after,
            start_run_id=reply.start_run_id,
            queued=reply.queued,
            position=reply.position,
            lane=reply.lane,
        )

    async def _intake(
        self,
        content: str | list[UserContent],
        mode: SubmitMode,
        message_id: str,
        priority: int,
        start_if_idle: bool,
    ) -> Acceptance | Conversation | None:
        """The lease-free path: the message's acceptance, the conversation if
        the request is to run here (the lease was free, or is ours now), or
        None: forward the request to the holder."""
        shared = self._service.shared
        assert shared is not None
        limits = self._service.inbox_limits
        check_message_size(content, limits.max_message_bytes)
        lane: Lane = "follow_up" if mode in ("auto", "follow_up") else "steering"
        message = QueuedMessage(
            id=message_id,
            content=as_user_content(content),
            lane=lane,
            priority=priority,
            arrival=_ARRIVAL,
            interrupt=mode == "interrupt",
        )
        envelopes: list[bytes] = []
        translator = RunTranslator(
            self.id,
            self.record.agent_name,
            lambda _event, envelope, _run: envelopes.append(envelope),
        )
        translator.task_id = self.pending_run_id
        translator.message_queued(
            message_id, "steer" if lane == "steering" else "follow_up", _POSITION
        )
        item = encode_queued(message, _SINCE, start_if_idle)
        head, rest = _split(item, b'"arrival":%d' % _ARRIVAL)
        middle, tail = _split(rest, b'"since":%d' % _SINCE)
        result = await shared.intake(
            self.id,
            Intake(
                message_id=message_id,
                lane=lane,
                priority=priority,
                item=(head, middle, tail),
                envelope=_split(envelopes[0], b'"position":%d' % _POSITION),
                max_queued=limits.max_messages,
                queue_collection=QUEUE_ITEMS,
                seen_collection=SEEN_ITEMS,
            ),
        )
        outcome = result.outcome
        if outcome is IntakeOutcome.QUEUED:
            queue = queue_view(result.queue)
            return Acceptance(
                self.id,
                message_id,
                run_id=result.run_id,
                after=result.seq - 1,
                queued=True,
                position=result.position,
                snapshot=InboxSnapshot(steering=queue.steering, follow_up=queue.follow_up),
                lane=lane,
            )
        if outcome is IntakeOutcome.DUPLICATE:
            point = decode_acceptance_point(result.acceptance)
            after, start_run_id = point if point is not None else (self.last_seq, None)
            return Acceptance(
                self.id, message_id, duplicate=True, after=after, start_run_id=start_run_id
            )
        if outcome is IntakeOutcome.FULL:
            raise errors.QueueFullError(
                f"the inbox already holds {limits.max_messages} messages; the limit is "
                f"{limits.max_messages}"
            )
        if outcome is IntakeOutcome.GONE:
            raise errors.ConversationNotFoundError(f"conversation {self.id!r} not found")
        if outcome in (IntakeOutcome.ACQUIRED, IntakeOutcome.MINE):
            return await self._service.get_held(self.id)
        return None  # idle, held elsewhere: the holder decides

    async def execute(self, command: Command, *, auto_continue: bool) -> Result:
        if isinstance(command, Steer | FollowUp) and command.expected_run_id is None:
            # a message: queued here without the lease (see submit)
            if command.id is not None:
                check_id(command.id, "message id")
            taken = await self._intake(
                command.content,
                command_mode(command),
                command.id or new_id("msg"),
                command.priority,
                auto_continue,
            )
            if isinstance(taken, Conversation):
                return await taken.execute(command, auto_continue=auto_continue)
            if taken is not None:
                snapshot = taken.snapshot
                queue = (
                    QueueView(steering=snapshot.steering, follow_up=snapshot.follow_up)
                    if snapshot is not None
                    else await stored_queue(self._service.log, self.id)
                )
                return accepted_result(taken, queue)
        reply = await self._call(ExecuteCall(command=command, auto_continue=auto_continue))
        if not isinstance(reply, ResultReply):
            raise StorageUnavailableError("the conversation's server sent an unexpected answer")
        return _result_of(reply)

    async def _call(self, call: Call, redirects: int = 3) -> Reply:
        shared = self._service.shared
        assert shared is not None
        try:
            raw = await shared.send_control(
                self.id, _call_encoder.encode(call), self._service.control_patience
            )
        except NotHeldError:
            # nobody holds the lease (let go just now, or its holder died
            # with the request unanswered and withdrawn): take it, run it here
            handle = await self._service.open(self.record.tenant, self.id)
            if isinstance(handle, Conversation):
                reply: Reply = await _run_call(handle, call)
            elif redirects > 0:
                return await handle._call(call, redirects - 1)
            else:
                raise StorageUnavailableError(
                    "the conversation changed servers several times; retry the request"
                ) from None
            if isinstance(reply, ErrorReply):
                _raise(reply)
            return reply
        except TimeoutError:
            raise StorageUnavailableError(
                "the server running this conversation did not answer in time; retry the "
                "request (with the same message_id it is not delivered twice)"
            ) from None
        reply = _reply_decoder.decode(raw)
        if isinstance(reply, ErrorReply):
            _raise(reply)
        return reply


_ARRIVAL = -8_675_309
_SINCE = -8_675_310
_POSITION = -8_675_311
"""Stand-ins for what only the intake script knows, cut out of the encoded
item and envelope (JSON escapes every quote inside a string, so a key with
its value cannot occur in message text)."""


def _split(encoded: bytes, marker: bytes) -> tuple[bytes, bytes]:
    """``encoded`` around ``marker``, the key kept in the first part."""
    head, found, tail = encoded.partition(marker)
    if not found:
        raise AssertionError(f"{marker!r} not in the encoded value")
    key = marker.partition(b":")[0] + b":"
    return head + key, tail


async def remote_view(service: Host, record: ConversationRecord) -> RemoteConversation:
    """A fresh :class:`RemoteConversation` (its queue and pending run read now)."""
    log = service.log
    queue = await stored_queue(log, record.id)
    pending = record.active_run_id if record.status == "running" else None
    if pending is not None and await _done_logged(log, record.id, pending):
        pending = None  # its done is in the log; the record is about to say idle
    return RemoteConversation(service, record, queue, pending)


async def stored_queue(log: EventLog, conversation_id: str) -> QueueView:
    """The conversation's queue as stored (the holder's, and what intake added)."""
    return queue_view([v for _, v in await log.get_items(conversation_id, QUEUE_ITEMS)])


def queue_view(items: Sequence[bytes]) -> QueueView:
    """The view of stored queue items (lanes, each in delivery order)."""
    messages = sorted((decode_queued(v).message for v in items), key=lambda m: m.sort_key())
    return QueueView(
        steering=[m.view() for m in messages if m.lane == "steering"],
        follow_up=[m.view() for m in messages if m.lane == "follow_up"],
    )


async def _done_logged(log: EventLog, conversation_id: str, run_id: str) -> bool:
    head = log.committed_seq(conversation_id)
    try:
        recent = await log.read(conversation_id, max(head - 32, 0), 32)
    except RetentionError:
        recent = await log.read(conversation_id, await log.oldest_seq(conversation_id) - 1, 64)
    return any(e.event == EventName.DONE and e.run_id == run_id for e in recent)


def shared_log(log: EventLog) -> SharedLog | None:
    return log if isinstance(log, SharedLog) else None
