"""A live conversation: one Agent bound to its event log.

The agent's native events go through the translator into the log as they are
emitted (``append`` never blocks). Inbox and context are checkpointed as
state blobs in the same ordered write stream: the inbox at every change, the
context at turn boundaries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, get_args

import anyio
from msgspec import to_builtins

from steerline.core.errors import (
    AgentBusyError,
    InvalidValueError,
    MessageTooLargeError,
    SteerlineError,
)
from steerline.core.events import AgentEnd, AgentEvent, QueueUpdate, TurnEnd
from steerline.core.ids import new_id
from steerline.core.messages import UserContent, as_user_content, content_size
from steerline.log.base import ConversationRecord, EventLog
from steerline.runtime.agent import Agent, check_policy
from steerline.runtime.inbox import InboxSnapshot, Lane, QueuedMessage, check_delivery_mode
from steerline.service.state import CONTEXT_KEY, INBOX_KEY, encode_context, encode_inbox
from steerline.wire.envelope import UnifiedResponseData, WireEvent, encode_unsealed
from steerline.wire.translate import RunTranslator

logger = logging.getLogger("steerline.service")

SubmitMode = Literal["auto", "steer", "follow_up", "interrupt", "reject"]
SUBMIT_MODES: tuple[SubmitMode, ...] = get_args(SubmitMode)


class ConversationBusyError(SteerlineError):
    """``mode=reject`` on a conversation that is running (HTTP 409)."""

    code = "conversation_busy"


def check_submit_mode(value: str) -> SubmitMode:
    if value not in SUBMIT_MODES:
        raise InvalidValueError(
            f"unknown mode {value!r}; expected one of {', '.join(SUBMIT_MODES)}"
        )
    return value


def check_message_size(content: str | list[UserContent], limit: int) -> None:
    """``MessageTooLargeError`` if ``content`` is over the inbox's message limit."""
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


Spawner = Callable[[Callable[[], Coroutine[Any, Any, None]]], None]


class Conversation:
    def __init__(
        self,
        record: ConversationRecord,
        agent: Agent,
        log: EventLog,
        spawn: Spawner,
        owner: str,
    ) -> None:
        self.record = record
        self.agent = agent
        self.log = log
        self._spawn = spawn
        self.owner = owner
        self.busy = False
        self.idle = anyio.Event()
        self.idle.set()
        self.last_seq = log.committed_seq(record.id)
        self.translator = RunTranslator(record.id, record.agent_name, self._append)
        self._announce: tuple[str, str] | None = None
        self._announced_seq = 0
        agent.steering_mode = check_delivery_mode(record.steering_mode)
        agent.follow_up_mode = check_delivery_mode(record.follow_up_mode)
        agent.steering_policy = check_policy(record.steering_policy)
        agent.subscribe(self._on_event)

    @property
    def id(self) -> str:
        return self.record.id

    # -- writing to the log ------------------------------------------------------
    def _append(self, event: WireEvent, data: UnifiedResponseData, run_id: str | None) -> None:
        self.last_seq = self.log.append(
            self.record.id, event.value, encode_unsealed(event, data), run_id or None
        )

    def _on_event(self, event: AgentEvent) -> None:
        if isinstance(event, QueueUpdate) and self._announce is not None:
            message_id, delivery = self._announce
            self._announce = None
            lane: Lane = "steering" if delivery == "steer" else "follow_up"
            ids = [m.id for m in self.agent.inbox.messages(lane)]
            position = ids.index(message_id) if message_id in ids else -1
            self.translator.message_queued(message_id, delivery, position)
            self._announced_seq = self.last_seq
        self.translator(event)
        if isinstance(event, QueueUpdate):
            self.save_inbox()
        elif isinstance(event, TurnEnd | AgentEnd):
            self.log.put_state(self.id, CONTEXT_KEY, encode_context(self.agent.messages))

    def save_inbox(self) -> None:
        inbox = self.agent.inbox
        queued = inbox.messages("steering") + inbox.messages("follow_up")
        self.log.put_state(self.id, INBOX_KEY, encode_inbox(queued, inbox.seen_ids))

    # -- input ---------------------------------------------------------------------
    async def submit(
        self,
        content: str | list[UserContent],
        *,
        mode: SubmitMode = "auto",
        message_id: str | None = None,
        priority: int = 0,
        start_if_idle: bool = True,
    ) -> Acceptance:
        """Deliver a user message according to ``mode`` (SPEC §3.4).

        ``start_if_idle``: whether a message for an idle conversation starts a
        run (``/agents/stream`` always; ``/messages`` when ``auto_continue``
        is on) or waits in the inbox.
        """
        message_id = message_id or new_id("msg")
        if self.agent.inbox.is_duplicate(message_id):
            return Acceptance(self.id, message_id, duplicate=True, after=self.last_seq)
        if not self.busy:
            if start_if_idle:
                return await self._start(content, message_id)
        elif mode == "reject":
            raise ConversationBusyError("the conversation is running a task; mode=reject")
        delivery = "follow_up" if mode in ("auto", "follow_up") else "steer"
        self._announce = (message_id, delivery)
        self._announced_seq = 0
        try:
            if delivery == "steer":
                result = self.agent.steer(
                    content, id=message_id, priority=priority, interrupt=mode == "interrupt"
                )
            else:
                result = self.agent.follow_up(content, id=message_id, priority=priority)
        finally:
            self._announce = None
        await self.log.flush()
        return Acceptance(
            self.id,
            message_id,
            after=self._announced_seq - 1 if self._announced_seq else self.last_seq,
            queued=True,
            position=result.position,
            snapshot=self.agent.queue_snapshot(),
        )

    async def _start(
        self, content: str | list[UserContent] | None, message_id: str | None
    ) -> Acceptance:
        if self.busy:
            raise AgentBusyError("a run is active")
        if content is not None:
            # refuse here, not inside the run task: the caller gets the error
            check_message_size(content, self.agent.inbox.limits.max_message_bytes)
        run_id = new_id("run")
        after = self.last_seq
        self.busy = True
        self.idle = anyio.Event()
        self.record.status = "running"
        self.record.active_run_id = run_id
        self.record.owner = self.owner
        await self.log.update_conversation(self.record)
        delivery: Literal["prompt", "steer", "follow_up"] = "prompt"

        async def run() -> None:
            try:
                if content is None:
                    await self.agent.continue_(run_id=run_id)
                else:
                    await self.agent.prompt(
                        content, id=message_id, run_id=run_id, delivery=delivery
                    )
            except Exception:
                logger.exception("run %s of %s failed", run_id, self.id)
                self.translator.run_failed(run_id, "internal_error", "the run failed")
            finally:
                self.busy = False
                self.record.status = "idle"
                self.record.active_run_id = None
                self.save_inbox()
                with anyio.CancelScope(shield=True):
                    await self.log.update_conversation(self.record)
                self.idle.set()

        self._spawn(run)
        return Acceptance(
            self.id, message_id or "", run_id=run_id, after=after, start_run_id=run_id
        )

    async def continue_queued(self) -> Acceptance:
        """Start a run from queued messages (the ``continue`` of the API)."""
        if not self.agent.has_queued_messages():
            raise InvalidValueError("nothing is queued")
        return await self._start(None, None)

    # -- control -------------------------------------------------------------------
    async def abort(self, clear_queues: bool = False) -> list[QueuedMessage]:
        removed = self.agent.abort(clear_queues=clear_queues)
        await self.log.flush()
        return removed

    async def clear_queue(self, lane: Lane | None) -> list[QueuedMessage]:
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
        return {
            "conversation_id": self.id,
            "agent_name": self.record.agent_name,
            "status": "running" if self.busy else "idle",
            "active_run_id": self.record.active_run_id,
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
