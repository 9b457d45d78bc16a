"""One typed struct per wire event payload (SPEC §3.2): the ValueCell contract.

The translator builds these, history and the tests read them back with
:func:`decode_payload`; nothing else spells a payload key by hand. Optional
fields that are ``None`` are omitted on the wire, as ValueCell does.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from steerline.wire.envelope import EventName

StopReason = Literal["completed", "aborted", "error"]
Delivery = Literal["steer", "follow_up"]
"""How a queued message is delivered."""
ThreadDelivery = Literal["prompt", "steer", "follow_up"]


class Payload(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Base of every payload (and of ``thread_started``'s metadata)."""


class Content(Payload):
    """``thread_started`` (the user's text), ``message_chunk`` / ``reasoning``
    (one delta), ``message`` (a whole message)."""

    content: str


class ThreadMetadata(Payload):
    """``thread_started``'s metadata: how and which message was delivered."""

    delivery: ThreadDelivery
    message_id: str


class ToolCallStarted(Payload):
    tool_call_id: str
    tool_name: str
    tool_args: dict[str, Any]


class ToolCallCompleted(Payload):
    tool_call_id: str
    tool_name: str
    tool_result: str
    """ValueCell's encoding: the JSON text of ``[{"content": result}]``."""
    is_error: bool
    skipped: bool


class SystemFailed(Payload):
    code: str
    message: str
    content: str
    """What ValueCell's UI shows in its toast."""


class TaskEnded(Payload):
    """``task_completed`` / ``task_cancelled`` / ``task_failed``."""

    stop_reason: StopReason
    error: str | None = None
    content: str | None = None
    """With ``task_failed``: the text ValueCell's UI shows."""


class Done(Payload):
    stop_reason: StopReason


class MessageQueued(Payload):
    message_id: str
    delivery: Delivery
    position: int


class QueuedSummary(Payload):
    """A queued message in ``queue_updated``: id and a bounded preview."""

    id: str
    preview: str
    truncated: bool
    size: int
    priority: int
    created_at: float
    images: int | None = None


class QueueUpdated(Payload):
    steering: list[QueuedSummary]
    follow_up: list[QueuedSummary]


PAYLOADS: dict[str, type[Payload]] = {
    EventName.THREAD_STARTED: Content,
    EventName.MESSAGE_CHUNK: Content,
    EventName.MESSAGE: Content,
    EventName.REASONING: Content,
    EventName.TOOL_CALL_STARTED: ToolCallStarted,
    EventName.TOOL_CALL_COMPLETED: ToolCallCompleted,
    EventName.SYSTEM_FAILED: SystemFailed,
    EventName.TASK_COMPLETED: TaskEnded,
    EventName.TASK_CANCELLED: TaskEnded,
    EventName.TASK_FAILED: TaskEnded,
    EventName.DONE: Done,
    EventName.MESSAGE_QUEUED: MessageQueued,
    EventName.QUEUE_UPDATED: QueueUpdated,
}
"""The payload type of each event that has one."""


def decode_payload(event: str, payload: object) -> Payload | None:
    """The typed payload of a decoded envelope (None for events without one)."""
    kind = PAYLOADS.get(event)
    if kind is None or payload is None:
        return None
    return msgspec.convert(payload, type=kind)
