"""The ValueCell envelope ``{"event", "data", "seq"}`` and its ``data`` shape.

``None`` fields are omitted (msgspec ``omit_defaults``), as ValueCell's
pydantic models do with ``exclude_none``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

import msgspec

WireRole = Literal["user", "agent", "system"]


class EventName(StrEnum):
    """Every event name of SPEC §3.2."""

    CONVERSATION_STARTED = "conversation_started"
    THREAD_STARTED = "thread_started"
    TASK_STARTED = "task_started"
    TASK_COMPLETED = "task_completed"
    TASK_FAILED = "task_failed"
    TASK_CANCELLED = "task_cancelled"
    REASONING_STARTED = "reasoning_started"
    REASONING = "reasoning"
    REASONING_COMPLETED = "reasoning_completed"
    MESSAGE_CHUNK = "message_chunk"
    MESSAGE = "message"
    TOOL_CALL_STARTED = "tool_call_started"
    TOOL_CALL_COMPLETED = "tool_call_completed"
    COMPONENT_GENERATOR = "component_generator"
    PLAN_REQUIRE_USER_INPUT = "plan_require_user_input"
    SYSTEM_FAILED = "system_failed"
    DONE = "done"
    MESSAGE_QUEUED = "message_queued"
    QUEUE_UPDATED = "queue_updated"


class UnifiedResponseData(msgspec.Struct, kw_only=True, omit_defaults=True):
    conversation_id: str
    role: WireRole
    item_id: str
    thread_id: str | None = None
    task_id: str | None = None
    agent_name: str | None = None
    payload: Any = None
    """A :mod:`steerline.wire.payloads` struct (a dict when decoded generically)."""
    metadata: Any = None


class _Unsealed(msgspec.Struct):
    event: str
    data: UnifiedResponseData


_encoder = msgspec.json.Encoder()


def encode_unsealed(event: EventName, data: UnifiedResponseData) -> bytes:
    """``{"event":…,"data":…}``: the log adds ``"seq"`` when it assigns one."""
    return _encoder.encode(_Unsealed(event=event.value, data=data))


class _ThreadMeta(msgspec.Struct):
    message_id: str | None = None


class _ThreadData(msgspec.Struct):
    metadata: _ThreadMeta | None = None
    thread_id: str | None = None


class _ThreadStarted(msgspec.Struct):
    data: _ThreadData


_thread_started = msgspec.json.Decoder(_ThreadStarted)


def thread_message_id(envelope: bytes) -> str | None:
    """The delivered message's id in a stored ``thread_started`` envelope."""
    try:
        metadata = _thread_started.decode(envelope).data.metadata
    except msgspec.DecodeError:
        return None
    return metadata.message_id if metadata is not None else None


def thread_id_of(envelope: bytes) -> str | None:
    """The ``thread_id`` of a stored envelope."""
    try:
        return _thread_started.decode(envelope).data.thread_id
    except msgspec.DecodeError:
        return None


class _QueuedPayload(msgspec.Struct):
    message_id: str | None = None


class _QueuedData(msgspec.Struct):
    payload: _QueuedPayload | None = None


class _MessageQueued(msgspec.Struct):
    data: _QueuedData


_message_queued = msgspec.json.Decoder(_MessageQueued)


def queued_message_id(envelope: bytes) -> str | None:
    """The queued message's id in a stored ``message_queued`` envelope."""
    try:
        payload = _message_queued.decode(envelope).data.payload
    except msgspec.DecodeError:
        return None
    return payload.message_id if payload is not None else None
