"""Native (library-level) events: every step of a run, in order.

The ``type`` strings are part of the public contract (SPEC §2.6). ``seq`` is
the agent's own counter, strictly increasing across all of its events, so a
consumer can check it saw everything in order; ``run_id`` names the run an
event belongs to (empty for ``queue_update`` while idle).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from steerline.core.messages import (
    AssistantMessage,
    Message,
    RunStopReason,
    ToolCall,
    ToolResultMessage,
    UserContent,
)

DeltaKind = Literal[
    "text_start",
    "text_delta",
    "text_end",
    "thinking_start",
    "thinking_delta",
    "thinking_end",
    "toolcall_start",
    "toolcall_delta",
    "toolcall_end",
]


class MessageDelta(msgspec.Struct, kw_only=True, omit_defaults=True):
    kind: DeltaKind
    content_index: int
    delta: str = ""
    tool_call: ToolCall | None = None


class QueuedMessageView(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A queued message as shown in ``queue_update`` and inbox snapshots."""

    id: str
    content: list[UserContent]
    priority: int = 0
    created_at: float = 0.0


QueueChangeKind = Literal["queued", "edited", "removed", "moved", "taken", "cleared", "returned"]


class QueueChange(msgspec.Struct, kw_only=True):
    """What changed the inbox: the cause of one ``queue_update``.

    ``kind``:

    - ``queued``: ``push`` accepted one message (``steer`` / ``follow_up``);
    - ``edited``: its content and/or priority changed;
    - ``removed``: ``remove_queued`` took it out (not delivered);
    - ``moved``: it changed lane and/or was placed before another message;
    - ``taken``: a delivery point took these messages (they are on their way
      into the context; a run holds them until its next turn);
    - ``cleared``: ``clear`` / ``clear_queues`` / ``abort(clear_queues=True)``;
    - ``returned``: taken messages went back to their lanes (an abort came
      before they were delivered).

    ``message_ids``: the messages concerned, in queue order (returned: in
    the order they were taken). ``lane``: where they are (queued, edited,
    moved, returned), were (removed, taken, cleared), or ``None`` when the
    change spans both lanes. ``position``: the 0-based index in ``lane``
    after the change (queued, edited, moved) or before it (removed); ``None``
    for the kinds that concern several messages (taken, cleared, returned).
    """

    kind: QueueChangeKind
    message_ids: list[str]
    lane: Literal["steering", "follow_up"] | None = None
    position: int | None = None


class _Event(msgspec.Struct, tag_field="type", kw_only=True):
    """Every field is always encoded, defaults too (``is_error: false``,
    ``skipped: false``): SPEC §2.6 names them, and a consumer in another
    language should not have to know our defaults."""

    seq: int = 0
    run_id: str = ""

    @property
    def type(self) -> str:
        """The event's ``type`` string (its msgspec tag), e.g. ``"turn_start"``."""
        return str(self.__struct_config__.tag)


class AgentStart(_Event, tag="agent_start"):
    pass


class AgentEnd(_Event, tag="agent_end"):
    messages: list[Message]
    stop_reason: RunStopReason
    error_message: str | None = None


class TurnStart(_Event, tag="turn_start"):
    pass


class TurnEnd(_Event, tag="turn_end"):
    message: AssistantMessage
    tool_results: list[ToolResultMessage]


class MessageStart(_Event, tag="message_start"):
    message: Message


class MessageUpdate(_Event, tag="message_update"):
    message: AssistantMessage
    delta: MessageDelta


class MessageEnd(_Event, tag="message_end"):
    message: Message


class ToolExecutionStart(_Event, tag="tool_execution_start"):
    tool_call_id: str
    tool_name: str
    args: dict[str, Any]


class ToolExecutionUpdate(_Event, tag="tool_execution_update"):
    tool_call_id: str
    tool_name: str
    partial_result: str


class ToolExecutionEnd(_Event, tag="tool_execution_end"):
    tool_call_id: str
    tool_name: str
    result: str
    is_error: bool = False
    skipped: bool = False


class QueueUpdate(_Event, tag="queue_update"):
    """Both lanes after one inbox change, and what the change was (``cause``;
    ``None`` only for events built by hand)."""

    steering: list[QueuedMessageView]
    follow_up: list[QueuedMessageView]
    cause: QueueChange | None = None


AgentEvent = (
    AgentStart
    | AgentEnd
    | TurnStart
    | TurnEnd
    | MessageStart
    | MessageUpdate
    | MessageEnd
    | ToolExecutionStart
    | ToolExecutionUpdate
    | ToolExecutionEnd
    | QueueUpdate
)

_encoder = msgspec.json.Encoder()


def encode_event(event: AgentEvent) -> bytes:
    """JSON-encode one native event (used by ``steerline run --json``)."""
    return _encoder.encode(event)
